import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { canTransition, isTerminal, MigrationState, timelineOf, type MigrationRecord } from '../../core/migration.js';

describe('the migration state machine', () => {
  it('allows the happy path and the way back, and nothing out of a terminal state', () => {
    const path: MigrationState[] = ['requested', 'preparing', 'checkpointing', 'restoring', 'finalizing', 'done'];
    for (let i = 1; i < path.length; i++) assert.ok(canTransition(path[i - 1] as MigrationState, path[i] as MigrationState));
    assert.ok(canTransition('restoring', 'rolling-back'));
    // the destination may report success before the upload's own report reached the planner
    assert.ok(canTransition('checkpointing', 'finalizing'));
    assert.ok(canTransition('rolling-back', 'failed'));
    for (const terminal of ['done', 'failed'] as const) {
      assert.ok(isTerminal(terminal));
      for (const to of MigrationState.options) assert.ok(!canTransition(terminal, to), `${terminal} -> ${to}`);
    }
  });

  it('never lets a restored migration roll back, nor a frozen one fail without resuming', () => {
    // once the destination runs the service, only discarding the source is safe
    assert.ok(!canTransition('finalizing', 'rolling-back'));
    assert.ok(!canTransition('finalizing', 'failed'));
    // after the freeze, failure goes through rolling-back (the source must resume first)
    assert.ok(!canTransition('restoring', 'failed'));
    // before the freeze, a refusal ends it directly
    assert.ok(canTransition('preparing', 'failed'));
  });

  it('derives the timeline from the recorded timestamps', () => {
    const at = (ms: number) => new Date(Date.UTC(2026, 10, 28, 0, 0, 0, ms)).toISOString();
    const record: MigrationRecord = {
      migrationId: 'm1',
      state: 'done',
      container: 'web',
      destinationAgent: 'gcp',
      sourceAgent: 'azure',
      artifact: { storeUrl: 'gs://b', prefix: 'migrations/m1/', sizeBytes: 2048, sha256: 'a'.repeat(64), chunkCount: 1, manifestSha256: 'b'.repeat(64) },
      times: {
        requestedAt: at(0),
        checkpointStartedAt: at(100),
        firstByteAt: at(400),
        uploadedAt: at(500),
        downloadedAt: at(600),
        restoredAt: at(900),
        finishedAt: at(950),
      },
      updatedAt: at(950),
    };
    const timeline = timelineOf(record);
    assert.deepEqual(
      timeline.phases.map((p) => [p.name, p.ms]),
      [['plan+prepare', 100], ['checkpoint', 300], ['upload', 100], ['download tail', 100], ['restore', 300], ['finalize', 50]],
    );
    assert.equal(timeline.totalMs, 950);
    assert.equal(timeline.frozenMs, 800);
    assert.equal(timeline.archiveBytes, 2048);
  });
});
