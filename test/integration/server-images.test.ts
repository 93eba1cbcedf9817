/**
 * Real servers no one here wrote, from Debian's packages (infra/images/build-server-images.ts), migrated
 * between two simulated hosts through PodmanEngine with their established TCP connections: redis-server and
 * memcached, each with its in-container client (UMS_INNER_CLIENT=1) holding one connection, and data in
 * memory; and webdis (HTTP in front of its own redis-server), whose POSTed commands are applied and read back. After a checkpoint on A and a restore on B (tcpEstablished, keepNetworkIdentity), the data is
 * intact, the inner client's connection is the very same one and went on counting, and the server takes
 * new connections at its old address. Clients run from the host in the container's network namespace
 * (nsenter -n): not in the container's process tree, and exited before the checkpoint.
 * Needs root, podman, runc, CRIU >= 4.2 and redis-tools, libmemcached-tools, busybox-static (infra/host-setup.sh).
 */
import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import { PodmanEngine } from '../../agents/podman-engine.js';
import {
  buildMemcachedImage,
  buildRedisImage,
  buildWebdisImage,
  DEFAULT_MEMCACHED_IMAGE,
  DEFAULT_REDIS_IMAGE,
  DEFAULT_WEBDIS_IMAGE,
  INNER_CLIENT_ENV,
  INNER_COUNT_KEY,
  MEMCACHED_PORT,
  REDIS_PORT,
  WEBDIS_PORT,
  type ServerImage,
} from '../../infra/images/build-server-images.js';
import { startPodmanHost, type PodmanHost } from '../../infra/podman-host.js';
import { inNetns, run, waitFor } from '../../infra/real-servers/command.js';
import {
  innerMemcachedConnection,
  memcached,
  memcachedCount,
  memcachedStat,
  parseGet,
  valueFor,
} from '../../infra/real-servers/memcached-client.js';
import { datasetDigest, innerRedisClient, redis } from '../../infra/real-servers/redis-client.js';

/** Keys of data put into memory before the migration. */
const REDIS_KEYS = 100_000;
const MEMCACHED_KEYS = 3_000;

describe('Debian server images migrate with their in-container clients', { timeout: 600_000 }, () => {
  let base: string;
  let hostA: PodmanHost;
  let hostB: PodmanHost;
  let engineA: PodmanEngine;
  let engineB: PodmanEngine;
  // The simulated hosts of every run on the machine share netavark's IPAM pool (infra/podman-host.ts): a
  // per-run subnet part keeps parallel runs from asking for the same static address.
  const net = `10.88.${150 + (process.pid % 50)}`;

  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'ums-si-'));
    [hostA, hostB] = await Promise.all([
      startPodmanHost({ name: 'A', dir: join(base, 'A') }),
      startPodmanHost({ name: 'B', dir: join(base, 'B') }),
    ]);
    engineA = new PodmanEngine({ socketPath: hostA.socketPath, where: 'host A' });
    engineB = new PodmanEngine({ socketPath: hostB.socketPath, where: 'host B' });
    assert.ok(hostB.netns !== undefined, 'host B has a network namespace of its own (clients reach containers from it)');
    for (const [build, tag] of [
      [buildRedisImage, DEFAULT_REDIS_IMAGE],
      [buildMemcachedImage, DEFAULT_MEMCACHED_IMAGE],
      [buildWebdisImage, DEFAULT_WEBDIS_IMAGE],
    ] as const) {
      const images: ServerImage[] = [];
      for (const host of [hostA, hostB]) {
        const started = Date.now();
        images.push(await build(host.url, tag, { env: host.env }));
        console.log(`image ${tag} on host ${host.name}: ${Date.now() - started} ms (server ${images.at(-1)?.serverVersion})`);
      }
      // A checkpoint names its image by id: both hosts must hold the very same image.
      assert.equal(images[0]?.id, images[1]?.id, `${tag} has one id on every host`);
    }
  });

  after(async () => {
    await Promise.allSettled([hostA?.destroy(), hostB?.destroy()]);
    if (base !== undefined) await rm(base, { recursive: true, force: true });
  });

  it('redis-server: dataset, its digest and the inner client connection survive A -> B', async () => {
    const name = 'redis-mig';
    const ip = `${net}.21`;
    await hostA.podman(['run', '-d', '--name', name, '--ip', ip, '-e', `${INNER_CLIENT_ENV}=1`, DEFAULT_REDIS_IMAGE]);
    const pidA = await pidOf(engineA, name);
    await waitFor(async () => Number(await redis(pidA, 'GET', INNER_COUNT_KEY)) >= 10, 'the inner client counting on A');

    assert.equal(await redis(pidA, 'DEBUG', 'POPULATE', String(REDIS_KEYS), 'ums', '128'), 'OK');
    await redis(pidA, 'RPUSH', 'ums:list', 'a', 'b', 'c');
    await redis(pidA, 'HSET', 'ums:hash', 'field', 'value', 'other', '42');
    await redis(pidA, 'ZADD', 'ums:zset', '1', 'one', '2', 'two');
    const dbsize = Number(await redis(pidA, 'DBSIZE'));
    assert.equal(dbsize, REDIS_KEYS + 4, 'populated keys, three typed keys and inner:count');
    const digestBefore = (await datasetDigest(pidA)).digest;
    const innerBefore = await innerRedisClient(pidA);
    const countBefore = Number(await redis(pidA, 'GET', INNER_COUNT_KEY));
    console.log(
      `redis before: ${dbsize} keys, digest ${digestBefore}, inner id=${innerBefore.id} addr=${innerBefore.addr} age=${innerBefore.age}s count=${countBefore}`,
    );

    const movedAt = Date.now();
    await migrate(engineA, engineB, name, join(base, `${name}.tar`));
    const pidB = await pidOf(engineB, name);
    assert.equal(await ipOf(hostB, name), ip, 'the container kept its address');

    await waitFor(async () => Number(await redis(pidB, 'GET', INNER_COUNT_KEY)) > countBefore + 5, 'the inner client counting on B');
    const innerAfter = await innerRedisClient(pidB);
    const elapsedS = Math.floor((Date.now() - movedAt) / 1000);
    console.log(
      `redis after: inner id=${innerAfter.id} addr=${innerAfter.addr} age=${innerAfter.age}s count=${await redis(pidB, 'GET', INNER_COUNT_KEY)}`,
    );
    assert.equal(innerAfter.id, innerBefore.id, 'the inner client is the same connection (same client id)');
    assert.equal(innerAfter.addr, innerBefore.addr, 'from the same source port');
    assert.ok(
      innerAfter.age >= innerBefore.age + elapsedS - 1,
      `its age went on across the migration: ${innerBefore.age}s, then ${innerAfter.age}s ${elapsedS}s later`,
    );

    assert.equal(Number(await redis(pidB, 'DBSIZE')), dbsize);
    assert.equal((await datasetDigest(pidB)).digest, digestBefore, 'every key and value is the same (digest of all keys but inner:count)');
    assert.equal(await redis(pidB, 'LRANGE', 'ums:list', '0', '-1'), 'a\nb\nc');
    assert.equal(await redis(pidB, 'HGET', 'ums:hash', 'other'), '42');

    // New connections: at its old address from host B's network, and redis' own benchmark inside.
    const pong = await run('nsenter', [`--net=/run/netns/${hostB.netns}`, '--', 'redis-cli', '-h', ip, '-p', String(REDIS_PORT), 'PING']);
    assert.equal(pong.trim(), 'PONG');
    const bench = await inNetns(pidB, [
      'redis-benchmark',
      '-h',
      '127.0.0.1',
      '-p',
      String(REDIS_PORT),
      '-n',
      '2000',
      '-c',
      '10',
      '-t',
      'ping,set,get',
      '-q',
    ]);
    assert.match(bench, /GET: [\d.]+ requests per second/);
    console.log(
      `redis-benchmark after the migration:\n${bench
        .replace(/\r/g, '\n')
        .split('\n')
        .filter((l) => /requests per second/.test(l))
        .join('\n')}`,
    );

    await engineA.removeContainer(name, { force: true });
    await engineB.removeContainer(name, { force: true });
  });

  it('memcached: items and the inner client connection survive A -> B', async () => {
    const name = 'memcached-mig';
    const ip = `${net}.22`;
    await hostA.podman(['run', '-d', '--name', name, '--ip', ip, '-e', `${INNER_CLIENT_ENV}=1`, DEFAULT_MEMCACHED_IMAGE]);
    const pidA = await pidOf(engineA, name);
    await waitFor(async () => (await memcachedCount(pidA)) >= 10, 'the inner client counting on A');

    const items = new Map<string, string>();
    for (let i = 0; i < MEMCACHED_KEYS; i++) items.set(`ums:${i}`, valueFor(i));
    const stored = await memcached(pidA, [...items].map(([k, v]) => `set ${k} 0 0 ${v.length}\r\n${v}\r\n`).join(''));
    assert.equal(stored.split('\r\n').filter((l) => l === 'STORED').length, MEMCACHED_KEYS, 'every item stored');
    const itemsBefore = memcachedStat(await memcached(pidA, 'stats\r\n'), 'curr_items');
    const innerBefore = innerMemcachedConnection(await memcached(pidA, 'stats conns\r\n'));
    const countBefore = await memcachedCount(pidA);
    console.log(`memcached before: ${itemsBefore} items, inner fd=${innerBefore.fd} addr=${innerBefore.addr} count=${countBefore}`);

    await migrate(engineA, engineB, name, join(base, `${name}.tar`));
    const pidB = await pidOf(engineB, name);
    assert.equal(await ipOf(hostB, name), ip, 'the container kept its address');

    await waitFor(async () => (await memcachedCount(pidB)) > countBefore + 5, 'the inner client counting on B');
    const innerAfter = innerMemcachedConnection(await memcached(pidB, 'stats conns\r\n'));
    console.log(`memcached after: inner fd=${innerAfter.fd} addr=${innerAfter.addr} count=${await memcachedCount(pidB)}`);
    assert.deepEqual(innerAfter, innerBefore, 'the inner client is the same connection (same fd, same source port)');

    assert.equal(memcachedStat(await memcached(pidB, 'stats\r\n'), 'curr_items'), itemsBefore);
    const keys = [...items.keys()];
    for (let i = 0; i < keys.length; i += 500) {
      const batch = keys.slice(i, i + 500);
      const got = parseGet(await memcached(pidB, `get ${batch.join(' ')}\r\n`));
      for (const key of batch) assert.equal(got.get(key), items.get(key), `${key} intact`);
    }
    // memcached's own clients: one in the container's network, one from host B's network at the old address.
    const fetched = await inNetns(pidB, ['memccat', `--servers=127.0.0.1:${MEMCACHED_PORT}`, 'ums:42']);
    assert.equal(fetched.replace(/\n$/, ''), valueFor(42), 'memccat reads an item (it ends the value with a newline)');
    const stat = await run('nsenter', [`--net=/run/netns/${hostB.netns}`, '--', 'memcstat', `--servers=${ip}:${MEMCACHED_PORT}`]);
    assert.match(stat, new RegExp(`curr_items: ${itemsBefore}\\b`));

    await engineA.removeContainer(name, { force: true });
    await engineB.removeContainer(name, { force: true });
  });

  it('webdis: POSTed commands are applied, read back, and survive A -> B', async () => {
    const name = 'webdis-mig';
    const ip = `${net}.23`;
    const url = `http://${ip}:${WEBDIS_PORT}`;
    await hostA.podman(['run', '-d', '--name', name, '--ip', ip, DEFAULT_WEBDIS_IMAGE]);
    // webdis listens once its redis-server answers (the entrypoint waits for it).
    await waitFor(async () => (await httpFrom(hostA, `${url}/PING`).catch(() => '')).includes('PONG'), 'webdis answering on A');

    // The command is the POST body, as a load generator sends it.
    assert.deepEqual(JSON.parse(await httpFrom(hostA, `${url}/`, 'RPUSH/posts/abc')), { RPUSH: 1 });
    assert.deepEqual(JSON.parse(await httpFrom(hostA, `${url}/`, 'RPUSH/posts/def')), { RPUSH: 2 });
    assert.deepEqual(JSON.parse(await httpFrom(hostA, `${url}/LRANGE/posts/0/-1`)), { LRANGE: ['abc', 'def'] });
    // Its redis-server is on the container's loopback only, and keeps nothing on disk.
    await assert.rejects(
      run('nsenter', [`--net=/run/netns/${hostA.netns}`, '--', 'redis-cli', '-h', ip, '-p', String(REDIS_PORT), 'PING']),
    );
    assert.deepEqual(JSON.parse(await httpFrom(hostA, `${url}/CONFIG/GET/save`)), { CONFIG: ['save', ''] });

    await migrate(engineA, engineB, name, join(base, `${name}.tar`));
    assert.equal(await ipOf(hostB, name), ip, 'the container kept its address');
    assert.deepEqual(JSON.parse(await httpFrom(hostB, `${url}/LRANGE/posts/0/-1`)), { LRANGE: ['abc', 'def'] }, 'the list moved');
    assert.deepEqual(JSON.parse(await httpFrom(hostB, `${url}/`, 'RPUSH/posts/ghi')), { RPUSH: 3 }, 'and takes new POSTs');

    await engineA.removeContainer(name, { force: true });
    await engineB.removeContainer(name, { force: true });
  });
});

/** An HTTP request from a host's network namespace (Node's fetch: no curl needed); fails on an error status. */
const HTTP_REQUEST = `
const [url, body] = process.argv.slice(1);
fetch(url, { method: body === undefined ? 'GET' : 'POST', body, signal: AbortSignal.timeout(5000) })
  .then(async (r) => { if (!r.ok) throw new Error('HTTP ' + r.status); process.stdout.write(await r.text()); })
  .catch((e) => { console.error(String(e.cause ?? e)); process.exit(1); });`;

/** GETs `url`, or POSTs `body` to it, from `host`'s network namespace; the answer's body. */
function httpFrom(host: PodmanHost, url: string, body?: string): Promise<string> {
  return run('nsenter', [
    `--net=/run/netns/${host.netns}`,
    '--',
    process.execPath,
    '-e',
    HTTP_REQUEST,
    url,
    ...(body !== undefined ? [body] : []),
  ]);
}

/** Checkpoint on `from` with established connections, then restore on `to` with them and the same address. */
async function migrate(from: PodmanEngine, to: PodmanEngine, name: string, archive: string): Promise<void> {
  const started = Date.now();
  await pipeline(await from.checkpoint(name, { tcpEstablished: true }), createWriteStream(archive));
  const checkpointMs = Date.now() - started;
  const restored = await to.restoreFromArchive(name, archive, { tcpEstablished: true, keepNetworkIdentity: true });
  assert.equal(restored.name, name);
  assert.equal((await to.inspectContainer(name))?.state, 'running');
  console.log(`${name}: checkpoint ${checkpointMs} ms, restore ${Date.now() - started - checkpointMs} ms`);
}

async function pidOf(engine: PodmanEngine, name: string): Promise<number> {
  const state = await engine.inspectContainer(name);
  assert.ok(state !== undefined && state.state === 'running' && state.pid > 0, `${name} running: ${JSON.stringify(state)}`);
  return state.pid;
}

async function ipOf(host: PodmanHost, name: string): Promise<string> {
  return (await host.podman(['inspect', '--format', '{{.NetworkSettings.IPAddress}}', name])).stdout.trim();
}
