import { z } from 'zod';

/**
 * What a container was allowed on its source host, read from the engine's inspect there (Podman:
 * HostConfig, EffectiveCaps/BoundingCaps, Mounts, Config.User and Annotations) and reported in its
 * registration traits. The planner copies it into the prepare command; the destination refuses a
 * checkpoint archive whose container config (config.dump, spec.dump) asks for more than this
 * (agents/archive-policy.ts): an altered archive must not become a privileged container there.
 */
export const ContainerSecurityProfile = z.object({
  /** The image the container runs (the id, as the archive's config.dump names it in rootfsImageID). */
  imageId: z.string().min(1).max(200),
  privileged: z.boolean(),
  /** Every capability the container's processes may hold (bounding and effective sets), "CAP_" names. */
  capabilities: z.array(z.string().regex(/^CAP_[A-Z_]+$/)).max(64),
  /** Host devices given to the container: the path inside it. */
  devices: z.array(z.string().min(1).max(4096)).max(256),
  /** Bind mounts and volumes: host source and container destination. */
  mounts: z.array(z.object({ source: z.string().max(4096), destination: z.string().min(1).max(4096) })).max(256),
  /**
   * The container's own directories on the source host (Podman's userdata in its run root and graph
   * root): Podman's own files (/etc/hosts, /etc/resolv.conf, /etc/hostname, /run/.containerenv, /dev/shm)
   * are bind-mounted from there.
   */
  ownDirs: z.array(z.string().min(1).max(4096)).max(8),
  /** Namespaces shared with the host instead of its own: network, pid, ipc, uts, user, cgroup. */
  hostNamespaces: z.array(z.enum(['network', 'pid', 'ipc', 'uts', 'user', 'cgroup', 'mount'])).max(7),
  /** Whether a seccomp filter confines the container (false: seccomp=unconfined). */
  seccomp: z.boolean(),
  noNewPrivileges: z.boolean(),
  /** The user it runs as (Config.User: "" means the image's, "name", "uid" or "uid:gid"). */
  user: z.string().max(256),
  annotations: z.record(z.string(), z.string()).optional(),
});
export type ContainerSecurityProfile = z.infer<typeof ContainerSecurityProfile>;

/** A container created with no options: what the destination expects when the source reported no profile. */
export function baselineProfile(imageId: string): ContainerSecurityProfile {
  return {
    imageId,
    privileged: false,
    capabilities: [...PODMAN_DEFAULT_CAPABILITIES],
    devices: [],
    mounts: [],
    ownDirs: [],
    hostNamespaces: ['user', 'cgroup'],
    seccomp: true,
    noNewPrivileges: false,
    user: '',
  };
}

/** Podman 4.3's default capability set (containers.conf default_capabilities). */
export const PODMAN_DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_AUDIT_WRITE',
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_KILL',
  'CAP_MKNOD',
  'CAP_NET_BIND_SERVICE',
  'CAP_NET_RAW',
  'CAP_SETFCAP',
  'CAP_SETGID',
  'CAP_SETPCAP',
  'CAP_SETUID',
  'CAP_SYS_CHROOT',
];
