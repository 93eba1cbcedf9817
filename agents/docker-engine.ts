import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import { lstat, mkdir, mkdtemp, readFile, rename, rm, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { PODMAN_DEFAULT_CAPABILITIES, type ContainerSecurityProfile } from '../core/container-security.js';
import type { PublishedPort } from '../core/container-network.js';
import { createLogger, type Logger } from '../core/log.js';
import { probeCriuVersion } from './criu-command.js';
import { criuReason } from './criu-log.js';
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
import { discard, enc, EngineTransport, expectJson, readBody, streamBody, toEngineError } from './engine-transport.js';
import { DOCKER_CONFIG, DockerArchiveConfig, dockerCreateBody, volumeDestinations } from './docker-archive.js';

/** Docker 20.10 serves API 1.41; every route used here exists there. */
const API_PREFIX = '/v1.41';

/**
 * The name of the checkpoint Docker keeps in the container's directory: the archive's CRIU images are that
 * directory, under the same name Podman's export uses for them.
 */
const CHECKPOINT = 'checkpoint';
const ROOTFS_DIFF = 'rootfs-diff.tar';
/** The writable layer as overlayfs keeps it: owners by number, and xattrs (opaque directories). Whiteouts are device nodes. */
const LAYER_TAR = ['--numeric-owner', '--xattrs', '--xattrs-include=*'];
/**
 * Where archives are made and unpacked: in the data root (on the disk Docker's checkpoints are on, so a
 * restore's images are renamed into place, not copied), never in /tmp (they hold process memory). What a
 * killed agent left there is removed when this engine first finds its data root.
 */
const STAGING = 'ums-staging';

export interface DockerEngineOptions {
  /** Path of dockerd's API socket. */
  socketPath: string;
  /** How this engine is named in errors, e.g. the host name. Default: the socket path. */
  where?: string;
  /** The criu the host's runc uses (see PodmanEngineOptions.criuCommand). */
  criuCommand?: string | false;
  /** Timeout for short requests. Checkpoint, restore and image transfers have none. Default 60 s. */
  requestTimeoutMs?: number;
  logger?: Logger;
}

/**
 * ContainerEngine over Docker's Engine API (experimental mode, for its checkpoint routes) on its unix socket.
 *
 * Docker's checkpoint API writes CRIU's images into the container's directory and has no export, no import
 * and no tcp-established option. So the agent, which runs on the same host as root, makes the archive
 * itself: a tar of the kept checkpoint (`checkpoint/`), the container's writable layer (`rootfs-diff.tar`)
 * and what recreates the container (`docker.json`, agents/docker-archive.ts). A restore recreates the
 * container from docker.json, puts the images into its directory and the layer into its upper dir, and
 * starts it from the checkpoint. Established connections and file locks are CRIU options that runc reads
 * from /etc/criu/runc.conf for every checkpoint and restore: the host's set-up writes both there.
 */
export class DockerEngine implements ContainerEngine {
  private readonly api: EngineTransport;
  private readonly where: string;
  private readonly criuCommand: string | false | undefined;
  private readonly log: Logger;
  private rootDir: Promise<string> | undefined;

  constructor(options: DockerEngineOptions) {
    this.where = options.where ?? `docker at ${options.socketPath}`;
    this.api = new EngineTransport({
      socketPath: options.socketPath,
      prefix: API_PREFIX,
      where: this.where,
      requestTimeoutMs: options.requestTimeoutMs ?? 60_000,
    });
    this.criuCommand = options.criuCommand;
    this.log = options.logger ?? createLogger('docker-engine', { where: this.where });
  }

  async info(): Promise<EngineInfo> {
    const [info, version] = await Promise.all([
      this.api.json<DockerInfo>('info', 'GET', '/info'),
      this.api.json<DockerVersion>('version', 'GET', '/version'),
    ]);
    if (info.ExperimentalBuild !== true) {
      throw new EngineError('info', 200, `dockerd on ${this.where} runs without "experimental": true, which its checkpoint API needs`);
    }
    const root = info.DockerRootDir ?? '';
    const disk = root === '' ? undefined : await statfs(root).catch(() => undefined);
    const runtime = info.DefaultRuntime ?? 'runc';
    return {
      engine: 'docker',
      version: version.Version ?? info.ServerVersion ?? 'unknown',
      apiVersion: version.ApiVersion ?? 'unknown',
      ociRuntime: [runtime, info.RuncCommit?.ID].filter((s) => s !== undefined && s !== '').join(' '),
      ...(info.Runtimes?.[runtime]?.path ? { ociRuntimePath: info.Runtimes[runtime].path } : {}),
      criuVersion: await probeCriuVersion(this.criuCommand),
      kernel: info.KernelVersion ?? 'unknown',
      freeMemoryBytes: await availableMemory(),
      freeDiskBytes: disk === undefined ? 0 : disk.bavail * disk.bsize,
      ...(root !== '' ? { volumePath: join(root, 'volumes'), graphRoot: root } : {}),
    };
  }

  async listContainers(): Promise<ContainerSummary[]> {
    const list = await this.api.json<DockerListContainer[]>('list containers', 'GET', '/containers/json?all=true');
    const summaries = await Promise.all(list.map((c) => this.inspectContainer(c.Id)));
    return summaries.filter((s): s is ContainerSummary => s !== undefined);
  }

  async inspectContainer(nameOrId: string): Promise<ContainerSummary | undefined> {
    const c = await this.inspect(nameOrId);
    if (c === undefined) return undefined;
    const state = toState(c.State?.Status);
    return {
      id: c.Id,
      name: c.Name.replace(/^\//, ''),
      image: c.Config?.Image ?? '',
      imageId: bareId(c.Image ?? ''),
      state,
      checkpointed: state !== 'running' && (await this.hasCheckpoint(c.Id)),
      pid: c.State?.Pid ?? 0,
      startedAt: c.State?.StartedAt === undefined || c.State.StartedAt.startsWith('0001-01-01') ? undefined : c.State.StartedAt,
      published: portBindings(c.HostConfig?.PortBindings),
      labels: labelsOf(c.Config?.Labels),
    };
  }

  async rootfsChangesBytes(nameOrId: string): Promise<number | undefined> {
    const c = await this.inspect(nameOrId, true);
    const size = c?.SizeRw;
    return typeof size === 'number' && Number.isSafeInteger(size) && size >= 0 ? size : undefined;
  }

  async securityProfile(nameOrId: string): Promise<ContainerSecurityProfile | undefined> {
    const c = await this.inspect(nameOrId);
    return c === undefined ? undefined : toSecurityProfile(c, await this.root());
  }

  async listImages(): Promise<ImageSummary[]> {
    const list = await this.api.json<DockerImage[]>('list images', 'GET', '/images/json');
    return list.map((i) => ({ id: bareId(i.Id), names: (i.RepoTags ?? []).filter((t) => t !== '<none>:<none>'), sizeBytes: i.Size ?? 0 }));
  }

  async imageExists(ref: string): Promise<boolean> {
    const res = await this.api.call('image exists', 'GET', `/images/${enc(ref)}/json`);
    if (res.status === 404) {
      discard(res);
      return false;
    }
    if (res.status !== 200) throw await toEngineError(res, 'image exists');
    discard(res);
    return true;
  }

  /**
   * GET /images/get with the id and every tag of the image: `docker save`, one image with its tags as the
   * archive's RepoTags, so that a load restores them too (the restore looks the image up by name).
   */
  async saveImage(imageId: string): Promise<Readable> {
    const res = await this.api.call('save image', 'GET', `/images/${enc(imageId)}/json`);
    if (res.status === 404) {
      discard(res);
      throw new EngineError('save image', 404, `no image ${imageId} on ${this.where}`);
    }
    if (res.status !== 200) throw await toEngineError(res, 'save image');
    const image = await expectJson<DockerImage>(res, 'save image');
    const query = new URLSearchParams();
    for (const name of [imageId, ...(image.RepoTags ?? []).filter((t) => t !== '<none>:<none>')]) query.append('names', name);
    const saved = await this.api.call('save image', 'GET', `/images/get?${query}`, { timeout: false });
    if (saved.status !== 200) throw await toEngineError(saved, 'save image');
    return streamBody(saved, 'save image');
  }

  /** POST /images/load; Docker answers 200 and reports a failure inside its progress stream. */
  async loadImage(archive: Readable): Promise<void> {
    const res = await this.api.call('load image', 'POST', '/images/load?quiet=true', {
      timeout: false,
      body: archive,
      headers: { 'Content-Type': 'application/x-tar' },
    });
    if (res.status !== 200) throw await toEngineError(res, 'load image');
    const text = await readBody(res.body);
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      const message = (JSON.parse(line) as { error?: string; errorDetail?: { message?: string } }).error;
      if (message !== undefined) throw new EngineError('load image', 200, message);
    }
  }

  /**
   * POST /containers/{name}/checkpoints keeps CRIU's images in the container's directory; the archive is
   * made from them (see the class comment). Docker's checkpoint carries no volume contents: a container with
   * volumes moves only with them outside the archive (CheckpointOptions.ignoreVolumes, agents/volumes/).
   */
  async checkpoint(name: string, options: CheckpointOptions = {}): Promise<Readable> {
    const c = await this.inspect(name);
    if (c === undefined) throw new ContainerNotFoundError(name, this.where);
    const volumes = (c.Mounts ?? []).filter((m) => m.Type === 'volume');
    if (volumes.length > 0 && options.ignoreVolumes !== true) {
      throw new EngineError(
        'checkpoint',
        0,
        `Docker's checkpoint carries no volume contents, and ${volumes.map((v) => `"${v.Name ?? '?'}"`).join(', ')} would not be moved`,
      );
    }
    const parsed = DockerArchiveConfig.safeParse(archiveConfigOf(c));
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new EngineError(
        'checkpoint',
        0,
        `the container has settings a Docker archive does not carry: ${issue?.path.join('.') ?? ''} ${issue?.message ?? ''}`,
      );
    }
    const config = parsed.data;
    const upper = c.GraphDriver?.Data?.UpperDir;
    if (upper === undefined)
      throw new EngineError('checkpoint', 0, `the container's storage driver (${c.GraphDriver?.Name ?? '?'}) has no upper dir`);
    const dir = await this.containerDir(c.Id);
    await this.removeCheckpoint(c.Id);
    const started = Date.now();
    const body = EngineTransport.jsonBody({ CheckpointID: CHECKPOINT, Exit: options.leaveRunning !== true });
    const res = await this.api.call('checkpoint', 'POST', `/containers/${enc(c.Id)}/checkpoints`, { timeout: false, ...body });
    if (res.status !== 201 && res.status !== 200) throw await explainCriuFailure(await toEngineError(res, 'checkpoint'), 'checkpoint');
    discard(res);
    this.log.debug({ container: name, ms: Date.now() - started }, 'checkpoint taken');
    const staging = await this.staging('export');
    try {
      await writeFile(join(staging, DOCKER_CONFIG), JSON.stringify(config), { mode: 0o600 });
      await runTar([...LAYER_TAR, '-C', upper, '-cf', join(staging, ROOTFS_DIFF), '.'], 'checkpoint');
    } catch (error) {
      await rm(staging, { recursive: true, force: true });
      throw error;
    }
    const tar = spawn('tar', ['-cf', '-', '-C', staging, DOCKER_CONFIG, ROOTFS_DIFF, '-C', join(dir, 'checkpoints'), CHECKPOINT], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out = new PassThrough({ highWaterMark: 1024 * 1024 });
    const stderr: Buffer[] = [];
    tar.stderr.on('data', (b: Buffer) => stderr.push(b));
    tar.once('close', (code) => {
      void rm(staging, { recursive: true, force: true });
      if (code !== 0)
        out.destroy(new EngineError('checkpoint', 0, `archiving the checkpoint failed: ${Buffer.concat(stderr).toString().trim()}`));
    });
    tar.stdout.once('error', (error) => out.destroy(error));
    out.once('close', () => {
      if (tar.exitCode === null) tar.kill();
    });
    tar.stdout.pipe(out);
    return out;
  }

  /**
   * Unpacks the archive into a staging directory (not yet anything Docker sees), creates the container
   * from docker.json, moves CRIU's images into its directory and its layer into its upper dir, then starts
   * it from the checkpoint. Any failure removes the container: nothing is left under `name`.
   */
  async restoreFromArchive(name: string, archive: string | Readable, options: RestoreOptions = {}): Promise<RestoredContainer> {
    const staging = await this.staging('restore');
    let created: string | undefined;
    try {
      const tar = spawn('tar', ['-xf', '-', '-C', staging, '--no-same-owner'], { stdio: ['pipe', 'ignore', 'pipe'] });
      const stderr: Buffer[] = [];
      tar.stderr.on('data', (b: Buffer) => stderr.push(b));
      const exited = once(tar, 'close') as Promise<[number | null]>;
      await pipeline(typeof archive === 'string' ? createReadStream(archive) : archive, tar.stdin).catch(async (error: unknown) => {
        tar.kill();
        await exited;
        throw error;
      });
      const [code] = await exited;
      if (code !== 0) throw new EngineError('restore', 0, `the archive does not unpack: ${Buffer.concat(stderr).toString().trim()}`);
      await expectEntries(staging);
      const config = await readArchiveConfig(staging);
      if (volumeDestinations(config).length > 0 && options.ignoreVolumes !== true) {
        throw new EngineError('restore', 0, 'the container mounts volumes and the archive carries none of their contents');
      }
      // By its name when that name here is the very image: what `docker ps` and the registration then show.
      const named = (
        await this.api.json<{ Id?: string }>('inspect image', 'GET', `/images/${enc(config.image)}/json`).catch(() => undefined)
      )?.Id;
      const createdBody = EngineTransport.jsonBody(dockerCreateBody(config, named === `sha256:${config.imageId}`));
      const made = await this.api.call('create container', 'POST', `/containers/create?name=${enc(name)}`, createdBody);
      if (made.status !== 201) throw await toEngineError(made, 'create container');
      created = (await expectJson<{ Id: string }>(made, 'create container')).Id;
      const c = await this.inspect(created);
      const upper = c?.GraphDriver?.Data?.UpperDir;
      if (upper === undefined) throw new EngineError('restore', 0, 'the created container has no upper dir');
      await runTar([...LAYER_TAR, '-C', upper, '-xf', join(staging, ROOTFS_DIFF)], 'restore');
      const checkpoints = join(await this.containerDir(created), 'checkpoints');
      await mkdir(checkpoints, { recursive: true, mode: 0o700 });
      await rename(join(staging, CHECKPOINT), join(checkpoints, CHECKPOINT));
      const started = Date.now();
      await this.startFromCheckpoint(created, 'restore');
      this.log.info({ container: name, ms: Date.now() - started }, 'restored from archive');
      return { id: created, name, runtimeRestoreMs: undefined };
    } catch (error) {
      if (created !== undefined) await this.removeContainer(created, { force: true }).catch(() => undefined);
      throw error;
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  }

  async resumeCheckpointed(name: string): Promise<RestoredContainer> {
    const c = await this.inspect(name);
    if (c === undefined) throw new ContainerNotFoundError(name, this.where);
    const started = Date.now();
    await this.startFromCheckpoint(c.Id, 'restore');
    this.log.info({ container: name, ms: Date.now() - started }, 'resumed from kept checkpoint');
    return { id: c.Id, name, runtimeRestoreMs: undefined };
  }

  async startContainer(name: string): Promise<void> {
    const res = await this.api.call('start container', 'POST', `/containers/${enc(name)}/start`);
    if (res.status === 404) {
      discard(res);
      throw new ContainerNotFoundError(name, this.where);
    }
    if (res.status !== 204 && res.status !== 304) throw await toEngineError(res, 'start container');
    discard(res);
  }

  async removeContainer(name: string, options: { force?: boolean; withVolumes?: boolean } = {}): Promise<void> {
    const volumes = options.withVolumes === true ? ((await this.volumesOf(name).catch(() => undefined)) ?? []).map((v) => v.name) : [];
    const query = new URLSearchParams({ force: String(options.force === true), v: 'true' });
    const res = await this.api.call('remove container', 'DELETE', `/containers/${enc(name)}?${query}`);
    if (res.status === 404) {
      discard(res);
      return;
    }
    if (res.status !== 204 && res.status !== 200) throw await toEngineError(res, 'remove container');
    discard(res);
    for (const volume of volumes) {
      const removed = await this.api.call('remove volume', 'DELETE', `/volumes/${enc(volume)}`);
      discard(removed);
      // 409: another container here uses it, so it stays.
      if (removed.status !== 204 && removed.status !== 404) {
        this.log.warn({ container: name, volume, status: removed.status }, 'kept a volume of the removed container');
      }
    }
  }

  async volumesOf(nameOrId: string): Promise<VolumeMount[] | undefined> {
    const c = await this.inspect(nameOrId);
    if (c === undefined) return undefined;
    const mounts: VolumeMount[] = [];
    for (const m of c.Mounts ?? []) {
      if (m.Type !== 'volume' || m.Name === undefined || m.Name === '') continue;
      const volume = await this.api.json<DockerVolume>('inspect volume', 'GET', `/volumes/${enc(m.Name)}`);
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

  /** POST /volumes/create answers 201 for an existing name too, so a GET goes first. */
  async createVolume(spec: VolumeSpec): Promise<{ mountpoint: string }> {
    const existing = await this.api.call('inspect volume', 'GET', `/volumes/${enc(spec.name)}`);
    discard(existing);
    if (existing.status !== 404) throw new VolumeExistsError(spec.name, this.where);
    const body = EngineTransport.jsonBody({ Name: spec.name, Driver: spec.driver, Labels: spec.labels, DriverOpts: spec.options });
    const created = await this.api.json<DockerVolume>('create volume', 'POST', '/volumes/create', body);
    return { mountpoint: created.Mountpoint ?? '' };
  }

  async removeVolume(name: string): Promise<void> {
    const res = await this.api.call('remove volume', 'DELETE', `/volumes/${enc(name)}`);
    if (res.status !== 204 && res.status !== 404) throw await toEngineError(res, 'remove volume');
    discard(res);
  }

  /**
   * POST /containers/create, then start. Docker 20.10 does not know CAP_CHECKPOINT_RESTORE (Linux 5.9), which
   * the launcher asks for (launcher/README.md): there it gets CAP_SYS_ADMIN, the capability the kernel
   * accepts in its place, and the agent says so in its log.
   */
  async runContainer(spec: PlainContainerSpec): Promise<{ id: string }> {
    const create = (capAdd: readonly string[]) =>
      this.api.call(
        'create container',
        'POST',
        `/containers/create?name=${enc(spec.name)}`,
        EngineTransport.jsonBody({
          Image: spec.image,
          Env: Object.entries(spec.env ?? {}).map(([k, v]) => `${k}=${v}`),
          HostConfig: {
            CapAdd: capAdd,
            SecurityOpt: spec.seccompProfile ? [`seccomp=${spec.seccompProfile}`] : [],
            Binds: (spec.binds ?? []).map((b) => `${b.source}:${b.destination}`),
          },
        }),
      );
    const wanted = spec.capAdd ?? [];
    let made = await create(wanted);
    if (made.status !== 201) {
      const error = await toEngineError(made, 'create container');
      const substitute = wanted.map((cap) => (/^(CAP_)?CHECKPOINT_RESTORE$/i.test(cap) ? 'SYS_ADMIN' : cap));
      if (!/unknown capability: "CAP_CHECKPOINT_RESTORE"/.test(error.detail) || substitute.join() === wanted.join()) throw error;
      this.log.warn(
        { container: spec.name },
        'this Docker does not know CAP_CHECKPOINT_RESTORE: the container gets CAP_SYS_ADMIN in its place',
      );
      made = await create(substitute);
      if (made.status !== 201) throw await toEngineError(made, 'create container');
    }
    const { Id } = await expectJson<{ Id: string }>(made, 'create container');
    const started = await this.api.call('start container', 'POST', `/containers/${enc(Id)}/start`);
    if (started.status !== 204 && started.status !== 304) {
      const error = await toEngineError(started, 'start container');
      await this.removeContainer(Id, { force: true }).catch(() => undefined);
      throw error;
    }
    discard(started);
    return { id: Id };
  }

  /** POST /containers/{id}/start?checkpoint=: runc restores from the images in the container's directory. */
  private async startFromCheckpoint(id: string, operation: 'restore'): Promise<void> {
    const res = await this.api.call(operation, 'POST', `/containers/${enc(id)}/start?checkpoint=${CHECKPOINT}`, { timeout: false });
    if (res.status !== 204 && res.status !== 304) throw await explainCriuFailure(await toEngineError(res, operation), 'restore');
    discard(res);
  }

  private async hasCheckpoint(id: string): Promise<boolean> {
    const res = await this.api.call('list checkpoints', 'GET', `/containers/${enc(id)}/checkpoints`);
    if (res.status !== 200) {
      discard(res);
      return false;
    }
    return (await expectJson<Array<{ Name?: string }> | null>(res, 'list checkpoints'))?.some((c) => c.Name === CHECKPOINT) === true;
  }

  /** A checkpoint kept from an earlier migration that was rolled back: Docker refuses to reuse the name. */
  private async removeCheckpoint(id: string): Promise<void> {
    const res = await this.api.call('remove checkpoint', 'DELETE', `/containers/${enc(id)}/checkpoints/${CHECKPOINT}`);
    discard(res);
  }

  private async inspect(nameOrId: string, size = false): Promise<DockerInspect | undefined> {
    const res = await this.api.call('inspect container', 'GET', `/containers/${enc(nameOrId)}/json${size ? '?size=true' : ''}`);
    if (res.status === 404) {
      discard(res);
      return undefined;
    }
    if (res.status !== 200) throw await toEngineError(res, 'inspect container');
    return expectJson<DockerInspect>(res, 'inspect container');
  }

  private root(): Promise<string> {
    this.rootDir ??= this.api.json<DockerInfo>('info', 'GET', '/info').then(async (info) => {
      if (!info.DockerRootDir) throw new EngineError('info', 200, `dockerd on ${this.where} does not say where its data root is`);
      await rm(join(info.DockerRootDir, STAGING), { recursive: true, force: true });
      return info.DockerRootDir;
    });
    this.rootDir.catch(() => (this.rootDir = undefined));
    return this.rootDir;
  }

  private async staging(kind: 'export' | 'restore'): Promise<string> {
    const dir = join(await this.root(), STAGING);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return mkdtemp(join(dir, `${kind}-`));
  }

  private async containerDir(id: string): Promise<string> {
    return join(await this.root(), 'containers', id);
  }
}

/**
 * Docker names CRIU's log in its error ("... path= /.../criu-dump.log: unknown"); the reason is in that
 * log, and only the log says it.
 */
async function explainCriuFailure(error: EngineError, operation: 'checkpoint' | 'restore'): Promise<Error> {
  const log = /path= ?(\/\S+\.log)/.exec(error.detail)?.[1];
  const reason = log === undefined ? undefined : await criuReason(log);
  return reason === undefined ? error : new CriuError(operation, reason, { cause: error });
}

/** The three entries, each what it must be: a link in their place would lead the restore to a file of the host's. */
async function expectEntries(staging: string): Promise<void> {
  const kinds: Array<[string, 'file' | 'directory']> = [
    [DOCKER_CONFIG, 'file'],
    [ROOTFS_DIFF, 'file'],
    [CHECKPOINT, 'directory'],
  ];
  for (const [name, kind] of kinds) {
    const entry = await lstat(join(staging, name)).catch(() => undefined);
    const ok = kind === 'file' ? entry?.isFile() : entry?.isDirectory();
    if (ok !== true)
      throw new EngineError(
        'restore',
        0,
        `the archive's ${name} is ${entry === undefined ? 'missing' : `not a ${kind}`}: it is not a Docker checkpoint archive`,
      );
  }
}

async function readArchiveConfig(staging: string): Promise<DockerArchiveConfig> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(join(staging, DOCKER_CONFIG), 'utf8'));
  } catch (error) {
    throw new EngineError('restore', 0, `the archive's ${DOCKER_CONFIG} does not parse`, { cause: error });
  }
  const parsed = DockerArchiveConfig.safeParse(raw);
  if (!parsed.success)
    throw new EngineError('restore', 0, `the archive's ${DOCKER_CONFIG} is not valid: ${parsed.error.issues[0]?.message ?? ''}`);
  return parsed.data;
}

/** What docker.json records of an inspected container (agents/docker-archive.ts checks it on both sides). */
function archiveConfigOf(c: DockerInspect): unknown {
  return {
    format: 1,
    imageId: bareId(c.Image ?? ''),
    image: c.Config?.Image ?? '',
    config: c.Config ?? {},
    hostConfig: c.HostConfig ?? {},
  };
}

async function runTar(args: string[], operation: string): Promise<void> {
  const tar = spawn('tar', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const stderr: Buffer[] = [];
  tar.stderr.on('data', (b: Buffer) => stderr.push(b));
  const [code] = (await once(tar, 'close')) as [number | null];
  if (code !== 0) throw new EngineError(operation, 0, `tar ${args.join(' ')} failed: ${Buffer.concat(stderr).toString().trim()}`);
}

async function availableMemory(): Promise<number> {
  const meminfo = await readFile('/proc/meminfo', 'utf8').catch(() => '');
  const kib = /^MemAvailable:\s+(\d+) kB/m.exec(meminfo)?.[1];
  return kib === undefined ? 0 : Number(kib) * 1024;
}

/** Docker writes image ids as "sha256:<hex>", Podman as "<hex>": registrations and commands use the bare hex. */
export function bareId(id: string): string {
  return id.startsWith('sha256:') ? id.slice('sha256:'.length) : id;
}

function toState(status: string | undefined): ContainerState {
  switch (status) {
    case 'created':
    case 'running':
    case 'paused':
    case 'exited':
      return status;
    case 'dead':
    case 'removing':
      return 'stopped';
    case 'restarting':
      return 'running';
    default:
      return 'unknown';
  }
}

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
 * Docker 20.10's inspect as a security profile. Its default capability set is Podman's (the same 14), less
 * CapDrop, plus CapAdd; a namespace mode "host" shares the host's, and without userns-remap every container
 * shares the host's user namespace. Its own files (hosts, hostname, resolv.conf, shm) are under its
 * directory in the data root.
 */
export function toSecurityProfile(c: DockerInspect, root: string): ContainerSecurityProfile {
  const host = c.HostConfig ?? {};
  const options = host.SecurityOpt ?? [];
  const privileged = host.Privileged === true;
  const capName = (cap: string) => (cap.toUpperCase().startsWith('CAP_') ? cap.toUpperCase() : `CAP_${cap.toUpperCase()}`);
  const dropped = new Set((host.CapDrop ?? []).map(capName));
  const all = dropped.has('CAP_ALL');
  const hostNamespaces: ContainerSecurityProfile['hostNamespaces'] = (
    [
      ['network', host.NetworkMode],
      ['pid', host.PidMode],
      ['ipc', host.IpcMode],
      ['uts', host.UTSMode],
      ['cgroup', host.CgroupnsMode],
    ] as const
  ).flatMap(([type, mode]) => (mode === 'host' ? [type] : []));
  if (host.UsernsMode === undefined || host.UsernsMode === '' || host.UsernsMode === 'host') hostNamespaces.push('user');
  return {
    imageId: bareId(c.Image ?? ''),
    privileged,
    capabilities: [
      ...new Set([...PODMAN_DEFAULT_CAPABILITIES.filter((cap) => !all && !dropped.has(cap)), ...(host.CapAdd ?? []).map(capName)]),
    ].sort(),
    devices: (host.Devices ?? []).flatMap((d) => (d.PathInContainer ? [d.PathInContainer] : [])),
    mounts: (c.Mounts ?? []).flatMap((m) =>
      (m.Type === 'bind' || m.Type === 'volume') && m.Destination ? [{ source: m.Source ?? '', destination: m.Destination }] : [],
    ),
    ownDirs: [join(root, 'containers', c.Id)],
    hostNamespaces,
    seccomp: !privileged && !options.some((o) => /^seccomp[=:]unconfined$/.test(o)),
    noNewPrivileges: options.some((o) => /^no-new-privileges(:true|=true)?$/.test(o)),
    user: c.Config?.User ?? '',
  };
}

// The parts of Docker's responses this engine reads (API 1.41).
interface DockerInfo {
  ServerVersion?: string;
  KernelVersion?: string;
  DockerRootDir?: string;
  ExperimentalBuild?: boolean;
  DefaultRuntime?: string;
  Runtimes?: Record<string, { path?: string }>;
  RuncCommit?: { ID?: string };
}

interface DockerVersion {
  Version?: string;
  ApiVersion?: string;
}

interface DockerListContainer {
  Id: string;
}

/** Docker's Config.Labels (null when there are none), read defensively: the inspect type keeps Config open. */
function labelsOf(value: unknown): Record<string, string> {
  if (typeof value !== 'object' || value === null) return {};
  return Object.fromEntries(Object.entries(value).filter((entry): entry is [string, string] => typeof entry[1] === 'string'));
}

export interface DockerInspect {
  Id: string;
  Name: string;
  Image?: string;
  SizeRw?: number;
  State?: { Status?: string; Pid?: number; StartedAt?: string };
  Config?: { Image?: string; User?: string } & Record<string, unknown>;
  HostConfig?: {
    PortBindings?: Record<string, Array<{ HostIp?: string; HostPort?: string }> | null>;
    Privileged?: boolean;
    CapAdd?: string[] | null;
    CapDrop?: string[] | null;
    Devices?: Array<{ PathOnHost?: string; PathInContainer?: string }> | null;
    NetworkMode?: string;
    PidMode?: string;
    IpcMode?: string;
    UTSMode?: string;
    UsernsMode?: string;
    CgroupnsMode?: string;
    SecurityOpt?: string[] | null;
  } & Record<string, unknown>;
  Mounts?: Array<{ Type?: string; Name?: string; Source?: string; Destination?: string }>;
  GraphDriver?: { Name?: string; Data?: { UpperDir?: string } };
}

interface DockerImage {
  Id: string;
  RepoTags?: string[] | null;
  Size?: number;
}

interface DockerVolume {
  Name: string;
  Driver?: string;
  Mountpoint?: string;
  Labels?: Record<string, string> | null;
  Options?: Record<string, string> | null;
}
