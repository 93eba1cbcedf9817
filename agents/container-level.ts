import type { Readable } from 'node:stream';
import { RunningServiceError, type ApproachDriver, type RestoreTarget } from './approach-driver.js';
import type { ContainerEngine } from './container-engine.js';

/** Container level: the host's engine checkpoints and restores the whole container with CRIU. */
export class ContainerLevel implements ApproachDriver {
  readonly approach = 'container' as const;

  constructor(
    private readonly engine: ContainerEngine,
    private readonly where: string,
  ) {}

  checkpoint(container: string): Promise<Readable> {
    return this.engine.checkpoint(container);
  }

  async frozen(container: string): Promise<boolean | undefined> {
    const current = await this.engine.inspectContainer(container);
    return current === undefined ? undefined : current.state !== 'running';
  }

  async restore(target: RestoreTarget, archive: Readable): Promise<{ id: string }> {
    return this.engine.restoreFromArchive(target.container, archive);
  }

  removeRestored(container: string): Promise<void> {
    return this.engine.removeContainer(container, { force: true });
  }

  async restored(container: string): Promise<boolean> {
    return (await this.engine.inspectContainer(container))?.state === 'running';
  }

  async resume(container: string): Promise<void> {
    const current = await this.engine.inspectContainer(container);
    if (current?.state !== 'running') await this.engine.resumeCheckpointed(container);
  }

  async discard(container: string): Promise<void> {
    const current = await this.engine.inspectContainer(container);
    if (current === undefined) return;
    // Fencing: a running container here is not the kept checkpoint (it was resumed); never remove it.
    if (current.state === 'running') throw new RunningServiceError(container, this.where);
    await this.engine.removeContainer(container, { force: true });
  }
}
