import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PodmanHost } from '../../infra/podman-host.js';

/** How often the e2e counters tick: often enough that a freeze shows in their output. */
export const TICK_MS = 100;

/**
 * Starts the counter image as `name` on `host`, holding `memoryMiB` of its own, and gives it a moment to
 * count; returns the random token it keeps in memory (its environment), which a migrated copy must still hold.
 */
export async function runCounter(host: PodmanHost, name: string, image: string, memoryMiB = 0): Promise<string> {
  const token = randomBytes(8).toString('hex');
  await host.podman([
    'run',
    '-d',
    '--name',
    name,
    '-e',
    `COUNTER_TOKEN=${token}`,
    '-e',
    `COUNTER_TICK_MS=${TICK_MS}`,
    '-e',
    `COUNTER_MEM_MIB=${memoryMiB}`,
    image,
  ]);
  await sleep(1_500);
  return token;
}
