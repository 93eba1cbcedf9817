import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { createLogger } from '../../core/log.js';
import { repoPath } from '../repo-paths.js';

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
  const env = { ...(options.env ?? process.env) };
  const podman = (args: string[]) =>
    execFileAsync('podman', ['--url', podmanUrl, ...args], { env, maxBuffer: 16 * 1024 * 1024 });

  const archive = await buildCounterImageArchive(tag, options.cacheDir);
  const existing = await podman(['image', 'inspect', '--format', '{{.Id}}', tag]).then(
    (r) => r.stdout.trim(),
    () => undefined,
  );
  if (existing !== undefined && existing !== '') {
    return { tag, id: existing, archive, imported: false };
  }
  const started = Date.now();
  await podman(['load', '--input', archive]).catch((error: { stderr?: string; message: string }) => {
    throw new Error(`podman load of ${tag} failed: ${(error.stderr ?? error.message).trim()}`);
  });
  const { stdout } = await podman(['image', 'inspect', '--format', '{{.Id}}', tag]);
  log.info({ tag, id: stdout.trim(), loadMs: Date.now() - started }, 'counter image loaded');
  return { tag, id: stdout.trim(), archive, imported: true };
}

/**
 * Builds (or reuses from the cache) a docker-archive of the counter image tagged `tag`. The image config
 * is fixed (no creation time), so its id, the sha256 of the config, is the same on every host: a checkpoint
 * records the image by id, and restoring it elsewhere fails unless the destination has that exact id
 * ("creating container storage: parsing named reference <id>"). `podman import` stamps the current time
 * and so gives every host a different id; `podman load` of this archive does not.
 */
export async function buildCounterImageArchive(tag: string = DEFAULT_COUNTER_IMAGE, cacheDir?: string): Promise<string> {
  const cache = resolveCacheDir(cacheDir);
  const rootfsTar = await buildCounterRootfs(cache);
  const layerDigest = await sha256File(rootfsTar);
  const config = JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    created: '1970-01-01T00:00:00Z',
    config: {
      Env: ['PATH=/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin'],
      Cmd: [COUNTER_BINARY_PATH],
      WorkingDir: '/',
      Labels: { 'org.opencontainers.image.title': 'UMS counter demo workload' },
    },
    rootfs: { type: 'layers', diff_ids: [`sha256:${layerDigest}`] },
    history: [{ created: '1970-01-01T00:00:00Z', created_by: 'infra/images/build-counter-image.ts' }],
  });
  const configDigest = createHash('sha256').update(config).digest('hex');
  const tagKey = createHash('sha256').update(tag).digest('hex').slice(0, 8);
  const archive = join(cache, `counter-image-${configDigest.slice(0, 16)}-${tagKey}.tar`);
  if (await stat(archive).then(() => true, () => false)) return archive;

  const work = await mkdtemp(join(cache, 'archive-'));
  try {
    await mkdir(join(work, layerDigest));
    await copyFile(rootfsTar, join(work, layerDigest, 'layer.tar'));
    await writeFile(join(work, `${configDigest}.json`), config);
    const manifest = [{ Config: `${configDigest}.json`, RepoTags: [tag], Layers: [`${layerDigest}/layer.tar`] }];
    await writeFile(join(work, 'manifest.json'), JSON.stringify(manifest));
    const partial = join(work, 'image.tar');
    await execFileAsync('tar', ['--create', '--file', partial, '--directory', work, '--owner=0', '--group=0', '--numeric-owner', '--sort=name', '--mtime=@0', 'manifest.json', `${configDigest}.json`, layerDigest]);
    await rename(partial, archive);
    return archive;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function resolveCacheDir(cacheDir: string | undefined): string {
  return resolve(cacheDir ?? process.env.UMS_IMAGE_CACHE ?? repoPath('.tools', 'image-cache'));
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Builds (or reuses from the cache) the counter rootfs tar and returns its path. */
export async function buildCounterRootfs(cacheDir?: string): Promise<string> {
  const cache = resolveCacheDir(cacheDir);
  const source = await readFile(COUNTER_SOURCE);
  const busybox = await stat(BUSYBOX).catch(() => {
    throw new Error(`${BUSYBOX} not found: install busybox-static (infra/host-setup.sh does)`);
  });
  const key = createHash('sha256')
    .update(source)
    .update(`${busybox.size}:${busybox.mtimeMs}`)
    .digest('hex')
    .slice(0, 16);
  const tarPath = join(cache, `counter-rootfs-${key}.tar`);
  if (await stat(tarPath).then(() => true, () => false)) return tarPath;

  await mkdir(cache, { recursive: true });
  const work = await mkdtemp(join(cache, 'build-'));
  try {
    const started = Date.now();
    const rootfs = join(work, 'rootfs');
    for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'usr/local/bin', 'etc', 'tmp', 'var/lib/counter', 'var/tmp', 'root', 'proc', 'sys', 'dev', 'run']) {
      await mkdir(join(rootfs, d), { recursive: true });
    }
    await chmod(join(rootfs, 'tmp'), 0o1777);
    await chmod(join(rootfs, 'var/tmp'), 0o1777);

    await copyFile(BUSYBOX, join(rootfs, 'bin/busybox'));
    await chmod(join(rootfs, 'bin/busybox'), 0o755);
    const { stdout: applets } = await execFileAsync(BUSYBOX, ['--list']);
    for (const applet of applets.split('\n').map((a) => a.trim()).filter((a) => a !== '' && a !== 'busybox')) {
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
    // Fixed owner and mtime: the same inputs give the same tar bytes on every machine.
    await execFileAsync('tar', ['--create', '--file', partial, '--directory', rootfs, '--owner=0', '--group=0', '--numeric-owner', '--sort=name', '--mtime=@0', '.']);
    await rename(partial, tarPath);
    log.info({ tarPath, buildMs: Date.now() - started }, 'counter rootfs built');
    return tarPath;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
