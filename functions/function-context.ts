import type { EventBus } from '../core/event-bus.js';
import { createLogger, type Logger } from '../core/log.js';
import { connectNatsBus } from '../core/nats-event-bus.js';
import type { ObjectStore } from '../core/object-store.js';
import { openObjectStore } from '../core/object-stores/open-object-store.js';

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
}

let shared: Promise<EventBus> | undefined;

/** Closes the warm instance's broker connection (tests that serve the functions in-process). */
export async function closeFunctionContext(): Promise<void> {
  const bus = shared;
  shared = undefined;
  await (await bus?.catch(() => undefined))?.close();
}

export async function functionContext(functionName: string): Promise<FunctionContext> {
  const servers = process.env.NATS_URL;
  if (!servers) throw new Error('NATS_URL is not set: the functions need the broker address (e.g. nats://nats.internal:4222)');
  shared ??= connectNatsBus({ servers, name: `ums-functions-${process.pid}` }).catch((error: unknown) => {
    shared = undefined;
    throw error;
  });
  const ttl = Number(process.env.UMS_SIGNED_URL_TTL_SECONDS ?? 900);
  return {
    bus: await shared,
    log: createLogger(`function.${functionName}`),
    source: `/ums/functions/${functionName}`,
    openStore: (url) => openObjectStore(url),
    signedUrlTtlSeconds: Number.isFinite(ttl) && ttl > 0 ? ttl : 900,
    artifactRetention: process.env.UMS_ARTIFACT_RETENTION === 'bucket-lifecycle' ? 'bucket-lifecycle' : 'delete-when-done',
  };
}
