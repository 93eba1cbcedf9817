import { z } from 'zod';
import { AgentId, Approach, Artifact, ArtifactLocation, ContainerName, FailureCode, MigrationId, type Timeline } from './events.js';

/**
 * The migration record: the only state of a migration, kept in the JetStream KV bucket `ums_migrations`
 * and advanced by the stateless functions with compare-and-set on the entry's revision.
 *
 * The happy path, one event at a time (each arrow is one function invocation):
 *
 *   requested --plan-migration--> preparing              (destination told to prepare: name, image, disk)
 *   preparing --plan-restore--> checkpointing             (on restore.prepared: first chunk URLs signed for the
 *                                                          destination, then the source told to checkpoint)
 *   checkpointing --plan-restore--> restoring             (on checkpoint.uploaded; the destination has been
 *                                                          fetching chunks since the first was announced)
 *   checkpointing|restoring --finalize--> finalizing      (on restore.completed: source told to discard its copy)
 *   finalizing --finalize--> done                         (on source.discarded)
 *
 * and the way back, which keeps the service running exactly once:
 *
 *   checkpointing|restoring --finalize--> rolling-back    (on checkpoint.failed / restore.failed: source told to resume)
 *   rolling-back --finalize--> failed                     (on source.resumed, or source.resume-failed: runningOn null)
 *   requested|preparing --> failed                        (refused before anything was frozen)
 *
 * restore.completed may overtake checkpoint.uploaded (they reach different functions), hence
 * checkpointing -> finalizing.
 */
export const MigrationState = z.enum(['requested', 'preparing', 'checkpointing', 'restoring', 'finalizing', 'done', 'rolling-back', 'failed']);
export type MigrationState = z.infer<typeof MigrationState>;

const allowed: Record<MigrationState, readonly MigrationState[]> = {
  requested: ['preparing', 'failed'],
  preparing: ['checkpointing', 'failed'],
  checkpointing: ['restoring', 'finalizing', 'rolling-back', 'failed'],
  restoring: ['finalizing', 'rolling-back'],
  finalizing: ['done'],
  'rolling-back': ['failed'],
  done: [],
  failed: [],
};

export function canTransition(from: MigrationState, to: MigrationState): boolean {
  return allowed[from].includes(to);
}

export const isTerminal = (state: MigrationState): boolean => state === 'done' || state === 'failed';

const isoTime = z.iso.datetime({ offset: true });

export const MigrationRecord = z.object({
  migrationId: MigrationId,
  state: MigrationState,
  container: ContainerName,
  image: z.string().optional(),
  imageId: z.string().optional(),
  sourceAgent: AgentId.optional(),
  destinationAgent: AgentId,
  approach: Approach.optional(),
  artifactLocation: ArtifactLocation.optional(),
  artifact: Artifact.optional(),
  failure: z.object({ phase: z.string(), code: FailureCode, reason: z.string() }).optional(),
  /** Timestamps of each step, for the timeline. */
  times: z.object({
    requestedAt: isoTime,
    plannedAt: isoTime.optional(),
    preparedAt: isoTime.optional(),
    checkpointStartedAt: isoTime.optional(),
    firstByteAt: isoTime.optional(),
    uploadedAt: isoTime.optional(),
    downloadedAt: isoTime.optional(),
    restoredAt: isoTime.optional(),
    finishedAt: isoTime.optional(),
  }),
  updatedAt: isoTime,
});
export type MigrationRecord = z.infer<typeof MigrationRecord>;

/** Held in `ums_locks` under `<agent>.<container>` while a container migrates: one migration at a time. */
export const MigrationLock = z.object({ migrationId: MigrationId });
export const lockKey = (agentId: string, container: string): string => `${agentId}.${container}`;

const ms = (from: string | undefined, to: string | undefined): number | undefined =>
  from && to ? Math.max(0, Date.parse(to) - Date.parse(from)) : undefined;

/**
 * The per-phase timeline of a migration. Phases are measured between the timestamps that the
 * functions and agents recorded; on one machine their clocks agree, across clouds they should be
 * NTP-synchronised (skew shows up in the short phases, never in total or frozen time, which are each
 * measured on one clock... except frozen, which spans source and destination clocks).
 */
export function timelineOf(record: MigrationRecord): Timeline {
  const t = record.times;
  const finishedAt = t.finishedAt ?? new Date().toISOString();
  const phases: Array<[string, number | undefined]> = [
    ['plan+prepare', ms(t.requestedAt, t.checkpointStartedAt)],
    ['checkpoint', ms(t.checkpointStartedAt, t.firstByteAt)],
    ['upload', ms(t.firstByteAt, t.uploadedAt)],
    // The destination fetches chunks while they upload; this is what remains after the last one landed.
    ['download tail', ms(t.uploadedAt, t.downloadedAt)],
    ['restore', ms(t.downloadedAt, t.restoredAt)],
    ['finalize', ms(t.restoredAt, finishedAt)],
  ];
  return {
    requestedAt: t.requestedAt,
    finishedAt,
    phases: phases.filter((p): p is [string, number] => p[1] !== undefined).map(([name, value]) => ({ name, ms: value })),
    totalMs: ms(t.requestedAt, finishedAt) ?? 0,
    frozenMs: ms(t.checkpointStartedAt, t.restoredAt) ?? 0,
    archiveBytes: record.artifact?.sizeBytes ?? 0,
  };
}
