import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { rm } from 'node:fs/promises';
import { formatFrontman } from '../cli/format.js';
import { bareCheckpointRestore } from './bare-checkpoint.js';
import { listMigrations, runDemo, say, seconds, ums } from './demo-console.js';
import { DEFAULT_REDIS_IMAGE, DEFAULT_WEBDIS_IMAGE, INNER_CLIENT_ENV, REDIS_PORT, WEBDIS_PORT } from './images/build-server-images.js';
import { exactlyOnce, readAppliedPosts, startOpenLoopLoad, waitForWebdis } from './load/open-loop.js';
import { startLocalStack, type LocalStack } from './local-stack.js';
import type { PodmanHost } from './podman-host.js';
import { containerPid } from './real-servers/command.js';
import { datasetDigest, OUTSIDE_WRITER_KEY, populateTo, redis, usedMemoryBytes, waitForInnerCount } from './real-servers/redis-client.js';
import { missingWrites, OutsideRedisWriter, writerView } from './real-servers/redis-writer.js';

/**
 * The live-migration demo: the whole stack on this machine, Debian's redis-server started on the "azure"
 * host with data in memory and two real clients: one inside the container (one connection, INCR every
 * 0.1 s) and one outside, on the stack's WAN, writing every 10 ms through the host's published port
 * (infra/real-servers/redis-writer.ts).
 * `ums plan` says what happens to the network, `ums migrate` moves it to the "gcp" host, then each client
 * says what it saw. Then an HTTP service behind the frontman, moved under open-loop load: its clients see a
 * pause, never an error. Last, the bare Podman checkpoint + restore of the redis container on one host, as
 * the floor to compare against.
 */
const DATA_MIB = 64;
/** The frontman's service in the second act, and the port clients reach it on at the frontman. */
const FRONTED = 'web';
const FRONT_PORT = 80;

async function main(): Promise<number> {
  const name = `demo-${process.pid}`;
  say('starting the local stack (NATS JetStream, Azurite, GCS emulator, functions, bridge, two hosts on a WAN)...');
  const started = Date.now();
  const stack = await startLocalStack({
    name,
    dir: join(tmpdir(), `ums-${name}`),
    serverImages: true,
    frontman: { services: [{ container: FRONTED, protocol: 'http', port: WEBDIS_PORT, listenPort: FRONT_PORT }] },
  });
  try {
    const [azure, gcp] = stack.info.hosts;
    const source = azure && stack.hosts.get(azure.agentId);
    const destination = gcp && stack.hosts.get(gcp.agentId);
    if (!azure || !gcp || !source || !destination) throw new Error('the stack has fewer than two hosts');
    say(`stack ready in ${seconds(Date.now() - started)}: ${azure.agentId} at ${azure.wanAddress}, ${gcp.agentId} at ${gcp.wanAddress}`);

    const container = 'redis';
    await source.podman([
      'run',
      '-d',
      '--name',
      container,
      '-p',
      `${REDIS_PORT}:${REDIS_PORT}`,
      '-e',
      `${INNER_CLIENT_ENV}=1`,
      DEFAULT_REDIS_IMAGE,
    ]);
    const pidA = await containerPid(source, container);
    await waitForInnerCount(pidA, 5);
    const keys = await populateTo(pidA, DATA_MIB);
    say(
      `\nstarted "${container}" (${DEFAULT_REDIS_IMAGE}, Debian's redis-server) on ${azure.agentId}, port ${REDIS_PORT} published at ${azure.wanAddress}`,
    );
    say(`  data: ${keys} keys, used_memory ${((await usedMemoryBytes(pidA)) / 2 ** 20).toFixed(0)} MiB`);

    const client = await stack.wan.addClient('client');
    const writer = new OutsideRedisWriter(client, { address: azure.wanAddress, reconnectTo: gcp.wanAddress });
    await writer.waitForReplies(20, azure.wanAddress, 30_000);
    const before = await datasetDigest(pidA);
    const inner = await waitForInnerCount(pidA, 0);
    say(
      `  inner client (redis-cli in the container's process tree): CLIENT LIST id=${inner.id} addr=${inner.addr}, inner:count=${inner.count}`,
    );
    say(
      `  outside client (redis-cli, RPUSH ${OUTSIDE_WRITER_KEY} n every 10 ms, from ${client.address} on the WAN): writing to ${azure.wanAddress}, ${writer.replies.length} writes acknowledged so far`,
    );
    say(`  dataset: DBSIZE ${before.keys}, digest ${before.digest.slice(0, 16)}...`);
    // The planner reads the source's registration, which a heartbeat refreshes about every 2 s.
    await sleep(2_500);

    say(`\n$ ums plan ${container} --to ${gcp.agentId}     (its network section)`);
    await ums(stack.info, ['plan', container, '--to', gcp.agentId], 'network:');

    say(`\n$ ums migrate ${container} --to ${gcp.agentId}`);
    const migrateStarted = performance.now();
    const exitCode = await ums(stack.info, ['migrate', container, '--to', gcp.agentId]);
    if (exitCode !== 0) throw new Error(`ums migrate exited with ${exitCode}`);

    const pidB = await containerPid(destination, container);
    const innerAfter = await waitForInnerCount(pidB, inner.count + 5, 30_000);
    await writer.waitForReplies(50, gcp.wanAddress, 60_000);
    await writer.stop();
    const view = writerView(writer);
    const after = await datasetDigest(pidB);
    const list = await redis(pidB, 'LRANGE', OUTSIDE_WRITER_KEY, '0', '-1');
    const missing = missingWrites(writer, list);
    const length = Number(await redis(pidB, 'LLEN', OUTSIDE_WRITER_KEY));

    say(`\nwhat the clients saw:`);
    const sameInner = innerAfter.id === inner.id && innerAfter.addr === inner.addr;
    say(
      `  inner client: CLIENT LIST id=${innerAfter.id} addr=${innerAfter.addr} age=${innerAfter.age}s on ${gcp.agentId}: ${sameInner ? 'the same connection' : 'NOT the same connection'}; inner:count ${inner.count} -> ${innerAfter.count}`,
    );
    const { lastBefore, firstAfter } = view;
    if (lastBefore && firstAfter) {
      say(
        `  outside client: last reply ${lastBefore.value} from ${lastBefore.address} ${seconds(lastBefore.t - migrateStarted)} after "ums migrate" started; ` +
          `connection closed ${view.closedAfterMs === undefined ? '?' : `${(view.closedAfterMs / 1000).toFixed(3)} s`} later (${view.closedWith || 'closed'})`,
      );
      say(
        `    reconnected to ${firstAfter.address}: first reply ${firstAfter.value}, ${seconds(view.longestGapMs)} after the last one (the outage it saw, retrying every 10 ms)`,
      );
    }
    const noLoss = view.noLostWrites && missing.length === 0;
    say(
      `    ${view.acknowledged} writes acknowledged, ${OUTSIDE_WRITER_KEY} holds ${length} on ${gcp.agentId}: ${noLoss ? 'every acknowledged write is there' : `ACKNOWLEDGED WRITES MISSING (${missing.length})`}`,
    );
    const intact = after.keys === before.keys && after.digest === before.digest;
    say(`  dataset: DBSIZE ${after.keys}, digest ${after.digest.slice(0, 16)}...: ${intact ? 'intact' : 'DIFFERS'}`);
    const left = (await source.podman(['ps', '-a', '--format', '{{.Names}}'])).stdout.trim();
    say(`  containers left on ${azure.agentId}: ${left || 'none'}`);

    const frontmanOk = await throughTheFrontman(stack, source, azure.agentId, gcp.agentId);

    say(
      `\nthe floor, on ${gcp.agentId} alone: bare podman checkpoint --export + restore --import (--tcp-established) of the same container`,
    );
    const archive = join(stack.info.dir, 'bare-checkpoint.tar');
    const pair = await bareCheckpointRestore(destination, container, archive, { tcpEstablished: true });
    await rm(archive, { force: true });
    say(
      `  checkpoint ${seconds(pair.checkpointMs)}, restore ${seconds(pair.restoreMs)}, together ${seconds(pair.checkpointMs + pair.restoreMs)} (archive ${(pair.archiveBytes / 2 ** 20).toFixed(0)} MiB)`,
    );
    return sameInner && noLoss && intact && frontmanOk && firstAfter?.address === gcp.wanAddress ? 0 : 1;
  } finally {
    say('\nstopping the stack...');
    await stack.stop();
  }
}

/**
 * The second act: Debian's webdis (HTTP over its own redis) behind the frontman, which clients reach at its
 * own address on the WAN; loadtest sends POSTs on a fixed schedule through it while `ums migrate` moves the
 * service, and the server's own list says how often each POST was applied.
 */
async function throughTheFrontman(stack: LocalStack, source: PodmanHost, from: string, to: string): Promise<boolean> {
  const frontman = stack.info.frontman;
  if (frontman === undefined) throw new Error('the stack has no frontman');
  const base = `http://${frontman.address}:${FRONT_PORT}/`;
  await source.podman(['run', '-d', '--name', FRONTED, '-p', `${WEBDIS_PORT}:${WEBDIS_PORT}`, DEFAULT_WEBDIS_IMAGE]);
  const users = await stack.wan.addClient('users');
  // The frontman finds the service's host in the agents' registrations (a heartbeat, about 2 s).
  await waitForWebdis(users, base, 30_000);
  say(
    `\nstarted "${FRONTED}" (${DEFAULT_WEBDIS_IMAGE}, Debian's webdis) on ${from}; its clients use the frontman at ${base} (an edge, none of the hosts)`,
  );
  const rps = 100;
  // Clients that wait 15 s, as most HTTP clients wait longer still: the benchmark measures against 5 s.
  say(`  loadtest from ${users.address}: ${rps} POSTs/s on a fixed schedule (it does not wait for replies), 15 s timeout, no retries`);
  const load = startOpenLoopLoad(users, { url: base, rps, durationMs: 30_000, timeoutMs: 15_000, list: 'posts', runId: 'demo' });
  await load.started;
  await sleep(3_000);
  say(`\n$ ums migrate ${FRONTED} --to ${to}`);
  const exitCode = await ums(stack.info, ['migrate', FRONTED, '--to', to]);
  const run = await load.done;
  const report = exactlyOnce(run, await readAppliedPosts(users, base, 'posts'));
  const { summary } = run;
  say(`\nwhat the HTTP clients saw, through the frontman:`);
  say(
    `  ${summary.sent} of ${summary.scheduled} requests sent on schedule, ${summary.failed} failed, ${summary.non2xx} not 2xx; latency from the scheduled send: p50 ${summary.latencyMs.p50.toFixed(0)} ms, p99 ${summary.latencyMs.p99.toFixed(0)} ms, max ${summary.latencyMs.max.toFixed(0)} ms (the requests held while the service was frozen)`,
  );
  say(
    `  POSTs applied exactly once: ${report.appliedOnce} of ${report.acknowledged} acknowledged; applied twice: ${report.duplicates.length}; acknowledged but missing: ${report.missing.length}`,
  );
  const moved = (await listMigrations(stack.info)).find((m) => m.container === FRONTED);
  if (moved?.frontman) say(`  frontman ${formatFrontman(moved.frontman)}`);
  return exitCode === 0 && summary.failed === 0 && summary.non2xx === 0 && report.ok;
}

runDemo(main);
