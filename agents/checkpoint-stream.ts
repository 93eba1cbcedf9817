import { artifactPrefix, type ChunkRef } from '../core/checkpoint-artifact.js';
import { ChunkSealer, type Sealing, type SealingPublicKey } from '../core/checkpoint-sealing.js';
import { artifactOf, uploadChunked } from '../core/chunked-upload.js';
import type { Uplink } from '../core/uplink.js';
import type { Artifact, ArtifactLocation } from '../core/events.js';
import type { ObjectStore } from '../core/object-store.js';
import type { SigningKeyPair } from '../core/signed-envelope.js';
import { Readable } from 'node:stream';

export interface UploadedCheckpoint {
  artifact: Artifact;
  /** When the approach began streaming while the service still ran (container level's volumes), if it did. */
  runningCopyStartedAt?: Date;
  /** When the service froze (after anything the approach sent while it ran). */
  checkpointStartedAt: Date;
  /** When the engine produced the archive's first byte after the freeze: the end of the dump. */
  firstByteAt: Date;
  uploadedAt: Date;
}

export interface CheckpointStreamOptions {
  chunkBytes: number;
  parallel: number;
  /** The destination's public key (from the checkpoint command): the migration's data key is wrapped for it. */
  sealFor: SealingPublicKey;
  /** This agent and its manifest-signing key (agents/signing-key.ts): the manifest is signed with it. */
  signer: { agentId: string; key: SigningKeyPair };
  /**
   * Announces each chunk as soon as it is durable, so the destination can fetch it right away; `sealing`
   * (the wrapped data key, the same for every chunk) goes with it, so the destination can open any chunk.
   */
  onChunk: (chunk: ChunkRef, sealing: Sealing) => Promise<void>;
  /** The host's uplink: caps and measures the upload. */
  uplink?: Uplink;
}

/**
 * Freezes the service (`freeze` is the approach's checkpoint: the engine's or the in-image launcher's)
 * and streams its checkpoint archive straight into the object store as parallel chunks, sealed for the
 * destination with a fresh data key and hashed on the way: the archive never sits whole in memory nor on
 * the agent's disk, and never in clear in the store. The frozen copy stays on this
 * host until a discard or resume command.
 */
export async function streamCheckpoint(
  freeze: (frozen: (at: Date, runningCopy: boolean) => void) => Promise<Readable>,
  store: ObjectStore,
  migrationId: string,
  location: ArtifactLocation,
  options: CheckpointStreamOptions,
): Promise<UploadedCheckpoint> {
  if (location.prefix !== artifactPrefix(migrationId)) {
    throw new Error(`refusing to write the checkpoint of ${migrationId} under "${location.prefix}": not its own prefix`);
  }
  const { sealFor, onChunk, chunkBytes, parallel, signer, uplink } = options;
  // Before the freeze: a bad key is refused with the service still running.
  const sealer = ChunkSealer.forRecipient(sealFor, migrationId);
  const checkpointStartedAt = new Date();
  // An approach that streams before it freezes (container level's section: volumes copied while the
  // service runs, or the memory read as CRIU writes it) says when it froze: the freeze starts then, and the
  // dump ends with the first byte after it.
  let frozenAt: Date | undefined;
  let runningCopy = false;
  let dumpedAt: Date | undefined;
  const archive = await freeze((at, copied) => {
    frozenAt = at;
    runningCopy = copied;
  });
  async function* timed(): AsyncGenerator<Buffer> {
    for await (const piece of archive as AsyncIterable<Buffer>) {
      if (frozenAt !== undefined) dumpedAt ??= new Date();
      yield piece;
    }
  }
  const upload = await uploadChunked(Readable.from(timed()), store, location.prefix, {
    migrationId,
    chunkBytes,
    parallel,
    sealer,
    signer,
    ...(uplink ? { uplink } : {}),
    onChunk: (chunk) => onChunk(chunk, sealer.sealing),
  });
  return {
    artifact: artifactOf(location, upload),
    ...(runningCopy ? { runningCopyStartedAt: checkpointStartedAt } : {}),
    checkpointStartedAt: frozenAt ?? checkpointStartedAt,
    firstByteAt: dumpedAt ?? upload.firstByteAt,
    uploadedAt: new Date(),
  };
}
