import { stat } from 'node:fs/promises';
import type { KeyObject } from 'node:crypto';
import { pipeline, Transform, type Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { URL_BATCH } from '../core/checkpoint-artifact.js';
import type { CommandDelivery, EventBus, Subscription } from '../core/event-bus.js';
import { conflictingPorts } from '../core/container-network.js';
import {
  makeEvent,
  toWire,
  type CommandData,
  type CommandOf,
  type EventData,
  type MigrationEventName,
  type FailureCode,
  type UmsCommand,
} from '../core/events.js';
import { agentPrincipal } from '../core/event-identity.js';
import type { Logger } from '../core/log.js';
import type { ObjectStore } from '../core/object-store.js';
import type { SigningKeyPair } from '../core/signed-envelope.js';
import type { CommandVerifier } from '../core/command-signature.js';
import { archivePolicy } from './archive-policy.js';
import { streamCheckpoint } from './checkpoint-stream.js';
import { admitCommand, checkFence } from './command-fence.js';
import type { ApproachDriver } from './approach-driver.js';
import type { CapabilityProbe } from './capability-probe.js';
import { ContainerNotFoundError, CriuError, EngineError, type ContainerEngine } from './container-engine.js';
import { storeImage } from './image-transfer.js';
import { NotCheckpointableError } from './container-level.js';
import { checkCpuinfo } from './cpu-compatibility.js';
import { resolveCriu } from './criu-command.js';
import type { MigrationApproach } from '../core/migration-approach.js';
import { isTerminal, whereItRuns, type MigrationRecord, type RecordIn } from '../core/migration.js';
import { NoticePublisher } from './notices/notice-publisher.js';
import type { NoticeWatcher } from './notices/notice-watcher.js';
import { Heartbeat, type AgentIdentity } from './registration.js';
import { probeUplink } from './uplink-probe.js';
import { Uplink } from '../core/uplink.js';
import { RestoreAbandonedError, RestoreJob, RestoreRefusedError, type RestoredArchive } from './restore-job.js';
import type { RestoreJournal } from './restore-journal.js';
import { openPageStream, type PageServer, type PageStreamGrant } from '../core/page-stream.js';
import {
  killRelays,
  LazyDump,
  LazyRestore,
  lazyRestoreEnded,
  removeDumpMarkers,
  stopLazyDump,
  type PagesEnd,
  type PostCopyHost,
} from './post-copy/lazy-container.js';

export interface TransferSettings {
  chunkBytes: number;
  /** Chunks moving at once, each way. */
  parallel: number;
  idleTimeoutMs: number;
  /** Origins besides the clouds' own https hosts that signed URLs may point at (UMS_ALLOWED_HTTP_ENDPOINTS). */
  allowedEndpoints?: readonly string[];
  /** The cap on what this host's uploads send, all together (--max-upload-rate); undefined: none. */
  maxUploadBytesPerSecond?: number;
}

export interface HostAgentOptions {
  identity: AgentIdentity;
  /** The private half of the agent's sealing key (agents/sealing-key.ts): opens the checkpoints sent here. */
  sealingKey: KeyObject;
  /** The agent's manifest-signing key pair (agents/signing-key.ts): the manifests of its checkpoints are signed with it. */
  signingKey: SigningKeyPair;
  /** The functions' command-signing public key(s) (UMS_COMMAND_VERIFY_KEY): no command is acted on unless it verifies. */
  commandVerifier: CommandVerifier;
  engine: ContainerEngine;
  /** How each approach this host supports freezes and restores (container-level.ts, service-level.ts). */
  drivers: Partial<Record<MigrationApproach, ApproachDriver>>;
  /** What this host and its containers can do, for the registration. */
  probe: CapabilityProbe;
  bus: EventBus;
  /** This host's own object store, where its checkpoints go. */
  store: ObjectStore;
  transfer: TransferSettings;
  /** This host's record of the restores it started, kept on its disk across agent restarts. */
  journal: RestoreJournal;
  /** Where this host's page relay runs and is reached (post-copy); undefined: this host does not take part in post-copy. */
  postCopy?: PostCopyHost;
  /** Its cloud's eviction and maintenance notices (agents/notices/), published as host.notice facts; undefined: not watched. */
  notices?: NoticeWatcher;
  /** Measure the uplink to the store at start (agents/uplink-probe.ts); default: when notices are watched, which the evacuation policy needs it for. */
  measureUplink?: boolean;
  log: Logger;
}

/**
 * One agent per host: registers the host, then executes the commands addressed to it and reports each
 * outcome as an event. It decides nothing about a migration; the functions do. Commands of one
 * migration run in order, different migrations at once; chunk URLs go straight to the restore that
 * waits for them.
 *
 * Crash safety: a command is acknowledged only when its handler has finished, so one that was under
 * way when the agent died is delivered again after it restarts. Every handler is idempotent (it looks
 * for the fact it would report before acting) and fenced (checkFence: a command from an earlier epoch,
 * or for a step the migration has left, is refused), so a redelivery finishes or reports the
 * interrupted work instead of repeating it.
 */
export class HostAgent {
  private readonly heartbeat: Heartbeat;
  private subscription: Subscription | undefined;
  private readonly lanes = new Map<string, Promise<void>>();
  private readonly restores = new Map<string, RestoreJob>();
  /** URLs that arrived before their restore job (after an agent restart, say). */
  private readonly earlyUrls = new Map<string, Array<CommandData<'chunk-urls'>>>();
  /** post-copy, per migration: the lazy dump this host serves pages from, or the restore it fetches them for. */
  private readonly lazyDumps = new Map<string, LazyDump>();
  private readonly lazyRestores = new Map<string, LazyRestore>();
  private readonly notices: NoticePublisher | undefined;
  /** Every upload of this host goes through it: capped, and measured for the evacuation policy. */
  private readonly uplink: Uplink;

  constructor(private readonly options: HostAgentOptions) {
    this.heartbeat = new Heartbeat(options.identity, options.engine, options.probe, options.bus, options.log);
    this.uplink = new Uplink(options.transfer.maxUploadBytesPerSecond, (bytesPerSecond) => this.heartbeat.recordUplink(bytesPerSecond));
    this.notices =
      options.notices &&
      new NoticePublisher({
        agentId: options.identity.agentId,
        watcher: options.notices,
        bus: options.bus,
        log: options.log.child({ component: 'notices' }),
        hostIsEmpty: () => this.hostIsEmpty(),
      });
  }

  get id(): string {
    return this.options.identity.agentId;
  }

  /** The principal this agent's facts are published as (core/event-identity.ts). */
  private get principal(): string {
    return agentPrincipal(this.id);
  }

  async start(): Promise<void> {
    await this.heartbeat.start();
    // Before reconciling: a notice's deadline does not wait for it.
    this.notices?.start();
    if (this.options.measureUplink ?? this.options.notices !== undefined) {
      void probeUplink(this.options.store, this.uplink, this.id, this.options.log).then(() => this.heartbeat.beat());
    }
    await this.reconcile().catch((error: unknown) =>
      this.options.log.warn({ err: error }, "reconciling with the migration records failed; the saga's commands still clean up"),
    );
    this.subscription = await this.options.bus.consumeCommands(
      this.id,
      (command, delivery) => this.dispatch(command, delivery),
      (error) => this.options.log.warn({ reason: error.message }, 'rejected an invalid command (kept as a dead letter)'),
    );
    this.options.log.info({ agentId: this.id, store: this.options.identity.storeUrl }, 'agent started');
  }

  async stop(): Promise<void> {
    await this.notices?.stop();
    await this.subscription?.stop();
    await this.heartbeat.stop();
  }

  /**
   * Whether nothing on this host is needed any more, so that a cloud's eviction may proceed early (an Azure
   * notice is approved then: agents/notices/notice-publisher.ts). Not while a container runs or is paused
   * here, nor while this agent works on a migration (a command under way, a restore, post-copy pages still
   * served or fetched), nor while a migration from or to this host is unfinished: its source may yet be
   * resumed here. Checked every few seconds while an evicting notice waits; hostEmptied() checks at once.
   */
  async hostIsEmpty(): Promise<boolean> {
    if (this.lanes.size + this.restores.size + this.lazyDumps.size + this.lazyRestores.size > 0) return false;
    const containers = await this.options.engine.listContainers();
    if (containers.some((c) => c.state === 'running' || c.state === 'paused')) return false;
    const records = await this.options.bus.migrations.list();
    return !records.some(({ value }) => !isTerminal(value.state) && (value.sourceAgent === this.id || value.destinationAgent === this.id));
  }

  /** For the drain work, once it has moved the last container away: an evicting notice waiting for that is approved now. */
  async hostEmptied(): Promise<void> {
    await this.notices?.hostEmptied();
  }

  /**
   * At start, before any command: what this host holds is reconciled with the migration records, so
   * that a record says where the service runs even when a command was lost or came too late.
   *
   * - The restore journal (the copies this agent made): an entry of a migration that is done, or has no
   *   record, is of no more use. A copy made for a migration that ended failed is removed, unless the
   *   record places the service nowhere else and the copy runs (then it is the service): the abort that
   *   should have removed it may have expired or been refused. Migrations under way are left to their
   *   commands, which come again.
   * - The engine: a container that runs here while the latest ended-failed migration of it says it runs
   *   elsewhere or nowhere is reported (service.running), and the saga corrects the record.
   * - A kept checkpoint (the stopped source copy) of a migration that completed while this agent was away
   *   (`pendingCleanup`): its discard command may have expired in the queue (commands carry a signed
   *   expiry), so it is discarded here, as that command would have done, and reported (source.discarded).
   */
  private async reconcile(): Promise<void> {
    const { bus, journal, engine, log } = this.options;
    for (const entry of await journal.list()) {
      const record = (await bus.migrations.get(entry.migrationId))?.value;
      if (record?.state === 'pages-moving' && record.destinationAgent === this.id) {
        // The copy restored here runs while its pages arrive; the relay went on without this agent.
        await this.followPagesAgain(record, log);
        continue;
      }
      if (record && record.state !== 'done' && record.state !== 'failed') continue;
      const copy = record?.state === 'failed' ? await engine.inspectContainer(entry.container) : undefined;
      const isTheService = copy?.state === 'running' && (record?.runningOn === null || record?.runningOn === this.id);
      if (record?.state === 'failed' && copy && !isTheService) {
        const driver = record.approach ? this.options.drivers[record.approach] : undefined;
        if (driver) await driver.removeRestored(entry.container);
        else await engine.removeContainer(entry.container, { force: true, withVolumes: true });
        log.warn(
          { migrationId: entry.migrationId, container: entry.container, runningOn: record.runningOn },
          'removed a copy restored here for a migration that rolled back (its abort never reached this agent)',
        );
      }
      await journal.forget(entry.migrationId);
    }

    const here = new Map((await engine.listContainers()).map((c) => [c.name, c.state]));
    const latest = new Map<string, MigrationRecord>();
    for (const { value: record } of await bus.migrations.list()) {
      if (!here.has(record.container) || (record.sourceAgent !== this.id && record.destinationAgent !== this.id)) continue;
      const previous = latest.get(record.container);
      if (!previous || previous.times.requestedAt < record.times.requestedAt) latest.set(record.container, record);
    }
    for (const record of latest.values()) {
      const running = here.get(record.container) === 'running';
      if (
        !running &&
        record.state === 'done' &&
        record.pendingCleanup !== undefined &&
        record.sourceAgent === this.id &&
        whereItRuns(record).agent !== this.id
      ) {
        log.warn(
          { migrationId: record.migrationId, container: record.container, runningOn: whereItRuns(record).agent },
          'discarding the kept checkpoint of a migration that completed while this agent was away',
        );
        await this.discard(record, log);
        continue;
      }
      if (!running || record.state !== 'failed' || record.runningOn === this.id) continue;
      log.warn(
        { migrationId: record.migrationId, container: record.container, recordSays: record.runningOn },
        'the service of a failed migration runs here; reporting it',
      );
      await this.emit('service.running', { migrationId: record.migrationId, agent: this.id, container: record.container });
    }
  }

  private async dispatch(command: UmsCommand, delivery: CommandDelivery): Promise<void> {
    const { migrationId } = command.data;
    if (command.name === 'chunk-urls') {
      if (!(await this.accepts(command))) return;
      const job = this.restores.get(migrationId);
      if (job) job.addUrls(command.data);
      else this.earlyUrls.set(migrationId, [...(this.earlyUrls.get(migrationId) ?? []), command.data]);
      return;
    }
    // An abort must not wait behind the restore it is meant to stop.
    if (command.name === 'abort')
      this.restores.get(migrationId)?.abandon(`migration ${migrationId} is rolling back (epoch ${command.data.epoch})`);
    const previous = this.lanes.get(migrationId) ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(() => this.execute(command, delivery));
    const lane = run
      .catch(() => undefined)
      .finally(() => {
        if (this.lanes.get(migrationId) === lane) this.lanes.delete(migrationId);
      });
    this.lanes.set(migrationId, lane);
    return run;
  }

  private driver(approach: MigrationApproach): ApproachDriver {
    const driver = this.options.drivers[approach];
    if (!driver) {
      throw new UnsupportedApproachError(
        `${approach} level is not available on ${this.id} (it supports ${Object.keys(this.options.drivers).join(', ') || 'none'}); plan the migration with another approach`,
      );
    }
    return driver;
  }

  /** The signature, then the fence; a refusal is kept as a dead letter so that `ums status` shows it. */
  private async accepts(command: UmsCommand): Promise<boolean> {
    const verdict = await admitCommand(this.options.bus, this.options.commandVerifier, command, this.id);
    if (verdict.accepted) return true;
    this.options.log.warn({ migrationId: command.data.migrationId, command: command.name, reason: verdict.reason }, 'refused a command');
    await this.options.bus.deadLetter(`agent-${this.id}`, new TextEncoder().encode(JSON.stringify(toWire(command))), verdict.reason);
    return false;
  }

  private async execute(command: Exclude<UmsCommand, { name: 'chunk-urls' }>, delivery: CommandDelivery): Promise<void> {
    const log = this.options.log.child({ migrationId: command.data.migrationId, command: command.name, epoch: command.data.epoch });
    log.info({ redelivered: delivery.redelivered }, 'command received');
    if (!(await this.accepts(command))) return;
    switch (command.name) {
      case 'checkpoint':
        await this.checkpoint(command, delivery, log);
        break;
      case 'prepare':
        await this.restore(command, log);
        break;
      case 'ship-image':
        await this.shipImage(command, log);
        break;
      case 'abort':
        await this.abort(command, log);
        break;
      case 'discard':
        await this.discard(command.data, log);
        break;
      case 'resume':
        await this.resume(command, log);
        break;
    }
    await this.heartbeat.beat();
  }

  private emit = <N extends MigrationEventName>(
    name: N,
    data: EventData<N>,
    id = `${data.migrationId}.${name}.${this.id}`,
  ): Promise<void> =>
    // Deterministic ids: a command redelivered after a crash re-announces the same fact, which the bus drops.
    this.options.bus.publishEvent(makeEvent(name, `/ums/agents/${this.id}`, data, id));

  private async checkpoint(command: CommandOf<'checkpoint'>, delivery: CommandDelivery, log: Logger): Promise<void> {
    const { migrationId, container, artifact, approach, sealFor } = command.data;
    const { engine, store, transfer, bus } = this.options;
    const failed = (code: FailureCode, reason: string, containerCheckpointed: boolean) =>
      this.emit('checkpoint.failed', { migrationId, agent: this.id, code, reason, containerCheckpointed });
    if (
      (await bus.lastEvent(migrationId, 'checkpoint.uploaded', this.principal)) ||
      (await bus.lastEvent(migrationId, 'checkpoint.failed', this.principal))
    ) {
      log.info('checkpoint already reported; nothing to do');
      return;
    }
    let driver: ApproachDriver;
    try {
      driver = this.driver(approach);
    } catch (error) {
      return failed('approach-infeasible', describe(error), false);
    }
    const before = await engine.inspectContainer(container);
    if (!before) return failed('container-not-found', `container "${container}" does not exist on ${this.id}`, false);
    let frozen: boolean | undefined;
    try {
      frozen = await driver.frozen(container);
    } catch (error) {
      // Nothing was frozen by this command unless an earlier delivery of it got that far.
      return failed(
        'engine-failed',
        `cannot tell whether "${container}" on ${this.id} is running: ${describe(error)}`,
        delivery.redelivered,
      );
    }
    if (frozen && delivery.redelivered) {
      // This agent died while checkpointing: the freeze happened, but the archive went nowhere. The
      // frozen copy is intact; the saga resumes it.
      return failed(
        'agent-restarted',
        `the agent on ${this.id} restarted while checkpointing "${container}" (frozen there, its checkpoint kept): the migration turns back and resumes it there`,
        true,
      );
    }
    if (before.state !== 'running' || frozen)
      return failed(
        'container-not-running',
        `container "${container}" on ${this.id} is ${frozen ? 'frozen' : before.state}, not running`,
        frozen === true || before.checkpointed,
      );
    let lazy: LazyDump | undefined;
    if (command.data.postCopy !== undefined) {
      // post-copy: the runtime shim makes Podman's checkpoint lazy, and the page relay waits for the destination.
      const prepared = await this.prepareLazyDump(command.data, command.data.postCopy, before.id).catch((error: unknown) => error as Error);
      if (prepared instanceof Error) return failed('approach-infeasible', `post-copy on ${this.id}: ${prepared.message}`, false);
      lazy = prepared;
    }
    try {
      let bytes = 0;
      let memoryBesideBytes: number | undefined;
      const uploaded = await streamCheckpoint(
        (frozen) =>
          driver.checkpoint(container, {
            frozen,
            ...(command.data.memoryBeside === true ? { memoryBeside: true, memorySent: (sent) => (memoryBesideBytes = sent) } : {}),
            ...(command.data.destinationAgent !== undefined
              ? { beforeFreeze: (bytes) => this.destinationTook(migrationId, command.data.destinationAgent!, bytes) }
              : {}),
          }),
        store,
        migrationId,
        artifact,
        {
          chunkBytes: transfer.chunkBytes,
          parallel: transfer.parallel,
          sealFor,
          signer: { agentId: this.id, key: this.options.signingKey },
          uplink: this.uplink,
          onChunk: async (chunk, sealing) => {
            await this.emit('checkpoint.chunk', { migrationId, agent: this.id, chunk, sealing }, `${migrationId}.chunk.${chunk.index}`);
            bytes += chunk.sizeBytes;
            void this.emit('checkpoint.progress', { migrationId, agent: this.id, bytes }, `${migrationId}.progress.${chunk.index}`).catch(
              () => undefined,
            );
          },
        },
      );
      log.info(
        {
          bytes: uploaded.artifact.sizeBytes,
          ...(memoryBesideBytes !== undefined ? { memoryBesideBytes } : {}),
          chunks: uploaded.artifact.chunkCount,
          ms: uploaded.uploadedAt.getTime() - uploaded.checkpointStartedAt.getTime(),
        },
        'checkpoint uploaded',
      );
      // A checkpoint the shim did not make lazy holds all the memory and kept the source whole: turn back.
      await lazy?.confirmLazy();
      await this.emit('checkpoint.uploaded', {
        migrationId,
        agent: this.id,
        container,
        image: before.image,
        artifact: uploaded.artifact,
        ...(uploaded.runningCopyStartedAt !== undefined ? { runningCopyStartedAt: uploaded.runningCopyStartedAt.toISOString() } : {}),
        ...(memoryBesideBytes !== undefined ? { memoryBesideBytes } : {}),
        checkpointStartedAt: uploaded.checkpointStartedAt.toISOString(),
        firstByteAt: uploaded.firstByteAt.toISOString(),
        uploadedAt: uploaded.uploadedAt.toISOString(),
      });
      if (lazy) this.servePages(migrationId, lazy, log);
    } catch (error) {
      // The dump, if it started, stays until the saga's resume stops it (the service restarts there afresh).
      if (lazy) this.lazyDumps.set(migrationId, lazy);
      // Unknown counts as frozen: resuming a service that runs is harmless, leaving one frozen is not.
      const frozenNow = (await driver.frozen(container).catch(() => true)) === true;
      const code: FailureCode =
        error instanceof ContainerNotFoundError
          ? 'container-not-found'
          : error instanceof NotCheckpointableError || (error instanceof CriuError && !frozenNow)
            ? 'not-checkpointable'
            : frozenNow
              ? 'upload-failed'
              : 'engine-failed';
      log.error({ err: error, frozen: frozenNow }, 'checkpoint failed');
      await failed(code, describe(error), frozenNow);
    }
  }

  /**
   * The destination lacks the container's image: save it and store it for the destination (sealed, with a signed
   * manifest) while the service runs. A failure is the source's checkpoint.failed with nothing frozen, which ends
   * the migration failed before the freeze.
   */
  private async shipImage(command: CommandOf<'ship-image'>, log: Logger): Promise<void> {
    const { migrationId, container, imageId } = command.data;
    const { engine, store, transfer, bus } = this.options;
    if (await bus.lastEvent(migrationId, 'source.image-uploaded', this.principal)) {
      log.info('image already shipped; nothing to do');
      return;
    }
    const short = imageId.replace(/^sha256:/, '').slice(0, 12);
    try {
      const stored = await storeImage(engine, store, command.data, {
        chunkBytes: transfer.chunkBytes,
        parallel: transfer.parallel,
        signer: { agentId: this.id, key: this.options.signingKey },
        uplink: this.uplink,
      });
      const ms = stored.uploadedAt.getTime() - stored.startedAt.getTime();
      log.info({ imageId, bytes: stored.artifact.sizeBytes, chunks: stored.artifact.chunkCount, ms }, 'image shipped');
      await this.emit('source.image-uploaded', {
        migrationId,
        agent: this.id,
        imageId,
        artifact: stored.artifact,
        startedAt: stored.startedAt.toISOString(),
        uploadedAt: stored.uploadedAt.toISOString(),
      });
    } catch (error) {
      log.error({ err: error, imageId }, 'shipping the image failed');
      const code: FailureCode = error instanceof EngineError ? (error.status === 404 ? 'image-missing' : 'engine-failed') : 'upload-failed';
      await this.emit('checkpoint.failed', {
        migrationId,
        agent: this.id,
        code,
        reason: `shipping the image of "${container}" (id ${short}) from ${this.id} failed: ${describe(error)}; nothing was frozen`,
        containerCheckpointed: false,
      });
    }
  }

  private async restore(command: CommandOf<'prepare'>, log: Logger): Promise<void> {
    const { migrationId, container, approach, image, imageId } = command.data;
    const { transfer, bus, engine, journal } = this.options;
    let driver: ApproachDriver;
    try {
      driver = this.driver(approach);
    } catch (error) {
      await this.emit('restore.failed', { migrationId, agent: this.id, code: 'approach-infeasible', reason: describe(error) });
      return;
    }
    if (
      (await bus.lastEvent(migrationId, 'restore.completed', this.principal)) ||
      (await bus.lastEvent(migrationId, 'restore.failed', this.principal))
    ) {
      log.info('restore already reported; nothing to do');
      return;
    }
    if (await journal.get(migrationId)) {
      // This agent started the restore and then died. What the engine did meanwhile decides: a running
      // container is the finished restore; anything else is a half-made one, removed to start over.
      const existing = await engine.inspectContainer(container);
      if (existing?.state === 'running' && (await driver.restored(container))) {
        log.info({ containerId: existing.id }, 'found the restore finished while the agent was down');
        const at = existing.startedAt ?? new Date().toISOString();
        const uploaded = await bus
          .lastEvent(migrationId, 'checkpoint.uploaded', agentPrincipal(command.data.sourceAgent))
          .catch(() => undefined);
        await this.emit('restore.completed', {
          migrationId,
          agent: this.id,
          container,
          containerId: existing.id,
          downloadedAt: at,
          restoredAt: at,
          ...uploadFacts(uploaded?.data),
        });
        return;
      }
      if (existing) await engine.removeContainer(container, { force: true, withVolumes: true });
      await journal.forget(migrationId);
      log.warn('restarting a restore that was interrupted by an agent restart');
    }
    // post-copy: Podman restores once the archive ends, and the shim then needs the page relay's marker, which
    // needs the source's page server (announced before its freeze): the archive's end waits for it.
    const grant = command.data.postCopy;
    const lazyReady = grant === undefined ? undefined : this.prepareLazyRestore(command.data, grant);
    lazyReady?.catch(() => undefined);
    const job = new RestoreJob({
      command: command.data,
      engine: this.options.engine,
      bus: this.options.bus,
      emit: this.emit,
      agentId: this.id,
      sealingKey: this.options.sealingKey,
      log,
      parallel: transfer.parallel,
      urlBatch: URL_BATCH,
      urlLowWater: URL_BATCH / 4,
      idleTimeoutMs: transfer.idleTimeoutMs,
      ...(approach === 'container' ? { checkRequirements: () => this.checkRequirements(command.data) } : {}),
      beforeRestore: () => journal.record(migrationId, container),
      restoreFrom: (archive) => driver.restore({ container, image, imageId }, lazyReady ? holdEndUntil(archive, lazyReady) : archive),
      removePartial: () => driver.removeRestored(container),
      urlPolicy: { endpoints: transfer.allowedEndpoints ?? [] },
      // A Podman export becomes whatever container its config.dump and spec.dump say: no more than the source's.
      ...(approach === 'container' ? { inspectArchive: archivePolicy(command.data, this.id) } : {}),
    });
    this.restores.set(migrationId, job);
    for (const urls of this.earlyUrls.get(migrationId) ?? []) job.addUrls(urls);
    this.earlyUrls.delete(migrationId);
    let restored: RestoredArchive;
    try {
      restored = await job.run();
    } catch (error) {
      await this.lazyRestores.get(migrationId)?.release();
      this.lazyRestores.delete(migrationId);
      // The job removed whatever the engine made of the archive; if it could not, the journal keeps the
      // entry so that an abort still removes it.
      if ((await engine.inspectContainer(container).catch(() => 'unknown')) === undefined) await journal.forget(migrationId);
      if (error instanceof RestoreAbandonedError) {
        log.info({ reason: error.message }, 'restore abandoned');
        return;
      }
      const code: FailureCode = error instanceof RestoreRefusedError ? error.code : 'engine-failed';
      log.error({ err: error, code }, 'restore failed');
      await this.emit('restore.failed', { migrationId, agent: this.id, code, reason: describe(error) });
      return;
    } finally {
      this.restores.delete(migrationId);
    }
    // From here on the service runs on this host. Nothing below may report a failure: if the broker is
    // unreachable, the command fails, comes back, and finds the container running (see above).
    log.info({ restoreMs: restored.restoredAt.getTime() - restored.downloadedAt.getTime() }, 'restored');
    if (!(await checkFence(bus, command, this.id)).accepted) {
      // The saga turned back while the engine restored: the abort behind this command removes the copy.
      log.warn('restored, but the migration is rolling back; leaving the copy to the abort');
      return;
    }
    await this.emit('restore.completed', {
      migrationId,
      agent: this.id,
      container,
      containerId: restored.containerId,
      downloadedAt: restored.downloadedAt.toISOString(),
      restoredAt: restored.restoredAt.toISOString(),
      ...uploadFacts(restored.uploaded),
    });
    const lazyRestore = this.lazyRestores.get(migrationId);
    if (lazyRestore)
      this.reportPages(
        migrationId,
        lazyRestore.ended().then((outcome) => ({ outcome, endedAt: new Date() })),
        log,
      );
  }

  // ---- post-copy (agents/post-copy/lazy-container.ts) ---------------------------------------------

  private postCopyHost(): PostCopyHost {
    if (!this.options.postCopy) throw new Error('this agent has no page relay address (UMS_PAGE_RELAY_ADDRESS)');
    return this.options.postCopy;
  }

  /** Starts the page relay and leaves the shim its marker, then says where the destination finds the pages. */
  private async prepareLazyDump(data: CommandData<'checkpoint'>, grant: PageStreamGrant, containerId: string): Promise<LazyDump> {
    if (data.approach !== 'container') throw new Error(`post-copy is container level only, not ${data.approach} level`);
    const key = openPageStream(grant, this.options.sealingKey, data.migrationId);
    const lazy = await LazyDump.prepare(this.postCopyHost(), containerId, key);
    const pageServer: PageServer = { host: lazy.relay.host, port: lazy.relay.port, containerId };
    await this.emit('checkpoint.page-server', { migrationId: data.migrationId, agent: this.id, pageServer });
    return lazy;
  }

  /** In the background: the dump ends when every page was served, or the stream was lost; reports which. */
  private servePages(migrationId: string, lazy: LazyDump, log: Logger): void {
    this.lazyDumps.set(migrationId, lazy);
    void (async () => {
      const end = await lazy.ended();
      this.lazyDumps.delete(migrationId);
      // Thawed tasks run without the network Podman tore down, beside a destination copy that waits: end
      // them now rather than at the saga's resume (which then starts the container afresh).
      if (end.kind === 'lost' && end.sourceTasks === 'thawed') await lazy.stop();
      log.info(
        { outcome: end.kind, ...(end.kind === 'lost' ? { reason: end.reason, sourceTasks: end.sourceTasks } : {}) },
        'page stream ended at the source',
      );
      await this.emit('checkpoint.pages-served', {
        migrationId,
        agent: this.id,
        outcome: end.kind,
        ...(end.kind === 'lost' ? { reason: end.reason, sourceTasks: end.sourceTasks } : {}),
      });
    })().catch((error: unknown) => log.error({ err: error }, 'following the lazy dump failed'));
  }

  /** Waits for the source's page server, then starts this host's relay and leaves the shim its marker. */
  private async prepareLazyRestore(data: CommandData<'prepare'>, grant: PageStreamGrant): Promise<void> {
    const key = openPageStream(grant, this.options.sealingKey, data.migrationId);
    const source = agentPrincipal(data.sourceAgent);
    let announced: PageServer | undefined;
    for (const deadline = Date.now() + PAGE_SERVER_WAIT_MS; announced === undefined;) {
      announced = (await this.options.bus.lastEvent(data.migrationId, 'checkpoint.page-server', source))?.data.pageServer;
      if (announced === undefined && Date.now() > deadline)
        throw new Error(`the source announced no page server within ${PAGE_SERVER_WAIT_MS / 1000} s`);
      if (announced === undefined) await sleep(200);
    }
    const lazy = await LazyRestore.prepare(this.postCopyHost(), announced.containerId, key, announced);
    this.lazyRestores.set(data.migrationId, lazy);
  }

  /** In the background: reports when every page arrived, or that the stream was lost (the copy then waits). */
  private reportPages(migrationId: string, ended: Promise<PagesEnd>, log: Logger): void {
    void (async () => {
      const { outcome, endedAt } = await ended;
      if (outcome.kind === 'complete') {
        this.lazyRestores.delete(migrationId);
        log.info({ bytes: outcome.bytesFromPeer, reconnects: outcome.reconnects }, 'every page arrived');
        await this.emit('restore.pages-arrived', {
          migrationId,
          agent: this.id,
          bytes: outcome.bytesFromPeer,
          arrivedAt: endedAt.toISOString(),
        });
      } else {
        log.error(
          { reason: outcome.reason },
          'page stream lost: the restored copy waits on its next missing page until the abort removes it',
        );
        await this.emit('restore.pages-lost', { migrationId, agent: this.id, reason: outcome.reason });
      }
    })().catch((error: unknown) => log.error({ err: error }, 'following the page stream failed'));
  }

  /** At start, for a post-copy restore made here before this agent restarted: reports how its page stream ends. */
  private async followPagesAgain(record: RecordIn<'pages-moving'>, log: Logger): Promise<void> {
    const announced = await this.options.bus.lastEvent(record.migrationId, 'checkpoint.page-server', agentPrincipal(record.sourceAgent));
    if (!announced || !this.options.postCopy) return;
    log.info({ migrationId: record.migrationId }, 'following the page stream of a restore made before this agent restarted');
    this.reportPages(
      record.migrationId,
      lazyRestoreEnded(this.options.postCopy, announced.data.pageServer.containerId),
      log.child({ migrationId: record.migrationId }),
    );
  }

  /** After the destination's copy is gone: stops its page relay, held or orphaned by an agent restart. */
  private async releasePages(migrationId: string): Promise<void> {
    const lazy = this.lazyRestores.get(migrationId);
    this.lazyRestores.delete(migrationId);
    if (lazy) return lazy.release();
    const grant = (await this.options.bus.migrations.get(migrationId))?.value.pageStream?.destination;
    if (grant) await killRelays(grant.streamId);
  }

  /**
   * post-copy's turning back at the source: the pages that never moved were only in the frozen tasks, and
   * Podman has already torn their network down, so what is left of the dump and of the tasks is killed and
   * the container starts afresh from its image (Podman's record says Exited). Idempotent.
   */
  private async restartCold(migrationId: string, container: string, log: Logger): Promise<void> {
    const { engine } = this.options;
    const current = await engine.inspectContainer(container);
    if (current === undefined) throw new ContainerNotFoundError(container, this.id);
    if (current.state === 'running') return;
    const lazy = this.lazyDumps.get(migrationId);
    if (lazy) await lazy.stop();
    else {
      const grant = (await this.options.bus.migrations.get(migrationId))?.value.pageStream?.source;
      await stopLazyDump(this.postCopyHost(), current.id, grant?.streamId);
    }
    this.lazyDumps.delete(migrationId);
    await engine.startContainer(container);
    log.warn({ container }, 'started the container afresh: its memory state was lost with the page stream');
  }

  /**
   * Volumes copied before the freeze (container level): resolves once the destination reports (restore.progress)
   * that it holds the stream up to `sentBytes`, so that the freeze does not wait on it. The chunk still being
   * filled cannot have left yet: the destination is waited for up to the last whole chunk. Rejects, and the
   * service is not frozen, if the destination fails or takes nothing for the idle timeout.
   */
  private async destinationTook(migrationId: string, destination: string, sentBytes: number): Promise<void> {
    const { bus, transfer } = this.options;
    const wanted = Math.floor(sentBytes / transfer.chunkBytes) * transfer.chunkBytes;
    if (wanted === 0) return;
    let lastProgressAt = Date.now();
    let settle: (error?: Error) => void = () => undefined;
    const took = new Promise<void>((resolve, reject) => {
      settle = (error) => (error ? reject(error) : resolve());
    });
    const subscription = await bus.followMigration(migrationId, (event) => {
      if (event.name === 'restore.progress' && event.data.agent === destination) {
        lastProgressAt = Date.now();
        if (event.data.bytes < wanted) return;
        settle();
        return 'stop';
      }
      if (event.name === 'restore.failed' && event.data.agent === destination) {
        settle(new Error(`the destination ${destination} gave up while the volumes were copied (${event.data.reason}); not freezing`));
        return 'stop';
      }
    });
    const idle = setInterval(() => {
      if (Date.now() - lastProgressAt > transfer.idleTimeoutMs)
        settle(
          new Error(
            `the destination ${destination} took nothing of the volumes' copy for ${transfer.idleTimeoutMs / 1000} s; not freezing`,
          ),
        );
    }, 1_000);
    try {
      await took;
    } finally {
      clearInterval(idle);
      await subscription.stop();
    }
  }

  /**
   * What makes a container-level restore fail after the freeze, or the service die after it (SIGILL on a
   * CPU without the features it picked at start), checked here before the source freezes.
   */
  private async checkRequirements({ requirements, container }: CommandData<'prepare'>): Promise<void> {
    if (requirements?.cpuinfo !== undefined) {
      const criu = await resolveCriu();
      if (criu === undefined)
        throw new RestoreRefusedError('destination-incompatible', `no criu on ${this.id} to check the source's CPU features against`);
      const verdict = await checkCpuinfo(criu, requirements.cpuinfo);
      if (!verdict.compatible) throw new RestoreRefusedError('destination-incompatible', `${this.id}: ${verdict.reason}`);
    }
    // Bind mounts stay on their host: a path missing here would fail the restore after the freeze.
    for (const bind of requirements?.binds ?? []) {
      if ((await stat(bind.source).catch(() => undefined)) === undefined)
        throw new RestoreRefusedError(
          'destination-incompatible',
          `"${container}" bind-mounts the host path ${bind.source} at ${bind.destination}, which ${this.id} does not have: host paths are not moved (volumes are); create it there, or use a volume`,
        );
    }
    const wanted = requirements?.published ?? [];
    if (wanted.length > 0) {
      const running = (await this.options.engine.listContainers()).filter((c) => c.state === 'running' && c.name !== container);
      for (const other of running) {
        const taken = conflictingPorts(wanted, other.published);
        if (taken.length > 0) {
          throw new RestoreRefusedError(
            'destination-incompatible',
            `host port ${taken.map((p) => `${p.hostPort}/${p.protocol}`).join(', ')} that "${container}" publishes is already published on ${this.id} by "${other.name}": free it there, or migrate elsewhere`,
          );
        }
      }
    }
  }

  /**
   * Rolling back: the restore (if any) has stopped, since this runs in the migration's lane after it.
   * Removes the container only if this agent's journal says it made it for this migration.
   */
  private async abort(command: CommandOf<'abort'>, log: Logger): Promise<void> {
    const { migrationId, container, epoch, approach } = command.data;
    const { engine, journal } = this.options;
    let removed = false;
    if (await journal.get(migrationId)) {
      if (await engine.inspectContainer(container)) {
        await this.driver(approach).removeRestored(container);
        removed = true;
        log.warn({ container }, 'removed the copy restored here: the migration rolled back');
      }
      await journal.forget(migrationId);
    }
    // post-copy: only now that its copy is gone may the relay let go of the lazy-pages daemon (never before:
    // a copy that could read a page that did not arrive would run on zeros).
    await this.releasePages(migrationId);
    await this.emit(
      'restore.aborted',
      { migrationId, agent: this.id, container, removedRestoredCopy: removed },
      `${migrationId}.restore.aborted.${epoch}`,
    );
  }

  /** Removes the kept checkpoint (a discard command, or the reconciliation at start), then says so. */
  private async discard(
    { migrationId, container, approach }: Pick<CommandOf<'discard'>['data'], 'migrationId' | 'container' | 'approach'>,
    log: Logger,
  ): Promise<void> {
    // post-copy: a source agent that restarted while its pages moved left the shim's records of the dump.
    const id = this.options.postCopy ? (await this.options.engine.inspectContainer(container))?.id : undefined;
    try {
      await this.driver(approach).discard(container);
      if (this.options.postCopy && id !== undefined) await removeDumpMarkers(this.options.postCopy, id);
    } catch (error) {
      log.error({ err: error, container }, 'discard refused');
      throw error;
    }
    log.info({ container }, 'kept checkpoint discarded');
    // The registration must stop listing the copy before the migration is declared done: a request made at
    // once (moving it back) would otherwise find the container here too.
    await this.heartbeat.beat();
    await this.emit('source.discarded', { migrationId, agent: this.id, container });
    // A service has left for good: an eviction waiting for an empty host may be approved now, not at the next check.
    void this.hostEmptied().catch(() => undefined);
  }

  private async resume(command: CommandOf<'resume'>, log: Logger): Promise<void> {
    const { migrationId, container, approach } = command.data;
    try {
      if (command.data.mode === 'post-copy') {
        await this.restartCold(migrationId, container, log);
        await this.emit('source.resumed', { migrationId, agent: this.id, container });
        return;
      }
      await this.driver(approach).resume(container);
      log.info({ container }, 'resumed from the kept checkpoint');
      await this.emit('source.resumed', { migrationId, agent: this.id, container });
    } catch (error) {
      log.error({ err: error, container }, 'resume failed');
      await this.emit('source.resume-failed', { migrationId, agent: this.id, container, reason: describe(error) });
    }
  }
}

/** How long a post-copy destination waits for the source to announce its page server. */
const PAGE_SERVER_WAIT_MS = 60_000;

/**
 * The archive as the engine reads it, except that its end waits for `ready` (its bytes do not): the engine
 * restores only once the archive has ended. A failed `ready` fails the archive, and so the restore.
 */
function holdEndUntil(archive: Readable, ready: Promise<void>): Readable {
  const held = new Transform({
    transform: (chunk: Buffer, _encoding, done) => done(null, chunk),
    flush: (done) =>
      void ready.then(
        () => done(),
        (error: unknown) => done(error instanceof Error ? error : new Error(String(error))),
      ),
  });
  pipeline(archive, held, () => undefined);
  return held;
}

class UnsupportedApproachError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnsupportedApproachError';
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The source's upload facts relayed in restore.completed (see its schema: the saga may see that event first). */
function uploadFacts(uploaded: EventData<'checkpoint.uploaded'> | undefined): Pick<EventData<'restore.completed'>, 'upload'> {
  if (!uploaded) return {};
  const { artifact, runningCopyStartedAt, memoryBesideBytes, checkpointStartedAt, firstByteAt, uploadedAt } = uploaded;
  return {
    upload: {
      artifact,
      ...(runningCopyStartedAt !== undefined ? { runningCopyStartedAt } : {}),
      ...(memoryBesideBytes !== undefined ? { memoryBesideBytes } : {}),
      checkpointStartedAt,
      firstByteAt,
      uploadedAt,
    },
  };
}
