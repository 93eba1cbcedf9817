import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  canTransition,
  COMMAND_VALID_IN,
  isTerminal,
  MigrationRecord,
  MigrationState,
  timelineOf,
  whereItRuns,
} from '../../core/migration.js';

describe('the migration state machine', () => {
  it('allows the happy path and the way back, and nothing out of a terminal state', () => {
    const path: MigrationState[] = ['requested', 'preflight', 'checkpointing', 'uploaded', 'restoring', 'restored', 'finalizing', 'done'];
    for (let i = 1; i < path.length; i++) assert.ok(canTransition(path[i - 1] as MigrationState, path[i] as MigrationState));
    for (const from of ['checkpointing', 'uploaded', 'restoring'] as const) assert.ok(canTransition(from, 'rolling-back'), from);
    // the destination may report success before the upload's own report reached the planner
    assert.ok(canTransition('checkpointing', 'restored'));
    assert.ok(canTransition('uploaded', 'restored'));
    // forward steps never go backwards
    assert.ok(!canTransition('restoring', 'uploaded'));
    assert.ok(!canTransition('uploaded', 'checkpointing'));
    assert.ok(canTransition('rolling-back', 'failed'));
    for (const terminal of ['done', 'failed'] as const) {
      assert.ok(isTerminal(terminal));
      for (const to of MigrationState.options) assert.ok(!canTransition(terminal, to), `${terminal} -> ${to}`);
    }
  });

  it('never lets a restored migration roll back, nor a frozen one fail without resuming', () => {
    // once the destination runs the service, only discarding the source is safe
    for (const from of ['restored', 'finalizing'] as const) {
      assert.ok(!canTransition(from, 'rolling-back'), from);
      assert.ok(!canTransition(from, 'failed'), from);
    }
    // after the freeze, failure goes through rolling-back (the source must resume first)
    assert.ok(!canTransition('uploaded', 'failed'));
    assert.ok(!canTransition('restoring', 'failed'));
    // before the freeze, a refusal ends it directly
    assert.ok(canTransition('preflight', 'failed'));
  });

  it('keeps each command to the states where it still applies (the fence the agents check)', () => {
    assert.deepEqual(COMMAND_VALID_IN.checkpoint, ['checkpointing']);
    assert.deepEqual(COMMAND_VALID_IN.resume, ['rolling-back']);
    // a forward command never applies once the saga turned back, nor a resume before it did
    for (const forward of ['prepare', 'chunk-urls', 'checkpoint', 'discard'] as const) {
      assert.ok(!COMMAND_VALID_IN[forward].includes('rolling-back'), forward);
      assert.ok(!COMMAND_VALID_IN[forward].includes('failed'), forward);
    }
    for (const state of MigrationState.options) if (state !== 'rolling-back') assert.ok(!COMMAND_VALID_IN.resume.includes(state));
    // the source discards only after the destination confirmed
    assert.ok(COMMAND_VALID_IN.discard.every((state) => ['finalizing', 'done'].includes(state)));
  });

  it('derives the timeline from the recorded timestamps', () => {
    const at = (ms: number) => new Date(Date.UTC(2026, 10, 28, 0, 0, 0, ms)).toISOString();
    const record: MigrationRecord = {
      migrationId: 'm1',
      state: 'done',
      epoch: 1,
      container: 'web',
      destinationAgent: 'gcp',
      sourceAgent: 'azure',
      image: 'localhost/web:1',
      imageId: 'c'.repeat(64),
      approach: 'container',
      artifactLocation: { storeUrl: 'gs://b', prefix: 'migrations/m1/' },
      artifact: {
        storeUrl: 'gs://b',
        prefix: 'migrations/m1/',
        sizeBytes: 2048,
        sha256: 'a'.repeat(64),
        chunkCount: 1,
        manifestSha256: 'b'.repeat(64),
      },
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
      [
        ['plan+prepare', 100],
        ['checkpoint', 300],
        ['upload', 100],
        ['download tail', 100],
        ['restore', 300],
        ['finalize', 50],
      ],
    );
    assert.equal(timeline.totalMs, 950);
    assert.equal(timeline.frozenMs, 800);
    assert.equal(timeline.archiveBytes, 2048);
  });

  it('reads each state with what it must have, and failed records written before runningOn', () => {
    const at = new Date(Date.UTC(2026, 10, 28)).toISOString();
    const base = { migrationId: 'm2', epoch: 2, container: 'web', destinationAgent: 'gcp', times: { requestedAt: at }, updatedAt: at };
    const plan = {
      sourceAgent: 'azure',
      image: 'localhost/web:1',
      imageId: 'c'.repeat(64),
      approach: 'container',
      artifactLocation: { storeUrl: 'gs://b', prefix: 'migrations/m2/' },
    };
    // a planned state without its plan is not a record
    assert.ok(!MigrationRecord.safeParse({ ...base, state: 'preflight' }).success);
    assert.ok(MigrationRecord.safeParse({ ...base, state: 'preflight', ...plan }).success);
    // rolling back needs its failure
    assert.ok(!MigrationRecord.safeParse({ ...base, state: 'rolling-back', ...plan, rollback: { destinationClear: false } }).success);
    // an earlier version's failed record: runningOn is what its migration.failed said
    const failure = { phase: 'checkpoint', code: 'agent-restarted', reason: 'x' };
    const resumed = MigrationRecord.parse({ ...base, state: 'failed', ...plan, failure });
    assert.ok(resumed.state === 'failed' && resumed.runningOn === 'azure');
    assert.deepEqual(whereItRuns(resumed), { agent: 'azure', frozen: false });
    const lost = MigrationRecord.parse({
      ...base,
      state: 'failed',
      ...plan,
      failure: { ...failure, phase: 'rollback', code: 'resume-failed' },
    });
    assert.ok(lost.state === 'failed' && lost.runningOn === null);
    const refused = MigrationRecord.parse({
      ...base,
      state: 'failed',
      failure: { phase: 'plan', code: 'container-not-found', reason: 'x' },
    });
    assert.ok(refused.state === 'failed' && refused.runningOn === null && refused.sourceAgent === undefined);
  });
});
