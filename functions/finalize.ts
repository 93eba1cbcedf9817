import type { Versioned } from '../core/event-bus.js';
import { makeCommand, type EventOf, type FailureCode } from '../core/events.js';
import { isInFlight, type MigrationRecord } from '../core/migration.js';
import type { FunctionContext } from './function-context.js';
import { advance, annotate, completeMigration, failMigration, recordOf } from './migration-transitions.js';

export type FinalizeTrigger = EventOf<
  | 'restore.completed'
  | 'restore.failed'
  | 'restore.aborted'
  | 'checkpoint.failed'
  | 'source.discarded'
  | 'source.resumed'
  | 'source.resume-failed'
>;

export interface Failure {
  phase: string;
  code: FailureCode;
  reason: string;
}

/**
 * Ends a migration. The source's checkpointed copy is the only safe copy until the destination
 * confirms, so: on restore.completed the source is told to discard it; on any failure after the
 * freeze the migration rolls back, and the source resumes its copy only once the destination has
 * confirmed it holds none (restore.aborted). The migration is done or failed only once the source
 * confirms. Every branch is idempotent: a redelivered or reordered event finds the record moved on and
 * does nothing, or repeats a command the bus deduplicates.
 */
export async function finalize(event: FinalizeTrigger, ctx: FunctionContext): Promise<void> {
  const { bus } = ctx;
  const record = await recordOf(event, ctx);
  if (!record) return;
  const { state, sourceAgent, destinationAgent } = record.value;
  const fromSource = event.data.agent === sourceAgent;
  const fromDestination = event.data.agent === destinationAgent;
  const again = () => finalize(event, ctx);

  switch (event.name) {
    case 'restore.completed': {
      if (!fromDestination) return;
      if (state === 'finalizing') return commandSource('discard', record.value, ctx);
      if (state === 'restored') return beginFinalizing(record, ctx, again);
      // A completion that arrives after the saga turned back: the abort already sent removes that copy.
      if (!isInFlight(state)) return;
      const restored = await advance(bus, record, 'restored', (current) => ({
        times: { ...current.times, downloadedAt: current.times.downloadedAt ?? event.data.downloadedAt, restoredAt: event.data.restoredAt },
      }));
      return restored ? beginFinalizing(restored, ctx, again) : again();
    }
    case 'source.discarded': {
      if (!fromSource || state !== 'finalizing') return;
      const done = await completeMigration(bus, record, ctx.source);
      if (done) await deleteArtifact(done.value, ctx);
      else await again();
      return;
    }
    case 'checkpoint.failed':
    case 'restore.failed': {
      if (!(event.name === 'checkpoint.failed' ? fromSource : fromDestination)) return;
      const failure = { phase: event.name === 'checkpoint.failed' ? 'checkpoint' : 'restore', code: event.data.code, reason: event.data.reason };
      // Nothing was frozen yet: the destination refused to prepare, or the source failed before the
      // freeze. The service never stopped running at the source.
      const frozen = event.name === 'checkpoint.failed' ? event.data.containerCheckpointed : state !== 'preflight';
      if (!frozen && (state === 'preflight' || state === 'checkpointing')) {
        await failMigration(bus, record, ctx.source, failure, sourceAgent ?? null);
        return;
      }
      if (!isInFlight(state)) return;
      if (!(await rollBack(record, failure, ctx))) await again();
      return;
    }
    case 'restore.aborted': {
      if (!fromDestination || state !== 'rolling-back') return;
      if (record.value.rollback?.destinationClear) return commandSource('resume', record.value, ctx);
      const clear = await annotate(bus, record, () => ({
        rollback: { destinationClear: true, how: event.data.removedRestoredCopy ? 'destination removed its restored copy' : 'destination confirmed it holds no copy' },
      }));
      if (clear) await commandSource('resume', clear.value, ctx);
      else await again();
      return;
    }
    case 'source.resumed': {
      if (!fromSource || state !== 'rolling-back') return;
      const failure = record.value.failure ?? { phase: 'restore', code: 'engine-failed' as const, reason: 'unknown' };
      await failMigration(bus, record, ctx.source, failure, sourceAgent ?? null);
      await deleteArtifact(record.value, ctx);
      return;
    }
    case 'source.resume-failed': {
      if (!fromSource || state !== 'rolling-back') return;
      const earlier = record.value.failure?.reason ?? 'the migration failed';
      await failMigration(
        bus,
        record,
        ctx.source,
        {
          phase: 'rollback',
          code: 'resume-failed',
          reason: `${earlier}; then resuming the kept checkpoint on "${sourceAgent}" failed too: ${event.data.reason}. The service is not running; the checkpoint is still on the source host and in the store.`,
        },
        null,
      );
      return;
    }
  }
}

/** restored -> finalizing: the destination runs the service; the source may now drop its copy. */
export async function beginFinalizing(record: Versioned<MigrationRecord>, ctx: FunctionContext, onConflict: () => Promise<void>): Promise<void> {
  const next = await advance(ctx.bus, record, 'finalizing');
  if (next) await commandSource('discard', next.value, ctx);
  else await onConflict();
}

/**
 * Turns the saga back: the epoch goes up (fencing off every forward command still in flight) and the
 * destination is told to abort. The source resumes only when the destination confirms (restore.aborted)
 * or, if it has gone silent, when the supervisor presumes it holds nothing. Returns false on a lost race.
 */
export async function rollBack(record: Versioned<MigrationRecord>, failure: Failure, ctx: FunctionContext): Promise<boolean> {
  const next = await advance(ctx.bus, record, 'rolling-back', () => ({ failure, rollback: { destinationClear: false } }));
  if (!next) return false;
  await commandDestinationAbort(next.value, ctx);
  ctx.log.warn({ migrationId: next.value.migrationId, epoch: next.value.epoch, code: failure.code, reason: failure.reason }, 'rolling back');
  return true;
}

/** `id` defaults to one per epoch (the bus drops repeats); the supervisor passes fresh ones to retry. */
export async function commandDestinationAbort(record: MigrationRecord, ctx: FunctionContext, id = `${record.migrationId}.abort.${record.epoch}`): Promise<void> {
  const { migrationId, epoch, container, destinationAgent } = record;
  await ctx.bus.sendCommand(destinationAgent, makeCommand('abort', ctx.source, { migrationId, epoch, approach: record.approach ?? 'container', container }, id));
}

export async function commandSource(
  verb: 'discard' | 'resume',
  record: MigrationRecord,
  ctx: FunctionContext,
  id = `${record.migrationId}.${verb}.${record.epoch}`,
): Promise<void> {
  if (!record.sourceAgent) throw new Error(`migration ${record.migrationId} has no source agent to ${verb}`);
  await ctx.bus.sendCommand(
    record.sourceAgent,
    makeCommand(verb, ctx.source, { migrationId: record.migrationId, epoch: record.epoch, approach: record.approach ?? 'container', container: record.container }, id),
  );
  ctx.log.info({ migrationId: record.migrationId, sourceAgent: record.sourceAgent }, `source commanded to ${verb} its kept checkpoint`);
}

/** The archive holds process memory: delete it as soon as the migration has ended either way. */
export async function deleteArtifact(record: MigrationRecord, ctx: FunctionContext): Promise<void> {
  const location = record.artifactLocation;
  if (!location || ctx.artifactRetention === 'bucket-lifecycle') return;
  try {
    const store = await ctx.openStore(location.storeUrl);
    for await (const object of store.list(location.prefix)) await store.delete(object.key);
  } catch (error) {
    // The bucket's lifecycle rule removes it later; a failed delete must not fail the migration.
    ctx.log.warn({ err: error, migrationId: record.migrationId }, 'could not delete the checkpoint archive; the bucket lifecycle rule will expire it');
  }
}
