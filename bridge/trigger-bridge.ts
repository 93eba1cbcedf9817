import { z } from 'zod';
import { subjects } from '../core/event-bus.js';
import type { EventName, UmsEvent } from '../core/events.js';
import { createLogger } from '../core/log.js';
import { type Delivery, type DeliveryOutcome, type NatsEventBus } from '../core/nats-event-bus.js';
import { randomUUID } from 'node:crypto';
import type { SignedDelivery } from '../core/function-auth.js';
import { schedules, SCHEDULE_TICK_TYPE, triggers, type FunctionName } from '../functions/triggers.js';

/**
 * The trigger bridge: what Eventarc is to Cloud Functions, for events on NATS JetStream. Each
 * (function, event type) pair is a durable consumer, so events wait in the stream while a function is
 * down; each event is POSTed to the function as a structured-mode CloudEvent, acknowledged on 2xx and
 * redelivered with exponential backoff otherwise; after `MAX_DELIVERIES` it becomes a dead letter.
 * It also plays Cloud Scheduler for the functions that run on a schedule (the migration supervisor).
 * The process's entry point (configuration from the environment) is bridge/main.ts.
 */
const log = createLogger('trigger-bridge');

const MAX_DELIVERIES = 50;
const BACKOFF_BASE_MS = 250;
const BACKOFF_CAP_MS = 15_000;
const REQUEST_TIMEOUT_MS = 60_000;
const ACK_WAIT_MS = 10_000;
/** In-flight deliveries per consumer; functions are idempotent, so order within a type does not matter. */
const CONCURRENCY = 4;

export const FunctionEndpoints = z.partialRecord(z.enum(Object.keys(triggers) as [FunctionName, ...FunctionName[]]), z.url());
export type FunctionEndpoints = z.infer<typeof FunctionEndpoints>;

/**
 * The headers that authenticate one request to a function (bridge/function-request-auth.ts: the bridge's
 * HMAC token, and on Cloud Run an ID token as well). Called per request, with what the token must cover.
 */
export type RequestHeaders = (delivery: SignedDelivery) => Promise<Record<string, string>>;

export const backoffMs = (deliveryCount: number): number => Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, deliveryCount - 1));

const durableName = (fn: string, event: EventName): string => `trigger-${fn}-${event.replace(/[^A-Za-z0-9-]/g, '_')}`;

/**
 * Every durable consumer the bridge keeps on the events stream, with its filter: the broker lets the bridge,
 * and only the bridge, create and pull from these (infra/broker-credentials.ts).
 */
export function bridgeConsumers(): Array<{ durableName: string; filterSubject: string }> {
  return (Object.keys(triggers) as FunctionName[]).flatMap((fn) =>
    (triggers[fn] as readonly EventName[]).map((event) => ({
      durableName: durableName(fn, event),
      filterSubject: subjects.eventsNamed(event),
    })),
  );
}

export async function runBridge(bus: NatsEventBus, endpoints: FunctionEndpoints, headers: RequestHeaders): Promise<() => Promise<void>> {
  const stops: Array<() => Promise<void>> = [];
  for (const [fn, url] of Object.entries(endpoints) as Array<[FunctionName, string]>) {
    for (const event of triggers[fn] as readonly EventName[]) {
      const subscription = await bus.consumeEvents(
        {
          durableName: durableName(fn, event),
          filterSubject: subjects.eventsNamed(event),
          // Short, so that an event the bridge was delivering when it died is delivered again soon; a
          // delivery in progress keeps it.
          ackWaitMs: ACK_WAIT_MS,
          maxDeliveries: MAX_DELIVERIES,
          concurrency: CONCURRENCY,
          // Validated at the boundary: a message that will never parse is not retried, it is kept with its reason.
          deadLetterOrigin: `bridge-${fn}`,
          onInvalid: (error, subject) =>
            log.warn({ function: fn, subject, reason: error.message }, 'rejected an invalid event; kept as a dead letter'),
        },
        (event, delivery) => deliver(fn, url, event, delivery, headers),
      );
      stops.push(async () => {
        await subscription.stop();
        await subscription.closed;
      });
      log.info({ function: fn, event, url }, 'trigger bound');
    }
  }
  for (const [fn, url] of Object.entries(endpoints) as Array<[FunctionName, string]>) {
    const schedule = schedules[fn];
    if (schedule) stops.push(tick(fn, url, schedule.everySeconds * 1000, headers));
  }
  return async () => {
    await Promise.all(stops.map((stop) => stop()));
  };
}

/** POSTs a tick CloudEvent every `everyMs`, one at a time; a failed tick is simply followed by the next. */
function tick(fn: string, url: string, everyMs: number, headers: RequestHeaders): () => Promise<void> {
  let running: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    running = running.then(async () => {
      const event = {
        specversion: '1.0',
        id: randomUUID(),
        source: '/ums/scheduler',
        type: SCHEDULE_TICK_TYPE,
        time: new Date().toISOString(),
        data: {},
      };
      try {
        const body = JSON.stringify(event);
        const response = await fetch(url, {
          method: 'POST',
          headers: {
            'content-type': 'application/cloudevents+json; charset=utf-8',
            ...(await headers({ functionName: fn, id: event.id, type: event.type, time: event.time, body })),
          },
          body,
          signal: AbortSignal.timeout(everyMs * 4),
        });
        await response.body?.cancel();
        if (!response.ok) log.warn({ function: fn, status: response.status }, 'scheduled function failed');
      } catch (error) {
        log.warn({ function: fn, reason: (error as Error).message }, 'scheduled function unreachable');
      }
    });
  }, everyMs);
  log.info({ function: fn, everyMs }, 'schedule bound');
  return async () => {
    clearInterval(timer);
    await running;
  };
}

async function deliver(fn: string, url: string, event: UmsEvent, message: Delivery, headers: RequestHeaders): Promise<DeliveryOutcome> {
  const attempt = message.deliveryCount;
  let failure: string;
  try {
    const response = await fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/cloudevents+json; charset=utf-8',
        // The token covers the exact bytes sent (the stream's payload) and the event's id, type and time.
        ...(await headers({ functionName: fn, id: event.id, type: event.type, time: event.time, body: message.payload })),
      },
      body: message.payload,
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    if (response.ok) {
      await response.body?.cancel();
      return 'done';
    }
    failure = `HTTP ${response.status}: ${(await response.text()).slice(0, 500)}`;
  } catch (error) {
    failure = (error as Error).message;
  }
  if (attempt >= MAX_DELIVERIES) {
    log.error({ function: fn, subject: message.subject, attempt, failure }, 'giving up on an event; kept as a dead letter');
    return { deadLetter: `delivery to ${fn} failed ${attempt} times; last: ${failure}` };
  }
  const delay = backoffMs(attempt);
  log.warn(
    { function: fn, subject: message.subject, attempt, delayMs: delay, failure },
    'function did not accept the event; redelivering later',
  );
  return { retryAfterMs: delay };
}
