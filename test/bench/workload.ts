import { setTimeout as sleep } from 'node:timers/promises';
import {
  continuity,
  joinTicks,
  parseLabelledTicks,
  parseTicks,
  type LabelledTick,
  type LogSource,
  type Tick,
} from '../../infra/images/counter-output.js';
import type { DockerHost } from '../../infra/docker-host.js';
import type { PodmanHost } from '../../infra/podman-host.js';

/**
 * The benchmark's workload: the counter image holding N MiB of random (incompressible) memory and printing
 * `count=N t=MS` every TICK_MS. The longest gap between consecutive ticks is the downtime.
 */
export const TICK_MS = 10;

/**
 * A workload's log read as named tick series. The first series is the one whose longest gap is the
 * downtime; every series must continue across a move (a count that starts over is a lost process).
 */
export type TickSeries = Record<string, Tick[]>;
export type SeriesParser = (output: string) => TickSeries;

/** The counter: one series. */
export const counterSeries: SeriesParser = (output) => ({ count: parseTicks(output) });

/** A labelling shell's own line count, as a series of its own (`count` is the line number). */
const linesOf = (ticks: LabelledTick[]): Tick[] => ticks.map((tick) => ({ count: tick.lines, t: tick.t }));

/**
 * The multi-counter (infra/images/counter/multi-counter.sh): each counter's ticks and each labelling
 * shell's line count, 'a' first (the downtime is read from counter a).
 */
export const multiCounterSeries: SeriesParser = (output) => {
  const labelled = parseLabelledTicks(output);
  const a = labelled.a ?? [];
  const b = labelled.b ?? [];
  return { a, b, 'a lines': linesOf(a), 'b lines': linesOf(b) };
};

/** A simulated host of either engine: the workload's commands (run, logs, rm) read the same to podman and docker. */
export type BenchHost = PodmanHost | DockerHost;

/** Runs the host's own CLI (`podman --url`, or Debian's `docker -H`) with `args`. */
export const engineCli = (host: BenchHost, args: string[]): Promise<{ stdout: string; stderr: string }> =>
  'docker' in host ? host.docker(args) : host.podman(args);

/** Where followTicks reads the host's container logs. */
export const logSource = (host: BenchHost): LogSource => ('docker' in host ? { docker: host.url } : host.url);

/** Removes a container at once, if there is one: docker's `rm -f` kills without a grace period, podman's needs `-t 0`. */
export async function removeWorkload(host: BenchHost, name: string): Promise<void> {
  await engineCli(host, ['rm', '-f', ...('docker' in host ? [] : ['-t', '0']), name]).catch(() => undefined);
}

export interface WorkloadOptions {
  /** `podman run` / `docker run` options before the image (capabilities, mounts); default none */
  runArgs?: string[];
  /** how its log reads; default the counter's */
  series?: SeriesParser;
}

const readLog = async (host: BenchHost, name: string): Promise<string> => (await engineCli(host, ['logs', name])).stdout;

/**
 * Starts a counter workload whose counters each hold `sizeMiB` and returns once its first series has 20
 * ticks: the memory is filled before the first tick.
 */
export async function startWorkload(
  host: BenchHost,
  image: string,
  name: string,
  sizeMiB: number,
  options: WorkloadOptions = {},
): Promise<void> {
  const series = options.series ?? counterSeries;
  await engineCli(host, [
    'run',
    '-d',
    '--name',
    name,
    ...(options.runArgs ?? []),
    '-e',
    `COUNTER_MEM_MIB=${sizeMiB}`,
    '-e',
    `COUNTER_TICK_MS=${TICK_MS}`,
    image,
  ]);
  // Filling 1 GiB with random words takes a few seconds on a cold VM; memory faulted in slowly can take more.
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if ((Object.values(series(await readLog(host, name)))[0] ?? []).length >= 20) return;
    await sleep(200);
  }
  throw new Error(`${name} on ${host.name} printed no ticks within 120 s`);
}

export interface Downtime {
  downtimeMs: number;
  continuous: boolean;
  ticks: number;
  /** the first series that did not continue, or did not go on at the destination */
  broken?: string;
}

/**
 * Joins the ticks printed before the freeze with what the restored container printed, and measures the
 * gap. The restored container's log repeats the source's lines (the archive carries the log); joinTicks
 * drops them.
 */
export function downtimeAcross(before: Tick[], after: BenchHost, name: string): Promise<Downtime> {
  return seriesAcross({ count: before }, after, name, counterSeries);
}

/**
 * downtimeAcross for every series of a workload: the downtime is the first series' longest gap, and the
 * move is continuous only if every series continues and goes on at the destination. A container restored
 * at service level is a fresh container: its log holds only what the restored processes printed.
 */
export async function seriesAcross(before: TickSeries, after: BenchHost, name: string, parse: SeriesParser): Promise<Downtime> {
  // Let the restored process tick a few times so the first tick after the gap is certainly in its log.
  await sleep(300);
  const names = Object.keys(before);
  const lastBefore = (series: string) => before[series]?.at(-1)?.count ?? 0;
  let restored: TickSeries = {};
  const wentOn = (series: string) => (restored[series] ?? []).some((tick) => tick.count > lastBefore(series));
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    restored = parse(await readLog(after, name));
    if (names.every(wentOn)) break;
    await sleep(200);
  }
  let downtimeMs = 0;
  let ticks = 0;
  let broken: string | undefined;
  for (const [index, series] of names.entries()) {
    const joined = joinTicks(before[series] ?? [], restored[series] ?? []);
    const check = continuity(joined);
    if (index === 0) {
      downtimeMs = check.maxGapMs;
      ticks = joined.length;
    }
    if (broken === undefined && !(check.continuous && wentOn(series))) broken = series;
  }
  return { downtimeMs, continuous: broken === undefined, ticks, ...(broken === undefined ? {} : { broken }) };
}
