import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, copyFile, lstat, mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createLogger } from '../../core/log.js';
import { repoPath } from '../repo-paths.js';
import { MAINTAINER_SCRIPT_ONLY_PACKAGES, PrivateApt, unpackDebs } from './debian-packages.js';
import { deterministicTar, fileExists, imageCacheDir, loadImage, writeDockerArchive } from './docker-archive.js';

/*
 * Images of real servers from Debian's own packages, for migration tests, the demo and the benchmark:
 * servers no one here wrote, driven by their own clients, with their state in memory.
 *
 * Build (setup-time only: apt-get, dpkg-deb, tar and the podman CLI; no registry, no chroot):
 *   1. a private apt (debian-packages.ts) resolves the server's packages in Debian bookworm with their
 *      library closure, leaving out what only maintainer scripts need, and downloads them;
 *   2. each .deb is unpacked with dpkg-deb -x into a fresh rootfs (nothing runs, on the host or in the
 *      rootfs: no service can start), with busybox-static as /bin/sh and the tools, and the entrypoint
 *      script from infra/images/servers/;
 *   3. the rootfs becomes a deterministic tar, cached under .tools/image-cache (keyed by the recipe), and
 *      then a docker-archive with a fixed config, loaded with `podman load` into each host: every host of a
 *      stack gets the same image id, which a checkpoint needs to restore elsewhere.
 * A cold build takes 5-8 s per image here (apt lists, about 10 MB of packages); a warm one only loads the
 * cached archive (about 1 s per host).
 */

const execFileAsync = promisify(execFile);
const log = createLogger('server-images');

export const DEFAULT_REDIS_IMAGE = 'localhost/ums/redis:1';
export const DEFAULT_MEMCACHED_IMAGE = 'localhost/ums/memcached:1';
export const DEFAULT_WEBDIS_IMAGE = 'localhost/ums/webdis:1';
export const REDIS_PORT = 6379;
export const MEMCACHED_PORT = 11211;
/** webdis' HTTP port (its redis-server listens on the container's loopback only). */
export const WEBDIS_PORT = 7379;
/** Set to 1 to start the in-container client (see the entrypoint scripts in infra/images/servers/). */
export const INNER_CLIENT_ENV = 'UMS_INNER_CLIENT';
/** Seconds between the inner client's commands (default 0.1). */
export const INNER_INTERVAL_ENV = 'UMS_INNER_INTERVAL';
/** The redis inner client's CLIENT SETNAME, and the key both inner clients increment. */
export const INNER_CLIENT_NAME = 'inner';
export const INNER_COUNT_KEY = 'inner:count';
/**
 * The address the memcached inner client connects to (the container's loopback): its connection is the one
 * whose listen_addr in `stats conns` is this address.
 */
export const MEMCACHED_INNER_CLIENT_ADDRESS = '127.0.0.2';

/** Debian release the servers come from: the hosts' own, so host-side clients speak the same version. */
export const SERVER_DEBIAN_SUITE = 'bookworm';
/** Bump when the rootfs layout changes in a way the recipe's inputs do not show. */
const ROOTFS_LAYOUT_REVISION = '1';
const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export type ServerKind = 'redis' | 'memcached' | 'webdis';

interface ServerRecipe {
  title: string;
  /** Debian packages to install (their dependencies follow). */
  packages: string[];
  /** The package whose version labels the image. */
  mainPackage: string;
  entrypointSource: string;
  entrypointPath: string;
  port: number;
  /** Extra directories the server needs (what its maintainer scripts would have made). */
  dirs: string[];
}

const RECIPES: Record<ServerKind, ServerRecipe> = {
  redis: {
    title: "UMS test server: Debian's redis-server, state in memory",
    packages: ['redis-server', 'redis-tools', 'busybox-static'],
    mainPackage: 'redis-server',
    entrypointSource: repoPath('infra', 'images', 'servers', 'redis-entrypoint.sh'),
    entrypointPath: '/usr/local/bin/ums-redis-entrypoint',
    port: REDIS_PORT,
    dirs: ['var/lib/redis', 'var/log/redis'],
  },
  memcached: {
    title: "UMS test server: Debian's memcached with libmemcached-tools",
    packages: ['memcached', 'libmemcached-tools', 'busybox-static'],
    mainPackage: 'memcached',
    entrypointSource: repoPath('infra', 'images', 'servers', 'memcached-entrypoint.sh'),
    entrypointPath: '/usr/local/bin/ums-memcached-entrypoint',
    port: MEMCACHED_PORT,
    dirs: [],
  },
  webdis: {
    title: "UMS test server: Debian's webdis (HTTP) in front of its own redis-server, state in memory",
    packages: ['webdis', 'redis-server', 'redis-tools', 'busybox-static'],
    mainPackage: 'webdis',
    entrypointSource: repoPath('infra', 'images', 'servers', 'webdis-entrypoint.sh'),
    entrypointPath: '/usr/local/bin/ums-webdis-entrypoint',
    port: WEBDIS_PORT,
    dirs: ['var/lib/redis', 'var/log/webdis'],
  },
};

export interface BuildServerImageOptions {
  /** Environment for the `podman` CLI, e.g. PodmanHost.env. */
  env?: NodeJS.ProcessEnv;
  /** Where built rootfs tars and archives are cached. Default <repo>/.tools/image-cache (or UMS_IMAGE_CACHE). */
  cacheDir?: string;
}

export interface ServerImage {
  tag: string;
  /** Image id on the host it was loaded into (the same on every host). */
  id: string;
  /** The docker-archive that was loaded (cached). */
  archive: string;
  /** False when the host already had the tag and nothing was loaded. */
  imported: boolean;
  /** Debian version of the server package in the image, e.g. 5:7.0.15-1~deb12u10. */
  serverVersion: string;
}

/** Builds (or reuses) localhost/ums/redis and loads it into the Podman service at `podmanUrl` (unix://...). */
export function buildRedisImage(
  podmanUrl: string,
  tag: string = DEFAULT_REDIS_IMAGE,
  options: BuildServerImageOptions = {},
): Promise<ServerImage> {
  return buildServerImage('redis', podmanUrl, tag, options);
}

/** Builds (or reuses) localhost/ums/memcached and loads it into the Podman service at `podmanUrl` (unix://...). */
export function buildMemcachedImage(
  podmanUrl: string,
  tag: string = DEFAULT_MEMCACHED_IMAGE,
  options: BuildServerImageOptions = {},
): Promise<ServerImage> {
  return buildServerImage('memcached', podmanUrl, tag, options);
}

/**
 * Builds (or reuses) localhost/ums/webdis and loads it into the Podman service at `podmanUrl` (unix://...):
 * an HTTP server whose state (a redis list) a test reads back to count how often each POST was applied.
 */
export function buildWebdisImage(
  podmanUrl: string,
  tag: string = DEFAULT_WEBDIS_IMAGE,
  options: BuildServerImageOptions = {},
): Promise<ServerImage> {
  return buildServerImage('webdis', podmanUrl, tag, options);
}

export async function buildServerImage(
  kind: ServerKind,
  podmanUrl: string,
  tag: string,
  options: BuildServerImageOptions = {},
): Promise<ServerImage> {
  const { archive, serverVersion } = await buildServerImageArchive(kind, tag, options.cacheDir);
  const { id, imported } = await loadImage(podmanUrl, tag, archive, options.env);
  return { tag, id, archive, imported, serverVersion };
}

/** Builds (or reuses from the cache) a docker-archive of the server image tagged `tag`. */
export async function buildServerImageArchive(
  kind: ServerKind,
  tag: string,
  cacheDir?: string,
): Promise<{ archive: string; serverVersion: string }> {
  const recipe = RECIPES[kind];
  const rootfs = await buildServerRootfs(kind, cacheDir);
  const serverVersion = rootfs.versions.get(recipe.mainPackage);
  if (serverVersion === undefined) throw new Error(`${rootfs.tar} was built without ${recipe.mainPackage} (see ${rootfs.manifest})`);
  const archive = await writeDockerArchive({
    tag,
    cacheName: `${kind}-image`,
    ...(cacheDir !== undefined ? { cacheDir } : {}),
    config: {
      Env: [PATH_ENV],
      Entrypoint: [recipe.entrypointPath],
      Cmd: [],
      WorkingDir: '/',
      ExposedPorts: { [`${recipe.port}/tcp`]: {} },
      StopSignal: 'SIGTERM',
      Labels: {
        'org.opencontainers.image.title': recipe.title,
        'org.opencontainers.image.version': serverVersion,
        'ums.debian.suite': SERVER_DEBIAN_SUITE,
      },
    },
    layers: [
      {
        tar: rootfs.tar,
        createdBy: `infra/images/build-server-images.ts: ${recipe.packages.join(' ')} from Debian ${SERVER_DEBIAN_SUITE}`,
      },
    ],
  });
  return { archive, serverVersion };
}

export interface ServerRootfs {
  tar: string;
  /** `name version arch` per line: what was unpacked. */
  manifest: string;
  versions: Map<string, string>;
}

/** Builds (or reuses from the cache) the server's rootfs tar. */
export async function buildServerRootfs(kind: ServerKind, cacheDir?: string): Promise<ServerRootfs> {
  const recipe = RECIPES[kind];
  const cache = imageCacheDir(cacheDir);
  const entrypoint = await readFile(recipe.entrypointSource).catch((error: unknown) => {
    throw new Error(`entrypoint script ${recipe.entrypointSource} missing from the repository`, { cause: error });
  });
  const key = createHash('sha256')
    .update(
      JSON.stringify([
        ROOTFS_LAYOUT_REVISION,
        SERVER_DEBIAN_SUITE,
        recipe.packages,
        MAINTAINER_SCRIPT_ONLY_PACKAGES,
        recipe.dirs,
        recipe.entrypointPath,
      ]),
    )
    .update(entrypoint)
    .digest('hex')
    .slice(0, 16);
  const tar = join(cache, `${kind}-rootfs-${key}.tar`);
  const manifest = `${tar}.packages`;
  if ((await fileExists(tar)) && (await fileExists(manifest))) return { tar, manifest, versions: await readManifest(manifest) };

  await mkdir(cache, { recursive: true });
  const work = await mkdtemp(join(cache, `build-${kind}-`));
  try {
    const started = Date.now();
    // A private apt state per build: cold builds are rare, and nothing is shared with a parallel build.
    const apt = await PrivateApt.create(join(work, 'apt'), { suite: SERVER_DEBIAN_SUITE });
    await apt.update();
    const packages = await apt.resolve(recipe.packages);
    const debs = await apt.download(packages, join(work, 'debs'));
    const fetchedMs = Date.now() - started;

    const rootfs = join(work, 'rootfs');
    await unpackDebs(debs, rootfs);
    // What only people read, and service-manager files for a system that is not there.
    for (const unused of [
      'usr/share/doc',
      'usr/share/man',
      'usr/share/info',
      'usr/share/locale',
      'usr/share/lintian',
      'usr/share/bug',
      'etc/init.d',
      'lib/systemd',
      'usr/lib/systemd',
    ]) {
      await rm(join(rootfs, unused), { recursive: true, force: true });
    }
    for (const d of [
      'bin',
      'etc',
      'tmp',
      'var/tmp',
      'root',
      'proc',
      'sys',
      'dev',
      'run',
      'usr/local/bin',
      'usr/share/ums',
      ...recipe.dirs,
    ]) {
      await mkdir(join(rootfs, d), { recursive: true });
    }
    await chmod(join(rootfs, 'tmp'), 0o1777);
    await chmod(join(rootfs, 'var/tmp'), 0o1777);
    await linkBusyboxApplets(rootfs);

    await writeFile(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
    await writeFile(join(rootfs, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
    await writeFile(join(rootfs, 'etc/nsswitch.conf'), 'passwd: files\ngroup: files\nhosts: files dns\n');
    await copyFile(recipe.entrypointSource, join(rootfs, recipe.entrypointPath));
    await chmod(join(rootfs, recipe.entrypointPath), 0o755);
    const listing = packages.map((p) => `${p.name} ${p.version} ${p.arch}\n`).join('');
    await writeFile(join(rootfs, 'usr/share/ums/packages'), listing);

    const partial = join(work, 'rootfs.tar');
    await deterministicTar(partial, rootfs, ['.']);
    await writeFile(manifest, listing);
    await rename(partial, tar);
    log.info({ kind, tar, packages: packages.length, fetchMs: fetchedMs, buildMs: Date.now() - started }, 'server rootfs built');
    return { tar, manifest, versions: await readManifest(manifest) };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** busybox-static's applets as /bin links, where no package put a real program of that name in /bin. */
async function linkBusyboxApplets(rootfs: string): Promise<void> {
  const busybox = join(rootfs, 'bin', 'busybox');
  // Static: it runs on the host to list its own applets.
  const { stdout } = await execFileAsync(busybox, ['--list']).catch((error: unknown) => {
    throw new Error(`${busybox} --list failed: busybox-static did not unpack into the rootfs`, { cause: error });
  });
  for (const applet of stdout
    .split('\n')
    .map((a) => a.trim())
    .filter((a) => a !== '' && a !== 'busybox')) {
    const path = join(rootfs, 'bin', applet);
    if (
      await lstat(path).then(
        () => true,
        () => false,
      )
    )
      continue;
    await symlink('busybox', path);
  }
}

async function readManifest(path: string): Promise<Map<string, string>> {
  const lines = (await readFile(path, 'utf8')).split('\n').filter((l) => l !== '');
  return new Map(
    lines.map((l) => {
      const [name = '', version = ''] = l.split(' ');
      return [name, version];
    }),
  );
}
