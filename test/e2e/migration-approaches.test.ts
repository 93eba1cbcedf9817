import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectNatsBus, type NatsEventBus } from '../../core/nats-event-bus.js';
import {
  continuity,
  followTicks,
  joinTicks,
  parseLabelledTicks,
  parseTicks,
  readTicks,
  type LabelledTick,
} from '../../infra/images/counter-output.js';
import { DEFAULT_LAUNCHED_COUNTER_IMAGE, DEFAULT_LAUNCHED_MULTI_COUNTER_IMAGE } from '../../infra/images/build-service-image.js';
import { DEFAULT_HOSTS, startLocalStack, type LocalStack } from '../../infra/local-stack.js';
import type { PodmanHost } from '../../infra/podman-host.js';
import { launcherControlDir, launcherRunArgs } from '../../launcher/convention.js';
import { umsJson } from './ums-cli.js';

/**
 * Approach detection end to end: the agents probe what their hosts and containers can do, the planner
 * picks the cheapest approach feasible at both ends (the cost model is calibrated from `npm run bench`),
 * and the migration runs at that level. Services built with the launcher go at service level (their own
 * CRIU inside the image), one process or five; a multi-process container without it at container level
 * (the engine's CRIU). All keep their memory state.
 */
const SOURCE = DEFAULT_HOSTS[0]?.agentId ?? 'azure-eastus-1';
const DESTINATION = DEFAULT_HOSTS[1]?.agentId ?? 'gcp-us-central1-1';

let stack: LocalStack;
let bus: NatsEventBus;
let source: PodmanHost;
let destination: PodmanHost;

const ums = (args: string[]) => umsJson<Record<string, unknown>>(stack.info, args);

/** Runs a launched image as its owner would: CRIU's capabilities, no seccomp filter, the control dir bind-mounted. */
async function runLaunched(name: string, image: string): Promise<void> {
  const launcherDir = stack.info.hosts.find((h) => h.agentId === SOURCE)?.launcherDir;
  assert.ok(launcherDir);
  const control = launcherControlDir(name, launcherDir);
  await mkdir(control, { recursive: true, mode: 0o700 });
  await source.podman(['run', '-d', '--name', name, ...launcherRunArgs(control), '-e', 'COUNTER_TICK_MS=100', image]);
}

/** Waits until the source's registration shows the container's probed traits (all its processes started). */
async function traitsOf(name: string, processes = 1): Promise<{ launcher?: { available: boolean }; processCount?: number }> {
  for (let i = 0; i < 100; i++) {
    const registration = await bus.agents.get(SOURCE);
    const traits = registration?.value.containers.find((c) => c.name === name)?.traits;
    if (traits?.launcher?.available && (traits.processCount ?? 0) >= processes) return traits;
    await sleep(200);
  }
  throw new Error(`the traits of ${name} never showed a launcher in ${SOURCE}'s registration`);
}

describe('approach detection: service level where the launcher runs, container level elsewhere', { timeout: 600_000 }, () => {
  before(async () => {
    stack = await startLocalStack({
      name: `approaches-${process.pid}`,
      dir: join(tmpdir(), `ums-ap-${process.pid}`),
      hosts: DEFAULT_HOSTS,
      agentEnv: { UMS_CHUNK_MIB: '1' },
    });
    bus = await connectNatsBus({ ...stack.admin, name: 'approaches-test' });
    source = stack.hosts.get(SOURCE) as PodmanHost;
    destination = stack.hosts.get(DESTINATION) as PodmanHost;
  });

  after(async () => {
    await bus?.close();
    await stack?.stop();
  });

  it('reports what each host can do', async () => {
    const { code, json } = await ums(['agents']);
    assert.equal(code, 0);
    const agents = json as unknown as Array<{
      agentId: string;
      approaches: string[];
      capabilities?: { containerLevel: { available: boolean }; orchestratorLevel: { available: boolean; reason?: string } };
    }>;
    for (const agent of agents) {
      assert.deepEqual(agent.approaches, ['container', 'service'], agent.agentId);
      assert.equal(agent.capabilities?.containerLevel.available, true);
      // No kubelet runs here: orchestrator level is reported unavailable, with the reason.
      assert.equal(agent.capabilities?.orchestratorLevel.available, false);
      assert.match(agent.capabilities?.orchestratorLevel.reason ?? '', /UMS_KUBELET_URL/);
    }
  });

  it('moves a single-process service built with the launcher at service level; its count continues', async () => {
    const name = 'svc-single';
    await runLaunched(name, DEFAULT_LAUNCHED_COUNTER_IMAGE);
    const traits = await traitsOf(name);
    assert.equal(traits.processCount, 1);

    const plan = await ums(['plan', name, '--to', DESTINATION]);
    assert.equal(plan.code, 0);
    assert.equal(plan.json.approach, 'service', String(plan.json.reason));

    const { run, followed } = await migrateFollowing(name, 'service', parseTicks);
    const ticks = joinTicks(followed, await readTicks(destination.url, name));
    const flow = continuity(ticks);
    assert.ok(flow.continuous, `the count broke: ${JSON.stringify(flow.break)}`);
    assert.ok(followed.length > 3 && ticks.length > followed.length + 3, 'ticks on both sides of the move');
    const timeline = run.json.timeline as { frozenMs: number; totalMs: number };
    console.log(
      `service level, single process: total ${timeline.totalMs} ms, frozen ${timeline.frozenMs} ms, counter gap ${flow.maxGapMs} ms`,
    );
    const left = JSON.parse((await source.podman(['ps', '-a', '--format', 'json'])).stdout) as Array<{ Names: string[] }>;
    assert.ok(!left.some((c) => c.Names.includes(name)), 'the source container is gone');
    await destination.podman(['rm', '-f', '-t', '0', name]);
  });

  it('moves a five-process service built with the launcher at service level too (our measurements), every process keeping its state', async () => {
    const name = 'svc-multi';
    await runLaunched(name, DEFAULT_LAUNCHED_MULTI_COUNTER_IMAGE);
    const traits = await traitsOf(name, 5);
    assert.equal(traits.processCount, 5, 'shell, two counters, two labelling loops');

    const plan = await ums(['plan', name, '--to', DESTINATION]);
    assert.equal(plan.json.approach, 'service', String(plan.json.reason));
    // Asking for the other approach is honoured when it is possible...
    const forced = await ums(['plan', name, '--to', DESTINATION, '--approach', 'container']);
    assert.equal(forced.json.approach, 'container');
    // ...and refused with the reason when it is not.
    const impossible = await ums(['plan', name, '--to', DESTINATION, '--approach', 'orchestrator']);
    assert.equal(impossible.code, 1);
    assert.equal(impossible.json.code, 'approach-infeasible');
    assert.match(String(impossible.json.reason), /kubelet/);

    const { run, followed } = await migrateFollowing(name, 'service', labelled);
    // A fresh container at the destination: its log starts at the restore, so join it to the source's.
    const after = labelled((await destination.podman(['logs', name])).stdout);
    assertEveryProcessContinued(followed, after);
    const timeline = run.json.timeline as { frozenMs: number; totalMs: number };
    console.log(`service level, five processes: total ${timeline.totalMs} ms, frozen ${timeline.frozenMs} ms`);
    await destination.podman(['rm', '-f', '-t', '0', name]);
  });

  it('moves a multi-process container without the launcher at container level; every process keeps its state', async () => {
    const name = 'plain-multi';
    // The same five processes, started directly: no launcher, so no service level.
    await source.podman([
      'run',
      '-d',
      '--name',
      name,
      '--entrypoint',
      '/usr/local/bin/multi-counter',
      '-e',
      'COUNTER_TICK_MS=100',
      DEFAULT_LAUNCHED_MULTI_COUNTER_IMAGE,
    ]);
    for (let i = 0; i < 100; i++) {
      const listed = (await bus.agents.get(SOURCE))?.value.containers.find((c) => c.name === name);
      if (listed?.traits?.launcher) break;
      await sleep(200);
    }
    const plan = await ums(['plan', name, '--to', DESTINATION]);
    assert.equal(plan.json.approach, 'container', String(plan.json.reason));

    await sleep(1_500);
    const before = labelled((await source.podman(['logs', name])).stdout);
    const run = await ums(['migrate', name, '--to', DESTINATION]);
    assert.equal(run.code, 0, `migration failed: ${String(run.json.reason)}`);
    assert.equal(run.json.approach, 'container');
    await sleep(1_500);
    // Container level carries the container's log along: the destination's log holds both sides.
    const after = labelled((await destination.podman(['logs', name])).stdout);
    assertEveryProcessContinued(before, after);
    const timeline = run.json.timeline as { frozenMs: number; totalMs: number };
    console.log(`container level, five processes: total ${timeline.totalMs} ms, frozen ${timeline.frozenMs} ms`);
    await destination.podman(['rm', '-f', '-t', '0', name]);
  });
});

/**
 * Migrates while following the source's log until the source container stops (service level starts a
 * fresh container at the destination, whose log begins at the restore); asserts it ran at `approach`.
 */
async function migrateFollowing<T>(
  name: string,
  approach: string,
  parse: (text: string) => T[],
): Promise<{ run: Awaited<ReturnType<typeof ums>>; followed: T[] }> {
  const follower = followTicks(source.url, name, parse);
  await sleep(1_000);
  const run = await ums(['migrate', name, '--to', DESTINATION]);
  assert.equal(run.code, 0, `migration failed: ${String(run.json.reason)}`);
  assert.equal(run.json.approach, approach);
  await Promise.race([follower.ended, sleep(5_000)]);
  follower.stop();
  await sleep(1_500);
  return { run, followed: follower.ticks };
}

/** The multi-counter's lines as one list, label first: `a`, `b`. */
function labelled(text: string): Array<LabelledTick & { label: string }> {
  return Object.entries(parseLabelledTicks(text)).flatMap(([label, ticks]) => ticks.map((tick) => ({ ...tick, label })));
}

/** Both counters and both labelling shells went on from where they were, never restarting. */
function assertEveryProcessContinued(
  before: Array<LabelledTick & { label: string }>,
  after: Array<LabelledTick & { label: string }>,
): void {
  for (const label of ['a', 'b']) {
    const source = before.filter((t) => t.label === label);
    const ticks = joinTicks(
      source,
      after.filter((t) => t.label === label),
    );
    const flow = continuity(ticks);
    assert.ok(flow.continuous, `${label}: the count broke: ${JSON.stringify(flow.break)}`);
    assert.ok(ticks.length > source.length + 3, `${label}: counted on after the move`);
    for (let i = 1; i < ticks.length; i++)
      assert.equal(ticks[i]?.lines, (ticks[i - 1]?.lines ?? 0) + 1, `${label}: the labelling shell's count continues`);
  }
}
