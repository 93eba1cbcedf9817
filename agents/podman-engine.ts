import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { createLogger, type Logger } from '../core/log.js';
import type { PublishedPort } from '../core/container-network.js';
import type { ContainerSecurityProfile } from '../core/container-security.js';
import { probeCriuVersion } from './criu-command.js';
import { criuReason } from './criu-log.js';
import { enc, EngineTransport, expectJson, streamBody, toEngineError } from './engine-transport.js';
import {
  ContainerNotFoundError,
  CriuError,
  EngineError,
  type CheckpointOptions,
  type ContainerEngine,
  type ContainerState,
  type ContainerSummary,
  type EngineInfo,
  type ImageSummary,
  type PlainContainerSpec,
  type RestoredContainer,
  type RestoreOptions,
  VolumeExistsError,
  type VolumeMount,
  type VolumeSpec,
} from './container-engine.js';

/** Podman 4.x serves the libpod API under any /vX.Y.Z prefix; 4.0.0 is the oldest shape we rely on. */
const API_PREFIX = '/v4.0.0/libpod';

export interface PodmanEngineOptions {
  /** Path of Podman's API socket (`podman system service unix://PATH`). */
  socketPath: string;
  /** How this engine is named in errors, e.g. the host name. Default: the socket path. */
  where?: string;
  /**
   * The criu the host's runc uses, probed once with `--version` for info(): Podman 4.3 does not report it.
   * Default: /usr/local/sbin/criu (infra/host-setup.sh's wrapper), then criu from PATH. false: do not probe.
   */
  criuCommand?: string | false;
  /** Timeout for short requests (inspect, list, remove). Checkpoint and restore have none. Default 60 s. */
  requestTimeoutMs?: number;
  logger?: Logger;
}

/**
 * ContainerEngine over Podman's libpod REST API on its unix socket. Checkpoint archives stream through
 * without being buffered here; Podman itself stages them in a temporary file on both sides.
 */
export class PodmanEngine implements ContainerEngine {
  private readonly api: EngineTransport;
  private readonly where: string;
  private readonly criuCommand: string | false | undefined;
  private readonly log: Logger;
  private infoInFlight: Promise<EngineInfo> | undefined;

  constructor(options: PodmanEngineOptions) {
    this.where = options.where ?? `podman at ${options.socketPath}`;
    this.api = new EngineTransport({
      socketPath: options.socketPath,
      prefix: API_PREFIX,
      where: this.where,
      requestTimeoutMs: options.requestTimeoutMs ?? 60_000,
    });
    this.criuCommand = options.criuCommand;
    this.log = options.logger ?? createLogger('podman-engine', { where: this.where });
  }

  /**
   * Concurrent callers share one request: Podman's info runs several programs (about 0.5 s), and ten
   * restores preparing at once each asked for it (2.6 s apiece here, which pushed their preflight past its
   * deadline). The answer is never older than the request that made it.
   */
  info(): Promise<EngineInfo> {
    this.infoInFlight ??= this.fetchInfo().finally(() => {
      this.infoInFlight = undefined;
    });
    return this.infoInFlight;
  }

  private async fetchInfo(): Promise<EngineInfo> {
    const body = await this.api.json<LibpodInfo>('info', 'GET', '/info');
    const ociVersion = body.host?.ociRuntime?.version?.split('\n')[0]?.trim();
    const allocated = body.store?.graphRootAllocated ?? 0;
    const used = body.store?.graphRootUsed ?? 0;
    return {
      engine: 'podman',
      version: body.version?.Version ?? 'unknown',
      apiVersion: body.version?.APIVersion ?? 'unknown',
      ociRuntime: [body.host?.ociRuntime?.name, ociVersion].filter((s) => s !== undefined && s !== '').join(' ') || 'unknown',
      ...(body.host?.ociRuntime?.path ? { ociRuntimePath: body.host.ociRuntime.path } : {}),
      criuVersion: await probeCriuVersion(this.criuCommand),
      kernel: body.host?.kernel ?? 'unknown',
      freeMemoryBytes: body.host?.memFree ?? 0,
      // graphRootAllocated/Used are statfs(2) of the graph root: total minus used is the free space.
      freeDiskBytes: Math.max(0, allocated - used),
      ...(body.store?.volumePath ? { volumePath: body.store.volumePath } : {}),
      ...(body.store?.graphRoot ? { graphRoot: body.store.graphRoot } : {}),
    };
  }

  async listContainers(): Promise<ContainerSummary[]> {
    const list = await this.api.json<LibpodListContainer[]>('list containers', 'GET', '/containers/json?all=true');
    // The list has no Checkpointed flag; only a stopped container can be a kept checkpoint, so inspect those.
    const summaries = await Promise.all(
      list.map(async (c) => {
        if (c.State === 'running' || c.State === 'paused') return fromListEntry(c);
        return (await this.inspectContainer(c.Id)) ?? fromListEntry(c);
      }),
    );
    return summaries;
  }

  async inspectContainer(nameOrId: string): Promise<ContainerSummary | undefined> {
    const res = await this.api.call('inspect container', 'GET', `/containers/${enc(nameOrId)}/json`);
    if (res.status === 404) return undefined;
    const c = await expectJson<LibpodInspect>(res, 'inspect container');
    return {
      id: c.Id,
      name: c.Name,
      image: c.ImageName ?? '',
      imageId: c.Image ?? '',
      state: toState(c.State?.Status),
      checkpointed: c.State?.Checkpointed === true,
      labels: c.Config?.Labels ?? {},
      pid: c.State?.Pid ?? 0,
      startedAt: validTime(c.State?.StartedAt),
      published: portBindings(c.HostConfig?.PortBindings),
    };
  }

  /** Podman's inspect with size=true: SizeRw is the writable layer, which the checkpoint archive carries as rootfs-diff.tar. */
  async rootfsChangesBytes(nameOrId: string): Promise<number | undefined> {
    const res = await this.api.call('inspect container size', 'GET', `/containers/${enc(nameOrId)}/json?size=true`);
    if (res.status === 404) {
      res.body.resume();
      return undefined;
    }
    const size = (await expectJson<LibpodInspect>(res, 'inspect container size')).SizeRw;
    return typeof size === 'number' && Number.isSafeInteger(size) && size >= 0 ? size : undefined;
  }

  /** From Podman's inspect (see ContainerEngine.securityProfile). */
  async securityProfile(nameOrId: string): Promise<ContainerSecurityProfile | undefined> {
    const res = await this.api.call('inspect container', 'GET', `/containers/${enc(nameOrId)}/json`);
    if (res.status === 404) {
      res.body.resume();
      return undefined;
    }
    return toSecurityProfile(await expectJson<LibpodInspect>(res, 'inspect container'));
  }

  /**
   * CRIU's reason for the failure, from the log it left in the container's directory (dump.log or
   * restore.log); the engine's error itself names only runc's command line.
   */
  private async explainCriuFailure(error: EngineError, name: string, operation: 'checkpoint' | 'restore'): Promise<Error> {
    const res = await this.api.call('inspect container', 'GET', `/containers/${enc(name)}/json`).catch(() => undefined);
    if (res === undefined || res.status !== 200) {
      res?.body.resume();
      return error;
    }
    const staticDir = (await expectJson<LibpodInspect>(res, 'inspect container').catch(() => undefined))?.StaticDir;
    if (staticDir === undefined) return error;
    const reason = await criuReason(`${staticDir}/${operation === 'checkpoint' ? 'dump' : 'restore'}.log`);
    return reason === undefined ? error : new CriuError(operation, reason, { cause: error });
  }

  async listImages(): Promise<ImageSummary[]> {
    const list = await this.api.json<LibpodImage[]>('list images', 'GET', '/images/json');
    return list.map((i) => ({ id: i.Id, names: i.Names ?? i.RepoTags ?? [], sizeBytes: i.Size ?? 0 }));
  }

  async imageExists(ref: string): Promise<boolean> {
    const res = await this.api.call('image exists', 'GET', `/images/${enc(ref)}/exists`);
    if (res.status === 204 || res.status === 200) {
      res.body.resume();
      return true;
    }
    if (res.status === 404) {
      res.body.resume();
      return false;
    }
    throw await toEngineError(res, 'image exists');
  }

  /**
   * GET /images/export?format=docker-archive with the id and every name of the image as references: one image
   * (they all resolve to it), its names as the archive's RepoTags, so that a load restores them too (a
   * checkpoint's restore looks its image up by name). Podman writes the archive to a temporary file first.
   */
  async saveImage(imageId: string): Promise<Readable> {
    const inspected = await this.api.call('save image', 'GET', `/images/${enc(imageId)}/json`);
    if (inspected.status === 404) {
      inspected.body.resume();
      throw new EngineError('save image', 404, `no image ${imageId} on ${this.where}`);
    }
    const image = await expectJson<LibpodImage>(inspected, 'save image');
    const query = new URLSearchParams({ format: 'docker-archive' });
    for (const reference of [image.Id, ...(image.RepoTags ?? [])]) query.append('references', reference);
    const res = await this.api.call('save image', 'GET', `/images/export?${query}`, { timeout: false });
    if (res.status !== 200) throw await toEngineError(res, 'save image');
    return streamBody(res, 'save image');
  }

  /** POST /images/load with the docker-archive as the body; Podman spools it to a file, then loads it. */
  async loadImage(archive: Readable): Promise<void> {
    const started = Date.now();
    const res = await this.api.call('load image', 'POST', '/images/load', {
      timeout: false,
      body: archive,
      headers: { 'Content-Type': 'application/x-tar' },
    });
    const report = await expectJson<{ Names?: string[] }>(res, 'load image');
    this.log.info({ names: report.Names ?? [], ms: Date.now() - started }, 'image loaded');
  }

  /**
   * POST /containers/{name}/checkpoint?export=true&keep=true. export makes the body the archive; keep
   * leaves CRIU's images (and logs) in the container's bundle, so the container stays "exited" with
   * State.Checkpointed and a later plain POST /restore resumes it here (rollback).
   */
  async checkpoint(name: string, options: CheckpointOptions = {}): Promise<Readable> {
    const query = new URLSearchParams({ export: 'true', keep: 'true' });
    if (options.leaveRunning === true) query.set('leaveRunning', 'true');
    if (options.tcpEstablished === true) query.set('tcpEstablished', 'true');
    if (options.fileLocks === true) query.set('fileLocks', 'true');
    if (options.ignoreVolumes === true) query.set('ignoreVolumes', 'true');
    const started = Date.now();
    const res = await this.api.call('checkpoint', 'POST', `/containers/${enc(name)}/checkpoint?${query}`, { timeout: false });
    if (res.status === 404) {
      res.body.resume();
      throw new ContainerNotFoundError(name, this.where);
    }
    if (res.status !== 200) throw await this.explainCriuFailure(await toEngineError(res, 'checkpoint'), name, 'checkpoint');
    this.log.debug({ container: name, firstByteMs: Date.now() - started }, 'checkpoint archive streaming');
    return streamBody(res, 'checkpoint');
  }

  /**
   * POST /containers/{name}/restore?import=true&name={name} with the archive file as the body. Podman saves
   * the body to a temporary file before it restores; the file is streamed from disk, never held in memory.
   */
  async restoreFromArchive(name: string, archive: string | Readable, options: RestoreOptions = {}): Promise<RestoredContainer> {
    // A stream goes out chunked as it arrives: Podman spools the body to a file before it restores, so
    // that spooling overlaps whatever produces the stream (the download of the chunks).
    const size = typeof archive === 'string' ? (await stat(archive)).size : undefined;
    const query = new URLSearchParams({ import: 'true', name, printStats: 'true' });
    // Defaults to a fresh address: the source's IP/MAC may be taken, or outside the subnet, on this host.
    if (options.keepNetworkIdentity !== true) {
      query.set('ignoreStaticIP', 'true');
      query.set('ignoreStaticMAC', 'true');
    }
    if (options.tcpEstablished === true) query.set('tcpEstablished', 'true');
    if (options.fileLocks === true) query.set('fileLocks', 'true');
    if (options.ignoreVolumes === true) query.set('ignoreVolumes', 'true');
    const started = Date.now();
    const res = await this.api.call('restore', 'POST', `/containers/${enc(name)}/restore?${query}`, {
      timeout: false,
      body: typeof archive === 'string' ? createReadStream(archive) : archive,
      headers: { 'Content-Type': 'application/x-tar', ...(size !== undefined ? { 'Content-Length': String(size) } : {}) },
    });
    if (res.status !== 200) throw await this.explainCriuFailure(await toEngineError(res, 'restore'), name, 'restore');
    const report = await expectJson<LibpodRestoreReport>(res, 'restore');
    this.log.info({ container: name, archiveBytes: size, ms: Date.now() - started }, 'restored from archive');
    return { id: report.Id, name, runtimeRestoreMs: restoreMs(report) };
  }

  /** POST /containers/{name}/restore with no import: CRIU restores from the checkpoint kept in the bundle. */
  async resumeCheckpointed(name: string, options: RestoreOptions = {}): Promise<RestoredContainer> {
    const started = Date.now();
    const query = new URLSearchParams({ printStats: 'true' });
    if (options.tcpEstablished === true) query.set('tcpEstablished', 'true');
    if (options.fileLocks === true) query.set('fileLocks', 'true');
    const res = await this.api.call('resume checkpointed', 'POST', `/containers/${enc(name)}/restore?${query}`, { timeout: false });
    if (res.status === 404) {
      res.body.resume();
      throw new ContainerNotFoundError(name, this.where);
    }
    if (res.status !== 200) throw await this.explainCriuFailure(await toEngineError(res, 'resume checkpointed'), name, 'restore');
    const report = await expectJson<LibpodRestoreReport>(res, 'resume checkpointed');
    this.log.info({ container: name, ms: Date.now() - started }, 'resumed from kept checkpoint');
    return { id: report.Id, name, runtimeRestoreMs: restoreMs(report) };
  }

  /** POST /containers/{name}/start: a fresh start from the image and its filesystem (304: it runs already). */
  async startContainer(name: string): Promise<void> {
    const res = await this.api.call('start container', 'POST', `/containers/${enc(name)}/start`);
    if (res.status === 404) {
      res.body.resume();
      throw new ContainerNotFoundError(name, this.where);
    }
    if (res.status !== 204 && res.status !== 304) throw await toEngineError(res, 'start container');
    res.body.resume();
  }

  async removeContainer(name: string, options: { force?: boolean; withVolumes?: boolean } = {}): Promise<void> {
    // Read before the container goes: which volumes it mounts (v=true below removes only anonymous ones, and
    // a restored container's volumes are never anonymous: Podman recreates them by name).
    const volumes = options.withVolumes === true ? ((await this.volumesOf(name).catch(() => undefined)) ?? []).map((v) => v.name) : [];
    const query = new URLSearchParams({ force: String(options.force === true), v: 'true' });
    const res = await this.api.call('remove container', 'DELETE', `/containers/${enc(name)}?${query}`);
    if (res.status === 404) {
      res.body.resume();
      return;
    }
    if (res.status !== 200 && res.status !== 204) throw await toEngineError(res, 'remove container');
    res.body.resume();
    for (const volume of volumes) {
      const removed = await this.api.call('remove volume', 'DELETE', `/volumes/${enc(volume)}`);
      removed.body.resume();
      // 404: gone already (v=true took an anonymous one); 409: another container here uses it, so it stays.
      if (removed.status !== 204 && removed.status !== 200 && removed.status !== 404) {
        this.log.warn({ container: name, volume, status: removed.status }, 'kept a volume of the removed container');
      }
    }
  }

  /** GET /containers/{name}/json, then /volumes/{name}/json for each volume it mounts. */
  async volumesOf(nameOrId: string): Promise<VolumeMount[] | undefined> {
    const res = await this.api.call('inspect container', 'GET', `/containers/${enc(nameOrId)}/json`);
    if (res.status === 404) {
      res.body.resume();
      return undefined;
    }
    if (res.status !== 200) throw await toEngineError(res, 'inspect container');
    const inspect = await expectJson<LibpodInspect>(res, 'inspect container');
    const mounts: VolumeMount[] = [];
    for (const m of inspect.Mounts ?? []) {
      if (m.Type !== 'volume' || m.Name === undefined || m.Name === '') continue;
      const volume = await this.api.json<LibpodVolume>('inspect volume', 'GET', `/volumes/${enc(m.Name)}/json`);
      mounts.push({
        name: volume.Name,
        driver: volume.Driver ?? 'local',
        labels: volume.Labels ?? {},
        options: volume.Options ?? {},
        mountpoint: volume.Mountpoint ?? '',
        destination: m.Destination ?? '',
      });
    }
    return mounts;
  }

  /** POST /volumes/create, after a GET that finds none of that name (Podman answers 500 for an existing one). */
  async createVolume(spec: VolumeSpec): Promise<{ mountpoint: string }> {
    const existing = await this.api.call('inspect volume', 'GET', `/volumes/${enc(spec.name)}/json`);
    existing.body.resume();
    if (existing.status !== 404) throw new VolumeExistsError(spec.name, this.where);
    const res = await this.api.call(
      'create volume',
      'POST',
      '/volumes/create',
      EngineTransport.jsonBody({ Name: spec.name, Driver: spec.driver, Labels: spec.labels, Options: spec.options }),
    );
    if (res.status !== 201 && res.status !== 200) {
      const error = await toEngineError(res, 'create volume');
      throw /already exists/.test(error.detail) ? new VolumeExistsError(spec.name, this.where) : error;
    }
    const created = await expectJson<LibpodVolume>(res, 'create volume');
    return { mountpoint: created.Mountpoint ?? '' };
  }

  async removeVolume(name: string): Promise<void> {
    const res = await this.api.call('remove volume', 'DELETE', `/volumes/${enc(name)}`);
    if (res.status !== 204 && res.status !== 200 && res.status !== 404) throw await toEngineError(res, 'remove volume');
    res.body.resume();
  }

  /** POST /containers/create with a SpecGenerator, then /containers/{name}/start. */
  async runContainer(spec: PlainContainerSpec): Promise<{ id: string }> {
    const created = await this.api.call(
      'create container',
      'POST',
      '/containers/create',
      EngineTransport.jsonBody({
        name: spec.name,
        image: spec.image,
        env: spec.env ?? {},
        cap_add: spec.capAdd ?? [],
        ...(spec.seccompProfile ? { seccomp_profile_path: spec.seccompProfile } : {}),
        mounts: (spec.binds ?? []).map((b) => ({ type: 'bind', source: b.source, destination: b.destination, options: ['rbind'] })),
      }),
    );
    if (created.status !== 201) throw await toEngineError(created, 'create container');
    const { Id } = await expectJson<{ Id: string }>(created, 'create container');
    const started = await this.api.call('start container', 'POST', `/containers/${enc(spec.name)}/start`);
    if (started.status !== 204 && started.status !== 304) {
      const error = await toEngineError(started, 'start container');
      await this.removeContainer(spec.name, { force: true }).catch(() => undefined);
      throw error;
    }
    started.body.resume();
    return { id: Id };
  }
}

function toState(status: string | undefined): ContainerState {
  switch (status) {
    case 'created':
    case 'running':
    case 'paused':
    case 'exited':
    case 'stopped':
      return status;
    case 'configured':
      return 'created';
    default:
      return 'unknown';
  }
}

function validTime(value: string | undefined): string | undefined {
  if (value === undefined || value.startsWith('0001-01-01')) return undefined;
  return value;
}

/** Podman reports runtime_restore_duration in microseconds, and only with printStats=true. */
function restoreMs(report: LibpodRestoreReport): number | undefined {
  const us = report.runtime_restore_duration;
  return typeof us === 'number' && us > 0 ? us / 1000 : undefined;
}

/** Podman's inspect PortBindings: {"6379/tcp": [{"HostIp": "", "HostPort": "6379"}]}. */
function portBindings(bindings: Record<string, Array<{ HostIp?: string; HostPort?: string }> | null> | undefined): PublishedPort[] {
  const published: PublishedPort[] = [];
  for (const [key, hosts] of Object.entries(bindings ?? {})) {
    const [port, protocol = 'tcp'] = key.split('/');
    for (const host of hosts ?? []) {
      const hostPort = Number(host.HostPort);
      if (!Number.isInteger(hostPort) || hostPort <= 0 || (protocol !== 'tcp' && protocol !== 'udp' && protocol !== 'sctp')) continue;
      published.push({ hostPort, containerPort: Number(port), protocol, ...(host.HostIp ? { hostIp: host.HostIp } : {}) });
    }
  }
  return published;
}

/**
 * Podman 4.3's inspect as a security profile. A namespace mode "host" shares the host's; no user namespace
 * mode ("" or "host") means the host's user namespace. Privileged containers run without seccomp.
 */
export function toSecurityProfile(c: LibpodInspect): ContainerSecurityProfile {
  const host = c.HostConfig ?? {};
  const options = host.SecurityOpt ?? [];
  const privileged = host.Privileged === true;
  const capName = (cap: string) => (cap.toUpperCase().startsWith('CAP_') ? cap.toUpperCase() : `CAP_${cap.toUpperCase()}`);
  const hostNamespaces: ContainerSecurityProfile['hostNamespaces'] = (
    [
      ['network', host.NetworkMode],
      ['pid', host.PidMode],
      ['ipc', host.IpcMode],
      ['uts', host.UTSMode],
      ['cgroup', host.CgroupMode],
    ] as const
  ).flatMap(([type, mode]) => (mode === 'host' ? [type] : []));
  if (host.UsernsMode === undefined || host.UsernsMode === '' || host.UsernsMode === 'host') hostNamespaces.push('user');
  const ownDirs = [c.StaticDir, c.HostsPath, c.ResolvConfPath, c.HostnamePath]
    .filter((p): p is string => typeof p === 'string' && p.startsWith('/'))
    .map((p) => (p === c.StaticDir ? p : posix.dirname(p)));
  return {
    imageId: c.Image ?? '',
    privileged,
    capabilities: [...new Set([...(c.EffectiveCaps ?? []), ...(c.BoundingCaps ?? []), ...(host.CapAdd ?? [])].map(capName))].sort(),
    devices: (host.Devices ?? []).flatMap((d) => (d.PathInContainer ? [d.PathInContainer] : [])),
    mounts: (c.Mounts ?? []).flatMap((m) =>
      (m.Type === 'bind' || m.Type === 'volume') && m.Destination ? [{ source: m.Source ?? '', destination: m.Destination }] : [],
    ),
    ownDirs: [...new Set(ownDirs)],
    hostNamespaces,
    seccomp: !privileged && !options.some((o) => /^seccomp[=:]unconfined$/.test(o)),
    noNewPrivileges: options.some((o) => /^no-new-privileges(:true|=true)?$/.test(o)),
    user: c.Config?.User ?? '',
    ...(c.Config?.Annotations ? { annotations: c.Config.Annotations } : {}),
  };
}

function fromListEntry(c: LibpodListContainer): ContainerSummary {
  return {
    id: c.Id,
    name: c.Names?.[0] ?? c.Id,
    image: c.Image ?? '',
    imageId: c.ImageID ?? '',
    state: toState(c.State),
    checkpointed: false,
    labels: c.Labels ?? {},
    pid: c.Pid ?? 0,
    startedAt: c.StartedAt !== undefined && c.StartedAt > 0 ? new Date(c.StartedAt * 1000).toISOString() : undefined,
    published: (c.Ports ?? []).flatMap((p) => {
      const protocol = p.protocol ?? 'tcp';
      if (p.host_port === undefined || (protocol !== 'tcp' && protocol !== 'udp' && protocol !== 'sctp')) return [];
      // A range publishes `range` consecutive ports from host_port.
      return Array.from({ length: Math.max(1, p.range ?? 1) }, (_, i) => ({
        hostPort: p.host_port! + i,
        containerPort: (p.container_port ?? 0) + i,
        protocol,
        ...(p.host_ip ? { hostIp: p.host_ip } : {}),
      }));
    }),
  };
}

// The parts of libpod's responses this engine reads (Podman 4.3).
interface LibpodInfo {
  host?: {
    kernel?: string;
    memFree?: number;
    ociRuntime?: { name?: string; path?: string; version?: string };
  };
  store?: { graphRoot?: string; graphRootAllocated?: number; graphRootUsed?: number; volumePath?: string };
  version?: { Version?: string; APIVersion?: string };
}

interface LibpodListContainer {
  Id: string;
  Names?: string[];
  Image?: string;
  ImageID?: string;
  State?: string;
  Pid?: number;
  StartedAt?: number;
  Ports?: Array<{ host_ip?: string; container_port?: number; host_port?: number; range?: number; protocol?: string }> | null;
  Labels?: Record<string, string> | null;
}

export interface LibpodInspect {
  Id: string;
  Name: string;
  Image?: string;
  ImageName?: string;
  State?: { Status?: string; Pid?: number; StartedAt?: string; Checkpointed?: boolean };
  /** The container's own directory: CRIU's dump.log and restore.log land here. */
  StaticDir?: string;
  /** With ?size=true: bytes in the container's writable layer. */
  SizeRw?: number;
  HostsPath?: string;
  ResolvConfPath?: string;
  HostnamePath?: string;
  EffectiveCaps?: string[] | null;
  BoundingCaps?: string[] | null;
  Config?: { User?: string; Annotations?: Record<string, string>; Labels?: Record<string, string> | null };
  HostConfig?: {
    PortBindings?: Record<string, Array<{ HostIp?: string; HostPort?: string }> | null>;
    Privileged?: boolean;
    CapAdd?: string[] | null;
    Devices?: Array<{ PathOnHost?: string; PathInContainer?: string }> | null;
    NetworkMode?: string;
    PidMode?: string;
    IpcMode?: string;
    UTSMode?: string;
    UsernsMode?: string;
    CgroupMode?: string;
    SecurityOpt?: string[] | null;
  };
  Mounts?: Array<{ Type?: string; Name?: string; Source?: string; Destination?: string }>;
}

interface LibpodVolume {
  Name: string;
  Driver?: string;
  Mountpoint?: string;
  Labels?: Record<string, string> | null;
  Options?: Record<string, string> | null;
}

interface LibpodImage {
  Id: string;
  Names?: string[];
  RepoTags?: string[];
  Size?: number;
}

interface LibpodRestoreReport {
  Id: string;
  runtime_restore_duration?: number;
}
