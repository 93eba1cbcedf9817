import { execFile, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { INNER_CLIENT_NAME, INNER_COUNT_KEY, REDIS_PORT } from './images/build-server-images.js';
import type { PodmanHost } from './podman-host.js';
import type { WanEndpoint } from './wan.js';

/**
 * Real redis clients (Debian's redis-cli) around a localhost/ums/redis container, shared by the benchmark
 * (test/bench/server-run.ts) and the demo (infra/demo.ts):
 *
 * - admin commands run from the host in the container's network namespace (`nsenter -t PID -n redis-cli`):
 *   not in the container's process tree, and done before the freeze or after the restore;
 * - a writer on the stack's WAN (a client namespace of its own) that INCRs a key every 10 ms through the
 *   host's published port, the way an outside client reaches the service. INCR's reply is the write's
 *   acknowledgement and says how many writes are applied, so the replies prove what survived.
 */
const execFileAsync = promisify(execFile);

/** Every populated key is `<prefix>:<n>`, n = 0..keys-1 (DEBUG POPULATE's naming). */
export const POPULATE_PREFIX = 'ums';
/** Value size of the populated keys: with its sds header it fills jemalloc's 1024-byte class exactly. */
export const POPULATE_VALUE_BYTES = 1000;
/** The key the WAN writer increments. */
export const WRITER_KEY = 'wan:count';
const DIGEST_CHUNK_KEYS = 20_000;

/** Runs redis-cli against 127.0.0.1 in the network namespace of process `pid` (a container's init). */
export async function redisAt(pid: number, args: string[], input?: string): Promise<string> {
  const pending = execFileAsync(
    'nsenter',
    ['-t', String(pid), '-n', '--', 'redis-cli', '-h', '127.0.0.1', '-p', String(REDIS_PORT), ...args],
    {
      maxBuffer: 64 * 1024 * 1024,
      timeout: 300_000,
    },
  );
  // redis-cli may exit before reading its input (a refused connection): that is its answer, not a crash.
  pending.child.stdin?.on('error', () => undefined);
  pending.child.stdin?.end(input ?? '');
  try {
    return (await pending).stdout.trim();
  } catch (error) {
    const e = error as { stderr?: string; message: string };
    throw new Error(`redis-cli ${args.join(' ').slice(0, 120)} failed: ${(e.stderr ?? e.message).trim()}`, { cause: error });
  }
}

/** The container's init pid, from its host's Podman. */
export async function containerPid(host: PodmanHost, name: string): Promise<number> {
  const pid = Number((await host.podman(['inspect', '--format', '{{.State.Pid}}', name])).stdout.trim());
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`${name} on ${host.name} is not running (pid ${pid})`);
  return pid;
}

export async function usedMemoryBytes(pid: number): Promise<number> {
  const match = /^used_memory:(\d+)\r?$/m.exec(await redisAt(pid, ['INFO', 'memory']));
  if (!match?.[1]) throw new Error('INFO memory has no used_memory');
  return Number(match[1]);
}

/**
 * Fills the server with `<prefix>:<n>` strings of POPULATE_VALUE_BYTES (DEBUG POPULATE: "value:<n>" then
 * zero bytes; UMS moves the archive uncompressed, so zeros cost what random bytes cost) until INFO's
 * used_memory reaches `targetMiB`. Returns the number of populated keys.
 */
export async function populateTo(pid: number, targetMiB: number): Promise<number> {
  const target = targetMiB * 2 ** 20;
  let keys = 0;
  for (let round = 0; round < 8; round++) {
    const used = await usedMemoryBytes(pid);
    if (used >= target) return keys;
    // About 1.1 KB per key all told (value, key, dict entry, object); the next round tops up what is missing.
    const perKey = keys > 0 ? Math.max(used / keys, POPULATE_VALUE_BYTES) : POPULATE_VALUE_BYTES + 100;
    keys += Math.max(1, Math.ceil((target - used) / perKey));
    const reply = await redisAt(pid, ['DEBUG', 'POPULATE', String(keys), POPULATE_PREFIX, String(POPULATE_VALUE_BYTES)]);
    if (reply !== 'OK') throw new Error(`DEBUG POPULATE answered ${reply}`);
  }
  throw new Error(`used_memory did not reach ${targetMiB} MiB`);
}

export interface DatasetDigest {
  /** DBSIZE: the populated keys plus the clients' counters */
  keys: number;
  /** SHA-1 over the SHA-1s of each chunk of populated keys in order, each over "key\nDUMP(key)\n..." */
  digest: string;
}

/** Lua: SHA-1 of every `ARGV[1]:n` for n in [ARGV[2], ARGV[3]) with its DUMP serialisation, in order. */
const CHUNK_DIGEST = [
  'local parts = {}',
  'for i = tonumber(ARGV[2]), tonumber(ARGV[3]) - 1 do',
  "  local key = ARGV[1] .. ':' .. i",
  '  parts[#parts + 1] = key',
  "  parts[#parts + 1] = redis.call('DUMP', key) or '(missing)'",
  'end',
  "return redis.sha1hex(table.concat(parts, '\\n'))",
].join('\n');

/**
 * Digest of the populated keys (the counters the clients change go by DBSIZE only), chunk by chunk so no
 * script holds the whole dataset: one redis-cli fed the EVALSHAs on stdin.
 */
export async function datasetDigest(pid: number, populated: number): Promise<DatasetDigest> {
  const sha = await redisAt(pid, ['SCRIPT', 'LOAD', CHUNK_DIGEST]);
  const commands: string[] = [];
  for (let from = 0; from < populated; from += DIGEST_CHUNK_KEYS) {
    commands.push(`EVALSHA ${sha} 0 ${POPULATE_PREFIX} ${from} ${Math.min(from + DIGEST_CHUNK_KEYS, populated)}`);
  }
  const chunks = commands.length === 0 ? [] : (await redisAt(pid, [], `${commands.join('\n')}\n`)).split('\n');
  if (chunks.length !== commands.length || chunks.some((c) => !/^[0-9a-f]{40}$/.test(c)))
    throw new Error(`the digest script answered: ${chunks.slice(0, 3).join(' | ')}`);
  return { keys: Number(await redisAt(pid, ['DBSIZE'])), digest: createHash('sha1').update(chunks.join('\n')).digest('hex') };
}

export interface InnerClient {
  /** CLIENT LIST id and addr of the connection named `inner` */
  id: string;
  addr: string;
  /** seconds the connection has existed */
  age: number;
  /** inner:count, which that connection increments */
  count: number;
}

/** The in-container client (UMS_INNER_CLIENT=1): its one connection and its count; undefined if it has none. */
export async function innerClient(pid: number): Promise<InnerClient | undefined> {
  const entries = (await redisAt(pid, ['CLIENT', 'LIST'])).split('\n').map(
    (line) =>
      new Map(
        line
          .trim()
          .split(' ')
          .map((field) => {
            const eq = field.indexOf('=');
            return [field.slice(0, eq), field.slice(eq + 1)] as const;
          }),
      ),
  );
  const inner = entries.filter((e) => e.get('name') === INNER_CLIENT_NAME);
  if (inner.length !== 1 || !inner[0]) return undefined;
  return {
    id: inner[0].get('id') ?? '',
    addr: inner[0].get('addr') ?? '',
    age: Number(inner[0].get('age')),
    count: Number(await redisAt(pid, ['GET', INNER_COUNT_KEY])),
  };
}

/** Waits until the inner client has counted `atLeast` (the server is up and the client connected). */
export async function waitForInnerCount(pid: number, atLeast: number, timeoutMs = 60_000): Promise<InnerClient> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const inner = await innerClient(pid).catch(() => undefined);
    if (inner !== undefined && inner.count >= atLeast) return inner;
    if (Date.now() > deadline) throw new Error(`the inner client did not count to ${atLeast} within ${timeoutMs / 1000} s`);
    await sleep(100);
  }
}

/** One acknowledged INCR: when its reply arrived (performance.now()), its value and where it went. */
export interface WriterReply {
  t: number;
  value: number;
  address: string;
}

/** A connection of the writer that ended: when redis-cli exited, and what it said. */
export interface WriterEnd {
  t: number;
  address: string;
  message: string;
  /** replies this connection got */
  replies: number;
}

export interface WanWriter {
  replies: WriterReply[];
  ends: WriterEnd[];
  /** The address it sends to now (it moves to `then` after its first lost connection). */
  address(): string;
  /** Resolves once `count` replies came from `address` (rejects after timeoutMs). */
  repliesFrom(address: string, count: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts `redis-cli -h FIRST -r -1 -i 0.01 INCR wan:count` in a WAN client namespace: one connection that
 * writes every 10 ms. When redis-cli exits (its connection reset or refused), the writer starts it again
 * after 10 ms, at `then` from its first lost connection on: the address a DNS update would give a client
 * once the service moved (the same address for a move on one host).
 */
export function startWanWriter(client: WanEndpoint, first: string, then: string, port = REDIS_PORT): WanWriter {
  const replies: WriterReply[] = [];
  const ends: WriterEnd[] = [];
  let current = first;
  let stopped = false;
  let child: ChildProcess | undefined;
  const waiters = new Set<() => void>();

  const connect = (): void => {
    if (stopped) return;
    const address = current;
    const cli = client.spawn('redis-cli', ['-h', address, '-p', String(port), '-r', '-1', '-i', '0.01', 'INCR', WRITER_KEY], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = cli;
    let partial = '';
    let stderr = '';
    let got = 0;
    cli.stdout?.setEncoding('utf8');
    cli.stdout?.on('data', (chunk: string) => {
      const t = performance.now();
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        const value = Number(line.trim());
        if (line.trim() !== '' && Number.isInteger(value)) {
          replies.push({ t, value, address });
          got++;
        } else if (line.trim() !== '') stderr += `${line.trim()} `;
      }
      for (const wake of waiters) wake();
    });
    cli.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    cli.once('close', () => {
      if (stopped) return;
      ends.push({ t: performance.now(), address, message: stderr.trim().split('\n').at(-1) ?? '', replies: got });
      current = then;
      setTimeout(connect, 10);
    });
  };
  connect();

  return {
    replies,
    ends,
    address: () => current,
    repliesFrom: async (address, count, timeoutMs = 60_000) => {
      const enough = () => replies.filter((r) => r.address === address).length >= count;
      const deadline = Date.now() + timeoutMs;
      while (!enough()) {
        if (Date.now() > deadline)
          throw new Error(
            `the WAN writer got fewer than ${count} replies from ${address} within ${timeoutMs / 1000} s (last: ${ends.at(-1)?.message ?? 'none'})`,
          );
        await new Promise<void>((resolve) => {
          const wake = () => {
            waiters.delete(wake);
            resolve();
          };
          waiters.add(wake);
          setTimeout(wake, 200);
        });
      }
    },
    stop: async () => {
      stopped = true;
      const running = child;
      if (running && running.exitCode === null && running.signalCode === null) {
        const closed = new Promise((resolve) => running.once('close', resolve));
        running.kill('SIGTERM');
        await closed;
      }
    },
  };
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
  /** every value follows the one before by exactly 1, except after a lost connection where one
   * unacknowledged write in flight may have been applied (+2): no acknowledged write is missing */
  noLostWrites: boolean;
  acknowledged: number;
}

export function writerView(writer: Pick<WanWriter, 'replies' | 'ends'>): WriterView {
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
    closedWith: firstEnd?.message,
    lostConnections: ends.length,
    noLostWrites,
    acknowledged: replies.length,
  };
}
