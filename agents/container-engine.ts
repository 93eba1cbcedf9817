import type { Readable } from 'node:stream';
import type { PublishedPort } from '../core/container-network.js';
import type { ContainerSecurityProfile } from '../core/container-security.js';

/**
 * The seam between the host agent and the host's container engine: Podman (agents/podman-engine.ts) and
 * Docker (agents/docker-engine.ts), each over its REST API on its unix socket, and a Kubernetes node's
 * runtime over the CRI (agents/cri/cri-engine.ts).
 */
export interface ContainerEngine {
  /** Engine name/version, OCI runtime, CRIU version, kernel: what registration reports. */
  info(): Promise<EngineInfo>;

  /** All containers, running or not. */
  listContainers(): Promise<ContainerSummary[]>;

  /** One container by name or id, or undefined if the engine does not know it. */
  inspectContainer(nameOrId: string): Promise<ContainerSummary | undefined>;

  /** Images present on this host. */
  listImages(): Promise<ImageSummary[]>;

  /** True if the image reference (name:tag or id) resolves on this host. */
  imageExists(ref: string): Promise<boolean>;

  /**
   * The image as a docker-archive tar (what `podman save` and `docker save` write, which either engine
   * loads with the same image id): for a destination that lacks it. The stream errors if the engine fails.
   */
  saveImage(imageId: string): Promise<Readable>;

  /** Loads a docker-archive tar. The caller checks the image id it expected with imageExists. */
  loadImage(archive: Readable): Promise<void>;

  /**
   * Freezes the container with CRIU and streams the uncompressed checkpoint archive (a tar).
   * The container stays on this host in its checkpointed (stopped) state with its checkpoint kept,
   * so that `resumeCheckpointed` can bring it back if the migration fails. The stream errors if the
   * engine fails mid-way.
   */
  checkpoint(name: string, options?: CheckpointOptions): Promise<Readable>;

  /**
   * Restores a container under `name` from a checkpoint archive: a file on local disk, or a stream
   * (destroying the stream with an error aborts the restore before anything is restored). The archive's
   * base image must already be on this host with the same image id (the archive records the image by
   * id). On failure nothing is left behind under `name`.
   */
  restoreFromArchive(name: string, archive: string | Readable, options?: RestoreOptions): Promise<RestoredContainer>;

  /** Restores a container that was checkpointed on this host from its kept checkpoint (rollback). */
  resumeCheckpointed(name: string, options?: RestoreOptions): Promise<RestoredContainer>;

  /** Starts a stopped container afresh (not from a checkpoint): what is in memory is gone. */
  startContainer(name: string): Promise<void>;

  /**
   * Removes the container (force: even if running). Missing containers are not an error. withVolumes: also
   * every volume it mounts, named ones included, that no other container here uses (a migration carries
   * volume contents in its archive: a copy left behind is stale, and it makes Podman refuse a later restore
   * of the same container here with "volume with name ... already exists").
   */
  removeContainer(name: string, options?: { force?: boolean; withVolumes?: boolean }): Promise<void>;

  /**
   * What the engine allows the container (privileges, capabilities, devices, mounts, host namespaces,
   * seccomp, image, user), or undefined if it does not know the container. Optional: an engine without it
   * reports no profile, and a destination then expects a container created with no options.
   */
  securityProfile?(nameOrId: string): Promise<ContainerSecurityProfile | undefined>;

  /** Bytes the container wrote into its own filesystem (its writable layer), or undefined if not known. Optional. */
  rootfsChangesBytes?(nameOrId: string): Promise<number | undefined>;

  /**
   * The volumes the container mounts (anonymous ones have a generated name), in mount order; undefined if
   * the engine does not know the container. Optional: without it, volumes move inside the checkpoint archive.
   */
  volumesOf?(nameOrId: string): Promise<VolumeMount[] | undefined>;

  /** Creates an empty volume; a volume of that name here already is a VolumeExistsError (nothing is touched). */
  createVolume?(spec: VolumeSpec): Promise<{ mountpoint: string }>;

  /** Removes a volume no container uses; a missing one is not an error. */
  removeVolume?(name: string): Promise<void>;

  /** Creates and starts a plain container (service level needs nothing more of the engine). */
  runContainer(spec: PlainContainerSpec): Promise<{ id: string }>;
}

/** A volume as a migration recreates it: the engine's own description, which the destination creates anew. */
export interface VolumeSpec {
  name: string;
  /** The volume driver; only 'local' volumes are copied outside the freeze (agents/volumes/). */
  driver: string;
  labels: Record<string, string>;
  /** The driver's options (for 'local': mount type, device, o); volumes with any are not copied outside the freeze. */
  options: Record<string, string>;
}

export interface VolumeMount extends VolumeSpec {
  /** Where the engine keeps the volume's files on its host, as the engine names the path. */
  mountpoint: string;
  /** Where the container sees it. */
  destination: string;
}

export class VolumeExistsError extends Error {
  constructor(
    readonly volume: string,
    readonly where: string,
  ) {
    super(`a volume named "${volume}" already exists on ${where}: a migration never writes into a volume it did not create`);
    this.name = 'VolumeExistsError';
  }
}

export interface PlainContainerSpec {
  name: string;
  /** Image id or name:tag. */
  image: string;
  env?: Record<string, string>;
  capAdd?: string[];
  /** e.g. "unconfined": CRIU inside a container cannot suspend a seccomp filter (see launcher/README.md). */
  seccompProfile?: string;
  binds?: Array<{ source: string; destination: string }>;
}

/** Podman and Docker over their REST APIs; 'cri' a Kubernetes node's runtime over the CRI (agents/cri/cri-engine.ts). */
export type EngineKind = 'podman' | 'docker' | 'cri';

export interface EngineInfo {
  engine: EngineKind;
  version: string;
  apiVersion: string;
  ociRuntime: string;
  /** The OCI runtime's executable, when the engine says (post-copy needs it to be the runtime shim). */
  ociRuntimePath?: string;
  criuVersion: string | undefined;
  kernel: string;
  freeMemoryBytes: number;
  /** Free bytes where the engine keeps its storage (graph root). */
  freeDiskBytes: number;
  /** The directory under which the engine keeps its volumes, as the engine names it. */
  volumePath?: string;
  /** The engine's storage root (containers' bundles are under it), as the engine names it. */
  graphRoot?: string;
}

export type ContainerState = 'created' | 'running' | 'paused' | 'exited' | 'stopped' | 'unknown';

export interface ContainerSummary {
  id: string;
  name: string;
  /** The image reference the container was created from, e.g. localhost/ums/counter:1 */
  image: string;
  imageId: string;
  state: ContainerState;
  /** True when the container's state is a kept checkpoint (podman: State.Checkpointed). */
  checkpointed: boolean;
  pid: number;
  startedAt: string | undefined;
  /** Host ports the container publishes. */
  published: PublishedPort[];
  /** Its labels: a service's evacuation policy is written in them (core/service-policy.ts). */
  labels: Record<string, string>;
}

export interface ImageSummary {
  id: string;
  names: string[];
  sizeBytes: number;
}

export interface CheckpointOptions {
  /** Keep running after the dump (copy instead of move). Default false. */
  leaveRunning?: boolean;
  /** Keep established TCP connections in the dump. Default false. */
  tcpEstablished?: boolean;
  /** Dump file locks the processes hold (CRIU refuses a process holding one otherwise). Default false. */
  fileLocks?: boolean;
  /** Leave the volumes' contents out of the archive (they move on their own: agents/volumes/). Default false. */
  ignoreVolumes?: boolean;
}

export interface RestoreOptions {
  /**
   * Keep the source's IP and MAC addresses (podman: without ignoreStaticIP/ignoreStaticMAC). Default false:
   * the destination's network assigns fresh ones, since the source's may be taken or foreign there. Needed
   * only with tcpEstablished, where peers know the old address.
   */
  keepNetworkIdentity?: boolean;
  /** Restore established TCP connections that the checkpoint kept. Default false. */
  tcpEstablished?: boolean;
  /** Restore the file locks that the checkpoint kept. Default false. */
  fileLocks?: boolean;
  /** The archive holds no volume contents: mount the volumes of the same names that exist here. Default false. */
  ignoreVolumes?: boolean;
}

export interface RestoredContainer {
  id: string;
  name: string;
  /** Engine-reported restore duration, if it reports one. */
  runtimeRestoreMs: number | undefined;
}

export class ContainerNotFoundError extends Error {
  constructor(
    readonly container: string,
    readonly where: string,
  ) {
    super(`container "${container}" does not exist on ${where}`);
    this.name = 'ContainerNotFoundError';
  }
}

export class EngineError extends Error {
  constructor(
    readonly operation: string,
    readonly status: number,
    readonly detail: string,
    options?: { cause?: unknown },
  ) {
    super(`container engine ${operation} failed (HTTP ${status}): ${detail}`, options);
    this.name = 'EngineError';
  }
}

/** CRIU refused to dump or restore; `reason` is CRIU's own, from its log. The engine's (or the CRI's) error is the cause. */
export class CriuError extends Error {
  constructor(
    readonly operation: 'checkpoint' | 'restore',
    readonly reason: string,
    options: { cause: Error },
  ) {
    super(`CRIU could not ${operation === 'checkpoint' ? 'checkpoint' : 'restore'} the container: ${reason}`, options);
    this.name = 'CriuError';
  }
}
