/**
 * Clients of the real servers in localhost/ums/redis and localhost/ums/memcached (infra/images/
 * build-server-images.ts), for tests: the servers' own Debian client tools (redis-cli, memccat, memcstat)
 * and busybox nc, run from the host in the container's network namespace (nsenter -n: not in the
 * container's process tree) or in a WAN client's namespace. Nothing here speaks a protocol of its own
 * beyond memcached's text commands sent through nc.
 */
import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import {
  INNER_CLIENT_NAME,
  INNER_COUNT_KEY,
  MEMCACHED_INNER_CLIENT_ADDRESS,
  MEMCACHED_PORT,
  REDIS_PORT,
} from '../../infra/images/build-server-images.js';

const execFileAsync = promisify(execFile);

export async function run(command: string, args: string[], input?: string): Promise<string> {
  const pending = execFileAsync(command, args, { maxBuffer: 64 * 1024 * 1024, timeout: 60_000 });
  // A program that exits without reading its input (an error, or no input wanted) must not crash the test
  // with EPIPE: its exit status and stderr say what happened.
  pending.child.stdin?.on('error', () => undefined);
  pending.child.stdin?.end(input ?? '');
  try {
    return (await pending).stdout;
  } catch (error) {
    const e = error as { stderr?: string; message: string };
    throw new Error(`${command} ${args.join(' ').slice(0, 200)} failed: ${(e.stderr ?? e.message).trim()}`, { cause: error });
  }
}

/** Runs a host program in the network namespace of the process `pid` (the container's), nothing else. */
export function inNetns(pid: number, args: string[], input?: string): Promise<string> {
  return run('nsenter', ['-t', String(pid), '-n', '--', ...args], input);
}

/** redis-cli against the server on the container's loopback (where DEBUG is allowed). */
export async function redis(pid: number, ...args: string[]): Promise<string> {
  return (await inNetns(pid, ['redis-cli', '-h', '127.0.0.1', '-p', String(REDIS_PORT), ...args])).trim();
}

/**
 * SHA-1 of every key with its DUMP serialisation, sorted by key, leaving out keys that start with one of
 * `excludedPrefixes` (DEBUG DIGEST covers the whole dataset, and clients keep changing their own keys).
 */
export async function redisDigest(pid: number, excludedPrefixes: string[] = [INNER_COUNT_KEY]): Promise<string> {
  const script = `
    local keys = redis.call('KEYS', '*')
    table.sort(keys)
    local parts = {}
    for _, key in ipairs(keys) do
      local excluded = false
      for _, prefix in ipairs(ARGV) do
        if string.sub(key, 1, #prefix) == prefix then excluded = true end
      end
      if not excluded then
        parts[#parts + 1] = key
        parts[#parts + 1] = redis.call('DUMP', key)
      end
    end
    return redis.sha1hex(table.concat(parts, '\\n'))`;
  const digest = await redis(pid, 'EVAL', script, '0', ...excludedPrefixes);
  assert.match(digest, /^[0-9a-f]{40}$/);
  return digest;
}

export interface RedisClient {
  id: string;
  addr: string;
  name: string;
  age: number;
}

/** The entries of CLIENT LIST. */
export function redisClients(clientList: string): RedisClient[] {
  return clientList
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((line) => {
      const fields = new Map(
        line
          .trim()
          .split(' ')
          .map((f) => {
            const eq = f.indexOf('=');
            return [f.slice(0, eq), f.slice(eq + 1)] as const;
          }),
      );
      return { id: fields.get('id') ?? '', addr: fields.get('addr') ?? '', name: fields.get('name') ?? '', age: Number(fields.get('age')) };
    });
}

/** The one CLIENT LIST entry named `inner`. */
export function innerRedisClient(clientList: string): RedisClient {
  const inner = redisClients(clientList).filter((c) => c.name === INNER_CLIENT_NAME);
  assert.equal(inner.length, 1, `one client named ${INNER_CLIENT_NAME}:\n${clientList}`);
  return inner[0] as RedisClient;
}

/** Sends memcached text-protocol commands over a fresh connection (busybox nc) and returns the replies. */
export function memcached(pid: number, commands: string): Promise<string> {
  return inNetns(pid, ['busybox', 'nc', '127.0.0.1', String(MEMCACHED_PORT)], `${commands}quit\r\n`);
}

export async function memcachedCount(pid: number): Promise<number> {
  return Number(parseGet(await memcached(pid, `get ${INNER_COUNT_KEY}\r\n`)).get(INNER_COUNT_KEY) ?? -1);
}

export function memcachedStat(stats: string, stat: string): number {
  const match = new RegExp(`^STAT ${stat} (\\d+)\\r?$`, 'm').exec(stats);
  assert.ok(match?.[1] !== undefined, `no ${stat} in:\n${stats}`);
  return Number(match[1]);
}

/** From `stats conns`: the connection made to MEMCACHED_INNER_CLIENT_ADDRESS, which only the inner client uses. */
export function innerMemcachedConnection(statsConns: string): { fd: string; addr: string } {
  const byFd = new Map<string, Map<string, string>>();
  for (const m of statsConns.matchAll(/^STAT (\d+):(\S+) (.*?)\r?$/gm)) {
    const [, fd = '', field = '', value = ''] = m;
    if (!byFd.has(fd)) byFd.set(fd, new Map());
    byFd.get(fd)?.set(field, value);
  }
  const inner = [...byFd].filter(([, f]) => f.get('listen_addr') === `tcp:${MEMCACHED_INNER_CLIENT_ADDRESS}:${MEMCACHED_PORT}`);
  assert.equal(inner.length, 1, `one connection to ${MEMCACHED_INNER_CLIENT_ADDRESS}:\n${statsConns}`);
  const [[fd, fields] = ['', new Map<string, string>()]] = inner;
  return { fd, addr: fields.get('addr') ?? '' };
}

/** key -> value from the VALUE blocks of a get reply. */
export function parseGet(reply: string): Map<string, string> {
  const values = new Map<string, string>();
  const re = /VALUE (\S+) \d+ (\d+)\r\n/g;
  for (let m = re.exec(reply); m !== null; m = re.exec(reply)) {
    const start = m.index + m[0].length;
    values.set(m[1] ?? '', reply.slice(start, start + Number(m[2])));
    re.lastIndex = start + Number(m[2]);
  }
  return values;
}

/** A value of 100 to 900 bytes that depends on i, so a swapped or stale item shows. */
export function valueFor(i: number): string {
  const seed = createHash('sha256').update(String(i)).digest('hex');
  return seed.repeat(15).slice(0, 100 + (i % 9) * 100);
}

export async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`, { cause: last });
    await sleep(100);
  }
}

/** How an outside writer's redis-cli stopped: the line it printed to stderr, and its exit. */
export interface WriterEnd {
  error: string | undefined;
  exitCode: number | null;
}

/**
 * An outside client: ONE redis-cli process (Debian's, in interactive mode with its stdin a pipe), holding
 * one connection, fed `RPUSH <key> <n>` one at a time with n = 1, 2, 3, ...; n counts as acknowledged when
 * redis-cli printed the server's reply (the new length of the list). The first line redis-cli prints to
 * stderr ("Error: Connection reset by peer", "Could not connect to Redis ...") ends the writing: its stdin
 * is closed and it exits. redis-cli would otherwise reconnect by itself; this writer never does.
 */
export class OutsideRedisWriter {
  /** Every n whose RPUSH the server acknowledged, in order. */
  readonly acknowledged: number[] = [];
  /** Resolves when redis-cli has exited (after an error, or after `stop`). */
  readonly ended: Promise<WriterEnd>;
  private stopping = false;
  private readonly stdoutLines: string[] = [];
  private readonly stderrLines: string[] = [];
  private wake: (() => void) | undefined;
  private exited = false;

  /** `child`: redis-cli started with stdio pipes, connected to the server to write to. */
  constructor(
    private readonly child: ChildProcess,
    private readonly key: string,
  ) {
    const notify = () => {
      this.wake?.();
      this.wake = undefined;
    };
    if (child.stdout === null || child.stderr === null || child.stdin === null) throw new Error('redis-cli needs stdio pipes');
    createInterface({ input: child.stdout }).on('line', (line) => {
      this.stdoutLines.push(line);
      notify();
    });
    createInterface({ input: child.stderr }).on('line', (line) => {
      this.stderrLines.push(line);
      notify();
    });
    child.stdin.on('error', () => undefined);
    const exited = new Promise<number | null>((resolve) => {
      child.once('exit', (code) => {
        this.exited = true;
        notify();
        resolve(code);
      });
    });
    this.ended = this.writeLoop().then(async (error) => {
      child.stdin?.end();
      return { error, exitCode: await exited };
    });
  }

  get running(): boolean {
    return !this.exited;
  }

  /** Lines redis-cli printed to stderr. */
  get errors(): readonly string[] {
    return this.stderrLines;
  }

  async waitForAcks(count: number, timeoutMs = 30_000): Promise<void> {
    await waitFor(
      async () => this.acknowledged.length >= count,
      `${count} acknowledged writes from the outside client (${this.acknowledged.length} so far, errors: ${this.stderrLines.join(' | ')})`,
      timeoutMs,
    );
  }

  /** Stops writing and lets redis-cli exit at the end of its input. */
  async stop(): Promise<WriterEnd> {
    this.stopping = true;
    this.wake?.();
    return this.ended;
  }

  private async nextLine(): Promise<{ from: 'stdout' | 'stderr'; line: string } | undefined> {
    for (;;) {
      const err = this.stderrLines[0];
      if (err !== undefined) return { from: 'stderr', line: err };
      const out = this.stdoutLines.shift();
      if (out !== undefined) return { from: 'stdout', line: out };
      if (this.exited || this.stopping) return undefined;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  /** Returns the error line that ended it, or undefined when stopped or exited without one. */
  private async writeLoop(): Promise<string | undefined> {
    for (let n = 1; !this.stopping && !this.exited; n++) {
      this.child.stdin?.write(`RPUSH ${this.key} ${n}\n`);
      const reply = await this.nextLine();
      if (reply === undefined) return undefined;
      if (reply.from === 'stderr') return reply.line;
      if (!/^\d+$/.test(reply.line)) return `unexpected reply to RPUSH ${n}: ${reply.line}`;
      this.acknowledged.push(n);
      await sleep(10);
    }
    return this.stderrLines[0];
  }
}
