import {
  connect,
  DiscardPolicy,
  nanos,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type KV,
  type NatsConnection,
} from 'nats';
import type { z } from 'zod';
import { AgentRegistration } from './agent-registration.js';
import pRetry from 'p-retry';
import { BusError, isJetStreamApiError, JetStreamApiCode } from './bus-errors.js';
import { consumeDurable, type Delivery, type DeliveryOutcome, type DurableConsumerOptions } from './durable-consumer.js';
import {
  RevisionConflictError,
  subjects,
  type CommandDelivery,
  type DeadLetter,
  type EventBus,
  type RecordStore,
  type Subscription,
  type Versioned,
} from './event-bus.js';
import { parseCommand, parseEvent, toWire, type EventName, type EventOf, type UmsCommand, type UmsEvent } from './events.js';
import { createLogger } from './log.js';
import { MigrationLock, MigrationRecord } from './migration.js';

export type { Delivery, DeliveryOutcome, DurableConsumerOptions } from './durable-consumer.js';

const log = createLogger('nats-event-bus');
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const encode = (value: unknown): Uint8Array => encoder.encode(JSON.stringify(value));

const buckets = { migrations: 'ums_migrations', agents: 'ums_agents', locks: 'ums_locks' } as const;

/**
 * How long an unacknowledged command waits before redelivery; long handlers extend it with working().
 * Short, because it is also how long a command stays stuck with an agent that was killed mid-command.
 */
const COMMAND_ACK_WAIT_MS = 6_000;
/**
 * Publishing rides out a broker restart: every publish carries a message id the stream deduplicates
 * on, so repeating one that did land is harmless. Beyond this the caller's own recovery takes over.
 */
const PUBLISH_RETRY = { retries: 8, minTimeout: 250, maxTimeout: 4_000 } as const;
/**
 * Commands an agent handles at once: commands of different migrations run side by side (the agent
 * keeps those of one migration in order), and a restore waits for URL commands while it runs.
 */
const COMMANDS_IN_FLIGHT = 32;
/** Agent registrations expire this long after their last heartbeat. */
const AGENT_TTL_MS = 60_000;
/**
 * The largest message any stream takes: nats-server's default max_payload (1 MiB), which the local stack
 * sets explicitly. A chunk-urls command (at most URL_BATCH = 64 URLs) is some 60 KiB; an event a few.
 */
export const MAX_MESSAGE_BYTES = 1024 * 1024;
const MiB = 1024 * 1024;

export interface NatsBusOptions {
  /** e.g. nats://127.0.0.1:4222; credentials, if any, come from NATS_CREDS / NATS_USER+NATS_PASSWORD. */
  servers: string;
  /** The connection name shown in the server's monitoring (agent id, function name, ...). */
  name: string;
}

/** Connects and makes sure the streams and buckets exist (idempotent), so any component can start first. */
export async function connectNatsBus(options: NatsBusOptions): Promise<NatsEventBus> {
  const nc = await connect({
    servers: options.servers,
    name: options.name,
    user: process.env.NATS_USER,
    pass: process.env.NATS_PASSWORD,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
  });
  const jsm = await nc.jetstreamManager();
  await ensureStreams(jsm);
  const js = nc.jetstream();
  const [migrations, agents, locks] = await Promise.all([
    js.views.kv(buckets.migrations, { history: 10, storage: StorageType.File }),
    js.views.kv(buckets.agents, { history: 1, ttl: AGENT_TTL_MS, storage: StorageType.File }),
    js.views.kv(buckets.locks, { history: 1, storage: StorageType.File }),
  ]);
  return new NatsEventBus(nc, js, jsm, migrations, agents, locks);
}

async function ensureStream(jsm: JetStreamManager, name: string, config: Parameters<JetStreamManager['streams']['add']>[0]): Promise<void> {
  try {
    await jsm.streams.info(name);
    return;
  } catch (error) {
    if (!isJetStreamApiError(error, JetStreamApiCode.StreamNotFound)) {
      throw new BusError('setup-failed', `cannot read stream ${name}: ${(error as Error).message}`, { cause: error });
    }
  }
  try {
    await jsm.streams.add({ ...config, name });
  } catch (error) {
    // Two components starting at once may race to create it; the loser finds it there.
    await jsm.streams.info(name).catch(() => {
      throw new BusError('setup-failed', `cannot create stream ${name}: ${(error as Error).message}`, { cause: error });
    });
  }
}

async function ensureStreams(jsm: JetStreamManager): Promise<void> {
  await ensureStream(jsm, subjects.eventsStream, {
    subjects: ['ums.events.>'],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    max_age: nanos(7 * 24 * 3600 * 1000),
    // Bounded in size too: the oldest facts go first (a migration lasts minutes, the stream keeps days).
    max_bytes: 1024 * MiB,
    max_msg_size: MAX_MESSAGE_BYTES,
    discard: DiscardPolicy.Old,
    duplicate_window: nanos(10 * 60 * 1000),
  });
  // A work queue: an acknowledged command is deleted, which also removes the signed URL it carried.
  await ensureStream(jsm, subjects.commandsStream, {
    subjects: ['ums.commands.>'],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    max_age: nanos(24 * 3600 * 1000),
    // A full queue refuses new commands (the publisher retries, then the saga's deadlines act) rather
    // than silently dropping commands an agent has not executed yet.
    max_bytes: 256 * MiB,
    max_msg_size: MAX_MESSAGE_BYTES,
    discard: DiscardPolicy.New,
    duplicate_window: nanos(10 * 60 * 1000),
  });
  await ensureStream(jsm, subjects.deadLetterStream, {
    subjects: ['ums.deadletter.>'],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    max_age: nanos(30 * 24 * 3600 * 1000),
    max_bytes: 256 * MiB,
    max_msg_size: MAX_MESSAGE_BYTES,
    discard: DiscardPolicy.Old,
  });
}

class KvRecordStore<T> implements RecordStore<T> {
  constructor(
    private readonly kv: KV,
    private readonly bucket: string,
    private readonly schema: z.ZodType<T>,
  ) {}

  private decode(key: string, bytes: Uint8Array): T {
    let json: unknown;
    try {
      json = JSON.parse(decoder.decode(bytes));
    } catch (cause) {
      throw new BusError('invalid-record', `record "${key}" in ${this.bucket} is not JSON: ${(cause as Error).message}`, { cause });
    }
    const parsed = this.schema.safeParse(json);
    if (!parsed.success)
      throw new BusError('invalid-record', `record "${key}" in ${this.bucket} does not match its schema: ${parsed.error.message}`, {
        cause: parsed.error,
      });
    return parsed.data;
  }

  async get(key: string): Promise<Versioned<T> | undefined> {
    const entry = await this.kv.get(key);
    if (!entry || entry.operation !== 'PUT') return undefined;
    return { value: this.decode(key, entry.value), revision: entry.revision };
  }

  async create(key: string, value: T): Promise<number> {
    try {
      return await this.kv.create(key, encode(value));
    } catch (error) {
      if (isJetStreamApiError(error, JetStreamApiCode.StreamWrongLastSequence))
        throw new RevisionConflictError(this.bucket, key, { cause: error });
      throw error;
    }
  }

  async update(key: string, value: T, revision: number): Promise<number> {
    try {
      return await this.kv.update(key, encode(value), revision);
    } catch (error) {
      if (isJetStreamApiError(error, JetStreamApiCode.StreamWrongLastSequence))
        throw new RevisionConflictError(this.bucket, key, { cause: error });
      throw error;
    }
  }

  put(key: string, value: T): Promise<number> {
    return this.kv.put(key, encode(value));
  }

  async delete(key: string): Promise<void> {
    await this.kv.delete(key);
  }

  async list(): Promise<Array<Versioned<T> & { key: string }>> {
    const keys: string[] = [];
    for await (const key of await this.kv.keys()) keys.push(key);
    const entries = await Promise.all(keys.map(async (key) => ({ key, entry: await this.get(key) })));
    return entries.flatMap(({ key, entry }) => (entry ? [{ key, ...entry }] : []));
  }
}

/**
 * A rejected command may carry signed URLs (bearer secrets for the archive, which holds process memory):
 * what is kept for the operator is the URL without its query, where every store puts the signature.
 */
export function redactSignedUrls(text: string): string {
  return text.replace(/(https?:\/\/[^\s"'?]+)\?[^\s"']*/g, '$1?<redacted>');
}

export class NatsEventBus implements EventBus {
  readonly migrations: RecordStore<MigrationRecord>;
  readonly agents: RecordStore<AgentRegistration>;
  readonly locks: RecordStore<{ migrationId: string }>;

  /** Only connectNatsBus() makes one: it has made sure the streams and buckets exist. */
  constructor(
    private readonly connection: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly manager: JetStreamManager,
    migrationsKv: KV,
    agentsKv: KV,
    locksKv: KV,
  ) {
    this.migrations = new KvRecordStore(migrationsKv, buckets.migrations, MigrationRecord);
    this.agents = new KvRecordStore(agentsKv, buckets.agents, AgentRegistration);
    this.locks = new KvRecordStore(locksKv, buckets.locks, MigrationLock);
  }

  async publishEvent(event: UmsEvent): Promise<void> {
    await this.publish(subjects.event(event.data.migrationId, event.name), encode(toWire(event)), event.id);
  }

  async sendCommand(agentId: string, command: UmsCommand): Promise<void> {
    await this.publish(subjects.commandsFor(agentId), encode(toWire(command)), command.id);
  }

  private async publish(subject: string, payload: Uint8Array, msgID: string): Promise<void> {
    await pRetry(() => this.js.publish(subject, payload, { msgID }), {
      ...PUBLISH_RETRY,
      onFailedAttempt: ({ error, attemptNumber }) =>
        log.warn({ subject, attempt: attemptNumber, reason: error.message }, 'publish failed; retrying'),
    });
  }

  async lastEvent<N extends EventName>(migrationId: string, name: N): Promise<EventOf<N> | undefined> {
    try {
      const message = await this.manager.streams.getMessage(subjects.eventsStream, { last_by_subj: subjects.event(migrationId, name) });
      const event = parseEvent(message.data);
      return event.name === name ? (event as EventOf<N>) : undefined;
    } catch (error) {
      if (isJetStreamApiError(error, JetStreamApiCode.NoMessageFound)) return undefined;
      throw error;
    }
  }

  async findEvent<N extends EventName>(migrationId: string, name: N, id: string): Promise<EventOf<N> | undefined> {
    // Facts carry deterministic ids and are deduplicated: nearly always the last one on its subject.
    const last = await this.lastEvent(migrationId, name);
    if (last === undefined || last.id === id) return last;
    const consumer = await this.js.consumers.get(subjects.eventsStream, { filterSubjects: subjects.event(migrationId, name) });
    try {
      for (;;) {
        const message = await consumer.next({ expires: 2_000 });
        if (message === null) return undefined;
        try {
          const event = parseEvent(message.data);
          if (event.id === id && event.name === name) return event as EventOf<N>;
        } catch {
          // An invalid message on the subject is not the event asked for.
        }
        if (message.info.pending === 0) return undefined;
      }
    } finally {
      await consumer.delete().catch(() => undefined);
    }
  }

  async consumeCommands(
    agentId: string,
    handler: (command: UmsCommand, delivery: CommandDelivery) => Promise<void>,
    onInvalid: (error: Error) => void,
  ): Promise<Subscription> {
    const options: DurableConsumerOptions = {
      durableName: `agent-${agentId}`,
      filterSubject: subjects.commandsFor(agentId),
      ackWaitMs: COMMAND_ACK_WAIT_MS,
      maxDeliveries: 20,
      concurrency: COMMANDS_IN_FLIGHT,
      deadLetterOrigin: `agent-${agentId}`,
      onInvalid,
    };
    return consumeDurable(
      this.js,
      this.manager,
      subjects.commandsStream,
      options,
      parseCommand,
      async (command, { redelivered }) => {
        try {
          await handler(command, { redelivered });
          return 'done';
        } catch (error) {
          log.warn({ err: error, command: command.type, migrationId: command.subject }, 'command handler failed; it will be redelivered');
          return { retryAfterMs: 5_000 };
        }
      },
      (origin, payload, reason) => this.deadLetter(origin, payload, reason),
    );
  }

  /**
   * Events through a durable consumer of the events stream, for the trigger bridge (one per function and
   * event type): an event waits in the stream while its consumer is down. Not part of EventBus: components
   * follow migrations; only the bridge, which stands in for Eventarc, needs durable positions. An event that
   * does not parse is kept as a dead letter; the others are settled as `handler` decides.
   */
  async consumeEvents(
    options: DurableConsumerOptions,
    handler: (event: UmsEvent, delivery: Delivery) => Promise<DeliveryOutcome>,
  ): Promise<Subscription> {
    return consumeDurable(this.js, this.manager, subjects.eventsStream, options, parseEvent, handler, (origin, payload, reason) =>
      this.deadLetter(origin, payload, reason),
    );
  }

  async followMigration(migrationId: string, handler: (event: UmsEvent) => 'stop' | void | Promise<'stop' | void>): Promise<Subscription> {
    const consumer = await this.js.consumers.get(subjects.eventsStream, { filterSubjects: subjects.eventsOf(migrationId) });
    const messages = await consumer.consume();
    const closed = (async () => {
      for await (const message of messages) {
        let event: UmsEvent;
        try {
          event = parseEvent(message.data);
        } catch (error) {
          log.warn({ err: error, subject: message.subject }, 'skipping an invalid event');
          continue;
        }
        if ((await handler(event)) === 'stop') break;
      }
      await messages.close();
    })();
    return { stop: async () => messages.close().then(() => undefined), closed };
  }

  /** Rejected messages are kept, with the reason, where `ums status` can show them. */
  async deadLetter(origin: string, payload: Uint8Array, reason: string): Promise<void> {
    const kept = redactSignedUrls(decoder.decode(payload).slice(0, 64 * 1024));
    await this.js.publish(subjects.deadLetter(origin), encode({ origin, reason, at: new Date().toISOString(), payload: kept }));
  }

  async listDeadLetters(limit = 50): Promise<DeadLetter[]> {
    const info = await this.manager.streams.info(subjects.deadLetterStream);
    const last = info.state.last_seq;
    const first = Math.max(info.state.first_seq, last - limit + 1);
    const out: DeadLetter[] = [];
    if (info.state.messages === 0) return out;
    for (let seq = first; seq <= last; seq++) {
      const message = await this.manager.streams.getMessage(subjects.deadLetterStream, { seq }).catch((error: unknown) => {
        // Gone since the info was read (aged out): skipped.
        if (isJetStreamApiError(error, JetStreamApiCode.NoMessageFound)) return undefined;
        throw error;
      });
      if (message) out.push(JSON.parse(decoder.decode(message.data)) as DeadLetter);
    }
    return out;
  }

  async close(): Promise<void> {
    await this.connection.drain().catch(() => this.connection.close());
  }
}
