import { randomUUID } from 'node:crypto';
import { MultiBar, type SingleBar } from 'cli-progress';
import { makeEvent, type Approach, type UmsEvent } from '../core/events.js';
import { timelineOf } from '../core/migration.js';
import type { MigrationMode } from '../core/migration-mode.js';
import type { PlanRequest } from '../core/migration-plan.js';
import { connectCli } from './bus-connection.js';
import { bytes, formatTimeline, millis } from './format.js';
import { describeProgress, TransferProgress } from './progress-model.js';

export interface MigrateOptions {
  to: string;
  from?: string;
  json?: boolean;
  nats?: string;
  timeout: string;
  /** A caller-chosen migration id: repeating a request with the same id does not start a second migration. */
  id?: string;
  approach?: Approach;
  mode?: MigrationMode;
  /** Milliseconds. */
  frozenBudget?: number;
}

/** What a request says besides its container, from the options `plan` and `migrate` share. */
export function requestChoices(
  options: Pick<MigrateOptions, 'to' | 'from' | 'approach' | 'mode' | 'frozenBudget'>,
): Pick<PlanRequest, 'destinationAgent' | 'sourceAgent' | 'approach' | 'mode' | 'frozenBudgetMs'> {
  return {
    destinationAgent: options.to,
    ...(options.from ? { sourceAgent: options.from } : {}),
    ...(options.approach ? { approach: options.approach } : {}),
    ...(options.mode ? { mode: options.mode } : {}),
    ...(options.frozenBudget !== undefined ? { frozenBudgetMs: options.frozenBudget } : {}),
  };
}

/**
 * `ums migrate`: publishes the request, follows the migration's events with a live display until it
 * ends, prints the timeline. Exit code 0 when the service runs at the destination, 1 when the
 * migration failed (the reason says where the service runs), 2 when it did not end in time.
 */
export async function migrate(container: string, options: MigrateOptions): Promise<number> {
  const bus = await connectCli(options.nats);
  const migrationId = options.id ?? randomUUID();
  const timeoutMs = Number(options.timeout) * 1000;
  const live = !options.json && process.stderr.isTTY;
  // Two rows, upload and download, which overlap in time: one bar for both made the count jump back and forth.
  const transfers = { upload: new TransferProgress(), download: new TransferProgress() };
  let bars: { multi: MultiBar; rows: Partial<Record<keyof typeof transfers, SingleBar>> } | undefined;
  const say = (line: string) => {
    if (options.json) return;
    // Above the live bars, which would otherwise be drawn over.
    if (bars) bars.multi.log(`${line}\n`);
    else process.stderr.write(`${line}\n`);
  };
  const stopBar = () => {
    bars?.multi.stop();
    bars = undefined;
  };
  const progress = (which: keyof typeof transfers) => {
    if (!live) return;
    bars ??= {
      multi: new MultiBar({ format: '  {label} [{bar}] {pct} {size} {rate} {eta}', hideCursor: true, clearOnComplete: true }),
      rows: {},
    };
    const view = transfers[which].view();
    // The bar's own fill: empty while the total is unknown, rather than full.
    const [value, total] = view.total === undefined ? [0, 1] : [view.done, view.total];
    const { percent, ...words } = describeProgress(view);
    const payload = { label: which === 'upload' ? 'checkpoint -> store ' : 'store -> destination', pct: percent, ...words };
    const row = (bars.rows[which] ??= bars.multi.create(total, value, payload));
    row.setTotal(total);
    row.update(value, payload);
  };
  const expectSize = (bytesExpected: number | undefined) => {
    transfers.upload.expect(bytesExpected);
    transfers.download.expect(bytesExpected);
  };
  const exactSize = (bytesExact: number | undefined) => {
    transfers.upload.exactTotal(bytesExact);
    transfers.download.exactTotal(bytesExact);
  };

  let exitCode = 2;
  let result: unknown;
  let approach: Approach | undefined;
  let mode: MigrationMode | undefined;
  const onEvent = (event: UmsEvent): 'stop' | void => {
    switch (event.name) {
      case 'migration.requested':
        say(`migration ${migrationId}: ${container} -> ${event.data.destinationAgent}`);
        return;
      case 'migration.planned':
        approach = event.data.approach;
        say(
          `  planned: ${event.data.sourceAgent} -> ${event.data.destinationAgent} (${event.data.approach} level, image ${event.data.image})`,
        );
        if (event.data.approachReason) say(`    why: ${event.data.approachReason}`);
        mode = event.data.mode;
        if (event.data.modeReason) say(`    mode: ${event.data.modeReason}`);
        if (event.data.archiveEstimate) {
          const { bytes: frozenBytes, beforeFreezeBytes = 0, basis } = event.data.archiveEstimate;
          // The stream carries the volumes copied before the freeze too: they count in the transfer.
          expectSize(frozenBytes + beforeFreezeBytes);
          say(`    archive ~${bytes(frozenBytes)}: ${basis}`);
        }
        return;
      case 'restore.image-needed':
        say(
          `  ${event.data.agent} lacks the image (id ${event.data.imageId.replace(/^sha256:/, '').slice(0, 12)}): the source ships it first, the service runs on`,
        );
        return;
      case 'source.image-uploaded':
        say(
          `  image stored: ${bytes(event.data.artifact.sizeBytes)} in ${event.data.artifact.chunkCount} chunk(s) in ${millis(Date.parse(event.data.uploadedAt) - Date.parse(event.data.startedAt))}`,
        );
        return;
      case 'restore.prepared':
        if (event.data.imageLoaded)
          say(
            `  image loaded on ${event.data.agent}, its id checked${event.data.imageLoaded.tags.length > 0 ? ` (${event.data.imageLoaded.tags.join(', ')})` : ''}`,
          );
        say(`  destination ready; freezing on the source`);
        return;
      case 'checkpoint.progress':
        transfers.upload.observe(event.data.bytes);
        progress('upload');
        return;
      case 'checkpoint.uploaded':
        exactSize(event.data.artifact.sizeBytes);
        transfers.upload.observe(event.data.artifact.sizeBytes);
        progress('upload');
        if (transfers.download.view().done > 0) progress('download');
        say(
          `  checkpoint uploaded: ${bytes(event.data.artifact.sizeBytes)} in ${event.data.artifact.chunkCount} chunk(s), ${millis(Date.parse(event.data.uploadedAt) - Date.parse(event.data.checkpointStartedAt))} after the freeze`,
        );
        return;
      case 'restore.progress':
        // 0 is the destination not knowing the size yet (the source has not reported it), not an empty archive.
        transfers.download.exactTotal(event.data.totalBytes);
        transfers.download.observe(event.data.bytes);
        progress('download');
        return;
      case 'restore.completed':
        stopBar();
        say(`  restored on ${event.data.agent} in ${millis(Date.parse(event.data.restoredAt) - Date.parse(event.data.downloadedAt))}`);
        return;
      case 'restore.pages-arrived':
        say(`  every page arrived on ${event.data.agent}: ${bytes(event.data.bytes)}`);
        return;
      case 'restore.pages-lost':
        say(`  page stream lost on ${event.data.agent}: ${event.data.reason}`);
        return;
      case 'checkpoint.failed':
      case 'restore.failed':
        stopBar();
        say(`  ${event.name.replace('.', ' ')} on ${event.data.agent}: ${event.data.reason}`);
        return;
      case 'source.discarded':
        say(`  source copy removed from ${event.data.agent}`);
        return;
      case 'source.resumed':
        say(
          mode === 'post-copy'
            ? `  service started afresh on ${event.data.agent} (post-copy: the pages that had not moved are lost)`
            : `  service resumed on ${event.data.agent} from its kept checkpoint`,
        );
        return;
      case 'source.resume-failed':
        say(`  resuming on ${event.data.agent} failed: ${event.data.reason}`);
        return;
      case 'migration.completed':
        exitCode = 0;
        result = { state: 'done', approach, ...event.data };
        say(`done: ${container} runs on ${event.data.destinationAgent}\n${formatTimeline(event.data.timeline)}`);
        return 'stop';
      case 'migration.failed':
        exitCode = 1;
        result = { state: 'failed', approach, ...event.data };
        say(`failed (${event.data.phase}, ${event.data.code}): ${event.data.reason}`);
        say(verdict(event.data.phase, event.data.runningOn));
        return 'stop';
    }
  };

  try {
    const subscription = await bus.followMigration(migrationId, onEvent);
    await bus.publishEvent(
      makeEvent('migration.requested', '/ums/cli', {
        migrationId,
        container,
        ...requestChoices(options),
        requestedBy: process.env.USER ?? 'cli',
      }),
    );
    const timer = setTimeout(() => void subscription.stop(), timeoutMs);
    await subscription.closed;
    clearTimeout(timer);
    stopBar();
    if (exitCode === 2) {
      const record = await bus.migrations.get(migrationId);
      result = { migrationId, state: record?.value.state ?? 'unknown', timeline: record ? timelineOf(record.value) : undefined };
      say(
        `migration ${migrationId} did not end within ${options.timeout} s (state: ${record?.value.state ?? 'unknown'}); "ums status ${migrationId}" follows it`,
      );
    }
    if (options.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return exitCode;
  } finally {
    await bus.close();
  }
}

/** Where the service is after a failed migration, told so that it is true for a refusal as for a rollback. */
function verdict(phase: string, runningOn: string | null): string {
  if (phase === 'plan') {
    // Refused by the planner: nothing was asked of any agent.
    return runningOn ? `nothing was frozen: the service runs untouched on ${runningOn}` : 'nothing was frozen or changed on any host';
  }
  return runningOn ? `the service runs on ${runningOn}` : 'the service is NOT running anywhere: see "ums status"';
}
