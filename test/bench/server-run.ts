import { rm } from 'node:fs/promises';
import { DEFAULT_REDIS_IMAGE, INNER_CLIENT_ENV, REDIS_PORT } from '../../infra/images/build-server-images.js';
import type { PodmanHost } from '../../infra/podman-host.js';
import { containerPid } from '../../infra/real-servers/command.js';
import {
  datasetDigest,
  innerRedisClient,
  populateTo,
  usedMemoryBytes,
  waitForInnerCount,
  type DatasetDigest,
  type InnerClient,
} from '../../infra/real-servers/redis-client.js';
import { OutsideRedisWriter, writerView, type WriterView } from '../../infra/real-servers/redis-writer.js';
import type { WanEndpoint } from '../../infra/wan.js';
import { bareCheckpointRestore } from '../../infra/bare-checkpoint.js';
import { migrateWithCli, waitUntilListed, type MigrationContext, type MigrationRoute } from './migration-run.js';
import type { BenchServer, ServerCheck, ServerFloorSample, ServerMigrationSample } from './samples.js';

/**
 * A real server moved with its clients: Debian's redis-server (localhost/ums/redis:1) with its in-container
 * client (one connection, INCR inner:count every 0.1 s), filled to a memory size, its port published on its
 * host, and a writer on the stack's WAN (redis-cli RPUSH every 10 ms, infra/real-servers/redis-writer.ts). The same preparation and the same
 * checks serve the floor (bare Podman pair on one host) and the migration through the stack.
 */

/** Where the WAN writer reaches a host: its WAN address, and the container's port published there. */
export interface ServerHost {
  host: PodmanHost;
  wanAddress: string;
}

interface Prepared {
  pid: number;
  usedMemoryMiB: number;
  populatedKeys: number;
  before: DatasetDigest;
  inner: InnerClient;
  writer: OutsideRedisWriter;
}

const REPLIES_BEFORE = 50;
const REPLIES_AFTER = 50;

/** Starts the server on `at`, fills it, digests it and starts the WAN writer (towards `at`, then `then`). */
async function prepareServer(at: ServerHost, then: ServerHost, client: WanEndpoint, name: string, sizeMiB: number): Promise<Prepared> {
  await at.host.podman([
    'run',
    '-d',
    '--name',
    name,
    '-p',
    `${REDIS_PORT}:${REDIS_PORT}`,
    '-e',
    `${INNER_CLIENT_ENV}=1`,
    DEFAULT_REDIS_IMAGE,
  ]);
  const pid = await containerPid(at.host, name);
  await waitForInnerCount(pid, 5);
  const populatedKeys = await populateTo(pid, sizeMiB);
  const usedMemoryMiB = (await usedMemoryBytes(pid)) / 2 ** 20;
  // The writer first: its key is then in DBSIZE before and after.
  const writer = new OutsideRedisWriter(client, { address: at.wanAddress, reconnectTo: then.wanAddress });
  try {
    await writer.waitForReplies(5, at.wanAddress, 30_000);
    const before = await datasetDigest(pid);
    const inner = await waitForInnerCount(pid, 0);
    await writer.waitForReplies(REPLIES_BEFORE, at.wanAddress, 30_000);
    return { pid, usedMemoryMiB, populatedKeys, before, inner, writer };
  } catch (error) {
    await writer.stop();
    throw error;
  }
}

/** After the move: the writer's view, the inner client's connection and the dataset, read on `now`. */
async function checkServer(prepared: Prepared, now: ServerHost, name: string, sizeMiB: number, rep: number): Promise<ServerCheck> {
  const { writer, inner } = prepared;
  let pidAfter: number;
  let innerAfter: InnerClient | undefined;
  try {
    pidAfter = await containerPid(now.host, name);
    const pid = pidAfter;
    innerAfter = await waitForInnerCount(pid, inner.count + 5, 30_000).catch(() => innerRedisClient(pid).catch(() => undefined));
    await writer
      .waitForReplies(REPLIES_AFTER + writer.replies.filter((r) => r.address === now.wanAddress).length, now.wanAddress, 60_000)
      .catch(() => undefined);
  } finally {
    await writer.stop();
  }
  const after = await datasetDigest(pidAfter).catch(() => undefined);
  // A writer that never got a reply after the move lost the service, whatever its replies say.
  return serverCheck(prepared, sizeMiB, rep, {
    view: writerView(writer),
    reachedNew: writer.replies.at(-1)?.address === now.wanAddress,
    innerAfter,
    after,
  });
}

/** What was seen after a move, if it ended: the WAN writer, the inner client and the dataset. */
interface SeenAfter {
  view: WriterView;
  /** the writer's last reply came from the service's new address */
  reachedNew: boolean;
  innerAfter: InnerClient | undefined;
  after: DatasetDigest | undefined;
}

/** The checks of one move; `seen` undefined for a move that failed (nothing to check after it). */
function serverCheck(prepared: Prepared, sizeMiB: number, rep: number, seen: SeenAfter | undefined): ServerCheck {
  const { inner, before } = prepared;
  const innerAfter = seen?.innerAfter;
  const after = seen?.after;
  return {
    server: 'redis',
    sizeMiB,
    rep,
    usedMemoryMiB: prepared.usedMemoryMiB,
    populatedKeys: prepared.populatedKeys,
    clientGapMs: seen?.view.longestGapMs ?? 0,
    clientClosedAfterMs: seen?.view.closedAfterMs,
    clientClosedWith: seen?.view.closedWith,
    noLostWrites: seen !== undefined && seen.view.noLostWrites && seen.reachedNew,
    innerSameConnection:
      innerAfter !== undefined && innerAfter.id === inner.id && innerAfter.addr === inner.addr && innerAfter.count > inner.count,
    innerCountBefore: inner.count,
    innerCountAfter: innerAfter?.count ?? 0,
    intact: after !== undefined && after.keys === before.keys && after.digest === before.digest,
    keysBefore: before.keys,
    keysAfter: after?.keys,
    digestBefore: before.digest,
    digestAfter: after?.digest,
  };
}

/**
 * The floor for a real server: the same container, filled and with the same clients, checkpointed and
 * restored with bare Podman on one host (`--tcp-established`, as the agent does; the WAN writer keeps
 * to the host's address). The archive is removed.
 */
export async function measureServerFloor(
  at: ServerHost,
  client: WanEndpoint,
  sizeMiB: number,
  rep: number,
  archive: string,
): Promise<ServerFloorSample> {
  const name = `floor-redis-${sizeMiB}-${rep}`;
  await at.host.podman(['rm', '-f', name]).catch(() => undefined);
  try {
    const prepared = await prepareServer(at, at, client, name, sizeMiB);
    let pair;
    try {
      pair = await bareCheckpointRestore(at.host, name, archive, { tcpEstablished: true });
    } catch (error) {
      await prepared.writer.stop();
      throw error;
    }
    const check = await checkServer(prepared, at, name, sizeMiB, rep);
    return { ...check, host: at.host.name, ...pair };
  } finally {
    await rm(archive, { force: true });
    await at.host.podman(['rm', '-f', name]).catch(() => undefined);
  }
}

/** One migration of the filled server with its clients through the stack, with the real CLI. Never throws for a failed migration. */
export async function runServerMigration(
  context: MigrationContext,
  route: MigrationRoute,
  from: ServerHost,
  to: ServerHost,
  client: WanEndpoint,
  sizeMiB: number,
  rep: number,
): Promise<ServerMigrationSample> {
  const server: BenchServer = 'redis';
  const name = `mig-${server}-${sizeMiB}-${rep}`;
  const cleanUp = async () => {
    for (const host of [route.destination, route.source]) await host.podman(['rm', '-f', '-t', '0', name]).catch(() => undefined);
  };
  await cleanUp();
  try {
    const prepared = await prepareServer(from, to, client, name, sizeMiB);
    let migration;
    try {
      await waitUntilListed(context, route.source.name, name);
      migration = await migrateWithCli(context, name, route.destination.name);
    } catch (error) {
      await prepared.writer.stop();
      throw error;
    }
    const { approach: _approach, ...measured } = migration;
    const base = { ...measured, store: route.store, source: route.source.name, destination: route.destination.name };
    if (!migration.ok) {
      await prepared.writer.stop();
      return { ...base, ...serverCheck(prepared, sizeMiB, rep, undefined), downtimeMs: 0, continuous: false };
    }
    const check = await checkServer(prepared, to, name, sizeMiB, rep);
    return { ...base, ...check, downtimeMs: check.clientGapMs, continuous: check.innerSameConnection && check.noLostWrites };
  } finally {
    await cleanUp();
  }
}
