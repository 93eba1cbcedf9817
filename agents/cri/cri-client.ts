import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { criErrorFrom } from './cri-errors.js';

/**
 * A client of the Kubernetes CRI (runtime.v1.RuntimeService and ImageService), written from the API's
 * definition (agents/cri/api.proto, vendored from k8s.io/cri-api) and loaded at run time with
 * @grpc/proto-loader: the calls the kubelet makes to run a pod and to checkpoint a container, typed for what
 * UMS reads and sends. Field names are the proto's in camelCase; int64 values come as decimal strings
 * (nanosecond timestamps do not fit a JS number); enums come as their names.
 *
 * Every failure is a CriError (cri-errors.ts) with the gRPC status as a code and the runtime's own message.
 */

export type NamespaceMode = 'POD' | 'CONTAINER' | 'NODE' | 'TARGET';
export type ContainerState = 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';
export type PodSandboxState = 'SANDBOX_READY' | 'SANDBOX_NOTREADY';

export interface KeyValue {
  key: string;
  value: string;
}

export interface PodSandboxMetadata {
  name: string;
  uid: string;
  namespace: string;
  attempt?: number;
}

export interface PodSandboxConfig {
  metadata: PodSandboxMetadata;
  hostname?: string;
  /** Where the runtime puts the containers' logs: a container's logPath is relative to it. */
  logDirectory?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: {
    cgroupParent?: string;
    securityContext?: { namespaceOptions?: { network?: NamespaceMode; pid?: NamespaceMode; ipc?: NamespaceMode } };
  };
}

export interface ImageSpec {
  image: string;
  userSpecifiedImage?: string;
  annotations?: Record<string, string>;
}

export interface ContainerMetadata {
  name: string;
  attempt?: number;
}

export interface ContainerConfig {
  metadata: ContainerMetadata;
  /** An image reference; for a restore, containerd 2.x also takes a checkpoint archive's path (cri-checkpoint.ts). */
  image: ImageSpec;
  command?: string[];
  args?: string[];
  workingDir?: string;
  envs?: KeyValue[];
  /** Relative to the sandbox's logDirectory. */
  logPath?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface ContainerStatus {
  id: string;
  metadata: ContainerMetadata | null;
  state: ContainerState;
  /** Nanoseconds since the epoch, as a decimal string. */
  createdAt: string;
  startedAt: string;
  finishedAt: string;
  exitCode: number;
  image: ImageSpec | null;
  imageRef: string;
  reason: string;
  message: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  logPath: string;
}

export interface Container {
  id: string;
  podSandboxId: string;
  metadata: ContainerMetadata | null;
  image: ImageSpec | null;
  imageRef: string;
  state: ContainerState;
  createdAt: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface ContainerFilter {
  id?: string;
  state?: { state: ContainerState };
  podSandboxId?: string;
  labelSelector?: Record<string, string>;
}

export interface PodSandboxStatus {
  id: string;
  metadata: PodSandboxMetadata | null;
  state: PodSandboxState;
  createdAt: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface Image {
  id: string;
  repoTags: string[];
  repoDigests: string[];
  /** Bytes, as a decimal string. */
  size: string;
}

export interface RuntimeVersion {
  version: string;
  runtimeName: string;
  runtimeVersion: string;
  runtimeApiVersion: string;
}

/** The kubelet's default --runtime-request-timeout, which it also uses for a checkpoint without a timeout. */
export const CRI_DEFAULT_TIMEOUT_MS = 120_000;

export interface CriClientOptions {
  /** The runtime's socket: a path, or unix:///path. */
  socket: string;
  /** How this runtime is named in errors and logs. Default: the socket path. */
  name?: string;
  /** Per-call deadline unless a call says otherwise. Default CRI_DEFAULT_TIMEOUT_MS. */
  timeoutMs?: number;
}

interface CallOptions {
  timeoutMs?: number;
}

/** What proto-loader makes of one rpc: its path and how to (de)serialise its messages. */
interface UnaryMethod<Req, Res> {
  path: string;
  requestSerialize: (value: Req) => Buffer;
  responseDeserialize: (bytes: Buffer) => Res;
}

type Methods = Record<string, UnaryMethod<object, unknown>>;

const PROTO_OPTIONS = { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true } as const;

/**
 * The vendored api.proto: beside this module when run from source, else up the tree at agents/cri/ (the
 * compiler copies no .proto into its outDir, so dist/agents/cri/ has none).
 */
function findProto(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (let dir = here; ; dir = dirname(dir)) {
    for (const candidate of [join(dir, 'api.proto'), join(dir, 'agents', 'cri', 'api.proto')]) {
      if (existsSync(candidate)) return candidate;
    }
    if (dirname(dir) === dir) throw new Error(`the CRI API definition (agents/cri/api.proto) is not found above ${here}`);
  }
}

let loaded: { runtime: Methods; image: Methods } | undefined;

/** Loads the proto once per process (2,000 lines to parse), on first use. */
function services(): { runtime: Methods; image: Methods } {
  if (loaded !== undefined) return loaded;
  const definition = loadSync(findProto(), PROTO_OPTIONS);
  const pick = (name: string): Methods => {
    const service = definition[name];
    if (service === undefined || 'format' in service) throw new Error(`${name} is not a service in the CRI API definition`);
    // proto-loader types its methods as MethodDefinition<any, any>: the Methods return type is where they get ours.
    return service;
  };
  loaded = { runtime: pick('runtime.v1.RuntimeService'), image: pick('runtime.v1.ImageService') };
  return loaded;
}

export class CriClient {
  private readonly client: Client;
  private readonly where: string;
  private readonly timeoutMs: number;
  private readonly runtime: Methods;
  private readonly image: Methods;

  constructor(options: CriClientOptions) {
    const socketPath = options.socket.replace(/^unix:\/\//, '');
    // grpc-js takes unix:<absolute path>; the authority does not matter on a unix socket.
    this.client = new Client(`unix:${socketPath}`, credentials.createInsecure());
    this.where = `CRI runtime ${options.name ?? socketPath}`;
    this.timeoutMs = options.timeoutMs ?? CRI_DEFAULT_TIMEOUT_MS;
    ({ runtime: this.runtime, image: this.image } = services());
  }

  async version(): Promise<RuntimeVersion> {
    return this.call<RuntimeVersion>(this.runtime, 'Version', { version: 'v1' });
  }

  /** Creates and starts a pod sandbox; resolves with its id. */
  async runPodSandbox(config: PodSandboxConfig, options: CallOptions & { runtimeHandler?: string } = {}): Promise<string> {
    const res = await this.call<{ podSandboxId: string }>(
      this.runtime,
      'RunPodSandbox',
      { config, runtimeHandler: options.runtimeHandler ?? '' },
      options,
    );
    return res.podSandboxId;
  }

  async podSandboxStatus(podSandboxId: string): Promise<PodSandboxStatus> {
    return (await this.call<{ status: PodSandboxStatus }>(this.runtime, 'PodSandboxStatus', { podSandboxId })).status;
  }

  async listPodSandboxes(): Promise<PodSandboxStatus[]> {
    return (await this.call<{ items: PodSandboxStatus[] }>(this.runtime, 'ListPodSandbox', {})).items;
  }

  async stopPodSandbox(podSandboxId: string, options: CallOptions = {}): Promise<void> {
    await this.call(this.runtime, 'StopPodSandbox', { podSandboxId }, options);
  }

  async removePodSandbox(podSandboxId: string, options: CallOptions = {}): Promise<void> {
    await this.call(this.runtime, 'RemovePodSandbox', { podSandboxId }, options);
  }

  /** Creates a container in a sandbox (the kubelet passes the sandbox's config again); resolves with its id. */
  async createContainer(
    podSandboxId: string,
    config: ContainerConfig,
    sandboxConfig: PodSandboxConfig,
    options: CallOptions = {},
  ): Promise<string> {
    const res = await this.call<{ containerId: string }>(this.runtime, 'CreateContainer', { podSandboxId, config, sandboxConfig }, options);
    return res.containerId;
  }

  async startContainer(containerId: string, options: CallOptions = {}): Promise<void> {
    await this.call(this.runtime, 'StartContainer', { containerId }, options);
  }

  /** Stops a container: SIGTERM, then SIGKILL after `graceSeconds` (0: at once). */
  async stopContainer(containerId: string, graceSeconds: number, options: CallOptions = {}): Promise<void> {
    await this.call(this.runtime, 'StopContainer', { containerId, timeout: graceSeconds }, options);
  }

  async removeContainer(containerId: string, options: CallOptions = {}): Promise<void> {
    await this.call(this.runtime, 'RemoveContainer', { containerId }, options);
  }

  /**
   * The container's status; with `verbose`, also its init process's pid, from the runtime's verbose info
   * (containerd and CRI-O put it in the JSON under info["info"]), when the runtime says.
   */
  async containerStatus(containerId: string, options: { verbose?: boolean } = {}): Promise<ContainerStatus & { pid?: number }> {
    const verbose = options.verbose === true;
    const res = await this.call<{ status: ContainerStatus; info?: Record<string, string> }>(this.runtime, 'ContainerStatus', {
      containerId,
      verbose,
    });
    const pid = verbose ? pidFromInfo(res.info?.info) : undefined;
    return { ...res.status, ...(pid !== undefined ? { pid } : {}) };
  }

  async listContainers(filter: ContainerFilter = {}): Promise<Container[]> {
    return (await this.call<{ containers: Container[] }>(this.runtime, 'ListContainers', { filter })).containers;
  }

  /**
   * Checkpoints a running container into a tar at `location`, a path on the runtime's host (the kubelet's
   * POST /checkpoint is this call with /var/lib/kubelet/checkpoints/checkpoint-<pod>_<ns>-<ctr>-<time>.tar).
   * The container keeps running: the CRI call was made for forensics. `timeoutSeconds` goes to the runtime
   * (0: its default); the call's own deadline is that plus 15 s, so the runtime's answer comes first.
   */
  async checkpointContainer(containerId: string, location: string, options: { timeoutSeconds?: number } = {}): Promise<void> {
    const timeout = options.timeoutSeconds ?? 0;
    const timeoutMs = timeout > 0 ? (timeout + 15) * 1000 : this.timeoutMs;
    await this.call(this.runtime, 'CheckpointContainer', { containerId, location, timeout }, { timeoutMs });
  }

  /** The image the runtime knows by `image` (a reference or an id), or undefined when it has none. */
  async imageStatus(image: string): Promise<Image | undefined> {
    const res = await this.call<{ image: Image | null }>(this.image, 'ImageStatus', { image: { image }, verbose: false });
    return res.image ?? undefined;
  }

  async listImages(): Promise<Image[]> {
    return (await this.call<{ images: Image[] }>(this.image, 'ListImages', {})).images;
  }

  /** Pulls an image from its registry; resolves with the runtime's reference for it. */
  async pullImage(image: string, sandboxConfig?: PodSandboxConfig, options: CallOptions = {}): Promise<string> {
    const res = await this.call<{ imageRef: string }>(
      this.image,
      'PullImage',
      { image: { image }, ...(sandboxConfig !== undefined ? { sandboxConfig } : {}) },
      options,
    );
    return res.imageRef;
  }

  close(): void {
    this.client.close();
  }

  private call<Res>(service: Methods, name: string, request: object, options: CallOptions = {}): Promise<Res> {
    const method = service[name];
    if (method === undefined) return Promise.reject(new Error(`the CRI API definition has no method ${name}`));
    const deadline = Date.now() + (options.timeoutMs ?? this.timeoutMs);
    return new Promise<Res>((resolve, reject) => {
      this.client.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        // The shape is the proto's (proto-loader decodes by the definition); Res names the fields we read.
        (bytes: Buffer) => method.responseDeserialize(bytes) as Res,
        request,
        new Metadata(),
        { deadline },
        (error: ServiceError | null, response?: Res) => {
          if (error !== null) return reject(criErrorFrom(error, name, this.where));
          if (response === undefined) return reject(new Error(`${this.where}: ${name} answered without a message`));
          resolve(response);
        },
      );
    });
  }
}

/** The pid in a runtime's verbose info JSON, or undefined (not said, or not a pid). */
function pidFromInfo(info: string | undefined): number | undefined {
  if (info === undefined) return undefined;
  try {
    const pid = (JSON.parse(info) as { pid?: unknown }).pid;
    return typeof pid === 'number' && Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
