import { URL_BATCH } from '../core/checkpoint-artifact.js';
import type { EventBus, Subscription } from '../core/event-bus.js';
import { makeEvent, type CommandData, type CommandOf, type EventData, type EventName, type FailureCode, type UmsCommand } from '../core/events.js';
import type { Logger } from '../core/log.js';
import type { ObjectStore } from '../core/object-store.js';
import { streamCheckpoint } from './checkpoint-stream.js';
import { ContainerNotFoundError, type ContainerEngine } from './container-engine.js';
import { Heartbeat, type AgentIdentity } from './registration.js';
import { RestoreAbandonedError, RestoreJob, RestoreRefusedError } from './restore-job.js';

export interface TransferSettings {
  chunkBytes: number;
  /** Chunks moving at once, each way. */
  parallel: number;
  idleTimeoutMs: number;
}

export interface HostAgentOptions {
  identity: AgentIdentity;
  engine: ContainerEngine;
  bus: EventBus;
  /** This host's own object store, where its checkpoints go. */
  store: ObjectStore;
  transfer: TransferSettings;
  log: Logger;
}

/**
 * One agent per host: registers the host, then executes the commands addressed to it and reports each
 * outcome as an event. It decides nothing about a migration; the functions do. Commands of one
 * migration run in order, different migrations at once; chunk URLs go straight to the restore that
 * waits for them.
 */
export class HostAgent {
  private readonly heartbeat: Heartbeat;
  private subscription: Subscription | undefined;
  private readonly lanes = new Map<string, Promise<void>>();
  private readonly restores = new Map<string, RestoreJob>();
  /** URLs that arrived before their restore job (after an agent restart, say). */
  private readonly earlyUrls = new Map<string, Array<CommandData<'chunk-urls'>>>();

  constructor(private readonly options: HostAgentOptions) {
    this.heartbeat = new Heartbeat(options.identity, options.engine, options.bus, options.log);
  }

  get id(): string {
    return this.options.identity.agentId;
  }

  async start(): Promise<void> {
    await this.heartbeat.start();
    this.subscription = await this.options.bus.consumeCommands(
      this.id,
      (command) => this.dispatch(command),
      (error) => this.options.log.warn({ reason: error.message }, 'rejected an invalid command (kept as a dead letter)'),
    );
    this.options.log.info({ agentId: this.id, store: this.options.identity.storeUrl }, 'agent started');
  }

  async stop(): Promise<void> {
    await this.subscription?.stop();
    await this.heartbeat.stop();
  }

  private dispatch(command: UmsCommand): Promise<void> {
    const { migrationId } = command.data;
    if (command.name === 'chunk-urls') {
      const job = this.restores.get(migrationId);
      if (job) job.addUrls(command.data);
      else this.earlyUrls.set(migrationId, [...(this.earlyUrls.get(migrationId) ?? []), command.data]);
      return Promise.resolve();
    }
    const previous = this.lanes.get(migrationId) ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(() => this.execute(command));
    const lane = run.catch(() => undefined).finally(() => {
      if (this.lanes.get(migrationId) === lane) this.lanes.delete(migrationId);
    });
    this.lanes.set(migrationId, lane);
    return run;
  }

  private async execute(command: Exclude<UmsCommand, { name: 'chunk-urls' }>): Promise<void> {
    const log = this.options.log.child({ migrationId: command.data.migrationId, command: command.name });
    log.info('command received');
    switch (command.name) {
      case 'checkpoint':
        await this.checkpoint(command, log);
        break;
      case 'prepare':
        await this.restore(command, log);
        break;
      case 'discard':
        await this.discard(command, log);
        break;
      case 'resume':
        await this.resume(command, log);
        break;
    }
    await this.heartbeat.beat();
  }

  private emit = <N extends EventName>(name: N, data: EventData<N>, id = `${data.migrationId}.${name}.${this.id}`): Promise<void> =>
    // Deterministic ids: a command redelivered after a crash re-announces the same fact, which the bus drops.
    this.options.bus.publishEvent(makeEvent(name, `/ums/agents/${this.id}`, data, id));

  private async checkpoint(command: CommandOf<'checkpoint'>, log: Logger): Promise<void> {
    const { migrationId, container, artifact } = command.data;
    const { engine, store, transfer } = this.options;
    const failed = (code: FailureCode, reason: string, containerCheckpointed: boolean) =>
      this.emit('checkpoint.failed', { migrationId, agent: this.id, code, reason, containerCheckpointed });
    const before = await engine.inspectContainer(container);
    if (!before) return failed('container-not-found', `container "${container}" does not exist on ${this.id}`, false);
    if (before.state !== 'running') return failed('container-not-running', `container "${container}" on ${this.id} is ${before.state}, not running`, before.checkpointed);
    try {
      let bytes = 0;
      const uploaded = await streamCheckpoint(engine, store, migrationId, container, artifact, {
        chunkBytes: transfer.chunkBytes,
        parallel: transfer.parallel,
        onChunk: async (chunk) => {
          await this.emit('checkpoint.chunk', { migrationId, agent: this.id, chunk }, `${migrationId}.chunk.${chunk.index}`);
          bytes += chunk.sizeBytes;
          void this.emit('checkpoint.progress', { migrationId, agent: this.id, bytes }, `${migrationId}.progress.${chunk.index}`).catch(() => undefined);
        },
      });
      log.info({ bytes: uploaded.artifact.sizeBytes, chunks: uploaded.artifact.chunkCount, ms: uploaded.uploadedAt.getTime() - uploaded.checkpointStartedAt.getTime() }, 'checkpoint uploaded');
      await this.emit('checkpoint.uploaded', {
        migrationId,
        agent: this.id,
        container,
        image: before.image,
        artifact: uploaded.artifact,
        checkpointStartedAt: uploaded.checkpointStartedAt.toISOString(),
        firstByteAt: uploaded.firstByteAt.toISOString(),
        uploadedAt: uploaded.uploadedAt.toISOString(),
      });
    } catch (error) {
      const after = await engine.inspectContainer(container).catch(() => undefined);
      const frozen = after !== undefined && after.state !== 'running';
      const code: FailureCode = error instanceof ContainerNotFoundError ? 'container-not-found' : frozen ? 'upload-failed' : 'engine-failed';
      log.error({ err: error, frozen }, 'checkpoint failed');
      await failed(code, describe(error), frozen);
    }
  }

  private async restore(command: CommandOf<'prepare'>, log: Logger): Promise<void> {
    const { migrationId, container } = command.data;
    const { transfer } = this.options;
    const job = new RestoreJob({
      command: command.data,
      engine: this.options.engine,
      bus: this.options.bus,
      emit: this.emit,
      agentId: this.id,
      log,
      parallel: transfer.parallel,
      urlBatch: URL_BATCH,
      urlLowWater: URL_BATCH / 4,
      idleTimeoutMs: transfer.idleTimeoutMs,
    });
    this.restores.set(migrationId, job);
    for (const urls of this.earlyUrls.get(migrationId) ?? []) job.addUrls(urls);
    this.earlyUrls.delete(migrationId);
    try {
      const restored = await job.run();
      log.info({ restoreMs: restored.restoredAt.getTime() - restored.downloadedAt.getTime() }, 'restored');
      await this.emit('restore.completed', {
        migrationId,
        agent: this.id,
        container,
        containerId: restored.containerId,
        downloadedAt: restored.downloadedAt.toISOString(),
        restoredAt: restored.restoredAt.toISOString(),
      });
    } catch (error) {
      if (error instanceof RestoreAbandonedError) {
        log.info({ reason: error.message }, 'restore abandoned');
        return;
      }
      const code: FailureCode = error instanceof RestoreRefusedError ? error.code : 'engine-failed';
      log.error({ err: error, code }, 'restore failed');
      await this.emit('restore.failed', { migrationId, agent: this.id, code, reason: describe(error) });
    } finally {
      this.restores.delete(migrationId);
    }
  }

  private async discard(command: CommandOf<'discard'>, log: Logger): Promise<void> {
    const { migrationId, container } = command.data;
    const current = await this.options.engine.inspectContainer(container);
    if (current?.state === 'running') {
      // Fencing: a running container here is not the kept checkpoint (it was resumed); never remove it.
      log.error({ container }, 'refusing to discard a running container');
      throw new Error(`refusing to discard "${container}": it is running on ${this.id}`);
    }
    await this.options.engine.removeContainer(container, { force: true });
    log.info({ container }, 'kept checkpoint discarded');
    await this.emit('source.discarded', { migrationId, agent: this.id, container });
  }

  private async resume(command: CommandOf<'resume'>, log: Logger): Promise<void> {
    const { migrationId, container } = command.data;
    try {
      const current = await this.options.engine.inspectContainer(container);
      if (current?.state !== 'running') await this.options.engine.resumeCheckpointed(container);
      log.info({ container }, 'resumed from the kept checkpoint');
      await this.emit('source.resumed', { migrationId, agent: this.id, container });
    } catch (error) {
      log.error({ err: error, container }, 'resume failed');
      await this.emit('source.resume-failed', { migrationId, agent: this.id, container, reason: describe(error) });
    }
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
