import { setTimeout as sleep } from 'node:timers/promises';
import type { MigrationRecord } from '../../core/migration.js';
import { DEFAULT_WEBDIS_IMAGE, WEBDIS_PORT } from '../../infra/images/build-server-images.js';
import { exactlyOnce, readAppliedPosts, startOpenLoopLoad, waitForWebdis } from '../../infra/load/open-loop.js';
import { DEFAULT_HOSTS, startLocalStack, type LocalStack } from '../../infra/local-stack.js';
import type { PodmanHost } from '../../infra/podman-host.js';
import type { WanEndpoint } from '../../infra/wan.js';
import { umsJson } from '../e2e/ums-cli.js';
import { formatRatio, ratio } from './statistics.js';

/**
 * Clients through a migration, with and without the frontman: Debian's webdis (HTTP over the redis it holds,
 * filled to `fillMiB` so the freeze lasts seconds) moved azure -> gcp at container level while loadtest
 * (infra/load/open-loop.ts) sends POSTs on a fixed schedule that does not wait for replies, retries off, a
 * 5 s client timeout, latency from each request's scheduled time. Through the frontman the clients use its
 * address; without it, the source host's published port, which is all a client has without a frontman. The
 * two ways alternate per repetition, on one stack of their own, so the machine's drift hits both alike.
 */

export type FrontmanWay = 'frontman' | 'direct';

export interface FrontmanSample {
  way: FrontmanWay;
  rep: number;
  fillMiB: number;
  rps: number;
  ok: boolean;
  error?: string;
  frozenMs: number;
  /** frontman only: from its drain to its release (what a held request waited at most), and the two hops around the freeze. */
  heldMs?: number;
  drainToFreezeMs?: number;
  restoreToReleaseMs?: number;
  totalMs: number;
  scheduled: number;
  /** Scheduled between the freeze and the restore of the same migration. */
  scheduledInFreeze: number;
  sent: number;
  failed: number;
  non2xx: number;
  acknowledged: number;
  appliedOnce: number;
  duplicates: number;
  missing: number;
  errors: Record<string, number>;
  latencyMs: { p50: number; p99: number; max: number };
}

const AZURE = 'azure-eastus-1';
const GCP = 'gcp-us-central1-1';
const FRONT_PORT = 80;
const DIRECT_HOST_PORT = 7381;
const TIMEOUT_MS = 5_000;
/** Load before the migration is asked for; the load lasts LOAD_MS, which covers a migration of a few hundred MiB here. */
const LEAD_MS = 3_000;
const LOAD_MS = 45_000;

export async function measureFrontman(options: { fillMiB: number; reps: number; rps: number; dir: string }): Promise<FrontmanSample[]> {
  const stack = await startLocalStack({
    name: `bench-frontman-${process.pid}`,
    dir: options.dir,
    hosts: DEFAULT_HOSTS,
    serverImages: true,
    frontman: { services: [{ container: 'fm-web', protocol: 'http', port: WEBDIS_PORT, listenPort: FRONT_PORT }] },
  });
  const samples: FrontmanSample[] = [];
  try {
    const azure = stack.hosts.get(AZURE);
    const gcp = stack.hosts.get(GCP);
    if (!azure || !gcp) throw new Error('the stack has no azure or gcp host');
    const client = await stack.wan.addClient('bench-users');
    for (let rep = 1; rep <= options.reps; rep++) {
      for (const way of ['frontman', 'direct'] as const) {
        samples.push(await measureOne(stack, azure, gcp, client, way, rep, options));
      }
    }
  } finally {
    await stack.stop();
  }
  return samples;
}

async function measureOne(
  stack: LocalStack,
  azure: PodmanHost,
  gcp: PodmanHost,
  client: WanEndpoint,
  way: FrontmanWay,
  rep: number,
  options: { fillMiB: number; rps: number },
): Promise<FrontmanSample> {
  const container = way === 'frontman' ? 'fm-web' : 'fm-direct';
  const hostPort = way === 'frontman' ? WEBDIS_PORT : DIRECT_HOST_PORT;
  const azureAddress = stack.info.hosts.find((h) => h.agentId === AZURE)?.wanAddress;
  const base =
    way === 'frontman' ? `http://${stack.info.frontman?.address ?? ''}:${FRONT_PORT}/` : `http://${azureAddress ?? ''}:${hostPort}/`;
  await azure.podman([
    'run',
    '-d',
    '--name',
    container,
    '-p',
    `${hostPort}:${WEBDIS_PORT}`,
    DEFAULT_WEBDIS_IMAGE,
    '--enable-debug-command',
    'local',
  ]);
  const keys = Math.round((options.fillMiB * 1024 * 1024) / 1100);
  const empty = {
    way,
    rep,
    fillMiB: options.fillMiB,
    rps: options.rps,
    frozenMs: 0,
    totalMs: 0,
    scheduled: 0,
    scheduledInFreeze: 0,
    sent: 0,
    failed: 0,
    non2xx: 0,
    acknowledged: 0,
    appliedOnce: 0,
    duplicates: 0,
    missing: 0,
    errors: {},
    latencyMs: { p50: 0, p99: 0, max: 0 },
  };
  try {
    await waitForWebdis(client, base);
    if (keys > 0) await azure.podman(['exec', container, 'redis-cli', 'DEBUG', 'POPULATE', String(keys), 'fill', '1000']);
    const list = `posts-${way}-${rep}`;
    const load = startOpenLoopLoad(client, {
      url: base,
      rps: options.rps,
      durationMs: LOAD_MS,
      timeoutMs: TIMEOUT_MS,
      list,
      runId: `${way}${rep}`,
    });
    const startedAt = await load.started;
    await sleep(LEAD_MS);
    const migrated = (
      await umsJson<{ state: string; migrationId: string; reason?: string }>(stack.info, ['migrate', container, '--to', GCP])
    ).json;
    let record = (await umsJson<MigrationRecord>(stack.info, ['status', migrated.migrationId])).json;
    const run = await load.done;
    // The frontman's release is recorded after the migration ended: read the record again once the load is over.
    record = (await umsJson<MigrationRecord>(stack.info, ['status', migrated.migrationId])).json;
    if (Date.parse(record.times.finishedAt ?? '') > startedAt + LOAD_MS)
      throw new Error(`the migration outlasted the ${LOAD_MS / 1000} s load`);
    const checkpointAt = Date.parse(record.times.checkpointStartedAt ?? '');
    const restoredAt = Date.parse(record.times.restoredAt ?? '');
    const served = await readAppliedPosts(client, way === 'frontman' ? base : gcpBase(stack, hostPort), list).catch(() => []);
    const report = exactlyOnce(run, served);
    return {
      ...empty,
      ok: migrated.state === 'done',
      ...(migrated.state === 'done' ? {} : { error: migrated.reason ?? migrated.state }),
      frozenMs: restoredAt - checkpointAt,
      ...(record.frontman?.drainedAt !== undefined && record.frontman.releasedAt !== undefined
        ? {
            heldMs: Date.parse(record.frontman.releasedAt) - Date.parse(record.frontman.drainedAt),
            drainToFreezeMs: checkpointAt - Date.parse(record.frontman.drainedAt),
            restoreToReleaseMs: Date.parse(record.frontman.releasedAt) - restoredAt,
          }
        : {}),
      totalMs: Date.parse(record.times.finishedAt ?? '') - Date.parse(record.times.requestedAt),
      scheduled: run.summary.scheduled,
      scheduledInFreeze: run.records.filter((r) => r.scheduledAt >= checkpointAt && r.scheduledAt <= restoredAt).length,
      sent: run.summary.sent,
      failed: run.summary.failed,
      non2xx: run.summary.non2xx,
      acknowledged: run.summary.acknowledged.length,
      appliedOnce: report.appliedOnce,
      duplicates: report.duplicates.length,
      missing: report.missing.length,
      errors: run.summary.errors,
      latencyMs: run.summary.latencyMs,
    };
  } catch (error) {
    return { ...empty, ok: false, error: (error as Error).message };
  } finally {
    for (const host of [azure, gcp]) await host.podman(['rm', '-f', '-i', container]).catch(() => undefined);
  }
}

const gcpBase = (stack: LocalStack, port: number): string =>
  `http://${stack.info.hosts.find((h) => h.agentId === GCP)?.wanAddress ?? ''}:${port}/`;

/** The load table: each migration with and without the frontman, latency against its own frozen time. */
export function frontmanReport(samples: readonly FrontmanSample[]): string {
  const first = samples[0];
  const out = [
    '## Clients through a migration: with and without the frontman',
    '',
    first === undefined
      ? 'No samples.'
      : `Debian's webdis filled to ${first.fillMiB} MiB, moved azure -> gcp at container level while loadtest sends ${first.rps} POSTs/s on a fixed schedule ` +
        `(open loop: it does not wait for replies; retries off; ${TIMEOUT_MS / 1000} s client timeout; latency from each request's scheduled time). ` +
        "**frontman**: clients use the frontman's address; **direct**: the source host's published port, all a client has without one. " +
        '"Applied once" counts acknowledged POSTs found exactly once in the list webdis holds after the move; "in freeze" the requests scheduled ' +
        'between the checkpoint and the restore. Latency ratios are against the frozen time of the same migration.',
    '',
    '| way | rep | frozen s | held s (drain -> freeze, restore -> release) | sent | in freeze | failed | non-2xx | applied once / acknowledged | duplicates | p50 ms | p99 ms | max ms | max / frozen |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...samples.map(
      (s) =>
        `| ${s.way} | ${s.rep} | ${(s.frozenMs / 1000).toFixed(2)} | ${held(s)} | ${s.sent}/${s.scheduled} | ${s.scheduledInFreeze} | ${s.failed}${failures(s)} | ${s.non2xx} | ` +
        `${s.appliedOnce}/${s.acknowledged} | ${s.duplicates} | ${Math.round(s.latencyMs.p50)} | ${Math.round(s.latencyMs.p99)} | ` +
        `${Math.round(s.latencyMs.max)} | ${formatRatio(ratio(s.latencyMs.max, s.frozenMs))} |${s.ok ? '' : ` migration failed: ${s.error ?? ''}`}`,
    ),
  ];
  return out.join('\n');
}

function held(s: FrontmanSample): string {
  if (s.heldMs === undefined) return '-';
  const sec = (ms: number | undefined) => ((ms ?? 0) / 1000).toFixed(2);
  return `${sec(s.heldMs)} (${sec(s.drainToFreezeMs)}, ${sec(s.restoreToReleaseMs)})`;
}

function failures(s: FrontmanSample): string {
  const kinds = Object.entries(s.errors);
  return kinds.length === 0 ? '' : ` (${kinds.map(([code, n]) => `${code} ${n}`).join(', ')})`;
}
