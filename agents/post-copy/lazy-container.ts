/**
 * Container-level post-copy on a Podman host (docs/design/post-copy.md §5.2): the agent's side of the
 * runtime shim (runc-shim, beside this file). The agent starts its page relay (relay-process.ts) in the
 * network namespace of its host's containers, leaves the shim a marker naming the relay's loopback port,
 * and then checkpoints or restores through Podman exactly as it does for stop-and-copy: the shim makes
 * Podman's own checkpoint and restore lazy. The archive then holds only the non-memory images and the
 * rootfs changes; the memory follows through the relays until the destination's lazy-pages daemon has
 * every page.
 *
 * The relays run in their own sessions, so a crashed or restarted agent does not stop the pages: the source
 * keeps serving and the destination finishes by itself (it reads the daemon's exit code from the shim).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { formatPortRange, type Endpoint, type PageStreamKey, type PortRange, type RelayOutcome } from './page-relay.js';
import { RUNTIME_SHIM } from './post-copy-probe.js';

const execFileAsync = promisify(execFile);

/** Where the shim looks for markers unless UMS_POST_COPY_DIR says otherwise (the shim's own default). */
export const DEFAULT_MARKER_DIR = '/run/ums/post-copy';
const RELAY_PROCESS = join(dirname(fileURLToPath(import.meta.url)), 'relay-process.js');
/** A container id as Podman writes it (the shim accepts nothing else). */
const CONTAINER_ID = /^[0-9a-f]{12,64}$/;

export interface PostCopyHost {
  /** The shim's marker directory (its UMS_POST_COPY_DIR). */
  markerDir: string;
  /** The address the other host's agent reaches this host's page relay at. */
  relayAddress: string;
  /**
   * The local address the source's relay listens on, when relayAddress is not one of this host's own: a
   * cloud VM's public address is translated to its private one and cannot be bound (0.0.0.0 there).
   * Default: relayAddress.
   */
  relayListen?: string;
  /**
   * The ports the source's relay may listen on (UMS_PAGE_RELAY_PORTS), what the host's firewall opens to the
   * other hosts: its first free one, one per migration leaving this host at once. Default: a port the kernel picks.
   */
  relayPorts?: PortRange;
  /**
   * The network namespace of this host's containers and CRIU, when it is not the agent's own (the local
   * stack's simulated hosts): the relay runs there, as CRIU's loopback peer. Undefined on a real host.
   */
  netns?: string;
  /** The relays' resumeWithinMs and silenceMs (page-relay.ts); tests shorten them. */
  timing?: { resumeWithinMs?: number; silenceMs?: number };
}

/** How a lazy dump ended at the source. */
export type LazyDumpEnd =
  /** Every page reached the destination; runc removed the source container's tasks. */
  | { kind: 'moved'; relay: RelayOutcome }
  /**
   * The stream was lost. `sourceTasks`: 'thawed' when CRIU failed (the relay reset its socket): the tasks
   * run again, without the network Podman tore down, while Podman says Exited; 'ended' when CRIU saw a
   * clean end it took for the last page: a relay that died closes its socket with a FIN (no RST without
   * SO_LINGER, which Node cannot set), and CRIU then ends the tasks as after a complete transfer.
   */
  | { kind: 'lost'; reason: string; sourceTasks: 'thawed' | 'ended'; relay: RelayOutcome | undefined; dumpExitCode: number };

export class PostCopyError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'PostCopyError';
  }
}

/** ended()'s exit code for a dump that stop() ended. */
const STOPPED = -1;

/**
 * The source's half: created before Podman's checkpoint of `containerId`, which the shim then makes lazy.
 * `relay` is what the destination's agent dials.
 */
export class LazyDump {
  private stopped: (() => void) | undefined;
  private readonly stopping = new Promise<void>((resolve) => (this.stopped = resolve));

  private constructor(
    private readonly host: PostCopyHost,
    readonly containerId: string,
    readonly relay: Endpoint,
    private readonly relayProcess: RelayProcess,
  ) {}

  static async prepare(host: PostCopyHost, containerId: string, key: PageStreamKey): Promise<LazyDump> {
    checkContainerId(containerId);
    const relay = startRelay(host, key, ['source', key.streamId, host.relayListen ?? host.relayAddress]);
    try {
      const ready = await relay.ready;
      const address = ready.address as Endpoint;
      await mkdir(host.markerDir, { recursive: true, mode: 0o700 });
      await rm(markerPath(host, containerId, 'dump.rc'), { force: true });
      await writeFile(markerPath(host, containerId, 'dump'), `127.0.0.1:${String(ready.criuPort)}\n`, { mode: 0o600 });
      return new LazyDump(host, containerId, { host: host.relayAddress, port: address.port }, relay);
    } catch (error) {
      relay.child.kill('SIGKILL');
      throw error;
    }
  }

  /**
   * Call once Podman's checkpoint returned: refuses a checkpoint the shim did not make lazy (Podman's runtime
   * for this container is not the shim), whose archive then holds all the memory and whose source is gone.
   */
  async confirmLazy(): Promise<void> {
    const pid = await readFile(markerPath(this.host, this.containerId, 'dump.pid'), 'utf8').catch(() => undefined);
    if (pid === undefined) {
      throw new PostCopyError(
        `the checkpoint of ${this.containerId} was not lazy: Podman's runtime for it is not the UMS runtime shim (infra/host-setup.sh installs it, containers.conf names it)`,
      );
    }
  }

  /**
   * Resolves when the background dump ended: all pages moved (the relay saw the destination's END, and CRIU
   * exited 0), or the stream was lost (anything else). Removes the markers either way.
   */
  async ended(): Promise<LazyDumpEnd> {
    await this.confirmLazy();
    const rcFile = markerPath(this.host, this.containerId, 'dump.rc');
    const dumpExitCode = await Promise.race([waitForExitCode(rcFile), this.stopping.then(() => STOPPED)]);
    if (dumpExitCode === STOPPED) {
      return {
        kind: 'lost',
        reason: 'the lazy dump was stopped: the migration turned back',
        sourceTasks: 'ended',
        relay: undefined,
        dumpExitCode,
      };
    }
    // The relay reports right after CRIU's end; undefined if it died without a word.
    const relay = await Promise.race([this.relayProcess.outcome, sleep(1_000).then(() => undefined)]);
    const criuLog = await readFile(markerPath(this.host, this.containerId, 'criu.log'), 'utf8').catch(() => '');
    await this.removeMarkers();
    // Only the relay knows the destination confirmed: CRIU exits 0 on any clean end of its socket.
    if (dumpExitCode === 0 && relay?.kind === 'complete') return { kind: 'moved', relay };
    const reason = relay?.kind === 'lost' ? relay.reason : (criuErrors(criuLog) ?? `the lazy dump exited ${dumpExitCode}`);
    return { kind: 'lost', reason, sourceTasks: dumpExitCode === 0 ? 'ended' : 'thawed', relay, dumpExitCode };
  }

  /**
   * Ends the migration at the source, whatever the dump was doing (waiting for the destination, serving,
   * or done): the relay and the dump are killed, then the container's tasks that CRIU froze or thawed.
   * Podman's record stays Exited; the container can then be started afresh.
   */
  async stop(): Promise<void> {
    this.relayProcess.child.kill('SIGKILL');
    await stopLazyDump(this.host, this.containerId);
    this.stopped?.();
  }

  private removeMarkers(): Promise<void> {
    return removeDumpMarkers(this.host, this.containerId);
  }
}

/**
 * LazyDump.stop() for an agent that restarted since it started the dump (it holds no LazyDump): what the
 * shim recorded finds the dump, and the kernel's cgroups the container's tasks.
 */
export async function stopLazyDump(host: PostCopyHost, containerId: string, streamId?: string): Promise<void> {
  checkContainerId(containerId);
  if (streamId !== undefined) await killRelays(streamId);
  const pid = Number((await readFile(markerPath(host, containerId, 'dump.pid'), 'utf8').catch(() => '')).trim());
  // The shim started the dump in a session of its own: its process group holds runc and CRIU.
  if (pid > 0) killQuietly(-pid);
  await killContainerTasks(containerId);
  await removeDumpMarkers(host, containerId);
  // A runc killed in the middle of its dump leaves its state behind, and Podman could not start the
  // container again ("container with given ID already exists"). Through the shim: runc, as Podman calls it.
  await execFileAsync(RUNTIME_SHIM, ['delete', '--force', containerId]).catch(() => undefined);
}

/** SIGKILLs the relay processes of a stream: after an agent restart they are nobody's children. */
export async function killRelays(streamId: string): Promise<void> {
  const ours = (cmdline: string) => cmdline.includes(RELAY_PROCESS) && cmdline.includes(`\0${streamId}\0`);
  for (const pid of await processesMatching(ours)) killQuietly(pid);
}

/** SIGKILLs every task in the container's cgroups: what is left of it after CRIU froze or thawed it. */
async function killContainerTasks(containerId: string): Promise<void> {
  for (let round = 0; round < 50; round++) {
    const tasks = await processesMatching(
      () => true,
      (cgroups) => cgroups.includes(containerId),
    );
    if (tasks.length === 0) return;
    // A SIGKILL waits while the task is frozen, and CRIU killed mid-dump may leave its freezer FROZEN.
    if (round === 0) await thawFreezers(tasks);
    for (const pid of tasks) killQuietly(pid);
    await sleep(100);
  }
  throw new PostCopyError(`the tasks of container ${containerId.slice(0, 12)} did not die`);
}

/** Pids whose command line (NUL-separated, with a leading NUL) and cgroups pass the tests. */
async function processesMatching(
  byCmdline: (cmdline: string) => boolean,
  byCgroups: (cgroups: string) => boolean = () => true,
): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    const pid = Number(entry);
    if (!(pid > 0) || pid === process.pid) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'latin1').catch(() => undefined);
    if (cmdline === undefined || !byCmdline(`\0${cmdline}`)) continue;
    const cgroups = await readFile(`/proc/${pid}/cgroup`, 'utf8').catch(() => '');
    if (byCgroups(cgroups)) found.push(pid);
  }
  return found;
}

/** Thaws the freezer cgroups (v1) of these tasks; best effort, a task may be gone by now. */
async function thawFreezers(pids: number[]): Promise<void> {
  const paths = new Set<string>();
  for (const pid of pids) {
    const cgroups = await readFile(`/proc/${pid}/cgroup`, 'utf8').catch(() => '');
    const freezer = /^\d+:freezer:(\/.*)$/m.exec(cgroups)?.[1];
    if (freezer !== undefined) paths.add(freezer);
  }
  for (const path of paths) await writeFile(join('/sys/fs/cgroup/freezer', path, 'freezer.state'), 'THAWED').catch(() => undefined);
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone already
  }
}

/** Removes what the shim recorded of a dump that has ended (a discard after an agent restart finds them). */
export async function removeDumpMarkers(host: PostCopyHost, containerId: string): Promise<void> {
  for (const suffix of ['dump', 'dump.pid', 'dump.rc', 'serving', 'dump.log', 'criu.log']) {
    await rm(markerPath(host, containerId, suffix), { force: true });
  }
}

/** The destination's half: created before Podman's restore of the archive whose source was `sourceContainerId`. */
export class LazyRestore {
  private constructor(
    private readonly host: PostCopyHost,
    readonly sourceContainerId: string,
    private readonly relayProcess: RelayProcess,
  ) {}

  static async prepare(host: PostCopyHost, sourceContainerId: string, key: PageStreamKey, source: Endpoint): Promise<LazyRestore> {
    checkContainerId(sourceContainerId);
    await mkdir(host.markerDir, { recursive: true, mode: 0o700 });
    const daemonRc = markerPath(host, sourceContainerId, 'lazy-pages.rc');
    await rm(daemonRc, { force: true });
    await rm(markerPath(host, sourceContainerId, 'pages.outcome'), { force: true });
    const relay = startRelay(host, key, [
      ...['destination', key.streamId, source.host, String(source.port)],
      ...[daemonRc, markerPath(host, sourceContainerId, 'pages.outcome')],
    ]);
    try {
      const local = (await relay.ready).local as Endpoint;
      await writeFile(markerPath(host, sourceContainerId, 'restore'), `${local.host} ${local.port}\n`, { mode: 0o600 });
      return new LazyRestore(host, sourceContainerId, relay);
    } catch (error) {
      relay.child.kill('SIGKILL');
      throw error;
    }
  }

  /**
   * Resolves 'complete' once every page arrived and the source confirmed; 'lost' otherwise. Until then a
   * restored task that touches a missing page waits; after 'lost' it waits until release().
   */
  async ended(): Promise<RelayOutcome> {
    const outcome = await this.relayProcess.outcome;
    // Done: let it exit. After a loss it holds the daemon's socket until release().
    if (outcome.kind === 'complete') {
      this.relayProcess.child.stdin?.end();
      await this.removeMarkers();
    }
    return outcome;
  }

  /** Lets go of the lazy-pages daemon's socket: call after the restored copy was killed, never before. */
  async release(): Promise<void> {
    this.relayProcess.child.stdin?.end('release\n');
    await Promise.race([once(this.relayProcess.child, 'exit'), sleep(2_000)]);
    this.relayProcess.child.kill('SIGKILL');
    await this.removeMarkers();
  }

  private removeMarkers(): Promise<void> {
    return removeRestoreMarkers(this.host, this.sourceContainerId);
  }
}

/** How a page stream ended at the destination, and when. */
export interface PagesEnd {
  outcome: RelayOutcome;
  endedAt: Date;
}

/**
 * LazyRestore.ended() for an agent that restarted since it started the restore: its relay runs on and
 * writes the outcome to a marker when the stream ends.
 */
export async function lazyRestoreEnded(host: PostCopyHost, sourceContainerId: string): Promise<PagesEnd> {
  checkContainerId(sourceContainerId);
  for (;;) {
    const text = await readFile(markerPath(host, sourceContainerId, 'pages.outcome'), 'utf8').catch(() => undefined);
    if (text !== undefined) {
      const recorded = JSON.parse(text) as { outcome: RelayOutcome; endedAt: string };
      if (recorded.outcome.kind === 'complete') await removeRestoreMarkers(host, sourceContainerId);
      return { outcome: recorded.outcome, endedAt: new Date(recorded.endedAt) };
    }
    await sleep(250);
  }
}

async function removeRestoreMarkers(host: PostCopyHost, sourceContainerId: string): Promise<void> {
  for (const suffix of ['restore', 'lazy-pages.rc', 'lazy-pages.log', 'pages.outcome']) {
    await rm(markerPath(host, sourceContainerId, suffix), { force: true });
  }
}

interface RelayProcess {
  child: ChildProcess;
  ready: Promise<Record<string, unknown>>;
  outcome: Promise<RelayOutcome>;
}

function startRelay(host: PostCopyHost, key: PageStreamKey, args: string[]): RelayProcess {
  const node = [process.execPath, RELAY_PROCESS, ...args];
  const [command, argv] =
    host.netns === undefined ? [process.execPath, node.slice(1)] : ['nsenter', [`--net=/run/netns/${host.netns}`, '--', ...node]];
  const child = spawn(command, argv, {
    // Its own session: it outlives this agent (see the module's comment).
    detached: true,
    stdio: ['pipe', 'pipe', 'inherit'],
    env: {
      PATH: process.env.PATH,
      UMS_PAGE_STREAM_PSK: key.psk.toString('hex'),
      ...(host.timing?.resumeWithinMs !== undefined ? { UMS_PAGE_STREAM_RESUME_MS: String(host.timing.resumeWithinMs) } : {}),
      ...(host.timing?.silenceMs !== undefined ? { UMS_PAGE_STREAM_SILENCE_MS: String(host.timing.silenceMs) } : {}),
      ...(host.relayPorts !== undefined ? { UMS_PAGE_RELAY_PORTS: formatPortRange(host.relayPorts) } : {}),
    },
  });
  child.unref();
  const lines = createInterface({ input: child.stdout });
  let onReady: (message: Record<string, unknown>) => void = () => undefined;
  let onOutcome: (outcome: RelayOutcome) => void = () => undefined;
  let onEarlyExit: (error: Error) => void = () => undefined;
  const ready = new Promise<Record<string, unknown>>((resolve, reject) => ((onReady = resolve), (onEarlyExit = reject)));
  const outcome = new Promise<RelayOutcome>((resolve) => (onOutcome = resolve));
  lines.on('line', (line) => {
    const message = JSON.parse(line) as Record<string, unknown>;
    if ('outcome' in message) onOutcome(message.outcome as RelayOutcome);
    else if ('error' in message) onEarlyExit(new PostCopyError(`the ${args[0]} page relay could not start: ${String(message.error)}`));
    else onReady(message);
  });
  child.once('exit', (code, signal) => {
    onEarlyExit(new PostCopyError(`the ${args[0]} page relay exited (${code ?? signal}) before it was up`));
    onOutcome({ kind: 'lost', reason: `the page relay exited (${code ?? signal})`, bytesToPeer: 0, bytesFromPeer: 0, reconnects: 0 });
  });
  return { child, ready, outcome };
}

function markerPath(host: PostCopyHost, containerId: string, suffix: string): string {
  return join(host.markerDir, `${containerId}.${suffix}`);
}

function checkContainerId(id: string): void {
  if (!CONTAINER_ID.test(id)) throw new PostCopyError(`not a container id: "${id}"`);
}

async function waitForExitCode(path: string): Promise<number> {
  for (;;) {
    const text = await readFile(path, 'utf8').catch(() => undefined);
    if (text !== undefined) return Number(text.trim());
    await sleep(50);
  }
}

/** CRIU's own error lines, if its log has any. */
function criuErrors(log: string): string | undefined {
  const errors = log.split('\n').filter((line) => /Error|FAILED/.test(line));
  return errors.length === 0
    ? undefined
    : errors
        .slice(-3)
        .map((line) => line.replace(/^\([\d.]+\)\s*/, ''))
        .join('; ');
}
