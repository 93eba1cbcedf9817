import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ApiError, type Storage, type Bucket, type StorageOptions } from '@google-cloud/storage';
import {
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

export interface GcsStoreOptions {
  url: string;
  bucket: string;
  prefix: string;
  storage: Storage;
}

/**
 * Client settings from the environment. STORAGE_EMULATOR_HOST points the client at an emulator (the library
 * also reads it from process.env itself; passing it lets a caller use another env). Signing needs a private
 * key: GOOGLE_APPLICATION_CREDENTIALS naming a service-account key file signs locally; without it,
 * application default credentials are used and V4 URLs are signed through the IAM signBlob API (the
 * production path: the runtime's service account needs roles/iam.serviceAccountTokenCreator on itself).
 */
export function gcsStorageOptionsFromEnv(env: NodeJS.ProcessEnv): StorageOptions {
  const emulator = nonEmpty(env.STORAGE_EMULATOR_HOST);
  const keyFilename = nonEmpty(env.GOOGLE_APPLICATION_CREDENTIALS);
  const projectId = nonEmpty(env.GOOGLE_CLOUD_PROJECT) ?? nonEmpty(env.GCLOUD_PROJECT);
  return {
    ...(emulator !== undefined ? { apiEndpoint: emulator.includes('://') ? emulator : `http://${emulator}` } : {}),
    ...(keyFilename !== undefined ? { keyFilename } : {}),
    ...(projectId !== undefined ? { projectId } : {}),
    retryOptions: { autoRetry: true, maxRetries: 5 },
  };
}

export class GcsStore implements ObjectStore {
  readonly url: string;
  private readonly keys: KeySpace;
  private readonly bucket: Bucket;

  constructor(options: GcsStoreOptions) {
    this.url = options.url;
    this.keys = new KeySpace(options.prefix);
    this.bucket = options.storage.bucket(options.bucket);
  }

  async put(key: string, body: Readable | Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    const file = this.bucket.file(this.keys.full(key));
    const metadata = checkPortableMetadata(options.metadata);
    const bytes = body instanceof Uint8Array;
    // Bytes go in one multipart request (uploadType=multipart) that streams the caller's buffer as it is.
    // A resumable upload without chunkSize is one streaming request that keeps only its last buffer for a
    // retry; chunked mode would hold a whole chunk per request (and the emulator truncates chunked uploads).
    // Not file.save(): without a precondition it sets the shared Storage's retryOptions.autoRetry to false
    // and never restores it, turning retries off for every later call on this client.
    const sink = file.createWriteStream({
      resumable: !bytes,
      contentType: options.contentType ?? 'application/octet-stream',
      metadata: { metadata },
      // Generation 0 means "no live object": the GCS form of If-None-Match: *.
      ...(options.ifNoneMatch === true ? { preconditionOpts: { ifGenerationMatch: 0 } } : {}),
    });
    const signal = options.signal !== undefined ? [{ signal: options.signal }] : [];
    const counter = new ByteCounter();
    try {
      if (body instanceof Uint8Array) await pipeline(Readable.from([body], { objectMode: false }), sink, ...signal);
      else await pipeline(body, counter, sink, ...signal);
    } catch (error) {
      if (options.ifNoneMatch === true && statusOf(error) === 412) throw new ObjectExistsError(this.url, key);
      throw error;
    }
    return { key, size: body instanceof Uint8Array ? body.byteLength : counter.bytes };
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    const name = this.keys.full(key);
    // The read stream reports a missing object only once read; ask first so callers get ObjectNotFoundError,
    // and pin the generation so a concurrent overwrite cannot splice two versions into one read.
    let generation: string | number | undefined;
    try {
      const [metadata] = await this.bucket.file(name).getMetadata();
      generation = metadata.generation;
    } catch (error) {
      if (statusOf(error) === 404) throw new ObjectNotFoundError(this.url, key);
      throw error;
    }
    const file = this.bucket.file(name, generation !== undefined ? { generation } : {});
    return file.createReadStream(
      range === undefined ? {} : { start: range.start, ...(range.end !== undefined ? { end: range.end } : {}), validation: false },
    );
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const [metadata] = await this.bucket.file(this.keys.full(key)).getMetadata();
      const user: Record<string, string> = {};
      for (const [name, value] of Object.entries(metadata.metadata ?? {})) {
        if (value !== null && value !== undefined) user[name] = String(value);
      }
      return { key, size: Number(metadata.size ?? 0), metadata: user };
    } catch (error) {
      if (statusOf(error) === 404) return undefined;
      throw error;
    }
  }

  async *list(prefix: string): AsyncIterable<ListedObject> {
    let pageToken: string | undefined;
    do {
      const [files, next] = await this.bucket.getFiles({
        prefix: this.keys.listPrefix(prefix),
        autoPaginate: false,
        maxResults: 1000,
        ...(pageToken !== undefined ? { pageToken } : {}),
      });
      for (const file of files) {
        yield { key: this.keys.relative(file.name), size: Number(file.metadata.size ?? 0) };
      }
      pageToken = typeof next?.pageToken === 'string' ? next.pageToken : undefined;
    } while (pageToken !== undefined);
  }

  async delete(key: string): Promise<void> {
    await this.bucket.file(this.keys.full(key)).delete({ ignoreNotFound: true });
  }

  async signedReadUrl(key: string, ttlSeconds: number): Promise<SignedUrl> {
    checkSignedUrlTtl(ttlSeconds);
    const expires = Date.now() + ttlSeconds * 1000;
    const [url] = await this.bucket.file(this.keys.full(key)).getSignedUrl({ version: 'v4', action: 'read', expires });
    return { url, expiresAt: new Date(expires).toISOString() };
  }
}

/** JSON API calls fail with ApiError (.code), resumable uploads with GaxiosError (.status / .response.status). */
function statusOf(error: unknown): number | undefined {
  if (error instanceof ApiError && typeof error.code === 'number') return error.code;
  if (typeof error !== 'object' || error === null) return undefined;
  if ('status' in error && typeof error.status === 'number') return error.status;
  if ('code' in error && typeof error.code === 'number') return error.code;
  if ('response' in error && typeof error.response === 'object' && error.response !== null) {
    const response = error.response;
    if ('status' in response && typeof response.status === 'number') return response.status;
  }
  return undefined;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}
