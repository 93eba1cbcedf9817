import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import pRetry from 'p-retry';
import { chunkKey, MANIFEST_FORMAT, manifestKey, type ChunkRef, type Manifest, signManifest } from './checkpoint-artifact.js';
import { TAG_BYTES, type ChunkSealer } from './checkpoint-sealing.js';
import type { Artifact, ArtifactLocation } from './events.js';
import type { ObjectStore } from './object-store.js';
import { type SigningKeyPair } from './signed-envelope.js';
import type { Uplink } from './uplink.js';

export interface ChunkedUploadOptions {
  migrationId: string;
  /** Plaintext bytes per chunk; each stored chunk is 16 bytes longer (its GCM tag). */
  chunkBytes: number;
  /** Seals each chunk for the destination before it leaves this process: nothing goes to the store in clear. */
  sealer: ChunkSealer;
  /** The uploading agent and its manifest-signing key: the destination restores only from a manifest it signed. */
  signer: { agentId: string; key: SigningKeyPair };
  /** Chunks uploading at once; memory held is (parallel + 1) x chunkBytes, in reused buffers. */
  parallel: number;
  /** Called once per chunk as soon as it is durable in the store (in completion order). */
  onChunk: (chunk: ChunkRef) => Promise<void>;
  /** Attempts per chunk beyond the first. */
  retries?: number;
  /** The host's uplink (core/uplink.ts): caps and measures what this upload sends. */
  uplink?: Uplink;
}

export interface ChunkedUpload {
  manifest: Manifest;
  /** sha256 of the manifest object's bytes, so a reader can trust the chunk list it names. */
  manifestSha256: string;
  /** Plaintext bytes read from the source. */
  plainBytes: number;
  /** When the source produced its first byte. */
  firstByteAt: Date;
}

/**
 * Cuts a stream into numbered chunks, seals each (AES-256-GCM, core/checkpoint-sealing.ts) and uploads
 * them in parallel as they fill, each retried alone, then writes the manifest. The source is read once;
 * memory stays bounded by the chunks in flight plus the one filling, each sealed in its own reused buffer.
 */
export async function uploadChunked(
  source: Readable,
  store: ObjectStore,
  prefix: string,
  options: ChunkedUploadOptions,
): Promise<ChunkedUpload> {
  const chunks: ChunkRef[] = [];
  const inFlight = new Set<Promise<void>>();
  // Announcements run apart from the uploads: a chunk's buffer and upload slot are free once it is stored,
  // not once the bus acknowledged the news. All must have gone out before the manifest is written.
  const announcements: Array<Promise<void>> = [];
  let failure: Error | undefined;
  let firstByteAt: Date | undefined;
  let offset = 0;
  let plainBytes = 0;
  // Buffers of one sealed chunk each, reused: a chunk is read into one, sealed there, uploaded from it, and
  // the buffer goes back to the pool when its upload settled. At most parallel + 1 exist (one filling), and
  // no chunk-sized garbage is left for the collector, which let the agent's RSS grow far past what it held.
  const pool: Buffer[] = [];
  const take = (): Buffer => pool.pop() ?? Buffer.allocUnsafe(options.chunkBytes + TAG_BYTES);
  let buffer = take();
  let filled = 0;

  const dispatch = (own: Buffer, plainBytes: number) => {
    const index = chunks.length;
    const data = options.sealer.sealInPlace(index, own, plainBytes);
    const chunk: ChunkRef = {
      index,
      offset,
      sizeBytes: data.length,
      sha256: createHash('sha256').update(data).digest('hex'),
    };
    chunks.push(chunk);
    offset += data.length;
    const put = () => store.put(chunkKey(prefix, chunk.index), data, { contentType: 'application/octet-stream' });
    const upload = pRetry(() => (options.uplink ? options.uplink.send(data.length, put) : put()), {
      retries: options.retries ?? 4,
      minTimeout: 200,
    })
      .then(
        () => {
          announcements.push(
            options.onChunk(chunk).catch((error: unknown) => {
              failure ??= new Error(`announcing chunk ${chunk.index} failed: ${(error as Error).message}`, { cause: error });
            }),
          );
        },
        (error: unknown) => {
          failure ??= new Error(
            `uploading chunk ${chunk.index} (${data.length} bytes at offset ${chunk.offset}) failed: ${(error as Error).message}`,
            { cause: error },
          );
        },
      )
      .finally(() => {
        inFlight.delete(upload);
        pool.push(own);
      });
    inFlight.add(upload);
  };

  for await (const piece of source as AsyncIterable<Buffer>) {
    firstByteAt ??= new Date();
    plainBytes += piece.length;
    let consumed = 0;
    while (consumed < piece.length) {
      const n = piece.copy(buffer, filled, consumed, consumed + Math.min(piece.length - consumed, options.chunkBytes - filled));
      filled += n;
      consumed += n;
      if (filled === options.chunkBytes) {
        dispatch(buffer, filled);
        filled = 0;
        buffer = take();
        // Back-pressure: stop reading the source while the uploads are busy.
        while (inFlight.size >= options.parallel) await Promise.race(inFlight);
      }
    }
    if (failure) {
      source.destroy();
      throw failure;
    }
  }
  if (filled > 0) dispatch(buffer, filled);
  await Promise.all(inFlight);
  await Promise.all(announcements);
  if (failure) throw failure;

  const manifest: Manifest = signManifest(
    {
      formatVersion: MANIFEST_FORMAT,
      migrationId: options.migrationId,
      prefix,
      contentType: 'application/x-tar',
      chunkBytes: options.chunkBytes,
      sealing: options.sealer.sealing,
      chunks,
      sizeBytes: offset,
      sha256: chunkListDigest(chunks),
      createdAt: new Date().toISOString(),
    },
    options.signer,
  );
  const body = Buffer.from(JSON.stringify(manifest));
  await pRetry(() => store.put(manifestKey(prefix), body, { contentType: 'application/json' }), {
    retries: options.retries ?? 4,
    minTimeout: 200,
  });
  return {
    manifest,
    manifestSha256: createHash('sha256').update(body).digest('hex'),
    plainBytes,
    firstByteAt: firstByteAt ?? new Date(),
  };
}

/** What the destination is told of an upload: where it lies, its size and digests, and its manifest's digest. */
export function artifactOf(location: ArtifactLocation, upload: ChunkedUpload): Artifact {
  return {
    ...location,
    sizeBytes: upload.manifest.sizeBytes,
    sha256: upload.manifest.sha256,
    chunkCount: upload.manifest.chunks.length,
    manifestSha256: upload.manifestSha256,
  };
}

/**
 * The whole archive's digest, as a hash list: sha256 over the chunks' own digests in order. Each chunk's
 * digest covers its bytes, so this names the same stored archive as hashing every byte again would, at the
 * cost of a few KB instead of a second pass over the archive inside the freeze.
 */
export function chunkListDigest(chunks: readonly Pick<ChunkRef, 'sha256'>[]): string {
  const list = createHash('sha256');
  for (const chunk of chunks) list.update(Buffer.from(chunk.sha256, 'hex'));
  return list.digest('hex');
}
