import { setTimeout as sleep } from 'node:timers/promises';
import type { HostSpec } from '../../cli/stack-info.js';
import type { EvacuationRecord } from '../../core/evacuation.js';
import { createLogger } from '../../core/log.js';
import type { MigrationRecord } from '../../core/migration.js';
import { connectNatsBus, type NatsEventBus } from '../../core/nats-event-bus.js';
import { POLICY_LABELS } from '../../core/service-policy.js';
import { DEFAULT_COUNTER_IMAGE } from '../../infra/images/build-counter-image.js';
import { continuity, readTicks, type Tick } from '../../infra/images/counter-output.js';
import { DEFAULT_HOSTS, startLocalStack, type LocalStack } from '../../infra/local-stack.js';
import type { AzureMetadataServer } from '../../infra/metadata-servers/azure-metadata-server.js';
import type { PodmanHost } from '../../infra/podman-host.js';
import { waitFor } from '../../infra/real-servers/command.js';
import { umsJson } from '../e2e/ums-cli.js';
import { formatRatio, ratio, seconds } from './statistics.js';

/**
 * The time to empty a host of N services against a notice's window. On a stack of its own, the azure host's
 * uploads capped (--max-upload-rate) so that the link, not this machine's loopback, sets the pace as it would
 * on a cloud VM: N counters of one size and one priority on the azure host, then an Azure Preempt notice
 * (30 s ahead) from the stand-in for its instance metadata. What is measured, from the notice: the decision
 * (the evacuation record's start), the last byte of the last service leaving the host (the items' sentAt:
 * what an eviction's deadline is about), every service running at the destination (its migration's
 * restoredAt); the policy's prediction for the last one against what it took; the share of the window used;
 * how many were left. Before each evacuation, the baseline on the same host and link: one plain `ums migrate`
 * of one such service, from its request to the end of its upload, so that figures read as ratios to it (this
 * machine is shared and noisy). Timings are findings; a service lost (running nowhere, or its count reset)
 * or running twice is the only failure.
 */

const log = createLogger('bench-evacuation');
const [AZURE, GCP] = DEFAULT_HOSTS as [HostSpec, HostSpec];
/** The evicted host's uplink cap, in MiB/s (the e2e test's: services are sized against it and the 30 s window). */
export const EVACUATION_UPLINK_MIB_S = 4;
const CONCURRENCY = 2;
const NOTICE = 'Azure Preempt';

export interface EvacuationItemSample {
  container: string;
  state: string;
  bytes?: number;
  /** From the decision, as the policy predicted it. */
  predictedMs?: number;
  /** From the decision to its last byte off the host. */
  sentMs?: number;
  /** From the notice to its restore at the destination. */
  runningMs?: number;
  /** Left when its turn came (the time left no longer sufficed), rather than at the decision. */
  leftAtTurn?: boolean;
}

export interface EvacuationSample {
  services: number;
  rep: number;
  serviceMiB: number;
  /** The host's cap, and the rate the policy predicted with (the agent's measure). */
  capMiBs: number;
  linkBytesPerSecond?: number;
  concurrency?: number;
  /** From the notice to the record's deadline. */
  windowMs?: number;
  /** One plain `ums migrate` of one such service: its request to the end of its upload. */
  baselineUploadMs?: number;
  decisionMs?: number;
  /** From the notice to the last byte of the last service that moved. */
  emptiedMs?: number;
  /** From the notice to every moved service restored at the destination. */
  runningMs?: number;
  /** The policy's prediction for the last service to leave, and what it took, both from the decision. */
  predictedMs?: number;
  measuredMs?: number;
  moved: number;
  left: number;
  /** Of those left, how many when their turn came rather than at the decision. */
  leftAtTurn: number;
  failed: number;
  items: EvacuationItemSample[];
  /** Services running nowhere, or whose count did not go on: the failures. */
  lost: string[];
  /** Services running on both hosts: failures too. */
  twice: string[];
  error?: string;
}

export async function measureEvacuation(options: {
  services: number[];
  serviceMiB: number;
  reps: number;
  dir: string;
}): Promise<EvacuationSample[]> {
  const stack = await startLocalStack({
    name: `bench-evac-${process.pid}`,
    dir: options.dir,
    hosts: [AZURE, GCP],
    notices: true,
    hostAgentEnv: { [AZURE.agentId]: { UMS_MAX_UPLOAD_RATE: String(EVACUATION_UPLINK_MIB_S) } },
    functionEnv: { UMS_EVACUATION_CONCURRENCY: String(CONCURRENCY) },
  });
  const samples: EvacuationSample[] = [];
  const bus = await connectNatsBus({ ...stack.admin, name: 'bench-evacuation' });
  try {
    const azure = stack.hosts.get(AZURE.agentId);
    const gcp = stack.hosts.get(GCP.agentId);
    const metadata = stack.metadata.get(AZURE.agentId) as AzureMetadataServer | undefined;
    if (!azure || !gcp || !metadata) throw new Error('the stack lacks the azure or gcp host, or azure metadata stand-in');
    const env: Env = { stack, bus, azure, gcp, metadata };
    for (let rep = 1; rep <= options.reps; rep++) {
      for (const services of options.services) {
        log.info({ services, rep, serviceMiB: options.serviceMiB }, 'evacuation');
        const sample = await measureOne(env, services, rep, options.serviceMiB);
        samples.push(sample);
        log.info(
          {
            services,
            rep,
            baselineUploadMs: sample.baselineUploadMs,
            decisionMs: sample.decisionMs,
            emptiedMs: sample.emptiedMs,
            runningMs: sample.runningMs,
            left: sample.left,
            lost: sample.lost,
            twice: sample.twice,
            error: sample.error,
          },
          'evacuation measured',
        );
      }
    }
  } finally {
    await bus.close();
    await stack.stop();
  }
  return samples;
}

interface Env {
  stack: LocalStack;
  bus: NatsEventBus;
  azure: PodmanHost;
  gcp: PodmanHost;
  metadata: AzureMetadataServer;
}

async function measureOne(env: Env, n: number, rep: number, serviceMiB: number): Promise<EvacuationSample> {
  const sample: EvacuationSample = {
    services: n,
    rep,
    serviceMiB,
    capMiBs: EVACUATION_UPLINK_MIB_S,
    moved: 0,
    left: 0,
    leftAtTurn: 0,
    failed: 0,
    items: [],
    lost: [],
    twice: [],
  };
  const names = Array.from({ length: n }, (_, i) => `ev${n}-${rep}-${i}`);
  const baseline = `ev${n}-${rep}-baseline`;
  const before = new Map<string, Tick>();
  let eventId: string | undefined;
  try {
    sample.baselineUploadMs = await baselineUpload(env, baseline, serviceMiB);

    for (const name of names) await runCounter(env.azure, name, serviceMiB);
    await listed(env.bus, names);
    for (const name of names) before.set(name, (await readTicks(env.azure.url, name)).at(-1) ?? { count: 0, t: 0 });

    eventId = env.metadata.schedule({ EventType: 'Preempt' });
    const noticeAt = Date.now();
    const ours = (record: EvacuationRecord | undefined): record is EvacuationRecord =>
      record?.trigger.kind === 'notice' && record.trigger.noticeId === eventId;
    const record = async () => (await env.bus.evacuations.get(AZURE.agentId))?.value;
    await waitFor(async () => ours(await record()), `the evacuation of the ${NOTICE} notice decided`, 60_000);
    // Every service that moves has left the host (or failed), then every migration has ended.
    await waitFor(
      async () => (await record())?.items.every((i) => i.state !== 'pending' && i.state !== 'moving') === true,
      'every service that moves to have left the host',
      240_000,
    );
    await waitFor(async () => (await record())?.state !== 'evacuating', 'the evacuation to end', 240_000);
    const ended = await record();
    if (!ours(ended)) throw new Error('the evacuation record changed to another evacuation');

    const startedAt = Date.parse(ended.startedAt);
    sample.linkBytesPerSecond = ended.link.bytesPerSecond;
    sample.concurrency = ended.concurrency;
    if (ended.deadline !== undefined) sample.windowMs = Date.parse(ended.deadline) - noticeAt;
    sample.decisionMs = startedAt - noticeAt;
    for (const item of ended.items) {
      const migration = item.migrationId === undefined ? undefined : (await env.bus.migrations.get(item.migrationId))?.value;
      const restoredAt = restored(migration);
      sample.items.push({
        container: item.container,
        state: item.state,
        ...(item.bytes !== undefined ? { bytes: item.bytes } : {}),
        ...(item.predictedMs !== undefined ? { predictedMs: item.predictedMs } : {}),
        ...(item.sentAt !== undefined ? { sentMs: Date.parse(item.sentAt) - startedAt } : {}),
        ...(restoredAt !== undefined ? { runningMs: restoredAt - noticeAt } : {}),
        // Left at the decision has no end time; left by the check at its turn has (functions/evacuate-host.ts).
        ...(item.state === 'left' && item.endedAt !== undefined ? { leftAtTurn: true } : {}),
      });
    }
    const moved = sample.items.filter((i) => i.state === 'moved');
    sample.moved = moved.length;
    sample.left = sample.items.filter((i) => i.state === 'left').length;
    sample.leftAtTurn = sample.items.filter((i) => i.leftAtTurn === true).length;
    sample.failed = sample.items.filter((i) => i.state === 'failed').length;
    const last = moved.reduce<EvacuationItemSample | undefined>((a, b) => ((b.sentMs ?? -1) > (a?.sentMs ?? -1) ? b : a), undefined);
    if (last?.sentMs !== undefined) {
      sample.measuredMs = last.sentMs;
      sample.emptiedMs = last.sentMs + sample.decisionMs;
    }
    // The prediction for the host's emptying: the latest of the moved services' (the order may differ from the plan's).
    const predictions = moved.flatMap((i) => (i.predictedMs === undefined ? [] : [i.predictedMs]));
    if (predictions.length > 0) sample.predictedMs = Math.max(...predictions);
    const running = moved.flatMap((i) => (i.runningMs === undefined ? [] : [i.runningMs]));
    if (running.length === moved.length && running.length > 0) sample.runningMs = Math.max(...running);
  } catch (error) {
    sample.error = (error as Error).message;
  } finally {
    await check(env, names, before, sample).catch((error: unknown) => {
      sample.error = `${sample.error ? `${sample.error}; ` : ''}could not check where the services run: ${(error as Error).message}`;
      // Not knowing where a service runs is as bad as losing it: say so.
      sample.lost.push(...names.filter((name) => !sample.lost.includes(name)));
    });
    await reopen(env, eventId).catch((error: unknown) => log.warn({ err: error }, 'could not withdraw the notice'));
    for (const host of [env.azure, env.gcp]) await host.podman(['rm', '-f', '-i', '-t', '0', baseline, ...names]).catch(() => undefined);
  }
  return sample;
}

/** One plain migration of one such service: from its request to the end of its upload (what the host waits for). */
async function baselineUpload(env: Env, name: string, serviceMiB: number): Promise<number> {
  await runCounter(env.azure, name, serviceMiB);
  await listed(env.bus, [name]);
  const migrated = (
    await umsJson<{ state: string; migrationId: string; reason?: string }>(env.stack.info, ['migrate', name, '--to', GCP.agentId])
  ).json;
  if (migrated.state !== 'done') throw new Error(`the baseline migration of ${name} ended ${migrated.state}: ${migrated.reason ?? ''}`);
  const record = (await env.bus.migrations.get(migrated.migrationId))?.value;
  const uploadedAt = Date.parse(record?.times.uploadedAt ?? '');
  const requestedAt = Date.parse(record?.times.requestedAt ?? '');
  if (!Number.isFinite(uploadedAt) || !Number.isFinite(requestedAt))
    throw new Error(`the baseline migration ${migrated.migrationId} recorded no upload`);
  // Out of the way before the evacuation: the destination restores only the evacuated services then.
  await env.gcp.podman(['rm', '-f', '-i', '-t', '0', name]);
  return uploadedAt - requestedAt;
}

function restored(record: MigrationRecord | undefined): number | undefined {
  const at = Date.parse(record?.times.restoredAt ?? '');
  return Number.isFinite(at) ? at : undefined;
}

async function runCounter(host: PodmanHost, name: string, memoryMiB: number): Promise<void> {
  await host.podman([
    'run',
    '-d',
    '--name',
    name,
    // One priority for all: the policy then sends the smaller first, and among equals by name.
    '--label',
    `${POLICY_LABELS.priority}=0`,
    '-e',
    'COUNTER_TICK_MS=100',
    '-e',
    `COUNTER_MEM_MIB=${memoryMiB}`,
    DEFAULT_COUNTER_IMAGE,
  ]);
}

/** Until the azure agent lists each with its measured memory (what the policy sizes it by), and has measured its uplink. */
async function listed(bus: NatsEventBus, names: readonly string[]): Promise<void> {
  await waitFor(
    async () => {
      const registration = (await bus.agents.get(AZURE.agentId))?.value;
      return (
        registration?.transfer !== undefined &&
        names.every((name) =>
          registration.containers.some((c) => c.name === name && c.state === 'running' && c.traits?.memoryBytes !== undefined),
        )
      );
    },
    `${names.join(', ')} listed by ${AZURE.agentId} with their memory`,
    60_000,
  );
}

/** Where each service runs now: exactly once, and a moved one counting on from where it was. */
async function check(env: Env, names: readonly string[], before: ReadonlyMap<string, Tick>, sample: EvacuationSample): Promise<void> {
  for (const name of names) {
    const onAzure = await runs(env.azure, name);
    const onGcp = await runs(env.gcp, name);
    if (onAzure && onGcp) sample.twice.push(name);
    else if (!onAzure && !onGcp) sample.lost.push(name);
    else if (onGcp) {
      const ticks = await readTicks(env.gcp.url, name);
      const start = before.get(name);
      const goesOn = continuity(ticks).continuous && (ticks.at(-1)?.count ?? 0) > (start?.count ?? 0);
      if (!goesOn) sample.lost.push(`${name} (its count did not go on)`);
    }
  }
}

async function runs(host: PodmanHost, name: string): Promise<boolean> {
  const { stdout } = await host.podman(['ps', '--filter', `name=^${name}$`, '--format', '{{.Names}}']);
  return stdout.trim() === name;
}

/** Withdraws the notice, which cancels the evacuation and opens the host again for the next measure. */
async function reopen(env: Env, eventId: string | undefined): Promise<void> {
  if (eventId === undefined) return;
  env.metadata.withdraw(eventId);
  await waitFor(
    async () => {
      const record = (await env.bus.evacuations.get(AZURE.agentId))?.value;
      return (
        record === undefined || record.state === 'cancelled' || record.trigger.kind !== 'notice' || record.trigger.noticeId !== eventId
      );
    },
    'the evacuation cancelled by the withdrawn notice',
    60_000,
  );
  // The agent's registration a heartbeat behind the removals: let it catch up before the next services start.
  await sleep(2_500);
}

/** The section of the report: one row per evacuation, figures from the notice, ratios to the baseline of the same row. */
export function evacuationReport(samples: readonly EvacuationSample[]): string {
  const first = samples[0];
  const out = [
    '## Evacuation: the time to empty a host against the notice window',
    '',
    first === undefined
      ? 'No samples.'
      : `N counters of ${first.serviceMiB} MiB each, one priority, on the azure host, its uploads capped at ${first.capMiBs} MiB/s; an ${NOTICE} notice ` +
        '(30 s ahead, from the stand-in for its instance metadata) evacuates it to the gcp host, ' +
        `${first.concurrency ?? CONCURRENCY} migrations at once. Times are from the notice: the decision (the evacuation record written), the last byte of ` +
        "the last service off the host (items' sentAt: what the deadline is about), every moved service restored at the destination. " +
        "**Predicted / measured**: the policy's time for the last service to leave against what it took, both from the decision. " +
        '**Baseline**: one plain `ums migrate` of one such service on the same link in the same row, from its request to the end of its upload; ' +
        '"empty / (moved x baseline)" compares the evacuation with moving its services one after another. "At its turn": left by the ' +
        'check made when a service is about to start, the time left no longer sufficing, rather than at the decision.',
    '',
    '| N | rep | link MiB/s | baseline s | decision s | empty s | running s | window used | predicted s | measured s | measured / predicted | empty / (moved x baseline) | moved | left | failed | lost | twice |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...samples.map((s) => {
      const used = ratio(s.emptiedMs, s.windowMs);
      return (
        `| ${s.services} | ${s.rep} | ${s.linkBytesPerSecond === undefined ? '-' : (s.linkBytesPerSecond / 2 ** 20).toFixed(2)} | ${seconds(s.baselineUploadMs)} | ` +
        `${seconds(s.decisionMs)} | ${seconds(s.emptiedMs)} | ${seconds(s.runningMs)} | ${used === undefined ? '-' : `${Math.round(used * 100)}% of ${seconds(s.windowMs)} s`} | ` +
        `${seconds(s.predictedMs)} | ${seconds(s.measuredMs)} | ${formatRatio(ratio(s.measuredMs, s.predictedMs))} | ` +
        `${formatRatio(ratio(s.emptiedMs, s.baselineUploadMs === undefined ? undefined : s.baselineUploadMs * s.moved))} | ` +
        `${s.moved} | ${s.left}${s.leftAtTurn > 0 ? ` (${s.leftAtTurn} at its turn)` : ''} | ${s.failed} | ${s.lost.length === 0 ? 0 : s.lost.join(', ')} | ${s.twice.length === 0 ? 0 : s.twice.join(', ')} |` +
        (s.error ? ` ${s.error}` : '')
      );
    }),
  ];
  return out.join('\n');
}
