import { once } from 'node:events';
import { mkdir, rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { LauncherClient, LauncherError } from '../launcher/client.js';
import { launcherControlDir, launcherRunSpec, launcherSocketPath, LAUNCHER_RESTORE_ENV } from '../launcher/convention.js';
import { RunningServiceError, type ApproachDriver, type RestoreTarget } from './approach-driver.js';
import type { ContainerEngine } from './container-engine.js';

/**
 * Service level: the service's image carries the UMS launcher and CRIU; the launcher (PID 1 of the
 * container) checkpoints the service tree from inside and restores it into a fresh container of the same
 * image. The engine is used only to start and remove plain containers, so this works where the engine
 * offers no checkpoint API. The host reaches each launcher through `<launcherDir>/<container>/control.sock`,
 * the directory bind-mounted at /run/ums-launcher in the container (launcher/convention.ts).
 */
export class ServiceLevel implements ApproachDriver {
  readonly approach = 'service' as const;

  constructor(
    private readonly engine: ContainerEngine,
    private readonly launcherDir: string,
    private readonly where: string,
  ) {}

  controlDir(container: string): string {
    return launcherControlDir(container, this.launcherDir);
  }

  private client(container: string): LauncherClient {
    return new LauncherClient({
      socketPath: launcherSocketPath(container, this.launcherDir),
      where: `the launcher of "${container}" on ${this.where}`,
    });
  }

  checkpoint(container: string): Promise<Readable> {
    return this.client(container).checkpoint();
  }

  async frozen(container: string): Promise<boolean | undefined> {
    const current = await this.engine.inspectContainer(container);
    if (current === undefined) return undefined;
    if (current.state !== 'running') return false;
    return (await this.client(container).status()).mode === 'frozen';
  }

  async restore(target: RestoreTarget, archive: Readable): Promise<{ id: string }> {
    const dir = this.controlDir(target.container);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    // Started now, while the source is still running: the launcher waits for the archive.
    const { id } = await this.engine.runContainer({
      name: target.container,
      image: target.imageId,
      env: { ...LAUNCHER_RESTORE_ENV },
      ...launcherRunSpec(dir),
    });
    const client = this.client(target.container);
    await client.waitReady();
    // The launcher gives a silent archive 30 s: connect only once the first verified bytes are there.
    if (archive.readableLength === 0)
      await Promise.race([once(archive, 'readable'), once(archive, 'error').then(([error]) => Promise.reject(error))]);
    await client.restore(archive);
    return { id };
  }

  /** What the capability probe reports of a container's launcher (agents/capability-probe.ts). */
  async probe(
    container: string,
  ): Promise<{ available: boolean; version: string; processCount: number; memoryBytes: number; reason?: string }> {
    const status = await this.client(container).status();
    const available = status.mode === 'running' || status.mode === 'restored';
    return {
      available,
      version: String(status.protocolVersion),
      processCount: status.processes,
      memoryBytes: status.rssBytes,
      ...(available ? {} : { reason: `its launcher is ${status.mode}` }),
    };
  }

  async removeRestored(container: string): Promise<void> {
    await this.engine.removeContainer(container, { force: true });
    await rm(this.controlDir(container), { recursive: true, force: true });
  }

  async restored(container: string): Promise<boolean> {
    try {
      const mode = (await this.client(container).status()).mode;
      return mode === 'restored' || mode === 'running';
    } catch (error) {
      if (error instanceof LauncherError) return false;
      throw error;
    }
  }

  async resume(container: string): Promise<void> {
    const client = this.client(container);
    if ((await client.status()).mode === 'frozen') await client.resume();
  }

  async discard(container: string): Promise<void> {
    const current = await this.engine.inspectContainer(container);
    if (current !== undefined && current.state === 'running') {
      const mode = await this.client(container)
        .status()
        .then(
          (s) => s.mode,
          () => undefined,
        );
      if (mode === 'running' || mode === 'restored') throw new RunningServiceError(container, this.where);
      // The launcher kills the frozen tree and exits; the container goes with it.
      if (mode === 'frozen') await this.client(container).discard();
    }
    await this.engine.removeContainer(container, { force: true });
    await rm(this.controlDir(container), { recursive: true, force: true });
  }
}
