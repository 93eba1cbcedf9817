import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, mkdir, rm, stat, statfs } from 'node:fs/promises';
import { freemem, release } from 'node:os';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import type { Logger } from '../../core/log.js';
import {
  ContainerNotFoundError,
  CriuError,
  EngineError,
  type ContainerEngine,
  type ContainerState as EngineContainerState,
  type ContainerSummary,
  type EngineInfo,
  type ImageSummary,
  type RestoredContainer,
} from '../container-engine.js';
import { probeCriuVersion } from '../criu-command.js';
import { criuReason, reasonFromLog } from '../criu-log.js';
import { TarEntryReader, TarFormatError } from '../tar-entries.js';
import { restoreContainer } from './cri-checkpoint.js';
import {
  CriClient,
  type Container,
  type ContainerState,
  type NamespaceMode,
  type PodSandboxConfig,
  type PodSandboxStatus,
} from './cri-client.js';
import { CriError } from './cri-errors.js';

/**
 * A Kubernetes node's container runtime (containerd 2.x; CRI-O speaks the same API) seen through the CRI, as
 * the kubelet sees it: what the orchestrator-level approach (agents/orchestrator-level.ts) moves. A UMS
 * "container" here is a pod of one container, named by the pod's name in `namespace`.
 *
 * The CRI has no export, no pause, no image save and no "start again": a checkpoint is CheckpointContainer
 * (the runtime pauses the container, has CRIU dump it into a tar on the node, and lets it run again) followed
 * at once by StopContainer, and a restore is a new pod whose container is created from that tar. So:
 *   - what the service does between the end of the dump and the stop is lost (a few milliseconds; the
 *     frontman holds clients before the checkpoint, so no client request falls in that window);
 *   - the tar stays on the node until the migration ends: rolling back restores the service from it, into a
 *     new pod of the same name here.
 * Images are pulled by the runtime from their registry (containerd pulls a checkpoint's base image by digest
 * even when it holds it): there is nothing to ship, and saveImage/loadImage refuse with that reason.
 */
export interface CriEngineOptions {
  /** The runtime's CRI socket. */
  socketPath: string;
  /** This host, for messages. */
  where: string;
  /** The pods' namespace. Default "default". */
  namespace?: string;
  /**
   * The cgroup parent of the pods this engine creates (the kubelet sets one per QoS class); default the
   * runtime's.
   */
  cgroupParent?: string;
  /**
   * The network namespace mode of restored pods: 'NODE' (the node's network, as a hostNetwork pod) or 'POD'
   * (a network of its own, set up by the runtime's CNI). The CRI does not say how the source's pod was made,
   * so the node says how its pods are.
   */
  podNetwork?: Extract<NamespaceMode, 'NODE' | 'POD'>;
  /** Where restored pods' logs go (the kubelet's /var/log/pods). */
  podLogRoot: string;
  /** Where checkpoint tars are kept on this node (the kubelet's /var/lib/kubelet/checkpoints); mode 700. */
  checkpointDir: string;
  logger: Logger;
  /** Per-call deadline for the CRI. Default the client's. */
  timeoutMs?: number;
}

/** The archive entry that names the checkpointed container (containerd's status.dump: its CRI status). */
const STATUS_DUMP = 'status.dump';
const MAX_DUMP_BYTES = 1024 * 1024;

export class CriEngine implements ContainerEngine {
  readonly cri: CriClient;
  private readonly namespace: string;

  constructor(private readonly options: CriEngineOptions) {
    this.cri = new CriClient({
      socket: options.socketPath,
      name: options.where,
      ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    });
    this.namespace = options.namespace ?? 'default';
  }

  close(): void {
    this.cri.close();
  }

  async info(): Promise<EngineInfo> {
    // Where restores are written first: its file system's free space is what a restore needs.
    await mkdir(this.options.checkpointDir, { recursive: true, mode: 0o700 });
    const [version, criuVersion, disk] = await Promise.all([this.cri.version(), probeCriuVersion(), statfs(this.options.checkpointDir)]);
    return {
      engine: 'cri',
      version: `${version.runtimeName} ${version.runtimeVersion}`,
      apiVersion: `CRI ${version.runtimeApiVersion}`,
      ociRuntime: 'runc',
      criuVersion,
      kernel: release(),
      freeMemoryBytes: freemem(),
      freeDiskBytes: disk.bavail * disk.bsize,
    };
  }

  async listContainers(): Promise<ContainerSummary[]> {
    const [pods, containers] = await Promise.all([this.cri.listPodSandboxes(), this.cri.listContainers()]);
    const summaries: ContainerSummary[] = [];
    for (const pod of this.newestPods(pods).values()) {
      const summary = await this.summaryOf(pod, containers);
      if (summary !== undefined) summaries.push(summary);
    }
    return summaries;
  }

  async inspectContainer(nameOrId: string): Promise<ContainerSummary | undefined> {
    const [pods, containers] = await Promise.all([this.cri.listPodSandboxes(), this.cri.listContainers()]);
    const byName = this.newestPods(pods).get(nameOrId);
    if (byName !== undefined) return this.summaryOf(byName, containers);
    const container = containers.find((c) => c.id === nameOrId);
    const pod = container === undefined ? undefined : pods.find((p) => p.id === container.podSandboxId);
    return pod === undefined ? undefined : this.summaryOf(pod, containers);
  }

  async listImages(): Promise<ImageSummary[]> {
    return (await this.cri.listImages()).map((image) => ({ id: image.id, names: image.repoTags, sizeBytes: Number(image.size) }));
  }

  async imageExists(ref: string): Promise<boolean> {
    return (await this.cri.imageStatus(ref)) !== undefined;
  }

  saveImage(): Promise<Readable> {
    return Promise.reject(this.noImageTransfer('save image'));
  }

  loadImage(): Promise<void> {
    return Promise.reject(this.noImageTransfer('load image'));
  }

  /**
   * CheckpointContainer into <checkpointDir>/<name>.tar, then StopContainer: the service stays stopped here
   * with its tar kept (for resumeCheckpointed), and the tar is streamed.
   */
  async checkpoint(name: string): Promise<Readable> {
    const { pod, container } = await this.running(name);
    const location = this.keptArchive(name);
    await mkdir(this.options.checkpointDir, { recursive: true, mode: 0o700 });
    await rm(location, { force: true });
    const started = Date.now();
    try {
      await this.cri.checkpointContainer(container.id, location);
    } catch (error) {
      await rm(location, { force: true });
      throw await this.criuFailure('checkpoint', error);
    }
    const checkpointMs = Date.now() - started;
    await this.cri.stopContainer(container.id, 0).catch(async (cause: unknown) => {
      // A source that runs on after its checkpoint diverges from it: the migration must not go on.
      await rm(location, { force: true });
      throw new EngineError('checkpoint', 0, `checkpointed "${name}" on ${this.options.where} but could not stop it after`, { cause });
    });
    await chmod(location, 0o600);
    const { size } = await stat(location);
    this.options.logger.info(
      { container: name, pod: pod.id, checkpointMs, stopMs: Date.now() - started - checkpointMs, sizeBytes: size },
      'checkpointed through CRI and stopped',
    );
    return createReadStream(location, { highWaterMark: 1024 * 1024 });
  }

  /**
   * A new pod named `name` whose container is created from the checkpoint tar. The archive is written to the
   * node's checkpoint directory first (the runtime reads a path, and twice) and checked on the way: a tar of
   * regular files and directories, naming its container. On failure nothing is left: no pod, no tar.
   */
  async restoreFromArchive(name: string, archive: string | Readable): Promise<RestoredContainer> {
    if ((await this.inspectContainer(name)) !== undefined)
      throw new EngineError('restore', 409, `a pod named "${name}" already exists on ${this.options.where}`);
    await mkdir(this.options.checkpointDir, { recursive: true, mode: 0o700 });
    const incoming = join(this.options.checkpointDir, `incoming-${name}-${randomUUID()}.tar`);
    try {
      const source = typeof archive === 'string' ? createReadStream(archive) : archive;
      const containerName = await this.receive(source, incoming);
      return await this.restoreFrom(name, incoming, containerName);
    } finally {
      await rm(incoming, { force: true });
    }
  }

  /** Rollback: the stopped pod goes, and its kept tar comes back as a new pod of the same name here. */
  async resumeCheckpointed(name: string): Promise<RestoredContainer> {
    const current = await this.inspectContainer(name);
    if (current?.state === 'running') return { id: current.id, name, runtimeRestoreMs: undefined };
    const kept = this.keptArchive(name);
    await stat(kept).catch((cause: unknown) => {
      throw new EngineError('resume', 404, `no checkpoint of "${name}" is kept on ${this.options.where}`, { cause });
    });
    const containerName = await this.containerNameIn(kept);
    await this.removePods(name);
    const restored = await this.restoreFrom(name, kept, containerName);
    await rm(kept, { force: true });
    return restored;
  }

  startContainer(name: string): Promise<void> {
    return Promise.reject(
      new EngineError(
        'start',
        501,
        `a CRI container cannot start again (the kubelet would create a new one): "${name}" on ${this.options.where}`,
      ),
    );
  }

  /** Stops and removes every pod named `name`, and the checkpoint tar kept for it. */
  async removeContainer(name: string): Promise<void> {
    await this.removePods(name);
    await rm(this.keptArchive(name), { force: true });
  }

  runContainer(): Promise<{ id: string }> {
    return Promise.reject(
      new EngineError(
        'run',
        501,
        `pods on ${this.options.where} are the orchestrator's to create: UMS starts none there but a restored one`,
      ),
    );
  }

  /** Whether the kept tar of a checkpoint of `name` is here (the service is stopped, its checkpoint kept). */
  async hasKeptCheckpoint(name: string): Promise<boolean> {
    return (await stat(this.keptArchive(name)).catch(() => undefined))?.isFile() === true;
  }

  private keptArchive(name: string): string {
    return join(this.options.checkpointDir, `${name}.tar`);
  }

  private noImageTransfer(operation: string): EngineError {
    return new EngineError(
      operation,
      501,
      `the CRI has no image export or import: ${this.options.where}'s runtime pulls images from their registry (push the image there)`,
    );
  }

  /** The newest sandbox of each pod name in the namespace (a restored pod replaces an old one of the same name). */
  private newestPods(pods: PodSandboxStatus[]): Map<string, PodSandboxStatus> {
    const newest = new Map<string, PodSandboxStatus>();
    for (const pod of pods) {
      const name = pod.metadata?.name;
      if (name === undefined || pod.metadata?.namespace !== this.namespace) continue;
      const seen = newest.get(name);
      if (seen === undefined || BigInt(seen.createdAt) < BigInt(pod.createdAt)) newest.set(name, pod);
    }
    return newest;
  }

  private async summaryOf(pod: PodSandboxStatus, containers: Container[]): Promise<ContainerSummary | undefined> {
    const name = pod.metadata?.name;
    const container = containers
      .filter((c) => c.podSandboxId === pod.id)
      .sort((a, b) => (BigInt(a.createdAt) < BigInt(b.createdAt) ? 1 : -1))[0];
    if (name === undefined || container === undefined) return undefined;
    const state = stateOf(container.state);
    const status = state === 'running' ? await this.cri.containerStatus(container.id, { verbose: true }).catch(() => undefined) : undefined;
    return {
      id: container.id,
      name,
      image: container.image?.userSpecifiedImage || container.image?.image || container.imageRef,
      imageId: container.imageRef,
      state,
      checkpointed: state === 'exited' && (await this.hasKeptCheckpoint(name)),
      pid: status?.pid ?? 0,
      startedAt: status?.startedAt === undefined ? undefined : new Date(Number(BigInt(status.startedAt) / 1_000_000n)).toISOString(),
      // Published ports are the orchestrator's (Services); a hostNetwork pod's are the node's own.
      published: [],
      // The pod's labels, where Kubernetes keeps a workload's.
      labels: { ...pod.labels, ...container.labels },
    };
  }

  private async running(name: string): Promise<{ pod: PodSandboxStatus; container: Container }> {
    const [pods, containers] = await Promise.all([this.cri.listPodSandboxes(), this.cri.listContainers()]);
    const pod = this.newestPods(pods).get(name);
    const container = containers.find((c) => c.podSandboxId === pod?.id && c.state === 'CONTAINER_RUNNING');
    if (pod === undefined || container === undefined)
      throw new ContainerNotFoundError(name, `${this.options.where} (no running pod of that name)`);
    return { pod, container };
  }

  /** Writes the archive to `path` (mode 600), reading it as it passes; resolves with the container's name in it. */
  private async receive(source: Readable, path: string): Promise<string> {
    const reader = new TarEntryReader(new Set([STATUS_DUMP]), MAX_DUMP_BYTES);
    const check = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        try {
          reader.write(chunk);
          done(null, chunk);
        } catch (error) {
          done(error as Error);
        }
      },
      flush(done) {
        try {
          reader.end();
          done();
        } catch (error) {
          done(error as Error);
        }
      },
    });
    try {
      await pipeline(source, check, createWriteStream(path, { mode: 0o600 }));
    } catch (error) {
      if (error instanceof TarFormatError)
        throw new EngineError('restore', 400, `the checkpoint archive is not a CRI checkpoint tar: ${error.message}`, { cause: error });
      throw error;
    }
    const odd = reader.entries.find((entry) => entry.type !== '0' && entry.type !== '5' && entry.type !== 'x' && entry.type !== 'g');
    if (odd !== undefined)
      throw new EngineError(
        'restore',
        400,
        `the checkpoint archive holds "${odd.name}" of tar type ${odd.type}: only files and directories belong there`,
      );
    return containerNameFrom(reader.bodies.get(STATUS_DUMP));
  }

  private async containerNameIn(path: string): Promise<string> {
    const reader = new TarEntryReader(new Set([STATUS_DUMP]), MAX_DUMP_BYTES);
    for await (const chunk of createReadStream(path)) reader.write(chunk as Buffer);
    reader.end();
    return containerNameFrom(reader.bodies.get(STATUS_DUMP));
  }

  private async restoreFrom(name: string, archivePath: string, containerName: string): Promise<RestoredContainer> {
    const uid = randomUUID();
    const sandbox: PodSandboxConfig = {
      metadata: { name, uid, namespace: this.namespace, attempt: 0 },
      logDirectory: join(this.options.podLogRoot, `${this.namespace}_${name}_${uid}`),
      linux: {
        ...(this.options.cgroupParent !== undefined ? { cgroupParent: this.options.cgroupParent } : {}),
        securityContext: { namespaceOptions: { network: this.options.podNetwork ?? 'NODE', pid: 'CONTAINER', ipc: 'POD' } },
      },
    };
    try {
      const restored = await restoreContainer(this.cri, {
        from: { archivePath },
        sandbox,
        containerName,
        logPath: `${containerName}/0.log`,
      });
      return { id: restored.containerId, name, runtimeRestoreMs: restored.startMs };
    } catch (error) {
      throw await this.criuFailure('restore', error instanceof Error && error.cause !== undefined ? error.cause : error);
    }
  }

  private async removePods(name: string): Promise<void> {
    for (const pod of await this.cri.listPodSandboxes()) {
      if (pod.metadata?.name !== name || pod.metadata.namespace !== this.namespace) continue;
      await this.cri.stopPodSandbox(pod.id);
      await this.cri.removePodSandbox(pod.id);
    }
  }

  /**
   * A runtime's failed CRIU run, in CRIU's words: containerd's error names the CRIU log ("log file:
   * /…/dump.log" or "criu-dump.log"), whose errors are the reason. Anything else stays the runtime's error.
   */
  private async criuFailure(operation: 'checkpoint' | 'restore', error: unknown): Promise<Error> {
    if (!(error instanceof CriError)) return error instanceof Error ? error : new Error(String(error));
    const logPath = /(\/[^\s:"']+\.log)\b/.exec(error.runtimeMessage)?.[1];
    const reason = (logPath === undefined ? undefined : await criuReason(logPath)) ?? reasonFromLog(error.runtimeMessage);
    if (reason !== undefined) return new CriuError(operation, reason, { cause: error });
    return new EngineError(operation, 0, `${this.options.where}: ${error.message}`, { cause: error });
  }
}

function stateOf(state: ContainerState): EngineContainerState {
  switch (state) {
    case 'CONTAINER_RUNNING':
      return 'running';
    case 'CONTAINER_CREATED':
      return 'created';
    case 'CONTAINER_EXITED':
      return 'exited';
    default:
      return 'unknown';
  }
}

function containerNameFrom(statusDump: Buffer | undefined): string {
  if (statusDump === undefined)
    throw new EngineError('restore', 400, `the checkpoint archive has no ${STATUS_DUMP}: it is not a CRI checkpoint`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(statusDump.toString('utf8'));
  } catch (cause) {
    throw new EngineError('restore', 400, `the checkpoint archive's ${STATUS_DUMP} is not JSON`, { cause });
  }
  const status = CheckpointedStatus.safeParse(parsed);
  if (!status.success)
    throw new EngineError(
      'restore',
      400,
      `the checkpoint archive's ${STATUS_DUMP} names no valid container: ${z.prettifyError(status.error)}`,
    );
  return status.data.metadata.name;
}

/** What UMS reads of status.dump: the container's name, a DNS-1123 label as the CRI requires. */
const CheckpointedStatus = z.object({
  metadata: z.object({ name: z.string().regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'a DNS-1123 label') }),
});
