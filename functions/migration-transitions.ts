import { RevisionConflictError, type EventBus, type Versioned } from '../core/event-bus.js';
import { makeEvent, type FailureCode, type UmsEvent } from '../core/events.js';
import { canTransition, lockKey, PHASE_DEADLINE_MS, timelineOf, type MigrationRecord, type MigrationState } from '../core/migration.js';
import type { FunctionContext } from './function-context.js';

/** The record an event is about; an event for an unknown migration is logged and ignored. */
export async function recordOf(event: UmsEvent, ctx: FunctionContext): Promise<Versioned<MigrationRecord> | undefined> {
  const record = await ctx.bus.migrations.get(event.data.migrationId);
  if (!record) ctx.log.warn({ migrationId: event.data.migrationId, event: event.type }, 'event for an unknown migration; ignored');
  return record;
}

const deadlineScale = (): number => {
  const scale = Number(process.env.UMS_DEADLINE_SCALE ?? 1);
  return Number.isFinite(scale) && scale > 0 ? scale : 1;
};

/** When the supervisor steps in if a migration stays in `state` from now on. */
export const deadlineFor = (state: MigrationState, from = Date.now()): string | undefined =>
  PHASE_DEADLINE_MS[state] > 0 ? new Date(from + PHASE_DEADLINE_MS[state] * deadlineScale()).toISOString() : undefined;

/**
 * Moves a migration record from one state to the next with compare-and-set on its KV revision, so
 * that two concurrent invocations (a redelivery racing the original) cannot both advance it: the
 * loser gets `undefined` and must look again or do nothing further. Each state gets its deadline;
 * turning back (rolling-back, failed) raises the epoch, which fences off every command issued before.
 */
export function advance(
  bus: EventBus,
  current: Versioned<MigrationRecord>,
  to: MigrationState,
  patch: (record: MigrationRecord) => Partial<MigrationRecord> = () => ({}),
): Promise<Versioned<MigrationRecord> | undefined> {
  const from = current.value.state;
  if (!canTransition(from, to)) {
    throw new Error(`migration ${current.value.migrationId}: no transition from ${from} to ${to}`);
  }
  const turnsBack = to === 'rolling-back' || (to === 'failed' && from !== 'rolling-back');
  const { deadlineAt: _previous, ...merged } = merge(current.value, patch);
  const deadlineAt = deadlineFor(to);
  return write(bus, current, {
    ...merged,
    state: to,
    epoch: turnsBack ? current.value.epoch + 1 : current.value.epoch,
    ...(deadlineAt ? { deadlineAt } : {}),
  });
}

/** Records facts without a change of state (compare-and-set too); undefined if the record moved on. */
export function annotate(
  bus: EventBus,
  current: Versioned<MigrationRecord>,
  patch: (record: MigrationRecord) => Partial<MigrationRecord>,
): Promise<Versioned<MigrationRecord> | undefined> {
  return write(bus, current, merge(current.value, patch));
}

function merge(record: MigrationRecord, patch: (record: MigrationRecord) => Partial<MigrationRecord>): MigrationRecord {
  const changes = patch(record);
  return { ...record, ...changes, times: { ...record.times, ...changes.times }, updatedAt: new Date().toISOString() };
}

async function write(bus: EventBus, current: Versioned<MigrationRecord>, next: MigrationRecord): Promise<Versioned<MigrationRecord> | undefined> {
  try {
    return { value: next, revision: await bus.migrations.update(next.migrationId, next, current.revision) };
  } catch (error) {
    if (error instanceof RevisionConflictError) return undefined;
    throw error;
  }
}

/**
 * Ends a migration as failed: the record says why and where the service runs, the container's lock is
 * released, and a migration.failed event tells the operator.
 */
export async function failMigration(
  bus: EventBus,
  current: Versioned<MigrationRecord>,
  source: string,
  failure: { phase: string; code: FailureCode; reason: string },
  runningOn: string | null,
): Promise<void> {
  const done = await advance(bus, current, 'failed', () => ({ failure, times: { ...current.value.times, finishedAt: new Date().toISOString() } }));
  if (!done) return;
  await releaseLock(bus, done.value);
  await bus.publishEvent(
    makeEvent(
      'migration.failed',
      source,
      { migrationId: done.value.migrationId, container: done.value.container, ...failure, runningOn },
      `${done.value.migrationId}.failed`,
    ),
  );
}

export async function completeMigration(bus: EventBus, current: Versioned<MigrationRecord>, source: string): Promise<Versioned<MigrationRecord> | undefined> {
  const done = await advance(bus, current, 'done', () => ({ times: { ...current.value.times, finishedAt: new Date().toISOString() } }));
  if (!done) return undefined;
  await releaseLock(bus, done.value);
  const record = done.value;
  await bus.publishEvent(
    makeEvent(
      'migration.completed',
      source,
      {
        migrationId: record.migrationId,
        container: record.container,
        sourceAgent: record.sourceAgent ?? '',
        destinationAgent: record.destinationAgent,
        timeline: timelineOf(record),
      },
      `${record.migrationId}.completed`,
    ),
  );
  return done;
}

async function releaseLock(bus: EventBus, record: MigrationRecord): Promise<void> {
  if (!record.sourceAgent) return;
  const key = lockKey(record.sourceAgent, record.container);
  const lock = await bus.locks.get(key);
  if (lock?.value.migrationId === record.migrationId) await bus.locks.delete(key);
}
