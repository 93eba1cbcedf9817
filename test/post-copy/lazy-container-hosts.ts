/**
 * Two simulated Podman hosts on a WAN of their own, for container-level post-copy (agents/post-copy/
 * lazy-container.ts and the runtime shim it drives; its archive goes through a file on this machine's disk,
 * standing for its trip through the object store) and stop-and-copy through the container-level driver,
 * with the memory in Podman's export or beside it (agents/memory/page-images.ts). The workload is the counter image with random memory and its full check
 * (COUNTER_VERIFY_EVERY). Shared by test/integration/lazy-container.test.ts and the benchmark.
 *
 * Needs root, Podman with runc, CRIU >= 4.2 with lazy pages, the shim (infra/host-setup.sh).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { access, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { DEFAULT_MARKER_DIR, LazyDump, LazyRestore, type PostCopyHost } from '../../agents/post-copy/lazy-container.js';
import type { RelayTiming } from './lazy-migration.js';
import { PodmanEngine } from '../../agents/podman-engine.js';
import { CheckpointSectionParser } from '../../agents/checkpoint-section.js';
import { ContainerLevel } from '../../agents/container-level.js';
import { TarEntryReader } from '../../agents/tar-entries.js';
import { buildCounterImage, DEFAULT_COUNTER_IMAGE } from '../../infra/images/build-counter-image.js';
import { startPodmanHost, type PodmanHost } from '../../infra/podman-host.js';
import { createWan, type Wan, type WanEndpoint } from '../../infra/wan.js';

const execFileAsync = promisify(execFile);
import { RUNTIME_SHIM } from '../../agents/post-copy/post-copy-probe.js';

export interface ContainerHost {
  host: PodmanHost;
  engine: PodmanEngine;
  onWan: WanEndpoint;
  postCopy: PostCopyHost;
}

export interface Counter {
  name: string;
  id: string;
  /** The container's init in this machine's PID namespace. */
  pid: number;
}

export interface CounterOptions {
  mib: number;
  tickMs: number;
  /** Ticks between two full checks of the random block; 0: never. */
  verifyEvery: number;
}

export interface LazyContainerRun {
  dump: LazyDump;
  restore: LazyRestore;
  archiveBytes: number;
  /** Podman's checkpoint was asked for / the restore returned (epoch ms). */
  frozenAt: number;
  restoredAt: number;
}

export interface StopAndCopyRun {
  frozenAt: number;
  restoredAt: number;
  /** Page image bytes the section carried, the whole stream's bytes, and the names in Podman's export. */
  pageBytes: number;
  streamBytes: number;
  exportNames: string[];
}

export class LazyContainerHosts {
  private runs = 0;

  private constructor(
    private readonly base: string,
    private readonly wan: Wan,
    readonly source: ContainerHost,
    readonly destination: ContainerHost,
    private readonly streamPrefix: string,
  ) {}

  static async create(name: string, timing: RelayTiming = {}): Promise<LazyContainerHosts> {
    await access(RUNTIME_SHIM).catch(() => {
      throw new Error(`${RUNTIME_SHIM} is missing: run infra/host-setup.sh`);
    });
    const base = await mkdtemp(join(tmpdir(), `ums-${name}-`));
    const [a, b] = await Promise.all([
      startPodmanHost({ name: `${name}A`, dir: join(base, 'A') }),
      startPodmanHost({ name: `${name}B`, dir: join(base, 'B') }),
    ]);
    const wan = await createWan({ stackName: name, stackDir: base });
    const side = async (host: PodmanHost, label: string): Promise<ContainerHost> => {
      const onWan = await wan.attachHost(label, host.netns!);
      await buildCounterImage(host.url, DEFAULT_COUNTER_IMAGE, { env: host.env });
      return {
        host,
        onWan,
        engine: new PodmanEngine({ socketPath: host.socketPath, where: label }),
        postCopy: { markerDir: DEFAULT_MARKER_DIR, relayAddress: onWan.address, netns: host.netns, timing },
      };
    };
    try {
      const [source, destination] = await Promise.all([side(a, 'A'), side(b, 'B')]);
      return new LazyContainerHosts(base, wan, source, destination, `${name}-${randomBytes(3).toString('hex')}`);
    } catch (error) {
      await wan.destroy();
      await Promise.allSettled([a.destroy(), b.destroy()]);
      throw error;
    }
  }

  async destroy(): Promise<void> {
    await this.killRelays('');
    await this.wan.destroy();
    await Promise.allSettled([this.source.host.destroy(), this.destination.host.destroy()]);
    await rm(this.base, { recursive: true, force: true });
  }

  /** SIGKILLs this run's relays of `role` ('' for both), as a lost host would lose them. */
  async killRelays(role: 'source' | 'destination' | ''): Promise<void> {
    const pattern = `relay-process.js ${role === '' ? '[a-z]+' : role} ${this.streamPrefix}-`;
    await execFileAsync('pkill', ['-KILL', '-f', pattern]).catch(() => undefined);
  }

  /** Starts a counter on the source; resolves after its first full check (or its first tick, with no checks). */
  async startCounter(options: CounterOptions): Promise<Counter> {
    const name = `lazy-${++this.runs}`;
    await this.source.host.podman([
      ...['run', '-d', '--name', name, '-e', `COUNTER_MEM_MIB=${options.mib}`, '-e', `COUNTER_TICK_MS=${options.tickMs}`],
      ...['-e', `COUNTER_VERIFY_EVERY=${options.verifyEvery}`, DEFAULT_COUNTER_IMAGE],
    ]);
    const ready = options.verifyEvery > 0 ? /^verify ok/m : /^count=/m;
    await waitFor(async () => ready.test(await this.logs(this.source, name)), `${name} to start`, 300_000);
    const { stdout } = await this.source.host.podman(['inspect', name, '--format', '{{.Id}} {{.State.Pid}}']);
    const [id = '', pid = ''] = stdout.trim().split(' ');
    return { name, id, pid: Number(pid) };
  }

  /** Checkpoints lazily on the source (the shim) and restores on the destination; resolves once it runs there. */
  async migrateLazily(counter: Counter): Promise<LazyContainerRun> {
    const key = { streamId: `${this.streamPrefix}-${counter.name}`, psk: randomBytes(32) };
    const dump = await LazyDump.prepare(this.source.postCopy, counter.id, key);
    const archive = join(this.base, `${counter.name}.tar`);
    const frozenAt = Date.now();
    await pipeline(await this.source.engine.checkpoint(counter.name), createWriteStream(archive));
    await dump.confirmLazy();
    const restore = await LazyRestore.prepare(this.destination.postCopy, counter.id, key, dump.relay);
    await this.destination.engine.restoreFromArchive(counter.name, archive);
    const restoredAt = Date.now();
    return { dump, restore, archiveBytes: (await stat(archive)).size, frozenAt, restoredAt };
  }

  /**
   * Stop-and-copy through the container-level driver at both ends, its stream straight from the source's
   * checkpoint into the destination's restore (the agents put the object store between them): with the
   * memory beside Podman's export (agents/memory/page-images.ts), unless `memoryBeside` is false.
   * `turnBack`: the destination is not asked; the source's kept checkpoint is resumed instead (the saga's
   * compensation).
   */
  async migrateStopAndCopy(counter: Counter, options: { turnBack?: boolean; memoryBeside?: boolean } = {}): Promise<StopAndCopyRun> {
    const sourceLevel = new ContainerLevel(this.source.engine, 'A', undefined, { markerDir: this.source.postCopy.markerDir });
    const destinationLevel = new ContainerLevel(this.destination.engine, 'B', undefined, {
      markerDir: this.destination.postCopy.markerDir,
    });
    const frozenAt = Date.now();
    const stream = await sourceLevel.checkpoint(counter.name, { memoryBeside: options.memoryBeside ?? true });
    const parser = new CheckpointSectionParser();
    const exportNames: string[] = [];
    const reader = new TarEntryReader(new Set(), 0);
    let pageBytes = 0;
    let streamBytes = 0;
    const watched = new PassThrough();
    stream.on('data', (piece: Buffer) => {
      streamBytes += piece.length;
      for (const event of parser.write(piece)) {
        if (event.kind === 'pages') pageBytes += event.bytes.length;
        if (event.kind === 'export') reader.write(event.bytes);
      }
    });
    stream.once('error', (error) => watched.destroy(error));
    stream.pipe(watched);
    if (options.turnBack === true) {
      for await (const piece of watched) void piece;
      await sourceLevel.resume(counter.name);
    } else {
      const { stdout } = await this.source.host.podman(['inspect', counter.name, '--format', '{{.ImageName}} {{.Image}}']);
      const [image = '', imageId = ''] = stdout.trim().split(' ');
      await destinationLevel.restore({ container: counter.name, image, imageId }, watched);
    }
    exportNames.push(...reader.entries.map((e) => e.name));
    return { frozenAt, restoredAt: Date.now(), pageBytes, streamBytes, exportNames };
  }

  /** Removes the counter from both hosts. */
  async remove(counter: Counter): Promise<void> {
    await Promise.allSettled([
      this.source.engine.removeContainer(counter.name, { force: true }),
      this.destination.engine.removeContainer(counter.name, { force: true }),
    ]);
  }

  async logs(side: ContainerHost, name: string): Promise<string> {
    const { stdout } = await side.host.podman(['logs', name]);
    return stdout;
  }
}

/** The counter's ticks in its log: count and epoch ms. */
export function countsOf(log: string): Array<{ count: number; at: number }> {
  return [...log.matchAll(/^count=(\d+) t=(\d+)/gm)].map((match) => ({ count: Number(match[1]), at: Number(match[2]) }));
}

/** The counts and full checks the log shows after `count`. */
export function countsAfter(log: string, count: number): { first: number | undefined; verified: number[]; bad: string[] } {
  const verified: number[] = [];
  const bad: string[] = [];
  let first: number | undefined;
  for (const line of log.split('\n')) {
    const tick = /^count=(\d+)/.exec(line);
    if (tick !== null && Number(tick[1]) > count) first ??= Number(tick[1]);
    const check = /^verify (ok|BAD) count=(\d+)/.exec(line);
    if (check === null || Number(check[2]) <= count) continue;
    if (check[1] === 'ok') verified.push(Number(check[2]));
    else bad.push(line);
  }
  return { first, verified, bad };
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function waitFor<T>(probe: () => Promise<T | undefined | false>, what: string, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}
