import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, mkdtemp, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { createLogger } from '../../core/log.js';
import { repoPath } from '../repo-paths.js';

const execFileAsync = promisify(execFile);
const log = createLogger('docker-archive');
const EPOCH = '1970-01-01T00:00:00Z';

/** Where built layers and image archives are cached: UMS_IMAGE_CACHE, or <repo>/.tools/image-cache. */
export function imageCacheDir(cacheDir?: string): string {
  return resolve(cacheDir ?? process.env.UMS_IMAGE_CACHE ?? repoPath('.tools', 'image-cache'));
}

export const fileExists = (path: string): Promise<boolean> =>
  stat(path).then(
    () => true,
    () => false,
  );

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** tar with fixed owner, order and mtime: the same inputs give the same bytes (and digests) on every machine. */
export async function deterministicTar(output: string, directory: string, entries: string[]): Promise<void> {
  await execFileAsync('tar', [
    '--create',
    '--file',
    output,
    '--directory',
    directory,
    '--owner=0',
    '--group=0',
    '--numeric-owner',
    '--sort=name',
    '--mtime=@0',
    ...entries,
  ]);
}

export interface ImageSpec {
  tag: string;
  /** The image config's `config` (Env, Entrypoint, Cmd, Labels, ...). */
  config: Record<string, unknown>;
  /** Layer tars, bottom first, each with who built it (the history). */
  layers: Array<{ tar: string; createdBy: string }>;
  /** File name prefix in the cache. */
  cacheName: string;
  cacheDir?: string;
}

/**
 * Writes (or reuses from the cache) a docker-archive of the image. The config has no creation time, so
 * the image id (the config's sha256) is the same on every host: a checkpoint records its image by id,
 * and restoring elsewhere fails unless the destination has that exact id. (`podman import` stamps the
 * current time and so gives every host a different id; `podman load` of this archive does not.)
 */
export async function writeDockerArchive(spec: ImageSpec): Promise<string> {
  const cache = imageCacheDir(spec.cacheDir);
  const digests = await Promise.all(spec.layers.map((layer) => sha256File(layer.tar)));
  const config = JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    created: EPOCH,
    config: spec.config,
    rootfs: { type: 'layers', diff_ids: digests.map((d) => `sha256:${d}`) },
    history: spec.layers.map((layer) => ({ created: EPOCH, created_by: layer.createdBy })),
  });
  const configDigest = createHash('sha256').update(config).digest('hex');
  const tagKey = createHash('sha256').update(spec.tag).digest('hex').slice(0, 8);
  const archive = join(cache, `${spec.cacheName}-${configDigest.slice(0, 16)}-${tagKey}.tar`);
  if (await fileExists(archive)) return archive;

  await mkdir(cache, { recursive: true });
  const work = await mkdtemp(join(cache, 'archive-'));
  try {
    for (const [index, layer] of spec.layers.entries()) {
      const digest = digests[index] as string;
      await mkdir(join(work, digest), { recursive: true });
      await copyFile(layer.tar, join(work, digest, 'layer.tar'));
    }
    await writeFile(join(work, `${configDigest}.json`), config);
    const manifest = [{ Config: `${configDigest}.json`, RepoTags: [spec.tag], Layers: digests.map((d) => `${d}/layer.tar`) }];
    await writeFile(join(work, 'manifest.json'), JSON.stringify(manifest));
    const partial = join(work, 'image.tar');
    await deterministicTar(partial, work, ['manifest.json', `${configDigest}.json`, ...new Set(digests)]);
    await rename(partial, archive);
    return archive;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Loads the archive into the Podman service at `podmanUrl` unless it already has `tag`; returns the
 * image id. Setup-time only: it shells out to the podman CLI (`env`: e.g. PodmanHost.env).
 */
export async function loadImage(
  podmanUrl: string,
  tag: string,
  archive: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ id: string; imported: boolean }> {
  const podman = (args: string[]) =>
    execFileAsync('podman', ['--url', podmanUrl, ...args], { env: { ...env }, maxBuffer: 16 * 1024 * 1024 });
  const existing = await podman(['image', 'inspect', '--format', '{{.Id}}', tag]).then(
    (r) => r.stdout.trim(),
    () => undefined,
  );
  if (existing !== undefined && existing !== '') return { id: existing, imported: false };
  const started = Date.now();
  await podman(['load', '--input', archive]).catch((error: { stderr?: string; message: string }) => {
    throw new Error(`podman load of ${tag} failed: ${(error.stderr ?? error.message).trim()}`);
  });
  const { stdout } = await podman(['image', 'inspect', '--format', '{{.Id}}', tag]);
  log.info({ tag, id: stdout.trim(), loadMs: Date.now() - started }, 'image loaded');
  return { id: stdout.trim(), imported: true };
}
