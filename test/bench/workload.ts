import { setTimeout as sleep } from 'node:timers/promises';
import { continuity, joinTicks, readTicks, type Tick } from '../../infra/images/counter-output.js';
import type { PodmanHost } from '../../infra/podman-host.js';

/**
 * The benchmark's workload: the counter image holding N MiB of random (incompressible) memory and printing
 * `count=N t=MS` every TICK_MS. The longest gap between consecutive ticks is the downtime.
 */
export const TICK_MS = 10;

/** Starts the counter and returns once it prints: the memory is filled before the first tick. */
export async function startWorkload(host: PodmanHost, image: string, name: string, sizeMiB: number): Promise<void> {
  await host.podman(['run', '-d', '--name', name, '-e', `COUNTER_MEM_MIB=${sizeMiB}`, '-e', `COUNTER_TICK_MS=${TICK_MS}`, image]);
  // Filling 1 GiB with random words takes a few seconds on a cold VM; memory faulted in slowly can take more.
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if ((await readTicks(host.url, name)).length >= 20) return;
    await sleep(200);
  }
  throw new Error(`${name} on ${host.name} printed no ticks within 120 s`);
}

export interface Downtime {
  downtimeMs: number;
  continuous: boolean;
  ticks: number;
}

/**
 * Joins the ticks printed before the freeze with what the restored container printed, and measures the
 * gap. The restored container's log repeats the source's lines (the archive carries the log); joinTicks
 * drops them.
 */
export async function downtimeAcross(before: Tick[], after: PodmanHost, name: string): Promise<Downtime> {
  // Let the restored process tick a few times so the first tick after the gap is certainly in its log.
  await sleep(300);
  let restored: Tick[] = [];
  const deadline = Date.now() + 10_000;
  const last = before.at(-1)?.count ?? 0;
  while (Date.now() < deadline) {
    restored = await readTicks(after.url, name);
    if (restored.some((tick) => tick.count > last)) break;
    await sleep(200);
  }
  const joined = joinTicks(before, restored);
  const check = continuity(joined);
  return { downtimeMs: check.maxGapMs, continuous: check.continuous && restored.some((t) => t.count > last), ticks: joined.length };
}
