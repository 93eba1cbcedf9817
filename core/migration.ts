import { z } from 'zod';
import { SealingPublicKey } from './checkpoint-sealing.js';
import { SigningPublicKey } from './signed-envelope.js';
import { ArchiveEstimate } from './migration-approach.js';
import { MigrationMode } from './migration-mode.js';
import { PageStreamGrant } from './page-stream.js';
import {
  AgentId,
  Approach,
  Artifact,
  ArtifactLocation,
  ContainerName,
  FailureCode,
  FrontmanId,
  MigrationId,
  RestoreRequirements,
  type CommandName,
  type Timeline,
} from './events.js';

/**
 * The migration record: the only state of a migration, kept in the JetStream KV bucket `ums_migrations`
 * and advanced by the stateless functions with compare-and-set on the entry's revision, so two
 * invocations racing on one migration (a redelivery and the original, say) cannot both advance it.
 *
 * Forward, one event at a time (each arrow is one function invocation):
 *
 *   requested     --plan-migration--> preflight      destination told to prepare (name free, image, disk)
 *   preflight     --plan-restore--->  checkpointing  on restore.prepared: first chunk URLs signed, source told to freeze
 *   checkpointing --plan-restore--->  uploaded       on checkpoint.uploaded (chunks stream to the destination meanwhile)
 *   uploaded      --plan-restore--->  restoring      on restore.started: every verified byte is with the destination's engine
 *   restoring     --finalize------->  restored       on restore.completed: the destination runs the service
 *   restored      --finalize------->  finalizing     source told to discard its kept checkpoint
 *
 * post-copy (core/migration-mode.ts) has one more state, in which both hosts are needed:
 *
 *   restoring     --finalize------->  pages-moving   on restore.completed: the destination runs, its pages follow
 *   pages-moving  --finalize------->  finalizing     on restore.pages-arrived: the source holds nothing needed now
 *   pages-moving  --finalize------->  rolling-back   on restore.pages-lost, a missed deadline or a silent agent: the
 *                                                    service's memory is lost; the destination's copy (waiting on
 *                                                    a missing page) is removed and the source restarts it cold
 *   finalizing    --finalize------->  done           on source.discarded (or the supervisor, if the source is gone)
 *
 * Back, which keeps the service running exactly once:
 *
 *   checkpointing|uploaded|restoring --> rolling-back   on a failure, a missed deadline or a silent agent;
 *                                                        the epoch goes up, the destination is told to abort
 *   rolling-back  --finalize-------->  rolling-back      on restore.aborted: the destination holds no copy; source told to resume
 *   rolling-back  --finalize-------->  failed            on source.resumed (or source.resume-failed: runningOn null)
 *   requested|preflight|checkpointing --> failed        refused or failed before anything was frozen
 *
 * The steps after checkpointing reach different functions and may be handled out of order (restore.completed
 * before checkpoint.uploaded), so a forward step may skip the ones in between; it never goes backwards.
 * Once `restored`, the destination has confirmed: the migration can only complete.
 */
export const MigrationState = z.enum([
  'requested',
  'preflight',
  'checkpointing',
  'uploaded',
  'restoring',
  'restored',
  'pages-moving',
  'finalizing',
  'done',
  'rolling-back',
  'failed',
]);
export type MigrationState = z.infer<typeof MigrationState>;

const allowed: Record<MigrationState, readonly MigrationState[]> = {
  requested: ['preflight', 'failed'],
  preflight: ['checkpointing', 'failed'],
  checkpointing: ['uploaded', 'restoring', 'restored', 'pages-moving', 'rolling-back', 'failed'],
  uploaded: ['restoring', 'restored', 'pages-moving', 'rolling-back'],
  restoring: ['restored', 'pages-moving', 'rolling-back'],
  restored: ['finalizing'],
  'pages-moving': ['finalizing', 'rolling-back'],
  finalizing: ['done'],
  'rolling-back': ['failed'],
  done: [],
  failed: [],
};

export function canTransition(from: MigrationState, to: MigrationState): boolean {
  return allowed[from].includes(to);
}

export const isTerminal = (state: MigrationState): boolean => state === 'done' || state === 'failed';

/** The states in which the source's container is frozen and the destination may be restoring it. */
export const isInFlight = (state: MigrationState): boolean => state === 'checkpointing' || state === 'uploaded' || state === 'restoring';

/**
 * How long each phase may last before the supervisor steps in (rolls back, or completes what the
 * destination confirmed). Generous: an agent that stops sending heartbeats is caught much sooner
 * (AGENT_LIVENESS_MS); these catch an agent that is alive but stuck. Scaled by UMS_DEADLINE_SCALE.
 */
export const PHASE_DEADLINE_MS: Record<MigrationState, number> = {
  requested: 60_000,
  preflight: 60_000,
  checkpointing: 600_000,
  uploaded: 600_000,
  restoring: 600_000,
  restored: 30_000,
  // Memory / the page rate (about 10 s per GiB on one machine, more across clouds): generous, since rolling
  // back from here loses the service's memory state.
  'pages-moving': 300_000,
  finalizing: 60_000,
  'rolling-back': 60_000,
  done: 0,
  failed: 0,
};

/**
 * How long the preflight may last once the destination asked for the image (restore.image-needed): the source
 * saves and stores it, the destination fetches and loads it, all while the service runs. Scaled like the rest.
 */
export const IMAGE_SHIPPING_DEADLINE_MS = 600_000;

/**
 * The states in which an agent still carries out a command issued at the record's epoch; anything else
 * is stale (a redelivery that outlived its purpose) and is refused. `prepare` stays valid through the
 * transfer so that a destination that restarted picks its restore up again.
 */
export const COMMAND_VALID_IN: Record<CommandName, readonly MigrationState[]> = {
  prepare: ['preflight', 'checkpointing', 'uploaded', 'restoring', 'pages-moving'],
  // The image moves before the destination is ready, while the service runs.
  'ship-image': ['preflight'],
  'chunk-urls': ['preflight', 'checkpointing', 'uploaded', 'restoring'],
  checkpoint: ['checkpointing'],
  discard: ['finalizing', 'done'],
  resume: ['rolling-back'],
  abort: ['rolling-back', 'failed'],
};

/** What a command's lifetime adds to the phases it may be acted in: clock skew, a queue behind a slow agent. */
export const COMMAND_GRACE_MS = 5 * 60_000;

/**
 * How long after it was issued a command may still be acted on (its signed expiry, core/signed-envelope.ts):
 * the grace plus the deadlines of every phase it stays valid in, scaled like them (UMS_DEADLINE_SCALE). A
 * command redelivered later than that is refused; by then the supervisor has acted on the phase's deadline.
 */
export function commandLifetimeMs(name: CommandName, deadlineScale = 1): number {
  return COMMAND_GRACE_MS + COMMAND_VALID_IN[name].reduce((sum, state) => sum + PHASE_DEADLINE_MS[state], 0) * deadlineScale;
}

const isoTime = z.iso.datetime({ offset: true });

const Times = z.object({
  requestedAt: isoTime,
  plannedAt: isoTime.optional(),
  preparedAt: isoTime.optional(),
  /** Volumes copied before the freeze (container level): when that copy began. */
  runningCopyStartedAt: isoTime.optional(),
  checkpointStartedAt: isoTime.optional(),
  firstByteAt: isoTime.optional(),
  uploadedAt: isoTime.optional(),
  downloadedAt: isoTime.optional(),
  restoredAt: isoTime.optional(),
  /** post-copy: the last page reached the destination. */
  pagesArrivedAt: isoTime.optional(),
  /** The destination's engine lacked the image (restore.image-needed); the source stored it; the destination loaded it. */
  imageNeededAt: isoTime.optional(),
  imageUploadedAt: isoTime.optional(),
  imageLoadedAt: isoTime.optional(),
  finishedAt: isoTime.optional(),
});
export type MigrationTimes = z.infer<typeof Times>;

export const MigrationFailure = z.object({ phase: z.string(), code: FailureCode, reason: z.string() });
export type MigrationFailure = z.infer<typeof MigrationFailure>;

/** Rolling back: whether the destination confirmed (or is presumed) to hold no copy, so the source may resume. */
const Rollback = z.object({ destinationClear: z.boolean(), how: z.string().optional() });

const count = z.number().int().nonnegative();
/**
 * The service's frontman (frontman/) in this migration, and its phases as it reported them: the source
 * freezes only once `drainedAt` is set; `released*` says where the held requests went.
 */
const FrontmanPhases = z.object({
  id: FrontmanId,
  drainedAt: isoTime.optional(),
  /** In-flight requests it let finish before it reported drained, and those its drain deadline cut. */
  finished: count.optional(),
  unfinished: count.optional(),
  held: count.optional(),
  expired: count.optional(),
  releasedTo: AgentId.nullable().optional(),
  releasedAt: isoTime.optional(),
});
export type FrontmanPhases = z.infer<typeof FrontmanPhases>;

/**
 * The container's image at the destination. The planner notes what the destination's last heartbeat said;
 * the destination's engine, asked when it prepares, decides: if it lacks the image, the source ships it
 * before the freeze (agents/image-transfer.ts).
 */
const ImageShipping = z.object({
  /** The destination's last heartbeat did not list the image's id when the migration was planned. */
  expected: z.boolean(),
  /** The destination's engine lacked it when asked (restore.image-needed): the source ships it. */
  needed: z.boolean().optional(),
  /** The shipped image as the source stored it (sealed chunks under the migration's image prefix). */
  artifact: Artifact.optional(),
  /** The names the shipped archive carried, restored with it at the destination. */
  tags: z.array(z.string()).optional(),
});
export type ImageShipping = z.infer<typeof ImageShipping>;

/** What every record has, whatever its state. */
const Base = {
  migrationId: MigrationId,
  /**
   * The fencing token every command carries (see commandData); raised when the saga turns back.
   * Defaulted only for records written before there were epochs.
   */
  epoch: z.number().int().positive().default(1),
  /** When the supervisor steps in if the current phase has not moved on. */
  deadlineAt: isoTime.optional(),
  container: ContainerName,
  destinationAgent: AgentId,
  /** Timestamps of each step, for the timeline. */
  times: Times,
  updatedAt: isoTime,
  frontman: FrontmanPhases.optional(),
};

/** The plan (plan-migration): set when the record leaves `requested`, kept from then on. */
const Plan = {
  sourceAgent: AgentId,
  image: z.string().min(1),
  imageId: z.string().min(1),
  approach: Approach,
  /** Why the planner chose that approach (core/migration-approach.ts), for `ums status`. */
  approachReason: z.string().optional(),
  /** The planner's expected archive size and what it rests on (core/migration-approach.ts). */
  archiveEstimate: ArchiveEstimate.optional(),
  /** Absent in records planned before there were modes: stop-and-copy. */
  mode: MigrationMode.optional(),
  modeReason: z.string().optional(),
  /** post-copy: the page stream's key, wrapped for each agent (core/page-stream.ts); only they can open it. */
  pageStream: z.object({ source: PageStreamGrant, destination: PageStreamGrant }).optional(),
  /** stop-and-copy, container level: the memory travels beside the engine's export (agents/memory/). */
  memoryBeside: z.boolean().optional(),
  /** The memory's bytes that did travel so, as the source reported them (a source without the shim sends none). */
  memoryBesideBytes: z.number().int().nonnegative().optional(),
  artifactLocation: ArtifactLocation,
  /** What the destination checks before the freeze. */
  requirements: RestoreRequirements.optional(),
  /** Absent in records planned before images were shipped (the destination then refused a missing one). */
  imageShipping: ImageShipping.optional(),
  /**
   * The destination's public key as it was registered at planning time: the checkpoint is sealed for it.
   * Optional only for records planned before checkpoints were sealed (their checkpoint is refused).
   */
  sealFor: SealingPublicKey.optional(),
  /**
   * The source's manifest-signing key as it was registered at planning time: the destination restores only
   * from a manifest it signed. Optional only for records planned before manifests were signed.
   */
  sourceManifestKey: SigningPublicKey.optional(),
};

/** Once the plan is made: the uploaded archive, which the destination's confirmation may overtake. */
const Planned = { ...Plan, artifact: Artifact.optional() };

const Requested = z.object({
  ...Base,
  state: z.literal('requested'),
  /** The source the request named, if it named one (the planner finds it otherwise). */
  sourceAgent: AgentId.optional(),
});
const Preflight = z.object({ ...Base, state: z.literal('preflight'), ...Plan });
const Checkpointing = z.object({ ...Base, state: z.literal('checkpointing'), ...Planned });
const Uploaded = z.object({ ...Base, state: z.literal('uploaded'), ...Plan, artifact: Artifact });
const Restoring = z.object({ ...Base, state: z.literal('restoring'), ...Planned });
const Restored = z.object({ ...Base, state: z.literal('restored'), ...Planned });
const PagesMoving = z.object({ ...Base, state: z.literal('pages-moving'), ...Planned });
const Finalizing = z.object({ ...Base, state: z.literal('finalizing'), ...Planned });
const Done = z.object({
  ...Base,
  state: z.literal('done'),
  ...Planned,
  /** Something left for an agent to do after the migration ended (e.g. a source that was gone must discard its copy). */
  pendingCleanup: z.string().optional(),
});
const RollingBack = z.object({ ...Base, state: z.literal('rolling-back'), ...Planned, failure: MigrationFailure, rollback: Rollback });
const Failed = z.object({
  ...Base,
  state: z.literal('failed'),
  // A migration refused before it was planned has no plan.
  ...z.object(Planned).partial().shape,
  failure: MigrationFailure,
  rollback: Rollback.optional(),
  /**
   * Where the service runs now: the source (untouched, or resumed), or null (nowhere: the operator must
   * act). Set by the saga when the migration fails, corrected by an agent's `service.running` report.
   */
  runningOn: AgentId.nullable(),
  /** How runningOn was learnt, when an agent's report corrected it. */
  runningOnReport: z.string().optional(),
});

const ByState = z.discriminatedUnion('state', [
  Requested,
  Preflight,
  Checkpointing,
  Uploaded,
  Restoring,
  Restored,
  PagesMoving,
  Finalizing,
  Done,
  RollingBack,
  Failed,
]);

/**
 * Records written before `failed` records said where the service runs: what the saga told the operator
 * at the time in migration.failed (nowhere after a failed or abandoned resume; the source otherwise).
 */
function fromEarlierVersions(raw: unknown): unknown {
  if (typeof raw !== 'object' || raw === null) return raw;
  const record = raw as Record<string, unknown>;
  if (record.state !== 'failed' || 'runningOn' in record) return raw;
  const failure = record.failure as { phase?: unknown; code?: unknown } | undefined;
  const nowhere = failure?.code === 'resume-failed' || (failure?.phase === 'rollback' && failure.code === 'agent-unavailable');
  return { ...record, runningOn: nowhere ? null : (record.sourceAgent ?? null) };
}

/**
 * The migration record, one shape per state (a discriminated union on `state`): a planned record has
 * its plan, a record rolling back its failure and rollback, a failed one its failure and where the
 * service runs. The KV form is the same flat JSON as before; records of earlier versions still read.
 */
export const MigrationRecord = z.preprocess(fromEarlierVersions, ByState);
type ByState = z.infer<typeof ByState>;
type AnyKey = ByState extends infer U ? (U extends unknown ? keyof U : never) : never;
/**
 * The union, with each state's shape saying which fields it does not have (`?: undefined`): a reader
 * (`ums status`, a test) may look at `record.failure` on any record, and gets `MigrationFailure` only
 * where the state guarantees it.
 */
export type MigrationRecord = ByState extends infer U
  ? U extends unknown
    ? U & { [K in Exclude<AnyKey, keyof U>]?: undefined }
    : never
  : never;
/** The record in one state. */
export type RecordIn<S extends MigrationState> = Extract<MigrationRecord, { state: S }>;

/**
 * Where the service runs, as the record knows it: at the source until the freeze, frozen there while the
 * archive moves (or the saga turns back), at the destination once it confirmed, and for a failed
 * migration wherever the saga (or an agent's report) last placed it; null is nowhere, undefined not
 * known yet (a request that has not found its source).
 */
export function whereItRuns(record: MigrationRecord): { agent: string | null | undefined; frozen: boolean } {
  switch (record.state) {
    case 'requested':
    case 'preflight':
      return { agent: record.sourceAgent, frozen: false };
    // From `checkpointing` on the source is told to freeze; it runs again only if the saga turns back.
    case 'checkpointing':
    case 'uploaded':
    case 'restoring':
    case 'rolling-back':
      return { agent: record.sourceAgent, frozen: true };
    // pages-moving (post-copy): it runs at the destination, with pages still coming from the source.
    case 'restored':
    case 'pages-moving':
    case 'finalizing':
    case 'done':
      return { agent: record.destinationAgent, frozen: false };
    case 'failed':
      return { agent: record.runningOn, frozen: false };
  }
}

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
export function timelineOf(record: { times: MigrationTimes; artifact?: Artifact | undefined }): Timeline {
  const t = record.times;
  const finishedAt = t.finishedAt ?? new Date().toISOString();
  const phases: Array<[string, number | undefined]> = [
    ['plan+prepare', ms(t.requestedAt, t.imageNeededAt ?? t.runningCopyStartedAt ?? t.checkpointStartedAt)],
    // The image shipped to a destination that lacked it (saved, stored, fetched, loaded), while the service ran.
    ['image (running)', ms(t.imageNeededAt, t.imageLoadedAt)],
    ['prepare', ms(t.imageLoadedAt, t.runningCopyStartedAt ?? t.checkpointStartedAt)],
    // Volumes: their files moved while the service still ran.
    ['volumes (running)', ms(t.runningCopyStartedAt, t.checkpointStartedAt)],
    ['checkpoint', ms(t.checkpointStartedAt, t.firstByteAt)],
    ['upload', ms(t.firstByteAt, t.uploadedAt)],
    // The destination fetches chunks while they upload; this is what remains after the last one landed.
    ['download tail', ms(t.uploadedAt, t.downloadedAt)],
    ['restore', ms(t.downloadedAt, t.restoredAt)],
    // post-copy: the service ran at the destination while its pages arrived.
    ['pages', ms(t.restoredAt, t.pagesArrivedAt)],
    ['finalize', ms(t.pagesArrivedAt ?? t.restoredAt, finishedAt)],
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
