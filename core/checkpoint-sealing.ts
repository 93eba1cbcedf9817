import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  randomBytes,
  type KeyObject,
} from 'node:crypto';
import { z } from 'zod';

/**
 * Checkpoint archives hold process memory (keys, secrets), so they never lie in a bucket in clear. The
 * scheme (`ums-seal-v1`):
 *
 * - Each agent has a long-lived X25519 key pair (its private key in its state dir, mode 0600; its public
 *   key in its registration). The planner puts the destination's public key into the checkpoint command.
 * - The source draws a fresh 32-byte data key per migration and seals each chunk with AES-256-GCM:
 *   nonce = 4 random bytes drawn per migration || the chunk index (uint64 big-endian), so no nonce repeats
 *   under a key; additional authenticated data = the scheme, the migration id and the chunk index, so a
 *   chunk cannot be moved to another place or another migration. A stored chunk is ciphertext || 16-byte tag.
 * - The data key is wrapped for the destination (ECIES): an ephemeral X25519 key pair, ECDH with the
 *   destination's public key, HKDF-SHA256 (salt: both public keys; info: the scheme and the migration id)
 *   to a key-encryption key, AES-256-GCM over the data key with the nonce prefix and migration id as AAD.
 *   Only the wrapped form travels (in every checkpoint.chunk event and in the manifest).
 * - The destination unwraps with its private key and opens each chunk before anything reaches its engine;
 *   a wrong key, a tampered or moved chunk fails GCM authentication (SealingError).
 */
export const SEALING_SCHEME = 'ums-seal-v1';
export const SEALING_KEY_ALGORITHM = 'X25519';
const WRAP_ALGORITHM = 'X25519-HKDF-SHA256-A256GCM';
/** What AES-GCM adds to each chunk. */
export const TAG_BYTES = 16;
const DATA_KEY_BYTES = 32;
const NONCE_PREFIX_BYTES = 4;
const NONCE_BYTES = 12;

const base64Of = (bytes: number) =>
  z
    .base64()
    .refine((value) => Buffer.from(value, 'base64').length === bytes, `${bytes} bytes, base64`)
    .describe(`${bytes} bytes, base64`);

/** An agent's public key for key agreement, as its registration carries it (raw 32 bytes, base64). */
export const SealingPublicKey = z.object({
  algorithm: z.literal(SEALING_KEY_ALGORITHM),
  publicKey: base64Of(32),
});
export type SealingPublicKey = z.infer<typeof SealingPublicKey>;

/** The data key, wrapped for one recipient. Safe on the broker and in a bucket: only the recipient opens it. */
export const WrappedKey = z.object({
  algorithm: z.literal(WRAP_ALGORITHM),
  /** First 16 hex digits of the sha256 of the recipient's raw public key: names a key, proves nothing. */
  recipientKeyId: z.string().regex(/^[a-f0-9]{16}$/),
  ephemeralPublicKey: base64Of(32),
  nonce: base64Of(NONCE_BYTES),
  /** The wrapped data key and its tag. */
  ciphertext: base64Of(DATA_KEY_BYTES + TAG_BYTES),
});
export type WrappedKey = z.infer<typeof WrappedKey>;

/** How a migration's chunks are sealed: what the destination needs, besides its private key, to open them. */
export const Sealing = z.object({
  scheme: z.literal(SEALING_SCHEME),
  cipher: z.literal('aes-256-gcm'),
  noncePrefix: base64Of(NONCE_PREFIX_BYTES),
  wrappedKey: WrappedKey,
});
export type Sealing = z.infer<typeof Sealing>;

/** A chunk, its key or its wrapping failed authentication, or is malformed: nothing of it may be used. */
export class SealingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SealingError';
  }
}

export interface SealingKeyPair {
  privateKey: KeyObject;
  publicKey: SealingPublicKey;
}

export function generateSealingKeyPair(): SealingKeyPair {
  const { privateKey } = generateKeyPairSync('x25519');
  return { privateKey, publicKey: publicKeyOf(privateKey) };
}

/** The public half of an X25519 private key, in the registration's form. */
export function publicKeyOf(privateKey: KeyObject): SealingPublicKey {
  if (privateKey.asymmetricKeyType !== 'x25519') throw new SealingError(`an X25519 key is needed, not ${privateKey.asymmetricKeyType}`);
  return { algorithm: SEALING_KEY_ALGORITHM, publicKey: rawPublicKey(createPublicKey(privateKey)).toString('base64') };
}

export function sealingKeyId(key: SealingPublicKey): string {
  return createHash('sha256').update(Buffer.from(key.publicKey, 'base64')).digest('hex').slice(0, 16);
}

function rawPublicKey(key: KeyObject): Buffer {
  const jwk = key.export({ format: 'jwk' });
  if (typeof jwk.x !== 'string') throw new SealingError('not an X25519 public key');
  return Buffer.from(jwk.x, 'base64url');
}

function importPublicKey(raw: Buffer): KeyObject {
  return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: raw.toString('base64url') }, format: 'jwk' });
}

function keyEncryptionKey(ephemeral: Buffer, recipient: Buffer, shared: Buffer, migrationId: string): Buffer {
  // An all-zero secret means a low-order public key was slipped in: no secret at all.
  if (shared.every((byte) => byte === 0)) throw new SealingError('the key agreement produced no secret (a low-order public key)');
  const salt = Buffer.concat([ephemeral, recipient]);
  return Buffer.from(hkdfSync('sha256', shared, salt, `${SEALING_SCHEME} key-wrap ${migrationId}`, 32));
}

const wrapAad = (migrationId: string, noncePrefix: Buffer) =>
  Buffer.concat([Buffer.from(`${SEALING_SCHEME} wrap\0${migrationId}\0`), noncePrefix]);

/** Wraps `dataKey` for `recipient`, bound to the migration and to the chunks' nonce prefix. */
export function wrapDataKey(dataKey: Buffer, recipient: SealingPublicKey, migrationId: string, noncePrefix: Buffer): WrappedKey {
  const recipientRaw = Buffer.from(SealingPublicKey.parse(recipient).publicKey, 'base64');
  const ephemeral = generateKeyPairSync('x25519');
  const ephemeralRaw = rawPublicKey(ephemeral.publicKey);
  const shared = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: importPublicKey(recipientRaw) });
  const kek = keyEncryptionKey(ephemeralRaw, recipientRaw, shared, migrationId);
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', kek, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(wrapAad(migrationId, noncePrefix));
  const ciphertext = Buffer.concat([cipher.update(dataKey), cipher.final(), cipher.getAuthTag()]);
  return {
    algorithm: WRAP_ALGORITHM,
    recipientKeyId: sealingKeyId(recipient),
    ephemeralPublicKey: ephemeralRaw.toString('base64'),
    nonce: nonce.toString('base64'),
    ciphertext: ciphertext.toString('base64'),
  };
}

/** Unwraps a data key with the recipient's private key; throws SealingError if it is not for this key or was altered. */
export function unwrapDataKey(wrapped: WrappedKey, privateKey: KeyObject, migrationId: string, noncePrefix: Buffer): Buffer {
  const parsed = WrappedKey.safeParse(wrapped);
  if (!parsed.success) throw new SealingError(`the wrapped data key is malformed: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  const own = publicKeyOf(privateKey);
  const ownId = sealingKeyId(own);
  if (wrapped.recipientKeyId !== ownId) {
    throw new SealingError(
      `the data key was wrapped for key ${wrapped.recipientKeyId}, this agent's key is ${ownId} (its key changed since it registered, or the checkpoint was meant for another agent)`,
    );
  }
  const ephemeralRaw = Buffer.from(wrapped.ephemeralPublicKey, 'base64');
  const sealed = Buffer.from(wrapped.ciphertext, 'base64');
  try {
    const shared = diffieHellman({ privateKey, publicKey: importPublicKey(ephemeralRaw) });
    const kek = keyEncryptionKey(ephemeralRaw, Buffer.from(own.publicKey, 'base64'), shared, migrationId);
    const decipher = createDecipheriv('aes-256-gcm', kek, Buffer.from(wrapped.nonce, 'base64'), { authTagLength: TAG_BYTES });
    decipher.setAAD(wrapAad(migrationId, noncePrefix));
    decipher.setAuthTag(sealed.subarray(DATA_KEY_BYTES));
    return Buffer.concat([decipher.update(sealed.subarray(0, DATA_KEY_BYTES)), decipher.final()]);
  } catch (error) {
    if (error instanceof SealingError) throw error;
    throw new SealingError(
      `the wrapped data key does not open with this agent's private key for migration ${migrationId}: it was altered, or wrapped for another migration`,
    );
  }
}

function chunkNonce(noncePrefix: Buffer, index: number): Buffer {
  if (!Number.isSafeInteger(index) || index < 0) throw new SealingError(`chunk index ${index} is not a valid index`);
  const nonce = Buffer.alloc(NONCE_BYTES);
  noncePrefix.copy(nonce, 0);
  nonce.writeBigUInt64BE(BigInt(index), NONCE_PREFIX_BYTES);
  return nonce;
}

function chunkAad(migrationId: string, index: number): Buffer {
  const aad = Buffer.from(`${SEALING_SCHEME} chunk\0${migrationId}\0________`);
  aad.writeBigUInt64BE(BigInt(index), aad.length - 8);
  return aad;
}

/** The source's side: one per migration, with a fresh data key wrapped for the destination. */
export class ChunkSealer {
  readonly sealing: Sealing;

  private constructor(
    private readonly dataKey: Buffer,
    private readonly noncePrefix: Buffer,
    private readonly migrationId: string,
    recipient: SealingPublicKey,
  ) {
    this.sealing = {
      scheme: SEALING_SCHEME,
      cipher: 'aes-256-gcm',
      noncePrefix: noncePrefix.toString('base64'),
      wrappedKey: wrapDataKey(dataKey, recipient, migrationId, noncePrefix),
    };
  }

  /** A fresh data key and nonce prefix for this migration, wrapped for `recipient`. */
  static forRecipient(recipient: SealingPublicKey, migrationId: string): ChunkSealer {
    return new ChunkSealer(randomBytes(DATA_KEY_BYTES), randomBytes(NONCE_PREFIX_BYTES), migrationId, recipient);
  }

  /** ciphertext || tag: TAG_BYTES longer than `plain`. Each index must be sealed once (the nonce derives from it). */
  seal(index: number, plain: Buffer): Buffer {
    const out = Buffer.allocUnsafe(plain.length + TAG_BYTES);
    plain.copy(out);
    return this.sealInPlace(index, out, plain.length);
  }

  /**
   * Seals the first `plainBytes` of `buffer` where they lie and appends the tag (the buffer needs TAG_BYTES
   * of room after them): the upload path keeps no second copy of a chunk. Returns the sealed view.
   */
  sealInPlace(index: number, buffer: Buffer, plainBytes: number): Buffer {
    if (buffer.length < plainBytes + TAG_BYTES) throw new SealingError(`no room for the tag after ${plainBytes} bytes`);
    const cipher = createCipheriv('aes-256-gcm', this.dataKey, chunkNonce(this.noncePrefix, index), { authTagLength: TAG_BYTES });
    cipher.setAAD(chunkAad(this.migrationId, index));
    const at = transformInPlace(cipher, buffer, plainBytes);
    cipher.getAuthTag().copy(buffer, at);
    return buffer.subarray(0, at + TAG_BYTES);
  }
}

/** The destination's side: opens the chunks of one migration with the data key unwrapped by its private key. */
export class ChunkOpener {
  private constructor(
    private readonly dataKey: Buffer,
    private readonly noncePrefix: Buffer,
    private readonly migrationId: string,
    readonly sealing: Sealing,
  ) {}

  /** Unwraps the migration's data key; throws SealingError if the header is malformed or not for this key. */
  static unwrap(sealing: Sealing, privateKey: KeyObject, migrationId: string): ChunkOpener {
    const parsed = Sealing.safeParse(sealing);
    if (!parsed.success) throw new SealingError(`the sealing header is malformed: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
    const noncePrefix = Buffer.from(sealing.noncePrefix, 'base64');
    return new ChunkOpener(unwrapDataKey(sealing.wrappedKey, privateKey, migrationId, noncePrefix), noncePrefix, migrationId, sealing);
  }

  /** Whether `other` is the very header this opener was made from (the wrapped key is random per migration). */
  sameSealing(other: Sealing): boolean {
    const [a, b] = [this.sealing, other];
    return (
      a.scheme === b.scheme &&
      a.cipher === b.cipher &&
      a.noncePrefix === b.noncePrefix &&
      a.wrappedKey.recipientKeyId === b.wrappedKey.recipientKeyId &&
      a.wrappedKey.ephemeralPublicKey === b.wrappedKey.ephemeralPublicKey &&
      a.wrappedKey.nonce === b.wrappedKey.nonce &&
      a.wrappedKey.ciphertext === b.wrappedKey.ciphertext
    );
  }

  /** The plaintext of chunk `index`; throws SealingError if it was altered, truncated, moved or sealed under another key. */
  open(index: number, sealed: Buffer): Buffer {
    return this.openInPlace(index, Buffer.from(sealed));
  }

  /**
   * Like open, but decrypts where the bytes lie and returns a view of `sealed`: the download path keeps no
   * second copy of a chunk. On a failed check the buffer holds unauthenticated bytes: throw it away.
   */
  openInPlace(index: number, sealed: Buffer): Buffer {
    if (sealed.length < TAG_BYTES) throw new SealingError(`chunk ${index} is ${sealed.length} bytes, shorter than its authentication tag`);
    const bodyBytes = sealed.length - TAG_BYTES;
    const decipher = createDecipheriv('aes-256-gcm', this.dataKey, chunkNonce(this.noncePrefix, index), { authTagLength: TAG_BYTES });
    decipher.setAAD(chunkAad(this.migrationId, index));
    // 16 bytes copied, so that nothing depends on whether setAuthTag keeps its own.
    decipher.setAuthTag(Buffer.from(sealed.subarray(bodyBytes)));
    try {
      return sealed.subarray(0, transformInPlace(decipher, sealed, bodyBytes));
    } catch {
      throw new SealingError(
        `chunk ${index} fails authentication (AES-256-GCM): it was altered, truncated, moved from another position or migration, or sealed under another key`,
      );
    }
  }
}

/**
 * Slices that go through the cipher at a time: its output, copied back over its input, is the only extra
 * memory (Node's cipher has no output argument), instead of a whole chunk-sized copy and a temporary.
 */
const IN_PLACE_SLICE_BYTES = 64 * 1024;

/** Runs the first `length` bytes of `buffer` through `cipher` (GCM: output as long as input) in place; returns the bytes written. */
function transformInPlace(cipher: { update(data: Buffer): Buffer; final(): Buffer }, buffer: Buffer, length: number): number {
  let written = 0;
  for (let at = 0; at < length; at += IN_PLACE_SLICE_BYTES) {
    const out = cipher.update(buffer.subarray(at, Math.min(at + IN_PLACE_SLICE_BYTES, length)));
    // Never past what was read: the bytes still to be read stay intact.
    if (written + out.length > Math.min(at + IN_PLACE_SLICE_BYTES, length)) throw new SealingError('the cipher produced more than it read');
    written += out.copy(buffer, written);
  }
  const last = cipher.final();
  if (written + last.length > length) throw new SealingError('the cipher produced more than it read');
  written += last.copy(buffer, written);
  return written;
}

/** A chunk's plaintext size from its stored size. */
export const plainSize = (storedBytes: number): number => storedBytes - TAG_BYTES;
