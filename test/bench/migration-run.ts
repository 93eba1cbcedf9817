import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { followTicks } from '../../infra/images/counter-output.js';
import type { PodmanHost } from '../../infra/podman-host.js';
import { sampleRss } from './process-memory.js';
import type { BenchApproach, BenchStore, MigrationOutcome, MigrationSample } from './samples.js';
import { downtimeAcross, startWorkload } from './workload.js';

/** What `ums migrate --json` prints that the benchmark reads; anything else in it is ignored. */
const MigrateOutput = z.object({
  state: z.string(),
  approach: z.string().optional(),
  reason: z.string().optional(),
  code: z.string().optional(),
  timeline: z
    .object({
      phases: z.array(z.object({ name: z.string(), ms: z.number() })),
      totalMs: z.number(),
      frozenMs: z.number(),
      archiveBytes: z.number(),
    })
    .optional(),
});

export interface MigrationRoute {
  store: BenchStore;
  source: PodmanHost;
  destination: PodmanHost;
}

export interface MigrationContext {
  cli: string;
  /** Points the CLI at the stack's broker as its CLI principal (cli/stack-info.ts cliEnv). */
  cliEnv: Record<string, string>;
  image: string;
  /** name -> pid of the processes whose RSS is sampled during the migration */
  processes: () => Map<string, number>;
  timeoutSeconds: number;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  wallMs: number;
}

export function runCli(context: MigrationContext, args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [context.cli, ...args], {
      env: { ...process.env, ...context.cliEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr, wallMs: performance.now() - t0 }));
  });
}

/**
 * One full migration through the stack with the real CLI, as a user runs it: a fresh workload on the
 * source, its ticks followed until the freeze, `ums migrate --to` the destination, then the restored
 * container's ticks read. Never throws for a failed migration: the failure is the sample.
 */
export async function runMigration(
  context: MigrationContext,
  route: MigrationRoute,
  sizeMiB: number,
  rep: number,
  workload: { name?: string; runArgs?: string[] } = {},
): Promise<MigrationSample> {
  const name = workload.name ?? `mig-${route.store}-${sizeMiB}-${rep}`;
  const base = { sizeMiB, rep, store: route.store, source: route.source.name, destination: route.destination.name };
  await route.source.podman(['rm', '-f', name]).catch(() => undefined);
  await route.destination.podman(['rm', '-f', name]).catch(() => undefined);
  try {
    await startWorkload(route.source, context.image, name, sizeMiB, workload.runArgs ? { runArgs: workload.runArgs } : {});
    await waitUntilListed(context, route.source.name, name);
  } catch (error) {
    // A workload left behind would hold its memory through every later measurement on that host.
    await route.source.podman(['rm', '-f', name]).catch(() => undefined);
    throw error;
  }
  const follower = followTicks(route.source.url, name);
  await sleep(300);
  const sampler = sampleRss(context.processes());
  const migration = await migrateWithCli(context, name, route.destination.name).finally(() => void sampler.stop());
  const rss = await sampler.stop();
  try {
    await Promise.race([follower.ended, sleep(5_000)]);
    const downtime = migration.ok ? await downtimeAcross(follower.ticks, route.destination, name) : { downtimeMs: 0, continuous: false };
    const { approach: _approach, ...measured } = migration;
    return {
      ...base,
      ...measured,
      downtimeMs: downtime.downtimeMs,
      continuous: downtime.continuous,
      rssPeakMiB: rss.peaks,
      rssSamples: rss.samples,
    };
  } finally {
    follower.stop();
    await route.destination.podman(['rm', '-f', name]).catch(() => undefined);
    await route.source.podman(['rm', '-f', name]).catch(() => undefined);
  }
}

/** What one `ums migrate --json` ended with; a failed or unreadable answer is `ok: false` with the reason. */
export type CliMigration = Pick<MigrationOutcome, 'ok' | 'error' | 'wallMs' | 'totalMs' | 'frozenMs' | 'phases' | 'archiveBytes'> & {
  /** the level it ran at, as the CLI reports it */
  approach: string | undefined;
};

/** Runs `ums migrate NAME --to DESTINATION --json` (with `--approach` if given) and reads its answer. */
export async function migrateWithCli(
  context: MigrationContext,
  name: string,
  destination: string,
  approach?: BenchApproach,
): Promise<CliMigration> {
  const cli = await runCli(context, [
    'migrate',
    name,
    '--to',
    destination,
    ...(approach === undefined ? [] : ['--approach', approach]),
    '--json',
    '--timeout',
    String(context.timeoutSeconds),
  ]);
  const parsed = MigrateOutput.safeParse(safeJson(cli.stdout));
  const output = parsed.success ? parsed.data : undefined;
  const timeline = output?.timeline;
  const ok = cli.code === 0 && output?.state === 'done';
  return {
    ok,
    error: ok
      ? undefined
      : `exit ${cli.code}, state ${output?.state ?? '?'}: ${output?.reason ?? ''} ${output?.code ?? ''} ${lastLines(cli.stderr)}`.trim(),
    approach: output?.approach,
    wallMs: cli.wallMs,
    totalMs: timeline?.totalMs ?? 0,
    frozenMs: timeline?.frozenMs ?? 0,
    phases: Object.fromEntries((timeline?.phases ?? []).map((phase) => [phase.name, phase.ms])),
    archiveBytes: timeline?.archiveBytes ?? 0,
  };
}

const ListedContainer = z.object({
  name: z.string(),
  state: z.string(),
  traits: z.object({ processCount: z.number().optional(), launcher: z.object({ available: z.boolean() }).optional() }).optional(),
});
export type ListedContainer = z.infer<typeof ListedContainer>;
const Registrations = z.array(z.object({ agentId: z.string(), containers: z.array(ListedContainer) }));

/** What waitUntilListed waits for in the container's registration. */
export interface ListedCondition {
  what: string;
  test: (container: ListedContainer) => boolean;
}

const RUNNING: ListedCondition = { what: 'running', test: (c) => c.state === 'running' };

/**
 * The planner finds the source in the agents' registrations, which a heartbeat refreshes every ~2 s: a
 * container started just before `ums migrate` is refused as not found. Wait until the source lists it
 * (by default as running), and return what it lists.
 */
export async function waitUntilListed(
  context: MigrationContext,
  agentId: string,
  container: string,
  until: ListedCondition = RUNNING,
): Promise<ListedContainer> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const answer = await runCli(context, ['agents', '--json']);
    const parsed = Registrations.safeParse(safeJson(answer.stdout));
    const agent = parsed.success ? parsed.data.find((a) => a.agentId === agentId) : undefined;
    const listed = agent?.containers.find((c) => c.name === container && until.test(c));
    if (listed) return listed;
    await sleep(250);
  }
  throw new Error(`agent ${agentId} did not list ${container} as ${until.what} within 30 s`);
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

const lastLines = (text: string): string => text.trim().split('\n').slice(-3).join(' | ');
