import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { connectNatsBus, type NatsEventBus } from '../../core/nats-event-bus.js';
import type { UmsEvent } from '../../core/events.js';
import { continuity, parseTicks } from '../../infra/images/counter-output.js';
import { DEFAULT_HOSTS, startLocalStack, type LocalStack } from '../../infra/local-stack.js';
import type { PodmanHost } from '../../infra/podman-host.js';
import { waitFor } from '../post-copy/lazy-container-hosts.js';
import { TICK_MS } from './counter-container.js';
import { umsJson, umsText } from './ums-cli.js';

/**
 * Post-copy through the whole stack (docs/design/post-copy.md): the planner's mode, the page stream's key
 * wrapped for both agents, the source agent's lazy checkpoint through the runtime shim, the destination's
 * restore before the memory, the pages through the two agents' relays over the stack's WAN, the saga's
 * `pages-moving` window. The counter holds random memory and checks all of it every VERIFY_EVERY ticks
 * ("verify ok", or "verify BAD" for a page that came back wrong or never came).
 *
 * What happens when something dies while pages move (stated here, and tested below):
 * - the source agent is killed: its page relay is a process of its own, so the pages keep moving; the
 *   destination reports them all, and the migration completes once the source agent is back to discard its
 *   Exited copy. The service's memory is whole.
 * - the destination agent is killed: its relay too goes on and records how the stream ended; the agent,
 *   back, reads that and reports it (the migration completes, memory whole).
 * - the source's page relay dies (its host lost): the destination's copy waits on its next missing page
 *   (it never runs on a page that did not arrive); after the relays' resume window the destination reports
 *   the stream lost, the saga removes that copy and the source starts the container afresh: the service
 *   runs exactly once, and its memory state is lost (the count starts again), which the failure says.
 */
const execFileAsync = promisify(execFile);
const AZURE = 'azure-eastus-1';
const GCP = 'gcp-us-central1-1';
const MIB = 256;
const VERIFY_EVERY = 10;

let stack: LocalStack;
let bus: NatsEventBus;
let azure: PodmanHost;
let gcp: PodmanHost;

interface Result {
  state: string;
  code?: string;
  reason?: string;
  runningOn?: string | null;
  timeline?: { frozenMs: number; archiveBytes: number; phases: Array<{ name: string; ms: number }> };
}

async function startCounter(name: string): Promise<void> {
  await azure.podman([
    ...['run', '-d', '--name', name, '-e', `COUNTER_MEM_MIB=${MIB}`, '-e', `COUNTER_TICK_MS=${TICK_MS}`],
    ...['-e', `COUNTER_VERIFY_EVERY=${VERIFY_EVERY}`, stack.info.image],
  ]);
  await waitFor(async () => /^verify ok/m.test(await logs(azure, name)), `${name} to fill and check its memory`);
}

async function logs(host: PodmanHost, name: string): Promise<string> {
  return (await host.podman(['logs', name]).catch(() => ({ stdout: '' }))).stdout;
}

async function states(host: PodmanHost, name: string): Promise<string[]> {
  const all = JSON.parse((await host.podman(['ps', '-a', '--format', 'json'])).stdout) as Array<{ Names: string[]; State: string }>;
  return all.filter((c) => c.Names.includes(name)).map((c) => c.State);
}

/** The full checks the destination's copy made after the migration, once one ran. */
async function checksOnGcp(name: string): Promise<{ ok: number; bad: string[] }> {
  return waitFor(async () => {
    const lines = (await logs(gcp, name)).split('\n');
    const ok = lines.filter((line) => line.startsWith('verify ok')).length;
    return ok > 0 ? { ok, bad: lines.filter((line) => line.startsWith('verify BAD')) } : undefined;
  }, 'a full check of the memory on the destination');
}

/** Starts `ums migrate` and resolves with its result; `onEvent` sees the migration's events meanwhile. */
async function migrate(name: string, args: string[], onEvent: (event: UmsEvent) => void = () => undefined) {
  const migrationId = randomUUID();
  const subscription = await bus.followMigration(migrationId, (event) => void onEvent(event));
  try {
    const { code, json } = await umsJson<Result>(stack.info, ['migrate', name, '--to', GCP, '--id', migrationId, ...args]);
    return { code, result: json, migrationId };
  } finally {
    await subscription.stop();
  }
}

async function restartAgent(agentId: string): Promise<void> {
  const service = stack.services.get(`agent-${agentId}`);
  const logFile = stack.info.hosts.find((h) => h.agentId === agentId)?.agentLog;
  if (!service || !logFile) throw new Error(`no agent ${agentId}`);
  const started = async () => (await readFile(logFile, 'utf8').catch(() => '')).split('agent started').length - 1;
  const before = await started();
  await service.start();
  await waitFor(async () => (await started()) > before, `agent ${agentId} to start again`);
}

describe('post-copy migration through the whole stack', { timeout: 900_000 }, () => {
  before(async () => {
    stack = await startLocalStack({
      name: `e2e-pc-${process.pid}`,
      dir: join(tmpdir(), `ums-e2e-pc-${process.pid}`),
      hosts: DEFAULT_HOSTS,
    });
    bus = await connectNatsBus({ ...stack.admin, name: 'e2e-post-copy' });
    azure = stack.hosts.get(AZURE) as PodmanHost;
    gcp = stack.hosts.get(GCP) as PodmanHost;
  });

  after(async () => {
    await bus?.close();
    await stack?.stop();
  });

  it('plans post-copy above a frozen-time budget, and refuses it for service level with the reason', async () => {
    const name = 'pc-plan';
    await startCounter(name);
    // Registrations lag a heartbeat behind a container that just started.
    const { code, stdout } = await waitFor(async () => {
      const answer = await umsText(stack.info, ['plan', name, '--to', GCP, '--frozen-budget', '0.5']);
      return answer.stdout.includes('container-not-found') ? undefined : answer;
    }, 'the agent to register the container');
    assert.equal(code, 0, stdout);
    assert.match(stdout, /post-copy: stop-and-copy would be frozen/);
    assert.match(stdout, /post-copy +frozen ~/);
    const refused = await umsText(stack.info, ['plan', name, '--to', GCP, '--mode', 'post-copy', '--approach', 'service']);
    assert.notEqual(refused.code, 0);
    await azure.podman(['rm', '-f', name]);
  });

  it(`moves a ${MIB} MiB counter post-copy: it runs on the destination before its memory, the count goes on, every page checks`, async () => {
    const name = 'pc-counter';
    await startCounter(name);
    const seen: string[] = [];
    const run = await migrate(name, ['--mode', 'post-copy'], (event) => seen.push(event.name));
    assert.equal(run.code, 0, `migration failed: ${run.result.reason}`);
    assert.ok(
      seen.indexOf('restore.completed') < seen.indexOf('restore.pages-arrived'),
      `the service ran before its pages arrived: ${seen.join(', ')}`,
    );
    assert.ok(
      run.result.timeline?.phases.some((p) => p.name === 'pages'),
      'the timeline has the pages phase',
    );
    const archiveBytes = run.result.timeline?.archiveBytes ?? Number.POSITIVE_INFINITY;
    assert.ok(archiveBytes < 16 << 20, `the archive through the store holds no memory: ${archiveBytes} bytes for ${MIB} MiB`);
    const record = await bus.migrations.get(run.migrationId);
    assert.equal(record?.value.mode, 'post-copy');

    const checks = await checksOnGcp(name);
    assert.deepEqual(checks.bad, [], 'no page came back wrong');
    const count = continuity(parseTicks(await logs(gcp, name)));
    assert.ok(count.continuous, `the count reset or skipped on the destination: ${JSON.stringify(count.break)}`);
    assert.deepEqual(await states(gcp, name), ['running']);
    assert.deepEqual(await states(azure, name), [], 'the source copy was removed');
    await gcp.podman(['rm', '-f', name]);
  });

  for (const [role, agentId] of [
    ['source', AZURE],
    ['destination', GCP],
  ] as const) {
    it(`the ${role} agent is killed while pages move: its relay goes on, the migration completes once it is back, memory whole`, async () => {
      const name = `pc-${role}-agent-killed`;
      await startCounter(name);
      const agent = stack.services.get(`agent-${agentId}`)!;
      let killed: Promise<void> | undefined;
      let backAt = Number.POSITIVE_INFINITY;
      let pagesArrived: string | undefined;
      const run = await migrate(name, ['--mode', 'post-copy', '--timeout', '300'], (event) => {
        if (event.name === 'restore.pages-arrived') pagesArrived = event.data.arrivedAt;
        if (event.name === 'restore.completed' && killed === undefined) {
          killed = agent.kill().then(async () => {
            // Down while the pages move (about 3 s at this size), and longer.
            await sleep(8_000);
            backAt = Date.now();
            await restartAgent(agentId);
          });
        }
      });
      await killed;
      assert.equal(run.code, 0, `migration failed: ${run.result.reason}`);
      // The destination's relay recorded the moment; its agent reports it then, or once back.
      assert.ok(pagesArrived !== undefined && Date.parse(pagesArrived) < backAt, `every page arrived while the ${role} agent was down`);
      const checks = await checksOnGcp(name);
      assert.deepEqual(checks.bad, [], 'no page came back wrong');
      assert.deepEqual(await states(gcp, name), ['running']);
      assert.deepEqual(await states(azure, name), [], 'the source copy was removed');
      await gcp.podman(['rm', '-f', name]);
    });
  }

  it("the source's page relay dies while pages move: no copy reads a missing page; the service ends up running once, restarted at the source", async () => {
    const name = 'pc-relay-lost';
    await startCounter(name);
    let cut: Promise<unknown> | undefined;
    const run = await migrate(name, ['--mode', 'post-copy', '--timeout', '300'], (event) => {
      // Its host lost, as far as the pages go: SIGKILL, no goodbye.
      if (event.name === 'restore.completed') cut ??= execFileAsync('pkill', ['-KILL', '-f', 'relay-process.js source pages.']);
      // CRIU either failed (tasks thawed) or took the relay's FIN for the end (tasks ended): both must end the same way.
      if (event.name === 'checkpoint.pages-served') console.log(`source: ${event.data.outcome}, tasks ${event.data.sourceTasks ?? '-'}`);
    });
    await cut;
    assert.equal(run.code, 1, JSON.stringify(run.result));
    assert.equal(run.result.code, 'pages-lost', run.result.reason);
    assert.match(run.result.reason ?? '', /memory state is lost/);
    assert.equal(run.result.runningOn, AZURE);
    assert.deepEqual(await states(gcp, name), [], "the destination's copy was removed");
    assert.deepEqual(await states(azure, name), ['running']);
    assert.deepEqual(
      (await logs(gcp, name)).split('\n').filter((line) => line.startsWith('verify BAD')),
      [],
      'no copy ran on a page that did not arrive',
    );
    // Started afresh: its count begins again (the memory state is lost, as the failure says).
    await waitFor(async () => /^count=1 /m.test((await azure.podman(['logs', '--since', '60s', name])).stdout), 'the restarted count');
    await azure.podman(['rm', '-f', name]);
  });
});
