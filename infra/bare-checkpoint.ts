import { rm, stat } from 'node:fs/promises';
import type { PodmanHost } from './podman-host.js';

const PODMAN_TIMEOUT_MS = 600_000;

/** What the bare pair cost (the floor of the benchmark and of the demo): `podman container checkpoint --export` and `restore --import` on one host. */
export interface BarePair {
  checkpointMs: number;
  restoreMs: number;
  archiveBytes: number;
}

/**
 * The floor's own work, for any container: checkpoint `name` into `archive` (uncompressed), remove it,
 * restore it from the archive under the same name, on the same host. `afterCheckpoint` runs between the
 * checkpoint and the removal (outside both timings); `tcpEstablished` passes --tcp-established to both
 * (a server with connections inside the container needs it, as the agent's own checkpoint does).
 */
export async function bareCheckpointRestore(
  host: PodmanHost,
  name: string,
  archive: string,
  options: { tcpEstablished?: boolean; afterCheckpoint?: () => Promise<void> } = {},
): Promise<BarePair> {
  const tcp = options.tcpEstablished === true ? ['--tcp-established'] : [];
  await rm(archive, { force: true });
  let t0 = performance.now();
  await host.podman(['container', 'checkpoint', '--export', archive, '--compress', 'none', ...tcp, name], { timeoutMs: PODMAN_TIMEOUT_MS });
  const checkpointMs = performance.now() - t0;
  await options.afterCheckpoint?.();
  // restore --import refuses a name that exists; the checkpointed container still holds it.
  await host.podman(['rm', '-f', name]);
  t0 = performance.now();
  await host.podman(['container', 'restore', '--import', archive, ...tcp], { timeoutMs: PODMAN_TIMEOUT_MS });
  const restoreMs = performance.now() - t0;
  return { checkpointMs, restoreMs, archiveBytes: (await stat(archive)).size };
}
