/**
 * Migrations that start themselves, through the whole stack: `ums drain` empties a host of ten counters, a
 * policy label that names no open region keeps one in place, a withdrawn Azure notice stops an evacuation
 * cleanly, and an Azure spot eviction 30 s ahead empties the host before the test destroys it at the deadline: Debian's
 * redis-server among the services, its dataset and its own client's connection carried across.
 *
 * No cloud is reachable from here: the notices come from the stand-ins for each cloud's instance metadata
 * service (infra/metadata-servers/), which serve the documented formats; the agents poll them as they poll the
 * real ones. The link is capped on the evicted host (the agent's --max-upload-rate) so that the services need
 * a known share of the window, which the agent measures at start as it would on a cloud VM.
 */
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { HostSpec } from '../../cli/stack-info.js';
import { isUnderWay, type EvacuationRecord } from '../../core/evacuation.js';
import { POLICY_LABELS } from '../../core/service-policy.js';
import { connectNatsBus, type NatsEventBus } from '../../core/nats-event-bus.js';
import { continuity, readTicks, type Tick } from '../../infra/images/counter-output.js';
import { AWS_HOST, DEFAULT_HOSTS, startLocalStack, type LocalStack } from '../../infra/local-stack.js';
import type { AzureMetadataServer } from '../../infra/metadata-servers/azure-metadata-server.js';
import type { PodmanHost } from '../../infra/podman-host.js';
import { containerPid, waitFor } from '../../infra/real-servers/command.js';
import { datasetDigest, innerRedisClient, populateTo, waitForInnerCount } from '../../infra/real-servers/redis-client.js';
import { DEFAULT_REDIS_IMAGE, INNER_CLIENT_ENV } from '../../infra/images/build-server-images.js';
import { umsJson } from './ums-cli.js';

const AZURE = DEFAULT_HOSTS[0] as HostSpec;
const GCP = DEFAULT_HOSTS[1] as HostSpec;
const AWS = AWS_HOST;
/** The evicted host's uplink, as the test sets it: the services below are sized against it. */
const AZURE_UPLINK_MIB_S = 4;
const MiB = 1024 * 1024;
const REDIS = 'spot-redis';

let stack: LocalStack;
let bus: NatsEventBus;
let hosts: Map<string, PodmanHost>;

/** Starts the counter image holding `memoryMiB` of random memory, with these labels. */
async function runService(host: PodmanHost, name: string, memoryMiB: number, labels: Record<string, string> = {}): Promise<void> {
  await host.podman([
    'run',
    '-d',
    '--name',
    name,
    ...Object.entries(labels).flatMap(([key, value]) => ['--label', `${key}=${value}`]),
    '-e',
    'COUNTER_TICK_MS=100',
    '-e',
    `COUNTER_MEM_MIB=${memoryMiB}`,
    stack.info.image,
  ]);
}

/** The agents whose hosts run `name` now (a destroyed host runs nothing). */
async function runningOn(name: string, skip: readonly string[] = []): Promise<string[]> {
  const where: string[] = [];
  for (const [agentId, host] of hosts) {
    if (skip.includes(agentId)) continue;
    const { stdout } = await host.podman(['ps', '--filter', `name=^${name}$`, '--format', '{{.Names}}']);
    if (stdout.trim() === name) where.push(agentId);
  }
  return where;
}

async function listedRunning(agentId: string, names: readonly string[]): Promise<void> {
  await waitFor(
    async () => {
      const containers = (await bus.agents.get(agentId))?.value.containers ?? [];
      return names.every((name) => containers.some((c) => c.name === name && c.state === 'running' && c.policy !== undefined));
    },
    `${names.join(', ')} listed by ${agentId}`,
  );
}

async function lastTick(host: PodmanHost, name: string): Promise<Tick> {
  const ticks = await readTicks(host.url, name);
  const last = ticks.at(-1);
  assert.ok(last, `${name} printed no tick`);
  return last;
}

/** The service runs exactly once, outside `notOn`, and counts on from `before` without a reset: its memory moved. */
async function assertMovedWithState(name: string, before: Tick, notOn: readonly string[], skip: readonly string[] = []): Promise<string> {
  const where = await runningOn(name, skip);
  assert.equal(where.length, 1, `${name} runs exactly once (on ${where.join(', ') || 'nothing'})`);
  const at = where[0] as string;
  assert.ok(!notOn.includes(at), `${name} left ${notOn.join(', ')} (it runs on ${at})`);
  const ticks = await readTicks((hosts.get(at) as PodmanHost).url, name);
  const after = ticks.filter((tick) => tick.t > before.t);
  assert.ok(after.length > 0, `${name} ticks at ${at}`);
  const check = continuity(ticks);
  assert.ok(check.continuous, `${name} counts on without a reset: ${JSON.stringify(check.break)}`);
  assert.ok((ticks.at(-1) as Tick).count > before.count, `${name} counts on from ${before.count}`);
  return at;
}

async function evacuation(agentId: string): Promise<EvacuationRecord | undefined> {
  return (await bus.evacuations.get(agentId))?.value;
}

async function removeEverywhere(names: readonly string[], skip: readonly string[] = []): Promise<void> {
  for (const [agentId, host] of hosts) {
    if (skip.includes(agentId)) continue;
    await host.podman(['rm', '--force', '--time', '0', ...names]).catch(() => undefined);
  }
}

describe('evacuation: drains, and evictions announced by the clouds', { timeout: 900_000 }, () => {
  before(async () => {
    stack = await startLocalStack({
      name: `evac-${process.pid}`,
      dir: join(tmpdir(), `ums-evac-${process.pid}`),
      hosts: [AZURE, GCP, AWS],
      notices: true,
      hostAgentEnv: { [AZURE.agentId]: { UMS_MAX_UPLOAD_RATE: String(AZURE_UPLINK_MIB_S) } },
      functionEnv: { UMS_EVACUATION_CONCURRENCY: '3' },
      serverImages: ['redis'],
    });
    hosts = stack.hosts;
    bus = await connectNatsBus({ ...stack.admin, name: 'evacuation-e2e' });
  });

  after(async () => {
    await bus?.close();
    await stack?.stop();
  });

  it('ums drain moves ten containers off a host, obeys their policies, reports the one none allows, and closes the host', async () => {
    const gcp = hosts.get(GCP.agentId) as PodmanHost;
    const free = Array.from({ length: 7 }, (_, i) => `drain-${i}`);
    const awsOnly = ['drain-aws-0', 'drain-aws-1'];
    const nowhere = 'drain-eu';
    const all = [...free, ...awsOnly, nowhere];
    for (const name of free) await runService(gcp, name, 2);
    for (const name of awsOnly) await runService(gcp, name, 2, { [POLICY_LABELS.allowedClouds]: 'aws' });
    // Data that must stay in the EU: no open host is there, so it may not move at all.
    await runService(gcp, nowhere, 2, { [POLICY_LABELS.allowedRegions]: 'europe-*,westeurope' });
    await listedRunning(GCP.agentId, all);
    const before = new Map(await Promise.all(all.map(async (name) => [name, await lastTick(gcp, name)] as const)));

    const drained = await umsJson<EvacuationRecord>(stack.info, ['drain', GCP.agentId, '--concurrency', '3', '--timeout', '300']);
    assert.equal(drained.code, 1, 'one service was left, so the drain says it did not empty the host');
    const record = drained.json;
    assert.equal(record.state, 'emptied');
    assert.equal(record.concurrency, 3);
    const moved = record.items.filter((item) => item.state === 'moved').map((item) => item.container);
    assert.deepEqual(moved.sort(), [...free, ...awsOnly].sort(), JSON.stringify(record.items, null, 2));
    const left = record.items.find((item) => item.container === nowhere);
    assert.equal(left?.state, 'left');
    assert.match(left?.reason ?? '', /regions europe-\*, westeurope/, 'the reason names the policy');

    const placed = new Map<string, string>();
    for (const name of [...free, ...awsOnly]) placed.set(name, await assertMovedWithState(name, before.get(name) as Tick, [GCP.agentId]));
    for (const name of awsOnly) assert.equal(placed.get(name), AWS.agentId, `${name} may run only in aws`);
    assert.ok(new Set(placed.values()).size === 2, 'the planner spread them over both open hosts');
    // What could not move was left running where it was, counting on.
    assert.deepEqual(await runningOn(nowhere), [GCP.agentId]);
    const stayed = await readTicks(gcp.url, nowhere);
    assert.ok(continuity(stayed).continuous && (stayed.at(-1) as Tick).count > (before.get(nowhere) as Tick).count);

    // The drained host takes nothing new until the drain is cancelled.
    const refused = await umsJson<{ ok: boolean; reason?: string }>(stack.info, ['plan', 'drain-0', '--to', GCP.agentId]);
    assert.equal(refused.json.ok, false);
    assert.match(refused.json.reason ?? '', /takes no new service: it is drained/);
    const reopened = await umsJson<EvacuationRecord>(stack.info, ['drain', GCP.agentId, '--cancel']);
    assert.equal(reopened.json.state, 'cancelled');
    const accepted = await umsJson<{ ok: boolean; reason?: string }>(stack.info, ['plan', 'drain-0', '--to', GCP.agentId]);
    assert.equal(accepted.json.ok, true, accepted.json.reason);

    await removeEverywhere(all);
  });

  it('a notice withdrawn before its deadline stops the evacuation: what moves ends, the rest stays, the host opens again', async () => {
    const azure = hosts.get(AZURE.agentId) as PodmanHost;
    const metadata = stack.metadata.get(AZURE.agentId) as AzureMetadataServer;
    const names = ['withdrawn-0', 'withdrawn-1', 'withdrawn-2', 'withdrawn-3'];
    for (const name of names) await runService(azure, name, 6);
    await listedRunning(AZURE.agentId, names);
    const before = new Map(await Promise.all(names.map(async (name) => [name, await lastTick(azure, name)] as const)));

    // A reboot in ten minutes: everything fits, three at a time.
    const eventId = metadata.schedule({ EventType: 'Reboot', NotBefore: new Date(Date.now() + 600_000).toUTCString() });
    await waitFor(
      async () => (await evacuation(AZURE.agentId))?.items.some((item) => item.state === 'moving') === true,
      'the evacuation under way',
    );
    assert.ok(metadata.withdraw(eventId));
    await waitFor(async () => (await evacuation(AZURE.agentId))?.state === 'cancelled', 'the evacuation cancelled', 20_000);
    await waitFor(
      async () => (await evacuation(AZURE.agentId))?.items.some(isUnderWay) === false,
      'the migrations under way ended',
      120_000,
    );
    const record = (await evacuation(AZURE.agentId)) as EvacuationRecord;
    assert.match(record.cancelReason ?? '', new RegExp(`notice ${eventId} was withdrawn`));
    const moved = record.items.filter((item) => item.state === 'moved');
    const notStarted = record.items.filter((item) => item.state === 'not-started');
    assert.ok(moved.length >= 1 && notStarted.length >= 1, JSON.stringify(record.items, null, 2));
    assert.equal(moved.length + notStarted.length, names.length, 'none failed');
    for (const item of moved) await assertMovedWithState(item.container, before.get(item.container) as Tick, [AZURE.agentId]);
    for (const item of notStarted) {
      assert.deepEqual(await runningOn(item.container), [AZURE.agentId], `${item.container} stayed`);
      const ticks = await readTicks(azure.url, item.container);
      assert.ok(continuity(ticks).continuous, `${item.container} was never frozen nor reset`);
    }
    const accepted = await umsJson<{ ok: boolean; reason?: string }>(stack.info, [
      'plan',
      moved[0]?.container ?? '',
      '--to',
      AZURE.agentId,
    ]);
    assert.equal(accepted.json.ok, true, `the host is open again: ${accepted.json.reason}`);
    await removeEverywhere(names);
  });

  it('an Azure spot eviction 30 s ahead empties the host by priority before the deadline; the one that cannot fit is left intact until then', async (t) => {
    const azure = hosts.get(AZURE.agentId) as PodmanHost;
    const metadata = stack.metadata.get(AZURE.agentId) as AzureMetadataServer;
    // The agent measured its capped uplink at start (and on the last test's migrations): the policy predicts with
    // that figure, so the services are sized by it. The three that fit go at once and need about 48% of the window
    // for their bytes, 60-70% with the work before their first bytes; the fourth would take it past the deadline.
    const uplink = (await bus.agents.get(AZURE.agentId))?.value.transfer?.uploadBytesPerSecond;
    assert.ok(uplink !== undefined, 'the agent measured its uplink');
    const windowMiB = (uplink * 28) / MiB;
    const sized = (share: number) => Math.max(4, Math.round(windowMiB * share));
    // The first is Debian's redis-server, its dataset in memory and its own client (redis-cli, in the container)
    // counting over one connection; the others are counters.
    await azure.podman([
      'run',
      '-d',
      '--name',
      REDIS,
      '--label',
      `${POLICY_LABELS.priority}=30`,
      '-e',
      `${INNER_CLIENT_ENV}=1`,
      DEFAULT_REDIS_IMAGE,
    ]);
    const redisPid = await containerPid(azure, REDIS);
    await waitForInnerCount(redisPid, 5);
    await populateTo(redisPid, sized(0.1));
    const digestBefore = await datasetDigest(redisPid);
    // What the planner expects to send of it (the server and its client, above the dataset) is what the policy
    // counts: the two counters that fit with it take the rest of the 48%.
    let redisMiB = 0;
    await waitFor(async () => {
      const plan = await umsJson<{ archive?: { bytes: number } }>(stack.info, ['plan', REDIS, '--to', GCP.agentId]);
      redisMiB = (plan.json.archive?.bytes ?? 0) / MiB;
      return redisMiB >= sized(0.1);
    }, "redis's populated size in the plan");
    const counterMiB = Math.max(4, Math.round((windowMiB * 0.48 - redisMiB) / 2));
    const counters = [
      { name: 'spot-b', memoryMiB: counterMiB, priority: 20 },
      { name: 'spot-c', memoryMiB: counterMiB, priority: 10 },
      { name: 'spot-d', memoryMiB: sized(0.3), priority: 0 },
    ];
    for (const s of counters) await runService(azure, s.name, s.memoryMiB, { [POLICY_LABELS.priority]: String(s.priority) });
    await listedRunning(AZURE.agentId, [REDIS, ...counters.map((s) => s.name)]);
    const before = new Map(await Promise.all(counters.map(async (s) => [s.name, await lastTick(azure, s.name)] as const)));
    const innerBefore = await innerRedisClient(redisPid);

    // Azure's Preempt: NotBefore 30 s from now, its documented minimum notice.
    const eventId = metadata.schedule({ EventType: 'Preempt' });
    const deadline = Date.now() + 30_000;
    await waitFor(
      async () => (await evacuation(AZURE.agentId))?.trigger.kind === 'notice' && (await evacuation(AZURE.agentId))?.state !== 'cancelled',
      'the evacuation decided',
    );
    const decided = (await evacuation(AZURE.agentId)) as EvacuationRecord;
    assert.equal(decided.trigger.kind === 'notice' && decided.trigger.noticeId, eventId);
    const itemOf = (name: string) => decided.items.find((item) => item.container === name);
    assert.equal(itemOf('spot-d')?.state, 'left', JSON.stringify(decided.items, null, 2));
    assert.match(itemOf('spot-d')?.reason ?? '', /does not fit/);
    for (const name of [REDIS, 'spot-b', 'spot-c']) assert.notEqual(itemOf(name)?.state, 'left', `${name} fits: ${itemOf(name)?.reason}`);

    // Until the deadline: the three move, the fourth keeps running untouched.
    await waitFor(
      async () => (await evacuation(AZURE.agentId))?.items.filter((item) => item.state === 'sent' || item.state === 'moved').length === 3,
      'every service that fits has left the host',
      Math.max(1_000, deadline - Date.now()),
    ).catch(async (error: unknown) => {
      throw new Error(`${(error as Error).message}: ${JSON.stringify(await evacuation(AZURE.agentId), null, 1)}`, { cause: error });
    });
    const leftTicks = await readTicks(azure.url, 'spot-d');
    assert.ok(continuity(leftTicks).continuous, 'the service left behind was never frozen');
    assert.ok((leftTicks.at(-1) as Tick).t > (before.get('spot-d') as Tick).t);
    await sleep(Math.max(0, deadline - Date.now()));

    // The deadline: the VM is gone, and its agent with it.
    await stack.services.get(`agent-${AZURE.agentId}`)?.kill();
    await azure.destroy();
    // Findings, not assertions: what the policy predicted against when each service's last byte had left.
    const sent = (await evacuation(AZURE.agentId)) as EvacuationRecord;
    t.diagnostic(`decided: ${sent.summary}`);
    for (const item of sent.items) {
      const actual =
        item.sentAt === undefined ? 'stayed' : `${((Date.parse(item.sentAt) - Date.parse(sent.startedAt)) / 1000).toFixed(1)} s`;
      t.diagnostic(`${item.container}: ${item.state}, predicted ${((item.predictedMs ?? 0) / 1000).toFixed(1)} s, sent after ${actual}`);
    }
    // The destinations finish restoring from the store without the source (the supervisor ends what waited on it).
    await waitFor(async () => (await evacuation(AZURE.agentId))?.state === 'emptied', 'the evacuation ended', 90_000);
    const record = (await evacuation(AZURE.agentId)) as EvacuationRecord;
    for (const name of [REDIS, 'spot-b', 'spot-c']) {
      const item = record.items.find((i) => i.container === name);
      assert.equal(item?.state, 'moved', `${name}: ${JSON.stringify(item)}`);
      const migration = await bus.migrations.get(item?.migrationId ?? '');
      assert.equal(migration?.value.state, 'done');
      if (name !== REDIS) await assertMovedWithState(name, before.get(name) as Tick, [AZURE.agentId], [AZURE.agentId]);
    }
    // redis, once its host is gone: the same dataset, and its client on the same connection, counting on.
    const redisAt = await runningOn(REDIS, [AZURE.agentId]);
    assert.equal(redisAt.length, 1, `redis runs exactly once (on ${redisAt.join(', ') || 'nothing'})`);
    const movedPid = await containerPid(hosts.get(redisAt[0] as string) as PodmanHost, REDIS);
    assert.equal((await datasetDigest(movedPid)).digest, digestBefore.digest, 'every key and value of the dataset is the same');
    await waitFor(async () => (await innerRedisClient(movedPid)).count > innerBefore.count + 3, "redis's own client counting on");
    assert.equal((await innerRedisClient(movedPid)).id, innerBefore.id, 'the client kept its connection');
  });
});
