import { makeCommand, type EventOf } from '../core/events.js';
import type { MigrationRecord } from '../core/migration.js';
import type { FunctionContext } from './function-context.js';
import { advance } from './migration-transitions.js';

/**
 * On checkpoint.uploaded: signs a short-lived read-only URL for the archive in the source's cloud, so
 * the destination can fetch it without that cloud's credentials, and commands the destination to restore.
 */
export async function planRestore(event: EventOf<'checkpoint.uploaded'>, ctx: FunctionContext): Promise<void> {
  const { bus, log } = ctx;
  const uploaded = event.data;
  const record = await bus.migrations.get(uploaded.migrationId);
  if (!record) {
    log.warn({ migrationId: uploaded.migrationId }, 'checkpoint.uploaded for an unknown migration; ignored');
    return;
  }
  const expected = record.value.artifactLocation;
  if (record.value.sourceAgent !== uploaded.agent || expected?.storeUrl !== uploaded.artifact.storeUrl || expected.key !== uploaded.artifact.key) {
    log.warn({ migrationId: uploaded.migrationId, agent: uploaded.agent }, 'checkpoint.uploaded does not match the plan (agent or location); ignored');
    return;
  }
  if (record.value.state === 'restoring') {
    await commandRestore(record.value, ctx);
    return;
  }
  if (record.value.state !== 'checkpointing') return;

  const next = await advance(bus, record, 'restoring', (current) => ({
    artifact: uploaded.artifact,
    times: {
      ...current.times,
      checkpointStartedAt: uploaded.checkpointStartedAt,
      firstByteAt: uploaded.firstByteAt,
      uploadedAt: uploaded.uploadedAt,
      restoreCommandedAt: new Date().toISOString(),
    },
  }));
  if (next) await commandRestore(next.value, ctx);
}

async function commandRestore(record: MigrationRecord, ctx: FunctionContext): Promise<void> {
  const { artifact, image, imageId } = record;
  if (!artifact || !image || !imageId) throw new Error(`migration ${record.migrationId} is restoring but has no artifact`);
  const store = ctx.openStore(artifact.storeUrl);
  const signed = await store.signedReadUrl(artifact.key, ctx.signedUrlTtlSeconds);
  await ctx.bus.sendCommand(
    record.destinationAgent,
    makeCommand(
      'restore',
      ctx.source,
      {
        migrationId: record.migrationId,
        container: record.container,
        image,
        imageId,
        artifact: { ...artifact, signedUrl: signed.url, expiresAt: signed.expiresAt },
      },
      `${record.migrationId}.restore`,
    ),
  );
  ctx.log.info({ migrationId: record.migrationId, destination: record.destinationAgent, expiresAt: signed.expiresAt }, 'destination commanded to restore');
}
