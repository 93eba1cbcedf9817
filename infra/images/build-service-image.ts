import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createLogger } from '../../core/log.js';
import { DEFAULT_CRIU_PREFIX, LAUNCHER_BINARY_PATH, launcherFilesDigest, writeLauncherFiles } from '../../launcher/build.js';
import { LAUNCHER_CAPABILITIES, LAUNCHER_CONTROL_DIR } from '../../launcher/convention.js';
import { repoPath } from '../repo-paths.js';
import { buildCounterRootfs, COUNTER_BINARY_PATH } from './build-counter-image.js';
import { deterministicTar, fileExists, imageCacheDir, loadImage, writeDockerArchive } from './docker-archive.js';

/*
 * Service-level images: the service's image carries its own checkpoint/restore machinery (the ums-launcher
 * as PID 1, plus the host's side-loaded CRIU with its own loader and libraries), so a host migrates it with nothing but
 * "start a plain container of this image" (see launcher/README.md for the protocol).
 *
 * Build step (setup-time only: gcc, tar and the podman CLI):
 *   1. the counter rootfs (busybox-static + counter.c, build-counter-image.ts) is layer 1, byte for byte the
 *      counter image's layer;
 *   2. layer 2 holds the launcher's files (launcher/build.ts: /usr/local/bin/ums-launcher, gcc -static of
 *      launcher/ums-launcher.c, and /usr/local/lib/ums-criu/ with CRIU, its loader and exactly the libraries
 *      the loader resolves for it, taken from the side-loaded CRIU of infra/host-setup.sh (/opt/ums/criu),
 *      and a /usr/local/bin/criu wrapper for `podman exec ... criu check`) and the test service
 *      /usr/local/bin/multi-counter (counter/multi-counter.sh);
 *   3. a docker-archive with a fixed config (no creation time) is written to .tools/image-cache and loaded
 *      with `podman load`, so the image id is the same on every simulated host.
 * Entrypoint ["/usr/local/bin/ums-launcher"], Cmd ["--", SERVICE]: `podman run IMAGE --restore -- SERVICE`
 * (or `-e UMS_LAUNCHER_RESTORE=1`) starts a restore target instead.
 */

const log = createLogger('service-image');

const MULTI_COUNTER_SCRIPT = repoPath('infra', 'images', 'counter', 'multi-counter.sh');

export const DEFAULT_LAUNCHED_COUNTER_IMAGE = 'localhost/ums/counter-launched:1';
export const DEFAULT_LAUNCHED_MULTI_COUNTER_IMAGE = 'localhost/ums/multi-counter-launched:1';
export const MULTI_COUNTER_PATH = '/usr/local/bin/multi-counter';

/** Which service the image's launcher runs: the single counter or the five-process multi-counter. */
export type LaunchedService = 'counter' | 'multi-counter';

const SERVICE_COMMAND: Record<LaunchedService, string> = {
  counter: COUNTER_BINARY_PATH,
  'multi-counter': MULTI_COUNTER_PATH,
};

export interface BuildLauncherImageOptions {
  /** Environment for the `podman` CLI, e.g. PodmanHost.env. */
  env?: NodeJS.ProcessEnv;
  /** The service the launcher starts. Default 'counter'. */
  base?: LaunchedService;
  /** Where built archives are cached. Default <repo>/.tools/image-cache (or UMS_IMAGE_CACHE). */
  cacheDir?: string;
  /** Prefix of an unpacked Debian CRIU >= 4.1 (usr/sbin/criu, usr/lib/x86_64-linux-gnu). Default /opt/ums/criu. */
  criuPrefix?: string;
}

export interface LauncherImage {
  tag: string;
  /** Image id on the host it was loaded into (identical on every host). */
  id: string;
  archive: string;
  /** False when the host already had the tag and nothing was loaded. */
  imported: boolean;
  /** The container command the image runs by default: [launcher, '--', service]. */
  command: string[];
}

/**
 * Builds (or reuses from the cache) the launched image for `base` and loads it into the Podman service at
 * `podmanUrl` (unix://...). Loading is skipped when the host already has `tag`.
 */
export async function buildLauncherImage(
  podmanUrl: string,
  tag: string = DEFAULT_LAUNCHED_COUNTER_IMAGE,
  options: BuildLauncherImageOptions = {},
): Promise<LauncherImage> {
  const base = options.base ?? 'counter';
  const command = [LAUNCHER_BINARY_PATH, '--', SERVICE_COMMAND[base]];
  const archive = await buildLauncherImageArchive(tag, options);
  const { id, imported } = await loadImage(podmanUrl, tag, archive, options.env);
  return { tag, id, archive, imported, command };
}

/** Builds (or reuses) the docker-archive of a launched image (docker-archive.ts); returns its path. */
export async function buildLauncherImageArchive(
  tag: string = DEFAULT_LAUNCHED_COUNTER_IMAGE,
  options: Omit<BuildLauncherImageOptions, 'env'> = {},
): Promise<string> {
  const cache = imageCacheDir(options.cacheDir);
  const base = options.base ?? 'counter';
  return writeDockerArchive({
    tag,
    cacheName: 'launched-image',
    cacheDir: cache,
    config: {
      Env: ['PATH=/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin'],
      Entrypoint: [LAUNCHER_BINARY_PATH],
      Cmd: ['--', SERVICE_COMMAND[base]],
      WorkingDir: '/',
      // The launcher traps SIGTERM and passes it to the service (the kernel ignores it for a PID 1 without a handler).
      StopSignal: 'SIGTERM',
      Labels: {
        'org.opencontainers.image.title': `UMS ${base} under ums-launcher (service-level checkpoint/restore)`,
        'io.ums.launcher.control-dir': LAUNCHER_CONTROL_DIR,
        'io.ums.launcher.capabilities': LAUNCHER_CAPABILITIES.join(','),
      },
    },
    layers: [
      { tar: await buildCounterRootfs(cache), createdBy: 'infra/images/build-counter-image.ts' },
      { tar: await buildLauncherLayer(cache, options.criuPrefix ?? DEFAULT_CRIU_PREFIX), createdBy: 'infra/images/build-service-image.ts' },
    ],
  });
}

/** Layer 2 (the launcher's files, the multi-counter script); cached by the content of everything in it. */
async function buildLauncherLayer(cache: string, criuPrefix: string): Promise<string> {
  const script = await readFile(MULTI_COUNTER_SCRIPT);
  const key = createHash('sha256')
    .update(await launcherFilesDigest(criuPrefix))
    .update(script);
  const tarPath = join(cache, `launcher-layer-${key.digest('hex').slice(0, 16)}.tar`);
  if (await fileExists(tarPath)) return tarPath;

  await mkdir(cache, { recursive: true });
  const work = await mkdtemp(join(cache, 'build-'));
  try {
    const started = Date.now();
    const root = join(work, 'layer');
    const { libraries } = await writeLauncherFiles(root, criuPrefix);
    await copyFile(MULTI_COUNTER_SCRIPT, join(root, MULTI_COUNTER_PATH));
    await chmod(join(root, MULTI_COUNTER_PATH), 0o755);
    const partial = join(work, 'layer.tar');
    await deterministicTar(partial, root, ['.']);
    await rename(partial, tarPath);
    log.info({ tarPath, libraries, buildMs: Date.now() - started }, 'launcher layer built');
    return tarPath;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
