import { mkdir, rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { launcherControlDir, launcherRunArgs } from '../../launcher/convention.js';
import { DEFAULT_LAUNCHED_COUNTER_IMAGE, DEFAULT_LAUNCHED_MULTI_COUNTER_IMAGE } from '../../infra/images/build-service-image.js';
import { followTicks } from '../../infra/images/counter-output.js';
import type { LocalStack } from '../../infra/local-stack.js';
import { migrateWithCli, waitUntilListed, type ListedCondition, type MigrationContext } from './migration-run.js';
import type { ApproachSample, ApproachWorkload, BenchApproach } from './samples.js';
import {
  counterSeries,
  logSource,
  multiCounterSeries,
  removeWorkload,
  seriesAcross,
  startWorkload,
  type BenchHost,
  type SeriesParser,
} from './workload.js';

/**
 * A route for launched containers: each host's launcher directory holds its containers' control dirs. The
 * hosts may run either engine (the engine comparison moves between them).
 */
export interface ApproachRoute {
  source: BenchHost;
  destination: BenchHost;
  sourceLauncherDir: string;
  destinationLauncherDir: string;
}

interface LaunchedWorkload {
  image: string;
  /** counters the memory is split over */
  counters: number;
  series: SeriesParser;
}

const WORKLOADS: Record<ApproachWorkload, LaunchedWorkload> = {
  single: { image: DEFAULT_LAUNCHED_COUNTER_IMAGE, counters: 1, series: counterSeries },
  multi: { image: DEFAULT_LAUNCHED_MULTI_COUNTER_IMAGE, counters: 2, series: multiCounterSeries },
};

/** The route between two of the stack's hosts (by agent id), whichever engine each runs. */
export function approachRoute(stack: LocalStack, from: string, to: string): ApproachRoute {
  const host = (agentId: string): BenchHost => {
    const found = stack.hosts.get(agentId) ?? stack.dockerHosts.get(agentId);
    if (!found) throw new Error(`host ${agentId} is missing from the stack`);
    return found;
  };
  const launcherDir = (agentId: string): string => {
    const dir = stack.info.hosts.find((h) => h.agentId === agentId)?.launcherDir;
    if (!dir) throw new Error(`host ${agentId} has no launcher directory`);
    return dir;
  };
  return { source: host(from), destination: host(to), sourceLauncherDir: launcherDir(from), destinationLauncherDir: launcherDir(to) };
}

/** What a move that ended badly adds to the run's incidents: a failure, or a count that did not continue. */
export function approachIncident(what: string, sample: ApproachSample): string | undefined {
  if (!sample.ok) return `${what} failed: ${sample.error ?? ''}`;
  if (!sample.continuous) return `${what}: the count did not continue (${sample.broken ?? '?'})`;
  return undefined;
}

/** The planner offers service level only once the source's probe has reached the container's launcher. */
const LAUNCHER_PROBED: ListedCondition = {
  what: 'running with its launcher probed',
  test: (c) => c.state === 'running' && c.traits?.launcher?.available === true,
};

/**
 * One migration of a launched workload at a forced approach, with the real CLI: the container is started
 * as its owner would (CRIU's capabilities, no seccomp filter, the control dir bind-mounted), both
 * approaches wait for the same registration (launcher probed), the source's log is followed until the
 * container stops or goes, and joined with the destination's. Never throws for a failed migration.
 */
export async function runApproachMigration(
  context: MigrationContext,
  route: ApproachRoute,
  workload: ApproachWorkload,
  approach: BenchApproach,
  sizeMiB: number,
  rep: number,
  name = `ap-${workload}-${approach}-${sizeMiB}-${rep}`,
): Promise<ApproachSample> {
  const spec = WORKLOADS[workload];
  const controlDir = launcherControlDir(name, route.sourceLauncherDir);
  const cleanUp = async () => {
    for (const host of [route.destination, route.source]) await removeWorkload(host, name);
    // Service level makes the destination's control dir; container level restores the source's bind mount.
    for (const dir of [controlDir, launcherControlDir(name, route.destinationLauncherDir)]) await rm(dir, { recursive: true, force: true });
  };
  await cleanUp();
  let processCount: number | undefined;
  try {
    await mkdir(controlDir, { recursive: true, mode: 0o700 });
    // Docker 20.10 does not know CAP_CHECKPOINT_RESTORE: there the owner grants CAP_SYS_ADMIN in its place, as
    // the agent does for a container it starts on Docker (agents/docker-engine.ts runContainer).
    const runArgs = launcherRunArgs(controlDir).map((arg) =>
      'docker' in route.source && arg === 'CHECKPOINT_RESTORE' ? 'SYS_ADMIN' : arg,
    );
    await startWorkload(route.source, spec.image, name, Math.floor(sizeMiB / spec.counters), { runArgs, series: spec.series });
    processCount = (await waitUntilListed(context, route.source.name, name, LAUNCHER_PROBED)).traits?.processCount;
  } catch (error) {
    // A workload left behind would hold its memory through every later measurement on that host.
    await cleanUp();
    throw error;
  }
  const follower = followTicks(logSource(route.source), name, (lines) => lines.split('\n'));
  await sleep(300);
  try {
    const migration = await migrateWithCli(context, name, route.destination.name, approach);
    // A forced approach is honoured or refused, never swapped; check anyway, the comparison rests on it.
    const ok = migration.ok && migration.approach === approach;
    const error = migration.ok && !ok ? `ran at ${migration.approach ?? 'an unreported'} level, not ${approach}` : migration.error;

    await Promise.race([follower.ended, sleep(5_000)]);
    const downtime = ok ? await seriesAcross(spec.series(follower.ticks.join('\n')), route.destination, name, spec.series) : undefined;
    const { approach: _ranAt, ...measured } = migration;
    return {
      ...measured,
      workload,
      approach,
      sizeMiB,
      rep,
      source: route.source.name,
      destination: route.destination.name,
      processCount,
      ok,
      error,
      downtimeMs: downtime?.downtimeMs ?? 0,
      continuous: downtime?.continuous ?? false,
      broken: downtime?.broken,
    };
  } finally {
    follower.stop();
    await cleanUp();
  }
}
