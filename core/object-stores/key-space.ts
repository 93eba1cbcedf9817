import { InvalidKeyError, InvalidMetadataError } from '../object-store.js';

const MAX_FULL_KEY_BYTES = 1024;
const METADATA_NAME = /^[a-z][a-z0-9_]{0,62}$/;
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;
// S3 and Azure cap all user metadata of one object at 2 KiB and 8 KiB; the smaller wins.
const MAX_METADATA_BYTES = 2048;

/**
 * The keys of one store: its prefix inside the bucket/container, and the mapping between the keys callers
 * use (relative) and the names the backend stores (full). Every store goes through it so that key rules and
 * prefix handling cannot drift between backends.
 */
export class KeySpace {
  /** The prefix without leading or trailing slashes; '' for the bucket root. */
  readonly prefix: string;

  constructor(prefix: string) {
    const trimmed = prefix.replace(/^\/+|\/+$/g, '');
    if (trimmed !== '') checkSegments(trimmed, trimmed);
    this.prefix = trimmed;
  }

  /** The backend name of a caller's key, after checking the key. */
  full(key: string): string {
    if (key === '') throw new InvalidKeyError(key, 'it is empty');
    if (key.startsWith('/')) throw new InvalidKeyError(key, 'it starts with "/"');
    checkSegments(key, key);
    const full = this.prefix === '' ? key : `${this.prefix}/${key}`;
    if (Buffer.byteLength(full) > MAX_FULL_KEY_BYTES) {
      throw new InvalidKeyError(key, `with the store prefix it is longer than ${MAX_FULL_KEY_BYTES} bytes`);
    }
    return full;
  }

  /**
   * The backend prefix to list for a caller's prefix. A caller's '' lists the store's whole prefix
   * "directory" ("pre/"), never sibling prefixes such as "prefix2/".
   */
  listPrefix(prefix: string): string {
    if (prefix.startsWith('/')) throw new InvalidKeyError(prefix, 'a list prefix cannot start with "/"');
    if (/[\x00-\x1f\x7f]/.test(prefix)) throw new InvalidKeyError(prefix, 'it contains control characters');
    return this.prefix === '' ? prefix : `${this.prefix}/${prefix}`;
  }

  /** The caller's key for a backend name returned by a listing under listPrefix(). */
  relative(full: string): string {
    if (this.prefix === '') return full;
    const head = `${this.prefix}/`;
    if (!full.startsWith(head)) throw new Error(`backend returned ${JSON.stringify(full)} outside prefix ${head}`);
    return full.slice(head.length);
  }
}

function checkSegments(key: string, whole: string): void {
  if (/[\x00-\x1f\x7f]/.test(key)) throw new InvalidKeyError(whole, 'it contains control characters');
  for (const segment of key.split('/')) {
    if (segment === '') throw new InvalidKeyError(whole, 'it has an empty segment ("//" or a trailing "/")');
    if (segment === '.' || segment === '..') throw new InvalidKeyError(whole, `it has a "${segment}" segment`);
  }
}

/** Rejects metadata that some backend would rename, reject or alter (see PutOptions.metadata). */
export function checkPortableMetadata(metadata: Record<string, string> | undefined): Record<string, string> {
  if (metadata === undefined) return {};
  let bytes = 0;
  for (const [name, value] of Object.entries(metadata)) {
    if (!METADATA_NAME.test(name)) {
      throw new InvalidMetadataError(`name ${JSON.stringify(name)} must match ${METADATA_NAME.source}`);
    }
    if (typeof value !== 'string' || !PRINTABLE_ASCII.test(value)) {
      throw new InvalidMetadataError(`value of "${name}" must be a printable ASCII string`);
    }
    bytes += name.length + value.length;
  }
  if (bytes > MAX_METADATA_BYTES) throw new InvalidMetadataError(`names and values exceed ${MAX_METADATA_BYTES} bytes`);
  return { ...metadata };
}

/** Checks a signed URL lifetime against the shortest backend maximum (SigV4 and GCS V4: 7 days). */
export function checkSignedUrlTtl(ttlSeconds: number): void {
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > 7 * 24 * 3600) {
    throw new RangeError(`signed URL lifetime must be a whole number of seconds in [1, 604800], got ${ttlSeconds}`);
  }
}
