import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { REDIS_PORT } from '../images/build-server-images.js';
import type { WanEndpoint } from '../wan.js';
import { waitFor } from './command.js';
import { OUTSIDE_WRITER_KEY } from './redis-client.js';

/**
 * An outside client of a redis service, on the stack's WAN (a client namespace of its own), reaching it
 * through a host's published port, the way a user's client does. Each connection is ONE redis-cli process
 * (Debian's, in interactive mode with its stdin a pipe) fed `RPUSH <key> <n>` one at a time, every 10 ms,
 * with n = 1, 2, 3, ...: n counts as acknowledged when redis-cli printed the server's reply, the list's new
 * length, which also says how many writes are applied. The first line redis-cli prints to stderr
 * ("Error: Connection reset by peer", "Could not connect to Redis ...") ends the connection: its stdin is
 * closed and it exits (redis-cli would otherwise reconnect by itself). Then, given `reconnectTo` (the
 * address a DNS update would give a client once the service moved; the same address for a move on one
 * host), a new redis-cli connects there 10 ms later and n goes on; without it the writer ends there.
 */

/** One acknowledged RPUSH: when its reply arrived (performance.now()), n, the reply, and where it went. */
export interface WriterReply {
  t: number;
  n: number;
  /** the server's reply: the list's length after this write */
  value: number;
  address: string;
}

/** A connection of the writer that ended. */
export interface WriterEnd {
  /** when the connection was seen lost (the error line arrived) or stopped */
  t: number;
  address: string;
  /** the line redis-cli printed to stderr (or an unexpected reply) that ended it; undefined when stopped */
  error: string | undefined;
  /** redis-cli's exit code (0: it exited at the end of its input) */
  exitCode: number | null;
  /** replies this connection got */
  replies: number;
}

export interface OutsideWriterOptions {
  /** the address it writes to first */
  address: string;
  /** where to reconnect after a lost connection; without it the writer ends with its first connection */
  reconnectTo?: string;
  port?: number;
  key?: string;
}

interface Line {
  from: 'stdout' | 'stderr';
  line: string;
  t: number;
}

/** One interactive redis-cli with its stdio pipes: the lines it printed not yet read, and its exit. */
class RedisCliProcess {
  exited = false;
  readonly exit: Promise<number | null>;
  private readonly stdout: Line[] = [];
  private firstError: Line | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly child: ChildProcess,
    onError: (line: string) => void,
  ) {
    if (child.stdout === null || child.stderr === null || child.stdin === null) throw new Error('redis-cli needs stdio pipes');
    createInterface({ input: child.stdout }).on('line', (line) => {
      this.stdout.push({ from: 'stdout', line, t: performance.now() });
      this.notify();
    });
    createInterface({ input: child.stderr }).on('line', (line) => {
      this.firstError ??= { from: 'stderr', line, t: performance.now() };
      onError(line);
      this.notify();
    });
    // redis-cli may exit before reading its input (a refused connection): that is its answer, not a crash.
    child.stdin.on('error', () => undefined);
    this.exit = new Promise((resolve) => {
      child.once('exit', (code) => {
        this.exited = true;
        this.notify();
        resolve(code);
      });
    });
  }

  send(command: string): void {
    this.child.stdin?.write(`${command}\n`);
  }

  /** The next line, a stderr line before any other; undefined once redis-cli exited or `interrupted()`. */
  async next(interrupted: () => boolean): Promise<Line | undefined> {
    for (;;) {
      if (this.firstError !== undefined) return this.firstError;
      const out = this.stdout.shift();
      if (out !== undefined) return out;
      if (this.exited || interrupted()) return undefined;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  notify(): void {
    this.wake?.();
    this.wake = undefined;
  }

  /** Closes its stdin, so it exits at the end of its input; killed if it does not within 5 s (waiting on a frozen server). */
  async close(): Promise<number | null> {
    this.child.stdin?.end();
    if (await Promise.race([this.exit.then(() => true), sleep(5_000).then(() => false)])) return this.exit;
    this.child.kill('SIGTERM');
    return this.exit;
  }
}

export class OutsideRedisWriter {
  /** Every acknowledged write, in order. */
  readonly replies: WriterReply[] = [];
  /** Every connection that ended, in order. */
  readonly ends: WriterEnd[] = [];
  /** Every line redis-cli printed to stderr, across connections. */
  readonly errors: string[] = [];
  /** Resolves when the writer is done (its connection lost without `reconnectTo`, or `stop`): its last connection's end. */
  readonly ended: Promise<WriterEnd>;
  private stopping = false;
  private current: RedisCliProcess | undefined;
  private sent = 0;

  constructor(
    private readonly client: WanEndpoint,
    private readonly options: OutsideWriterOptions,
  ) {
    this.ended = this.writeAll();
  }

  /** A redis-cli of the writer is connected (or connecting) and has not exited. */
  get running(): boolean {
    return this.current !== undefined && !this.current.exited;
  }

  /** Waits until `count` writes were acknowledged (by `from` only, given). */
  async waitForReplies(count: number, from?: string, timeoutMs = 30_000): Promise<void> {
    const got = () => (from === undefined ? this.replies.length : this.replies.filter((r) => r.address === from).length);
    await waitFor(
      () => got() >= count,
      () =>
        `${count} acknowledged writes from the outside writer${from === undefined ? '' : ` to ${from}`} (${got()} so far, errors: ${this.errors.join(' | ') || 'none'})`,
      timeoutMs,
    );
  }

  /** Stops writing; its redis-cli exits at the end of its input. Resolves with the last connection's end. */
  async stop(): Promise<WriterEnd> {
    this.stopping = true;
    this.current?.notify();
    return this.ended;
  }

  private async writeAll(): Promise<WriterEnd> {
    const { address, reconnectTo } = this.options;
    for (let to = address; ; to = reconnectTo) {
      const end = await this.connection(to);
      this.ends.push(end);
      if (this.stopping || reconnectTo === undefined) return end;
      await sleep(10);
      if (this.stopping) return end;
    }
  }

  /** One redis-cli, written through until its first error line, an unexpected reply, or `stop`. */
  private async connection(address: string): Promise<WriterEnd> {
    const { port = REDIS_PORT, key = OUTSIDE_WRITER_KEY } = this.options;
    const cli = new RedisCliProcess(
      this.client.spawn('redis-cli', ['-h', address, '-p', String(port)], { stdio: ['pipe', 'pipe', 'pipe'] }),
      (line) => this.errors.push(line),
    );
    this.current = cli;
    let replies = 0;
    let lost: Line | undefined;
    while (!this.stopping && !cli.exited) {
      const n = ++this.sent;
      cli.send(`RPUSH ${key} ${n}`);
      const reply = await cli.next(() => this.stopping);
      if (reply === undefined) break;
      if (reply.from === 'stderr' || !/^\d+$/.test(reply.line)) {
        lost = reply.from === 'stderr' ? reply : { ...reply, line: `unexpected reply to RPUSH ${n}: ${reply.line}` };
        break;
      }
      this.replies.push({ t: reply.t, n, value: Number(reply.line), address });
      replies++;
      await sleep(10);
    }
    const t = lost?.t ?? performance.now();
    return { t, address, error: lost?.line, exitCode: await cli.close(), replies };
  }
}

/** The acknowledged writes (n) missing from `list`, the writer's list as LRANGE key 0 -1 printed it. */
export function missingWrites(writer: Pick<OutsideRedisWriter, 'replies'>, list: string): number[] {
  const stored = new Set(list.split('\n').map((line) => Number(line.trim())));
  return writer.replies.map((r) => r.n).filter((n) => !stored.has(n));
}

/** What the writer's replies say about a move: the service's outage as this client saw it, and lost writes. */
export interface WriterView {
  /** longest time between two successive replies (ms): the outage as a reconnecting client sees it */
  longestGapMs: number;
  /** the last reply before that gap, and the first after it */
  lastBefore: WriterReply | undefined;
  firstAfter: WriterReply | undefined;
  /** from the last reply before the gap to the first lost connection (ms): how promptly it was closed */
  closedAfterMs: number | undefined;
  /** the first lost connection's error */
  closedWith: string | undefined;
  /** connections that ended while the writer ran */
  lostConnections: number;
  /** every reply (the list's length) follows the one before by exactly 1, except after a lost connection
   * where one unacknowledged write in flight may have been applied (+2): no acknowledged write is missing */
  noLostWrites: boolean;
  acknowledged: number;
}

export function writerView(writer: Pick<OutsideRedisWriter, 'replies' | 'ends'>): WriterView {
  const { replies, ends } = writer;
  let longest = 0;
  let at = -1;
  let noLostWrites = true;
  for (let i = 1; i < replies.length; i++) {
    const previous = replies[i - 1] as WriterReply;
    const reply = replies[i] as WriterReply;
    if (reply.t - previous.t > longest) {
      longest = reply.t - previous.t;
      at = i;
    }
    const step = reply.value - previous.value;
    const reconnected = ends.some((end) => end.t >= previous.t && end.t <= reply.t);
    if (!(step === 1 || (reconnected && step === 2))) noLostWrites = false;
  }
  const lastBefore = at > 0 ? replies[at - 1] : undefined;
  const firstAfter = at > 0 ? replies[at] : undefined;
  const firstEnd = lastBefore === undefined ? undefined : ends.find((end) => end.t >= lastBefore.t);
  return {
    longestGapMs: longest,
    lastBefore,
    firstAfter,
    closedAfterMs: firstEnd && lastBefore ? firstEnd.t - lastBefore.t : undefined,
    closedWith: firstEnd?.error,
    lostConnections: ends.length,
    noLostWrites,
    acknowledged: replies.length,
  };
}
