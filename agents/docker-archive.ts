import { z } from 'zod';
import type { ContainerSecurityProfile } from '../core/container-security.js';

/**
 * What a Docker checkpoint archive (agents/docker-engine.ts) says of the container it becomes: docker.json,
 * from the source's inspect. The destination creates the container from it, so it is read as untrusted
 * input twice: parsed against this schema (only the fields below are ever passed to Docker: anything else in
 * the file is dropped, not forwarded), and held to the source's registered security profile
 * (`dockerConfigEscalations`, called by agents/archive-policy.ts) before any of the archive reaches Docker.
 */
export const DOCKER_CONFIG = 'docker.json';

const text = z.string().max(4096);
const strings = z.array(text).max(1024).nullish();

/** The container's own settings (Docker's ContainerConfig), as create takes them. */
const ContainerConfig = z.object({
  Hostname: text.optional(),
  Domainname: text.optional(),
  User: text.optional(),
  Env: strings,
  Cmd: strings,
  Entrypoint: strings,
  WorkingDir: text.optional(),
  Labels: z.record(text, text).nullish(),
  ExposedPorts: z.record(text, z.object({})).nullish(),
  StopSignal: text.optional(),
  Tty: z.boolean().optional(),
  OpenStdin: z.boolean().optional(),
});

const PortBinding = z.object({ HostIp: text.optional(), HostPort: text.optional() });

/** The host's side (Docker's HostConfig): what the container may do and see of the host. */
const HostConfig = z.object({
  PortBindings: z.record(text, z.array(PortBinding).nullable()).nullish(),
  Binds: strings,
  Mounts: z
    .array(z.object({ Type: z.enum(['bind', 'volume', 'tmpfs']), Source: text.optional(), Target: text, ReadOnly: z.boolean().optional() }))
    .max(256)
    .nullish(),
  Tmpfs: z.record(text, text).nullish(),
  Privileged: z.boolean().optional(),
  CapAdd: strings,
  CapDrop: strings,
  Devices: z
    .array(z.object({ PathOnHost: text, PathInContainer: text, CgroupPermissions: text.optional() }))
    .max(256)
    .nullish(),
  DeviceCgroupRules: strings,
  SecurityOpt: strings,
  NetworkMode: text.optional(),
  PidMode: text.optional(),
  IpcMode: text.optional(),
  UTSMode: text.optional(),
  UsernsMode: text.optional(),
  CgroupnsMode: text.optional(),
  ReadonlyRootfs: z.boolean().optional(),
  ShmSize: z.number().int().nonnegative().optional(),
  Memory: z.number().int().nonnegative().optional(),
  NanoCpus: z.number().int().nonnegative().optional(),
  RestartPolicy: z.object({ Name: text.optional(), MaximumRetryCount: z.number().int().nonnegative().optional() }).optional(),
});

export const DockerArchiveConfig = z.object({
  format: z.literal(1),
  /** The image id, bare hex: the destination restores only onto that very image. */
  imageId: z.string().regex(/^[0-9a-f]{64}$/),
  /** The image reference the container was created from (name:tag), as Docker shows it. */
  image: text,
  config: ContainerConfig,
  hostConfig: HostConfig,
});
export type DockerArchiveConfig = z.infer<typeof DockerArchiveConfig>;

/**
 * The body of POST /containers/create that recreates the container from the parsed fields only: the image
 * by its name when the caller found that name here to be the very image id, by the id otherwise.
 */
export function dockerCreateBody(archived: DockerArchiveConfig, byName: boolean): Record<string, unknown> {
  return { ...archived.config, Image: byName ? archived.image : `sha256:${archived.imageId}`, HostConfig: archived.hostConfig };
}

/** Where the container mounts named volumes (HostConfig.Mounts of type volume, and Binds of a name rather than a path). */
export function volumeDestinations(archived: DockerArchiveConfig): string[] {
  const host = archived.hostConfig;
  return [
    ...(host.Mounts ?? []).flatMap((m) => (m.Type === 'volume' ? [m.Target] : [])),
    ...(host.Binds ?? []).flatMap((bind) => {
      const [source = '', destination = ''] = bind.split(':');
      return source.startsWith('/') ? [] : [destination];
    }),
  ];
}

/** Namespace modes that reach outside the container: the host's, or another container's. */
const NAMESPACE_MODES = [
  ['network', 'NetworkMode'],
  ['pid', 'PidMode'],
  ['ipc', 'IpcMode'],
  ['uts', 'UTSMode'],
  ['cgroup', 'CgroupnsMode'],
] as const;

/**
 * Everything docker.json asks for beyond `profile`, one sentence each (empty: nothing more). The same rules
 * as a Podman archive's (agents/archive-policy.ts), read from Docker's names for them.
 */
export function dockerConfigEscalations(archived: DockerArchiveConfig, profile: ContainerSecurityProfile, imageId: string): string[] {
  const found: string[] = [];
  const host = archived.hostConfig;
  const privileged = profile.privileged;
  for (const expected of new Set([profile.imageId, imageId])) {
    if (archived.imageId !== expected) found.push(`it runs image ${archived.imageId.slice(0, 12)}, registered ${expected.slice(0, 12)}`);
  }
  if (host.Privileged === true && !privileged) found.push('it asks for a privileged container (registered unprivileged)');
  if (!privileged) {
    const capName = (cap: string) => (cap.toUpperCase().startsWith('CAP_') ? cap.toUpperCase() : `CAP_${cap.toUpperCase()}`);
    const allowed = new Set(profile.capabilities);
    const extra = (host.CapAdd ?? []).map(capName).filter((cap) => !allowed.has(cap));
    if (extra.length > 0) found.push(`it adds capabilities beyond the registered set: ${[...new Set(extra)].sort().join(', ')}`);
    for (const device of host.Devices ?? [])
      if (!profile.devices.includes(device.PathInContainer)) found.push(`it adds the device ${device.PathInContainer}`);
    if ((host.DeviceCgroupRules ?? []).length > 0)
      found.push(`it allows access to devices (cgroup rules ${(host.DeviceCgroupRules ?? []).join(', ')})`);
  }
  const registered = (source: string, destination: string) =>
    profile.mounts.some((m) => m.source === source && m.destination === destination);
  for (const bind of host.Binds ?? []) {
    const [source = '', destination = ''] = bind.split(':');
    // A bind of a name, not a path, is a named volume: checked by where it is mounted.
    const isVolume = !source.startsWith('/');
    if (isVolume ? !profile.mounts.some((m) => m.destination === destination) : !registered(source, destination))
      found.push(`it mounts ${source || '(none)'} at ${destination} (not registered)`);
  }
  for (const mount of host.Mounts ?? []) {
    if (mount.Type === 'tmpfs') continue;
    const ok =
      mount.Type === 'volume' ? profile.mounts.some((m) => m.destination === mount.Target) : registered(mount.Source ?? '', mount.Target);
    if (!ok) found.push(`it mounts the ${mount.Type} ${mount.Source ?? '(none)'} at ${mount.Target} (not registered)`);
  }
  for (const [type, key] of NAMESPACE_MODES) {
    const mode = host[key] ?? '';
    if (mode === 'host' && !profile.hostNamespaces.includes(type))
      found.push(`it shares the host's ${type} namespace (registered with its own)`);
    if (mode.startsWith('container:')) found.push(`it joins another container's ${type} namespace (${mode})`);
  }
  const usernsOwn = host.UsernsMode !== undefined && host.UsernsMode !== '' && host.UsernsMode !== 'host';
  if (!usernsOwn && !profile.hostNamespaces.includes('user')) found.push("it shares the host's user namespace (registered with its own)");
  const options = host.SecurityOpt ?? [];
  if (profile.seccomp && options.some((o) => /^seccomp[=:]unconfined$/.test(o)))
    found.push('it runs without a seccomp filter (registered with one)');
  if (profile.noNewPrivileges && !options.some((o) => /^no-new-privileges(:true|=true)?$/.test(o)))
    found.push('it drops no_new_privs (registered with it)');
  if (options.some((o) => /^(apparmor|label)[=:]/.test(o) && /unconfined|disable/.test(o)))
    found.push(`it lifts a security label (${options.join(', ')})`);
  const user = archived.config.User ?? '';
  if (user !== profile.user) found.push(`it runs as user "${user}", registered as "${profile.user}"`);
  return found;
}
