import { readFile } from 'node:fs/promises';
import {
  connect,
  DeliverPolicy,
  DiscardPolicy,
  nkeyAuthenticator,
  type ConnectionOptions,
  nanos,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type KV,
  type NatsConnection,
  type OrderedConsumerOptions,
} from 'nats';
import { z } from 'zod';
import { AgentRegistration } from './agent-registration.js';
import { EvacuationRecord } from './evacuation.js';
import { FrontmanRegistration } from './frontman-registration.js';
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
import { mayState, publisherOf, publisherOfSubject } from './event-identity.js';
import {
  InvalidMessageError,
  parseCommand,
  eventScope,
  parseEvent,
  toWire,
  type EventName,
  type EventOf,
  type UmsCommand,
  type UmsEvent,
} from './events.js';
import { createLogger } from './log.js';
import { MigrationLock, MigrationRecord } from './migration.js';

export type { Delivery, DeliveryOutcome, DurableConsumerOptions } from './durable-consumer.js';

const log = createLogger('nats-event-bus');
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const encode = (value: unknown): Uint8Array => encoder.encode(JSON.stringify(value));

/** The KV buckets (each one a stream `KV_<bucket>`, written on `$KV.<bucket>.<key>`). */
export const buckets = {
  migrations: 'ums_migrations',
  agents: 'ums_agents',
  locks: 'ums_locks',
  frontmen: 'ums_frontmen',
  evacuations: 'ums_evacuations',
} as const;

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
  /** e.g. tls://127.0.0.1:4222 or nats://127.0.0.1:4222. */
  servers: string;
  /** The connection name shown in the server's monitoring (agent id, function name, ...). */
  name: string;
  /**
   * Path of this principal's credential file (infra/broker-credentials.ts writes them: the principal's name
   * and its nkey seed, mode 0600). Default: $UMS_NATS_CREDENTIALS. The seed is read from the file only: it
   * is never in the environment, a log or an event. Without a credential the connection is anonymous (or
   * uses NATS_USER/NATS_PASSWORD), for a development broker without authorization.
   */
  credentials?: string;
  /** PEM file of the CA that signed the broker's certificate: TLS is then required. Default: $UMS_NATS_CA. */
  ca?: string;
}

/** What a credential file holds (JSON): who the principal is and its nkey seed. */
export interface BrokerCredential {
  principal: string;
  seed: string;
}

/** The inbox prefix of a principal: its replies and pull deliveries come there, and only it may subscribe to it. */
export const inboxPrefixOf = (principal: string): string => `_INBOX_${principal}`;

export async function readBrokerCredential(path: string): Promise<BrokerCredential> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch (cause) {
    throw new BusError('setup-failed', `cannot read the broker credential ${path}: ${(cause as Error).message}`, { cause });
  }
  const { principal, seed } = (parsed ?? {}) as Partial<BrokerCredential>;
  if (typeof principal !== 'string' || !/^[A-Za-z0-9_-]+$/.test(principal) || typeof seed !== 'string' || !seed.startsWith('SU')) {
    // The file's content is not echoed: it holds a secret.
    throw new BusError('setup-failed', `the broker credential ${path} is not {"principal": <name>, "seed": <user nkey seed>}`);
  }
  return { principal, seed };
}

/** Connection options for `options`: TLS against the stack's CA and the principal's nkey when configured. */
async function connectionOptions(options: NatsBusOptions): Promise<ConnectionOptions> {
  const credentials = options.credentials ?? process.env.UMS_NATS_CREDENTIALS;
  const ca = options.ca ?? process.env.UMS_NATS_CA;
  const base: ConnectionOptions = {
    servers: options.servers,
    name: options.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    ...(ca ? { tls: { caFile: ca } } : {}),
  };
  if (!credentials) return { ...base, user: process.env.NATS_USER, pass: process.env.NATS_PASSWORD };
  const { principal, seed } = await readBrokerCredential(credentials);
  return { ...base, authenticator: nkeyAuthenticator(new TextEncoder().encode(seed)), inboxPrefix: inboxPrefixOf(principal) };
}

/**
 * Connects as the configured principal and binds to the streams and buckets. With a credential the broker
 * enforces least privilege, so the bus only binds: the streams and buckets must have been provisioned
 * (provisionBus(), run once by the stack's setup step as the admin principal). Without one (a development
 * broker without authorization) it provisions them itself, idempotently, so any component can start first.
 */
export async function connectNatsBus(options: NatsBusOptions): Promise<NatsEventBus> {
  const connection = await connectionOptions(options);
  if (connection.authenticator === undefined) await provisionBus(options);
  const nc = await connect(connection);
  try {
    const jsm = await nc.jetstreamManager();
    for (const stream of [subjects.eventsStream, subjects.commandsStream, subjects.deadLetterStream]) {
      await jsm.streams.info(stream).catch((cause: unknown) => {
        throw new BusError('setup-failed', `stream ${stream} is not there (provision the broker first): ${(cause as Error).message}`, {
          cause,
        });
      });
    }
    const js = nc.jetstream();
    // Bound, never created (that needs the admin's rights); direct gets, as provisionBus() allows them.
    const bind = (bucket: string) => js.views.kv(bucket, { bindOnly: true, allow_direct: true });
    const [migrations, agents, locks, frontmen, evacuations] = await Promise.all([
      bind(buckets.migrations),
      bind(buckets.agents),
      bind(buckets.locks),
      bind(buckets.frontmen),
      bind(buckets.evacuations),
    ]);
    return new NatsEventBus(nc, js, jsm, { migrations, agents, locks, frontmen, evacuations });
  } catch (error) {
    await nc.close();
    throw error;
  }
}

/**
 * How many copies JetStream keeps of every stream and KV bucket (num_replicas): 1 on a single server, up to
 * the cluster's size on a cluster (3 on terraform/modules/gcp-nats-broker's three servers: one server may
 * fail without losing a stream or the saga's records). JetStream allows at most 5.
 */
export const StreamReplicas = z.number().int().min(1).max(5);

export interface ProvisionOptions {
  /**
   * The replica count (StreamReplicas) every stream and bucket gets; existing ones are brought to it by a
   * stream update, which JetStream allows both ways (it adds or drops peers and catches new ones up).
   * Undefined: new ones get 1 and existing ones keep theirs, so a provision run without it never scales a
   * cluster's streams down.
   */
  replicas?: number;
}

/**
 * Creates the streams and buckets if they are missing and gives them `provision.replicas` copies (idempotent):
 * the set-up step, run as a principal that may manage JetStream (the stack's admin, or `deploy-credentials
 * provision` in a deployment) before any component connects. The components themselves only bind (they
 * never create a stream with a credential), so this is the one place the replica count is applied.
 */
export async function provisionBus(options: NatsBusOptions, provision: ProvisionOptions = {}): Promise<void> {
  const replicas = provision.replicas === undefined ? undefined : StreamReplicas.parse(provision.replicas);
  const nc = await connect({ ...(await connectionOptions(options)), maxReconnectAttempts: 0 });
  try {
    // A single server refuses more than one replica on create but takes it on update (nats-server 2.9),
    // leaving a stream that claims copies it does not have: refuse it here, for both.
    if (replicas !== undefined && replicas > 1 && nc.info?.cluster === undefined) {
      throw new BusError('setup-failed', `${replicas} replicas need a clustered broker; ${options.servers} is a single server (use 1)`);
    }
    const jsm = await nc.jetstreamManager();
    await ensureStreams(jsm, replicas);
    const js = nc.jetstream();
    const bucket = { storage: StorageType.File, allow_direct: true, replicas: replicas ?? 1 } as const;
    // An existing bucket keeps its configuration here (views.kv only binds to it): scaled below, as a stream.
    await Promise.all([
      js.views.kv(buckets.migrations, { ...bucket, history: 10 }),
      js.views.kv(buckets.agents, { ...bucket, history: 1, ttl: AGENT_TTL_MS }),
      js.views.kv(buckets.locks, { ...bucket, history: 1 }),
      js.views.kv(buckets.frontmen, { ...bucket, history: 1, ttl: AGENT_TTL_MS }),
      js.views.kv(buckets.evacuations, { ...bucket, history: 5 }),
    ]);
    if (replicas !== undefined) for (const name of Object.values(buckets)) await scaleStream(jsm, `KV_${name}`, replicas);
  } catch (error) {
    throw new BusError('setup-failed', `cannot provision the broker at ${options.servers}: ${(error as Error).message}`, { cause: error });
  } finally {
    await nc.close();
  }
}

type StreamConfigInput = Parameters<JetStreamManager['streams']['add']>[0];

async function ensureStream(jsm: JetStreamManager, name: string, config: StreamConfigInput, replicas: number | undefined): Promise<void> {
  try {
    await jsm.streams.info(name);
    if (replicas !== undefined) await scaleStream(jsm, name, replicas);
    return;
  } catch (error) {
    if (error instanceof BusError) throw error;
    if (!isJetStreamApiError(error, JetStreamApiCode.StreamNotFound)) {
      throw new BusError('setup-failed', `cannot read stream ${name}: ${(error as Error).message}`, { cause: error });
    }
  }
  try {
    await jsm.streams.add({ ...config, name, num_replicas: replicas ?? 1 });
  } catch (error) {
    // Two components starting at once may race to create it; the loser finds it there.
    await jsm.streams.info(name).catch(() => {
      throw new BusError('setup-failed', `cannot create stream ${name}: ${(error as Error).message}`, { cause: error });
    });
  }
}

/**
 * Brings an existing stream (a KV bucket is the stream KV_<bucket>) to `replicas` copies by a stream update,
 * the rest of its configuration unchanged. The cluster places the new copies and catches them up; durable
 * consumers (the agents' command consumers, the bridge's) follow their stream's count.
 */
async function scaleStream(jsm: JetStreamManager, name: string, replicas: number): Promise<void> {
  const { config } = await jsm.streams.info(name);
  if (config.num_replicas === replicas) return;
  try {
    await jsm.streams.update(name, { ...config, num_replicas: replicas });
  } catch (error) {
    throw new BusError(
      'setup-failed',
      `cannot change stream ${name} from ${config.num_replicas} to ${replicas} replicas (a cluster needs at least as many servers): ${(error as Error).message}`,
      { cause: error },
    );
  }
  log.info({ stream: name, from: config.num_replicas, to: replicas }, 'stream replicas changed');
}

async function ensureStreams(jsm: JetStreamManager, replicas: number | undefined): Promise<void> {
  const ensure = (name: string, config: StreamConfigInput) => ensureStream(jsm, name, config, replicas);
  await ensure(subjects.eventsStream, {
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
  await ensure(subjects.commandsStream, {
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
  await ensure(subjects.deadLetterStream, {
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
    // A Set: the KV's keys() walks the bucket's stream, and a key written again while it walks (an agent's
    // heartbeat) can come twice (nats.go deduplicates since its PR #2029; nats.js 2.x does not): one
    // registration listed twice made the planner refuse a container as held by "several agents".
    const keys = new Set<string>();
    for await (const key of await this.kv.keys()) keys.add(key);
    const entries = await Promise.all([...keys].map(async (key) => ({ key, entry: await this.get(key) })));
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

/** An event as read from `subject`, refused (InvalidMessageError) unless its publisher may state it. */
function parseStatedEvent(payload: Uint8Array, subject: string): UmsEvent {
  const event = parseEvent(payload);
  if (!mayState(event, subject)) {
    throw new InvalidMessageError(
      'event',
      `"${event.name}" published by "${publisherOfSubject(subject) ?? 'nobody'}" (${subject}), who may not state it (it is ${publisherOf(event)}'s word)`,
    );
  }
  return event;
}

export class NatsEventBus implements EventBus {
  readonly migrations: RecordStore<MigrationRecord>;
  readonly agents: RecordStore<AgentRegistration>;
  readonly locks: RecordStore<{ migrationId: string }>;
  readonly frontmen: RecordStore<FrontmanRegistration>;
  readonly evacuations: RecordStore<EvacuationRecord>;

  /** Only connectNatsBus() makes one: it has bound to the streams and buckets. */
  constructor(
    private readonly connection: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly manager: JetStreamManager,
    kv: Record<keyof typeof buckets, KV>,
  ) {
    this.migrations = new KvRecordStore(kv.migrations, buckets.migrations, MigrationRecord);
    this.agents = new KvRecordStore(kv.agents, buckets.agents, AgentRegistration);
    this.locks = new KvRecordStore(kv.locks, buckets.locks, MigrationLock);
    this.frontmen = new KvRecordStore(kv.frontmen, buckets.frontmen, FrontmanRegistration);
    this.evacuations = new KvRecordStore(kv.evacuations, buckets.evacuations, EvacuationRecord);
  }

  /**
   * On the subject of the principal that may state the event (core/event-identity.ts): the broker refuses
   * it unless that is this connection's principal. The dedupe id is scoped by publisher, so that no one can
   * suppress another's fact by publishing first under its (deterministic) id.
   */
  async publishEvent(event: UmsEvent): Promise<void> {
    const publisher = publisherOf(event);
    await this.publish(subjects.event(eventScope(event), publisher, event.name), encode(toWire(event)), `${publisher}:${event.id}`);
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

  async lastEvent<N extends EventName>(migrationId: string, name: N, publisher: string): Promise<EventOf<N> | undefined> {
    try {
      const subject = subjects.event(migrationId, publisher, name);
      const message = await this.manager.streams.getMessage(subjects.eventsStream, { last_by_subj: subject });
      const event = parseEvent(message.data);
      return event.name === name && mayState(event, subject) ? (event as EventOf<N>) : undefined;
    } catch (error) {
      if (isJetStreamApiError(error, JetStreamApiCode.NoMessageFound)) return undefined;
      throw error;
    }
  }

  async findEvent<N extends EventName>(migrationId: string, name: N, id: string, publisher: string): Promise<EventOf<N> | undefined> {
    // Facts carry deterministic ids and are deduplicated: nearly always the last one on its subject.
    const last = await this.lastEvent(migrationId, name, publisher);
    if (last === undefined || last.id === id) return last;
    const subject = subjects.event(migrationId, publisher, name);
    const consumer = await this.js.consumers.get(subjects.eventsStream, { filterSubjects: subject });
    try {
      for (;;) {
        const message = await consumer.next({ expires: 2_000 });
        if (message === null) return undefined;
        try {
          const event = parseEvent(message.data);
          if (event.id === id && event.name === name && mayState(event, message.subject)) return event as EventOf<N>;
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
   * does not parse, or whose publisher may not state it (core/event-identity.ts), is kept as a dead letter;
   * the others are settled as `handler` decides.
   */
  async consumeEvents(
    options: DurableConsumerOptions,
    handler: (event: UmsEvent, delivery: Delivery) => Promise<DeliveryOutcome>,
  ): Promise<Subscription> {
    return consumeDurable(this.js, this.manager, subjects.eventsStream, options, parseStatedEvent, handler, (origin, payload, reason) =>
      this.deadLetter(origin, payload, reason),
    );
  }

  async followMigration(migrationId: string, handler: (event: UmsEvent) => 'stop' | void | Promise<'stop' | void>): Promise<Subscription> {
    return this.follow({ filterSubjects: subjects.eventsOf(migrationId) }, handler);
  }

  async watchEvents(name: EventName, handler: (event: UmsEvent) => void | Promise<void>): Promise<Subscription> {
    // One subject: an ordered consumer given a list of them never came up against this broker.
    return this.follow({ filterSubjects: subjects.eventsNamed(name), deliver_policy: DeliverPolicy.New }, handler);
  }

  /** An ordered consumer: nothing of it outlives the connection, and it needs no rights beyond reading. */
  private async follow(
    options: Partial<OrderedConsumerOptions>,
    handler: (event: UmsEvent) => 'stop' | void | Promise<'stop' | void>,
  ): Promise<Subscription> {
    const consumer = await this.js.consumers.get(subjects.eventsStream, options);
    const messages = await consumer.consume();
    const closed = (async () => {
      for await (const message of messages) {
        let event: UmsEvent;
        try {
          event = parseStatedEvent(message.data, message.subject);
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
