import { AckPolicy, DeliverPolicy, nanos, type ConsumerConfig, type JetStreamClient, type JetStreamManager, type JsMsg } from 'nats';
import { BusError, isJetStreamApiError, JetStreamApiCode } from './bus-errors.js';
import type { Subscription } from './event-bus.js';
import { createLogger } from './log.js';

/**
 * The one JetStream consume loop of the bus: a durable pull consumer, several messages in flight, each
 * kept ours while its handler runs and then settled as the handler decided. The agents' commands and the
 * trigger bridge's events both go through it (NatsEventBus.consumeCommands, NatsEventBus.consumeEvents).
 */
const log = createLogger('nats-event-bus');

/** What a handler decided for one message. */
export type DeliveryOutcome =
  /** Acknowledged: handled for good (a work-queue stream then drops it). */
  | 'done'
  /** Not acknowledged: delivered again after this long, until the consumer's delivery limit. */
  | { retryAfterMs: number }
  /** Never delivered again: kept as a dead letter with this reason, where `ums status` shows it. */
  | { deadLetter: string };

export interface Delivery {
  subject: string;
  /** The message as it was published. */
  payload: Uint8Array;
  /** Delivered before and not acknowledged (a crash, a failed handler, a retry). */
  redelivered: boolean;
  /** 1 on the first delivery. */
  deliveryCount: number;
}

export interface DurableConsumerOptions {
  /** The consumer's name: it keeps its position in the stream under it across restarts. */
  durableName: string;
  /** Which subjects of the stream it takes, e.g. subjects.eventsNamed('migration.requested'). */
  filterSubject: string;
  /** How long a message waits unacknowledged before redelivery; a running handler extends it. */
  ackWaitMs: number;
  /** Deliveries before the broker gives up on a message. */
  maxDeliveries: number;
  /** Messages handled at once. */
  concurrency: number;
  /** Names who rejected a message, in the dead letters (e.g. `agent-<id>`, `bridge-<function>`). */
  deadLetterOrigin: string;
  /** Told about a message that does not parse, before it is kept as a dead letter. */
  onInvalid?: (error: Error, subject: string) => void;
}

/** A handler that throws instead of deciding gets its message again after this long. */
const RETRY_AFTER_FAILURE_MS = 5_000;

/**
 * Creates the durable consumer if it is missing; an existing one keeps its position and takes this
 * version's ack wait and delivery limit.
 */
export async function ensureConsumer(
  jsm: JetStreamManager,
  stream: string,
  config: Partial<ConsumerConfig> & { durable_name: string },
): Promise<void> {
  let existing;
  try {
    existing = await jsm.consumers.info(stream, config.durable_name);
  } catch (error) {
    if (!isJetStreamApiError(error, JetStreamApiCode.ConsumerNotFound)) {
      throw new BusError('setup-failed', `cannot read consumer ${config.durable_name} of ${stream}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    await jsm.consumers
      .add(stream, { ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All, ...config })
      .catch((cause: unknown) => {
        throw new BusError('setup-failed', `cannot create consumer ${config.durable_name} of ${stream}: ${(cause as Error).message}`, {
          cause,
        });
      });
    return;
  }
  const { ack_wait, max_deliver } = config;
  if (
    (ack_wait !== undefined && existing.config.ack_wait !== ack_wait) ||
    (max_deliver !== undefined && existing.config.max_deliver !== max_deliver)
  ) {
    await jsm.consumers
      .update(stream, config.durable_name, {
        ...(ack_wait !== undefined ? { ack_wait } : {}),
        ...(max_deliver !== undefined ? { max_deliver } : {}),
      })
      .catch((cause: unknown) => {
        throw new BusError('setup-failed', `cannot update consumer ${config.durable_name} of ${stream}: ${(cause as Error).message}`, {
          cause,
        });
      });
  }
}

/**
 * Consumes `stream` through the durable consumer `options.durableName` (created or updated first). Each
 * message is parsed; one that does not parse is kept as a dead letter and never redelivered. The others go
 * to `handle`, up to `options.concurrency` at once, and are settled as it decides.
 */
export async function consumeDurable<T>(
  js: JetStreamClient,
  jsm: JetStreamManager,
  stream: string,
  options: DurableConsumerOptions,
  /** Turns a message into a value, or throws: the message is then kept as a dead letter. */
  parse: (payload: Uint8Array, subject: string) => T,
  handle: (value: T, delivery: Delivery) => Promise<DeliveryOutcome>,
  deadLetter: (origin: string, payload: Uint8Array, reason: string) => Promise<void>,
): Promise<Subscription> {
  await ensureConsumer(jsm, stream, {
    durable_name: options.durableName,
    filter_subject: options.filterSubject,
    ack_wait: nanos(options.ackWaitMs),
    max_deliver: options.maxDeliveries,
  });
  const consumer = await js.consumers.get(stream, options.durableName);
  const messages = await consumer.consume({ max_messages: options.concurrency });

  const settle = async (message: JsMsg, outcome: DeliveryOutcome): Promise<void> => {
    if (outcome === 'done') message.ack();
    else if ('retryAfterMs' in outcome) message.nak(outcome.retryAfterMs);
    else {
      await deadLetter(options.deadLetterOrigin, message.data, outcome.deadLetter);
      message.term();
    }
  };
  const run = async (message: JsMsg): Promise<void> => {
    let value: T;
    try {
      value = parse(message.data, message.subject);
    } catch (error) {
      options.onInvalid?.(error as Error, message.subject);
      return settle(message, { deadLetter: (error as Error).message });
    }
    // Keep the message ours while a long handler runs (a checkpoint, a restore, a slow function).
    const keepAlive = setInterval(() => message.working(), options.ackWaitMs / 3);
    let outcome: DeliveryOutcome;
    try {
      outcome = await handle(value, {
        subject: message.subject,
        payload: message.data,
        redelivered: message.redelivered,
        deliveryCount: message.info.deliveryCount,
      });
    } catch (error) {
      log.warn({ err: error, consumer: options.durableName, subject: message.subject }, 'handler failed; the message will be redelivered');
      outcome = { retryAfterMs: RETRY_AFTER_FAILURE_MS };
    } finally {
      clearInterval(keepAlive);
    }
    await settle(message, outcome);
  };

  const inFlight = new Set<Promise<void>>();
  const closed = (async () => {
    for await (const message of messages) {
      const running = run(message)
        .catch((error: unknown) => {
          // Settling failed (the dead letter could not be kept): unacknowledged, it comes back after the ack wait.
          log.error(
            { err: error, consumer: options.durableName, subject: message.subject },
            'could not settle a message; it will be redelivered',
          );
        })
        .finally(() => inFlight.delete(running));
      inFlight.add(running);
      if (inFlight.size >= options.concurrency) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
  })();
  return { stop: async () => messages.close().then(() => undefined), closed };
}
