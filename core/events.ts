import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { PublishedPort } from './container-network.js';
import { ChunkRef } from './checkpoint-artifact.js';
import { Sealing, SealingPublicKey } from './checkpoint-sealing.js';
import { ContainerSecurityProfile } from './container-security.js';
import { EVICTS_RULE_MESSAGE, evictsFollowsKind, NoticeReporter, noticeShape } from './host-notice.js';
import { ArchiveEstimate, MigrationApproach } from './migration-approach.js';
import { MigrationMode } from './migration-mode.js';
import { PageServer, PageStreamGrant } from './page-stream.js';
import { KeyId, SignatureValue, SigningPublicKey } from './signed-envelope.js';

/**
 * Every message on the bus is a CloudEvent (spec 1.0, structured JSON) whose `type` carries a schema
 * version (`dev.ums.<name>.v1`). Events say what happened and go to `ums.events.<migrationId>.<publisher>.<name>`
 * (a host's own facts, which belong to no migration, under HOST_SCOPE instead of a migration's id);
 * commands ask one agent to act and go to `ums.commands.<agentId>`. Both are validated here, at the
 * boundary, by whoever receives them.
 *
 * Events never carry secrets: signed URLs travel only in restore commands, which are addressed to one
 * agent and removed from the work-queue stream once acknowledged. Checkpoint data keys travel only
 * wrapped for the destination's X25519 key (core/checkpoint-sealing.ts).
 */

const TYPE_PREFIX = 'dev.ums.';
/** The schema version this build speaks; a message of another version is rejected, not guessed at. */
const SCHEMA_VERSION = '1';
const ids = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/, 'letters, digits, "_" and "-" only');
const containerName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$/, 'a valid container name');
const isoTime = z.iso.datetime({ offset: true });
const sha256Hex = z.string().regex(/^[a-f0-9]{64}$/, 'a lowercase hex sha256');

export const AgentId = ids;
export const MigrationId = ids;
export const ContainerName = containerName;
/** A frontman's id (frontman/): the stable front door of some services. */
/** An evacuation's id (core/evacuation.ts): its migrations are named `<evacuationId>-<a hash of the container>`. */
export const EvacuationId = z.string().regex(/^[a-z0-9][a-z0-9-]{0,40}$/, 'lowercase letters, digits and "-" only');
export const FrontmanId = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, 'letters, digits, "_" and "-" only');

/** orchestrator, container or service level (core/migration-approach.ts decides which). */
export const Approach = MigrationApproach;
export type Approach = MigrationApproach;

/** Where the source puts the archive: a prefix in its own cloud's store (never a credential). */
export const ArtifactLocation = z.object({
  storeUrl: z.string().min(1),
  prefix: z.string().min(1).endsWith('/'),
});
export type ArtifactLocation = z.infer<typeof ArtifactLocation>;

/** The uploaded archive: chunks plus a manifest whose digest vouches for the chunk list. */
export const Artifact = ArtifactLocation.extend({
  sizeBytes: z.number().int().nonnegative(),
  sha256: sha256Hex,
  chunkCount: z.number().int().nonnegative(),
  manifestSha256: sha256Hex,
});
export type Artifact = z.infer<typeof Artifact>;

const migrationRef = { migrationId: MigrationId };

/** Why a restore or checkpoint failed, machine-readable; `reason` carries the human sentence. */
export const FailureCode = z.enum([
  'container-not-found',
  'container-not-running',
  'image-missing',
  'download-failed',
  'url-rejected',
  'size-mismatch',
  'digest-mismatch',
  /** a sealed chunk or its wrapped data key failed authentication (altered, moved, or sealed for another key) */
  'seal-invalid',
  'manifest-invalid',
  'disk-full',
  'upload-failed',
  'engine-failed',
  'agent-unavailable',
  'invalid-request',
  'already-migrating',
  'resume-failed',
  /** no migration approach works between the two hosts for this container, or the requested one does not */
  'approach-infeasible',
  /** an agent restarted in the middle of the step and cannot continue it */
  'agent-restarted',
  /** a phase outlived its deadline, or the agent doing it stopped sending heartbeats */
  'deadline-exceeded',
  /** CRIU cannot dump the container as it is (found before the freeze, or CRIU's own refusal) */
  'not-checkpointable',
  /** the destination cannot run what the source would send: CPU features, architecture, a port taken */
  'destination-incompatible',
  /** the checkpoint archive asks for more than the source registered the container with (agents/archive-policy.ts) */
  'archive-refused',
  /** post-copy: the page stream ended before every page reached the destination (a host or the link lost) */
  'pages-lost',
]);
export type FailureCode = z.infer<typeof FailureCode>;

// ---- event data -------------------------------------------------------------------------------

export const eventData = {
  'migration.requested': z.object({
    ...migrationRef,
    container: containerName,
    sourceAgent: AgentId.optional(),
    destinationAgent: AgentId,
    /** The user's choice; without it the planner picks the cheapest feasible approach. */
    approach: Approach.optional(),
    /** The user's choice of mode; without it the planner picks by the frozen-time budget (core/migration-mode.ts). */
    mode: MigrationMode.optional(),
    /** The longest freeze the user accepts: above it, post-copy where both hosts qualify. */
    frozenBudgetMs: z.number().int().positive().max(86_400_000).optional(),
    requestedBy: z.string().max(200).optional(),
    /**
     * Asked by an evacuation of the source host (functions/evacuate-host.ts), not by a person: then it is the
     * functions' word (core/event-identity.ts), and the evacuation follows the migration to its end.
     */
    evacuation: z.object({ agent: AgentId, evacuationId: EvacuationId }).optional(),
  }),
  'migration.planned': z.object({
    ...migrationRef,
    container: containerName,
    image: z.string().min(1),
    sourceAgent: AgentId,
    destinationAgent: AgentId,
    approach: Approach,
    approachReason: z.string().optional(),
    /** Optional only for plans made before there were modes (stop-and-copy). */
    mode: MigrationMode.optional(),
    modeReason: z.string().optional(),
    artifact: ArtifactLocation,
    /** The planner's expected archive size and its basis: the CLI's progress total until the real size is known. */
    archiveEstimate: ArchiveEstimate.optional(),
    /** The frontman of the service: the source freezes only once it has drained (frontman.drained). */
    frontman: FrontmanId.optional(),
  }),
  'checkpoint.progress': z.object({
    ...migrationRef,
    agent: AgentId,
    bytes: z.number().int().nonnegative(),
  }),
  /**
   * One chunk is durable in the store: the destination may fetch it now. `sealing` (the same for every
   * chunk of a migration) carries the data key wrapped for the destination, so any chunk can be opened.
   */
  'checkpoint.chunk': z.object({
    ...migrationRef,
    agent: AgentId,
    chunk: ChunkRef,
    sealing: Sealing,
  }),
  'checkpoint.uploaded': z.object({
    ...migrationRef,
    agent: AgentId,
    container: containerName,
    image: z.string().min(1),
    artifact: Artifact,
    /** Container level with volumes: when the source began sending their files, while the service still ran. */
    runningCopyStartedAt: isoTime.optional(),
    /** The memory's bytes sent beside the engine's export as CRIU wrote them (agents/memory/); absent: in it. */
    memoryBesideBytes: z.number().int().nonnegative().optional(),
    /** When the service froze. */
    checkpointStartedAt: isoTime,
    firstByteAt: isoTime,
    uploadedAt: isoTime,
  }),
  /**
   * post-copy: the source's page relay is listening (before the freeze): the destination's relay dials it
   * once the archive has arrived. Not secret: the stream's key is not in it.
   */
  'checkpoint.page-server': z.object({ ...migrationRef, agent: AgentId, pageServer: PageServer }),
  /**
   * post-copy: the source's lazy dump ended. `moved`: the destination confirmed every page; `lost`: the stream
   * ended before, and `sourceTasks` says what CRIU left of the source (agents/post-copy/lazy-container.ts).
   */
  'checkpoint.pages-served': z.object({
    ...migrationRef,
    agent: AgentId,
    outcome: z.enum(['moved', 'lost']),
    reason: z.string().optional(),
    sourceTasks: z.enum(['thawed', 'ended']).optional(),
  }),
  'checkpoint.failed': z.object({
    ...migrationRef,
    agent: AgentId,
    code: FailureCode,
    reason: z.string(),
    /** whether the container was frozen before the failure (then it must be resumed) */
    containerCheckpointed: z.boolean(),
  }),
  /** The destination is ready (name free, image present, disk): the source may freeze now. */
  'restore.prepared': z.object({
    ...migrationRef,
    agent: AgentId,
    freeDiskBytes: z.number().nonnegative(),
    /** The image was shipped to it (restore.image-needed): when it was loaded, its id checked, and the names it carried. */
    imageLoaded: z.object({ loadedAt: isoTime, tags: z.array(z.string().max(512)).max(64) }).optional(),
  }),
  /**
   * The destination's engine lacks the container's image (by id): before it can be ready, the source must ship
   * it. A request, not a fact: a destination that restarted asks again.
   */
  'restore.image-needed': z.object({ ...migrationRef, agent: AgentId, imageId: z.string().min(1) }),
  /**
   * The source saved the image (a docker-archive) and stored it sealed for the destination, with its signed
   * manifest, under the migration's prefix (core/checkpoint-artifact.ts imagePrefix), while the service runs.
   */
  'source.image-uploaded': z.object({
    ...migrationRef,
    agent: AgentId,
    imageId: z.string().min(1),
    artifact: Artifact,
    startedAt: isoTime,
    uploadedAt: isoTime,
  }),
  /** The destination asks for signed URLs of chunks [fromIndex, fromIndex + count). */
  'restore.urls-needed': z.object({
    ...migrationRef,
    agent: AgentId,
    fromIndex: z.number().int().nonnegative(),
    count: z.number().int().positive().max(1000),
  }),
  'restore.progress': z.object({
    ...migrationRef,
    agent: AgentId,
    bytes: z.number().int().nonnegative(),
    totalBytes: z.number().int().nonnegative(),
  }),
  /** Every verified byte went to the engine: the engine is restoring now. */
  'restore.started': z.object({
    ...migrationRef,
    agent: AgentId,
    downloadedAt: isoTime,
  }),
  'restore.completed': z.object({
    ...migrationRef,
    agent: AgentId,
    container: containerName,
    containerId: z.string(),
    downloadedAt: isoTime,
    restoredAt: isoTime,
    /**
     * The source's checkpoint.uploaded facts as this destination acted on them. The saga may handle this
     * event before checkpoint.uploaded (different functions, no order between them): the record's timeline
     * and frozen time must not depend on which comes first.
     */
    upload: z
      .object({
        artifact: Artifact,
        runningCopyStartedAt: isoTime.optional(),
        memoryBesideBytes: z.number().int().nonnegative().optional(),
        checkpointStartedAt: isoTime,
        firstByteAt: isoTime,
        uploadedAt: isoTime,
      })
      .optional(),
  }),
  /** post-copy: the last page reached the destination and the source confirmed: it holds nothing needed now. */
  'restore.pages-arrived': z.object({ ...migrationRef, agent: AgentId, bytes: z.number().int().nonnegative(), arrivedAt: isoTime }),
  /**
   * post-copy: the page stream was lost while the restored copy runs: that copy waits on its next missing page
   * (it never reads one that did not arrive) until the saga's abort removes it.
   */
  'restore.pages-lost': z.object({ ...migrationRef, agent: AgentId, reason: z.string() }),
  'restore.failed': z.object({
    ...migrationRef,
    agent: AgentId,
    code: FailureCode,
    reason: z.string(),
  }),
  /** The destination holds no copy of the container and will not restore one (answer to abort). */
  'restore.aborted': z.object({ ...migrationRef, agent: AgentId, container: containerName, removedRestoredCopy: z.boolean() }),
  'source.discarded': z.object({ ...migrationRef, agent: AgentId, container: containerName }),
  'source.resumed': z.object({ ...migrationRef, agent: AgentId, container: containerName }),
  'source.resume-failed': z.object({ ...migrationRef, agent: AgentId, container: containerName, reason: z.string() }),
  /**
   * An agent, reconciling at its start, found the migration's container running on its host while the
   * ended migration's record says it runs elsewhere or nowhere: the saga corrects the record.
   */
  'service.running': z.object({ ...migrationRef, agent: AgentId, container: containerName }),
  /**
   * The frontman stopped forwarding the service's requests and holds new ones, and the ones in flight
   * finished (`unfinished`: cut at its drain deadline): the source may freeze now.
   */
  'frontman.drained': z.object({
    ...migrationRef,
    frontman: FrontmanId,
    container: containerName,
    finished: z.number().int().nonnegative(),
    unfinished: z.number().int().nonnegative(),
    drainedAt: isoTime,
  }),
  /**
   * The frontman forwards again, to `to` (the destination once it restored, the source after a rollback;
   * null: the service runs nowhere, so what it held was answered 503), with what it had held.
   */
  'frontman.released': z.object({
    ...migrationRef,
    frontman: FrontmanId,
    container: containerName,
    to: AgentId.nullable(),
    held: z.number().int().nonnegative(),
    /** Held past the frontman's deadline: answered 503 with Retry-After (HTTP) or closed (TCP). */
    expired: z.number().int().nonnegative(),
    releasedAt: isoTime,
  }),
  'migration.completed': z.object({
    ...migrationRef,
    container: containerName,
    sourceAgent: AgentId,
    destinationAgent: AgentId,
    timeline: z.lazy(() => Timeline),
  }),
  'migration.failed': z.object({
    ...migrationRef,
    container: containerName.optional(),
    phase: z.string(),
    code: FailureCode,
    reason: z.string(),
    /** Where the service runs now, as far as the saga knows; null means nowhere (operator action needed). */
    runningOn: AgentId.nullable(),
  }),
  /**
   * The agent's cloud announced an eviction or maintenance of its host (core/host-notice.ts), or changed a
   * notice it had announced (a new deadline, Scheduled -> Started): the latest fact per noticeId holds.
   * `evicts` must follow the kind: a notice that says a pause ends the host is refused. `reportedBy`: the cloud's
   * event service reported it (functions/cloud-notice-ingress.ts), not the agent; absent: the agent's own reading.
   */
  'host.notice': z
    .object({ agent: AgentId, ...noticeShape, reportedBy: NoticeReporter.optional() })
    .refine(evictsFollowsKind, { message: EVICTS_RULE_MESSAGE, path: ['evicts'] }),
  /** A notice announced before is gone (from the metadata, or the event service said so): withdrawn, or it ran its course. */
  'host.notice-withdrawn': z
    .object({
      agent: AgentId,
      cloud: noticeShape.cloud,
      noticeId: noticeShape.noticeId,
      kind: noticeShape.kind,
      evicts: noticeShape.evicts,
      withdrawnAt: isoTime,
      reportedBy: NoticeReporter.optional(),
    })
    .refine(evictsFollowsKind, { message: EVICTS_RULE_MESSAGE, path: ['evicts'] }),
  /**
   * An operator asks to empty a host (`ums drain`): every service moves to hosts the planner picks, `concurrency` at
   * once, and the host takes no new service until the drain is cancelled (functions/evacuate-host.ts).
   */
  'host.drain-requested': z.object({
    agent: AgentId,
    evacuationId: EvacuationId,
    concurrency: z.number().int().positive().max(64).optional(),
    requestedBy: z.string().max(200).optional(),
  }),
  /** An operator stops a drain (nothing new starts; what is under way ends) and opens the host again. */
  'host.drain-cancelled': z.object({ agent: AgentId, requestedBy: z.string().max(200).optional() }),
} as const;

// ---- command data -----------------------------------------------------------------------------

/**
 * What the destination checks before the source freezes, from the source's registration: that its CPU has
 * every instruction-set feature of the source's (`criu cpuinfo dump` image, base64), and that the host ports
 * the container publishes are free there.
 */
export const RestoreRequirements = z.object({
  cpuinfo: z.base64().max(8192).optional(),
  published: z.array(PublishedPort).max(256).optional(),
  /** What the container was allowed at the source: the archive's container config may ask for no more. */
  profile: ContainerSecurityProfile.optional(),
  /** Host paths the container bind-mounts (core/container-storage.ts): they do not move, the destination must have them. */
  binds: z
    .array(z.object({ source: z.string().min(1).max(4096), destination: z.string().min(1).max(4096) }))
    .max(256)
    .optional(),
});
export type RestoreRequirements = z.infer<typeof RestoreRequirements>;

/**
 * The fencing token: the migration record's epoch when the command was issued. It goes up when the
 * saga turns back (rolling back), so a late forward command (checkpoint, prepare, chunk URLs, discard)
 * is refused by the agent once the record has moved to a later epoch.
 */
const commandRef = { ...migrationRef, epoch: z.number().int().positive() };

export const commandData = {
  checkpoint: z.object({
    ...commandRef,
    approach: Approach,
    container: containerName,
    artifact: ArtifactLocation,
    /** The destination's registered public key: the chunks are sealed for it (core/checkpoint-sealing.ts). */
    sealFor: SealingPublicKey,
    /** post-copy: the page stream, its key wrapped for this agent. Absent: stop-and-copy. */
    postCopy: PageStreamGrant.optional(),
    /** The destination: the source freezes only once it has taken what was sent while the service ran (volumes). */
    destinationAgent: AgentId.optional(),
    /** Send the memory beside the engine's export (both hosts can place it: agents/memory/). Absent: in it. */
    memoryBeside: z.boolean().optional(),
  }),
  /**
   * Get ready to receive the container: check the name is free and the image present, then fetch the
   * chunks as the source announces them, and restore once the source has uploaded them all.
   */
  prepare: z.object({
    ...commandRef,
    approach: Approach,
    container: containerName,
    image: z.string().min(1),
    /** The restore needs this exact image (Podman looks it up by id). */
    imageId: z.string().min(1),
    sourceAgent: AgentId,
    /**
     * Where the source puts the archive (the migration's artifact location): the only store, bucket and
     * prefix the destination fetches chunk and manifest URLs from.
     */
    artifact: ArtifactLocation,
    requirements: RestoreRequirements.optional(),
    /** The source's registered manifest-signing key: the destination restores only from a manifest it signed. */
    sourceManifestKey: SigningPublicKey,
    /** post-copy: the page stream, its key wrapped for this agent. Absent: stop-and-copy. */
    postCopy: PageStreamGrant.optional(),
  }),
  /** Short-lived read-only URLs in the source's cloud. Bearer secrets: never log them. */
  'chunk-urls': z.object({
    ...commandRef,
    /** Which object they read: the shipped image (imagePrefix) or, absent, the checkpoint. */
    of: z.enum(['checkpoint', 'image']).optional(),
    manifestUrl: z.url().optional(),
    chunks: z.array(z.object({ index: z.number().int().nonnegative(), url: z.url() })).max(1000),
    expiresAt: isoTime,
  }),
  /**
   * The destination lacks the image (restore.image-needed): save it and store it under `artifact` (the
   * migration's image prefix), sealed for the destination like the checkpoint, while the service runs.
   */
  'ship-image': z.object({
    ...commandRef,
    container: containerName,
    imageId: z.string().min(1),
    artifact: ArtifactLocation,
    sealFor: SealingPublicKey,
  }),
  /** The migration is confirmed: remove the checkpointed copy kept at the source. */
  discard: z.object({ ...commandRef, approach: Approach, container: containerName }),
  /** The migration failed: restart the container from the checkpoint kept at the source. */
  resume: z.object({
    ...commandRef,
    approach: Approach,
    container: containerName,
    /**
     * post-copy: there is no complete kept checkpoint (its memory was never written): the source stops what is
     * left of its lazy dump and starts the container again from its image. Absent: stop-and-copy.
     */
    mode: MigrationMode.optional(),
  }),
  /**
   * The migration is rolling back: stop restoring, remove any copy restored here, confirm with
   * restore.aborted. Only then does the source resume, so the service never runs twice.
   */
  abort: z.object({ ...commandRef, approach: Approach, container: containerName }),
} as const;

// ---- migration timeline (what the CLI prints) -------------------------------------------------

export const Timeline = z.object({
  requestedAt: isoTime,
  finishedAt: isoTime,
  /** milliseconds per phase, in order */
  phases: z.array(z.object({ name: z.string(), ms: z.number().nonnegative() })),
  totalMs: z.number().nonnegative(),
  /** from the freeze at the source to the restored process running at the destination */
  frozenMs: z.number().nonnegative(),
  archiveBytes: z.number().int().nonnegative(),
});
export type Timeline = z.infer<typeof Timeline>;

// ---- envelope ---------------------------------------------------------------------------------

export type EventName = keyof typeof eventData;
export type CommandName = keyof typeof commandData;
export type EventData<N extends EventName> = z.infer<(typeof eventData)[N]>;
export type CommandData<N extends CommandName> = z.infer<(typeof commandData)[N]>;

/** The facts about a host itself rather than a migration: their data name the agent, not a migration. */
const HOST_EVENTS = [
  'host.notice',
  'host.notice-withdrawn',
  'host.drain-requested',
  'host.drain-cancelled',
] as const satisfies readonly EventName[];
export type HostEventName = (typeof HOST_EVENTS)[number];
export type MigrationEventName = Exclude<EventName, HostEventName>;

export function isHostEventName(name: EventName): name is HostEventName {
  return (HOST_EVENTS as readonly EventName[]).includes(name);
}

/**
 * Where a host's facts are filed in place of a migration's id (`ums.events._host.agent-<id>.host.notice`): no
 * migration id can take it (they begin with a letter or a digit), and the publisher token already names the host.
 */
export const HOST_SCOPE = '_host';

const Envelope = z.object({
  specversion: z.literal('1.0'),
  id: z.string().min(1).max(200),
  source: z.string().min(1),
  type: z.string().startsWith(TYPE_PREFIX),
  subject: z.string().optional(),
  time: isoTime,
  datacontenttype: z.literal('application/json').optional(),
  data: z.unknown(),
});

/**
 * A command's signature (core/signed-envelope.ts), as CloudEvents extension attributes: the agent it is
 * for, when it expires, which key signed it, and the Ed25519 signature. Optional in the schema so that an
 * unsigned command still parses and is refused by the agent with that reason, not as malformed.
 */
const CommandSignatureAttributes = z.object({
  umstarget: AgentId,
  umsexpires: isoTime,
  umskeyid: KeyId,
  umssignature: SignatureValue,
});
export type CommandSignatureAttributes = z.infer<typeof CommandSignatureAttributes>;
const CommandEnvelope = Envelope.extend(CommandSignatureAttributes.partial().shape);

export interface CloudEvent<T extends string, D> {
  specversion: '1.0';
  id: string;
  source: string;
  type: T;
  /** the migration id; for a host's facts, the agent's id */
  subject: string;
  time: string;
  datacontenttype: 'application/json';
  data: D;
}

export type UmsEvent = { [N in EventName]: CloudEvent<`dev.ums.${N}.v1`, EventData<N>> & { name: N } }[EventName];
export type UmsCommand = {
  [N in CommandName]: CloudEvent<`dev.ums.command.${N}.v1`, CommandData<N>> & Partial<CommandSignatureAttributes> & { name: N };
}[CommandName];
export type EventOf<N extends EventName> = Extract<UmsEvent, { name: N }>;
/** An event of a migration (every event but a host's own facts). */
export type MigrationEvent = EventOf<MigrationEventName>;
export type CommandOf<N extends CommandName> = Extract<UmsCommand, { name: N }>;

/** The stream token an event is filed under: its migration's id, or HOST_SCOPE for a host's own facts. */
export function eventScope(event: UmsEvent): string {
  return isHostEvent(event) ? HOST_SCOPE : event.data.migrationId;
}

function isHostEvent(event: UmsEvent): event is EventOf<HostEventName> {
  return isHostEventName(event.name);
}

export const eventType = (name: EventName): string => `${TYPE_PREFIX}${name}.v1`;
export const commandType = (name: CommandName): string => `${TYPE_PREFIX}command.${name}.v1`;

export class InvalidMessageError extends Error {
  constructor(
    readonly what: string,
    readonly issues: string,
  ) {
    super(`invalid ${what}: ${issues}`);
    this.name = 'InvalidMessageError';
  }
}

function formatIssues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
}

function parseEnvelope<T>(raw: unknown, what: string, schema: z.ZodType<T>): T {
  const value = typeof raw === 'string' || raw instanceof Uint8Array ? safeJson(raw, what) : raw;
  const envelope = schema.safeParse(value);
  if (!envelope.success) throw new InvalidMessageError(what, formatIssues(envelope.error));
  return envelope.data;
}

function safeJson(raw: string | Uint8Array, what: string): unknown {
  try {
    return JSON.parse(typeof raw === 'string' ? raw : new TextDecoder().decode(raw));
  } catch (error) {
    throw new InvalidMessageError(what, `not JSON (${(error as Error).message})`);
  }
}

function checkVersion(type: string, version: string | undefined): void {
  if (version !== SCHEMA_VERSION) {
    throw new InvalidMessageError(
      'message',
      `"${type}" is schema version ${version}; this build speaks version ${SCHEMA_VERSION} (upgrade the component that reads it)`,
    );
  }
}

/** Validates an event (object, JSON string or bytes); throws InvalidMessageError naming what is wrong. */
export function parseEvent(raw: unknown): UmsEvent {
  const envelope = parseEnvelope(raw, 'event', Envelope);
  const match = /^dev\.ums\.(.+)\.v(\d+)$/.exec(envelope.type);
  const name = match?.[1] as EventName | undefined;
  if (!name || !(name in eventData) || name.startsWith('command.')) {
    throw new InvalidMessageError('event', `unknown event type "${envelope.type}"`);
  }
  checkVersion(envelope.type, match?.[2]);
  const data = eventData[name].safeParse(envelope.data);
  if (!data.success) throw new InvalidMessageError(`${envelope.type} event`, formatIssues(data.error));
  return { ...envelope, subject: envelope.subject ?? '', datacontenttype: 'application/json', data: data.data, name } as UmsEvent;
}

/** Validates a command; throws InvalidMessageError naming what is wrong. */
export function parseCommand(raw: unknown): UmsCommand {
  const envelope = parseEnvelope(raw, 'command', CommandEnvelope);
  const match = /^dev\.ums\.command\.(.+)\.v(\d+)$/.exec(envelope.type);
  const name = match?.[1] as CommandName | undefined;
  if (!name || !(name in commandData)) {
    throw new InvalidMessageError('command', `unknown command type "${envelope.type}"`);
  }
  checkVersion(envelope.type, match?.[2]);
  const data = commandData[name].safeParse(envelope.data);
  if (!data.success) throw new InvalidMessageError(`${envelope.type} command`, formatIssues(data.error));
  return { ...envelope, subject: envelope.subject ?? '', datacontenttype: 'application/json', data: data.data, name } as UmsCommand;
}

function envelopeFor<T extends string, D>(type: T, source: string, subject: string, data: D, id: string): CloudEvent<T, D> {
  return { specversion: '1.0', id, source, type, subject, time: new Date().toISOString(), datacontenttype: 'application/json', data };
}

/**
 * Builds a validated event. `id` defaults to a random UUID; pass a deterministic one where a retried
 * handler must not publish the same fact twice (the bus deduplicates on it).
 */
export function makeEvent<N extends EventName>(name: N, source: string, data: EventData<N>, id: string = randomUUID()): EventOf<N> {
  const parsed = eventData[name].parse(data);
  const subject = isHostEventName(name) ? (data as EventData<HostEventName>).agent : (data as EventData<MigrationEventName>).migrationId;
  const event = envelopeFor(eventType(name), source, subject, parsed, id);
  return { ...event, name } as unknown as EventOf<N>;
}

export function makeCommand<N extends CommandName>(name: N, source: string, data: CommandData<N>, id: string = randomUUID()): CommandOf<N> {
  const parsed = commandData[name].parse(data);
  const command = envelopeFor(commandType(name), source, data.migrationId, parsed, id);
  return { ...command, name } as unknown as CommandOf<N>;
}

/** The wire form: the CloudEvent without our in-memory `name` discriminator. */
export function toWire(message: UmsEvent | UmsCommand): CloudEvent<string, unknown> {
  const { name: _name, ...wire } = message;
  return wire;
}
