import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAbsolute, join, relative } from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from '../../core/log.js';
import type { ContainerTraits } from '../../core/migration-approach.js';
import type { ContainerEngine, VolumeMount } from '../container-engine.js';
import { deltaRecord, MAGIC, type SectionEvent, type SectionVolume, treeRecords, volumeRecord } from '../checkpoint-section.js';
import { TarEntryReader } from '../tar-entries.js';
import { dumpTree, extractTree } from './volume-tree.js';

const execFileAsync = promisify(execFile);

/**
 * Volumes outside the freeze, for container level. Podman's export puts every volume's files in the
 * archive, which it makes only once the container is frozen: a large volume moved whole while the service
 * was stopped. Instead the source sends each volume's files while the service still runs (a level-0 dump),
 * freezes it, and sends only what changed since (a level-1 dump), then Podman's export without volumes; the
 * destination creates each volume afresh, fills it as the dumps arrive, and restores with the volumes in
 * place. The stream's layout is agents/checkpoint-section.ts's. Changes are found per file (GNU tar's
 * incremental dumps): a file written while the base was read moves again whole in the freeze.
 *
 * Only volumes of the 'local' driver without options are copied this way (their files are a plain
 * directory here); a container with any other volume keeps Podman's way, all its volumes in the archive.
 */
export interface VolumeMoveOptions {
  engine: ContainerEngine;
  /**
   * Where this agent sees the engine's volume directory (the engine's volumePath), when the two differ: an
   * agent in another mount namespace or container than the engine. Default: the engine's own path.
   */
  localVolumesDir?: string;
  log: Logger;
}

/** How a container's volumes move: outside the freeze, or (with the reason) in Podman's archive. */
export interface VolumePlan {
  volumes: VolumeMount[];
  outsideFreeze: boolean;
  reason?: string;
}

export class VolumeMove {
  private volumePath: Promise<string | undefined> | undefined;

  constructor(private readonly options: VolumeMoveOptions) {}

  async planFor(container: string): Promise<VolumePlan> {
    const { engine } = this.options;
    if (engine.volumesOf === undefined || engine.createVolume === undefined)
      return { volumes: [], outsideFreeze: false, reason: 'the engine cannot list or create volumes' };
    const volumes = (await engine.volumesOf(container)) ?? [];
    const other = volumes.filter((v) => v.driver !== 'local' || Object.keys(v.options).length > 0);
    if (other.length > 0) {
      // Bounded: the reason travels in the agent's registration.
      const which = other
        .slice(0, 3)
        .map((v) => `"${v.name}" (driver ${v.driver}, options ${JSON.stringify(v.options).slice(0, 200)})`)
        .join(', ');
      return { volumes, outsideFreeze: false, reason: `volume ${which} is not a plain local directory` };
    }
    return { volumes, outsideFreeze: true };
  }

  /** What the planner is told (ContainerTraits.volumes): the plan, with each volume's size on disk. */
  async traits(container: string): Promise<ContainerTraits['volumes']> {
    const plan = await this.planFor(container);
    const list = await Promise.all(
      plan.volumes.map(async (v) => {
        const bytes = await this.localDir(v.mountpoint)
          .then(diskUsage)
          .catch(() => undefined);
        return { name: v.name, destination: v.destination, ...(bytes !== undefined ? { bytes } : {}) };
      }),
    );
    return { outsideFreeze: plan.outsideFreeze, ...(plan.reason !== undefined ? { reason: plan.reason } : {}), list };
  }

  /**
   * The source's side: `base()` while the service runs, `delta()` once it is frozen (the same volumes),
   * then `dispose()`. Both yield the section's records; `base()` starts with the section's MAGIC.
   */
  async source(volumes: VolumeMount[]): Promise<VolumeDumps> {
    const dirs = await Promise.all(volumes.map((v) => this.localDir(v.mountpoint)));
    const work = await mkdtemp(join(tmpdir(), 'ums-volumes-'));
    const snapshot = (i: number) => join(work, `${i}.snar`);
    const log = this.options.log;
    return {
      async *base() {
        yield MAGIC;
        for (const [i, v] of volumes.entries()) {
          const spec: SectionVolume = { name: v.name, driver: 'local', labels: v.labels, options: {}, destination: v.destination };
          yield volumeRecord(spec);
          yield* treeRecords(dumpTree(dirs[i]!, snapshot(i), 'base'));
        }
      },
      async *delta() {
        for (const [i, v] of volumes.entries()) {
          const started = Date.now();
          let bytes = 0;
          yield deltaRecord(v.name);
          for await (const record of treeRecords(dumpTree(dirs[i]!, snapshot(i), 'delta'))) {
            bytes += record.length;
            yield record;
          }
          log.info({ volume: v.name, bytes, ms: Date.now() - started }, 'volume changes since the copy sent (frozen)');
        }
      },
      dispose: () => rm(work, { recursive: true, force: true }),
    };
  }

  /** The destination's side, for one restore: feed it the section's events in order; `abort()` on failure. */
  intake(): VolumeIntake {
    return new VolumeIntake(this.options.engine, (mountpoint) => this.localDir(mountpoint));
  }

  private async localDir(mountpoint: string): Promise<string> {
    const local = this.options.localVolumesDir;
    if (local === undefined) return mountpoint;
    this.volumePath ??= this.options.engine.info().then((info) => info.volumePath);
    const enginePath = await this.volumePath;
    const rel = enginePath === undefined ? '' : relative(enginePath, mountpoint);
    if (rel === '' || rel.startsWith('..') || isAbsolute(rel))
      throw new Error(`volume path ${mountpoint} is not under the engine's volume directory (${enginePath ?? 'unknown'})`);
    return join(local, rel);
  }
}

export interface VolumeDumps {
  base(): AsyncGenerator<Buffer>;
  delta(): AsyncGenerator<Buffer>;
  dispose(): Promise<void>;
}

/**
 * Creates the volumes a section announces (never one that exists here: VolumeExistsError) and extracts
 * each dump into its volume as it arrives. `abort()` removes what it created.
 */
export class VolumeIntake {
  private readonly created = new Map<string, string>();
  private extracting: ReturnType<typeof extractTree> | undefined;

  constructor(
    private readonly engine: ContainerEngine,
    private readonly localDir: (mountpoint: string) => Promise<string>,
  ) {}

  async handle(event: Exclude<SectionEvent, { kind: 'export' }>): Promise<void> {
    switch (event.kind) {
      case 'volume': {
        await this.closeTree();
        const { name, driver, labels, options } = event.volume;
        if (this.engine.createVolume === undefined)
          throw new Error(`the archive carries volume "${name}", and this engine cannot create volumes`);
        const { mountpoint } = await this.engine.createVolume({ name, driver, labels, options });
        const dir = await this.localDir(mountpoint);
        this.created.set(name, dir);
        this.extracting = extractTree(dir);
        return;
      }
      case 'delta': {
        await this.closeTree();
        this.extracting = extractTree(this.created.get(event.name)!);
        return;
      }
      case 'tree': {
        const tree = this.extracting!;
        if (!tree.input.write(event.bytes)) await Promise.race([once(tree.input, 'drain'), tree.done]);
        return;
      }
      case 'end':
        return this.closeTree();
    }
  }

  async abort(): Promise<void> {
    this.extracting?.kill();
    this.extracting = undefined;
    for (const name of this.created.keys()) await this.engine.removeVolume?.(name).catch(() => undefined);
  }

  private async closeTree(): Promise<void> {
    const tree = this.extracting;
    if (tree === undefined) return;
    this.extracting = undefined;
    tree.input.end();
    await tree.done;
  }
}

/** Bytes a directory takes on disk (du: sparse files count what they hold, which is what tar sends). */
async function diskUsage(dir: string): Promise<number> {
  const { stdout } = await execFileAsync('du', ['--summarize', '--block-size=1', dir], { timeout: 30_000 });
  const bytes = Number(stdout.split('\t')[0]);
  if (!Number.isSafeInteger(bytes)) throw new Error(`du printed ${stdout}`);
  return bytes;
}

/**
 * Podman's export without its volumes (`volumes/<name>.tar`), as it streams: Podman 4.3's REST checkpoint
 * ignores ignoreVolumes (its restore honours it), so it still tars every volume into the export. libpod's
 * exportCheckpoint adds the volumes' tars after every other file, so the export is read up to the first of
 * them, ended there (the end-of-archive marker), and the rest is not read at all: the volumes are neither
 * sent nor even streamed out of Podman while the service is frozen. With a Podman that honours
 * ignoreVolumes, the export has no volumes and passes whole.
 */
export async function* exportWithoutVolumes(archive: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let out: Buffer[] = [];
  let volumesReached = false;
  const reader = new TarEntryReader(new Set(), 0, {
    drop: (name) => {
      if (name === 'volumes' || name.startsWith('volumes/')) volumesReached = true;
      return volumesReached;
    },
    emit: (bytes) => out.push(bytes),
  });
  for await (const piece of archive) {
    reader.write(piece);
    yield* out;
    out = [];
    if (volumesReached) {
      // Returning stops the iteration, which closes Podman's response: what is left of it is the volumes.
      yield END_OF_ARCHIVE;
      return;
    }
  }
  reader.end();
  yield* out;
}

/** Two zero blocks: where a tar archive ends. */
const END_OF_ARCHIVE = Buffer.alloc(1024);
