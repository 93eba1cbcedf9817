import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { createLogger } from '../../core/log.js';
import { repoPath } from '../repo-paths.js';
import { buildCounterRootfs, COUNTER_BINARY_PATH } from './build-counter-image.js';
import { deterministicTar, fileExists, imageCacheDir, loadImage, writeDockerArchive } from './docker-archive.js';

/*
 * Service-level images: the service's image carries its own checkpoint/restore machinery (the ums-launcher
 * as PID 1, plus CRIU 4.1.1 with its own loader and libraries), so a host migrates it with nothing but
 * "start a plain container of this image" (see infra/images/launcher/ums-launcher.c for the protocol).
 *
 * Build step (setup-time only: gcc, tar and the podman CLI):
 *   1. the counter rootfs (busybox-static + counter.c, build-counter-image.ts) is layer 1, byte for byte the
 *      counter image's layer;
 *   2. layer 2 holds /usr/local/bin/ums-launcher (gcc -static of launcher/ums-launcher.c),
 *      /usr/local/bin/multi-counter (launcher/multi-counter.sh), and /usr/local/lib/ums-criu/ with
 *      CRIU (criu, ld-linux-x86-64.so.2, lib/ with exactly the libraries the loader resolves for it), taken
 *      from the side-loaded CRIU of infra/host-setup.sh (/opt/ums/criu) and a /usr/local/bin/criu wrapper
 *      for `podman exec ... criu check`;
 *   3. a docker-archive with a fixed config (no creation time) is written to .tools/image-cache and loaded
 *      with `podman load`, so the image id is the same on every simulated host.
 * Entrypoint ["/usr/local/bin/ums-launcher"], Cmd ["--", SERVICE]: `podman run IMAGE --restore -- SERVICE`
 * (or `-e UMS_LAUNCHER_RESTORE=1`) starts a restore target instead.
 */

const execFileAsync = promisify(execFile);
const log = createLogger('service-image');

const LAUNCHER_SOURCE = repoPath('infra', 'images', 'launcher', 'ums-launcher.c');
const MULTI_COUNTER_SCRIPT = repoPath('infra', 'images', 'launcher', 'multi-counter.sh');

export const DEFAULT_LAUNCHED_COUNTER_IMAGE = 'localhost/ums/counter-launched:1';
export const DEFAULT_LAUNCHED_MULTI_COUNTER_IMAGE = 'localhost/ums/multi-counter-launched:1';
export const LAUNCHER_BINARY_PATH = '/usr/local/bin/ums-launcher';
export const MULTI_COUNTER_PATH = '/usr/local/bin/multi-counter';
/** Where the launcher listens (control.sock); bind-mount a host directory here. */
export const LAUNCHER_CONTROL_DIR = '/run/ums-launcher';
export const LAUNCHER_SOCKET_NAME = 'control.sock';
/** CRIU as shipped in the image: criu, its loader and lib/. */
export const IMAGE_CRIU_DIR = '/usr/local/lib/ums-criu';
/** Default CRIU source: what infra/host-setup.sh side-loads (UMS_PREFIX there). */
export const DEFAULT_CRIU_PREFIX = '/opt/ums/criu';

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
        'io.ums.launcher.capabilities': 'CHECKPOINT_RESTORE,SYS_PTRACE',
      },
    },
    layers: [
      { tar: await buildCounterRootfs(cache), createdBy: 'infra/images/build-counter-image.ts' },
      { tar: await buildLauncherLayer(cache, options.criuPrefix ?? DEFAULT_CRIU_PREFIX), createdBy: 'infra/images/build-service-image.ts' },
    ],
  });
}

/**
 * The libraries CRIU needs, as its own loader resolves them (`ld.so --list`), all inside `prefix`: a library
 * from the host's /lib would be the wrong glibc generation.
 */
async function criuLibraries(prefix: string): Promise<{ loader: string; criu: string; libraries: string[] }> {
  const libDir = join(prefix, 'usr', 'lib', 'x86_64-linux-gnu');
  const loader = join(libDir, 'ld-linux-x86-64.so.2');
  const criu = join(prefix, 'usr', 'sbin', 'criu');
  for (const file of [loader, criu]) {
    await stat(file).catch(() => {
      throw new Error(`${file} not found: side-load CRIU 4.1 first (infra/host-setup.sh puts it in ${DEFAULT_CRIU_PREFIX})`);
    });
  }
  const { stdout } = await execFileAsync(loader, ['--library-path', libDir, '--list', criu]);
  const libraries: string[] = [];
  for (const line of stdout.split('\n')) {
    const match = /=>\s+(\S+)\s+\(/.exec(line);
    const path = match?.[1];
    if (path === undefined || path === loader || basename(path).startsWith('ld-linux')) continue;
    if (!path.startsWith(`${prefix}/`)) throw new Error(`criu resolves ${path} outside ${prefix}: incomplete side-load`);
    libraries.push(path);
  }
  if (libraries.length === 0) throw new Error(`could not list criu's libraries with ${loader} --list: ${stdout.trim()}`);
  return { loader, criu, libraries };
}

/** Layer 2 (launcher, multi-counter script, CRIU); cached by the content of everything in it. */
async function buildLauncherLayer(cache: string, criuPrefix: string): Promise<string> {
  const source = await readFile(LAUNCHER_SOURCE);
  const script = await readFile(MULTI_COUNTER_SCRIPT);
  const prefix = resolve(criuPrefix);
  const { loader, criu, libraries } = await criuLibraries(prefix);
  const key = createHash('sha256').update(source).update(script);
  for (const file of [loader, criu, ...libraries]) {
    const s = await stat(file);
    key.update(`${file}:${s.size}:${s.mtimeMs}\n`);
  }
  const tarPath = join(cache, `launcher-layer-${key.digest('hex').slice(0, 16)}.tar`);
  if (await fileExists(tarPath)) return tarPath;

  await mkdir(cache, { recursive: true });
  const work = await mkdtemp(join(cache, 'build-'));
  try {
    const started = Date.now();
    const root = join(work, 'layer');
    const criuDir = join(root, IMAGE_CRIU_DIR);
    for (const d of ['usr/local/bin', `${IMAGE_CRIU_DIR}/lib`, LAUNCHER_CONTROL_DIR, 'var/lib/ums-launcher']) {
      await mkdir(join(root, d), { recursive: true });
    }
    await execFileAsync('gcc', ['-static', '-O2', '-Wall', '-Wextra', '-o', join(root, LAUNCHER_BINARY_PATH), LAUNCHER_SOURCE]).catch(
      (error: { stderr?: string; message: string }) => {
        throw new Error(`gcc -static ums-launcher.c failed (install gcc and libc6-dev): ${(error.stderr ?? error.message).trim()}`);
      },
    );
    await copyFile(MULTI_COUNTER_SCRIPT, join(root, MULTI_COUNTER_PATH));
    await chmod(join(root, MULTI_COUNTER_PATH), 0o755);
    // copyFile follows the sonames' symlinks: each library lands as a real file under the name criu asks for.
    await copyFile(loader, join(criuDir, 'ld-linux-x86-64.so.2'));
    await chmod(join(criuDir, 'ld-linux-x86-64.so.2'), 0o755);
    await copyFile(criu, join(criuDir, 'criu'));
    await chmod(join(criuDir, 'criu'), 0o755);
    for (const library of libraries) await copyFile(library, join(criuDir, 'lib', basename(library)));
    await writeFile(
      join(root, 'usr/local/bin/criu'),
      `#!/bin/sh\n# CRIU 4.1.1 with its own glibc (Debian trixie build), as the launcher runs it.\nexec ${IMAGE_CRIU_DIR}/ld-linux-x86-64.so.2 --library-path ${IMAGE_CRIU_DIR}/lib ${IMAGE_CRIU_DIR}/criu "$@"\n`,
      { mode: 0o755 },
    );
    const partial = join(work, 'layer.tar');
    await deterministicTar(partial, root, ['.']);
    await rename(partial, tarPath);
    log.info({ tarPath, libraries: libraries.length, buildMs: Date.now() - started }, 'launcher layer built');
    return tarPath;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
