import { createPrivateKey, randomUUID, type KeyObject } from 'node:crypto';
import { chmod, link, mkdir, open, readFile, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';

export interface LoadedKeyFile {
  privateKey: KeyObject;
  /** Whether this call created the key (first start on this host, or the state dir was wiped). */
  created: boolean;
  /** Set when the file was readable by others and has been restricted to its owner. */
  tightenedFrom?: number;
}

/**
 * A private key kept in the state dir (PKCS#8 PEM, mode 0600, the dir 0700). Created atomically: written
 * whole to a temporary file, then linked into place, so a crash never leaves half a key and two starts
 * never make two keys. A file readable by others is restricted to its owner (`tightenedFrom` says so).
 */
export async function loadOrCreateKeyFile(
  stateDir: string,
  fileName: string,
  what: string,
  keyType: 'x25519' | 'ed25519',
  generate: () => KeyObject,
): Promise<LoadedKeyFile> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const path = join(stateDir, fileName);
  let created = false;
  if (!(await exists(path))) {
    const pem = generate().export({ format: 'pem', type: 'pkcs8' });
    const temporary = `${path}.${randomUUID()}.tmp`;
    const file = await open(temporary, 'wx', 0o600);
    try {
      await file.writeFile(pem);
      await file.sync();
    } finally {
      await file.close();
    }
    try {
      await link(temporary, path);
      created = true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    } finally {
      await unlink(temporary).catch(() => undefined);
    }
  }
  const mode = (await stat(path)).mode & 0o777;
  let tightenedFrom: number | undefined;
  if ((mode & 0o077) !== 0) {
    await chmod(path, 0o600);
    tightenedFrom = mode;
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(await readFile(path));
  } catch (error) {
    throw new Error(`${what} ${path} does not parse (${(error as Error).message}); move it away to make a new one`, {
      cause: error,
    });
  }
  if (privateKey.asymmetricKeyType !== keyType) throw new Error(`${what} ${path} is ${privateKey.asymmetricKeyType}, not ${keyType}`);
  return { privateKey, created, ...(tightenedFrom !== undefined ? { tightenedFrom } : {}) };
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}
