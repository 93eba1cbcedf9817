import type { EventBus, Subscription } from '../core/event-bus.js';
import { makeEvent, type CommandOf, type EventData, type EventName, type FailureCode, type UmsCommand } from '../core/events.js';
import type { Logger } from '../core/log.js';
import type { ObjectStore } from '../core/object-store.js';
import { streamCheckpoint } from './checkpoint-stream.js';
import { ContainerNotFoundError, type ContainerEngine } from './container-engine.js';
import { Heartbeat, type AgentIdentity } from './registration.js';
import { RestoreRefusedError, restoreFromSignedUrl } from './restore-pipeline.js';

export interface HostAgentOptions {
  identity: AgentIdentity;
  engine: ContainerEngine;
  bus: EventBus;
  /** This host's own object store, where its checkpoints go. */
  store: ObjectStore;
  /** Where downloaded archives wait for the engine (they hold process memory: deleted after use). */
  workDir: string;
  log: Logger;
}

/**
 * One agent per host: registers the host, then executes the commands addressed to it, one at a time,
 * and reports each outcome as an event. It decides nothing about a migration; the functions do.
 */
export class HostAgent {
  private readonly heartbeat: Heartbeat;
  private subscription: Subscription | undefined;

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
      (command) => this.execute(command),
      (error) => this.options.log.warn({ reason: error.message }, 'rejected an invalid command (kept as a dead letter)'),
    );
    this.options.log.info({ agentId: this.id, store: this.options.identity.storeUrl }, 'agent started');
  }

  async stop(): Promise<void> {
    await this.subscription?.stop();
    await this.heartbeat.stop();
  }

  private async execute(command: UmsCommand): Promise<void> {
    const log = this.options.log.child({ migrationId: command.data.migrationId, command: command.name });
    log.info('command received');
    switch (command.name) {
      case 'checkpoint':
        await this.checkpoint(command, log);
        break;
      case 'restore':
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

  private emit<N extends EventName>(name: N, data: EventData<N>): Promise<void> {
    // Deterministic ids: a command redelivered after a crash re-announces the same fact, which the bus drops.
    return this.options.bus.publishEvent(makeEvent(name, `/ums/agents/${this.id}`, data, `${data.migrationId}.${name}.${this.id}`));
  }

  private async checkpoint(command: CommandOf<'checkpoint'>, log: Logger): Promise<void> {
    const { migrationId, container, artifact } = command.data;
    const { engine, store } = this.options;
    const before = await engine.inspectContainer(container);
    if (!before) {
      await this.emit('checkpoint.failed', {
        migrationId,
        agent: this.id,
        code: 'container-not-found',
        reason: `container "${container}" does not exist on ${this.id}`,
        containerCheckpointed: false,
      });
      return;
    }
    if (before.state !== 'running') {
      await this.emit('checkpoint.failed', {
        migrationId,
        agent: this.id,
        code: 'container-not-running',
        reason: `container "${container}" on ${this.id} is ${before.state}, not running`,
        containerCheckpointed: before.checkpointed,
      });
      return;
    }
    try {
      const uploaded = await streamCheckpoint(engine, store, container, artifact, (bytes) => {
        void this.emit('checkpoint.progress', { migrationId, agent: this.id, bytes }).catch(() => undefined);
      });
      log.info({ bytes: uploaded.artifact.sizeBytes, ms: uploaded.uploadedAt.getTime() - uploaded.checkpointStartedAt.getTime() }, 'checkpoint uploaded');
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
      await this.emit('checkpoint.failed', { migrationId, agent: this.id, code, reason: describe(error), containerCheckpointed: frozen });
    }
  }

  private async restore(command: CommandOf<'restore'>, log: Logger): Promise<void> {
    const { migrationId, container } = command.data;
    const receivedAt = new Date();
    try {
      const restored = await restoreFromSignedUrl(this.options.engine, command.data, this.options.workDir, (bytes) => {
        void this.emit('restore.progress', { migrationId, agent: this.id, bytes, totalBytes: command.data.artifact.sizeBytes }).catch(() => undefined);
      });
      log.info({ downloadMs: restored.downloadedAt.getTime() - receivedAt.getTime(), restoreMs: restored.restoredAt.getTime() - restored.downloadedAt.getTime() }, 'restored');
      await this.emit('restore.completed', {
        migrationId,
        agent: this.id,
        container,
        containerId: restored.containerId,
        receivedAt: receivedAt.toISOString(),
        downloadedAt: restored.downloadedAt.toISOString(),
        restoredAt: restored.restoredAt.toISOString(),
      });
    } catch (error) {
      const code: FailureCode = error instanceof RestoreRefusedError ? error.code : 'engine-failed';
      log.error({ err: error, code }, 'restore failed');
      await this.emit('restore.failed', { migrationId, agent: this.id, code, reason: describe(error) });
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
