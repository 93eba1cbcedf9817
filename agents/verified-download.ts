import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import {
  chunkKey,
  type ChunkRef,
  type ExpectedManifest,
  Manifest,
  manifestKey,
  MAX_CHUNK_BYTES,
  MAX_MANIFEST_BYTES,
  verifyManifest,
} from '../core/checkpoint-artifact.js';
import { SealingError, TAG_BYTES, type ChunkOpener } from '../core/checkpoint-sealing.js';
import type { Artifact, FailureCode } from '../core/events.js';
import {
  DownloadSizeMismatchError,
  downloadSignedUrl,
  DownloadTooLargeError,
  SignedUrlNotFoundError,
  SignedUrlRedirectError,
  SignedUrlRejectedError,
} from '../core/object-stores/signed-url-download.js';
import { SignedUrlPolicyError } from '../core/object-stores/signed-url-policy.js';
import { SignatureError } from '../core/signed-envelope.js';

/**
 * The destination's side of what the source stored (core/chunked-upload.ts): the signed manifest and the sealed
 * chunks, each fetched through its signed URL and verified before anything is used. The checkpoint's restore
 * (agents/restore-job.ts) and the shipped image (agents/image-transfer.ts) read their objects through these.
 */

// The restore's two ways to end without a container: refused with a reason, or abandoned.

/** A restore refused for a reason the operator can act on; `code` goes into the restore.failed event. */
export class RestoreRefusedError extends Error {
  constructor(
    readonly code: FailureCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'RestoreRefusedError';
  }
}

/** The source gave up (or the migration ended elsewhere): stop quietly, the saga already knows. */
export class RestoreAbandonedError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'RestoreAbandonedError';
  }
}

/** Checks that a signed URL names exactly the object `key` at the migration's store; throws SignedUrlPolicyError. */
export type UrlCheck = (url: string, key: string) => void;

/**
 * Fetches the manifest, checks it against the digest, chunk count and size the source announced, and its
 * signature: the source agent signed it, for this migration and prefix, with the key the planner recorded.
 * `what` names the stored object in the reasons ("checkpoint", "image"). Download failures are thrown as they
 * are (describeFetchError names them).
 */
export async function fetchManifest(
  url: string,
  announced: Pick<Artifact, 'manifestSha256' | 'chunkCount' | 'sizeBytes'>,
  expected: ExpectedManifest,
  checkUrl: UrlCheck,
  what: string,
): Promise<Manifest> {
  checkUrl(url, manifestKey(expected.prefix));
  const body = await downloadInto(undefined, url, MAX_MANIFEST_BYTES);
  const sha256 = createHash('sha256').update(body).digest('hex');
  if (sha256 !== announced.manifestSha256) {
    throw new RestoreRefusedError(
      'manifest-invalid',
      `the ${what} manifest has sha256 ${sha256}, the source announced ${announced.manifestSha256}: it was replaced in the store`,
    );
  }
  let manifest: Manifest;
  try {
    manifest = Manifest.parse(JSON.parse(body.toString('utf8')));
    // The schema bounds each stored chunk by chunkBytes plus its tag; this bounds chunkBytes itself.
    if (manifest.chunkBytes > MAX_CHUNK_BYTES) {
      throw new Error(`chunks of ${manifest.chunkBytes} bytes, over the ${MAX_CHUNK_BYTES} allowed`);
    }
  } catch (error) {
    // JSON.parse quotes the input it failed on: nothing fetched goes into the reason (it reaches events).
    const why = error instanceof SyntaxError ? 'not JSON' : describe(error);
    throw new RestoreRefusedError('manifest-invalid', `the ${what} manifest does not parse: ${why}`);
  }
  // Before anything in it is trusted.
  try {
    verifyManifest(manifest, expected);
  } catch (error) {
    if (!(error instanceof SignatureError)) throw error;
    const reason = `the ${what} manifest is refused (${error.code}): ${error.message}; nothing restored`;
    throw new RestoreRefusedError('manifest-invalid', reason, { cause: error });
  }
  if (manifest.chunks.length !== announced.chunkCount || manifest.sizeBytes !== announced.sizeBytes) {
    throw new RestoreRefusedError(
      'manifest-invalid',
      `the manifest lists ${manifest.chunks.length} chunks / ${manifest.sizeBytes} bytes, the source announced ${announced.chunkCount} / ${announced.sizeBytes}`,
    );
  }
  return manifest;
}

/**
 * Fetches one sealed chunk under `prefix`, checks it against its sha256 (of the stored ciphertext) and opens it
 * in place (no second copy): what comes back is authenticated plaintext.
 */
export async function fetchChunk(
  chunk: ChunkRef,
  url: string,
  prefix: string,
  opener: ChunkOpener,
  checkUrl: UrlCheck,
  what: string,
): Promise<Buffer> {
  if (chunk.sizeBytes > MAX_CHUNK_BYTES + TAG_BYTES) {
    throw new RestoreRefusedError(
      'size-mismatch',
      `chunk ${chunk.index} was announced with ${chunk.sizeBytes} bytes, over the ${MAX_CHUNK_BYTES + TAG_BYTES} a sealed chunk may have`,
    );
  }
  checkUrl(url, chunkKey(prefix, chunk.index));
  const sealed = await downloadInto(Buffer.allocUnsafe(chunk.sizeBytes), url);
  const sha256 = createHash('sha256').update(sealed).digest('hex');
  if (sha256 !== chunk.sha256) {
    throw new RestoreRefusedError(
      'digest-mismatch',
      `chunk ${chunk.index} of the ${what} has sha256 ${sha256}, the source announced ${chunk.sha256}: it was corrupted or replaced in the store`,
    );
  }
  try {
    return opener.openInPlace(chunk.index, sealed);
  } catch (error) {
    if (!(error instanceof SealingError)) throw error;
    throw new RestoreRefusedError('seal-invalid', `${error.message}; refused, nothing restored`, { cause: error });
  }
}

/**
 * Downloads into `into` (a chunk of known size, no copy) or into a growing list (the small manifest).
 * A resumed transfer continues where it stopped, so writing in arrival order is right.
 */
async function downloadInto(into: Buffer | undefined, url: string, maxBytes?: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let filled = 0;
  const sink = new Writable({
    write(part: Buffer, _encoding, callback) {
      if (into) {
        if (filled + part.length > into.length) return callback(new DownloadSizeMismatchError('chunk', into.length, filled + part.length));
        part.copy(into, filled);
      } else parts.push(part);
      filled += part.length;
      callback();
    },
  });
  await downloadSignedUrl(url, sink, {
    retries: 4,
    ...(into ? { expectedSize: into.length } : {}),
    ...(maxBytes !== undefined ? { maxBytes } : {}),
  });
  return into ?? Buffer.concat(parts);
}

/** A failed fetch of `name` ("chunk 3", "the manifest"), as the refusal it is. */
export function describeFetchError(name: string, error: unknown): RestoreRefusedError {
  const message = describe(error);
  if (error instanceof RestoreRefusedError) return error;
  if (error instanceof SignedUrlRejectedError || error instanceof SignedUrlPolicyError || error instanceof SignedUrlRedirectError)
    return new RestoreRefusedError('url-rejected', `${name}: ${message}`, { cause: error });
  if (error instanceof DownloadTooLargeError)
    return new RestoreRefusedError('size-mismatch', `${name} is too large: ${message}`, { cause: error });
  if (error instanceof SignedUrlNotFoundError)
    return new RestoreRefusedError('download-failed', `${name} is missing from the store: ${message}`, { cause: error });
  if (error instanceof DownloadSizeMismatchError)
    return new RestoreRefusedError('size-mismatch', `${name} was truncated or replaced in the store: ${message}`, { cause: error });
  return new RestoreRefusedError('download-failed', `downloading ${name} failed: ${message}`, { cause: error });
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
