/**
 * Hosts that run different engines (issue 16): a Podman host on "azure", Docker hosts on "gcp" and "aws",
 * each with its own dockerd (infra/docker-host.ts). Docker to Docker at container level with a real server
 * and both kinds of client (Debian's redis-server, an in-container redis-cli that keeps its connection, an
 * outside writer that is reset and loses no acknowledged write), a named volume and a rootfs change; Podman to Docker and Docker to Podman at
 * service level, the count continuing across both moves and the image shipped each way (neither destination
 * holds it: one engine saves it, the other loads it, same id and name); container level between engines
 * refused before anything is frozen, with the reason. One stack for the file.
 */
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { continuity, followTicks, joinTicks, readTicks, type LogSource, type Tick } from '../../infra/images/counter-output.js';
import { DEFAULT_LAUNCHED_COUNTER_IMAGE } from '../../infra/images/build-service-image.js';
import { DEFAULT_REDIS_IMAGE, INNER_CLIENT_ENV, INNER_COUNT_KEY, REDIS_PORT } from '../../infra/images/build-server-images.js';
import type { DockerHost } from '../../infra/docker-host.js';
import { AWS_HOST, DEFAULT_HOSTS, startLocalStack, type LocalStack } from '../../infra/local-stack.js';
import type { PodmanHost } from '../../infra/podman-host.js';
import { waitFor } from '../../infra/real-servers/command.js';
import { datasetDigest, innerRedisClient, OUTSIDE_WRITER_KEY, redis } from '../../infra/real-servers/redis-client.js';
import { missingWrites, OutsideRedisWriter } from '../../infra/real-servers/redis-writer.js';
import type { WanEndpoint } from '../../infra/wan.js';
import { launcherControlDir, LAUNCHER_CAPABILITIES, LAUNCHER_CONTROL_DIR, LAUNCHER_SECCOMP } from '../../launcher/convention.js';
import { umsJson } from './ums-cli.js';

const AZURE = DEFAULT_HOSTS[0]!.agentId;
const GCP = DEFAULT_HOSTS[1]!.agentId;
const AWS = AWS_HOST.agentId;
const REDIS_KEYS = 20_000;
const VOLUME = 'redis-data';

let stack: LocalStack;
let azure: PodmanHost;
let gcp: DockerHost;
let aws: DockerHost;
let outside: WanEndpoint;

interface MigrateResult {
  state: string;
  approach?: string;
  code?: string;
  reason?: string;
  migrationId?: string;
  timeline?: { frozenMs: number; totalMs: number; phases: Array<{ name: string; ms: number }> };
}

const ums = <T>(args: string[]) => umsJson<T>(stack.info, args);

const phases = (result: MigrateResult) => (result.timeline?.phases ?? []).map((p) => `${p.name} ${p.ms} ms`).join(', ');

function wanAddress(agentId: string): string {
  const address = stack.info.hosts.find((h) => h.agentId === agentId)?.wanAddress;
  assert.ok(address, `no WAN address for ${agentId}`);
  return address;
}

function launcherDir(agentId: string): string {
  const dir = stack.info.hosts.find((h) => h.agentId === agentId)?.launcherDir;
  assert.ok(dir, `no launcher dir for ${agentId}`);
  return dir;
}

async function dockerState(host: DockerHost, name: string): Promise<{ running: boolean; pid: number } | undefined> {
  const { stdout } = await host.docker(['ps', '-a', '--filter', `name=^${name}$`, '--format', '{{.ID}}']);
  if (stdout.trim() === '') return undefined;
  const [state] = JSON.parse((await host.docker(['inspect', name])).stdout) as Array<{ State: { Running: boolean; Pid: number } }>;
  return state === undefined ? undefined : { running: state.State.Running, pid: state.State.Pid };
}

async function dockerPid(host: DockerHost, name: string): Promise<number> {
  const state = await dockerState(host, name);
  assert.ok(state?.running === true && state.pid > 0, `${name} runs on ${host.name}: ${JSON.stringify(state)}`);
  return state.pid;
}

/** Waits until the source's registration has probed the container (its launcher, its connections). */
async function probed(agentId: string, name: string, ready: (traits: Record<string, unknown>) => boolean): Promise<void> {
  await waitFor(async () => {
    const agents = (
      await ums<Array<{ agentId: string; containers: Array<{ name: string; traits?: Record<string, unknown> }> }>>(['agents'])
    ).json;
    const traits = agents.find((a) => a.agentId === agentId)?.containers.find((c) => c.name === name)?.traits;
    return traits !== undefined && ready(traits);
  }, `${name} probed on ${agentId}`);
}

/** Migrates while following the source's log until the source container stops; returns the ticks seen there. */
async function migrateFollowing(
  name: string,
  from: LogSource,
  to: string,
  approach: string,
): Promise<{ result: MigrateResult; ticks: Tick[] }> {
  const follower = followTicks(from, name);
  await sleep(1_000);
  const { code, json: result } = await ums<MigrateResult>(['migrate', name, '--to', to]);
  assert.equal(code, 0, `migration failed: ${result.reason}`);
  assert.equal(result.approach, approach);
  await Promise.race([follower.ended, sleep(5_000)]);
  follower.stop();
  return { result, ticks: follower.ticks };
}

/** The record says the destination lacked the image and it was shipped; the destination now has it, same id, same name. */
async function assertShipped(result: MigrateResult, destinationImageId: () => Promise<string>, expectedId: string): Promise<void> {
  const record = (
    await ums<{ imageShipping?: { needed?: boolean; artifact?: { totalBytes?: number } } }>([
      'status',
      result.migrationId ?? assert.fail('no migration id'),
    ])
  ).json;
  assert.equal(record.imageShipping?.needed, true, `the image was shipped: ${JSON.stringify(record.imageShipping)}`);
  assert.equal((await destinationImageId()).trim().replace(/^sha256:/, ''), expectedId, 'the destination has the very image, by its name');
}

describe('hosts with different engines: Docker beside Podman', { timeout: 600_000 }, () => {
  before(async () => {
    stack = await startLocalStack({
      name: `engines-${process.pid}`,
      dir: `/tmp/ums-eng-${process.pid}`,
      hosts: [DEFAULT_HOSTS[0]!, { ...DEFAULT_HOSTS[1]!, engine: 'docker' }, { ...AWS_HOST, engine: 'docker' }],
      serverImages: ['redis'],
      agentEnv: { UMS_CHUNK_MIB: '4' },
    });
    azure = stack.hosts.get(AZURE) as PodmanHost;
    gcp = stack.dockerHosts.get(GCP) as DockerHost;
    aws = stack.dockerHosts.get(AWS) as DockerHost;
    outside = await stack.wan.addClient('outside');
    await waitFor(async () => (await ums<Array<{ agentId: string }>>(['agents'])).json.length === 3, 'three agents registered');
  });

  after(async () => {
    await stack?.stop();
  });

  it('reports each engine: Docker hosts at container level with their CRIU, stop-and-copy only', async () => {
    const agents = (
      await ums<
        Array<{
          agentId: string;
          engine: { engine: string };
          capabilities: { containerLevel: { available: boolean; engineKind?: string }; postCopy?: { available: boolean; reason?: string } };
        }>
      >(['agents'])
    ).json;
    const byId = new Map(agents.map((a) => [a.agentId, a]));
    assert.equal(byId.get(AZURE)?.engine.engine, 'podman');
    for (const id of [GCP, AWS]) {
      const agent = byId.get(id);
      assert.equal(agent?.engine.engine, 'docker', id);
      assert.equal(agent?.capabilities.containerLevel.available, true, id);
      assert.equal(agent?.capabilities.containerLevel.engineKind, 'docker', id);
    }
  });

  it('Docker to Docker at container level: redis keeps its dataset and its inner connection; the outside writer is reset, reconnects and loses no acknowledged write; its named volume and rootfs changes move with it', async () => {
    const name = 'redis';
    await gcp.docker([
      'run',
      '-d',
      '--name',
      name,
      '-p',
      `${REDIS_PORT}:${REDIS_PORT}`,
      '-e',
      `${INNER_CLIENT_ENV}=1`,
      '-v',
      `${VOLUME}:/data`,
      DEFAULT_REDIS_IMAGE,
    ]);
    // A file in the named volume (it moves outside the freeze: Docker's checkpoint carries no volume) and one
    // in the container's own filesystem (its writable layer, in the archive).
    await gcp.docker(['exec', name, 'sh', '-c', 'seq 1 20000 > /data/numbers && echo from-gcp > /etc/written-here']);
    const pidA = await dockerPid(gcp, name);
    await waitFor(async () => Number(await redis(pidA, 'GET', INNER_COUNT_KEY)) >= 10, 'the inner client counting on the source');
    assert.equal(await redis(pidA, 'DEBUG', 'POPULATE', String(REDIS_KEYS), 'ums', '128'), 'OK');
    await redis(pidA, 'HSET', 'ums:hash', 'field', 'value');
    const digestBefore = (await datasetDigest(pidA)).digest;
    const writer = new OutsideRedisWriter(outside, { address: wanAddress(GCP) });
    await writer.waitForReplies(20);
    await probed(GCP, name, (t) => (t.network as { insideConnections?: number } | undefined)?.insideConnections === 1);

    const innerBefore = await innerRedisClient(pidA);
    const countBefore = Number(await redis(pidA, 'GET', INNER_COUNT_KEY));
    const { code, json: result } = await ums<MigrateResult>(['migrate', name, '--to', AWS]);
    assert.equal(code, 0, `migration failed: ${result.reason}`);
    assert.equal(result.approach, 'container');

    const end = await Promise.race([writer.ended, sleep(30_000).then(() => undefined)]);
    assert.ok(end !== undefined, `the outside client's connection did not end (errors ${writer.errors.join(' | ')})`);
    const pidB = await dockerPid(aws, name);
    assert.equal((await datasetDigest(pidB)).digest, digestBefore, 'every key and value is the same');
    await waitFor(
      async () => Number(await redis(pidB, 'GET', INNER_COUNT_KEY)) > countBefore + 5,
      'the inner client counting on the destination',
    );
    const innerAfter = await innerRedisClient(pidB);
    assert.equal(innerAfter.id, innerBefore.id, 'the inner client is the same connection (same client id)');
    assert.equal(innerAfter.addr, innerBefore.addr, 'from the same source port');
    const { stdout: log } = await outside.exec('redis-cli', [
      '-h',
      wanAddress(AWS),
      '-p',
      String(REDIS_PORT),
      'LRANGE',
      OUTSIDE_WRITER_KEY,
      '0',
      '-1',
    ]);
    assert.deepEqual(missingWrites(writer, log.trim()), [], 'acknowledged writes missing on the destination');
    assert.equal(await dockerState(gcp, name), undefined, 'the source no longer has the container');
    const moved = (await aws.docker(['exec', name, 'sh', '-c', 'wc -l < /data/numbers; cat /etc/written-here'])).stdout.trim().split('\n');
    assert.deepEqual(moved, ['20000', 'from-gcp'], 'the volume and the rootfs change are there');
    const volumes = (await gcp.docker(['volume', 'ls', '--format', '{{.Name}}'])).stdout;
    assert.ok(!volumes.split('\n').includes(VOLUME), 'the source no longer has the volume');
    console.log(
      `docker to docker: frozen ${result.timeline?.frozenMs} ms, total ${result.timeline?.totalMs} ms (${phases(result)}), ${writer.replies.length} acknowledged writes kept`,
    );
    await aws.docker(['rm', '-f', '-v', name]);
    await aws.docker(['volume', 'rm', VOLUME]);
  });

  it('Podman to Docker and back at service level, the image shipped each way: the count continues across both moves; container level between engines is refused before any freeze', async () => {
    const name = 'svc';
    const control = launcherControlDir(name, launcherDir(AZURE));
    await mkdir(control, { recursive: true, mode: 0o700 });
    await azure.podman([
      'run',
      '-d',
      '--name',
      name,
      ...LAUNCHER_CAPABILITIES.flatMap((cap) => ['--cap-add', cap]),
      '--security-opt',
      `seccomp=${LAUNCHER_SECCOMP}`,
      '-v',
      `${control}:${LAUNCHER_CONTROL_DIR}`,
      '-e',
      'COUNTER_TICK_MS=100',
      DEFAULT_LAUNCHED_COUNTER_IMAGE,
    ]);
    await probed(AZURE, name, (t) => (t.launcher as { available?: boolean } | undefined)?.available === true);

    const refused = await ums<{ ok: boolean; code?: string; reason?: string }>(['plan', name, '--to', GCP, '--approach', 'container']);
    assert.equal(refused.json.code, 'approach-infeasible');
    assert.match(
      refused.json.reason ?? '',
      /the source runs podman and the destination docker: a container-level checkpoint restores only into the engine kind that made it/,
    );
    const auto = await ums<{ approach?: string }>(['plan', name, '--to', GCP]);
    assert.equal(auto.json.approach, 'service');

    // Neither destination holds the image when asked: each move ships it, saved by one engine, loaded by the other.
    const imageId = (await azure.podman(['image', 'inspect', '--format', '{{.Id}}', DEFAULT_LAUNCHED_COUNTER_IMAGE])).stdout.trim();
    await gcp.docker(['rmi', DEFAULT_LAUNCHED_COUNTER_IMAGE]);
    const there = await migrateFollowing(name, azure.url, GCP, 'service');
    await assertShipped(
      there.result,
      async () => (await gcp.docker(['image', 'inspect', '--format', '{{.Id}}', DEFAULT_LAUNCHED_COUNTER_IMAGE])).stdout,
      imageId,
    );
    await sleep(1_500);
    await azure.podman(['rmi', DEFAULT_LAUNCHED_COUNTER_IMAGE]);
    const back = await migrateFollowing(name, { docker: gcp.url }, AZURE, 'service');
    await assertShipped(
      back.result,
      async () => (await azure.podman(['image', 'inspect', '--format', '{{.Id}}', DEFAULT_LAUNCHED_COUNTER_IMAGE])).stdout,
      imageId,
    );
    await sleep(1_500);
    const ticks = joinTicks(joinTicks(there.ticks, back.ticks), await readTicks(azure.url, name));
    const flow = continuity(ticks);
    assert.ok(flow.continuous, `the count broke: ${JSON.stringify(flow.break)}`);
    assert.ok(back.ticks.length > 3, 'it counted on the Docker host');
    console.log(
      `podman -> docker: frozen ${there.result.timeline?.frozenMs} ms (${phases(there.result)}); docker -> podman: frozen ${back.result.timeline?.frozenMs} ms; counter gap ${flow.maxGapMs} ms`,
    );
    assert.equal(await dockerState(gcp, name), undefined, 'nothing left on the Docker host');
    await azure.podman(['rm', '-f', '-t', '0', name]);
  });
});
