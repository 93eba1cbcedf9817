import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RevisionConflictError, type EventBus, type RecordStore, type Versioned } from '../../core/event-bus.js';
import { makeEvent, type EventData, type EventName, type EventOf, type UmsCommand, type UmsEvent } from '../../core/events.js';
import { createLogger } from '../../core/log.js';
import { commandLifetimeMs, MigrationRecord, timelineOf } from '../../core/migration.js';
import { generateSigningKeyPair } from '../../core/signed-envelope.js';
import { CommandSigner } from '../../core/command-signature.js';
import type { FunctionContext } from '../../functions/function-context.js';
import { restoreCompleted, runStep, sourceDiscarded, sourceUploaded } from '../../functions/migration-saga.js';

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

function sagaContext() {
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

const at = (ms: number) => new Date(Date.UTC(2026, 10, 30, 12) + ms).toISOString();
const location = { storeUrl: 'file:///tmp/store', prefix: 'migrations/m5/' };
const artifact = { ...location, sizeBytes: 512 << 20, sha256: 'a'.repeat(64), chunkCount: 64, manifestSha256: 'b'.repeat(64) };
const uploadFacts = { checkpointStartedAt: at(1_000), firstByteAt: at(3_000), uploadedAt: at(9_000) };
const event = <N extends EventName>(name: N, data: EventData<N>): EventOf<N> => makeEvent(name, '/ums/agents/test', data);

async function checkpointingRecord(bus: ReturnType<typeof sagaContext>['bus']) {
  await bus.migrations.create(
    'm5',
    MigrationRecord.parse({
      migrationId: 'm5',
      epoch: 1,
      state: 'checkpointing',
      container: 'filestore',
      destinationAgent: 'gcp',
      sourceAgent: 'azure',
      image: 'localhost/filestore:1',
      imageId: 'c'.repeat(64),
      approach: 'container',
      artifactLocation: location,
      times: { requestedAt: at(0), plannedAt: at(200), preparedAt: at(900) },
      updatedAt: at(900),
    }),
  );
}

const completed = (relay: boolean) =>
  event('restore.completed', {
    migrationId: 'm5',
    agent: 'gcp',
    container: 'filestore',
    containerId: 'd'.repeat(64),
    downloadedAt: at(9_500),
    restoredAt: at(11_600),
    ...(relay ? { upload: { artifact, ...uploadFacts } } : {}),
  });
const uploaded = () =>
  event('checkpoint.uploaded', {
    migrationId: 'm5',
    agent: 'azure',
    container: 'filestore',
    image: 'localhost/filestore:1',
    artifact,
    ...uploadFacts,
  });
const discarded = () => event('source.discarded', { migrationId: 'm5', agent: 'azure', container: 'filestore' });

describe('the record frozen time, whatever order the facts arrive in', () => {
  it('restore.completed before checkpoint.uploaded: the completion carries the real freeze (was 0 s)', async () => {
    const { ctx, bus, published } = sagaContext();
    await checkpointingRecord(bus);
    // The order seen in the 512 MiB file-store run: the destination's confirmation, then the discard, finish the
    // migration before the function handling checkpoint.uploaded runs.
    await runStep(completed(true), ctx, restoreCompleted);
    await runStep(discarded(), ctx, sourceDiscarded);
    await runStep(uploaded(), ctx, sourceUploaded);
    const done = published.find((e): e is EventOf<'migration.completed'> => e.name === 'migration.completed');
    assert.ok(done);
    assert.equal(done.data.timeline.frozenMs, 10_600);
    assert.equal(done.data.timeline.archiveBytes, artifact.sizeBytes);
    const record = await bus.migrations.get('m5');
    assert.equal(record?.value.state, 'done');
    assert.equal(record && timelineOf(record.value).frozenMs, 10_600);
  });

  it('the usual order and a redelivered checkpoint.uploaded give the same timeline', async () => {
    const { ctx, bus, published } = sagaContext();
    await checkpointingRecord(bus);
    await runStep(uploaded(), ctx, sourceUploaded);
    await runStep(completed(true), ctx, restoreCompleted);
    await runStep(uploaded(), ctx, sourceUploaded);
    await runStep(discarded(), ctx, sourceDiscarded);
    await runStep(uploaded(), ctx, sourceUploaded);
    const done = published.find((e): e is EventOf<'migration.completed'> => e.name === 'migration.completed');
    assert.equal(done?.data.timeline.frozenMs, 10_600);
    assert.deepEqual(
      done?.data.timeline.phases.map((p) => p.name),
      ['plan+prepare', 'checkpoint', 'upload', 'download tail', 'restore', 'finalize'],
    );
  });

  it('a relayed upload at another place than the plan is not taken into the record', async () => {
    const { ctx, bus } = sagaContext();
    await checkpointingRecord(bus);
    const elsewhere = completed(true);
    const forged = {
      ...elsewhere,
      data: { ...elsewhere.data, upload: { artifact: { ...artifact, prefix: 'migrations/other/' }, ...uploadFacts } },
    };
    await runStep(forged, ctx, restoreCompleted);
    const record = await bus.migrations.get('m5');
    assert.equal(record?.value.state, 'finalizing');
    assert.equal(record?.value.artifact, undefined);
    assert.equal(record?.value.times.checkpointStartedAt, undefined);
  });
});
