import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createLogger } from '../../core/log.js';
import { repoPath } from '../repo-paths.js';
import { deterministicTar, fileExists, imageCacheDir, loadImage, writeDockerArchive } from './docker-archive.js';

const execFileAsync = promisify(execFile);
const log = createLogger('counter-image');

const COUNTER_SOURCE = repoPath('infra', 'images', 'counter', 'counter.c');
const BUSYBOX = '/bin/busybox';

export const DEFAULT_COUNTER_IMAGE = 'localhost/ums/counter:1';
export const COUNTER_BINARY_PATH = '/usr/local/bin/counter';
export const COUNTER_MARKER_PATH = '/var/lib/counter/started';

export interface BuildCounterImageOptions {
  /** Where built rootfs tars are cached (keyed by the source and busybox). Default <repo>/.tools/image-cache. */
  cacheDir?: string;
  /** Environment for the `podman` CLI, e.g. PodmanHost.env. */
  env?: NodeJS.ProcessEnv;
}

export interface CounterImage {
  tag: string;
  /** Image id on the host it was imported into. */
  id: string;
  /** The docker-archive that was loaded (cached). */
  archive: string;
  /** False when the host already had the tag and nothing was loaded. */
  imported: boolean;
}

/**
 * Builds the counter demo image (busybox-static + a static C counter, no registry needed) and loads it
 * into the Podman service at `podmanUrl` (unix://...) with the same image id on every host. The archive is
 * built once and cached, so the second host costs only the load. Setup-time only: it shells out to gcc,
 * tar and the podman CLI.
 */
export async function buildCounterImage(
  podmanUrl: string,
  tag: string = DEFAULT_COUNTER_IMAGE,
  options: BuildCounterImageOptions = {},
): Promise<CounterImage> {
  const archive = await buildCounterImageArchive(tag, options.cacheDir);
  const { id, imported } = await loadImage(podmanUrl, tag, archive, options.env);
  return { tag, id, archive, imported };
}

/** Builds (or reuses from the cache) a docker-archive of the counter image tagged `tag` (docker-archive.ts). */
export async function buildCounterImageArchive(tag: string = DEFAULT_COUNTER_IMAGE, cacheDir?: string): Promise<string> {
  return writeDockerArchive({
    tag,
    cacheName: 'counter-image',
    ...(cacheDir !== undefined ? { cacheDir } : {}),
    config: {
      Env: ['PATH=/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin'],
      Cmd: [COUNTER_BINARY_PATH],
      WorkingDir: '/',
      Labels: { 'org.opencontainers.image.title': 'UMS counter demo workload' },
    },
    layers: [{ tar: await buildCounterRootfs(cacheDir), createdBy: 'infra/images/build-counter-image.ts' }],
  });
}

/** Builds (or reuses from the cache) the counter rootfs tar and returns its path. */
export async function buildCounterRootfs(cacheDir?: string): Promise<string> {
  const cache = imageCacheDir(cacheDir);
  const source = await readFile(COUNTER_SOURCE);
  const busybox = await stat(BUSYBOX).catch(() => {
    throw new Error(`${BUSYBOX} not found: install busybox-static (infra/host-setup.sh does)`);
  });
  const key = createHash('sha256').update(source).update(`${busybox.size}:${busybox.mtimeMs}`).digest('hex').slice(0, 16);
  const tarPath = join(cache, `counter-rootfs-${key}.tar`);
  if (await fileExists(tarPath)) return tarPath;

  await mkdir(cache, { recursive: true });
  const work = await mkdtemp(join(cache, 'build-'));
  try {
    const started = Date.now();
    const rootfs = join(work, 'rootfs');
    for (const d of [
      'bin',
      'sbin',
      'usr/bin',
      'usr/sbin',
      'usr/local/bin',
      'etc',
      'tmp',
      'var/lib/counter',
      'var/tmp',
      'root',
      'proc',
      'sys',
      'dev',
      'run',
    ]) {
      await mkdir(join(rootfs, d), { recursive: true });
    }
    await chmod(join(rootfs, 'tmp'), 0o1777);
    await chmod(join(rootfs, 'var/tmp'), 0o1777);

    await copyFile(BUSYBOX, join(rootfs, 'bin/busybox'));
    await chmod(join(rootfs, 'bin/busybox'), 0o755);
    const { stdout: applets } = await execFileAsync(BUSYBOX, ['--list']);
    for (const applet of applets
      .split('\n')
      .map((a) => a.trim())
      .filter((a) => a !== '' && a !== 'busybox')) {
      await symlink('busybox', join(rootfs, 'bin', applet)).catch(() => undefined);
    }

    await execFileAsync('gcc', ['-static', '-O2', '-Wall', '-Wextra', '-o', join(rootfs, COUNTER_BINARY_PATH), COUNTER_SOURCE]).catch(
      (error: { stderr?: string; message: string }) => {
        throw new Error(`gcc -static counter.c failed (install gcc and libc6-dev): ${(error.stderr ?? error.message).trim()}`);
      },
    );

    await writeFile(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
    await writeFile(join(rootfs, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
    await writeFile(join(rootfs, 'etc/hostname'), 'counter\n');

    const partial = join(work, 'rootfs.tar');
    await deterministicTar(partial, rootfs, ['.']);
    await rename(partial, tarPath);
    log.info({ tarPath, buildMs: Date.now() - started }, 'counter rootfs built');
    return tarPath;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
