import { generateSigningKeyPair, signingPublicKeyOf, type SigningKeyPair } from '../core/signed-envelope.js';
import { loadOrCreateKeyFile, type LoadedKeyFile } from './key-file.js';

/** The agent's private Ed25519 key for signing its checkpoint manifests, PKCS#8 PEM, in its state dir. */
export const SIGNING_KEY_FILE = 'manifest-signing-key.pem';

export type LoadedSigningKey = LoadedKeyFile & SigningKeyPair;

/**
 * Kept like the sealing key (agents/key-file.ts): made on first start, the same across restarts, the
 * public half in the registration, where the planner takes it into the plan and the prepare command.
 */
export async function loadOrCreateSigningKey(stateDir: string): Promise<LoadedSigningKey> {
  const loaded = await loadOrCreateKeyFile(
    stateDir,
    SIGNING_KEY_FILE,
    'the manifest-signing key',
    'ed25519',
    () => generateSigningKeyPair().privateKey,
  );
  return { ...loaded, publicKey: signingPublicKeyOf(loaded.privateKey) };
}
