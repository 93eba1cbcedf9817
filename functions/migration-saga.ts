import { randomUUID } from 'node:crypto';
import { artifactPrefix, chunkKey, imagePrefix, manifestKey, URL_BATCH } from '../core/checkpoint-artifact.js';
import { RevisionConflictError, type EventBus, type Versioned } from '../core/event-bus.js';
import {
  makeCommand,
  makeEvent,
  type Artifact,
  type CommandData,
  type CommandName,
  type EventData,
  type EventOf,
  type FailureCode,
  type MigrationEvent,
} from '../core/events.js';
import { closedHosts } from '../core/evacuation.js';
import { frontmanOf } from '../core/frontman-registration.js';
import { planAgainst } from '../core/migration-plan.js';
import { grantPageStream, newPageStream } from '../core/page-stream.js';
import {
  canTransition,
  IMAGE_SHIPPING_DEADLINE_MS,
  isTerminal,
  lockKey,
  PHASE_DEADLINE_MS,
  timelineOf,
  type MigrationFailure,
  type MigrationRecord,
  type MigrationState,
  type MigrationTimes,
  type RecordIn,
} from '../core/migration.js';
import { deadlineScale, type FunctionContext } from './function-context.js';

/**
 * The migration saga, top to bottom: each step, the event that moves it on, and its compensation.
 * The function handlers (plan-migration.ts, plan-restore.ts, finalize.ts, supervise-migrations.ts) only
 * validate the event, load the record and call the step here; every command to an agent is sent from
 * this module. The record (core/migration.ts) is the only state, advanced with compare-and-set.
 *
 *   step                                forward on                        compensation (turning back)
 *   1. plan                             migration.requested               refuse: failed, nothing frozen
 *   2. prepare the destination          -> command.prepare                restore.failed before the freeze: failed
 *   2b. ship the image, if the          restore.image-needed -> command.ship-image (source)
 *       destination's engine lacks it   source.image-uploaded -> chunk-urls (of: image) (destination)
 *                                       the destination loads it, checks its id, then restore.prepared
 *                                                                         checkpoint.failed / restore.failed before
 *                                                                         the freeze: failed, the service untouched
 *   3. freeze + upload at the source    restore.prepared (and, for a service with a frontman,
 *                                       frontman.drained: its clients' requests are held) -> command.checkpoint
 *                                       checkpoint.uploaded               resume the source (command.resume),
 *                                                                         only once the destination is clear
 *   4. restore at the destination       restore.started, restore.completed
 *                                                                         abort + remove its copy (command.abort)
 *   5. discard at the source            -> command.discard                none: the destination confirmed,
 *                                                                         the migration can only complete
 *   6. done                             source.discarded
 *
 * post-copy (core/migration-mode.ts) adds a window between 4 and 5, `pages-moving`: the destination runs
 * while its pages still come from the source, so both hosts are needed. It ends forward on
 * restore.pages-arrived (go on to 5); a lost stream (restore.pages-lost) or its deadline turns back: the
 * destination's copy, which waits on a missing page, is removed, and the source restarts the service from
 * its image (its memory state is lost: the honest cost of post-copy's short freeze).
 *
 * A service's frontman (frontman/) follows the same events: it drains on restore.prepared and releases what it
 * held on restore.completed or source.resumed. The saga waits for its drain (a frontman silent for 20 s fails
 * the migration, nothing frozen) and records its release (frontman.released); it commands nothing of it.
 *
 * Any failure after the freeze (checkpoint.failed, restore.failed, a missed deadline, a silent agent)
 * turns the saga back: rolling-back, epoch up, abort the destination (4's compensation), then on
 * restore.aborted resume the source (3's compensation), then failed with the service on the source.
 * Steps reach different functions and may come out of order or twice: each looks at the record first
 * and does nothing, or repeats a command the bus deduplicates, when the record has moved on.
 */

/** A step that lost a compare-and-set race: it runs again on the record as it is now. */
export const LOST_RACE = Symbol('lost race');
export type StepOutcome = void | typeof LOST_RACE;
type Current = Versioned<MigrationRecord>;
/** A record that has its plan: every state from preflight on except failed. */
type PlannedRecord = Exclude<MigrationRecord, { state: 'requested' | 'failed' }>;

/** Runs a step on the event's migration, on a fresh read of the record each time it lost a race. */
export async function runStep<E extends MigrationEvent>(
  event: E,
  ctx: FunctionContext,
  step: (event: E, record: Current, ctx: FunctionContext) => Promise<StepOutcome>,
): Promise<void> {
  for (;;) {
    const record = await ctx.bus.migrations.get(event.data.migrationId);
    if (!record) {
      ctx.log.warn({ migrationId: event.data.migrationId, event: event.type }, 'event for an unknown migration; ignored');
      return;
    }
    if ((await step(event, record, ctx)) !== LOST_RACE) return;
  }
}

// ---- 1. Plan ------------------------------------------------------------------------------------
// Compensation: none needed; a refusal ends the migration failed with the service untouched.

/** How long after a request a container missing from the registrations is waited for. */
const CONTAINER_DISCOVERY_GRACE_MS = 8_000;

/**
 * On migration.requested: checks the request against the agent registry before anything is frozen
 * (both agents alive, the container running on exactly one source, its image present at the
 * destination, no other migration of it under way), decides the approach, takes the container's lock,
 * records the plan and goes on to step 2.
 */
export async function plan(event: EventOf<'migration.requested'>, ctx: FunctionContext): Promise<void> {
  const { bus, log } = ctx;
  const request = event.data;
  const record = await recordFor(event, ctx);
  const current = record.value;
  // A redelivery after a crash between the record update and the command: send it again (deduplicated).
  if (current.state === 'preflight') return prepareDestination(current, ctx);
  if (current.state !== 'requested') return;

  const refuse = (code: FailureCode, reason: string, runningOn: string | null) => {
    log.info({ migrationId: request.migrationId, code, reason }, 'migration refused');
    return failMigration(ctx, record, current, { phase: 'plan', code, reason }, runningOn);
  };

  const [agents, evacuations] = await Promise.all([bus.agents.list(), bus.evacuations.list()]);
  const verdict = planAgainst(
    agents.map((entry) => entry.value),
    request,
    Date.now(),
    closedHosts(evacuations.map((entry) => entry.value)),
  );
  if (!verdict.ok) {
    if (verdict.notListedYet && Date.now() - Date.parse(event.time) < CONTAINER_DISCOVERY_GRACE_MS) {
      // Registrations lag a heartbeat behind: a container started a moment ago may not be listed yet.
      const where = request.sourceAgent ? `on agent "${request.sourceAgent}"` : 'on any registered agent';
      throw new Error(`container "${request.container}" is not listed ${where} yet; the request will be delivered again`);
    }
    return refuse(verdict.code, verdict.reason, verdict.runningOn);
  }
  const { source, container, decision } = verdict;
  // Checkpoints are sealed for the destination's key: a destination that registered none cannot receive one.
  const sealFor = verdict.destination.sealing;
  if (!sealFor) {
    return refuse(
      'destination-incompatible',
      `destination agent "${request.destinationAgent}" registers no sealing key, so the checkpoint cannot be encrypted for it: upgrade the agent there`,
      source.agentId,
    );
  }
  // The destination restores only from a manifest the source signed: a source that registered no key cannot send one.
  const sourceManifestKey = source.manifestSigning;
  if (!sourceManifestKey) {
    return refuse(
      'approach-infeasible',
      `source agent "${source.agentId}" registers no manifest-signing key, so its checkpoint could not be verified at the destination: upgrade the agent there`,
      source.agentId,
    );
  }
  log.info({ migrationId: request.migrationId, approach: decision.approach, why: decision.reason }, 'approach decided');
  log.info(
    { migrationId: request.migrationId, shipLikely: verdict.image.shipLikely, why: verdict.image.reason },
    'image at the destination',
  );
  const { mode } = verdict;
  if (mode.kind === 'refused') return refuse('approach-infeasible', mode.reason, source.agentId);
  let pageStream: RecordIn<'preflight'>['pageStream'];
  if (mode.mode === 'post-copy') {
    // The source opens its grant with its own sealing key: one that registered none cannot join the stream.
    if (!source.sealing) {
      return refuse(
        'approach-infeasible',
        `source agent "${source.agentId}" registers no sealing key, so the page stream's key cannot reach it`,
        source.agentId,
      );
    }
    const stream = newPageStream();
    pageStream = {
      source: grantPageStream(stream, source.sealing, request.migrationId),
      destination: grantPageStream(stream, sealFor, request.migrationId),
    };
  }
  log.info({ migrationId: request.migrationId, mode: mode.mode, why: mode.reason }, 'mode decided');

  // A service with a frontman freezes only once the frontman holds its clients' requests (frontmanDrained).
  const frontman = frontmanOf(
    (await bus.frontmen.list()).map((entry) => entry.value),
    request.container,
  );

  const holder = await takeLock(lockKey(source.agentId, request.container), request.migrationId, ctx);
  if (holder) {
    return refuse(
      'already-migrating',
      `container "${request.container}" is already being migrated by ${holder}; wait for it to end ("ums status ${holder}")`,
      source.agentId,
    );
  }

  const planned = await transition(bus, record, {
    ...current,
    state: 'preflight',
    sourceAgent: source.agentId,
    image: container.image,
    imageId: container.imageId,
    approach: decision.approach,
    approachReason: decision.reason,
    archiveEstimate: decision.archive,
    mode: mode.mode,
    modeReason: mode.reason,
    ...(pageStream ? { pageStream } : {}),
    ...(verdict.memoryBeside ? { memoryBeside: true } : {}),
    ...(frontman ? { frontman: { id: frontman.frontmanId } } : {}),
    imageShipping: { expected: verdict.image.shipLikely },
    artifactLocation: { storeUrl: source.storeUrl, prefix: artifactPrefix(request.migrationId) },
    sealFor,
    sourceManifestKey,
    requirements: {
      ...(source.capabilities?.containerLevel.cpuinfo !== undefined ? { cpuinfo: source.capabilities.containerLevel.cpuinfo } : {}),
      ...(container.traits?.network !== undefined ? { published: container.traits.network.published } : {}),
      ...(container.traits?.security !== undefined ? { profile: container.traits.security } : {}),
      ...(verdict.storage !== undefined && verdict.storage.binds.length > 0 ? { binds: verdict.storage.binds } : {}),
    },
    times: { ...current.times, plannedAt: new Date().toISOString() },
  });
  if (planned) await prepareDestination(planned.value, ctx);
}

// ---- 2. Prepare the destination -----------------------------------------------------------------
// Compensation: a destination that refuses (restore.failed in preflight) ends the migration failed,
// nothing frozen (see failStep); after the freeze, abortDestination (step 4's compensation).

/** The destination checks name, image, disk and the source's requirements, and opens its restore. */
async function prepareDestination(record: RecordIn<'preflight'>, ctx: FunctionContext): Promise<void> {
  const {
    migrationId,
    epoch,
    container,
    destinationAgent,
    sourceAgent,
    artifactLocation,
    image,
    imageId,
    approach,
    requirements,
    approachReason,
    sourceManifestKey,
    archiveEstimate,
    mode,
    modeReason,
    pageStream,
  } = record;
  if (!sourceManifestKey) {
    // Only a record planned by a build that did not sign manifests: nothing frozen yet, the deadline fails it.
    throw new Error(`migration ${migrationId} was planned without the source's manifest-signing key; its destination cannot verify it`);
  }
  await sendCommand(
    ctx,
    destinationAgent,
    'prepare',
    {
      migrationId,
      epoch,
      approach,
      container,
      image,
      imageId,
      sourceAgent,
      artifact: artifactLocation,
      ...(requirements ? { requirements } : {}),
      sourceManifestKey,
      ...(pageStream ? { postCopy: pageStream.destination } : {}),
    },
    `${migrationId}.prepare`,
  );
  await ctx.bus.publishEvent(
    makeEvent(
      'migration.planned',
      ctx.source,
      {
        migrationId,
        container,
        image,
        sourceAgent,
        destinationAgent,
        approach,
        ...(approachReason ? { approachReason } : {}),
        ...(archiveEstimate ? { archiveEstimate } : {}),
        ...(mode ? { mode } : {}),
        ...(modeReason ? { modeReason } : {}),
        ...(record.frontman ? { frontman: record.frontman.id } : {}),
        artifact: artifactLocation,
      },
      `${migrationId}.planned`,
    ),
  );
  ctx.log.info({ migrationId, sourceAgent, destinationAgent }, 'migration planned; destination told to prepare');
}

// ---- 2b. Ship the image, if the destination lacks it ----------------------------------------------
// Compensation: none needed. Everything happens before the freeze: a source that cannot save or store the
// image (checkpoint.failed, not frozen), a destination that cannot fetch, verify or load it (restore.failed),
// or the extended preflight deadline ends the migration failed with the service running at the source.

/**
 * restore.image-needed: the destination's engine lacks the image (its heartbeat may have said otherwise, or
 * the reverse: the engine's answer is the one that counts). The source is told to ship it; a destination that
 * asks again (it restarted) gets the URLs again if the image is already stored.
 */
export async function imageNeeded(event: EventOf<'restore.image-needed'>, record: Current, ctx: FunctionContext): Promise<StepOutcome> {
  const r = record.value;
  if (event.data.agent !== r.destinationAgent || r.state !== 'preflight' || event.data.imageId !== r.imageId) return;
  const shipping = r.imageShipping ?? { expected: false };
  if (shipping.artifact) return sendImageUrls(r, shipping.artifact.chunkCount, ctx, randomUUID());
  if (!shipping.needed) {
    const next = await annotate(ctx.bus, record, {
      ...r,
      imageShipping: { ...shipping, needed: true },
      times: { ...r.times, imageNeededAt: event.time },
      // The image moves while the service runs; the preflight's own deadline is for a destination that checks.
      deadlineAt: new Date(Date.now() + IMAGE_SHIPPING_DEADLINE_MS * deadlineScale()).toISOString(),
    });
    if (!next) return LOST_RACE;
  }
  if (!r.sealFor)
    throw new Error(`migration ${r.migrationId} was planned without the destination's sealing key; its image cannot be sealed`);
  const { migrationId, epoch, container, imageId, sourceAgent, artifactLocation, sealFor } = r;
  await sendCommand(
    ctx,
    sourceAgent,
    'ship-image',
    { migrationId, epoch, container, imageId, artifact: { ...artifactLocation, prefix: imagePrefix(artifactLocation.prefix) }, sealFor },
    `${migrationId}.ship-image`,
  );
  ctx.log.info({ migrationId, sourceAgent, imageId, expected: shipping.expected }, 'destination lacks the image; source told to ship it');
}

/** source.image-uploaded: the image is stored; the destination gets signed URLs for it (manifest and every chunk). */
export async function imageUploaded(event: EventOf<'source.image-uploaded'>, record: Current, ctx: FunctionContext): Promise<StepOutcome> {
  const r = record.value;
  const { artifact } = event.data;
  if (event.data.agent !== r.sourceAgent || r.state !== 'preflight' || r.imageShipping?.needed !== true) return;
  if (artifact.storeUrl !== r.artifactLocation.storeUrl || artifact.prefix !== imagePrefix(r.artifactLocation.prefix)) {
    ctx.log.warn({ migrationId: r.migrationId }, 'source.image-uploaded names another place than the plan; ignored');
    return;
  }
  if (!r.imageShipping.artifact) {
    const next = await annotate(ctx.bus, record, {
      ...r,
      imageShipping: { ...r.imageShipping, artifact },
      times: { ...r.times, imageUploadedAt: event.data.uploadedAt },
    });
    if (!next) return LOST_RACE;
  }
  await sendImageUrls(r, artifact.chunkCount, ctx, `${r.migrationId}.image-urls`);
}

/** Every URL of the shipped image at once, in batches: the destination fetches it only once it is all stored. */
async function sendImageUrls(record: RecordIn<'preflight'>, chunkCount: number, ctx: FunctionContext, id: string): Promise<void> {
  for (let from = 0; from === 0 || from < chunkCount; from += URL_BATCH) {
    await sendUrls(record, from, Math.min(URL_BATCH, chunkCount - from), ctx, `${id}.${from}`, 'image');
  }
}

// ---- 3. Freeze and upload at the source ---------------------------------------------------------
// Compensation: resumeSource, once the destination holds no copy (destinationAborted).

/**
 * restore.prepared: the destination is ready. Sign the manifest and the first batch of chunk URLs
 * (they can be signed before the objects exist), then tell the source to freeze: nothing of the
 * planning is left inside the frozen window.
 */
export async function destinationReady(event: EventOf<'restore.prepared'>, record: Current, ctx: FunctionContext): Promise<StepOutcome> {
  const r = record.value;
  if (event.data.agent !== r.destinationAgent) return;
  if (r.state === 'checkpointing') return freezeWhenQuiet(r, ctx);
  if (r.state !== 'preflight') return;
  await sendUrls(r, 0, URL_BATCH, ctx, `${r.migrationId}.chunk-urls.0`);
  const loaded = event.data.imageLoaded;
  const next = await transition(ctx.bus, record, {
    ...r,
    state: 'checkpointing',
    ...(loaded && r.imageShipping ? { imageShipping: { ...r.imageShipping, tags: loaded.tags } } : {}),
    times: { ...r.times, preparedAt: event.time, ...(loaded ? { imageLoadedAt: loaded.loadedAt } : {}) },
  });
  // Lost to frontmanDrained's write, say: again on the record as it is now (the URLs are deduplicated).
  if (!next) return LOST_RACE;
  await freezeWhenQuiet(next.value, ctx);
}

/**
 * frontman.drained: the service's frontman holds new requests and the ones in flight have finished. Either
 * this or restore.prepared comes first (different functions); whichever comes second sends the freeze.
 */
export async function frontmanDrained(event: EventOf<'frontman.drained'>, record: Current, ctx: FunctionContext): Promise<StepOutcome> {
  const r = record.value;
  if (r.frontman?.id !== event.data.frontman || (r.state !== 'preflight' && r.state !== 'checkpointing')) return;
  if (r.frontman.drainedAt !== undefined) return r.state === 'checkpointing' ? freezeSource(r, ctx) : undefined;
  const { drainedAt, finished, unfinished } = event.data;
  const next = await write(ctx.bus, record, { ...r, frontman: { ...r.frontman, drainedAt, finished, unfinished } });
  if (!next) return LOST_RACE;
  if (next.value.state === 'checkpointing') await freezeSource(next.value, ctx);
}

/** The freeze waits for the frontman, if the service has one (its deadline: superviseStalled). */
async function freezeWhenQuiet(record: RecordIn<'checkpointing'>, ctx: FunctionContext): Promise<void> {
  if (record.frontman !== undefined && record.frontman.drainedAt === undefined) {
    ctx.log.info({ migrationId: record.migrationId, frontman: record.frontman.id }, 'destination ready; waiting for the frontman to drain');
    return;
  }
  await freezeSource(record, ctx);
}

async function freezeSource(record: RecordIn<'checkpointing'>, ctx: FunctionContext): Promise<void> {
  const { migrationId, epoch, container, sourceAgent, destinationAgent, artifactLocation, approach, sealFor, pageStream, memoryBeside } =
    record;
  if (!sealFor) {
    // Only a record planned by a build that did not seal: nothing frozen yet, the deadline fails it.
    throw new Error(`migration ${migrationId} was planned without the destination's sealing key; it cannot be checkpointed`);
  }
  await sendCommand(
    ctx,
    sourceAgent,
    'checkpoint',
    {
      migrationId,
      epoch,
      approach,
      container,
      artifact: artifactLocation,
      sealFor,
      ...(pageStream ? { postCopy: pageStream.source } : {}),
      ...(memoryBeside === true ? { memoryBeside } : {}),
      destinationAgent,
    },
    `${migrationId}.checkpoint`,
  );
  ctx.log.info({ migrationId, sourceAgent }, 'destination ready; source commanded to checkpoint');
}

/** restore.urls-needed: the destination reads the source cloud's archive through short-lived signed URLs, batch by batch. */
export async function urlsNeeded(event: EventOf<'restore.urls-needed'>, record: Current, ctx: FunctionContext): Promise<StepOutcome> {
  const r = record.value;
  if (event.data.agent !== r.destinationAgent || (r.state !== 'checkpointing' && r.state !== 'uploaded' && r.state !== 'restoring')) return;
  // Requests are not deduplicated: an agent that restarted asks again for what it lost.
  await sendUrls(r, event.data.fromIndex, event.data.count, ctx, randomUUID());
}

/** checkpoint.uploaded: record the artifact (the destination is already fetching). */
export async function sourceUploaded(event: EventOf<'checkpoint.uploaded'>, record: Current, ctx: FunctionContext): Promise<StepOutcome> {
  const uploaded = event.data;
  const r = record.value;
  const expected = r.state === 'requested' ? undefined : r.artifactLocation;
  if (
    uploaded.agent !== r.sourceAgent ||
    expected?.storeUrl !== uploaded.artifact.storeUrl ||
    expected.prefix !== uploaded.artifact.prefix
  ) {
    ctx.log.warn(
      { migrationId: uploaded.migrationId, agent: uploaded.agent },
      'checkpoint.uploaded does not match the plan (agent or location); ignored',
    );
    return;
  }
  // The destination may have finished first (restore.completed overtook this): then only keep the
  // upload's facts for the timeline.
  if (r.state === 'requested' || r.state === 'preflight' || r.artifact) return;
  const times = {
    ...r.times,
    ...(uploaded.runningCopyStartedAt !== undefined ? { runningCopyStartedAt: uploaded.runningCopyStartedAt } : {}),
    checkpointStartedAt: uploaded.checkpointStartedAt,
    firstByteAt: uploaded.firstByteAt,
    uploadedAt: uploaded.uploadedAt,
  };
  const memory = uploaded.memoryBesideBytes !== undefined ? { memoryBesideBytes: uploaded.memoryBesideBytes } : {};
  const changed =
    r.state === 'checkpointing'
      ? await transition(ctx.bus, record, { ...r, state: 'uploaded', artifact: uploaded.artifact, ...memory, times })
      : await annotate(ctx.bus, record, { ...r, artifact: uploaded.artifact, ...memory, times });
  if (!changed) return LOST_RACE;
}

/**
 * Compensation of step 3, on restore.aborted: the destination holds no copy (it removed the one it
 * restored, if any), so the source may resume its kept checkpoint. The service never runs twice.
 */
export async function destinationAborted(event: EventOf<'restore.aborted'>, record: Current, ctx: FunctionContext): Promise<StepOutcome> {
  const r = record.value;
  if (event.data.agent !== r.destinationAgent || r.state !== 'rolling-back') return;
  if (r.rollback.destinationClear) return resumeSource(r, ctx);
  const how = event.data.removedRestoredCopy ? 'destination removed its restored copy' : 'destination confirmed it holds no copy';
  const clear = await annotate(ctx.bus, record, { ...r, rollback: { destinationClear: true, how } });
  if (!clear) return LOST_RACE;
  await resumeSource(clear.value, ctx);
}

/** `id` defaults to one per epoch (the bus drops repeats); the supervisor passes fresh ones to retry. */
async function resumeSource(
  record: RecordIn<'rolling-back'>,
  ctx: FunctionContext,
  id = `${record.migrationId}.resume.${record.epoch}`,
): Promise<void> {
  const { migrationId, epoch, approach, container, sourceAgent, mode } = record;
  await sendCommand(ctx, sourceAgent, 'resume', { migrationId, epoch, approach, container, ...(mode ? { mode } : {}) }, id);
  ctx.log.info({ migrationId, sourceAgent, mode }, 'source commanded to resume');
}

/** source.resumed: the service runs on the source again; the saga has turned all the way back. */
export async function sourceResumed(event: EventOf<'source.resumed'>, record: Current, ctx: FunctionContext): Promise<StepOutcome> {
  const r = record.value;
  if (event.data.agent !== r.sourceAgent || r.state !== 'rolling-back') return;
  await failMigration(ctx, record, r, r.failure, r.sourceAgent);
  await deleteArtifact(r, ctx);
}

/** source.resume-failed: the compensation itself failed; the service runs nowhere and the operator must act. */
export async function sourceResumeFailed(
  event: EventOf<'source.resume-failed'>,
  record: Current,
  ctx: FunctionContext,
): Promise<StepOutcome> {
  const r = record.value;
  if (event.data.agent !== r.sourceAgent || r.state !== 'rolling-back') return;
  await failMigration(
    ctx,
    record,
    r,
    {
      phase: 'rollback',
      code: 'resume-failed',
      reason: `${r.failure.reason}; then resuming the kept checkpoint on "${r.sourceAgent}" failed too: ${event.data.reason}. The service is not running; the checkpoint is still on the source host and in the store.`,
    },
    null,
  );
}

// ---- 4. Restore at the destination --------------------------------------------------------------
// Compensation: rollBack -> abortDestination (stop restoring, remove any copy, confirm restore.aborted).

/** restore.started: the destination has every verified byte and its engine is restoring. */
export async function restoreStarted(event: EventOf<'restore.started'>, record: Current, ctx: FunctionContext): Promise<StepOutcome> {
  const r = record.value;
  if (event.data.agent !== r.destinationAgent) return;
  if (r.state !== 'checkpointing' && r.state !== 'uploaded') return;
  const next = await transition(ctx.bus, record, {
    ...r,
    state: 'restoring',
    times: { ...r.times, downloadedAt: event.data.downloadedAt },
  });
  if (!next) return LOST_RACE;
}

/**
 * restore.completed: the destination runs the service; from here the migration can only complete
 * (step 5). A completion that arrives after the saga turned back is ignored: the abort already sent
 * removes that copy.
 */
export async function restoreCompleted(event: EventOf<'restore.completed'>, record: Current, ctx: FunctionContext): Promise<StepOutcome> {
  const r = record.value;
  if (event.data.agent !== r.destinationAgent) return;
  if (r.state === 'finalizing') return discardSource(r, ctx);
  if (r.state === 'restored') return beginFinalizing(record, r, ctx);
  if (r.state !== 'checkpointing' && r.state !== 'uploaded' && r.state !== 'restoring') return;
  const upload = relayedUpload(r, event.data);
  const times = { ...upload.times, downloadedAt: r.times.downloadedAt ?? event.data.downloadedAt, restoredAt: event.data.restoredAt };
  if (r.mode === 'post-copy') {
    // The service runs at the destination; its pages still come from the source: wait for restore.pages-arrived.
    const moving = await transition(ctx.bus, record, { ...r, ...upload, state: 'pages-moving', times });
    if (!moving) return LOST_RACE;
    ctx.log.info({ migrationId: r.migrationId }, 'restored post-copy; pages moving');
    return;
  }
  const restored = await transition(ctx.bus, record, {
    ...r,
    ...upload,
    state: 'restored',
    times: {
      ...upload.times,
      downloadedAt: r.times.downloadedAt ?? event.data.downloadedAt,
      restoredAt: event.data.restoredAt,
    },
  });
  if (!restored) return LOST_RACE;
  return beginFinalizing(restored, restored.value, ctx);
}

/**
 * The upload's facts for a record that has not heard checkpoint.uploaded yet: the destination relays them
 * in restore.completed, since that event may reach the saga first (it did, and the record ended with no
 * freeze time: frozen read 0 s). Facts already recorded are kept; a relayed artifact elsewhere than the
 * plan says is ignored.
 */
function relayedUpload(
  r: RecordIn<'checkpointing' | 'uploaded' | 'restoring'>,
  completed: EventData<'restore.completed'>,
): { times: MigrationTimes; artifact?: Artifact; memoryBesideBytes?: number } {
  const upload = completed.upload;
  const expected = r.artifactLocation;
  if (r.artifact || !upload || upload.artifact.storeUrl !== expected.storeUrl || upload.artifact.prefix !== expected.prefix) {
    return { times: r.times, ...(r.artifact ? { artifact: r.artifact } : {}) };
  }
  const { runningCopyStartedAt, memoryBesideBytes, checkpointStartedAt, firstByteAt, uploadedAt } = upload;
  return {
    times: {
      ...r.times,
      ...(runningCopyStartedAt !== undefined ? { runningCopyStartedAt } : {}),
      checkpointStartedAt,
      firstByteAt,
      uploadedAt,
    },
    artifact: upload.artifact,
    ...(memoryBesideBytes !== undefined ? { memoryBesideBytes } : {}),
  };
}

/**
 * checkpoint.failed or restore.failed. Before the freeze (the destination refused to prepare, or the
 * source failed before freezing) the migration simply fails: the service never stopped at the source.
 * After it, the saga turns back.
 */
export async function stepFailed(
  event: EventOf<'checkpoint.failed' | 'restore.failed'>,
  record: Current,
  ctx: FunctionContext,
): Promise<StepOutcome> {
  const r = record.value;
  if (r.state === 'requested' || r.state === 'failed') return;
  const atSource = event.name === 'checkpoint.failed';
  if (event.data.agent !== (atSource ? r.sourceAgent : r.destinationAgent)) return;
  // Before the destination is ready, a failure while the image is shipped is the image's.
  const shippingImage = r.state === 'preflight' && r.imageShipping?.needed === true;
  const failure = {
    phase: shippingImage ? 'image' : atSource ? 'checkpoint' : 'restore',
    code: event.data.code,
    reason: event.data.reason,
  };
  const frozen = event.name === 'checkpoint.failed' ? event.data.containerCheckpointed : r.state !== 'preflight';
  if (!frozen && (r.state === 'preflight' || r.state === 'checkpointing')) {
    await failMigration(ctx, record, r, failure, r.sourceAgent);
    // A shipped image may lie in the store already.
    if (shippingImage) await deleteArtifact(r, ctx);
    return;
  }
  if (r.state !== 'checkpointing' && r.state !== 'uploaded' && r.state !== 'restoring') return;
  if (!(await rollBack(record, r, failure, ctx))) return LOST_RACE;
}

/**
 * Turns the saga back: the epoch goes up (fencing off every forward command still in flight) and the
 * destination is told to abort. The source resumes only when the destination confirms (restore.aborted)
 * or, if it has gone silent, when the supervisor presumes it holds nothing. False on a lost race.
 */
async function rollBack(
  current: Current,
  r: RecordIn<'checkpointing' | 'uploaded' | 'restoring' | 'pages-moving'>,
  failure: MigrationFailure,
  ctx: FunctionContext,
): Promise<boolean> {
  const next = await transition(ctx.bus, current, { ...r, state: 'rolling-back', failure, rollback: { destinationClear: false } });
  if (!next) return false;
  await abortDestination(next.value, ctx);
  ctx.log.warn({ migrationId: r.migrationId, epoch: next.value.epoch, code: failure.code, reason: failure.reason }, 'rolling back');
  return true;
}

/** `id` defaults to one per epoch (the bus drops repeats); the supervisor passes fresh ones to retry. */
async function abortDestination(
  record: RecordIn<'rolling-back'>,
  ctx: FunctionContext,
  id = `${record.migrationId}.abort.${record.epoch}`,
): Promise<void> {
  const { migrationId, epoch, container, destinationAgent, approach } = record;
  await sendCommand(ctx, destinationAgent, 'abort', { migrationId, epoch, approach, container }, id);
}

// ---- 4b. post-copy: the pages move ---------------------------------------------------------------
// Compensation: rollBack (abort the destination's copy, then the source restarts the service cold).

/** restore.pages-arrived: every page is at the destination and the source confirmed: go on to step 5. */
export async function pagesArrived(event: EventOf<'restore.pages-arrived'>, record: Current, ctx: FunctionContext): Promise<StepOutcome> {
  const r = record.value;
  if (event.data.agent !== r.destinationAgent) return;
  if (r.state === 'finalizing') return discardSource(r, ctx);
  if (r.state === 'checkpointing' || r.state === 'uploaded' || r.state === 'restoring') {
    // restore.completed, published before this, has not been handled yet: have this delivered again.
    throw new Error(`migration ${r.migrationId}: pages arrived before its restore was recorded; the event will be delivered again`);
  }
  if (r.state !== 'pages-moving') return;
  const next = await transition(ctx.bus, record, {
    ...r,
    state: 'finalizing',
    times: { ...r.times, pagesArrivedAt: event.data.arrivedAt },
  });
  if (!next) return LOST_RACE;
  ctx.log.info({ migrationId: r.migrationId, bytes: event.data.bytes }, 'every page arrived');
  await discardSource(next.value, ctx);
}

/** restore.pages-lost: the stream ended before the last page; the service's memory state is lost. */
export async function pagesLost(event: EventOf<'restore.pages-lost'>, record: Current, ctx: FunctionContext): Promise<StepOutcome> {
  const r = record.value;
  if (event.data.agent !== r.destinationAgent || r.state !== 'pages-moving') return;
  const failure = { phase: 'pages', code: 'pages-lost' as const, reason: `${event.data.reason}; ${COLD_RESTART}` };
  if (!(await rollBack(record, r, failure, ctx))) return LOST_RACE;
}

/** What turning back from `pages-moving` means, in every failure it ends with. */
const COLD_RESTART =
  "post-copy: the pages not yet moved were only in the frozen source, so the service's memory state is lost; the destination's copy is removed and the source starts the container again from its image";

// ---- 5. Discard at the source, 6. done ----------------------------------------------------------
// No compensation: once the destination confirmed, the migration can only complete.

/** restored -> finalizing: the destination runs the service; the source may now drop its copy. */
async function beginFinalizing(current: Current, r: RecordIn<'restored'>, ctx: FunctionContext): Promise<StepOutcome> {
  const next = await transition(ctx.bus, current, { ...r, state: 'finalizing' });
  if (!next) return LOST_RACE;
  await discardSource(next.value, ctx);
}

async function discardSource(
  record: RecordIn<'finalizing'>,
  ctx: FunctionContext,
  id = `${record.migrationId}.discard.${record.epoch}`,
): Promise<void> {
  const { migrationId, epoch, approach, container, sourceAgent } = record;
  await sendCommand(ctx, sourceAgent, 'discard', { migrationId, epoch, approach, container }, id);
  ctx.log.info({ migrationId, sourceAgent }, 'source commanded to discard its kept checkpoint');
}

/**
 * source.discarded: done; the lock is released and the archive (process memory) deleted. After a
 * migration completed without its source (pendingCleanup), the returning source's discard clears the note.
 */
export async function sourceDiscarded(event: EventOf<'source.discarded'>, record: Current, ctx: FunctionContext): Promise<StepOutcome> {
  const r = record.value;
  if (event.data.agent !== r.sourceAgent) return;
  if (r.state === 'done' && r.pendingCleanup !== undefined) {
    const { pendingCleanup: _done, ...cleaned } = r;
    return (await annotate(ctx.bus, record, cleaned)) ? undefined : LOST_RACE;
  }
  if (r.state !== 'finalizing') return;
  const done = await completeMigration(ctx, record, r);
  if (!done) return LOST_RACE;
  await deleteArtifact(done.value, ctx);
}

// ---- Facts an agent reports when it starts ------------------------------------------------------

/**
 * service.running: an agent reconciling at its start found the container of a migration that ended
 * failed running on its host, while the record places it elsewhere or nowhere. The record must say where
 * the service runs; a second running copy is something the saga cannot explain, and is logged loudly.
 */
export async function serviceRunning(event: EventOf<'service.running'>, record: Current, ctx: FunctionContext): Promise<StepOutcome> {
  const r = record.value;
  const { agent, container } = event.data;
  if (r.state !== 'failed' || container !== r.container || r.runningOn === agent) return;
  if (agent !== r.sourceAgent && agent !== r.destinationAgent) return;
  if (r.runningOn !== null) {
    ctx.log.error(
      { migrationId: r.migrationId, runningOn: r.runningOn, alsoOn: agent },
      `"${container}" is reported running on "${agent}" too; check both hosts`,
    );
    return;
  }
  const corrected = await annotate(ctx.bus, record, {
    ...r,
    runningOn: agent,
    runningOnReport: `agent "${agent}" found it running when it started (${event.time})`,
  });
  if (!corrected) return LOST_RACE;
  ctx.log.warn({ migrationId: r.migrationId, runningOn: agent }, 'record corrected: the service runs where an agent found it');
}

// ---- Deadlines: what the supervisor does with a stalled migration --------------------------------

/**
 * How long after the destination is ready the frontman may take to drain (it bounds its own wait for the
 * requests in flight well below this, UMS_FRONTMAN_DRAIN_SECONDS: 5): past it the frontman is taken for gone.
 */
const FRONTMAN_DRAIN_DEADLINE_MS = 20_000;

/** A rollback that cannot reach the source this long after the request ends as failed, with the operator told. */
const ROLLBACK_GIVE_UP_MS = 10 * 60_000;

/**
 * A migration whose phase outlived its deadline, or whose agent for that phase stopped sending
 * heartbeats, is moved on by the rule for its state: before the freeze it fails; in flight it rolls
 * back; restored it finalizes; finalizing with the source gone it completes (the discard waits in the
 * source's queue); rolling back with a silent destination it resumes the source (availability wins: the
 * abort waiting in the destination's queue removes any copy when its agent returns). Returns what it did.
 */
export async function superviseStalled(
  record: Current,
  alive: ReadonlySet<string>,
  ctx: FunctionContext,
  now: number,
): Promise<string | undefined> {
  const { bus } = ctx;
  const r = record.value;
  const overdue = r.deadlineAt !== undefined && Date.parse(r.deadlineAt) <= now;
  const sourceAlive = r.sourceAgent !== undefined && alive.has(r.sourceAgent);
  const destinationAlive = alive.has(r.destinationAgent);
  const deadline = (what: string) => ({ phase: r.state, code: 'deadline-exceeded' as const, reason: what });

  switch (r.state) {
    case 'requested':
    case 'preflight': {
      // Nothing is frozen yet: give up cleanly; the service keeps running at the source.
      const silent =
        r.state !== 'preflight'
          ? undefined
          : !destinationAlive
            ? r.destinationAgent
            : r.imageShipping?.needed === true && !r.imageShipping.artifact && !sourceAlive
              ? r.sourceAgent
              : undefined;
      if (!overdue && !silent) return undefined;
      const why = silent
        ? `${silent === r.destinationAgent ? 'destination' : 'source'} "${silent}" stopped sending heartbeats before the destination was ready${silent === r.sourceAgent ? ' (it was shipping the image)' : ''}; nothing was frozen`
        : `the migration did not get past ${r.state} in time${r.state === 'preflight' && r.imageShipping?.needed === true ? ' (the image was being shipped)' : ''}; nothing was frozen`;
      await failMigration(ctx, record, r, deadline(why), r.sourceAgent ?? null);
      if (r.state === 'preflight' && r.imageShipping?.needed === true) await deleteArtifact(r, ctx);
      return 'failed before the freeze';
    }
    case 'checkpointing':
    case 'uploaded':
    case 'restoring': {
      if (r.state === 'checkpointing' && r.frontman !== undefined && r.frontman.drainedAt === undefined) {
        // Still before the freeze: a frontman that does not drain in time fails the migration, frozen nothing.
        const since = Date.parse(r.times.preparedAt ?? r.updatedAt);
        if (now - since < FRONTMAN_DRAIN_DEADLINE_MS * deadlineScale()) return undefined;
        const why = `frontman "${r.frontman.id}" did not report drained within ${Math.round((now - since) / 1000)} s of the destination being ready; nothing was frozen`;
        await failMigration(ctx, record, r, { phase: 'drain', code: 'deadline-exceeded', reason: why }, r.sourceAgent);
        return 'failed before the freeze';
      }
      const silent = !destinationAlive ? r.destinationAgent : r.state === 'checkpointing' && !sourceAlive ? r.sourceAgent : undefined;
      if (!overdue && !silent) return undefined;
      const why = silent
        ? `agent "${silent}" stopped sending heartbeats while the migration was ${r.state}`
        : `the migration stayed ${r.state} past its deadline (${r.deadlineAt})`;
      return (await rollBack(record, r, deadline(why), ctx)) ? 'rolling back' : undefined;
    }
    case 'pages-moving': {
      // Only the deadline: a silent source agent is no reason, its page relay runs on without it (and a
      // silent destination agent's relay too); the destination reports the end of the stream either way.
      if (!overdue) return undefined;
      const why = `the pages did not all arrive before the deadline (${r.deadlineAt}); ${COLD_RESTART}`;
      return (await rollBack(record, r, { phase: 'pages', code: 'deadline-exceeded', reason: why }, ctx)) ? 'rolling back' : undefined;
    }
    case 'restored': {
      // The function that moves restored -> finalizing did not finish; the destination has confirmed.
      if (!overdue) return undefined;
      await beginFinalizing(record, r, ctx);
      return 'finalizing';
    }
    case 'finalizing': {
      if (!overdue) return undefined;
      if (!sourceAlive) {
        // The destination runs the service; the source is gone. The discard waits in the source's queue until
        // it expires (signed expiry); after that, the source's agent discards the stopped copy when it starts
        // (it reconciles with this record). The migration itself is over.
        const pendingCleanup = `source "${r.sourceAgent}" was not reachable to discard its kept checkpoint (the stopped container "${r.container}"); its agent discards it when it returns`;
        const done = await completeMigration(ctx, record, r, pendingCleanup);
        if (done) await deleteArtifact(done.value, ctx);
        return done ? 'done (source cleanup pending)' : undefined;
      }
      await discardSource(r, ctx, randomUUID());
      await annotate(bus, record, { ...r, deadlineAt: deadlineFor(r.state, now) });
      return 'discard sent again';
    }
    case 'rolling-back': {
      if (!overdue) return undefined;
      if (r.rollback.destinationClear) {
        if (now - Date.parse(r.times.requestedAt) > ROLLBACK_GIVE_UP_MS && !sourceAlive) {
          await failMigration(
            ctx,
            record,
            r,
            {
              phase: 'rollback',
              code: 'agent-unavailable',
              reason: `${r.failure.reason}; then source "${r.sourceAgent}" stayed unreachable, so its kept checkpoint was not resumed. Start the agent there: it resumes the container from the resume command waiting in its queue.`,
            },
            null,
          );
          return 'failed: source unreachable';
        }
        await resumeSource(r, ctx, randomUUID());
        await annotate(bus, record, { ...r, deadlineAt: deadlineFor(r.state, now) });
        return 'resume sent again';
      }
      if (!destinationAlive) {
        // Certainty is impossible with a silent destination; availability wins. It cannot run a second
        // copy for long: when its agent returns, the abort waiting in its queue (or, if that expired, its
        // reconciliation at start) removes any copy it made.
        const clear = await annotate(bus, record, {
          ...r,
          rollback: {
            destinationClear: true,
            how: `destination "${r.destinationAgent}" silent; presumed without a copy (the abort in its queue removes any when it returns)`,
          },
          deadlineAt: deadlineFor(r.state, now),
        });
        if (clear) await resumeSource(clear.value, ctx);
        return clear ? 'resume (destination presumed gone)' : undefined;
      }
      await abortDestination(r, ctx, randomUUID());
      await annotate(bus, record, { ...r, deadlineAt: deadlineFor(r.state, now) });
      return 'abort sent again';
    }
    default:
      return undefined;
  }
}

/**
 * frontman.released: where the frontman sent what it held, and how much: recorded whatever the state (it
 * comes after restore.completed or source.resumed, often once the migration has ended).
 */
export async function frontmanReleased(event: EventOf<'frontman.released'>, record: Current, ctx: FunctionContext): Promise<StepOutcome> {
  const r = record.value;
  if (r.frontman?.id !== event.data.frontman || r.frontman.releasedAt !== undefined) return;
  const { to, held, expired, releasedAt } = event.data;
  const next = await write(ctx.bus, record, { ...r, frontman: { ...r.frontman, releasedTo: to, held, expired, releasedAt } });
  if (!next) return LOST_RACE;
}

// ---- The end of a migration, either way ---------------------------------------------------------

/**
 * Ends a migration as failed: the record says why and where the service runs, the container's lock is
 * released, and a migration.failed event tells the operator.
 */
async function failMigration(
  ctx: FunctionContext,
  current: Current,
  r: RecordIn<'requested' | 'preflight' | 'checkpointing' | 'rolling-back'>,
  failure: MigrationFailure,
  runningOn: string | null,
): Promise<void> {
  const next: RecordIn<'failed'> = {
    ...r,
    state: 'failed',
    failure,
    runningOn,
    times: { ...r.times, finishedAt: new Date().toISOString() },
  };
  const done = await transition(ctx.bus, current, next);
  if (!done) return;
  await releaseLock(ctx.bus, done.value);
  await ctx.bus.publishEvent(
    makeEvent(
      'migration.failed',
      ctx.source,
      { migrationId: r.migrationId, container: r.container, ...failure, runningOn },
      `${r.migrationId}.failed`,
    ),
  );
}

async function completeMigration(
  ctx: FunctionContext,
  current: Current,
  r: RecordIn<'finalizing'>,
  pendingCleanup?: string,
): Promise<Versioned<RecordIn<'done'>> | undefined> {
  const done = await transition(ctx.bus, current, {
    ...r,
    state: 'done',
    ...(pendingCleanup ? { pendingCleanup } : {}),
    times: { ...r.times, finishedAt: new Date().toISOString() },
  });
  if (!done) return undefined;
  const record = done.value;
  await releaseLock(ctx.bus, record);
  await ctx.bus.publishEvent(
    makeEvent(
      'migration.completed',
      ctx.source,
      {
        migrationId: record.migrationId,
        container: record.container,
        sourceAgent: record.sourceAgent,
        destinationAgent: record.destinationAgent,
        timeline: timelineOf(record),
      },
      `${record.migrationId}.completed`,
    ),
  );
  return done;
}

async function releaseLock(bus: EventBus, record: RecordIn<'done' | 'failed'>): Promise<void> {
  // A migration refused before it found its source never took a lock.
  if (!record.sourceAgent) return;
  const key = lockKey(record.sourceAgent, record.container);
  const lock = await bus.locks.get(key);
  if (lock?.value.migrationId === record.migrationId) await bus.locks.delete(key);
}

/** The archive holds process memory: delete it as soon as the migration has ended either way. */
async function deleteArtifact(record: MigrationRecord, ctx: FunctionContext): Promise<void> {
  const location = record.state === 'requested' ? undefined : record.artifactLocation;
  if (!location || ctx.artifactRetention === 'bucket-lifecycle') return;
  try {
    const store = await ctx.openStore(location.storeUrl);
    for await (const object of store.list(location.prefix)) await store.delete(object.key);
  } catch (error) {
    // The bucket's lifecycle rule removes it later; a failed delete must not fail the migration.
    ctx.log.warn(
      { err: error, migrationId: record.migrationId },
      'could not delete the checkpoint archive; the bucket lifecycle rule will expire it',
    );
  }
}

// ---- Mechanics: the record (compare-and-set), the lock, signed URLs -------------------------------

/**
 * Every command to an agent goes out here: built, validated, and signed for that one agent with an expiry
 * (core/signed-envelope.ts). Agents refuse anything unsigned, signed for another agent, or expired.
 */
async function sendCommand<N extends CommandName>(
  ctx: FunctionContext,
  agentId: string,
  name: N,
  data: CommandData<N>,
  id: string,
): Promise<void> {
  await ctx.bus.sendCommand(agentId, ctx.commandSigner.sign(makeCommand(name, ctx.source, data, id), agentId));
}

/** When the supervisor steps in if a migration stays in `state` from now on. */
export const deadlineFor = (state: MigrationState, from = Date.now()): string | undefined =>
  PHASE_DEADLINE_MS[state] > 0 ? new Date(from + PHASE_DEADLINE_MS[state] * deadlineScale()).toISOString() : undefined;

/**
 * Moves a record to its next state with compare-and-set on its KV revision, so that two concurrent
 * invocations (a redelivery racing the original) cannot both advance it: the loser gets `undefined`.
 * Each state gets its deadline; turning back (rolling-back, failed) raises the epoch, which fences off
 * every command issued before.
 */
async function transition<R extends MigrationRecord>(bus: EventBus, current: Current, next: R): Promise<Versioned<R> | undefined> {
  const from = current.value.state;
  if (!canTransition(from, next.state))
    throw new Error(`migration ${current.value.migrationId}: no transition from ${from} to ${next.state}`);
  const turnsBack = next.state === 'rolling-back' || (next.state === 'failed' && from !== 'rolling-back');
  return write(bus, current, {
    ...next,
    epoch: turnsBack ? current.value.epoch + 1 : current.value.epoch,
    deadlineAt: deadlineFor(next.state),
  });
}

/** Records facts without a change of state (compare-and-set too); undefined if the record moved on. */
function annotate<R extends MigrationRecord>(bus: EventBus, current: Current, next: R): Promise<Versioned<R> | undefined> {
  if (next.state !== current.value.state) throw new Error(`migration ${current.value.migrationId}: annotate cannot change the state`);
  return write(bus, current, next);
}

async function write<R extends MigrationRecord>(bus: EventBus, current: Current, next: R): Promise<Versioned<R> | undefined> {
  const value: R = { ...next, updatedAt: new Date().toISOString() };
  try {
    return { value, revision: await bus.migrations.update(value.migrationId, value, current.revision) };
  } catch (error) {
    if (error instanceof RevisionConflictError) return undefined;
    throw error;
  }
}

async function recordFor(event: EventOf<'migration.requested'>, ctx: FunctionContext): Promise<Current> {
  const { migrationId, container, destinationAgent, sourceAgent } = event.data;
  const existing = await ctx.bus.migrations.get(migrationId);
  if (existing) return existing;
  const record: RecordIn<'requested'> = {
    migrationId,
    state: 'requested',
    epoch: 1,
    deadlineAt: deadlineFor('requested'),
    container,
    destinationAgent,
    ...(sourceAgent ? { sourceAgent } : {}),
    times: { requestedAt: event.time },
    updatedAt: new Date().toISOString(),
  };
  try {
    return { value: record, revision: await ctx.bus.migrations.create(migrationId, record) };
  } catch (error) {
    if (!(error instanceof RevisionConflictError)) throw error;
    const raced = await ctx.bus.migrations.get(migrationId);
    if (!raced) throw error;
    return raced;
  }
}

/**
 * Takes the container's migration lock; returns the id of the migration that holds it instead, if
 * that one is still under way. A lock left by a migration that has ended (its holder crashed between
 * ending it and releasing the lock) is taken over rather than blocking the container for ever.
 */
async function takeLock(key: string, migrationId: string, ctx: FunctionContext): Promise<string | undefined> {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await ctx.bus.locks.create(key, { migrationId });
      return undefined;
    } catch (error) {
      if (!(error instanceof RevisionConflictError)) throw error;
    }
    const holder = await ctx.bus.locks.get(key);
    if (!holder || holder.value.migrationId === migrationId) return undefined;
    const holding = await ctx.bus.migrations.get(holder.value.migrationId);
    if (holding && !isTerminal(holding.value.state)) return holder.value.migrationId;
    ctx.log.warn({ lock: key, staleHolder: holder.value.migrationId }, 'taking over a lock left by a migration that has ended');
    await ctx.bus.locks.delete(key);
  }
  throw new Error(`could not take the migration lock ${key}: it keeps changing hands; the request will be delivered again`);
}

/**
 * Signs short-lived read-only URLs for the manifest (with the first batch) and a batch of chunks, for
 * the destination to read the source cloud's archive without that cloud's credentials.
 */
async function sendUrls(
  record: PlannedRecord,
  fromIndex: number,
  count: number,
  ctx: FunctionContext,
  commandId: string,
  of: 'checkpoint' | 'image' = 'checkpoint',
): Promise<void> {
  const location =
    of === 'image' ? { ...record.artifactLocation, prefix: imagePrefix(record.artifactLocation.prefix) } : record.artifactLocation;
  const store = await ctx.openStore(location.storeUrl);
  const indexes = Array.from({ length: Math.min(count, URL_BATCH) }, (_, i) => fromIndex + i);
  const [manifest, ...chunks] = await Promise.all([
    fromIndex === 0 ? store.signedReadUrl(manifestKey(location.prefix), ctx.signedUrlTtlSeconds) : undefined,
    ...indexes.map((index) => store.signedReadUrl(chunkKey(location.prefix, index), ctx.signedUrlTtlSeconds)),
  ]);
  const signed = chunks.filter((c) => c !== undefined);
  const expiresAt = signed.map((c) => c.expiresAt).sort()[0] ?? new Date().toISOString();
  await sendCommand(
    ctx,
    record.destinationAgent,
    'chunk-urls',
    {
      migrationId: record.migrationId,
      epoch: record.epoch,
      ...(of === 'image' ? { of } : {}),
      ...(manifest ? { manifestUrl: manifest.url } : {}),
      chunks: signed.map((c, i) => ({ index: fromIndex + i, url: c.url })),
      expiresAt,
    },
    commandId,
  );
  ctx.log.info(
    { migrationId: record.migrationId, of, fromIndex, count: signed.length, expiresAt },
    'signed chunk URLs sent to the destination',
  );
}
