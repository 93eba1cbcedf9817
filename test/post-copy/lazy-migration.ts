/**
 * Moves a process (paged-workload.py) between two simulated hosts on a WAN of their own with real CRIU:
 * lazily, its pages through the agents' page relay (agents/post-copy/page-relay.ts, each end a process of
 * its own in its host's network namespace: agents/post-copy/relay-process.ts), or by stop-and-copy (every image moved
 * before the restore), the baseline. Shared by test/integration/page-relay.test.ts and the benchmark.
 *
 * The non-memory images are copied between the hosts' directories on this machine's disk: it stands for
 * the archive's trip through the object store. Needs root, CRIU >= 4.2 with lazy pages, /usr/bin/python3.
 */
import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { openSync, closeSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import type { Endpoint, RelayOutcome } from '../../agents/post-copy/page-relay.js';
import { repoPath } from '../../infra/repo-paths.js';
import { createWan, type Wan, type WanEndpoint } from '../../infra/wan.js';

const execFileAsync = promisify(execFile);
const ENDPOINT = repoPath('dist', 'agents', 'post-copy', 'relay-process.js');
export const WORKLOAD = repoPath('test', 'post-copy', 'paged-workload.py');
/** Debian's own Python (a version manager's shim in PATH would exec another binary under another name). */
export const PYTHON = '/usr/bin/python3';
/** CRIU's lazy dump keeps memory in pipes larger than the 1 MiB default (environment.md). */
const PIPE_MAX = 4 * 1024 * 1024;

export interface Workload {
  pid: number;
  log: string;
}

export interface Relay {
  child: ChildProcess;
  ready: Promise<Record<string, unknown>>;
  outcome: Promise<RelayOutcome>;
}

/** The relays' resumeWithinMs and silenceMs (agents/post-copy/page-relay.ts), when a test wants them short. */
export interface RelayTiming {
  resumeWithinMs?: number;
  silenceMs?: number;
}

export interface WorkloadOptions {
  mib: number;
  /** Between two ticks. Default 50. */
  tickMs?: number;
  /** Ticks between two checks of every page. Default 20. */
  verifyEvery?: number;
}

export interface LazyRun {
  workload: Workload;
  sourceRelay: Relay;
  destinationRelay: Relay;
  dumpExit: Promise<number>;
  daemonExit: Promise<number>;
  /** Wall-clock ms: the dump started, the restore returned. */
  frozenAt: number;
  restoredAt: number;
  restoredPid: number;
  imagesAtSource: string;
  imagesAtDestination: string;
  /** Where the source's relay listens for the destination's. */
  sourceRelayAddress: Endpoint;
}

export interface CopyRun {
  workload: Workload;
  frozenAt: number;
  restoredAt: number;
  restoredPid: number;
  /** Bytes of images moved before the restore. */
  imageBytes: number;
}

export class PostCopyHosts {
  private readonly children: ChildProcess[] = [];
  private readonly pids: number[] = [];
  private runs = 0;

  private constructor(
    readonly base: string,
    readonly wan: Wan,
    readonly source: WanEndpoint,
    readonly destination: WanEndpoint,
    private readonly pipeMaxBefore: string,
  ) {}

  static async create(name: string): Promise<PostCopyHosts> {
    const pipeMaxBefore = (await readFile('/proc/sys/fs/pipe-max-size', 'utf8')).trim();
    if (Number(pipeMaxBefore) < PIPE_MAX) await writeFile('/proc/sys/fs/pipe-max-size', String(PIPE_MAX));
    const base = await mkdtemp(join(tmpdir(), 'ums-pc-'));
    const wan = await createWan({ stackName: name, stackDir: base });
    try {
      const source = await wan.addClient('src');
      const destination = await wan.addClient('dst');
      return new PostCopyHosts(base, wan, source, destination, pipeMaxBefore);
    } catch (error) {
      await wan.destroy();
      throw error;
    }
  }

  async destroy(): Promise<void> {
    for (const child of this.children) child.kill('SIGKILL');
    for (const pid of this.pids) killQuietly(pid);
    await this.wan.destroy();
    await writeFile('/proc/sys/fs/pipe-max-size', this.pipeMaxBefore).catch(() => undefined);
    await rm(this.base, { recursive: true, force: true });
  }

  /** Runs a program in a host's network namespace only (nsenter, not `ip netns exec`: no new mount namespace for CRIU to meet). */
  inHost(host: WanEndpoint, command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    const child = spawn('nsenter', [`--net=/run/netns/${host.netns}`, command, ...args], options);
    this.children.push(child);
    return child;
  }

  /** Starts the workload on the source host as the init of its own PID namespace; resolves once it filled its memory. */
  async startWorkload(options: WorkloadOptions): Promise<Workload> {
    const log = join(this.base, `workload-${++this.runs}.log`);
    // Its output goes to a file both hosts see: CRIU reopens it by path on the destination.
    const out = openSync(log, 'a');
    const args = [String(options.mib), String(options.tickMs ?? 50), String(options.verifyEvery ?? 20)];
    // No --kill-child: a parent-death signal on the root task would kill the restored copy (environment.md).
    const child = this.inHost(this.source, 'unshare', ['-p', '-f', 'setsid', PYTHON, WORKLOAD, ...args], {
      stdio: ['ignore', out, out],
      detached: true,
    });
    closeSync(out);
    // It ticks once its memory is filled.
    await waitFor(async () => /^tick /m.test(await readFile(log, 'utf8')), 'the workload to fill its memory', 120_000);
    // The workload is the only child of unshare (which nsenter became).
    const { stdout } = await execFileAsync('pgrep', ['-P', String(child.pid)]);
    const pid = Number(stdout.trim());
    if (!(pid > 0)) throw new Error(`no workload under unshare ${child.pid}`);
    this.pids.push(pid);
    return { pid, log };
  }

  relay(host: WanEndpoint, args: string[], psk: Buffer, timing: RelayTiming = {}): Relay {
    const child = this.inHost(host, process.execPath, [ENDPOINT, ...args], {
      env: {
        ...process.env,
        UMS_PAGE_STREAM_PSK: psk.toString('hex'),
        ...(timing.resumeWithinMs !== undefined ? { UMS_PAGE_STREAM_RESUME_MS: String(timing.resumeWithinMs) } : {}),
        ...(timing.silenceMs !== undefined ? { UMS_PAGE_STREAM_SILENCE_MS: String(timing.silenceMs) } : {}),
      },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const lines = createInterface({ input: child.stdout! });
    let onReady: (message: Record<string, unknown>) => void = () => undefined;
    let onOutcome: (outcome: RelayOutcome) => void = () => undefined;
    let onExit: (error: Error) => void = () => undefined;
    const ready = new Promise<Record<string, unknown>>((resolve, reject) => ((onReady = resolve), (onExit = reject)));
    const outcome = new Promise<RelayOutcome>((resolve) => (onOutcome = resolve));
    lines.on('line', (line) => {
      const message = JSON.parse(line) as Record<string, unknown>;
      if ('outcome' in message) onOutcome(message.outcome as RelayOutcome);
      else onReady(message);
    });
    // A relay that dies before it is up fails the run at once (after, `ready` has settled and this is moot).
    child.once('exit', (code, signal) => onExit(new Error(`the ${args[0]} relay exited (${code ?? signal}) before it was up`)));
    return { child, ready, outcome };
  }

  /**
   * Freezes the workload with a lazy dump (--leave-stopped: the source stays whole until discarded), moves
   * the non-memory images, restores on the destination with its pages fetched through the two relays.
   * Resolves once the restore returned; the pages are still moving then.
   */
  async migrateLazily(workload: Workload, timing: RelayTiming = {}): Promise<LazyRun> {
    const name = `lazy-${++this.runs}`;
    const psk = randomBytes(32);
    const [imagesAtSource, imagesAtDestination] = await this.imageDirs(name);
    const criuPort = 27_000 + Math.floor(Math.random() * 1000);

    const sourceRelay = this.relay(this.source, ['source', name, this.source.address, String(criuPort)], psk, timing);
    const listening = (await sourceRelay.ready).address as Endpoint;
    // The destination relay finishes once this file holds the daemon's exit code (the runtime shim's convention).
    const daemonRc = join(this.base, `${name}.lazy-pages.rc`);
    const destinationRelay = this.relay(
      this.destination,
      ['destination', name, listening.host, String(listening.port), daemonRc, join(this.base, `${name}.pages.outcome`)],
      psk,
      timing,
    );
    const local = (await destinationRelay.ready).local as Endpoint;

    const frozenAt = Date.now();
    const dump = this.inHost(
      this.source,
      'criu',
      [
        ...['dump', '-t', String(workload.pid), '-D', imagesAtSource, '-o', 'dump.log', '-v4'],
        ...['--lazy-pages', '--address', '127.0.0.1', '--port', String(criuPort), '--leave-stopped', '--status-fd', '3'],
      ],
      { stdio: ['ignore', 'ignore', 'ignore', 'pipe'] },
    );
    const dumpExit = exitOf(dump);
    // The status fd fires once the non-memory images are written: the page server then serves.
    await Promise.race([
      once(dump.stdio[3]!, 'data'),
      dumpExit.then(async (code) => {
        throw new Error(`criu dump exited ${code} before serving: ${await criuErrors(join(imagesAtSource, 'dump.log'))}`);
      }),
    ]);
    await cp(imagesAtSource, imagesAtDestination, { recursive: true, filter: (path) => !path.endsWith('.log') });
    const daemon = this.inHost(
      this.destination,
      'criu',
      [
        'lazy-pages',
        '--page-server',
        '--address',
        local.host,
        '--port',
        String(local.port),
        '-D',
        imagesAtDestination,
        '-o',
        'lazy.log',
        '-v4',
      ],
      { stdio: 'ignore' },
    );
    const daemonExit = exitOf(daemon).then(async (code) => {
      // Whole or not at all, as the runtime shim writes it: the relay polls the file and must never read it empty.
      await writeFile(`${daemonRc}.tmp`, String(code));
      await rename(`${daemonRc}.tmp`, daemonRc);
      return code;
    });
    await waitFor(async () => (await readdir(imagesAtDestination)).includes('lazy-pages.socket'), 'the lazy-pages daemon', 10_000);
    const restoredPid = await this.restore(imagesAtDestination, workload, ['--lazy-pages']);
    return {
      workload,
      sourceRelay,
      destinationRelay,
      dumpExit,
      daemonExit,
      frozenAt,
      restoredAt: Date.now(),
      restoredPid,
      imagesAtSource,
      imagesAtDestination,
      sourceRelayAddress: listening,
    };
  }

  /** The baseline: dump every page, move every image, restore; the source is killed by the dump. */
  async migrateByCopy(workload: Workload): Promise<CopyRun> {
    const [imagesAtSource, imagesAtDestination] = await this.imageDirs(`copy-${++this.runs}`);
    const frozenAt = Date.now();
    const dump = this.inHost(this.source, 'criu', ['dump', '-t', String(workload.pid), '-D', imagesAtSource, '-o', 'dump.log', '-v4'], {
      stdio: 'ignore',
    });
    const code = await exitOf(dump);
    if (code !== 0) throw new Error(`criu dump exited ${code}: ${await criuErrors(join(imagesAtSource, 'dump.log'))}`);
    await cp(imagesAtSource, imagesAtDestination, { recursive: true, filter: (path) => !path.endsWith('.log') });
    const restoredPid = await this.restore(imagesAtDestination, workload, []);
    const { stdout } = await execFileAsync('du', ['-sb', imagesAtDestination]);
    return { workload, frozenAt, restoredAt: Date.now(), restoredPid, imageBytes: Number(stdout.split('\t')[0]) };
  }

  private async imageDirs(name: string): Promise<[string, string]> {
    const dirs: [string, string] = [join(this.base, name, 'A'), join(this.base, name, 'B')];
    for (const dir of dirs) await mkdir(dir, { recursive: true });
    return dirs;
  }

  private async restore(images: string, workload: Workload, extra: string[]): Promise<number> {
    const restore = this.inHost(this.destination, 'criu', ['restore', '-D', images, ...extra, '-d', '-o', 'restore.log', '-v4'], {
      stdio: 'ignore',
    });
    const code = await exitOf(restore);
    if (code !== 0) throw new Error(`criu restore exited ${code}: ${await criuErrors(join(images, 'restore.log'))}`);
    // By the destination's network namespace and the kernel's name for it: its command line lies in its
    // memory, which a lazy restore has not brought yet (reading it finds nothing).
    const { stdout } = await execFileAsync('ip', ['netns', 'pids', this.destination.netns]);
    const pids = stdout.split('\n').filter((pid) => pid !== '');
    const names = await Promise.all(pids.map((pid) => readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')));
    // Not one restored before (it may linger as a zombie until PID 1 reaps it).
    const restoredPid = Number(pids.find((pid, i) => names[i]?.trim() === 'python3' && !this.pids.includes(Number(pid))));
    if (!(restoredPid > 0)) throw new Error('the restored workload is not running on the destination host');
    this.pids.push(restoredPid);
    return restoredPid;
  }
}

/** The workload's ticks: its count and when (wall-clock ms). */
export function ticksOf(log: string): Array<{ tick: number; at: number }> {
  return [...log.matchAll(/^tick (\d+) (\d+)$/gm)].map((m) => ({ tick: Number(m[1]), at: Number(m[2]) }));
}

export function exitOf(child: ChildProcess): Promise<number> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1))));
}

/** Where in the kernel the process waits (`handle_userfault`: on a page that has not arrived). */
export async function waitChannel(pid: number): Promise<string | undefined> {
  return readFile(`/proc/${pid}/wchan`, 'utf8').catch(() => undefined);
}

/** The process's state letter from /proc (R, S, T, Z...), undefined once it is gone. */
export async function processState(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

export function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** CRIU's own error lines from its log: the reason, not the command line. */
export async function criuErrors(path: string): Promise<string> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return (
    text
      .split('\n')
      .filter((line) => /Error|error/.test(line))
      .slice(-5)
      .join(' | ') || '(no error in its log)'
  );
}

/** Waits for the first line of the workload's log that `match` accepts; its last field is its wall-clock ms. */
export async function waitForLine(path: string, match: (line: string, atMs: number) => boolean, what: string): Promise<string> {
  let found: string | undefined;
  await waitFor(
    async () => {
      found = (await readFile(path, 'utf8')).split('\n').find((line) => match(line, Number(line.split(' ').at(-1))));
      return found !== undefined;
    },
    what,
    60_000,
  );
  return found ?? '';
}

export async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
