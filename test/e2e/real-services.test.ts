/**
 * Real servers no one here wrote (Debian's redis-server and memcached, infra/images/build-server-images.ts)
 * migrated through the whole stack with `ums migrate`, with both kinds of client: one inside the container's
 * process tree (kept: same connection after the move) and one outside it on the WAN (reset at the freeze;
 * it reconnects to the destination, and nothing it was told was written is lost). Then what users configure
 * (volumes, /dev/shm, rootfs changes, environment, a held file lock, a published port; Podman's own
 * checkpoint_test.go scenarios), the refusals that come before any freeze, and a failure only CRIU finds,
 * told in CRIU's words. One stack for the file; each case removes its containers.
 * Needs root, podman, runc, CRIU >= 4.2, gcc (static), redis-tools and libmemcached-tools (infra/host-setup.sh).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { readTicks } from '../../infra/images/counter-output.js';
import {
  DEFAULT_MEMCACHED_IMAGE,
  DEFAULT_REDIS_IMAGE,
  INNER_CLIENT_ENV,
  INNER_COUNT_KEY,
  MEMCACHED_PORT,
  REDIS_PORT,
} from '../../infra/images/build-server-images.js';
import { DEFAULT_HOSTS, startLocalStack, type LocalStack } from '../../infra/local-stack.js';
import type { PodmanHost } from '../../infra/podman-host.js';
import type { WanEndpoint } from '../../infra/wan.js';
import { repoPath } from '../../infra/repo-paths.js';
import { inNetns, waitFor } from '../../infra/real-servers/command.js';
import {
  innerMemcachedConnection,
  memcached,
  memcachedCount,
  memcachedStat,
  parseGet,
  valueFor,
} from '../../infra/real-servers/memcached-client.js';
import { datasetDigest, innerRedisClient, OUTSIDE_WRITER_KEY, redis, redisClients } from '../../infra/real-servers/redis-client.js';
import { missingWrites, OutsideRedisWriter } from '../../infra/real-servers/redis-writer.js';
import { umsJson, umsText } from './ums-cli.js';

const execFileAsync = promisify(execFile);
const AZURE = 'azure-eastus-1';
const GCP = 'gcp-us-central1-1';
// Per process, like the other e2e suites: two runs on one machine never share a stack.
const STACK_DIR = `/tmp/ums-realsvc-${process.pid}`;
const REDIS_KEYS = 50_000;
const MEMCACHED_KEYS = 2_000;

let stack: LocalStack;
let azure: PodmanHost;
let gcp: PodmanHost;
let outside: WanEndpoint;
let holdLock: string;

interface MigrateResult {
  state: string;
  phase?: string;
  code?: string;
  reason?: string;
  runningOn?: string | null;
  migrationId?: string;
  timeline?: { archiveBytes: number; frozenMs: number };
}

interface PlanWithStorage {
  storage?: {
    volumes: Array<{ name: string; destination: string; bytes?: number }>;
    volumesMove: string;
    binds: Array<{ source: string; destination: string }>;
  };
}

interface PlanSummary {
  ok: boolean;
  approach?: string;
  reason?: string;
  connections?: { restoredListening: string[]; kept: string; closed: string; republished: string[] };
}

const ums = <T>(args: string[]) => umsJson<T>(stack.info, args);
const wanAddress = (agentId: string): string =>
  stack.info.hosts.find((h) => h.agentId === agentId)?.wanAddress ?? assert.fail(`no host ${agentId}`);

async function inspect(
  host: PodmanHost,
  name: string,
): Promise<{ running: boolean; pid: number; startedAt: string; checkpointed: boolean } | undefined> {
  const list = JSON.parse((await host.podman(['ps', '-a', '--format', 'json'])).stdout) as Array<{ Names: string[] }>;
  if (!list.some((c) => c.Names[0] === name)) return undefined;
  const [state] = JSON.parse((await host.podman(['inspect', name])).stdout) as Array<{
    State: { Running: boolean; Pid: number; StartedAt: string; Checkpointed?: boolean };
  }>;
  assert.ok(state !== undefined);
  return {
    running: state.State.Running,
    pid: state.State.Pid,
    startedAt: state.State.StartedAt,
    checkpointed: state.State.Checkpointed === true,
  };
}

/** Starts a server image on `host` with its in-container client, publishing its port on the host's address. */
async function runWithInnerClient(host: PodmanHost, name: string, image: string, port: number): Promise<void> {
  await host.podman(['run', '-d', '--name', name, '-p', `${port}:${port}`, '-e', `${INNER_CLIENT_ENV}=1`, image]);
}

async function pidOf(host: PodmanHost, name: string): Promise<number> {
  const state = await inspect(host, name);
  assert.ok(state?.running === true && state.pid > 0, `${name} runs on ${host.name}: ${JSON.stringify(state)}`);
  return state.pid;
}

/** Waits until the source agent's registration describes the container's connections as wanted, then returns the plan. */
async function planWhen(name: string, to: string, ready: (plan: PlanSummary) => boolean, timeoutMs?: number): Promise<PlanSummary> {
  let last: PlanSummary | undefined;
  await waitFor(
    async () => {
      last = (await ums<PlanSummary>(['plan', name, '--to', to])).json;
      return ready(last);
    },
    `the plan of ${name} to show its connections (last: ${JSON.stringify(last?.connections)})`,
    timeoutMs,
  );
  return last as PlanSummary;
}

/** redis-cli from the outside client's namespace to a host's WAN address: stdout, or the error it printed. */
async function redisFromOutside(agentId: string, port: number, ...args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const { stdout, stderr } = await outside.exec('redis-cli', ['-h', wanAddress(agentId), '-p', String(port), ...args]);
    // redis-cli exits 0 even when it cannot connect; it says so on stderr.
    return stderr.trim() === '' ? { ok: true, out: stdout.trim() } : { ok: false, out: stderr.trim() };
  } catch (error) {
    return { ok: false, out: (error as Error).message };
  }
}

/**
 * redis-benchmark's key space for the post-copy case: -r draws key:<12 digits> below this many. About 80 MiB
 * of values: enough that the pages take seconds to arrive, and the bench (`npm run bench -- --servers`) moves
 * larger datasets.
 */
const BENCH_KEYS = ['-r', '100000'];

/** GETs of random keys from the outside client's namespace (Debian's redis-benchmark): p50 and p99 in ms. */
async function getLatency(agentId: string): Promise<{ p50: number; p99: number }> {
  const { stdout } = await outside.exec('redis-benchmark', [
    ...['-h', wanAddress(agentId), '-p', String(REDIS_PORT), '-t', 'get', '-n', '10000', '-c', '4', ...BENCH_KEYS, '--csv'],
  ]);
  // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
  const row = stdout.split('\n').find((line) => line.startsWith('"GET"'));
  const fields = row?.split(',').map((field) => Number(field.replace(/"/g, '')));
  if (fields === undefined || fields.length < 8) throw new Error(`redis-benchmark printed no GET row: ${stdout}`);
  return { p50: fields[4] ?? NaN, p99: fields[6] ?? NaN };
}

async function removeEverywhere(name: string, volumes: string[] = []): Promise<void> {
  for (const host of [azure, gcp]) {
    await host.podman(['rm', '-f', '-v', '--time', '0', name]).catch(() => undefined);
    for (const volume of volumes) await host.podman(['volume', 'rm', '-f', volume]).catch(() => undefined);
  }
}

describe('real services (redis, memcached) through the whole stack', { timeout: 600_000 }, () => {
  before(async () => {
    stack = await startLocalStack({ name: 'realsvc', dir: STACK_DIR, hosts: DEFAULT_HOSTS, serverImages: true });
    azure = stack.hosts.get(AZURE) as PodmanHost;
    gcp = stack.hosts.get(GCP) as PodmanHost;
    outside = await stack.wan.addClient('outside');
    // Debian's busybox-static has no flock applet: a static program of our own holds the lock (bind-mounted).
    const bin = join(STACK_DIR, 'bin');
    await mkdir(bin, { recursive: true });
    holdLock = join(bin, 'hold-lock');
    await execFileAsync('gcc', [
      '-static',
      '-O2',
      '-Wall',
      '-Wextra',
      '-o',
      holdLock,
      repoPath('test', 'fixtures', 'hold-lock', 'hold-lock.c'),
    ]);
    // Both agents registered, whichever case runs first.
    await waitFor(async () => {
      const agents = (await ums<Array<{ agentId: string }>>(['agents'])).json.map((a) => a.agentId);
      return agents.includes(AZURE) && agents.includes(GCP);
    }, 'both agents registered');
  });

  after(async () => {
    await stack?.stop();
  });

  it('redis: the inner client keeps its connection, the outside client is reset, reconnects, and loses no acknowledged write', async () => {
    const name = 'redis';
    await runWithInnerClient(azure, name, DEFAULT_REDIS_IMAGE, REDIS_PORT);
    const pidA = await pidOf(azure, name);
    await waitFor(async () => Number(await redis(pidA, 'GET', INNER_COUNT_KEY)) >= 10, 'the inner client counting on the source');
    assert.equal(await redis(pidA, 'DEBUG', 'POPULATE', String(REDIS_KEYS), 'ums', '128'), 'OK');
    await redis(pidA, 'RPUSH', 'ums:list', 'a', 'b', 'c');
    await redis(pidA, 'HSET', 'ums:hash', 'field', 'value', 'other', '42');
    await redis(pidA, 'ZADD', 'ums:zset', '1', 'one', '2', 'two');
    const digestBefore = (await datasetDigest(pidA)).digest;

    // It never reconnects by itself (no reconnectTo): the test reconnects, below.
    const writer = new OutsideRedisWriter(outside, { address: wanAddress(AZURE) });
    await writer.waitForReplies(20);

    const plan = await planWhen(
      name,
      GCP,
      (p) => /^1 connection/.test(p.connections?.kept ?? '') && (p.connections?.closed ?? '').includes(outside.address),
    );
    assert.equal(plan.ok, true);
    assert.equal(plan.approach, 'container');
    assert.match(plan.connections?.kept ?? '', /^1 connection\(s\) with both ends inside the container: kept/);
    assert.match(
      plan.connections?.closed ?? '',
      new RegExp(`^1 connection\\(s\\) with outside peers \\(${outside.address.replace(/\./g, '\\.')}:\\d+\\): reset at the freeze`),
    );
    assert.deepEqual(plan.connections?.republished, [`${REDIS_PORT} -> ${REDIS_PORT}/tcp`]);

    const innerBefore = await innerRedisClient(pidA);
    const countBefore = Number(await redis(pidA, 'GET', INNER_COUNT_KEY));
    const { code, json: result } = await ums<MigrateResult>(['migrate', name, '--to', GCP]);
    assert.equal(code, 0, `migration failed: ${result.reason}`);
    assert.equal(result.state, 'done');
    // Both hosts have the runtime shim: redis's memory went as CRIU wrote it, beside Podman's archive
    // (agents/memory/), and everything below checks what arrived that way.
    const record = await ums<{ memoryBesideBytes?: number }>(['status', result.migrationId ?? assert.fail('no migration id')]);
    assert.ok(
      (record.json.memoryBesideBytes ?? 0) >= REDIS_KEYS * 128,
      `${record.json.memoryBesideBytes ?? 0} bytes of redis's memory went beside the archive`,
    );

    // The outside client's connection ended: redis-cli reported the reset (or, retrying, the refusal) and exited.
    const end = await Promise.race([writer.ended, sleep(30_000).then(() => undefined)]);
    assert.ok(
      end !== undefined,
      `the outside client's connection did not end (acks ${writer.replies.length}, errors ${writer.errors.join(' | ')})`,
    );
    assert.match(
      end.error ?? '',
      /Connection reset by peer|Could not connect to Redis|Connection refused|Network is unreachable|Server closed the connection/,
      `how it ended: ${JSON.stringify(end)}`,
    );
    assert.equal(end.exitCode, 0, 'redis-cli exited at the end of its input');
    const acknowledged = writer.replies.length;
    assert.ok(acknowledged >= 20);

    // On the destination: the dataset, the inner client's very connection, counting on.
    const pidB = await pidOf(gcp, name);
    assert.equal((await datasetDigest(pidB)).digest, digestBefore, 'every loaded key and value is the same');
    await waitFor(
      async () => Number(await redis(pidB, 'GET', INNER_COUNT_KEY)) > countBefore + 5,
      'the inner client counting on the destination',
    );
    const innerAfter = await innerRedisClient(pidB);
    assert.equal(innerAfter.id, innerBefore.id, 'the inner client is the same connection (same client id)');
    assert.equal(innerAfter.addr, innerBefore.addr, 'from the same source port');

    // The outside client reconnects, to the destination's address, and finds every write it was told of.
    const length = await redisFromOutside(GCP, REDIS_PORT, 'LLEN', OUTSIDE_WRITER_KEY);
    assert.ok(length.ok, `reconnecting to ${GCP}: ${length.out}`);
    const log = await redisFromOutside(GCP, REDIS_PORT, 'LRANGE', OUTSIDE_WRITER_KEY, '0', '-1');
    assert.deepEqual(missingWrites(writer, log.out), [], `acknowledged writes missing on the destination (of ${acknowledged})`);
    console.log(
      `redis: ${acknowledged} acknowledged outside writes, all on ${GCP} (list length ${length.out}); the outside client ended with: ${end.error}`,
    );

    assert.equal(await inspect(azure, name), undefined, 'the source no longer has the container');
    const refused = await redisFromOutside(AZURE, REDIS_PORT, 'PING');
    assert.equal(refused.ok, false);
    assert.match(refused.out, /Connection refused/, `${AZURE}:${REDIS_PORT} after the move`);
    await removeEverywhere(name);
  });

  it('redis post-copy: it serves at the destination while its memory arrives; redis-benchmark measures it then; the dataset and the inner connection are intact', async () => {
    const name = 'redis-pc';
    await runWithInnerClient(azure, name, DEFAULT_REDIS_IMAGE, REDIS_PORT);
    const pidA = await pidOf(azure, name);
    await waitFor(async () => Number(await redis(pidA, 'GET', INNER_COUNT_KEY)) >= 10, 'the inner client counting on the source');
    // redis-benchmark's own keys (key:<12 digits>, 1000-byte values), so that its GETs below find values to read.
    await inNetns(pidA, [
      'redis-benchmark',
      '-h',
      '127.0.0.1',
      '-p',
      String(REDIS_PORT),
      ...['-t', 'set', '-n', '150000'],
      ...BENCH_KEYS,
      '-d',
      '1000',
      '-P',
      '32',
      '-q',
    ]);
    const digestBefore = (await datasetDigest(pidA)).digest;
    const innerBefore = await innerRedisClient(pidA);
    const before = await getLatency(AZURE);

    let finished = false;
    const migration = ums<MigrateResult & { timeline?: { phases: Array<{ name: string; ms: number }> } }>([
      ...['migrate', name, '--to', GCP, '--mode', 'post-copy'],
    ]).finally(() => (finished = true));
    // The restored server answers before its pages have all arrived: measure it then.
    await waitFor(async () => (await redisFromOutside(GCP, REDIS_PORT, 'PING')).out === 'PONG', 'the restored server to answer', 120_000);
    const whilePages = await getLatency(GCP);
    const endedBeforeIt = finished;
    const { code, json: result } = await migration;
    assert.equal(code, 0, `migration failed: ${result.reason}`);
    const after = await getLatency(GCP);

    const pidB = await pidOf(gcp, name);
    assert.equal((await datasetDigest(pidB)).digest, digestBefore, 'every key and value is the same once every page arrived');
    const innerAfter = await innerRedisClient(pidB);
    assert.equal(innerAfter.id, innerBefore.id, 'the inner client is the same connection (same client id)');
    const pagesMs = result.timeline?.phases.find((p) => p.name === 'pages')?.ms;
    console.log(
      `redis post-copy: GET latency from the WAN (redis-benchmark, 4 clients), p50 / p99 ms: before ${before.p50} / ${before.p99} on ${AZURE}; ` +
        `${endedBeforeIt ? 'after' : 'while'} pages arrived ${whilePages.p50} / ${whilePages.p99}; after ${after.p50} / ${after.p99} on ${GCP}; ` +
        `pages phase ${pagesMs ?? '?'} ms`,
    );
    await removeEverywhere(name);
  });

  it("memcached: items intact, the inner connection the same, memcached's own tools read them at the destination", async () => {
    const name = 'memcached';
    await runWithInnerClient(azure, name, DEFAULT_MEMCACHED_IMAGE, MEMCACHED_PORT);
    const pidA = await pidOf(azure, name);
    await waitFor(async () => (await memcachedCount(pidA)) >= 10, 'the inner client counting on the source');
    const items = new Map<string, string>();
    for (let i = 0; i < MEMCACHED_KEYS; i++) items.set(`ums:${i}`, valueFor(i));
    const stored = await memcached(pidA, [...items].map(([k, v]) => `set ${k} 0 0 ${v.length}\r\n${v}\r\n`).join(''));
    assert.equal(stored.split('\r\n').filter((l) => l === 'STORED').length, MEMCACHED_KEYS);
    const itemsBefore = memcachedStat(await memcached(pidA, 'stats\r\n'), 'curr_items');
    const innerBefore = innerMemcachedConnection(await memcached(pidA, 'stats conns\r\n'));
    const countBefore = await memcachedCount(pidA);

    const { code, json: result } = await ums<MigrateResult>(['migrate', name, '--to', GCP]);
    assert.equal(code, 0, `migration failed: ${result.reason}`);

    const pidB = await pidOf(gcp, name);
    await waitFor(async () => (await memcachedCount(pidB)) > countBefore + 5, 'the inner client counting on the destination');
    assert.deepEqual(
      innerMemcachedConnection(await memcached(pidB, 'stats conns\r\n')),
      innerBefore,
      'the inner client is the same connection (same fd, same source port)',
    );
    assert.equal(memcachedStat(await memcached(pidB, 'stats\r\n'), 'curr_items'), itemsBefore);
    const keys = [...items.keys()];
    for (let i = 0; i < keys.length; i += 500) {
      const batch = keys.slice(i, i + 500);
      const got = parseGet(await memcached(pidB, `get ${batch.join(' ')}\r\n`));
      for (const key of batch) assert.equal(got.get(key), items.get(key), `${key} intact`);
    }
    // memcached's own client tools, from outside at the destination's published port.
    const server = `--servers=${wanAddress(GCP)}:${MEMCACHED_PORT}`;
    const fetched = (await outside.exec('memccat', [server, 'ums:42'])).stdout;
    assert.equal(fetched.replace(/\n$/, ''), valueFor(42), 'memccat reads an item (it ends the value with a newline)');
    assert.match((await outside.exec('memcstat', [server])).stdout, new RegExp(`curr_items: ${itemsBefore}\\b`));
    assert.equal(await inspect(azure, name), undefined, 'the source no longer has the container');
    await removeEverywhere(name);
  });

  it('carries what users configure: named and anonymous volumes, /dev/shm, rootfs changes, environment, a held file lock, a published port; and back', async () => {
    const name = 'settings';
    const volume = 'realsvc-data';
    const port = 6380;
    const lockFile = '/var/lib/redis/ums.lock';
    await azure.podman([
      'run',
      '-d',
      '--name',
      name,
      '-p',
      `${port}:${REDIS_PORT}`,
      '-v',
      `${volume}:/data`,
      '-v',
      '/anon',
      '-e',
      'UMS_SETTING=carried-over',
      '-v',
      `${holdLock}:/usr/local/bin/hold-lock:ro`,
      // The lock holder is in the container's own process tree (a `podman exec` process would not move).
      '--entrypoint',
      'sh',
      DEFAULT_REDIS_IMAGE,
      '-c',
      `hold-lock ${lockFile} & exec /usr/local/bin/ums-redis-entrypoint`,
    ]);
    await pidOf(azure, name);
    await azure.podman([
      'exec',
      name,
      'sh',
      '-c',
      [
        'echo named-volume > /data/f',
        'echo anonymous-volume > /anon/f',
        'echo shm > /dev/shm/f',
        'echo added > /added.txt',
        'rm /etc/redis/redis.conf',
      ].join(' && '),
    ]);
    // hold-lock -n: exit 1 when another open file description holds the lock (flock -n).
    const tryLock = async (host: PodmanHost) =>
      (await host.podman(['exec', name, 'sh', '-c', `hold-lock -n ${lockFile}; echo "exit=$?"`])).stdout.trim();
    await waitFor(async () => (await tryLock(azure)) === 'held\nexit=1', 'the lock held on the source');
    const diffBefore = (await azure.podman(['diff', name])).stdout.split('\n').filter(Boolean).sort();
    assert.ok(diffBefore.includes('A /added.txt') && diffBefore.includes('D /etc/redis/redis.conf'), diffBefore.join(', '));
    const setKey = await redisFromOutside(AZURE, port, 'SET', 'settings:key', 'in-memory');
    assert.equal(setKey.out, 'OK');

    const there = await ums<MigrateResult>(['migrate', name, '--to', GCP]);
    assert.equal(there.code, 0, `migration failed: ${there.json.reason}`);

    const check = async (host: PodmanHost, agentId: string) => {
      const exec = async (command: string) => (await host.podman(['exec', name, 'sh', '-c', command])).stdout.trim();
      assert.equal(await exec('cat /data/f'), 'named-volume', `named volume on ${agentId}`);
      assert.equal(await exec('cat /anon/f'), 'anonymous-volume', `anonymous volume on ${agentId}`);
      assert.equal(await exec('cat /dev/shm/f'), 'shm', `/dev/shm on ${agentId}`);
      assert.equal(await exec('cat /added.txt'), 'added', `added file on ${agentId}`);
      assert.equal(
        await exec('test -e /etc/redis/redis.conf && echo present || echo deleted'),
        'deleted',
        `deleted image file on ${agentId}`,
      );
      assert.equal(await exec('echo "$UMS_SETTING"'), 'carried-over', `environment of a new process on ${agentId}`);
      // The lock holder's: redis-server rewrites its own environ block for its process title.
      const holderEnv = 'for c in /proc/[0-9]*/comm; do [ "$(cat $c)" = hold-lock ] && tr "\\0" "\\n" < ${c%/comm}/environ; done; true';
      assert.match(await exec(holderEnv), /^UMS_SETTING=carried-over$/m, `environment of a restored process on ${agentId}`);
      assert.deepEqual(
        (await host.podman(['diff', name])).stdout.split('\n').filter(Boolean).sort(),
        diffBefore,
        `the same rootfs changes on ${agentId}`,
      );
      assert.equal(await tryLock(host), 'held\nexit=1', `the lock is still held on ${agentId}`);
      const got = await redisFromOutside(agentId, port, 'GET', 'settings:key');
      assert.deepEqual(got, { ok: true, out: 'in-memory' }, `the published port ${port} answers at ${agentId}'s address`);
    };
    await check(gcp, GCP);
    assert.equal(await inspect(azure, name), undefined, 'the source no longer has the container');
    const leftVolumes = (await azure.podman(['volume', 'ls', '--format', '{{.Name}}'])).stdout.trim();
    assert.equal(leftVolumes, '', 'the volumes moved: no stale copy stays on the source');

    // And back: the source holds no volume of the same name that would make Podman refuse the restore.
    const back = await ums<MigrateResult>(['migrate', name, '--to', AZURE]);
    assert.equal(back.code, 0, `migration back failed: ${back.json.reason}`);
    await check(azure, AZURE);
    await removeEverywhere(name, [volume]);
    for (const host of [azure, gcp]) await host.podman(['volume', 'prune', '-f']);
  });

  it('redis with its append-only file on a volume: the files move while it serves, only what changed moves frozen, and the AOF reloads to the same data; a volume of that name at the destination is refused before any freeze', async () => {
    const name = 'redis-aof';
    const volume = 'redis-aof-data';
    const port = 6381;
    // Every write goes to the append-only file on the volume; no rewrite moves it while it is copied.
    await azure.podman([
      ...['run', '-d', '--name', name, '-p', `${port}:${REDIS_PORT}`, '-v', `${volume}:/var/lib/redis`, DEFAULT_REDIS_IMAGE],
      ...['--appendonly', 'yes', '--appendfsync', 'always', '--auto-aof-rewrite-percentage', '0'],
    ]);
    const pidA = await pidOf(azure, name);
    const exec = async (host: PodmanHost, command: string) => (await host.podman(['exec', name, 'sh', '-c', command])).stdout.trim();
    // 48 MiB the service never touches again: it must move before the freeze, not in it.
    await exec(azure, 'dd if=/dev/urandom of=/var/lib/redis/static.bin bs=1048576 count=48 2>/dev/null && sync');
    const staticSum = await exec(azure, 'sha256sum /var/lib/redis/static.bin');
    for (let i = 0; i < 200; i++) await redis(pidA, 'SET', `aof:${i}`, `value-${i}`);
    await redis(pidA, 'HSET', 'aof:hash', 'a', '1', 'b', '2');
    // Writes from the WAN every 10 ms, before, while and after the volume is copied, until the freeze resets them.
    const writer = new OutsideRedisWriter(outside, { address: wanAddress(AZURE), port });
    await writer.waitForReplies(20);

    // ums plan tells it before anything moves: the volume, its size, and that it is copied while redis runs
    // (the agent sizes volumes every 30 s: the plan may first show it smaller).
    const plan = await planWhen(name, GCP, (p) => ((p as PlanWithStorage).storage?.volumes[0]?.bytes ?? 0) >= 48 * 1024 * 1024, 90_000);
    const storage = (plan as PlanWithStorage).storage;
    assert.equal(storage?.volumes[0]?.name, volume);
    assert.equal(storage?.volumes[0]?.destination, '/var/lib/redis');
    assert.match(
      storage?.volumesMove ?? '',
      /^copied while the service runs .* then only the files changed since move while it is frozen$/,
    );
    assert.deepEqual(storage?.binds, []);

    // A volume of that name at the destination already: it is never written into, and the service never freezes.
    const startedAt = (await inspect(azure, name))?.startedAt;
    await gcp.podman(['volume', 'create', volume]);
    const theirs = join(gcp.volumesDir, volume, '_data', 'theirs');
    await writeFile(theirs, 'not to be touched');
    const taken = await ums<MigrateResult>(['migrate', name, '--to', GCP]);
    assert.equal(taken.code, 1);
    assert.equal(taken.json.code, 'destination-incompatible', taken.json.reason);
    assert.match(taken.json.reason ?? '', new RegExp(`a volume named "${volume}" already exists on ${GCP}`));
    assert.equal(await readFile(theirs, 'utf8'), 'not to be touched');
    const untouched = await inspect(azure, name);
    assert.equal(untouched?.running, true);
    assert.equal(untouched?.checkpointed, false, 'never frozen');
    assert.equal(untouched?.startedAt, startedAt, 'never restarted');
    assert.ok(writer.running, 'the outside client still writing to the source');
    await gcp.podman(['volume', 'rm', volume]);

    const there = await ums<MigrateResult>(['migrate', name, '--to', GCP]);
    assert.equal(there.code, 0, `migration failed: ${there.json.reason}`);
    await Promise.race([writer.ended, sleep(30_000)]);
    const acknowledged = writer.replies.length;

    // What moved while frozen, as the source agent logged it: the AOF's changes, not the static file.
    const sourceLog = await readFile(stack.info.hosts.find((h) => h.agentId === AZURE)?.agentLog ?? assert.fail('no agent log'), 'utf8');
    const frozenCopy = sourceLog
      .split('\n')
      .filter((line) => line.includes('volume changes since the copy sent (frozen)') && line.includes(`"volume":"${volume}"`))
      .map((line) => JSON.parse(line) as { bytes: number });
    assert.equal(frozenCopy.length, 1, 'the volume went outside the archive, its changes once in the freeze');
    assert.ok(frozenCopy[0]!.bytes < 8 * 1024 * 1024, `moved while frozen: ${frozenCopy[0]!.bytes} bytes (the volume holds 48 MiB)`);
    // The volume's bytes moved once: not again in Podman's export (whose own copy of the volume is dropped).
    const streamed = there.json.timeline?.archiveBytes ?? 0;
    assert.ok(streamed > 48 * 1024 * 1024 && streamed < 80 * 1024 * 1024, `the checkpoint stream carried ${streamed} bytes`);

    const pidB = await pidOf(gcp, name);
    assert.equal(await exec(gcp, 'sha256sum /var/lib/redis/static.bin'), staticSum, 'the static file intact');
    assert.equal(await redis(pidB, 'GET', 'aof:199'), 'value-199');
    const log = await redisFromOutside(GCP, port, 'LRANGE', OUTSIDE_WRITER_KEY, '0', '-1');
    assert.deepEqual(missingWrites(writer, log.out), [], `acknowledged writes missing on the destination (of ${acknowledged})`);
    // The append-only file on the destination's volume holds exactly what is in memory: redis reloads it
    // (DEBUG LOADAOF: flush, empty, load the files) and its own digest of the whole dataset is unchanged.
    const inMemory = await redis(pidB, 'DEBUG', 'DIGEST');
    assert.equal(await redis(pidB, 'DEBUG', 'LOADAOF'), 'OK');
    assert.equal(await redis(pidB, 'DEBUG', 'DIGEST'), inMemory, 'the dataset reloaded from the moved AOF is the one in memory');
    assert.ok(Number(await redis(pidB, 'DBSIZE')) >= 202);
    console.log(
      `redis AOF on a volume: ${acknowledged} acknowledged outside writes kept; ${frozenCopy[0]!.bytes} bytes of the volume moved while frozen`,
    );

    assert.equal(await inspect(azure, name), undefined, 'the source no longer has the container');
    assert.equal(
      (await azure.podman(['volume', 'ls', '--format', '{{.Name}}'])).stdout.trim(),
      '',
      'no stale copy of the volume on the source',
    );
    await removeEverywhere(name, [volume]);
  });

  it('refuses before any freeze, the service untouched: a port taken at the destination, a non-root process, an unknown destination', async () => {
    const name = 'redis-stays';
    await runWithInnerClient(azure, name, DEFAULT_REDIS_IMAGE, REDIS_PORT);
    const pid = await pidOf(azure, name);
    const startedAt = (await inspect(azure, name))?.startedAt;
    await waitFor(async () => Number(await redis(pid, 'GET', INNER_COUNT_KEY)) >= 10, 'the inner client counting');
    const writer = new OutsideRedisWriter(outside, { address: wanAddress(AZURE) });
    await writer.waitForReplies(10);
    const outsideClient = () => redisClients(pid).then((clients) => clients.filter((c) => c.addr.startsWith(`${outside.address}:`)));
    const [outsideBefore] = await outsideClient();
    assert.ok(outsideBefore !== undefined, 'the outside client is connected');
    const innerBefore = await innerRedisClient(pid);

    // (a) Another container already publishes 6379 on the destination.
    await gcp.podman(['run', '-d', '--name', 'port-holder', '-p', `${REDIS_PORT}:${REDIS_PORT}`, stack.info.image]);
    const countBefore = Number(await redis(pid, 'GET', INNER_COUNT_KEY));
    const acksBefore = writer.replies.length;
    const taken = await ums<MigrateResult>(['migrate', name, '--to', GCP]);
    assert.equal(taken.code, 1);
    assert.equal(taken.json.code, 'destination-incompatible', taken.json.reason);
    assert.match(taken.json.reason ?? '', new RegExp(`port ${REDIS_PORT}/tcp`));
    assert.equal(taken.json.runningOn, AZURE);
    // Its clients went on: the inner one on its connection, the outside one on its connection, acknowledged.
    await waitFor(async () => Number(await redis(pid, 'GET', INNER_COUNT_KEY)) > countBefore + 5, 'the inner client counting on');
    await writer.waitForReplies(acksBefore + 20);
    assert.ok(writer.running, 'the outside client is still connected');
    assert.deepEqual(writer.errors, [], 'the outside client saw no error');
    assert.equal((await outsideClient())[0]?.id, outsideBefore.id, 'the same outside connection');
    assert.equal((await innerRedisClient(pid)).id, innerBefore.id, 'the same inner connection');
    const state = await inspect(azure, name);
    assert.equal(state?.running, true);
    assert.equal(state?.checkpointed, false, 'never checkpointed');
    assert.equal(state?.startedAt, startedAt, 'never restarted');
    await gcp.podman(['rm', '-f', '--time', '0', 'port-holder']);

    // (c) An unknown destination: the CLI says nothing was frozen and where the service runs.
    const unknown = await umsText(stack.info, ['migrate', name, '--to', 'aws-nowhere-1']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /aws-nowhere-1/);
    assert.match(unknown.stderr, new RegExp(`nothing was frozen: the service runs untouched on ${AZURE}`));
    assert.ok(writer.running && writer.errors.length === 0, 'the outside client is still connected');
    const end = await writer.stop();
    assert.equal(end.error, undefined);
    await removeEverywhere(name);

    // (b) A process running as another user: CRIU could not read its rlimits here, so the source refuses.
    const counter = 'counter-uid1000';
    await azure.podman([
      'run',
      '-d',
      '--name',
      counter,
      '--user',
      '1000',
      '-e',
      'COUNTER_MARKER=/dev/shm/started',
      '-e',
      'COUNTER_TICK_MS=100',
      stack.info.image,
    ]);
    await waitFor(async () => (await readTicks(azure.url, counter)).length >= 5, 'the uid 1000 counter ticking');
    const nonRoot = await ums<MigrateResult>(['migrate', counter, '--to', GCP]);
    assert.equal(nonRoot.code, 1);
    // The planner refuses it when the source's registration already tells (approach-infeasible); the source
    // agent's own check before the freeze otherwise (not-checkpointable). Either way, nothing was frozen.
    assert.ok(
      ['approach-infeasible', 'not-checkpointable'].includes(nonRoot.json.code ?? ''),
      `${nonRoot.json.code}: ${nonRoot.json.reason}`,
    );
    assert.match(nonRoot.json.reason ?? '', /uid 1000/);
    assert.match(nonRoot.json.reason ?? '', /CAP_SYS_RESOURCE/);
    assert.equal(nonRoot.json.runningOn, AZURE);
    const ticks = (await readTicks(azure.url, counter)).length;
    await waitFor(async () => (await readTicks(azure.url, counter)).length > ticks + 3, 'the counter ticking on after the refusal');
    assert.equal((await inspect(azure, counter))?.checkpointed, false);
    assert.equal(await inspect(gcp, counter), undefined, 'nothing at the destination');
    await removeEverywhere(counter);

    // (d) A bind mount of a host path the destination lacks: host paths do not move, so the destination refuses
    // before the freeze. (The hosts share this machine's files: the path is removed once the container has it
    // mounted, which leaves the source's mount in place and no such path for the destination.)
    const bound = 'counter-bind';
    const hostPath = join(STACK_DIR, 'only-on-the-source');
    await mkdir(hostPath, { recursive: true });
    await azure.podman(['run', '-d', '--name', bound, '-v', `${hostPath}:/bound`, '-e', 'COUNTER_TICK_MS=100', stack.info.image]);
    await waitFor(async () => (await readTicks(azure.url, bound)).length >= 5, 'the bind-mounting counter ticking');
    await rm(hostPath, { recursive: true });
    const plan = await planWhen(bound, GCP, (p) => (p as PlanWithStorage).storage !== undefined);
    const storage = (plan as PlanWithStorage).storage;
    assert.deepEqual(storage?.binds, [{ source: hostPath, destination: '/bound' }], 'ums plan lists the bind mount');
    assert.equal(storage?.volumesMove, 'no volumes');
    const noPath = await ums<MigrateResult>(['migrate', bound, '--to', GCP]);
    assert.equal(noPath.code, 1);
    assert.equal(noPath.json.code, 'destination-incompatible', noPath.json.reason);
    assert.match(noPath.json.reason ?? '', new RegExp(`bind-mounts the host path ${hostPath} at /bound, which ${GCP} does not have`));
    assert.equal(noPath.json.runningOn, AZURE);
    const boundTicks = (await readTicks(azure.url, bound)).length;
    await waitFor(async () => (await readTicks(azure.url, bound)).length > boundTicks + 3, 'the counter ticking on after the refusal');
    assert.equal((await inspect(azure, bound))?.checkpointed, false, 'never checkpointed');
    await removeEverywhere(bound);
  });

  it("a failure only CRIU finds (a unix socket connected outside the container) is told in CRIU's words; the service runs on", async () => {
    const name = 'redis-ext-unix';
    const port = 6381;
    const socketDir = join(STACK_DIR, 'ext');
    await mkdir(socketDir, { recursive: true });
    const peers: Socket[] = [];
    let closed = 0;
    const server: Server = createServer((socket) => {
      peers.push(socket);
      socket.on('data', () => undefined);
      socket.on('close', () => closed++);
    });
    await new Promise<void>((resolve) => server.listen(join(socketDir, 'peer.sock'), resolve));
    try {
      // redis-cli in the container's process tree holds a connection to a unix socket served on the host.
      await azure.podman([
        'run',
        '-d',
        '--name',
        name,
        '-p',
        `${port}:${REDIS_PORT}`,
        '-v',
        `${socketDir}:/ext`,
        '--entrypoint',
        'sh',
        DEFAULT_REDIS_IMAGE,
        '-c',
        '(sleep 100000 | redis-cli -s /ext/peer.sock) & exec /usr/local/bin/ums-redis-entrypoint',
      ]);
      const pid = await pidOf(azure, name);
      await waitFor(async () => peers.length === 1, 'the container connected to the host socket');
      await redis(pid, 'SET', 'ext:key', 'kept');

      const failed = await ums<MigrateResult>(['migrate', name, '--to', GCP]);
      assert.equal(failed.code, 1);
      assert.equal(failed.json.phase, 'checkpoint');
      assert.match(failed.json.reason ?? '', /External socket is used/, "CRIU's own words");
      assert.doesNotMatch(failed.json.reason ?? '', /runc|exit status/, "not the runtime's command line");
      assert.equal(failed.json.runningOn, AZURE);

      // CRIU let the tasks go: the same process serves, its unix peer still connected, outside clients let in again.
      const state = await inspect(azure, name);
      assert.equal(state?.running, true);
      assert.equal(state?.pid, pid, 'the same process');
      assert.equal(await redis(pid, 'GET', 'ext:key'), 'kept');
      assert.equal(closed, 0, 'the unix connection to the host was never closed');
      assert.deepEqual(await redisFromOutside(AZURE, port, 'PING'), { ok: true, out: 'PONG' }, 'new outside connections are let in again');
      assert.equal(await inspect(gcp, name), undefined, 'nothing at the destination');

      const migrationId = failed.json.migrationId ?? assert.fail('no migration id');
      const status = await ums<{ state: string; failure?: { reason: string } }>(['status', migrationId]);
      assert.equal(status.json.state, 'failed');
      assert.match(status.json.failure?.reason ?? '', /External socket is used/);
      const statusText = await umsText(stack.info, ['status', migrationId]);
      assert.match(statusText.stdout, /External socket is used/);
    } finally {
      await removeEverywhere(name);
      server.close();
      for (const peer of peers) peer.destroy();
      await rm(socketDir, { recursive: true, force: true });
    }
  });
});
