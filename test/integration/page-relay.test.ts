/**
 * Post-copy through the agents' page relay (agents/post-copy/page-relay.ts) with real CRIU lazy pages,
 * between two simulated hosts on the stack's WAN (infra/wan.ts): a process (test/post-copy/paged-workload.py)
 * is dumped lazily on the source host, restored on the destination host after only its non-memory images
 * moved, and its pages follow through the two relays over TLS-PSK. Each relay end runs as a process of its
 * own inside its host's network namespace (test/post-copy/page-relay-endpoint.ts), so a test can kill it
 * as a crashed agent. The dump runs with --leave-stopped: the source stays complete and resumable until
 * its agent discards it.
 *
 * What is asserted is what the workload itself says: its tick count goes on from where it was frozen on the
 * destination, and every page checks after all have arrived ("verify ok"); after a failure, no copy ever
 * reads a page that did not arrive ("verify BAD" never appears), and exactly one copy runs in the end.
 *
 * Needs root, CRIU >= 4.2 with lazy pages (infra/host-setup.sh side-loads it), python3. Raises
 * fs.pipe-max-size to 4 MiB for its run (CRIU's lazy dump needs larger pipes) and puts it back.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { openSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { fetchPages, PageRelayError, servePages, type RelayOutcome } from '../../agents/post-copy/page-relay.js';
import { repoPath } from '../../infra/repo-paths.js';
import { createWan, type Wan, type WanEndpoint } from '../../infra/wan.js';

const execFileAsync = promisify(execFile);
const MIB = 256;
const PIPE_MAX = 4 * 1024 * 1024;
const ENDPOINT = repoPath('dist', 'test', 'post-copy', 'page-relay-endpoint.js');
const WORKLOAD = repoPath('test', 'post-copy', 'paged-workload.py');
/** Debian's own Python (a version manager's shim in PATH would exec another binary under another name). */
const PYTHON = '/usr/bin/python3';

interface Relay {
  child: ChildProcess;
  ready: Promise<Record<string, unknown>>;
  outcome: Promise<RelayOutcome>;
}

describe('post-copy through the page relay: a process moves between two hosts, its pages after it', { timeout: 300_000 }, () => {
  let base: string;
  let wan: Wan;
  let source: WanEndpoint;
  let destination: WanEndpoint;
  let pipeMaxBefore: string;
  const children: ChildProcess[] = [];
  const pids: number[] = [];

  before(async () => {
    pipeMaxBefore = (await readFile('/proc/sys/fs/pipe-max-size', 'utf8')).trim();
    if (Number(pipeMaxBefore) < PIPE_MAX) await writeFile('/proc/sys/fs/pipe-max-size', String(PIPE_MAX));
    base = await mkdtemp(join(tmpdir(), 'ums-pr-'));
    wan = await createWan({ stackName: 'page-relay', stackDir: base });
    source = await wan.addClient('src');
    destination = await wan.addClient('dst');
  });

  after(async () => {
    for (const child of children) child.kill('SIGKILL');
    for (const pid of pids) killQuietly(pid);
    await wan?.destroy();
    await writeFile('/proc/sys/fs/pipe-max-size', pipeMaxBefore).catch(() => undefined);
    if (base !== undefined) await rm(base, { recursive: true, force: true });
  });

  /** Runs a program in a host's network namespace only (nsenter, not `ip netns exec`: no new mount namespace for CRIU to meet). */
  function inHost(host: WanEndpoint, command: string, args: string[], options: Parameters<typeof spawn>[2] = {}): ChildProcess {
    const child = spawn('nsenter', [`--net=/run/netns/${host.netns}`, command, ...args], options);
    children.push(child);
    return child;
  }

  function relay(host: WanEndpoint, args: string[], psk: Buffer): Relay {
    const child = inHost(host, process.execPath, [ENDPOINT, ...args], {
      env: { ...process.env, UMS_PAGE_STREAM_PSK: psk.toString('hex') },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const lines = createInterface({ input: child.stdout! });
    let onReady: (message: Record<string, unknown>) => void = () => undefined;
    let onOutcome: (outcome: RelayOutcome) => void = () => undefined;
    const ready = new Promise<Record<string, unknown>>((resolve) => (onReady = resolve));
    const outcome = new Promise<RelayOutcome>((resolve) => (onOutcome = resolve));
    lines.on('line', (line) => {
      const message = JSON.parse(line) as Record<string, unknown>;
      if ('outcome' in message) onOutcome(message.outcome as RelayOutcome);
      else onReady(message);
    });
    return { child, ready, outcome };
  }

  /** Starts the workload on the source host as the init of its own PID namespace; resolves its pid and log. */
  async function startWorkload(name: string): Promise<{ pid: number; log: string }> {
    const log = join(base, `${name}.log`);
    await writeFile(log, '');
    // No --kill-child: a parent-death signal on the root task would kill the restored copy (environment.md).
    // Its output goes to a file both hosts see: CRIU reopens it by path on the destination.
    const out = openSync(log, 'a');
    const child = inHost(source, 'unshare', ['-p', '-f', 'setsid', PYTHON, WORKLOAD, String(MIB)], {
      stdio: ['ignore', out, out],
      detached: true,
    });
    await waitFor(async () => (await readFile(log, 'utf8')).includes('verify ok'), 'the workload to fill its memory and check it', 60_000);
    // The workload is the only child of unshare (which nsenter became).
    const { stdout } = await execFileAsync('pgrep', ['-P', String(child.pid)]);
    const pid = Number(stdout.trim());
    assert.ok(pid > 0, `the workload's pid (${stdout.trim()})`);
    pids.push(pid);
    return { pid, log };
  }

  /**
   * Freezes the workload with a lazy dump on the source, moves the non-memory images, and restores it on the
   * destination with its pages fetched through the relays. Resolves once the restore returned.
   */
  async function migrate(name: string) {
    const workload = await startWorkload(name);
    const psk = randomBytes(32);
    const streamId = `m-${name}`;
    const dir = join(base, name);
    const [imagesAtSource, imagesAtDestination] = [join(dir, 'A'), join(dir, 'B')];
    await mkdir(imagesAtSource, { recursive: true });
    await mkdir(imagesAtDestination, { recursive: true });
    const criuPort = 27_000 + Math.floor(Math.random() * 1000);

    const sourceRelay = relay(source, ['source', streamId, source.address, String(criuPort)], psk);
    const listening = (await sourceRelay.ready).address as { host: string; port: number };
    const destinationRelay = relay(destination, ['destination', streamId, listening.host, String(listening.port)], psk);
    const local = (await destinationRelay.ready).local as { host: string; port: number };

    const frozenAt = Date.now();
    const dump = inHost(
      source,
      'criu',
      [
        'dump',
        '-t',
        String(workload.pid),
        '-D',
        imagesAtSource,
        '-o',
        'dump.log',
        '-v4',
        '--lazy-pages',
        '--address',
        '127.0.0.1',
        '--port',
        String(criuPort),
        '--leave-stopped',
        '--status-fd',
        '3',
      ],
      { stdio: ['ignore', 'ignore', 'ignore', 'pipe'] },
    );
    const dumpExit = exitOf(dump);
    // The status fd fires once the non-memory images are written: the page server then serves.
    await Promise.race([
      once(dump.stdio[3]!, 'data'),
      dumpExit.then(async (code) =>
        assert.fail(`criu dump exited ${code} before serving: ${await lastLines(join(imagesAtSource, 'dump.log'))}`),
      ),
    ]);
    // Stands for the archive through the object store: the non-memory images, small pages-*.img included.
    await cp(imagesAtSource, imagesAtDestination, { recursive: true, filter: (path) => !path.endsWith('dump.log') });
    const daemon = inHost(
      destination,
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
    const daemonExit = exitOf(daemon);
    await waitFor(async () => (await readdir(imagesAtDestination)).includes('lazy-pages.socket'), 'the lazy-pages daemon', 10_000);
    const restore = inHost(destination, 'criu', ['restore', '-D', imagesAtDestination, '--lazy-pages', '-d', '-o', 'restore.log', '-v4'], {
      stdio: 'ignore',
    });
    assert.equal(await exitOf(restore), 0, `criu restore: ${await lastLines(join(imagesAtDestination, 'restore.log'))}`);
    const restoredAt = Date.now();
    const { stdout } = await execFileAsync('pgrep', ['-f', `^${PYTHON} ${WORKLOAD}`]);
    const restoredPid = Number(stdout.split('\n').find((pid) => pid !== '' && Number(pid) !== workload.pid));
    assert.notEqual(restoredPid, workload.pid, 'a new process on the destination');
    pids.push(restoredPid);
    return {
      workload,
      sourceRelay,
      destinationRelay,
      dump,
      dumpExit,
      daemon,
      daemonExit,
      frozenAt,
      restoredAt,
      restoredPid,
      imagesAtSource,
      imagesAtDestination,
    };
  }

  it('moves a 256 MiB process: it goes on from its frozen tick on the destination, every page checks after all arrived', async () => {
    const run = await migrate('ok');
    const ticksBefore = lastTick(await readFile(run.workload.log, 'utf8'));
    const daemonCode = await run.daemonExit;
    assert.equal(daemonCode, 0, `the lazy-pages daemon: ${await lastLines(join(run.imagesAtDestination, 'lazy.log'))}`);
    const allArrivedAt = Date.now();
    run.destinationRelay.child.stdin!.write('finish ok\n');
    const [sourceOutcome, destinationOutcome] = await Promise.all([run.sourceRelay.outcome, run.destinationRelay.outcome]);
    assert.equal(destinationOutcome.kind, 'complete');
    assert.equal(sourceOutcome.kind, 'complete', JSON.stringify(sourceOutcome));
    assert.ok(sourceOutcome.bytesToPeer >= MIB * 1024 * 1024, `${sourceOutcome.bytesToPeer} bytes of pages went through the relay`);
    assert.equal(await run.dumpExit, 0, `criu dump: ${await lastLines(join(run.imagesAtSource, 'dump.log'))}`);
    // --leave-stopped: the source is complete and stopped until its agent discards it.
    assert.equal(await processState(run.workload.pid), 'T', 'the source is stopped, not gone');
    killQuietly(run.workload.pid);

    // The restored copy: verified after every page arrived, and its count went on.
    const verifiedAfter = await waitForLine(
      run.workload.log,
      (line, at) => line.startsWith('verify') && at > allArrivedAt,
      'a check after all pages arrived',
    );
    assert.match(verifiedAfter, /^verify ok/);
    const log = await readFile(run.workload.log, 'utf8');
    assert.doesNotMatch(log, /verify BAD/);
    assert.ok(lastTick(log) > ticksBefore, 'the restored copy ticks on');
    assert.equal(countOf(log, /^tick 1 /m), 1, 'it never started over');
    console.log(
      `post-copy ${MIB} MiB: restore returned ${run.restoredAt - run.frozenAt} ms after the freeze began, all pages ${allArrivedAt - run.frozenAt} ms; ` +
        `${sourceOutcome.bytesToPeer} bytes source to destination, ${sourceOutcome.bytesFromPeer} back; longest tick gap ${longestGap(log)} ms`,
    );
    killQuietly(run.restoredPid);
  });

  it("the source's relay dies while pages move: the restored copy waits instead of reading zeros, the source is resumed, one copy runs", async () => {
    const run = await migrate('source-lost');
    // Kill the source agent's end while pages are still moving (256 MiB takes seconds through the relays).
    run.sourceRelay.child.kill('SIGKILL');
    const destinationOutcome = await run.destinationRelay.outcome;
    assert.equal(destinationOutcome.kind, 'lost', 'the destination knows the stream was lost');
    // The daemon's socket is held: the restored copy blocks on its next missing page. It must never check
    // memory that did not arrive, and it makes no progress.
    const held = await readFile(run.workload.log, 'utf8');
    await sleep(1_500);
    const later = await readFile(run.workload.log, 'utf8');
    assert.doesNotMatch(later, /verify BAD/, 'no copy ever ran on zero-filled pages');
    assert.equal(lastTick(later), lastTick(held), 'the restored copy is blocked, not running on');
    // Its agent ends it (the relay keeps the socket until then).
    killQuietly(run.restoredPid);
    run.destinationRelay.child.stdin!.write('release\n');
    await run.daemonExit;
    // The source: CRIU either failed (reset: it thawed the source) or, had it seen the end, left it stopped
    // (--leave-stopped). Either way its memory is whole: resume it.
    await run.dumpExit;
    const state = await processState(run.workload.pid);
    assert.ok(state === 'S' || state === 'R' || state === 'T', `the source process is still there (${state})`);
    process.kill(run.workload.pid, 'SIGCONT');
    const resumedAt = Date.now();
    const checked = await waitForLine(
      run.workload.log,
      (line, at) => line.startsWith('verify') && at > resumedAt,
      'the resumed source to check its memory',
    );
    assert.match(checked, /^verify ok/);
    // Gone, or a zombie until this machine's PID 1 reaps it (it takes a second or two here).
    const restoredState = await processState(run.restoredPid);
    assert.ok(restoredState === undefined || restoredState === 'Z', `the restored copy is gone (${restoredState}): one copy runs`);
    killQuietly(run.workload.pid);
  });

  it('refuses a destination holding another key, and a key that is not 32 bytes', async () => {
    const key = { streamId: 'm-keys', psk: randomBytes(32) };
    const served = await servePages({ key, listen: { host: '127.0.0.1' }, criu: { host: '127.0.0.1', port: 1 } });
    try {
      await assert.rejects(
        fetchPages({ key: { ...key, psk: randomBytes(32) }, source: served.address }),
        (error: unknown) => error instanceof PageRelayError && error.code === 'handshake-failed',
      );
      await assert.rejects(
        fetchPages({ key: { streamId: 'm-other', psk: key.psk }, source: served.address }),
        (error: unknown) => error instanceof PageRelayError && error.code === 'handshake-failed',
      );
      await assert.rejects(
        servePages({ key: { ...key, psk: randomBytes(16) }, listen: { host: '127.0.0.1' }, criu: { host: '127.0.0.1', port: 1 } }),
        (error: unknown) => error instanceof PageRelayError && error.code === 'bad-key',
      );
    } finally {
      served.close();
    }
  });
});

function exitOf(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1))));
}

async function processState(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

function lastTick(log: string): number {
  const ticks = [...log.matchAll(/^tick (\d+) /gm)];
  return Number(ticks.at(-1)?.[1] ?? 0);
}

function countOf(log: string, pattern: RegExp): number {
  return [...log.matchAll(new RegExp(pattern.source, `${pattern.flags.replace('g', '')}g`))].length;
}

/** The longest gap between two consecutive ticks: the freeze as the workload saw it. */
function longestGap(log: string): number {
  const times = [...log.matchAll(/^tick \d+ (\d+)$/gm)].map((m) => Number(m[1]));
  return times.slice(1).reduce((max, t, i) => Math.max(max, t - (times[i] ?? t)), 0);
}

async function lastLines(path: string): Promise<string> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return (
    text
      .split('\n')
      .filter((line) => /Error|error/.test(line))
      .slice(-5)
      .join(' | ') || '(no error in its log)'
  );
}

async function waitForLine(path: string, match: (line: string, atMs: number) => boolean, what: string): Promise<string> {
  let found: string | undefined;
  await waitFor(
    async () => {
      found = (await readFile(path, 'utf8')).split('\n').find((line) => match(line, Number(line.split(' ').at(-1))));
      return found !== undefined;
    },
    what,
    30_000,
  );
  return found ?? '';
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
