import { artifactPrefix, type ChunkRef } from '../core/checkpoint-artifact.js';
import { uploadChunked } from '../core/chunked-upload.js';
import type { Artifact, ArtifactLocation } from '../core/events.js';
import type { ObjectStore } from '../core/object-store.js';
import type { Readable } from 'node:stream';

export interface UploadedCheckpoint {
  artifact: Artifact;
  checkpointStartedAt: Date;
  /** When the engine produced the archive's first byte: the end of the dump, the start of the upload. */
  firstByteAt: Date;
  uploadedAt: Date;
}

export interface CheckpointStreamOptions {
  chunkBytes: number;
  parallel: number;
  /** Announces each chunk as soon as it is durable, so the destination can fetch it right away. */
  onChunk: (chunk: ChunkRef) => Promise<void>;
}

/**
 * Freezes the service (`freeze` is the approach's checkpoint: the engine's or the in-image launcher's)
 * and streams its checkpoint archive straight into the object store as parallel chunks, hashing on the
 * way: the archive never sits whole in memory nor on the agent's disk. The frozen copy stays on this
 * host until a discard or resume command.
 */
export async function streamCheckpoint(
  freeze: () => Promise<Readable>,
  store: ObjectStore,
  migrationId: string,
  location: ArtifactLocation,
  options: CheckpointStreamOptions,
): Promise<UploadedCheckpoint> {
  if (location.prefix !== artifactPrefix(migrationId)) {
    throw new Error(`refusing to write the checkpoint of ${migrationId} under "${location.prefix}": not its own prefix`);
  }
  const checkpointStartedAt = new Date();
  const archive = await freeze();
  const upload = await uploadChunked(archive, store, location.prefix, { migrationId, ...options });
  return {
    artifact: {
      ...location,
      sizeBytes: upload.manifest.sizeBytes,
      sha256: upload.manifest.sha256,
      chunkCount: upload.manifest.chunks.length,
      manifestSha256: upload.manifestSha256,
    },
    checkpointStartedAt,
    firstByteAt: upload.firstByteAt,
    uploadedAt: new Date(),
  };
}
