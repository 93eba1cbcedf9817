import { once } from 'node:events';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { RunningServiceError, type ApproachDriver, type CheckpointHooks, type RestoreTarget } from './approach-driver.js';
import { inspectContainer, ownAddresses } from './container-inspection.js';
import {
  ContainerNotFoundError,
  type ContainerEngine,
  type ContainerSummary,
  type RestoredContainer,
  type VolumeMount,
} from './container-engine.js';
import { cutOutsideConnections } from './outside-connections.js';
import { CheckpointSectionParser, endRecord, MAGIC } from './checkpoint-section.js';
import { PageImagesIn, PageImagesOut, type PageImagesHost } from './memory/page-images.js';
import { exportWithoutVolumes, type VolumeMove } from './volumes/volume-move.js';

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

/**
 * Container level: the host's engine checkpoints and restores the whole container with CRIU. With
 * `volumes`, the container's volumes move outside the freeze (agents/volumes/volume-move.ts); without, in
 * Podman's archive. With `memory` (the runtime shim's marker directory), a checkpoint asked to
 * (CheckpointHooks.memoryBeside) sends CRIU's page images as CRIU writes them, beside Podman's export
 * (agents/memory/page-images.ts), and a restore places the page images that arrive so.
 */
export class ContainerLevel implements ApproachDriver {
  readonly approach = 'container' as const;

  constructor(
    private readonly engine: ContainerEngine,
    private readonly where: string,
    private readonly volumes?: VolumeMove,
    private readonly memory?: PageImagesHost,
  ) {}

  /**
   * Checks what CRIU would refuse, sends the volumes' files (if they move outside the freeze), ends the
   * connections with outside peers (they cannot follow: see core/container-network.ts), then freezes.
   * Outside clients are let in again if the freeze fails and the service runs on here.
   */
  async checkpoint(container: string, hooks: CheckpointHooks = {}): Promise<Readable> {
    const current = await this.engine.inspectContainer(container);
    if (current === undefined) throw new ContainerNotFoundError(container, this.where);
    const { blockers } = await inspectContainer(current.pid, current.published);
    if (blockers.length > 0) throw new NotCheckpointableError(container, this.where, blockers);
    const plan = await this.volumes?.planFor(container);
    const volumes = plan?.outsideFreeze === true && plan.volumes.length > 0 ? plan.volumes : undefined;
    const memory = hooks.memoryBeside === true ? this.memory : undefined;
    if (memory === undefined && this.memory !== undefined) await PageImagesOut.disarm(this.memory, current.id);
    if (volumes === undefined && memory === undefined) return this.freeze(current, false);
    return Readable.from(this.withSection(current, volumes, memory, hooks), { objectMode: false });
  }

  /**
   * The checkpoint section (agents/checkpoint-section.ts), then Podman's export without what it carried.
   * With volumes, the freeze waits until the destination has taken their copy: what it still had to write
   * would otherwise be written while the service is frozen. The page images are read while Podman's
   * checkpoint runs, so its export (made once CRIU is done) follows them at once.
   */
  private async *withSection(
    current: ContainerSummary,
    volumes: VolumeMount[] | undefined,
    memory: PageImagesHost | undefined,
    hooks: CheckpointHooks,
  ): AsyncGenerator<Buffer> {
    const dumps = volumes === undefined ? undefined : await this.volumes!.source(volumes);
    let pages: PageImagesOut | undefined;
    try {
      if (dumps !== undefined) {
        let sent = 0;
        for await (const bytes of dumps.base()) {
          sent += bytes.length;
          yield bytes;
        }
        await hooks.beforeFreeze?.(sent);
      } else yield MAGIC;
      pages = memory === undefined ? undefined : await PageImagesOut.arm(memory, current.id);
      hooks.frozen?.(new Date(), dumps !== undefined);
      const freezing = this.freeze(current, dumps !== undefined);
      freezing.catch(() => undefined); // awaited below, once the page images were read
      let archive: Readable | undefined;
      try {
        if (pages !== undefined) yield* pages.records(freezing);
        archive = await freezing;
        if (pages !== undefined) hooks.memorySent?.((await pages.movedBeside()) ? pages.bytes : 0);
        if (dumps !== undefined) yield* dumps.delta();
        yield endRecord();
        yield* dumps !== undefined ? exportWithoutVolumes(archive) : (archive as AsyncIterable<Buffer>);
      } finally {
        // A reader that stopped while the pages moved leaves Podman's response to close when it comes.
        if (archive !== undefined) archive.destroy();
        else
          void freezing.then(
            (late) => late.destroy(),
            () => undefined,
          );
      }
    } finally {
      await dumps?.dispose();
      await pages?.disarm();
    }
  }

  private async freeze(current: ContainerSummary, ignoreVolumes: boolean): Promise<Readable> {
    const cut = await cutOutsideConnections(current.pid, await ownAddresses(current.pid));
    try {
      return await this.engine.checkpoint(current.name, { ...CHECKPOINT, ignoreVolumes });
    } catch (error) {
      if ((await this.engine.inspectContainer(current.name).catch(() => undefined))?.state === 'running') await cut.lift();
      throw error;
    }
  }

  async frozen(container: string): Promise<boolean | undefined> {
    const current = await this.engine.inspectContainer(container);
    return current === undefined ? undefined : current.state !== 'running';
  }

  /**
   * Restores from the stream as it arrives: a checkpoint section first, if any (each volume created here
   * and filled, and the page images written, before the engine's restore starts), then Podman's export,
   * which goes to the engine.
   */
  async restore(target: RestoreTarget, archive: Readable): Promise<{ id: string }> {
    const parser = new CheckpointSectionParser();
    const intake = this.volumes?.intake();
    let pages: PageImagesIn | undefined;
    const exported = new PassThrough({ highWaterMark: 1024 * 1024 });
    let restoring: Promise<RestoredContainer> | undefined;
    try {
      for await (const piece of archive as AsyncIterable<Buffer>) {
        for (const event of parser.write(piece)) {
          if (event.kind === 'memory' || event.kind === 'pages') {
            pages ??= await this.pageIntake();
            await pages.handle(event);
            continue;
          }
          if (event.kind !== 'export') {
            if (event.kind === 'end') await pages?.close();
            if (intake === undefined) {
              if (event.kind === 'end') continue;
              throw new Error(`the archive carries volumes outside the export, which ${this.where} cannot create`);
            }
            await intake.handle(event);
            continue;
          }
          if (restoring === undefined) {
            restoring = this.engine.restoreFromArchive(target.container, exported, { ...RESTORE, ignoreVolumes: parser.hasVolumes });
            restoring.catch(() => undefined); // awaited below, or raced while waiting for room
          }
          // A restore that fails stops the reading here (its error wins over waiting for room).
          if (!exported.write(event.bytes)) await Promise.race([once(exported, 'drain'), restoring]);
        }
      }
      parser.end();
      exported.end();
      if (restoring === undefined) throw new Error('the archive is empty');
      return await restoring;
    } catch (error) {
      // Aborts the engine's request; before it started, nothing reads the stream (nor listens for its error).
      if (restoring !== undefined) exported.destroy(error as Error);
      await restoring?.catch(() => undefined);
      await intake?.abort();
      throw error;
    } finally {
      await pages?.dispose();
    }
  }

  /** Where this host takes page images that travel beside the export: its engine's storage, for the shim's rename. */
  private async pageIntake(): Promise<PageImagesIn> {
    if (this.memory === undefined)
      throw new Error(`the archive carries the memory beside the export, which ${this.where} cannot place (no runtime shim)`);
    return new PageImagesIn(this.memory, await this.stagingRoot());
  }

  private async stagingRoot(): Promise<string> {
    const { graphRoot } = await this.engine.info();
    if (graphRoot === undefined)
      throw new Error(
        `the engine on ${this.where} does not say where its storage is, so the memory that travelled beside the export has nowhere to go`,
      );
    return join(graphRoot, 'ums-memory');
  }

  /**
   * At the agent's start: removes what a killed agent left of the memory beside the export: staged page
   * images of a restore, and the markers of its containers' checkpoints.
   */
  async clearLeftovers(): Promise<void> {
    if (this.memory === undefined) return;
    await PageImagesIn.clearStaging(await this.stagingRoot());
    for (const container of await this.engine.listContainers()) await PageImagesOut.disarm(this.memory, container.id);
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
