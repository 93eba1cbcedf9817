import { sign, verify } from 'node:crypto';
import { z } from 'zod';
import { Sealing, TAG_BYTES } from './checkpoint-sealing.js';
import {
  MANIFEST_SIGNATURE_SCHEME,
  ManifestSignature,
  publicKeyObject,
  SignatureError,
  SIGNING_KEY_ALGORITHM,
  signedBytes,
  signingKeyId,
  type SigningKeyPair,
  type SigningPublicKey,
} from './signed-envelope.js';

/**
 * How a checkpoint archive lies in object storage: numbered chunks plus a manifest, under one prefix
 * per migration. Chunks upload in parallel and are announced one by one, so the destination fetches
 * them while later ones are still uploading; a failed chunk is retried alone; every chunk is verified
 * before anything is restored.
 *
 *   migrations/<migrationId>/chunks/000000 ... 00000N
 *   migrations/<migrationId>/manifest.json
 *
 * Every chunk is sealed (core/checkpoint-sealing.ts): what is stored, and what the manifest and the
 * checkpoint.chunk events describe (sizes, offsets, sha256s), is the ciphertext, each chunk TAG_BYTES
 * longer than the plaintext it holds. The manifest is signed by the source agent (core/signed-envelope.ts):
 * format 3 is sealed and signed; formats 2 (unsigned) and 1 (in clear) are no longer read.
 */
export const MANIFEST_FORMAT = 3;

const sha256Hex = z.string().regex(/^[a-f0-9]{64}$/, 'a lowercase hex sha256');

export const ChunkRef = z.object({
  index: z.number().int().nonnegative(),
  /** byte offset of the stored (sealed) chunk among the stored chunks */
  offset: z.number().int().nonnegative(),
  /** size of the stored chunk: its plaintext plus the 16-byte GCM tag */
  sizeBytes: z.number().int().nonnegative(),
  /** sha256 of the stored chunk (ciphertext): checked before it is opened, and says nothing about the plaintext */
  sha256: sha256Hex,
});
export type ChunkRef = z.infer<typeof ChunkRef>;

export const Manifest = z
  .object({
    formatVersion: z.literal(MANIFEST_FORMAT),
    migrationId: z.string(),
    /** the artifact prefix the manifest was written under: the signature binds it, so it cannot be moved */
    prefix: z.string().min(1),
    /** what the chunks hold once opened */
    contentType: z.literal('application/x-tar'),
    /** plaintext bytes per chunk (the last one shorter); a stored chunk is TAG_BYTES longer */
    chunkBytes: z.number().int().positive(),
    /** how the chunks are sealed, with the data key wrapped for the destination (never in clear) */
    sealing: Sealing,
    chunks: z.array(ChunkRef),
    /** the stored chunks' sizes added up */
    sizeBytes: z.number().int().nonnegative(),
    /** sha256 over the stored chunks' sha256s, in order (a hash list: core/chunked-upload.ts chunkListDigest) */
    sha256: sha256Hex,
    createdAt: z.iso.datetime({ offset: true }),
    /** the source agent's Ed25519 signature over all of the above (verified with its registered key) */
    signature: ManifestSignature,
  })
  .superRefine((manifest, ctx) => {
    let offset = 0;
    for (const [i, chunk] of manifest.chunks.entries()) {
      if (chunk.index !== i || chunk.offset !== offset) {
        ctx.addIssue({
          code: 'custom',
          message: `chunk ${i} is out of place (index ${chunk.index}, offset ${chunk.offset}, expected ${offset})`,
        });
        return;
      }
      if (chunk.sizeBytes < TAG_BYTES || chunk.sizeBytes > manifest.chunkBytes + TAG_BYTES) {
        ctx.addIssue({
          code: 'custom',
          message: `chunk ${i} is ${chunk.sizeBytes} bytes: a sealed chunk is between ${TAG_BYTES} and ${manifest.chunkBytes + TAG_BYTES}`,
        });
        return;
      }
      offset += chunk.sizeBytes;
    }
    if (offset !== manifest.sizeBytes)
      ctx.addIssue({ code: 'custom', message: `the chunks add up to ${offset} bytes, the manifest says ${manifest.sizeBytes}` });
  });
export type Manifest = z.infer<typeof Manifest>;

export const artifactPrefix = (migrationId: string): string => `migrations/${migrationId}/`;
/**
 * Where the source ships the container's image when the destination lacks it: inside the migration's own
 * prefix, laid out like the checkpoint, so it is sealed for that destination, signed for that migration,
 * and deleted with the checkpoint (or expired by the same lifecycle rule).
 */
export const imagePrefix = (migrationPrefix: string): string => `${migrationPrefix}image/`;
export const manifestKey = (prefix: string): string => `${prefix}manifest.json`;
export const chunkKey = (prefix: string, index: number): string => `${prefix}chunks/${String(index).padStart(6, '0')}`;

/**
 * Chunk size: large enough to keep per-request overhead small, small enough to overlap and to retry alone.
 * Each agent holds (parallel + 1) of them uploading and parallel + 2 downloading: 4 MiB kept a 1 GiB move's
 * agents under 150 MiB RSS where 8 MiB peaked at 163-167 MiB, at no measurable cost in time (test/bench).
 * Manifests hold up to about 7000 chunks: archives over some 27 GiB need UMS_CHUNK_MIB raised.
 */
export const DEFAULT_CHUNK_MIB = 4;

/** The largest chunk size an agent may be configured with (UMS_CHUNK_MIB), and a destination accepts. */
export const MAX_CHUNK_MIB = 64;
export const MAX_CHUNK_BYTES = MAX_CHUNK_MIB * 1024 * 1024;

/** A manifest lists chunk refs (about 150 bytes each): 1 MiB is room for some 7000 chunks. */
export const MAX_MANIFEST_BYTES = 1024 * 1024;

/** Signed chunk URLs per batch: enough to keep the destination busy, small enough for one message. */
export const URL_BATCH = 64;

// ---- signing and checking the manifest ------------------------------------------------------------

export type UnsignedManifest = Omit<Manifest, 'signature'>;

/** What the signature covers: the whole manifest, with the signer's agent and key id in place of the signature. */
const manifestCovered = (manifest: UnsignedManifest, agent: string, keyId: string): unknown => ({
  ...manifest,
  signature: { algorithm: SIGNING_KEY_ALGORITHM, agent, keyId },
});

export function signManifest(manifest: UnsignedManifest, signer: { agentId: string; key: SigningKeyPair }): Manifest {
  const keyId = signingKeyId(signer.key.publicKey);
  const value = sign(null, signedBytes(MANIFEST_SIGNATURE_SCHEME, manifestCovered(manifest, signer.agentId, keyId)), signer.key.privateKey);
  return { ...manifest, signature: { algorithm: SIGNING_KEY_ALGORITHM, agent: signer.agentId, keyId, value: value.toString('base64') } };
}

export interface ExpectedManifest {
  /** The migration's source agent, and the manifest-signing key the planner recorded from its registration. */
  agentId: string;
  publicKey: SigningPublicKey;
  migrationId: string;
  /** The migration's artifact prefix: a manifest of another migration, or from another place, is refused. */
  prefix: string;
}

/** Throws SignatureError unless the source agent signed this very manifest, for this migration and this prefix. */
export function verifyManifest(manifest: Manifest, expected: ExpectedManifest): void {
  const { signature } = manifest;
  const keyId = signingKeyId(expected.publicKey);
  if (signature.agent !== expected.agentId || signature.keyId !== keyId) {
    throw new SignatureError(
      'signer-unknown',
      `the manifest is signed by ${signature.agent} (key ${signature.keyId}), not by the source ${expected.agentId} (key ${keyId})`,
    );
  }
  const { signature: _signature, ...unsigned } = manifest;
  let valid: boolean;
  try {
    valid = verify(
      null,
      signedBytes(MANIFEST_SIGNATURE_SCHEME, manifestCovered(unsigned, signature.agent, signature.keyId)),
      publicKeyObject(expected.publicKey),
      Buffer.from(signature.value, 'base64'),
    );
  } catch (error) {
    throw new SignatureError('signature-invalid', 'the manifest signature cannot be checked', { cause: error });
  }
  if (!valid) throw new SignatureError('signature-invalid', 'the manifest does not match its signature (altered after signing)');
  if (manifest.migrationId !== expected.migrationId || manifest.prefix !== expected.prefix) {
    throw new SignatureError(
      'signature-invalid',
      `the manifest was signed for migration ${manifest.migrationId} at ${manifest.prefix}, not ${expected.migrationId} at ${expected.prefix}`,
    );
  }
}
