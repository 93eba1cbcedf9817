import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { z } from 'zod';

/**
 * Signed envelopes (Ed25519, node:crypto): the keys, the canonical bytes and the errors. Two things are signed:
 *
 * - Commands (`ums-command-v1`, core/command-signature.ts): the functions hold the command-signing private key; every agent holds the
 *   public key (UMS_COMMAND_VERIFY_KEY). The signature covers the command's type, id, source, migration id,
 *   epoch, the agent it is addressed to, its data, when it was issued and when it expires, so a command cannot
 *   be altered, readdressed to another agent, nor used after its expiry; the fence (agents/command-fence.ts)
 *   then refuses a validly signed command whose migration, epoch or agent the record no longer names.
 * - Checkpoint manifests (`ums-manifest-v1`, core/checkpoint-artifact.ts): the source agent signs the manifest with its own key (made in
 *   its state dir, public half in its registration); the destination verifies it with the key the planner
 *   recorded from that registration, which reaches it inside the signed prepare command.
 *
 * What is signed is a domain string, a newline, and the canonical JSON of the covered fields (keys sorted
 * at every level, no whitespace: the same value gives the same bytes whatever order its keys were built in).
 */
export const SIGNING_KEY_ALGORITHM = 'Ed25519';
export const COMMAND_SIGNATURE_SCHEME = 'ums-command-v1';
export const MANIFEST_SIGNATURE_SCHEME = 'ums-manifest-v1';
const SIGNATURE_BYTES = 64;

const base64Of = (bytes: number) =>
  z
    .base64()
    .refine((value) => Buffer.from(value, 'base64').length === bytes, `${bytes} bytes, base64`)
    .describe(`${bytes} bytes, base64`);

/** An Ed25519 public key as registrations and the environment carry it (raw 32 bytes, base64). */
export const SigningPublicKey = z.object({ algorithm: z.literal(SIGNING_KEY_ALGORITHM), publicKey: base64Of(32) });
export type SigningPublicKey = z.infer<typeof SigningPublicKey>;

/** First 16 hex digits of the sha256 of the raw public key: names a key (for rotation), proves nothing. */
export const KeyId = z.string().regex(/^[a-f0-9]{16}$/, '16 lowercase hex digits');
export const SignatureValue = base64Of(SIGNATURE_BYTES);

export type SignatureErrorCode = 'signature-invalid' | 'signature-expired' | 'signer-unknown';

/** A signed thing that must not be acted on; `code` says why (bad or missing signature, expired, unknown key). */
export class SignatureError extends Error {
  constructor(
    readonly code: SignatureErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'SignatureError';
  }
}

// ---- canonical bytes and the primitive ---------------------------------------------------------------

/**
 * Deterministic JSON: object keys sorted (by UTF-16 code units, as RFC 8785), no whitespace, numbers as
 * ECMAScript prints them; undefined members dropped (as JSON.stringify does). Anything JSON cannot carry
 * faithfully (non-finite numbers, bigint, functions, class instances) is refused rather than guessed at.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError(`canonical JSON cannot carry ${value}`);
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map((item: unknown) => (item === undefined ? 'null' : canonicalJson(item))).join(',')}]`;
  if (typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    const members = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`);
    return `{${members.join(',')}}`;
  }
  throw new TypeError(`canonical JSON cannot carry a ${typeof value === 'object' ? 'non-plain object' : typeof value}`);
}

export const signedBytes = (scheme: string, covered: unknown): Buffer => Buffer.from(`${scheme}\n${canonicalJson(covered)}`, 'utf8');

export interface SigningKeyPair {
  privateKey: KeyObject;
  publicKey: SigningPublicKey;
}

export function generateSigningKeyPair(): SigningKeyPair {
  const { privateKey } = generateKeyPairSync('ed25519');
  return { privateKey, publicKey: signingPublicKeyOf(privateKey) };
}

/** The public half of an Ed25519 private key, in the registration's form. */
export function signingPublicKeyOf(privateKey: KeyObject): SigningPublicKey {
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new TypeError(`an Ed25519 key is needed, not ${privateKey.asymmetricKeyType}`);
  const jwk = createPublicKey(privateKey).export({ format: 'jwk' });
  if (typeof jwk.x !== 'string') throw new TypeError('the Ed25519 key has no public part');
  return { algorithm: SIGNING_KEY_ALGORITHM, publicKey: Buffer.from(jwk.x, 'base64url').toString('base64') };
}

export function signingKeyId(key: SigningPublicKey): string {
  return createHash('sha256').update(Buffer.from(key.publicKey, 'base64')).digest('hex').slice(0, 16);
}

export function publicKeyObject(key: SigningPublicKey): KeyObject {
  return createPublicKey({
    key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(key.publicKey, 'base64').toString('base64url') },
    format: 'jwk',
  });
}

/** Reads an Ed25519 private key (PKCS#8 PEM) that only its owner may read: a key others can read is refused. */
export async function readSigningKeyFile(path: string, what: string): Promise<SigningKeyPair> {
  const mode = (await stat(path)).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new Error(`${what} ${path} is readable by others (mode ${mode.toString(8)}): restrict it to its owner (chmod 600)`);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(await readFile(path));
  } catch (error) {
    throw new Error(`${what} ${path} does not parse as a PEM private key`, { cause: error });
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error(`${what} ${path} is ${privateKey.asymmetricKeyType}, not Ed25519`);
  return { privateKey, publicKey: signingPublicKeyOf(privateKey) };
}

/**
 * Public keys from the environment: comma-separated base64 raw keys (more than one while a key is being
 * rotated). Throws naming what is wrong.
 */
export function parseVerifyKeys(value: string | undefined, what: string): SigningPublicKey[] {
  const keys = (value ?? '')
    .split(',')
    .map((k) => k.trim())
    .filter((k) => k.length > 0);
  if (keys.length === 0) {
    throw new Error(
      `${what} is not set: commands are acted on only if signed by the functions, so their public key is needed (base64, raw Ed25519)`,
    );
  }
  return keys.map((publicKey) => {
    const parsed = SigningPublicKey.safeParse({ algorithm: SIGNING_KEY_ALGORITHM, publicKey });
    if (!parsed.success) throw new Error(`${what} holds "${publicKey.slice(0, 12)}...", not a base64 Ed25519 public key (32 bytes)`);
    return parsed.data;
  });
}

// ---- the manifest's signature (what signs and checks it: core/checkpoint-artifact.ts) ----------------

/** The source agent's signature over its manifest: who signed (agent and key), and the signature. */
export const ManifestSignature = z.object({
  algorithm: z.literal(SIGNING_KEY_ALGORITHM),
  agent: z.string().min(1).max(128),
  keyId: KeyId,
  value: SignatureValue,
});
export type ManifestSignature = z.infer<typeof ManifestSignature>;
