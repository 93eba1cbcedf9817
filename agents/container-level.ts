import type { Readable } from 'node:stream';
import { RunningServiceError, type ApproachDriver, type RestoreTarget } from './approach-driver.js';
import { inspectContainer, ownAddresses } from './container-inspection.js';
import { ContainerNotFoundError, type ContainerEngine } from './container-engine.js';
import { cutOutsideConnections } from './outside-connections.js';

/**
 * What every container-level dump and restore asks of CRIU, whatever the container holds: connections with
 * both ends in the container (over loopback) are kept, file locks are kept. Both cost nothing when there is
 * nothing to keep, and deciding per migration would need the answer before the restore request opens,
 * which is before the freeze, while connections come and go. The container gets the destination network's
 * address for it (the source's may be taken or foreign there).
 */
const CHECKPOINT = { tcpEstablished: true, fileLocks: true } as const;
const RESTORE = { tcpEstablished: true, fileLocks: true } as const;

/** CRIU cannot dump the container as it is now; found before anything was frozen. */
export class NotCheckpointableError extends Error {
  constructor(
    container: string,
    where: string,
    readonly blockers: string[],
  ) {
    super(`CRIU cannot checkpoint "${container}" on ${where} as it is now: ${blockers.join('; ')}`);
    this.name = 'NotCheckpointableError';
  }
}

/** Container level: the host's engine checkpoints and restores the whole container with CRIU. */
export class ContainerLevel implements ApproachDriver {
  readonly approach = 'container' as const;

  constructor(
    private readonly engine: ContainerEngine,
    private readonly where: string,
  ) {}

  /**
   * Checks what CRIU would refuse, ends the connections with outside peers (they cannot follow: see
   * core/container-network.ts), then freezes. Outside clients are let in again if the freeze fails and
   * the service runs on here.
   */
  async checkpoint(container: string): Promise<Readable> {
    const current = await this.engine.inspectContainer(container);
    if (current === undefined) throw new ContainerNotFoundError(container, this.where);
    const { blockers } = await inspectContainer(current.pid, current.published);
    if (blockers.length > 0) throw new NotCheckpointableError(container, this.where, blockers);
    const cut = await cutOutsideConnections(current.pid, await ownAddresses(current.pid));
    try {
      return await this.engine.checkpoint(container, CHECKPOINT);
    } catch (error) {
      if ((await this.engine.inspectContainer(container).catch(() => undefined))?.state === 'running') await cut.lift();
      throw error;
    }
  }

  async frozen(container: string): Promise<boolean | undefined> {
    const current = await this.engine.inspectContainer(container);
    return current === undefined ? undefined : current.state !== 'running';
  }

  async restore(target: RestoreTarget, archive: Readable): Promise<{ id: string }> {
    return this.engine.restoreFromArchive(target.container, archive, RESTORE);
  }

  removeRestored(container: string): Promise<void> {
    // Volumes too: the import created them from the archive, and a retry would find them in its way.
    return this.engine.removeContainer(container, { force: true, withVolumes: true });
  }

  async restored(container: string): Promise<boolean> {
    return (await this.engine.inspectContainer(container))?.state === 'running';
  }

  async resume(container: string): Promise<void> {
    const current = await this.engine.inspectContainer(container);
    if (current?.state !== 'running') await this.engine.resumeCheckpointed(container, RESTORE);
  }

  async discard(container: string): Promise<void> {
    const current = await this.engine.inspectContainer(container);
    if (current === undefined) return;
    // Fencing: a running container here is not the kept checkpoint (it was resumed); never remove it.
    if (current.state === 'running') throw new RunningServiceError(container, this.where);
    // Its volumes moved with the archive: the copy here is stale, and would block migrating back.
    await this.engine.removeContainer(container, { force: true, withVolumes: true });
  }
}
