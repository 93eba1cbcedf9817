import type { ContainerTraits } from './migration-approach.js';

/**
 * What happens to a container's storage besides its memory and root filesystem (container level), told
 * before anything is frozen (`ums plan`): volumes move, outside the freeze when they can (their files are
 * copied while the service runs and only what changed since moves frozen: agents/volumes/), in the archive
 * otherwise; bind mounts are host paths and stay where they are, so the destination must have them.
 */
export interface StoragePlan {
  volumes: Array<{ name: string; destination: string; bytes?: number }>;
  /** How the volumes move, and the predicted copy time before the freeze. */
  volumesMove: string;
  /** Host paths the container bind-mounts (not moved): the destination checks it has each before the freeze. */
  binds: Array<{ source: string; destination: string }>;
}

export function planStorage(traits: ContainerTraits, bandwidthBytesPerSecond: number): StoragePlan | undefined {
  const volumes = traits.volumes;
  if (volumes === undefined) return undefined;
  const destinations = new Set(volumes.list.map((v) => v.destination));
  const binds = (traits.security?.mounts ?? []).filter((m) => !destinations.has(m.destination));
  const total = volumes.list.reduce((sum, v) => sum + (v.bytes ?? 0), 0);
  const volumesMove =
    volumes.list.length === 0
      ? 'no volumes'
      : volumes.outsideFreeze
        ? `copied while the service runs (~${seconds((total * 1000) / bandwidthBytesPerSecond)} for ${mib(total)}), then only the files changed since move while it is frozen`
        : `in the checkpoint archive, while the service is frozen: ${volumes.reason ?? 'they cannot be copied before the freeze'}`;
  return { volumes: volumes.list, volumesMove, binds };
}

const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
