import { setTimeout as sleep } from 'node:timers/promises';
import { readTicks, type Tick } from '../../infra/images/counter-output.js';
import { bareCheckpointRestore } from '../../infra/bare-checkpoint.js';
import type { PodmanHost } from '../../infra/podman-host.js';
import type { FloorSample } from './samples.js';
import { downtimeAcross, startWorkload } from './workload.js';

/**
 * The floor: what Podman alone costs on one host, with no transfer and no orchestration. The archive is
 * left at `archive` for the caller (its size sets the plain-transfer baseline); the container is removed.
 */
export async function measureFloor(host: PodmanHost, image: string, sizeMiB: number, rep: number, archive: string): Promise<FloorSample> {
  const name = `floor-${sizeMiB}-${rep}`;
  await host.podman(['rm', '-f', name]).catch(() => undefined);
  await startWorkload(host, image, name, sizeMiB);
  try {
    await sleep(300);
    let before: Tick[] = [];
    const pair = await bareCheckpointRestore(host, name, archive, {
      // Read from the stopped container's log, not a `logs -f` follower: a follower does not end at the
      // checkpoint (same container id) and waiting for it would land inside the gap being measured.
      afterCheckpoint: async () => {
        before = await readTicks(host.url, name);
      },
    });
    const downtime = await downtimeAcross(before, host, name);
    return { sizeMiB, rep, host: host.name, ...pair, downtimeMs: downtime.downtimeMs, continuous: downtime.continuous };
  } finally {
    await host.podman(['rm', '-f', name]).catch(() => undefined);
  }
}
