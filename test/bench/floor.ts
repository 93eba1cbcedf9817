import { rm, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { readTicks } from '../../infra/images/counter-output.js';
import type { PodmanHost } from '../../infra/podman-host.js';
import type { FloorSample } from './samples.js';
import { downtimeAcross, startWorkload } from './workload.js';

const PODMAN_TIMEOUT_MS = 600_000;

/**
 * The floor: what Podman alone costs on one host, with no transfer and no orchestration. The archive is
 * left at `archive` for the caller (its size sets the plain-transfer baseline); the container is removed.
 */
export async function measureFloor(
  host: PodmanHost,
  image: string,
  sizeMiB: number,
  rep: number,
  archive: string,
): Promise<FloorSample> {
  const name = `floor-${sizeMiB}-${rep}`;
  await host.podman(['rm', '-f', name]).catch(() => undefined);
  await rm(archive, { force: true });
  await startWorkload(host, image, name, sizeMiB);
  try {
    await sleep(300);
    let t0 = performance.now();
    await host.podman(['container', 'checkpoint', '--export', archive, '--compress', 'none', name], { timeoutMs: PODMAN_TIMEOUT_MS });
    const checkpointMs = performance.now() - t0;
    // Read from the stopped container's log, not a `logs -f` follower: a follower does not end at the
    // checkpoint (same container id) and waiting for it would land inside the gap being measured.
    const before = await readTicks(host.url, name);
    // restore --import refuses a name that exists; the checkpointed container still holds it.
    await host.podman(['rm', '-f', name]);
    t0 = performance.now();
    await host.podman(['container', 'restore', '--import', archive], { timeoutMs: PODMAN_TIMEOUT_MS });
    const restoreMs = performance.now() - t0;
    const downtime = await downtimeAcross(before, host, name);
    return {
      sizeMiB,
      rep,
      host: host.name,
      checkpointMs,
      restoreMs,
      downtimeMs: downtime.downtimeMs,
      continuous: downtime.continuous,
      archiveBytes: (await stat(archive)).size,
    };
  } finally {
    await host.podman(['rm', '-f', name]).catch(() => undefined);
  }
}
