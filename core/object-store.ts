import type { Readable } from 'node:stream';

/**
 * The seam between agents/functions and a cloud's object storage.
 *
 * A store is addressed by a URL that names the cloud, the bucket/container and a key prefix:
 *   s3://bucket/prefix, azblob://account/container/prefix, gs://bucket/prefix, file:///abs/path
 * Credentials and endpoints come from each cloud's standard chain (environment variables, managed
 * identity, application default credentials), never from the URL or from code.
 *
 * Keys passed to the methods are relative to the store's prefix: "/"-separated non-empty segments, none
 * of them "." or "..", no control characters, at most 1024 bytes with the prefix (the GCS and S3 limit).
 * Every store rejects other keys with InvalidKeyError, so a key cannot escape a file store's directory.
 */
export interface ObjectStore {
  /** The store's URL as configured (no credentials in it). */
  readonly url: string;

  /**
   * Writes `body` to `key`. Resolves once the object is durable.
   *
   * - A Readable is streamed through the backend's streaming upload without being buffered whole: use it
   *   for bodies of unknown or large size (its memory is the SDK's part/block buffers, about 32 MiB).
   * - Bytes (a Buffer or other Uint8Array) already in memory are sent as one request (S3 PutObject, Azure
   *   Put Blob, GCS single-request multipart upload, one file write) straight from the caller's memory,
   *   with no copy into SDK buffers: use it for chunks held in memory. The store keeps no reference to
   *   the bytes once the returned promise settles, so the caller may reuse the buffer then, and never
   *   before. Meant for chunks (megabytes to a few hundred): one request is retried whole by the SDK
   *   where it retries at all, and test emulators cap it (the GCS emulator at 130 MB).
   *
   * Both paths take the same options with the same meaning (contentType, metadata, ifNoneMatch, signal)
   * and resolve with the same result. With `ifNoneMatch: true` the write fails with ObjectExistsError if
   * the key exists (every backend sends the condition; a server that ignores it, like s3rver,
   * simply overwrites). Aborting `signal` rejects the put.
   */
  put(key: string, body: Readable | Uint8Array, options?: PutOptions): Promise<PutResult>;

  /** A readable stream of the object's bytes (or of [start, end] inclusive). ObjectNotFoundError if absent. */
  get(key: string, range?: ByteRange): Promise<Readable>;

  /** Size and user metadata, or undefined if the key does not exist. */
  head(key: string): Promise<ObjectInfo | undefined>;

  /**
   * Keys (relative to the store prefix) that start with `prefix`, in lexical (byte) order. Only key and
   * size: S3 listings carry no user metadata, so asking for it would cost a HEAD per object.
   */
  list(prefix: string): AsyncIterable<ListedObject>;

  /** Deletes the key; deleting a missing key is not an error. */
  delete(key: string): Promise<void>;

  /**
   * A URL that lets anyone holding it GET the object (and Range-GET it) over plain HTTP(S) until
   * `expiresAt`, and nothing else: S3 presigned GET, Azure read-only SAS, GCS V4 signed URL.
   */
  signedReadUrl(key: string, ttlSeconds: number): Promise<SignedUrl>;
}

export interface PutOptions {
  contentType?: string;
  /**
   * Names match /^[a-z][a-z0-9_]{0,62}$/ and values are printable ASCII: the subset that S3 (lower-cases
   * names), Azure (names must be C# identifiers) and GCS all return unchanged. Checked by every store.
   */
  metadata?: Record<string, string>;
  ifNoneMatch?: boolean;
  signal?: AbortSignal;
}

export interface PutResult {
  key: string;
  size: number;
}

export interface ByteRange {
  start: number;
  /** inclusive; omitted means to the end */
  end?: number;
}

export interface ListedObject {
  key: string;
  size: number;
}

export interface ObjectInfo extends ListedObject {
  metadata: Record<string, string>;
}

export interface SignedUrl {
  url: string;
  /** ISO 8601 */
  expiresAt: string;
}

export class ObjectNotFoundError extends Error {
  constructor(
    readonly storeUrl: string,
    readonly key: string,
  ) {
    super(`object "${key}" does not exist in ${storeUrl}`);
    this.name = 'ObjectNotFoundError';
  }
}

export class ObjectExistsError extends Error {
  constructor(
    readonly storeUrl: string,
    readonly key: string,
  ) {
    super(`object "${key}" already exists in ${storeUrl}; refusing to overwrite it`);
    this.name = 'ObjectExistsError';
  }
}

export class InvalidKeyError extends Error {
  constructor(
    readonly key: string,
    why: string,
  ) {
    super(`invalid object key ${JSON.stringify(key)}: ${why}`);
    this.name = 'InvalidKeyError';
  }
}

export class InvalidMetadataError extends Error {
  constructor(why: string) {
    super(`invalid object metadata: ${why}`);
    this.name = 'InvalidMetadataError';
  }
}
