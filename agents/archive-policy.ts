import { posix } from 'node:path';
import type { CommandData } from '../core/events.js';
import { baselineProfile, type ContainerSecurityProfile } from '../core/container-security.js';
import { RestoreRefusedError } from './restore-job.js';
import { TarEntryReader, TarFormatError } from './tar-entries.js';
import { CheckpointSectionError, CheckpointSectionParser } from './checkpoint-section.js';
import { DOCKER_CONFIG, DockerArchiveConfig, dockerConfigEscalations } from './docker-archive.js';

/**
 * The destination's policy on a container-level checkpoint archive: the container it would become, as a
 * Podman export's config.dump (libpod's container config) and spec.dump (the OCI spec runc is given) say,
 * or a Docker archive's docker.json (agents/docker-archive.ts), may ask for nothing the source registered
 * it without. The agent restores as root whatever archive
 * arrives, and an altered archive is arbitrary code (CRIU's security notes): this keeps such code inside
 * the container the source really ran. The archive is read as it streams in (ArchivePolicyCheck) and
 * refused before its last chunk reaches the engine, so nothing is restored from it.
 */

export const CONFIG_DUMP = 'config.dump';
export const SPEC_DUMP = 'spec.dump';
/** config.dump and spec.dump are tens of KiB; more is not a Podman export. */
const MAX_METADATA_BYTES = 4 * 1024 * 1024;

/** Namespaces a container may have of its own (the OCI names). */
const NAMESPACES = ['network', 'pid', 'ipc', 'uts', 'user', 'cgroup', 'mount'] as const;

/** Where Podman bind-mounts its own files of the container, from the container's userdata directory. */
const PODMAN_FILES: Readonly<Record<string, readonly string[]>> = {
  '/etc/hosts': ['hosts'],
  '/etc/hostname': ['hostname'],
  '/etc/resolv.conf': ['resolv.conf'],
  '/run/.containerenv': ['.containerenv'],
  '/dev/shm': ['shm'],
  '/run/secrets': ['secrets', 'run/secrets'],
  '/etc/passwd': ['passwd'],
  '/etc/group': ['group'],
};

/** Kernel filesystems an unprivileged container gets (sysfs and cgroup read-only). */
const KERNEL_MOUNTS = new Set(['proc', 'tmpfs', 'devpts', 'mqueue', 'sysfs', 'cgroup', 'cgroup2']);
const READ_ONLY_UNLESS_PRIVILEGED = new Set(['sysfs', 'cgroup', 'cgroup2']);

/**
 * Everything in the archive's container config that goes beyond `profile`, one sentence each (empty:
 * the archive asks for nothing more). `config` and `spec` are the parsed config.dump and spec.dump.
 */
export function archiveEscalations(config: unknown, spec: unknown, profile: ContainerSecurityProfile, imageId: string): string[] {
  const found: string[] = [];
  const c = asObject(config);
  const s = asObject(spec);
  const process = asObject(s.process);
  const linux = asObject(s.linux);
  const privileged = profile.privileged;

  // The container itself.
  if (c.privileged === true && !privileged) found.push('it asks for a privileged container (registered unprivileged)');
  if (c.mountAllDevices === true && !privileged) found.push('it asks for every host device (registered unprivileged)');
  const archiveImage = typeof c.rootfsImageID === 'string' ? c.rootfsImageID : '';
  for (const expected of new Set([profile.imageId, imageId])) {
    if (archiveImage !== expected) found.push(`it runs image ${short(archiveImage) || '(none)'}, registered ${short(expected)}`);
  }
  if (typeof c.rootfs === 'string' && c.rootfs !== '') found.push(`it runs on a host directory as its root filesystem (${c.rootfs})`);
  for (const [key, value] of Object.entries(c)) {
    if (/NsCtr$/.test(key) && typeof value === 'string' && value !== '')
      found.push(`it joins another container's namespace (${key} ${short(value)})`);
  }

  // Capabilities: every set the processes could hold.
  if (!privileged) {
    const caps = asObject(process.capabilities);
    const held = new Set<string>();
    for (const set of ['bounding', 'effective', 'permitted', 'inheritable', 'ambient']) for (const cap of strings(caps[set])) held.add(cap);
    const allowed = new Set(profile.capabilities);
    const extra = [...held].filter((cap) => !allowed.has(cap)).sort();
    if (extra.length > 0) found.push(`it adds capabilities beyond the registered set: ${extra.join(', ')}`);
  }

  // Devices: device nodes, and cgroup rules allowing access.
  if (!privileged) {
    const registered = new Set(profile.devices);
    for (const device of objects(linux.devices)) {
      const path = typeof device.path === 'string' ? device.path : '?';
      if (!registered.has(path)) found.push(`it adds the device ${path}`);
    }
    for (const rule of objects(asObject(linux.resources).devices)) {
      if (rule.allow !== true) continue;
      const wildcard =
        rule.major === undefined || rule.major === null || rule.minor === undefined || rule.minor === null || rule.type === 'a';
      if (wildcard || profile.devices.length === 0) {
        found.push(
          `it allows access to devices (cgroup rule ${JSON.stringify(rule)}), registered ${profile.devices.length === 0 ? 'with none' : 'with specific ones'}`,
        );
      }
    }
  }

  // Mounts: host paths only where registered (or Podman's own files of the container).
  for (const mount of objects(s.mounts)) {
    const type = typeof mount.type === 'string' ? mount.type : '';
    const source = typeof mount.source === 'string' ? mount.source : '';
    const destination = typeof mount.destination === 'string' ? mount.destination : '';
    const options = strings(mount.options);
    if (type === 'bind' || options.includes('bind') || options.includes('rbind')) {
      if (profile.mounts.some((m) => m.source === source && m.destination === destination)) continue;
      if (isPodmanFile(source, destination, profile.ownDirs)) continue;
      found.push(`it bind-mounts the host path ${source || '(none)'} at ${destination} (not registered)`);
    } else if (!KERNEL_MOUNTS.has(type)) {
      found.push(`it mounts ${source || '(none)'} (${type || 'no type'}) at ${destination}`);
    } else if (READ_ONLY_UNLESS_PRIVILEGED.has(type) && !privileged && !options.includes('ro')) {
      found.push(`it mounts ${type} writable at ${destination} (registered unprivileged)`);
    }
  }

  // Namespaces: the host's only where the source shared them; never one joined by path but Podman's netns.
  const own = new Set<string>();
  for (const ns of objects(linux.namespaces)) {
    const type = typeof ns.type === 'string' ? ns.type : '?';
    const path = typeof ns.path === 'string' ? ns.path : '';
    if (path === '' || (type === 'network' && /^\/run\/netns\/[A-Za-z0-9._-]+$/.test(path))) own.add(type);
    else found.push(`it joins the ${type} namespace at ${path}`);
  }
  const hostShared = new Set<string>(profile.hostNamespaces);
  for (const type of NAMESPACES) {
    if (!own.has(type) && !hostShared.has(type)) found.push(`it shares the host's ${type} namespace (registered with its own)`);
  }
  if (c.createNetNS === false && !hostShared.has('network') && !found.some((f) => f.includes('network namespace'))) {
    found.push('it creates no network namespace of its own (registered with one)');
  }

  // Seccomp, no_new_privs, hooks, user.
  const seccomp = asObject(linux.seccomp);
  const confined =
    linux.seccomp !== undefined && linux.seccomp !== null && !['SCMP_ACT_ALLOW', 'SCMP_ACT_LOG'].includes(String(seccomp.defaultAction));
  if (profile.seccomp && !confined) found.push('it runs without a seccomp filter (registered with one)');
  if (profile.noNewPrivileges && process.noNewPrivileges !== true) found.push('it drops no_new_privs (registered with it)');
  for (const [stage, hooks] of Object.entries(asObject(s.hooks))) {
    if (Array.isArray(hooks) && hooks.length > 0) found.push(`it carries OCI ${stage} hooks, which would run on this host`);
  }
  const uid = asObject(process.user).uid;
  const user = profile.user;
  if (/^\d+(:\d+)?$/.test(user)) {
    if (uid !== Number(user.split(':')[0])) found.push(`it runs as uid ${String(uid)}, registered as ${user}`);
  } else if (user !== '' && user !== 'root' && !user.startsWith('root:') && uid === 0) {
    found.push(`it runs as root, registered as user ${user}`);
  }

  // Annotations (the engine reads some, e.g. io.podman.annotations.privileged).
  if (profile.annotations !== undefined) {
    for (const [key, value] of Object.entries(asObject(s.annotations))) {
      if (profile.annotations[key] !== value) found.push(`it sets the annotation ${key}=${String(value)} (not registered)`);
    }
  }
  return found;
}

/** Podman's own file of the container (hosts, resolv.conf, ...), from a userdata directory of the container's. */
function isPodmanFile(source: string, destination: string, ownDirs: readonly string[]): boolean {
  const names = PODMAN_FILES[destination];
  if (names === undefined || !source.startsWith('/') || posix.normalize(source) !== source) return false;
  if (!names.some((name) => source.endsWith(`/userdata/${name}`))) return false;
  return ownDirs.length === 0
    ? /\/overlay-containers\/[0-9a-f]{64}\/userdata\//.test(source)
    : ownDirs.some((dir) => source.startsWith(`${dir}/`));
}

/**
 * Reads the archive as the restore job feeds it (restore-job.ts, `inspectArchive`) and throws a
 * RestoreRefusedError as soon as config.dump and spec.dump show an escalation, or at the end (before
 * the last chunk goes to the engine) when they are missing, repeated, not regular files, unparseable, or
 * the archive is not a plain tar ending where it should.
 */
export class ArchivePolicyCheck {
  private readonly section = new CheckpointSectionParser();
  private readonly reader = new TarEntryReader(new Set([CONFIG_DUMP, SPEC_DUMP, DOCKER_CONFIG]), MAX_METADATA_BYTES);
  private checked = false;
  private readonly profile: ContainerSecurityProfile;

  constructor(
    profile: ContainerSecurityProfile | undefined,
    private readonly imageId: string,
    private readonly where: string,
  ) {
    this.profile = profile ?? baselineProfile(imageId);
  }

  /**
   * One piece of the stream, in order; `last`: nothing follows it. A volume section before the export
   * (agents/checkpoint-section.ts) must be well-formed, and each volume one the container mounts.
   */
  write(chunk: Buffer, last: boolean): void {
    try {
      for (const event of this.section.write(chunk)) {
        if (event.kind === 'export') this.reader.write(event.bytes);
        else if (event.kind === 'volume' && !this.profile.mounts.some((m) => m.destination === event.volume.destination))
          throw this.refuse(
            `it fills a volume "${event.volume.name}" at ${event.volume.destination}, where the registered container mounts none`,
          );
      }
      if (last) {
        this.section.end();
        this.reader.end();
      }
    } catch (error) {
      if (error instanceof TarFormatError) throw this.refuse(`it is not a checkpoint archive: ${error.message}`);
      if (error instanceof CheckpointSectionError) throw this.refuse(error.message);
      throw error;
    }
    const { bodies } = this.reader;
    if (bodies.has(DOCKER_CONFIG) && (bodies.has(CONFIG_DUMP) || bodies.has(SPEC_DUMP)))
      throw this.refuse(`it holds both a Podman export's metadata and a Docker archive's ${DOCKER_CONFIG}`);
    if (!this.checked && bodies.has(CONFIG_DUMP) && bodies.has(SPEC_DUMP)) {
      this.checked = true;
      this.compare();
    }
    if (!this.checked && bodies.has(DOCKER_CONFIG)) {
      this.checked = true;
      this.compareDocker();
    }
    // An untar keeps the last of a repeated name: a second copy after the checked one would be restored.
    for (const name of [CONFIG_DUMP, SPEC_DUMP, DOCKER_CONFIG]) {
      const copies = this.reader.entries.filter((e) => e.name === name);
      if (copies.length > 1) throw this.refuse(`it holds ${name} ${copies.length} times (it must be one regular file)`);
      if (copies[0] !== undefined && copies[0].type !== '0')
        throw this.refuse(`its ${name} is not a regular file (tar type ${copies[0].type})`);
    }
    if (last) {
      if (!this.checked)
        throw this.refuse(
          `it lacks ${[CONFIG_DUMP, SPEC_DUMP].filter((n) => !bodies.has(n)).join(' and ')} (a Podman export) or ${DOCKER_CONFIG} (a Docker archive)`,
        );
      if (!this.reader.complete) throw this.refuse('it does not end with the end-of-archive marker');
    }
  }

  private parse(name: string): unknown {
    try {
      return JSON.parse(this.reader.bodies.get(name)!.toString('utf8'));
    } catch (error) {
      throw this.refuse(`its ${name} does not parse: ${(error as Error).message}`);
    }
  }

  private compare(): void {
    const escalations = archiveEscalations(this.parse(CONFIG_DUMP), this.parse(SPEC_DUMP), this.profile, this.imageId);
    if (escalations.length > 0) throw this.refuse(escalations.join('; '));
  }

  /** The Docker engine creates the container from docker.json's fields alone: they are what is checked. */
  private compareDocker(): void {
    const parsed = DockerArchiveConfig.safeParse(this.parse(DOCKER_CONFIG));
    if (!parsed.success)
      throw this.refuse(`its ${DOCKER_CONFIG} is not a container Docker would be given: ${parsed.error.issues[0]?.message ?? ''}`);
    const escalations = dockerConfigEscalations(parsed.data, this.profile, this.imageId);
    if (escalations.length > 0) throw this.refuse(escalations.join('; '));
  }

  private refuse(why: string): RestoreRefusedError {
    return new RestoreRefusedError(
      'archive-refused',
      `the checkpoint archive was refused on ${this.where} before anything was restored: ${why}`,
    );
  }
}

/** The restore job's `inspectArchive` for a prepare command: the source's profile, or the baseline without one. */
export function archivePolicy(prepare: CommandData<'prepare'>, where: string): (chunk: Buffer, last: boolean) => void {
  const check = new ArchivePolicyCheck(prepare.requirements?.profile, prepare.imageId, where);
  return (chunk, last) => check.write(chunk, last);
}

function asObject(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

function objects(value: unknown): Array<Record<string, unknown>> {
  return Array.isArray(value) ? value.map(asObject) : [];
}

function strings(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

function short(id: string): string {
  return /^[0-9a-f]{64}$/.test(id) ? id.slice(0, 12) : id;
}
