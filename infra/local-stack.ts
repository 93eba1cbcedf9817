import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger } from '../core/log.js';
import { generateSigningKeyPair } from '../core/signed-envelope.js';
import { agentPrincipal, CLI_PRINCIPAL, FRONTMAN_PRINCIPAL, FUNCTIONS_PRINCIPAL } from '../core/event-identity.js';
import { provisionBus, type NatsBusOptions } from '../core/nats-event-bus.js';
import { triggers, type FunctionName } from '../functions/triggers.js';
import { AwsMetadataServer } from './metadata-servers/aws-metadata-server.js';
import { AzureMetadataServer } from './metadata-servers/azure-metadata-server.js';
import { GcpMetadataServer } from './metadata-servers/gcp-metadata-server.js';
import { stackInfoPath, type HostEngine, type HostSpec, type StackInfo, type StoreKind } from '../cli/stack-info.js';
import { ADMIN_PRINCIPAL, BRIDGE_PRINCIPAL, createBrokerCredentials, type PrincipalEnv } from './broker-credentials.js';
import { startBrokerRelay } from './broker-relay.js';
import { ChildService } from './child-service.js';
import { freePort } from '../core/free-port.js';
import { startNatsServer } from './nats-server.js';
import { buildCounterImageArchive, DEFAULT_COUNTER_IMAGE } from './images/build-counter-image.js';
import {
  buildLauncherImageArchive,
  DEFAULT_LAUNCHED_COUNTER_IMAGE,
  DEFAULT_LAUNCHED_MULTI_COUNTER_IMAGE,
} from './images/build-service-image.js';
import {
  buildServerImageArchive,
  DEFAULT_MEMCACHED_IMAGE,
  DEFAULT_REDIS_IMAGE,
  DEFAULT_WEBDIS_IMAGE,
} from './images/build-server-images.js';
import { loadImage } from './images/docker-archive.js';
import { startAzurite, startGcsEmulator, startS3Server, type ObjectServer } from './object-servers.js';

/** What the stack needs of a store's server; the file store has no server at all (nothing to crash). */
export type StoreServer = Pick<ObjectServer, 'storeUrl' | 'env' | 'stop'> & Partial<Pick<ObjectServer, 'crash' | 'restart' | 'endpoint'>>;
import { startContainerdHost, type ContainerdHost } from './containerd-host.js';
import { startDockerHost, type DockerHost } from './docker-host.js';
import { startPodmanHost, type PodmanHost } from './podman-host.js';
import { createWan, type Wan } from './wan.js';

/**
 * The whole system on one machine: nats-server with JetStream, a local server per cloud's object
 * storage, the three functions under the functions-framework, the trigger bridge, and one simulated
 * host per cloud (its own Podman service, or its own dockerd when its HostSpec says engine 'docker', with its
 * own storage and network namespace, and its agent), the hosts joined
 * by the stack's own WAN (infra/wan.ts). Every port is picked free, every file lives under the stack's own
 * directory and every namespace is named from it, so stacks never collide.
 */
const log = createLogger('local-stack');
const here = dirname(fileURLToPath(import.meta.url));
/** The compiled tree (dist/); the stack runs the same entry points a deployment runs. */
const distRoot = resolve(here, '..');

export const DEFAULT_HOSTS: HostSpec[] = [
  { agentId: 'azure-eastus-1', cloud: 'azure', region: 'eastus', store: 'azure' },
  { agentId: 'gcp-us-central1-1', cloud: 'gcp', region: 'us-central1', store: 'gcs' },
];

export const AWS_HOST: HostSpec = { agentId: 'aws-us-east-1', cloud: 'aws', region: 'us-east-1', store: 's3' };

export interface LocalStackOptions {
  name: string;
  /** Everything of the stack lives here; removed on stop. */
  dir: string;
  hosts?: HostSpec[];
  /** Lifetime of the signed URLs the planner issues. */
  signedUrlTtlSeconds?: number;
  /** Extra agent settings (UMS_CHUNK_MIB, UMS_TRANSFER_PARALLEL, ...). */
  agentEnv?: Record<string, string>;
  /** Extra settings of the functions and the bridge (UMS_DEADLINE_SCALE, UMS_SUPERVISE_EVERY_SECONDS, ...). */
  functionEnv?: Record<string, string>;
  /**
   * Also load Debian's server images (infra/images/build-server-images.ts) into every Podman and Docker host:
   * all of them (redis, memcached, webdis), or those named. Off by default: the first build of them needs
   * Debian's apt mirror (then they come from the cache).
   */
  serverImages?: boolean | ServerKind[];
  /** Start a frontman (frontman/) in its own namespace on the WAN, fronting these services. */
  frontman?: StackFrontman;
  /**
   * Give each host a stand-in for its cloud's instance metadata service (infra/metadata-servers/) and have its agent
   * watch it for eviction and maintenance notices (a host in no cloud of the three gets none).
   */
  notices?: boolean;
  /** Settings of one agent only, by agent id (e.g. UMS_MAX_UPLOAD_RATE on the host an eviction test empties). */
  hostAgentEnv?: Record<string, Record<string, string>>;
}

/** A service the stack's frontman fronts: clients reach it on the frontman's WAN address at `listenPort`. */
export interface StackFrontedService {
  container: string;
  protocol: 'http' | 'tcp';
  /** The host port the container publishes. */
  port: number;
  listenPort: number;
  holdSeconds?: number;
}

export interface StackFrontman {
  services: StackFrontedService[];
  /** Extra settings (UMS_FRONTMAN_DRAIN_SECONDS, UMS_FRONTMAN_HOLD_SECONDS, ...). */
  env?: Record<string, string>;
}

export const FRONTMAN_ID = 'edge-1';

export interface LocalStack {
  info: StackInfo;
  /** The Podman hosts by agent id. */
  hosts: Map<string, PodmanHost>;
  /** The hosts whose HostSpec.engine is 'docker', by agent id. */
  dockerHosts: Map<string, DockerHost>;
  /** The hosts whose HostSpec.engine is 'containerd' (Kubernetes nodes), by agent id. */
  criNodes: Map<string, ContainerdHost>;
  /** The hosts' network; `wan.addClient(name)` gives a namespace to run client programs in. */
  wan: Wan;
  /** The stack's processes by name (nats, functions, bridge, agent-<id>): to kill and restart in fault tests. */
  services: Map<string, ChildService>;
  /** Environment that gives the SDK of each store's cloud access to the local server (tests only). */
  storeEnv: Record<StoreKind, NodeJS.ProcessEnv>;
  /** The object storage servers by kind: to crash and restart in fault tests. */
  storage: Map<StoreKind, StoreServer>;
  /** With `notices`: each host's metadata stand-in, by agent id (a test announces notices through it). */
  metadata: Map<string, StackMetadataServer>;
  /** The functions' command-signing key (PKCS#8 PEM, mode 0600): fault tests sign stale commands with it. */
  commandSigningKeyFile: string;
  /**
   * How the test harness connects to the broker: as the admin principal (it may read and write everything,
   * e.g. to publish what no component would), over TLS. Spread into connectNatsBus()'s options.
   */
  admin: Omit<NatsBusOptions, 'name'>;
  stop(): Promise<void>;
}

export async function startLocalStack(options: LocalStackOptions): Promise<LocalStack> {
  const dir = resolve(options.dir);
  const hostsSpec = options.hosts ?? DEFAULT_HOSTS;
  await rm(dir, { recursive: true, force: true });
  await mkdir(join(dir, 'logs'), { recursive: true });
  const services = new Map<string, ChildService>();
  const hosts = new Map<string, PodmanHost>();
  const serverKinds: ServerKind[] =
    options.serverImages === true ? ['redis', 'memcached', 'webdis'] : options.serverImages === false ? [] : (options.serverImages ?? []);
  const dockerHosts = new Map<string, DockerHost>();
  const criNodes = new Map<string, ContainerdHost>();
  const storage = new Map<StoreKind, StoreServer>();
  const metadata = new Map<string, StackMetadataServer>();
  const teardown: Array<() => Promise<void>> = [];

  const stop = async (keepLogs = false) => {
    for (const service of [...services.values()].reverse()) await service.stop().catch(() => undefined);
    for (const step of teardown.reverse()) await step().catch((error: unknown) => log.warn({ err: error }, 'teardown step failed'));
    if (!keepLogs) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  };

  try {
    const logFile = (name: string) => join(dir, 'logs', `${name}.log`);
    await mkdir(join(dir, 'nats'), { recursive: true });
    // One nkey per principal (each agent, the functions, the bridge, the CLI, the frontman, the admin) and the
    // broker's TLS material, all under the stack's dir; the server gets each principal's permissions.
    const credentials = await createBrokerCredentials(
      join(dir, 'security'),
      hostsSpec.map((h) => h.agentId),
    );
    const nats = await startNatsServer(join(dir, 'nats'), `ums-${options.name}`, { credentials });
    const natsUrl = nats.url;
    services.set('nats', nats.service);
    const admin = { servers: natsUrl, ...toBusOptions(credentials.envFor(ADMIN_PRINCIPAL)) };
    // The set-up step: streams and buckets are provisioned once, as the admin; components only bind to them.
    await provisionBus({ ...admin, name: 'ums-local-stack-setup' });

    const kinds = [...new Set(hostsSpec.map((h) => h.store))];
    const startStorage: Record<StoreKind, (d: string) => Promise<StoreServer>> = {
      azure: startAzurite,
      gcs: startGcsEmulator,
      s3: startS3Server,
      file: startFileStore,
    };
    for (const kind of kinds) {
      const server = await startStorage[kind](join(dir, 'storage', kind));
      storage.set(kind, server);
      teardown.push(() => server.stop());
    }
    const storeEnv = Object.fromEntries([...storage].map(([kind, server]) => [kind, server.env])) as Record<StoreKind, NodeJS.ProcessEnv>;
    const allStoreEnv = Object.assign({}, ...[...storage.values()].map((s) => s.env)) as NodeJS.ProcessEnv;
    // The emulators speak plain http on loopback: the agents may fetch signed URLs there, and nowhere else
    // but the clouds' own https hosts. Explicit here, never a default.
    const allowedHttpEndpoints = [...storage.values()].flatMap((s) => (s.endpoint === undefined ? [] : [s.endpoint])).join(',');

    // The services log to their own files at info level whatever this process logs at: their log
    // lines are what the readiness checks and a post-mortem read.
    const serviceEnv: NodeJS.ProcessEnv = { ...process.env, UMS_LOG_LEVEL: 'info' };
    const functionUrls = {} as Record<FunctionName, string>;
    // The key the bridge signs its requests to the functions with (core/function-auth.ts): fresh for each
    // stack, only in the environment of the bridge and the functions, never logged nor in stack.json.
    const functionAuthEnv = { UMS_FUNCTION_AUTH: 'bridge-hmac', UMS_FUNCTION_AUTH_KEY: randomBytes(32).toString('base64') };
    // The key the functions sign their commands with (core/signed-envelope.ts), fresh for each stack: the
    // private half in a file only the functions are told of, the public half in every agent's environment.
    const commandSigningKeyFile = join(dir, 'secrets', 'command-signing-key.pem');
    const commandVerifyKey = await writeCommandSigningKey(commandSigningKeyFile);
    for (const fn of Object.keys(triggers) as FunctionName[]) {
      const port = await freePort();
      const url = `http://127.0.0.1:${port}/`;
      const service = await new ChildService({
        name: `function-${fn}`,
        command: process.execPath,
        // The framework's server for this function, on loopback (infra/serve-function.ts: its CLI binds every interface).
        args: [
          join(distRoot, 'infra', 'serve-function.js'),
          `--target=${fn}`,
          `--port=${port}`,
          '--host=127.0.0.1',
          `--source=${join(distRoot, 'functions', 'index.js')}`,
        ],
        // The functions sign URLs for every cloud's store, so they get every store's credentials.
        env: {
          ...serviceEnv,
          ...options.functionEnv,
          ...allStoreEnv,
          ...functionAuthEnv,
          UMS_COMMAND_SIGNING_KEY_FILE: commandSigningKeyFile,
          ...credentials.envFor(FUNCTIONS_PRINCIPAL),
          NATS_URL: natsUrl,
          UMS_SIGNED_URL_TTL_SECONDS: String(options.signedUrlTtlSeconds ?? 900),
        },
        logFile: logFile(`function-${fn}`),
        // Any HTTP answer means the server listens (a bare GET is not a CloudEvent, so it answers an error).
        ready: async () => (await fetch(url, { method: 'GET', signal: AbortSignal.timeout(1000) })).status > 0,
      }).start();
      services.set(`function-${fn}`, service);
      functionUrls[fn] = url;
    }

    const bridge = await new ChildService({
      name: 'bridge',
      command: process.execPath,
      args: [join(distRoot, 'bridge', 'main.js')],
      env: {
        ...serviceEnv,
        ...options.functionEnv,
        ...functionAuthEnv,
        ...credentials.envFor(BRIDGE_PRINCIPAL),
        NATS_URL: natsUrl,
        UMS_FUNCTION_ENDPOINTS: JSON.stringify(functionUrls),
      },
      logFile: logFile('bridge'),
      ready: async () => (await readFile(logFile('bridge'), 'utf8')).includes('trigger bound'),
    }).start();
    services.set('bridge', bridge);

    const wan = await createWan({ stackName: options.name, stackDir: dir });
    // Torn down after the hosts (teardown runs in reverse): the hosts' namespaces go first, then the WAN's.
    teardown.push(() => wan.destroy());

    const info: StackInfo = {
      name: options.name,
      dir,
      pid: process.pid,
      natsUrl,
      natsCa: credentials.tls.caFile,
      cliCredentials: credentials.envFor(CLI_PRINCIPAL).UMS_NATS_CREDENTIALS,
      startedAt: new Date().toISOString(),
      image: DEFAULT_COUNTER_IMAGE,
      ...(serverKinds.length > 0 ? { serverImages: serverKinds.map((kind) => SERVER_IMAGES[kind]) } : {}),
      hosts: [],
      functions: functionUrls,
      wan: { netns: wan.netns, subnet: wan.subnet, bridgeAddress: wan.bridgeAddress },
    };
    // Built (or taken from the cache) once; every host loads the same archives, so every host, whatever its
    // engine, holds each image under the same id, which a checkpoint restored elsewhere needs.
    const images = await stackImages(serverKinds);
    for (const [index, spec] of hostsSpec.entries()) {
      // Short paths keep the unix socket paths well under their 108-byte limit.
      const hostDir = join(dir, `h${index}`);
      const engine: HostEngine = spec.engine ?? 'podman';
      const host =
        engine === 'docker'
          ? await startStackDockerHost(spec, hostDir, dockerHosts)
          : engine === 'containerd'
            ? await startStackCriNode(spec, hostDir, criNodes)
            : await startStackPodmanHost(spec, hostDir, hosts);
      teardown.push(() => host.destroy());
      const onWan = await wan.attachHost(spec.agentId, host.netns);
      // A node's pods are the test's or the orchestrator's: the counter is all they run here.
      for (const image of engine === 'containerd' ? images.slice(0, 1) : images) await host.loadImage(image.tag, image.archive);
      const launcherDir = join(hostDir, 'launcher');
      await mkdir(launcherDir, { recursive: true, mode: 0o700 });
      const server = storage.get(spec.store);
      if (!server) throw new Error(`no storage server for ${spec.store}`);
      const agentLog = logFile(`agent-${spec.agentId}`);
      const metadataServer = options.notices === true ? metadataServerFor(spec) : undefined;
      const metadataUrl = metadataServer === undefined ? undefined : await metadataServer.start(await freePort());
      if (metadataServer !== undefined) {
        metadata.set(spec.agentId, metadataServer);
        teardown.push(() => metadataServer.stop());
      }
      const agent = await new ChildService({
        name: `agent-${spec.agentId}`,
        command: process.execPath,
        args: [join(distRoot, 'agents', 'main.js')],
        // Only its own cloud's credentials: it reads other clouds' archives through signed URLs.
        env: {
          ...serviceEnv,
          ...options.agentEnv,
          ...server.env,
          ...credentials.envFor(agentPrincipal(spec.agentId)),
          NATS_URL: natsUrl,
          UMS_AGENT_ID: spec.agentId,
          UMS_CLOUD: spec.cloud,
          UMS_REGION: spec.region,
          UMS_STORE_URL: server.storeUrl,
          ...host.engineEnv,
          UMS_STATE_DIR: join(hostDir, 'agent-state'),
          UMS_LAUNCHER_DIR: launcherDir,
          UMS_ALLOWED_HTTP_ENDPOINTS: allowedHttpEndpoints,
          UMS_COMMAND_VERIFY_KEY: commandVerifyKey,
          // post-copy: the agent runs in this machine's namespace, its host's containers (and their CRIU) in
          // the host's: the page relay runs there, reached on the host's WAN address.
          UMS_PAGE_RELAY_ADDRESS: onWan.address,
          // Its published ports are reached on the WAN: where the frontman forwards.
          UMS_SERVICE_ADDRESS: onWan.address,
          UMS_HOST_NETNS: host.netns,
          // Podman names its volumes by the path it sees in its own mount namespace; Docker's are where the
          // agent sees them, <data-root>/volumes, said all the same.
          UMS_VOLUMES_DIR: host.volumesDir,
          ...(metadataUrl !== undefined
            ? { UMS_NOTICES: 'on', UMS_METADATA_URL: metadataUrl, ...(spec.cloud === 'azure' ? { UMS_AZURE_VM_NAME: spec.agentId } : {}) }
            : {}),
          ...options.hostAgentEnv?.[spec.agentId],
        },
        logFile: agentLog,
        ready: async () => (await readFile(agentLog, 'utf8')).includes('agent started'),
      }).start();
      services.set(`agent-${spec.agentId}`, agent);
      info.hosts.push({
        ...spec,
        engine,
        engineUrl: host.url,
        ...(engine === 'podman' ? { podmanUrl: host.url } : {}),
        socketPath: host.socketPath,
        storeUrl: server.storeUrl,
        netns: host.netns,
        wanAddress: onWan.address,
        agentLog,
        launcherDir,
        ...(metadataUrl !== undefined ? { metadataUrl } : {}),
      });
    }
    if (options.frontman !== undefined) {
      info.frontman = await startFrontman(options.frontman, {
        wan,
        dir,
        natsPort: Number(new URL(natsUrl).port),
        env: { ...serviceEnv, ...credentials.envFor(FRONTMAN_PRINCIPAL), NATS_URL: natsUrl },
        services,
        teardown,
      });
    }
    await writeFile(stackInfoPath(dir), JSON.stringify(info, null, 2));
    log.info({ name: options.name, natsUrl, hosts: info.hosts.map((h) => h.agentId) }, 'local stack ready');
    return {
      info,
      hosts,
      dockerHosts,
      criNodes,
      wan,
      services,
      storeEnv,
      storage,
      metadata,
      commandSigningKeyFile,
      admin,
      stop: () => stop(),
    };
  } catch (error) {
    // Keep the logs: they say why it failed. The next start with the same dir clears them.
    await stop(true);
    throw error;
  }
}

/** What the stack needs of a simulated host, whichever its engine. */
interface StackHost {
  netns: string;
  url: string;
  socketPath: string;
  volumesDir: string;
  /** How the host's agent reaches its engine (agents/main.ts: UMS_ENGINE and the engine's socket). */
  engineEnv: Record<string, string>;
  loadImage(tag: string, archive: string): Promise<unknown>;
  destroy(): Promise<void>;
}

async function startStackPodmanHost(spec: HostSpec, dir: string, hosts: Map<string, PodmanHost>): Promise<StackHost> {
  const host = await startPodmanHost({ name: spec.agentId, dir });
  hosts.set(spec.agentId, host);
  if (host.netns === undefined) {
    await host.destroy();
    throw new Error(`host ${spec.agentId} has no network namespace to join to the WAN`);
  }
  return {
    netns: host.netns,
    url: host.url,
    socketPath: host.socketPath,
    volumesDir: host.volumesDir,
    engineEnv: { UMS_ENGINE: 'podman', UMS_PODMAN_URL: host.url },
    loadImage: (tag, archive) => loadImage(host.url, tag, archive, host.env),
    destroy: () => host.destroy(),
  };
}

async function startStackDockerHost(spec: HostSpec, dir: string, dockerHosts: Map<string, DockerHost>): Promise<StackHost> {
  const host = await startDockerHost({ name: spec.agentId, dir });
  dockerHosts.set(spec.agentId, host);
  return {
    netns: host.netns,
    url: host.url,
    socketPath: host.socketPath,
    volumesDir: host.volumesDir,
    engineEnv: { UMS_ENGINE: 'docker', UMS_DOCKER_SOCKET: host.socketPath },
    loadImage: (tag, archive) => host.loadImage(tag, archive),
    destroy: () => host.destroy(),
  };
}

/**
 * A Kubernetes node's runtime (infra/containerd-host.ts): its agent speaks the CRI to it, its pods use the
 * node's network namespace (no CNI here), and their logs go under the host's dir.
 */
async function startStackCriNode(spec: HostSpec, dir: string, criNodes: Map<string, ContainerdHost>): Promise<StackHost> {
  const host = await startContainerdHost({ name: spec.agentId, dir });
  criNodes.set(spec.agentId, host);
  return {
    netns: host.netns,
    url: `unix://${host.socketPath}`,
    socketPath: host.socketPath,
    volumesDir: '',
    engineEnv: {
      UMS_ENGINE: 'cri',
      UMS_CRI_SOCKET: host.socketPath,
      UMS_CRI_POD_NETWORK: 'node',
      UMS_CRI_CGROUP_PARENT: host.cgroupParent,
      UMS_CRI_POD_LOGS: criPodLogs(host),
    },
    // The archives are tagged; containerd names each image by its tag and by digest.
    loadImage: (_tag, archive) => host.importImage(archive),
    destroy: () => host.destroy(),
  };
}

/** Where a simulated node's agent puts restored pods' logs (the kubelet's /var/log/pods). */
export function criPodLogs(node: ContainerdHost): string {
  return join(node.dir, 'pods');
}

/** The servers whose Debian images a stack can load (LocalStackOptions.serverImages), and their refs. */
export type ServerKind = 'redis' | 'memcached' | 'webdis';
const SERVER_IMAGES: Record<ServerKind, string> = {
  redis: DEFAULT_REDIS_IMAGE,
  memcached: DEFAULT_MEMCACHED_IMAGE,
  webdis: DEFAULT_WEBDIS_IMAGE,
};

/** The images every host gets, as cached docker-archives (infra/images/): the counter first, the launched ones, then servers. */
async function stackImages(servers: ServerKind[]): Promise<Array<{ tag: string; archive: string }>> {
  const images = [
    { tag: DEFAULT_COUNTER_IMAGE, archive: await buildCounterImageArchive(DEFAULT_COUNTER_IMAGE) },
    // The same counter with the service-level launcher inside, single- and multi-process.
    { tag: DEFAULT_LAUNCHED_COUNTER_IMAGE, archive: await buildLauncherImageArchive(DEFAULT_LAUNCHED_COUNTER_IMAGE, { base: 'counter' }) },
    {
      tag: DEFAULT_LAUNCHED_MULTI_COUNTER_IMAGE,
      archive: await buildLauncherImageArchive(DEFAULT_LAUNCHED_MULTI_COUNTER_IMAGE, { base: 'multi-counter' }),
    },
  ];
  for (const kind of servers)
    images.push({ tag: SERVER_IMAGES[kind], archive: (await buildServerImageArchive(kind, SERVER_IMAGES[kind])).archive });
  return images;
}

/**
 * Hosts named in `names` (agent ids or clouds) switched to `engine`; `ums stack up --docker-hosts` and
 * `--cri-hosts`. Every name must match a host: a typo would otherwise silently give a Podman host.
 */
export function withHostEngine(hosts: HostSpec[], names: string[], engine: HostEngine): HostSpec[] {
  const unknown = names.filter((name) => !hosts.some((h) => h.agentId === name || h.cloud === name));
  if (unknown.length > 0) {
    const known = hosts.map((h) => `${h.cloud} (${h.agentId})`).join(', ');
    throw new Error(`no host ${unknown.join(', ')} in the stack; its hosts are ${known}`);
  }
  return hosts.map((h) => (names.includes(h.agentId) || names.includes(h.cloud) ? { ...h, engine } : h));
}

/**
 * The frontman at its own place on the WAN, as at an edge that is none of the hosts: removing a host's
 * namespace leaves it serving. It reaches the broker through the stack's relay (infra/broker-relay.ts).
 */
async function startFrontman(
  spec: StackFrontman,
  stack: {
    wan: Wan;
    dir: string;
    natsPort: number;
    env: NodeJS.ProcessEnv;
    services: Map<string, ChildService>;
    teardown: Array<() => Promise<void>>;
  },
): Promise<NonNullable<StackInfo['frontman']>> {
  const edge = await stack.wan.addClient('frontman');
  const relay = await startBrokerRelay(edge, stack.natsPort, join(stack.dir, 'nats', 'frontman-relay.sock'));
  stack.teardown.push(() => relay.stop());
  const services = spec.services.map(({ container, protocol, port, listenPort, holdSeconds }) => ({
    container,
    protocol,
    port,
    listen: `${edge.address}:${listenPort}`,
    ...(holdSeconds !== undefined ? { holdSeconds } : {}),
  }));
  const log = join(stack.dir, 'logs', 'frontman.log');
  const frontman = await new ChildService({
    name: 'frontman',
    command: 'ip',
    args: ['netns', 'exec', edge.netns, process.execPath, join(distRoot, 'frontman', 'main.js')],
    env: { ...stack.env, ...spec.env, UMS_FRONTMAN_ID: FRONTMAN_ID, UMS_FRONTMAN_SERVICES: JSON.stringify(services) },
    logFile: log,
    ready: async () => (await readFile(log, 'utf8')).includes('frontman started'),
  }).start();
  stack.services.set('frontman', frontman);
  return {
    id: FRONTMAN_ID,
    netns: edge.netns,
    address: edge.address,
    services: services.map(({ container, protocol, listen, port }) => ({ container, protocol, listen, port })),
    log,
  };
}

/** Writes a fresh Ed25519 private key (PKCS#8 PEM, mode 0600, its dir 0700); returns the public key (base64 raw). */
async function writeCommandSigningKey(path: string): Promise<string> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const { privateKey, publicKey } = generateSigningKeyPair();
  await writeFile(path, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600, flag: 'wx' });
  return publicKey.publicKey;
}

/** connectNatsBus() options from a principal's environment (UMS_NATS_CREDENTIALS, UMS_NATS_CA). */
function toBusOptions(env: PrincipalEnv): Pick<NatsBusOptions, 'credentials' | 'ca'> {
  return { credentials: env.UMS_NATS_CREDENTIALS, ca: env.UMS_NATS_CA };
}

/** The file "store" needs no server: a directory that every simulated host can read. */
async function startFileStore(dir: string): Promise<StoreServer> {
  await mkdir(dir, { recursive: true });
  return { storeUrl: `file://${dir}`, env: {}, stop: async () => undefined };
}

export type StackMetadataServer = AzureMetadataServer | GcpMetadataServer | AwsMetadataServer;

/** The stand-in for the host's cloud's instance metadata service; none for a host outside the three clouds. */
function metadataServerFor(spec: HostSpec): StackMetadataServer | undefined {
  switch (spec.cloud) {
    case 'azure':
      // Scheduled Events name the VM: the agent is told its name (UMS_AZURE_VM_NAME), as it reads it on a real VM.
      return new AzureMetadataServer({ vmName: spec.agentId });
    case 'gcp':
      // A spot VM, which GCP stops on maintenance: both its notices end the host.
      return new GcpMetadataServer({ preemptible: true, onHostMaintenance: 'TERMINATE' });
    case 'aws':
      return new AwsMetadataServer();
    default:
      return undefined;
  }
}
