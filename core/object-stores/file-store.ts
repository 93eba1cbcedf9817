import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { link, mkdir, open, readFile, readdir, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import {
  InvalidKeyError,
  ObjectExistsError,
  ObjectNotFoundError,
  type ByteRange,
  type ListedObject,
  type ObjectInfo,
  type ObjectStore,
  type PutOptions,
  type PutResult,
  type SignedUrl,
} from '../object-store.js';
import { ByteCounter } from './byte-counter.js';
import { KeySpace, checkPortableMetadata, checkSignedUrlTtl } from './key-space.js';

// Both live under the root so that renames stay on one filesystem (and so atomic).
const METADATA_DIR = '.ums-meta';
const STAGING_DIR = '.ums-tmp';

const sidecarSchema = z.object({ contentType: z.string(), metadata: z.record(z.string(), z.string()) });

/**
 * Objects as plain files under one directory, for a single host or for hosts sharing a volume (NFS, a
 * bind mount in tests). Writes land in a staging file and are renamed into place, so readers see either
 * the old object or the whole new one. User metadata lives in sidecar files under .ums-meta/.
 *
 * Its "signed" URLs are file:// URLs: they carry no signature and do not expire (expiresAt is advisory),
 * and they work only on hosts that see the same path. Never hand one to a host in another cloud.
 */
export class FileStore implements ObjectStore {
  readonly url: string;
  private readonly keys = new KeySpace('');

  constructor(
    url: string,
    private readonly root: string,
  ) {
    this.url = url;
  }

  async put(key: string, body: Readable | Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    const path = this.dataPath(key);
    const metadata = checkPortableMetadata(options.metadata);
    const staging = join(this.root, STAGING_DIR, randomUUID());
    await mkdir(dirname(staging), { recursive: true });
    await mkdir(dirname(path), { recursive: true });
    const counter = new ByteCounter();
    try {
      // flush: fsync before close, so the rename below never publishes a file whose data is still in cache.
      if (body instanceof Uint8Array) {
        // Written straight from the caller's memory (no copy).
        await writeFile(staging, body, { flag: 'wx', flush: true, ...(options.signal !== undefined ? { signal: options.signal } : {}) });
        counter.bytes = body.byteLength;
      } else {
        const sink = createWriteStream(staging, { flags: 'wx', flush: true });
        await pipeline(body, counter, sink, ...(options.signal !== undefined ? [{ signal: options.signal }] : []));
      }
      if (options.ifNoneMatch === true) {
        // link() fails if the name exists, atomically: two racing writers cannot both win.
        try {
          await link(staging, path);
        } catch (error) {
          if (errorCode(error) === 'EEXIST') throw new ObjectExistsError(this.url, key);
          throw error;
        }
      } else {
        await rename(staging, path);
      }
    } finally {
      await unlink(staging).catch(() => undefined);
    }
    await this.writeSidecar(key, { contentType: options.contentType ?? 'application/octet-stream', metadata });
    return { key, size: counter.bytes };
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    const path = this.dataPath(key);
    try {
      const handle = await open(path, 'r');
      // open() succeeds on a directory (a key that is only a prefix of others); it is not an object.
      if (!(await handle.stat()).isFile()) {
        await handle.close();
        throw new ObjectNotFoundError(this.url, key);
      }
      return handle.createReadStream({
        start: range?.start ?? 0,
        ...(range?.end !== undefined ? { end: range.end } : {}),
      });
    } catch (error) {
      if (errorCode(error) === 'ENOENT') throw new ObjectNotFoundError(this.url, key);
      throw error;
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const path = this.dataPath(key);
    try {
      const info = await stat(path);
      if (!info.isFile()) return undefined;
      const sidecar = await this.readSidecar(key);
      return { key, size: info.size, metadata: sidecar?.metadata ?? {} };
    } catch (error) {
      if (errorCode(error) === 'ENOENT') return undefined;
      throw error;
    }
  }

  async *list(prefix: string): AsyncIterable<ListedObject> {
    this.keys.listPrefix(prefix);
    // Walk only the directory the prefix points into; sort at the end because a directory walk is not in
    // key order ("a-c" sorts before "a/b").
    const slash = prefix.lastIndexOf('/');
    const directory = slash < 0 ? '' : prefix.slice(0, slash);
    if (directory !== '') this.keys.full(directory);
    const found: ListedObject[] = [];
    await this.walk(directory, prefix, found);
    found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    yield* found;
  }

  async delete(key: string): Promise<void> {
    for (const path of [this.dataPath(key), this.sidecarPath(key)]) {
      await unlink(path).catch((error: unknown) => {
        if (errorCode(error) !== 'ENOENT') throw error;
      });
    }
  }

  async signedReadUrl(key: string, ttlSeconds: number): Promise<SignedUrl> {
    checkSignedUrlTtl(ttlSeconds);
    return {
      url: pathToFileURL(this.dataPath(key)).href,
      expiresAt: new Date(Date.now() + ttlSeconds * 1000).toISOString(),
    };
  }

  private dataPath(key: string): string {
    const full = this.keys.full(key);
    const first = full.split('/')[0];
    if (first === METADATA_DIR || first === STAGING_DIR) {
      throw new InvalidKeyError(key, `"${first}" is reserved by the file store`);
    }
    return join(this.root, ...full.split('/'));
  }

  private sidecarPath(key: string): string {
    return `${join(this.root, METADATA_DIR, ...this.keys.full(key).split('/'))}.json`;
  }

  private async writeSidecar(key: string, sidecar: z.infer<typeof sidecarSchema>): Promise<void> {
    const path = this.sidecarPath(key);
    await mkdir(dirname(path), { recursive: true });
    const staging = `${path}.${randomUUID()}.tmp`;
    await writeFile(staging, JSON.stringify(sidecar));
    await rename(staging, path);
  }

  private async readSidecar(key: string): Promise<z.infer<typeof sidecarSchema> | undefined> {
    try {
      return sidecarSchema.parse(JSON.parse(await readFile(this.sidecarPath(key), 'utf8')));
    } catch (error) {
      if (errorCode(error) === 'ENOENT') return undefined;
      throw error;
    }
  }

  private async walk(directory: string, prefix: string, found: ListedObject[]): Promise<void> {
    let entries;
    try {
      entries = await readdir(directory === '' ? this.root : join(this.root, ...directory.split('/')), {
        withFileTypes: true,
      });
    } catch (error) {
      if (errorCode(error) === 'ENOENT' || errorCode(error) === 'ENOTDIR') return;
      throw error;
    }
    for (const entry of entries) {
      if (directory === '' && (entry.name === METADATA_DIR || entry.name === STAGING_DIR)) continue;
      const key = directory === '' ? entry.name : `${directory}/${entry.name}`;
      if (entry.isDirectory()) {
        // Descend only where keys below can still start with the prefix.
        if (`${key}/`.startsWith(prefix) || prefix.startsWith(`${key}/`)) await this.walk(key, prefix, found);
      } else if (entry.isFile() && key.startsWith(prefix)) {
        found.push({ key, size: (await stat(join(this.root, ...key.split('/')))).size });
      }
    }
  }
}

function errorCode(error: unknown): string | undefined {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}
