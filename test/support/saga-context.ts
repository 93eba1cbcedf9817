import { RevisionConflictError, type EventBus, type RecordStore, type Versioned } from '../../core/event-bus.js';
import type { UmsCommand, UmsEvent } from '../../core/events.js';
import { createLogger } from '../../core/log.js';
import { commandLifetimeMs, MigrationRecord } from '../../core/migration.js';
import { generateSigningKeyPair } from '../../core/signed-envelope.js';
import { CommandSigner } from '../../core/command-signature.js';
import type { FunctionContext } from '../../functions/function-context.js';

/** A KV bucket in memory with compare-and-set, enough for the saga's steps. */
class MemoryStore<T> implements RecordStore<T> {
  private readonly entries = new Map<string, Versioned<T>>();
  private revision = 0;
  constructor(private readonly parse: (raw: unknown) => T) {}
  get(key: string): Promise<Versioned<T> | undefined> {
    const entry = this.entries.get(key);
    // Through JSON and the schema, as the KV form is read.
    return Promise.resolve(entry && { value: this.parse(JSON.parse(JSON.stringify(entry.value))), revision: entry.revision });
  }
  create(key: string, value: T): Promise<number> {
    if (this.entries.has(key)) return Promise.reject(new RevisionConflictError('memory', key));
    return this.put(key, value);
  }
  update(key: string, value: T, revision: number): Promise<number> {
    if (this.entries.get(key)?.revision !== revision) return Promise.reject(new RevisionConflictError('memory', key));
    return this.put(key, value);
  }
  put(key: string, value: T): Promise<number> {
    this.entries.set(key, { value, revision: ++this.revision });
    return Promise.resolve(this.revision);
  }
  delete(key: string): Promise<void> {
    this.entries.delete(key);
    return Promise.resolve();
  }
  list(): Promise<Array<Versioned<T> & { key: string }>> {
    return Promise.resolve([...this.entries].map(([key, entry]) => ({ key, ...entry })));
  }
}

/** The saga's context over in-memory stores: what it published and which commands it sent. */
export function sagaContext() {
  const published: UmsEvent[] = [];
  const commands: UmsCommand[] = [];
  const bus = {
    migrations: new MemoryStore((raw) => MigrationRecord.parse(raw)),
    locks: new MemoryStore((raw) => raw as { migrationId: string }),
    publishEvent: (event: UmsEvent) => {
      published.push(event);
      return Promise.resolve();
    },
    sendCommand: (_agent: string, command: UmsCommand) => {
      commands.push(command);
      return Promise.resolve();
    },
  };
  const ctx: FunctionContext = {
    bus: bus as unknown as EventBus,
    log: createLogger('test.saga'),
    source: '/ums/test',
    openStore: () => Promise.reject(new Error('no store in this test')),
    signedUrlTtlSeconds: 60,
    artifactRetention: 'bucket-lifecycle',
    commandSigner: new CommandSigner(generateSigningKeyPair(), (name) => commandLifetimeMs(name)),
  };
  return { ctx, bus, published, commands };
}
