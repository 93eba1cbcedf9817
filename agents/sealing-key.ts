import { generateSealingKeyPair, publicKeyOf, type SealingKeyPair } from '../core/checkpoint-sealing.js';
import { loadOrCreateKeyFile, type LoadedKeyFile } from './key-file.js';

/** The agent's private X25519 key, PKCS#8 PEM, in its state dir. */
export const SEALING_KEY_FILE = 'sealing-key.pem';

export type LoadedSealingKey = LoadedKeyFile & SealingKeyPair;

/**
 * The agent's long-lived key pair for checkpoint sealing: created on first start, kept in the state dir
 * (agents/key-file.ts), the same across restarts so that a checkpoint sealed for the registered key
 * can still be opened after the agent restarts.
 */
export async function loadOrCreateSealingKey(stateDir: string): Promise<LoadedSealingKey> {
  const loaded = await loadOrCreateKeyFile(
    stateDir,
    SEALING_KEY_FILE,
    'the sealing key',
    'x25519',
    () => generateSealingKeyPair().privateKey,
  );
  return { ...loaded, publicKey: publicKeyOf(loaded.privateKey) };
}
