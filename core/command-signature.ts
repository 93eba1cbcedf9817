import { sign, verify, type KeyObject } from 'node:crypto';
import type { CommandName, UmsCommand } from './events.js';
import {
  COMMAND_SIGNATURE_SCHEME,
  publicKeyObject,
  readSigningKeyFile,
  SignatureError,
  signedBytes,
  signingKeyId,
  type SigningKeyPair,
  type SigningPublicKey,
} from './signed-envelope.js';

/**
 * Commands signed by the functions for the one agent each is sent to (the primitives, keys and canonical
 * bytes: core/signed-envelope.ts). The signature covers the command's type, id, source, migration id, epoch,
 * target agent, data, issue time and expiry; an agent verifies before anything else (agents/command-fence.ts).
 */

/** How long a command of each kind may be acted on after it was issued (see commandLifetimeMs in core/migration.ts). */
export type CommandLifetime = (name: CommandName) => number;

function commandCovered(command: UmsCommand, target: string, expiresAt: string, keyId: string): unknown {
  return {
    type: command.type,
    id: command.id,
    source: command.source,
    migrationId: command.subject,
    epoch: command.data.epoch,
    target,
    data: command.data,
    issuedAt: command.time,
    expiresAt,
    keyId,
  };
}

/** The functions' side: signs each command for the one agent it is sent to. */
export class CommandSigner {
  readonly keyId: string;

  constructor(
    private readonly key: SigningKeyPair,
    private readonly lifetime: CommandLifetime,
  ) {
    this.keyId = signingKeyId(key.publicKey);
  }

  static async fromFile(path: string, lifetime: CommandLifetime): Promise<CommandSigner> {
    return new CommandSigner(await readSigningKeyFile(path, 'the command-signing key'), lifetime);
  }

  get publicKey(): SigningPublicKey {
    return this.key.publicKey;
  }

  /** The command with its issue time set to `now` and the signature attributes added. */
  sign<C extends UmsCommand>(command: C, target: string, now: number = Date.now()): C {
    const issued = { ...command, time: new Date(now).toISOString() };
    const expiresAt = new Date(now + this.lifetime(command.name)).toISOString();
    const signature = sign(
      null,
      signedBytes(COMMAND_SIGNATURE_SCHEME, commandCovered(issued, target, expiresAt, this.keyId)),
      this.key.privateKey,
    );
    return { ...issued, umstarget: target, umsexpires: expiresAt, umskeyid: this.keyId, umssignature: signature.toString('base64') };
  }
}

/** The agents' side: a command is acted on only if one of these keys signed it, for this agent, and it has not expired. */
export class CommandVerifier {
  private readonly keys: Map<string, KeyObject>;

  constructor(keys: readonly SigningPublicKey[]) {
    if (keys.length === 0) throw new Error('a command verifier needs at least one public key');
    this.keys = new Map(keys.map((key) => [signingKeyId(key), publicKeyObject(key)]));
  }

  /** Throws SignatureError: no or a bad signature, a key not ours, another agent's command, or expired. */
  verify(command: UmsCommand, agentId: string, now: number = Date.now()): void {
    const { umstarget: target, umsexpires: expiresAt, umskeyid: keyId, umssignature: signature } = command;
    if (target === undefined || expiresAt === undefined || keyId === undefined || signature === undefined) {
      throw new SignatureError('signature-invalid', `${command.name} command ${command.id} is not signed`);
    }
    const key = this.keys.get(keyId);
    if (!key)
      throw new SignatureError(
        'signer-unknown',
        `${command.name} command ${command.id} is signed by key ${keyId}, not a key this agent trusts`,
      );
    const covered = commandCovered(command, target, expiresAt, keyId);
    let valid: boolean;
    try {
      valid = verify(null, signedBytes(COMMAND_SIGNATURE_SCHEME, covered), key, Buffer.from(signature, 'base64'));
    } catch (error) {
      throw new SignatureError('signature-invalid', `${command.name} command ${command.id}: the signature cannot be checked`, {
        cause: error,
      });
    }
    // data.migrationId is inside the signed data and the subject is signed: a command whose two disagree was made so.
    if (!valid || command.subject !== command.data.migrationId) {
      throw new SignatureError(
        'signature-invalid',
        `${command.name} command ${command.id} does not match its signature (altered after signing)`,
      );
    }
    if (target !== agentId) {
      throw new SignatureError(
        'signature-invalid',
        `${command.name} command ${command.id} was signed for agent ${target}, not for ${agentId}`,
      );
    }
    const expires = Date.parse(expiresAt);
    if (!(expires > Date.parse(command.time)) || now > expires) {
      throw new SignatureError(
        'signature-expired',
        `${command.name} command ${command.id} expired at ${expiresAt} (issued ${command.time})`,
      );
    }
  }
}
