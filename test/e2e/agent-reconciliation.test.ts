import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeEvent, type EventName } from '../../core/events.js';
import { isTerminal, whereItRuns, type MigrationRecord, type RecordIn } from '../../core/migration.js';
import { connectNatsBus, type NatsEventBus } from '../../core/nats-event-bus.js';
import { continuity, readTicks } from '../../infra/images/counter-output.js';
import { runCounter } from './counter-container.js';
import { DEFAULT_HOSTS, startLocalStack, type LocalStack } from '../../infra/local-stack.js';
import type { PodmanHost } from '../../infra/podman-host.js';

/**
 * The record says where the service runs, whatever happened to the agents: the source agent killed
 * (SIGKILL) in the middle of the checkpoint and started again, and the two reconciliations an agent does
 * when it starts (a failed migration's service found running; a copy left by a rolled-back migration
 * whose abort never reached the destination). Everything real, as in fault-matrix.test.ts.
 */
const SOURCE = DEFAULT_HOSTS[0]?.agentId ?? 'azure-eastus-1';
const DESTINATION = DEFAULT_HOSTS[1]?.agentId ?? 'gcp-us-central1-1';
const DOWN_MS = 1_500;
const END_TIMEOUT_MS = 150_000;

let stack: LocalStack;
let stackDir: string;
let bus: NatsEventBus;
let source: PodmanHost;
let destination: PodmanHost;

async function restartAgent(agentId: string, downMs = DOWN_MS): Promise<void> {
  const service = stack.services.get(`agent-${agentId}`);
  if (!service) throw new Error(`no agent ${agentId} in the stack`);
  await service.kill();
  await sleep(downMs);
  await service.start();
}

async function recordOf(migrationId: string): Promise<MigrationRecord | undefined> {
  return (await bus.migrations.get(migrationId))?.value;
}

async function containersNamed(host: PodmanHost, name: string): Promise<string[]> {
  const list = JSON.parse((await host.podman(['ps', '-a', '--format', 'json'])).stdout) as Array<{ Names: string[]; State: string }>;
  return list.filter((c) => c.Names.includes(name)).map((c) => c.State);
}

/** A counter on `host`, once its agent has registered it running (the planner plans only what it knows). */
async function startCounter(host: PodmanHost, name: string, agentId: string): Promise<void> {
  await runCounter(host, name, stack.info.image, 24);
  for (let i = 0; i < 50; i++) {
    const registration = await bus.agents.get(agentId).catch(() => undefined);
    if (registration?.value.containers.some((c) => c.name === name && c.state === 'running')) return;
    await sleep(200);
  }
  throw new Error(`${name} never appeared in ${agentId}'s registration`);
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = END_TIMEOUT_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    await sleep(300);
  }
  throw new Error(`timed out waiting for ${what}`);
}

const hostOf = (agentId: string): PodmanHost => (agentId === SOURCE ? source : destination);

/** The service runs exactly once, on the host the record names, and its count went on. */
async function assertRunsWhereTheRecordSays(name: string, record: MigrationRecord, countBefore: number): Promise<string> {
  const where = whereItRuns(record);
  assert.ok(
    where.agent,
    `the record of ${record.migrationId} (${record.state}) places the service nowhere: ${record.failure?.reason ?? ''}`,
  );
  assert.equal(where.frozen, false);
  const here = hostOf(where.agent);
  const other = here === source ? destination : source;
  let problem = '';
  for (let i = 0; i < 60; i++) {
    const [there, elsewhere] = await Promise.all([containersNamed(here, name), containersNamed(other, name)]);
    problem =
      there.length !== 1 || there[0] !== 'running'
        ? `the record says ${name} runs on ${where.agent}, found [${there.join(', ')}] there`
        : elsewhere.length > 0
          ? `a copy of ${name} is left on ${other.name}: [${elsewhere.join(', ')}]`
          : '';
    if (!problem) break;
    await sleep(500);
  }
  assert.equal(problem, '', `${problem} (migration ${record.migrationId} ended ${record.state}: ${record.failure?.reason ?? ''})`);
  await sleep(600);
  const ticks = await readTicks(here.url, name);
  assert.ok(continuity(ticks).continuous, `${name}: the count broke`);
  assert.ok((ticks.at(-1)?.count ?? 0) > countBefore, `${name}: the count did not go on past ${countBefore}`);
  return `${record.state}${record.failure ? ` (${record.failure.code})` : ''}, runs once on ${where.agent}`;
}

async function removeEverywhere(name: string): Promise<void> {
  await Promise.all([source, destination].map((host) => host.podman(['rm', '-f', '-t', '0', name]).catch(() => undefined)));
}

/** What every record of these cases shares: a container-level migration SOURCE -> DESTINATION, planned. */
function plannedRecord(migrationId: string, container: string) {
  const now = new Date().toISOString();
  return {
    migrationId,
    container,
    destinationAgent: DESTINATION,
    sourceAgent: SOURCE,
    image: stack.info.image,
    imageId: 'f'.repeat(64),
    approach: 'container' as const,
    artifactLocation: { storeUrl: 'file:///nowhere', prefix: `migrations/${migrationId}/` },
    times: { requestedAt: now, finishedAt: now },
    updatedAt: now,
  };
}

/** A failed migration's record as the saga writes it, for the reconciliation cases. */
function failedRecord(migrationId: string, container: string, runningOn: string | null): RecordIn<'failed'> {
  return {
    ...plannedRecord(migrationId, container),
    state: 'failed',
    epoch: 2,
    failure: { phase: 'checkpoint', code: 'agent-restarted', reason: 'test: as a lost update would have left it' },
    rollback: { destinationClear: true },
    runningOn,
  };
}

/** A migration that completed while its source was gone, the discard left for the source (the saga's pendingCleanup). */
function doneWithoutSource(migrationId: string, container: string): RecordIn<'done'> {
  return {
    ...plannedRecord(migrationId, container),
    state: 'done',
    epoch: 1,
    pendingCleanup: `test: source "${SOURCE}" was not reachable to discard its kept checkpoint`,
  };
}

describe('agents reconcile at start: the record says where the service runs', { timeout: 900_000 }, () => {
  before(async () => {
    stackDir = join(tmpdir(), `ums-reconcile-${process.pid}`);
    stack = await startLocalStack({
      name: `reconcile-${process.pid}`,
      dir: stackDir,
      hosts: DEFAULT_HOSTS,
      agentEnv: { UMS_CHUNK_MIB: '1', UMS_IDLE_TIMEOUT_SECONDS: '30' },
      functionEnv: { UMS_DEADLINE_SCALE: '0.2', UMS_SUPERVISE_EVERY_SECONDS: '1' },
    });
    bus = await connectNatsBus({ ...stack.admin, name: 'reconcile-test' });
    source = stack.hosts.get(SOURCE) as PodmanHost;
    destination = stack.hosts.get(DESTINATION) as PodmanHost;
    // Both agents registered and beating, so that the planner does not refuse the first request.
    for (const agentId of [SOURCE, DESTINATION]) {
      await waitFor(
        `${agentId} to register`,
        async () => {
          const registration = await bus.agents.get(agentId);
          return registration && Date.now() - Date.parse(registration.value.heartbeatAt) < 5_000 ? true : undefined;
        },
        60_000,
      );
    }
  });

  after(async () => {
    await bus?.close();
    await stack?.stop();
  });

  // The source's agent dies while the container is being frozen (restore.prepared: the checkpoint command
  // is on its way) and while the archive streams out (the first chunk).
  for (const [when, opening] of [
    ['while freezing', 'restore.prepared'],
    ['mid-upload', 'checkpoint.chunk'],
  ] as Array<[string, EventName]>) {
    it(`source agent killed ${when} and restarted: the record names the one host where the service runs`, async () => {
      const name = `r-src-${opening.replace('.', '-')}`;
      const migrationId = `reconcile-${opening.replace('.', '-')}-${randomBytes(3).toString('hex')}`;
      await startCounter(source, name, SOURCE);
      const countBefore = (await readTicks(source.url, name)).at(-1)?.count ?? 0;
      let injected: Promise<void> | undefined;
      const subscription = await bus.followMigration(migrationId, (event) => {
        if (event.name !== opening) return;
        injected = restartAgent(SOURCE);
        return 'stop';
      });
      await bus.publishEvent(
        makeEvent('migration.requested', '/test/reconcile', {
          migrationId,
          container: name,
          sourceAgent: SOURCE,
          destinationAgent: DESTINATION,
        }),
      );
      const record = await waitFor(`${migrationId} to end`, async () => {
        const r = await recordOf(migrationId);
        return r && isTerminal(r.state) ? r : undefined;
      });
      assert.ok(injected, `the migration ended ${record.state} before ${opening}: ${record.failure?.reason ?? ''}`);
      await injected;
      await subscription.stop().catch(() => undefined);
      if (record.state === 'failed') assert.equal(record.runningOn, SOURCE, `failed: ${record.failure.reason}`);
      const note = await assertRunsWhereTheRecordSays(name, record, countBefore);
      console.log(`source agent killed ${when}: ${note}${record.failure ? `: ${record.failure.reason}` : ''}`);
      await removeEverywhere(name);
    });
  }

  it('a failed migration whose record says the service runs nowhere is corrected by the agent that runs it, when it starts', async () => {
    const name = 'r-nowhere';
    const migrationId = `reconcile-nowhere-${randomBytes(3).toString('hex')}`;
    await startCounter(source, name, SOURCE);
    await bus.migrations.put(migrationId, failedRecord(migrationId, name, null));
    await restartAgent(SOURCE);
    const corrected = await waitFor(
      'the record to be corrected',
      async () => {
        const r = await recordOf(migrationId);
        return r?.state === 'failed' && r.runningOn !== null ? r : undefined;
      },
      30_000,
    );
    assert.equal(corrected.runningOn, SOURCE);
    assert.match(corrected.runningOnReport ?? '', /found it running/);
    await assertRunsWhereTheRecordSays(name, corrected, 0);
    await removeEverywhere(name);
  });

  it('a kept checkpoint whose discard expired while its agent was away is discarded when that agent starts', async () => {
    const name = 'r-kept';
    const migrationId = `reconcile-kept-${randomBytes(3).toString('hex')}`;
    // The source's kept checkpoint (stopped by the checkpoint), and the service running at the destination.
    await startCounter(source, name, SOURCE);
    await source.podman(['container', 'checkpoint', name]);
    await startCounter(destination, name, DESTINATION);
    await bus.migrations.put(migrationId, doneWithoutSource(migrationId, name));
    await restartAgent(SOURCE);
    await waitFor(
      'the kept checkpoint to be discarded',
      async () => ((await containersNamed(source, name)).length === 0 ? true : undefined),
      30_000,
    );
    const record = await waitFor(
      'the pending cleanup to be cleared',
      async () => {
        const r = await recordOf(migrationId);
        return r?.state === 'done' && r.pendingCleanup === undefined ? r : undefined;
      },
      30_000,
    );
    await assertRunsWhereTheRecordSays(name, record, 0);
    await removeEverywhere(name);
  });

  it('a copy left on the destination by a rolled-back migration whose abort never came is removed when its agent starts', async () => {
    const name = 'r-leftover';
    const migrationId = `reconcile-leftover-${randomBytes(3).toString('hex')}`;
    await startCounter(source, name, SOURCE);
    // What the destination's restore left behind: the copy, and its journal entry.
    await destination.podman(['run', '-d', '--name', name, '-e', 'COUNTER_TICK_MS=100', stack.info.image]);
    const journalDir = join(stackDir, `h${DEFAULT_HOSTS.findIndex((h) => h.agentId === DESTINATION)}`, 'agent-state');
    await mkdir(journalDir, { recursive: true, mode: 0o700 });
    await writeFile(
      join(journalDir, `${migrationId}.json`),
      JSON.stringify({ migrationId, container: name, at: new Date().toISOString() }),
    );
    await bus.migrations.put(migrationId, failedRecord(migrationId, name, SOURCE));
    await restartAgent(DESTINATION);
    await waitFor(
      'the leftover copy to be removed',
      async () => ((await containersNamed(destination, name)).length === 0 ? true : undefined),
      30_000,
    );
    await waitFor(
      'the journal entry to be forgotten',
      async () => (!(await readdir(journalDir)).includes(`${migrationId}.json`) ? true : undefined),
      10_000,
    );
    const record = await recordOf(migrationId);
    assert.ok(record);
    await assertRunsWhereTheRecordSays(name, record, 0);
    await removeEverywhere(name);
  });
});
