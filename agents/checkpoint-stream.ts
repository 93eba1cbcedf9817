import { pipeline } from 'node:stream/promises';
import { DigestStream } from '../core/digest-stream.js';
import type { Artifact, ArtifactLocation } from '../core/events.js';
import type { ObjectStore } from '../core/object-store.js';
import type { ContainerEngine } from './container-engine.js';

export interface UploadedCheckpoint {
  artifact: Artifact;
  checkpointStartedAt: Date;
  /** When the engine produced the archive's first byte: the end of the dump, the start of the upload. */
  firstByteAt: Date;
  uploadedAt: Date;
}

/**
 * Freezes the container and streams its checkpoint archive straight from the engine into the object
 * store, hashing it on the way: the archive never sits whole in memory nor on the agent's disk.
 * The container stays checkpointed on this host until a discard or resume command.
 */
export async function streamCheckpoint(
  engine: ContainerEngine,
  store: ObjectStore,
  container: string,
  location: ArtifactLocation,
  onProgress: (bytes: number) => void,
): Promise<UploadedCheckpoint> {
  const checkpointStartedAt = new Date();
  const archive = await engine.checkpoint(container);
  const digest = new DigestStream(onProgress);
  const piping = pipeline(archive, digest);
  const [put] = await Promise.all([
    store.put(location.key, digest, { contentType: 'application/x-tar', metadata: { ums_kind: 'checkpoint_archive' } }),
    piping,
  ]);
  if (put.size !== digest.bytes) {
    throw new Error(`the store recorded ${put.size} bytes for ${location.key} but ${digest.bytes} were sent`);
  }
  return {
    artifact: { ...location, sizeBytes: digest.bytes, sha256: digest.digest() },
    checkpointStartedAt,
    firstByteAt: digest.firstByteAt ?? new Date(),
    uploadedAt: new Date(),
  };
}
