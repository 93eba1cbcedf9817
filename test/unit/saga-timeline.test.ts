import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { makeEvent, type EventData, type EventName, type EventOf } from '../../core/events.js';
import { MigrationRecord, timelineOf } from '../../core/migration.js';
import { sagaContext } from '../support/saga-context.js';
import { restoreCompleted, runStep, sourceDiscarded, sourceUploaded } from '../../functions/migration-saga.js';

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
