import { randomUUID } from 'node:crypto';
import { chunkKey, manifestKey, URL_BATCH } from '../core/checkpoint-artifact.js';
import { makeCommand, type EventOf } from '../core/events.js';
import { isInFlight, type MigrationRecord } from '../core/migration.js';
import type { FunctionContext } from './function-context.js';
import { advance, annotate, recordOf } from './migration-transitions.js';

export type PlanRestoreTrigger = EventOf<'restore.prepared' | 'restore.urls-needed' | 'checkpoint.uploaded' | 'restore.started'>;

/**
 * Lets the destination read the source cloud's archive without that cloud's credentials: it signs
 * short-lived read-only URLs for the manifest and the chunks, in batches, as the destination asks.
 *
 * - restore.prepared: the destination is ready. Sign the manifest and the first batch of chunk keys
 *   (URLs can be signed before the objects exist), then tell the source to freeze: nothing of the
 *   planning is left inside the frozen window.
 * - restore.urls-needed: sign the next batch.
 * - checkpoint.uploaded: record the artifact; the destination is already fetching.
 * - restore.started: the destination has every verified byte and its engine is restoring.
 */
export async function planRestore(event: PlanRestoreTrigger, ctx: FunctionContext): Promise<void> {
  const { bus, log } = ctx;
  const record = await recordOf(event, ctx);
  if (!record) return;
  const { state, sourceAgent, destinationAgent } = record.value;
  switch (event.name) {
    case 'restore.prepared': {
      if (event.data.agent !== destinationAgent) return;
      if (state === 'checkpointing') return commandCheckpoint(record.value, ctx);
      if (state !== 'preflight') return;
      await sendUrls(record.value, 0, URL_BATCH, ctx, `${record.value.migrationId}.chunk-urls.0`);
      const next = await advance(bus, record, 'checkpointing', (current) => ({ times: { ...current.times, preparedAt: event.time } }));
      if (next) await commandCheckpoint(next.value, ctx);
      return;
    }
    case 'restore.urls-needed': {
      if (event.data.agent !== destinationAgent || !isInFlight(state)) return;
      // Requests are not deduplicated: an agent that restarted asks again for what it lost.
      await sendUrls(record.value, event.data.fromIndex, event.data.count, ctx, randomUUID());
      return;
    }
    case 'checkpoint.uploaded': {
      const uploaded = event.data;
      const expected = record.value.artifactLocation;
      if (uploaded.agent !== sourceAgent || expected?.storeUrl !== uploaded.artifact.storeUrl || expected.prefix !== uploaded.artifact.prefix) {
        log.warn({ migrationId: uploaded.migrationId, agent: uploaded.agent }, 'checkpoint.uploaded does not match the plan (agent or location); ignored');
        return;
      }
      const patch = (current: MigrationRecord): Partial<MigrationRecord> => ({
        artifact: uploaded.artifact,
        times: { ...current.times, checkpointStartedAt: uploaded.checkpointStartedAt, firstByteAt: uploaded.firstByteAt, uploadedAt: uploaded.uploadedAt },
      });
      // The destination may have finished first (restore.completed reached finalize before this
      // reached us): then only keep the upload's facts for the timeline. A lost race: look again.
      if (record.value.artifact) return;
      const changed = state === 'checkpointing' ? await advance(bus, record, 'uploaded', patch) : await annotate(bus, record, patch);
      if (!changed) await planRestore(event, ctx);
      return;
    }
    case 'restore.started': {
      if (event.data.agent !== destinationAgent) return;
      if (state !== 'checkpointing' && state !== 'uploaded') return;
      const next = await advance(bus, record, 'restoring', (current) => ({ times: { ...current.times, downloadedAt: event.data.downloadedAt } }));
      if (!next) await planRestore(event, ctx);
      return;
    }
  }
}

async function commandCheckpoint(record: MigrationRecord, ctx: FunctionContext): Promise<void> {
  const { migrationId, epoch, container, sourceAgent, artifactLocation } = record;
  if (!sourceAgent || !artifactLocation) throw new Error(`migration ${migrationId} is checkpointing but has no plan`);
  await ctx.bus.sendCommand(sourceAgent, makeCommand('checkpoint', ctx.source, { migrationId, epoch, approach: record.approach ?? 'container', container, artifact: artifactLocation }, `${migrationId}.checkpoint`));
  ctx.log.info({ migrationId, sourceAgent }, 'destination ready; source commanded to checkpoint');
}

async function sendUrls(record: MigrationRecord, fromIndex: number, count: number, ctx: FunctionContext, commandId: string): Promise<void> {
  const location = record.artifactLocation;
  if (!location) throw new Error(`migration ${record.migrationId} has no artifact location`);
  const store = await ctx.openStore(location.storeUrl);
  const indexes = Array.from({ length: Math.min(count, URL_BATCH) }, (_, i) => fromIndex + i);
  const [manifest, ...chunks] = await Promise.all([
    fromIndex === 0 ? store.signedReadUrl(manifestKey(location.prefix), ctx.signedUrlTtlSeconds) : undefined,
    ...indexes.map((index) => store.signedReadUrl(chunkKey(location.prefix, index), ctx.signedUrlTtlSeconds)),
  ]);
  const signed = chunks.filter((c) => c !== undefined);
  const expiresAt = signed.map((c) => c.expiresAt).sort()[0] ?? new Date().toISOString();
  await ctx.bus.sendCommand(
    record.destinationAgent,
    makeCommand(
      'chunk-urls',
      ctx.source,
      {
        migrationId: record.migrationId,
        epoch: record.epoch,
        ...(manifest ? { manifestUrl: manifest.url } : {}),
        chunks: signed.map((c, i) => ({ index: fromIndex + i, url: c.url })),
        expiresAt,
      },
      commandId,
    ),
  );
  ctx.log.info({ migrationId: record.migrationId, fromIndex, count: signed.length, expiresAt }, 'signed chunk URLs sent to the destination');
}
