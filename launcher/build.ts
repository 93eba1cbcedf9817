import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { LAUNCHER_CONTROL_DIR } from './convention.js';

/*
 * The launcher's part of a service's image (build time only: gcc and the side-loaded CRIU): the static
 * launcher binary, CRIU with its own loader and exactly the libraries that loader resolves for it, and a
 * `criu` wrapper for `podman exec ... criu check`. Whoever assembles an image puts these files in a layer
 * above the service's own (infra/images/build-service-image.ts does for the test images).
 */

const execFileAsync = promisify(execFile);

/** ums-launcher.c beside this module's source: launcher/ in the repository, run from there or from dist/launcher/. */
const here = dirname(fileURLToPath(import.meta.url));
export const LAUNCHER_SOURCE =
  [join(here, 'ums-launcher.c'), join(here, '..', '..', 'launcher', 'ums-launcher.c')].find((path) => existsSync(path)) ??
  join(here, 'ums-launcher.c');

/** The image's entrypoint. */
export const LAUNCHER_BINARY_PATH = '/usr/local/bin/ums-launcher';
/** CRIU as shipped in the image: criu, its loader and lib/. */
export const IMAGE_CRIU_DIR = '/usr/local/lib/ums-criu';
/** Default CRIU source: what infra/host-setup.sh side-loads (UMS_PREFIX there). */
export const DEFAULT_CRIU_PREFIX = '/opt/ums/criu';

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

/** A digest of everything the launcher's files are made of (its source, the CRIU files): a cache key. */
export async function launcherFilesDigest(criuPrefix: string = DEFAULT_CRIU_PREFIX): Promise<string> {
  const { loader, criu, libraries } = await criuLibraries(resolve(criuPrefix));
  const key = createHash('sha256').update(await readFile(LAUNCHER_SOURCE));
  for (const file of [loader, criu, ...libraries]) {
    const s = await stat(file);
    key.update(`${file}:${s.size}:${s.mtimeMs}\n`);
  }
  return key.digest('hex');
}

/**
 * Writes the launcher's files into `root` (a layer's tree): LAUNCHER_BINARY_PATH (gcc -static of
 * ums-launcher.c), IMAGE_CRIU_DIR/{criu,ld-linux-x86-64.so.2,lib/}, /usr/local/bin/criu, and the empty
 * control dir and image dir the launcher uses.
 */
export async function writeLauncherFiles(root: string, criuPrefix: string = DEFAULT_CRIU_PREFIX): Promise<{ libraries: number }> {
  const { loader, criu, libraries } = await criuLibraries(resolve(criuPrefix));
  const criuDir = join(root, IMAGE_CRIU_DIR);
  for (const d of ['usr/local/bin', `${IMAGE_CRIU_DIR}/lib`, LAUNCHER_CONTROL_DIR, 'var/lib/ums-launcher']) {
    await mkdir(join(root, d), { recursive: true });
  }
  await execFileAsync('gcc', ['-static', '-O2', '-Wall', '-Wextra', '-o', join(root, LAUNCHER_BINARY_PATH), LAUNCHER_SOURCE]).catch(
    (error: { stderr?: string; message: string }) => {
      throw new Error(`gcc -static ums-launcher.c failed (install gcc and libc6-dev): ${(error.stderr ?? error.message).trim()}`);
    },
  );
  // copyFile follows the sonames' symlinks: each library lands as a real file under the name criu asks for.
  await copyFile(loader, join(criuDir, 'ld-linux-x86-64.so.2'));
  await chmod(join(criuDir, 'ld-linux-x86-64.so.2'), 0o755);
  await copyFile(criu, join(criuDir, 'criu'));
  await chmod(join(criuDir, 'criu'), 0o755);
  for (const library of libraries) await copyFile(library, join(criuDir, 'lib', basename(library)));
  await writeFile(
    join(root, 'usr/local/bin/criu'),
    `#!/bin/sh\n# The host's side-loaded CRIU (Debian forky's 4.2.1 here) with its own glibc, as the launcher runs it.\nexec ${IMAGE_CRIU_DIR}/ld-linux-x86-64.so.2 --library-path ${IMAGE_CRIU_DIR}/lib ${IMAGE_CRIU_DIR}/criu "$@"\n`,
    { mode: 0o755 },
  );
  return { libraries: libraries.length };
}
