import { makeCommand, type EventOf } from '../core/events.js';
import type { MigrationRecord } from '../core/migration.js';
import type { FunctionContext } from './function-context.js';
import { advance, completeMigration, failMigration, recordOf } from './migration-transitions.js';

export type FinalizeTrigger = EventOf<
  'restore.completed' | 'restore.failed' | 'checkpoint.failed' | 'source.discarded' | 'source.resumed' | 'source.resume-failed'
>;

/**
 * Ends a migration. The source's checkpointed copy is the only safe copy until the destination
 * confirms, so: on restore.completed the source is told to discard it; on any failure after the
 * freeze it is told to resume it; the migration is done or failed only once the source confirms.
 */
export async function finalize(event: FinalizeTrigger, ctx: FunctionContext): Promise<void> {
  const { bus } = ctx;
  const record = await recordOf(event, ctx);
  if (!record) return;
  const { state, sourceAgent, destinationAgent } = record.value;
  const fromSource = event.data.agent === sourceAgent;
  const fromDestination = event.data.agent === destinationAgent;

  switch (event.name) {
    case 'restore.completed': {
      if (!fromDestination) return;
      if (state === 'finalizing') return commandSource('discard', record.value, ctx);
      // checkpointing too: this may overtake checkpoint.uploaded, which goes to another function.
      if (state !== 'restoring' && state !== 'checkpointing') return;
      const next = await advance(bus, record, 'finalizing', (current) => ({
        times: { ...current.times, downloadedAt: event.data.downloadedAt, restoredAt: event.data.restoredAt },
      }));
      if (next) await commandSource('discard', next.value, ctx);
      else await finalize(event, ctx);
      return;
    }
    case 'source.discarded': {
      if (!fromSource || state !== 'finalizing') return;
      const done = await completeMigration(bus, record, ctx.source);
      if (done) await deleteArtifact(done.value, ctx);
      return;
    }
    case 'checkpoint.failed':
    case 'restore.failed': {
      if (!(event.name === 'checkpoint.failed' ? fromSource : fromDestination)) return;
      const phase = event.name === 'checkpoint.failed' ? 'checkpoint' : 'restore';
      const failure = { phase, code: event.data.code, reason: event.data.reason };
      if (state === 'rolling-back') return commandSource('resume', record.value, ctx);
      // Nothing was frozen yet: the destination refused to prepare, or the source failed before the
      // freeze. The service never stopped running at the source.
      const frozen = event.name === 'checkpoint.failed' ? event.data.containerCheckpointed : state !== 'preparing';
      if (!frozen && (state === 'preparing' || state === 'checkpointing')) {
        return failMigration(bus, record, ctx.source, failure, sourceAgent ?? null);
      }
      if (state !== 'checkpointing' && state !== 'restoring') return;
      const next = await advance(bus, record, 'rolling-back', () => ({ failure }));
      if (next) await commandSource('resume', next.value, ctx);
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

async function commandSource(verb: 'discard' | 'resume', record: MigrationRecord, ctx: FunctionContext): Promise<void> {
  if (!record.sourceAgent) throw new Error(`migration ${record.migrationId} has no source agent to ${verb}`);
  await ctx.bus.sendCommand(
    record.sourceAgent,
    makeCommand(verb, ctx.source, { migrationId: record.migrationId, container: record.container }, `${record.migrationId}.${verb}`),
  );
  ctx.log.info({ migrationId: record.migrationId, sourceAgent: record.sourceAgent }, `source commanded to ${verb} its kept checkpoint`);
}

/** The archive holds process memory: delete it as soon as the migration has ended either way. */
async function deleteArtifact(record: MigrationRecord, ctx: FunctionContext): Promise<void> {
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
