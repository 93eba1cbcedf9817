import type { Readable } from 'node:stream';
import { RunningServiceError, type ApproachDriver, type RestoreTarget } from './approach-driver.js';
import type { CriEngine } from './cri/cri-engine.js';

/**
 * Orchestrator level on a Kubernetes node: the node's runtime checkpoints and restores through the CRI, the
 * calls the kubelet makes (agents/cri/), driven by the node-local agent. The host agent around it is the same
 * as for the other approaches (fenced commands, sealed and signed chunks through the object store, verified
 * restore); what differs is in the engine (agents/cri/cri-engine.ts):
 *   - freeze = CheckpointContainer, then StopContainer; "frozen" = the pod's container has stopped with its
 *     checkpoint tar kept on the node;
 *   - restore = a new pod of the same name whose container is created from the tar;
 *   - resume (rollback) = the kept tar restored into a new pod here; discard = the stopped pod and its tar go.
 * On a real cluster the kubelet's POST /checkpoint makes the same CRI call (agents/kubelet/kubelet-client.ts),
 * and a Pod naming a checkpoint image restores (agents/kubelet/restore-pod.ts); here no kubelet runs, and the
 * agent speaks the CRI itself, as the kubelet would.
 */
export class OrchestratorLevel implements ApproachDriver {
  readonly approach = 'orchestrator' as const;

  constructor(
    private readonly engine: CriEngine,
    private readonly where: string,
  ) {}

  checkpoint(container: string): Promise<Readable> {
    return this.engine.checkpoint(container);
  }

  async frozen(container: string): Promise<boolean | undefined> {
    const current = await this.engine.inspectContainer(container);
    if (current === undefined) return undefined;
    return current.state !== 'running' && (await this.engine.hasKeptCheckpoint(container));
  }

  async restore(target: RestoreTarget, archive: Readable): Promise<{ id: string }> {
    const restored = await this.engine.restoreFromArchive(target.container, archive);
    return { id: restored.id };
  }

  removeRestored(container: string): Promise<void> {
    return this.engine.removeContainer(container);
  }

  async restored(container: string): Promise<boolean> {
    return (await this.engine.inspectContainer(container))?.state === 'running';
  }

  async resume(container: string): Promise<void> {
    await this.engine.resumeCheckpointed(container);
  }

  async discard(container: string): Promise<void> {
    const current = await this.engine.inspectContainer(container);
    if (current?.state === 'running') throw new RunningServiceError(container, this.where);
    await this.engine.removeContainer(container);
  }
}
