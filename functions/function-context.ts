import { keylessStoreAccess, type KeylessStoreAccess } from '../core/cloud-identity/keyless-store-access.js';
import type { EventBus } from '../core/event-bus.js';
import { createLogger, type Logger } from '../core/log.js';
import { commandLifetimeMs } from '../core/migration.js';
import { connectNatsBus } from '../core/nats-event-bus.js';
import type { ObjectStore } from '../core/object-store.js';
import { openObjectStore } from '../core/object-stores/open-object-store.js';
import { CommandSigner } from '../core/command-signature.js';

/**
 * What a function invocation needs, built from the environment. Functions keep no migration state in
 * memory; the broker connection is reused across invocations of a warm instance, as Cloud Functions
 * recommends for clients.
 */
export interface FunctionContext {
  bus: EventBus;
  log: Logger;
  /** The CloudEvent `source` of what this function publishes. */
  source: string;
  /** Loads the backend's SDK on first use of each kind (see openObjectStore). */
  openStore(url: string): Promise<ObjectStore>;
  signedUrlTtlSeconds: number;
  /**
   * What happens to a migration's archive when it ends: deleted at once (the default: it holds process
   * memory), or kept for the bucket's lifecycle rule to expire (for post-mortems), via
   * UMS_ARTIFACT_RETENTION=bucket-lifecycle.
   */
  artifactRetention: 'delete-when-done' | 'bucket-lifecycle';
  /** Signs every command for the agent it goes to (core/signed-envelope.ts); agents act on nothing else. */
  commandSigner: CommandSigner;
}

let shared: Promise<EventBus> | undefined;
let signer: Promise<CommandSigner> | undefined;
let keyless: KeylessStoreAccess | undefined;

/**
 * How the functions reach the AWS and Azure stores: keyless through their Google identity where configured
 * (core/cloud-identity/keyless-store-access.ts), static keys from the environment otherwise. Read once per
 * instance, so the credentials it holds (an STS session, Entra tokens, ID tokens) are shared by every store
 * the instance opens; a malformed setting fails every invocation, naming the variable.
 */
function storeAccess(): KeylessStoreAccess {
  if (keyless !== undefined) return keyless;
  const access = keylessStoreAccess(process.env);
  const log = createLogger('function-context');
  if (access.aws !== undefined || access.azure !== undefined) {
    log.info({ aws: access.aws, azure: access.azure }, 'signing for AWS and Azure stores with the Google identity (no static keys)');
  }
  if (access.ignored.length > 0) {
    log.warn({ ignored: access.ignored }, 'static store keys are set next to a keyless identity and are not used: remove them');
  }
  keyless = access;
  return access;
}

/** UMS_DEADLINE_SCALE: multiplies every phase deadline, and so every command's lifetime (tests shorten both). */
export const deadlineScale = (): number => {
  const scale = Number(process.env.UMS_DEADLINE_SCALE ?? 1);
  return Number.isFinite(scale) && scale > 0 ? scale : 1;
};

/** The command-signing key, from the file UMS_COMMAND_SIGNING_KEY_FILE names (PKCS#8 PEM, mode 0600). */
function commandSigner(): Promise<CommandSigner> {
  const path = process.env.UMS_COMMAND_SIGNING_KEY_FILE;
  if (!path) {
    return Promise.reject(
      new Error(
        'UMS_COMMAND_SIGNING_KEY_FILE is not set: the functions sign every command to the agents with that Ed25519 key (PKCS#8 PEM, mode 0600)',
      ),
    );
  }
  signer ??= CommandSigner.fromFile(path, (name) => commandLifetimeMs(name, deadlineScale())).catch((error: unknown) => {
    signer = undefined;
    throw error;
  });
  return signer;
}

/** Closes the warm instance's broker connection (tests that serve the functions in-process). */
export async function closeFunctionContext(): Promise<void> {
  const bus = shared;
  shared = undefined;
  signer = undefined;
  keyless = undefined;
  await (await bus?.catch(() => undefined))?.close();
}

/**
 * The warm instance's broker connection, shared by every invocation. A function that signs no command and opens
 * no store (the notice ingress) needs only this, and so none of their keys.
 */
export function functionBus(): Promise<EventBus> {
  const servers = process.env.NATS_URL;
  if (!servers)
    return Promise.reject(new Error('NATS_URL is not set: the functions need the broker address (e.g. nats://nats.internal:4222)'));
  shared ??= connectNatsBus({ servers, name: `ums-functions-${process.pid}` }).catch((error: unknown) => {
    shared = undefined;
    throw error;
  });
  return shared;
}

export async function functionContext(functionName: string): Promise<FunctionContext> {
  const bus = await functionBus();
  const ttl = Number(process.env.UMS_SIGNED_URL_TTL_SECONDS ?? 900);
  const commandSigning = await commandSigner();
  const stores = storeAccess();
  return {
    bus,
    log: createLogger(`function.${functionName}`),
    source: `/ums/functions/${functionName}`,
    openStore: (url) => openObjectStore(url, process.env, stores.options),
    signedUrlTtlSeconds: Number.isFinite(ttl) && ttl > 0 ? ttl : 900,
    artifactRetention: process.env.UMS_ARTIFACT_RETENTION === 'bucket-lifecycle' ? 'bucket-lifecycle' : 'delete-when-done',
    commandSigner: commandSigning,
  };
}
