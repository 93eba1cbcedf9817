import type { AgentRegistration } from './agent-registration.js';
import { BusError } from './bus-errors.js';
import type { EvacuationRecord } from './evacuation.js';
import type { FrontmanRegistration } from './frontman-registration.js';
import type { EventName, EventOf, UmsCommand, UmsEvent } from './events.js';
import type { MigrationRecord } from './migration.js';

/**
 * The seam between every component and the broker. NATS JetStream implements it (nats-event-bus.ts):
 * events in a stream, commands in a work-queue stream with a durable consumer per agent, records in KV.
 */
export interface EventBus {
  /** Publishes an event; a second publish with the same event id within the dedupe window is dropped. */
  publishEvent(event: UmsEvent): Promise<void>;

  /** Queues a command for one agent; it survives the agent being down and is delivered when it returns. */
  sendCommand(agentId: string, command: UmsCommand): Promise<void>;

  /**
   * Delivers this agent's commands in stream order, several at once (the handler orders what must be
   * ordered). The handler's promise resolving acknowledges the command; a thrown error, or the agent
   * dying, makes it redeliver later (then `delivery.redelivered` says so).
   */
  consumeCommands(
    agentId: string,
    handler: (command: UmsCommand, delivery: CommandDelivery) => Promise<void>,
    onInvalid: (error: Error) => void,
  ): Promise<Subscription>;

  /**
   * The latest event of this name for a migration stated by `publisher` (a principal, core/event-identity.ts),
   * if any: how a handler finds out it already ran.
   */
  lastEvent<N extends EventName>(migrationId: string, name: N, publisher: string): Promise<EventOf<N> | undefined>;

  /**
   * The event of this migration and name with this id, as the stream holds it, if it does: how a function
   * makes sure that what it was handed over HTTP is a fact that was published, not a forged request. Only
   * an event published by the principal that may state it (core/event-identity.ts) is found.
   */
  findEvent<N extends EventName>(migrationId: string, name: N, id: string, publisher: string): Promise<EventOf<N> | undefined>;

  /**
   * Every event of one migration from its first, then live; ends when `handler` returns 'stop'. An event
   * whose publisher may not state it (core/event-identity.ts) is skipped, never handed to `handler`.
   */
  followMigration(migrationId: string, handler: (event: UmsEvent) => 'stop' | void | Promise<'stop' | void>): Promise<Subscription>;

  /** Every event of this name published from now on, of any migration (skipped as followMigration skips). */
  watchEvents(name: EventName, handler: (event: UmsEvent) => void | Promise<void>): Promise<Subscription>;

  readonly migrations: RecordStore<MigrationRecord>;
  readonly agents: RecordStore<AgentRegistration>;
  /** One key per container being migrated (`<agent>.<container>`), holding the migration id. */
  readonly locks: RecordStore<{ migrationId: string }>;
  /** The frontmen and the services they front (core/frontman-registration.ts), by frontman id. */
  readonly frontmen: RecordStore<FrontmanRegistration>;
  /** Each host's evacuation (core/evacuation.ts), by agent id: a host with one under way takes no new service. */
  readonly evacuations: RecordStore<EvacuationRecord>;

  /** Keeps a rejected message with the reason where `ums status` shows it (instead of retrying it forever). */
  deadLetter(origin: string, payload: Uint8Array, reason: string): Promise<void>;
  listDeadLetters(limit?: number): Promise<DeadLetter[]>;

  close(): Promise<void>;
}

export interface CommandDelivery {
  /** Delivered before and not acknowledged: the agent crashed, or its handler failed, mid-command. */
  redelivered: boolean;
}

export interface DeadLetter {
  origin: string;
  reason: string;
  at: string;
}

export interface Subscription {
  stop(): Promise<void>;
  /** Settles when the subscription has ended (stopped or failed). */
  readonly closed: Promise<void>;
}

export interface Versioned<T> {
  value: T;
  revision: number;
}

/** A typed view of a KV bucket, validated on read. */
export interface RecordStore<T> {
  get(key: string): Promise<Versioned<T> | undefined>;
  /** Fails with RevisionConflictError if the key exists. */
  create(key: string, value: T): Promise<number>;
  /** Fails with RevisionConflictError unless the key is at `revision` (compare-and-set). */
  update(key: string, value: T, revision: number): Promise<number>;
  put(key: string, value: T): Promise<number>;
  delete(key: string): Promise<void>;
  list(): Promise<Array<Versioned<T> & { key: string }>>;
}

export class RevisionConflictError extends BusError {
  constructor(
    readonly bucket: string,
    readonly key: string,
    options?: { cause?: unknown },
  ) {
    super('revision-conflict', `"${key}" in ${bucket} was changed by someone else (revision conflict)`, options);
    this.name = 'RevisionConflictError';
  }
}

/** Subjects: one place that names them, shared by the bus, the bridge and infra. */
export const subjects = {
  eventsStream: 'UMS_EVENTS',
  commandsStream: 'UMS_COMMANDS',
  deadLetterStream: 'UMS_DEAD_LETTERS',
  /**
   * An event's subject names its publisher (a principal, core/event-identity.ts): the broker lets each principal
   * publish only under its own name, so the subject says who stated the event.
   */
  event: (migrationId: string, publisher: string, name: EventName): string => `ums.events.${migrationId}.${publisher}.${name}`,
  eventsOf: (migrationId: string): string => `ums.events.${migrationId}.>`,
  eventsNamed: (name: EventName): string => `ums.events.*.*.${name}`,
  /** Every event this principal may publish (its permission on the broker). */
  eventsBy: (publisher: string): string => `ums.events.*.${publisher}.>`,
  commandsFor: (agentId: string): string => `ums.commands.${agentId}`,
  deadLetter: (origin: string): string => `ums.deadletter.${origin}`,
} as const;
