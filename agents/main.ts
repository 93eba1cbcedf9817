#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import { Cloud } from '../core/agent-registration.js';
import { NoticeCloud } from '../core/host-notice.js';
import { DEFAULT_CHUNK_MIB, MAX_CHUNK_MIB } from '../core/checkpoint-artifact.js';
import { AgentId } from '../core/events.js';
import { createLogger, type Logger } from '../core/log.js';
import type { MigrationApproach } from '../core/migration-approach.js';
import type { ApproachDriver } from './approach-driver.js';
import { CriEngine } from './cri/cri-engine.js';
import { OrchestratorLevel } from './orchestrator-level.js';
import { connectNatsBus } from '../core/nats-event-bus.js';
import { openObjectStore } from '../core/object-stores/open-object-store.js';
import { parseAllowedEndpoints } from '../core/object-stores/signed-url-policy.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_LAUNCHER_HOST_DIR } from '../launcher/convention.js';
import { CapabilityProbe, kubeletClientFromEnv, probeCriOrchestratorLevel } from './capability-probe.js';
import { resolveCriu } from './criu-command.js';
import { DEFAULT_MARKER_DIR, type PostCopyHost } from './post-copy/lazy-container.js';
import { parsePortRange, type PortRange } from './post-copy/page-relay.js';
import { probePostCopy, probeRuntimeShim } from './post-copy/post-copy-probe.js';
import { ContainerLevel } from './container-level.js';
import { VolumeMove } from './volumes/volume-move.js';
import { HostAgent } from './host-agent.js';
import { ServiceLevel } from './service-level.js';
import { RestoreJournal } from './restore-journal.js';
import { loadOrCreateSealingKey } from './sealing-key.js';
import { loadOrCreateSigningKey } from './signing-key.js';
import { parseVerifyKeys } from '../core/signed-envelope.js';
import { CommandVerifier } from '../core/command-signature.js';
import { DockerEngine } from './docker-engine.js';
import { openNoticeWatcher } from './notices/open-notice-watcher.js';
import type { NoticeWatcher } from './notices/notice-watcher.js';
import { PodmanEngine } from './podman-engine.js';

function positiveInt(value: string | number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`expected a positive whole number, got "${value}"`);
  return n;
}

function positiveNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`expected a positive number, got "${value}"`);
  return n;
}

function portRange(value: string): PortRange {
  try {
    return parsePortRange(value);
  } catch (error) {
    // commander's error takes no options: the cause is set on it, as Error's own constructor would.
    const invalid = new InvalidArgumentError(`expected a port or a range FROM-TO of ports 1-65535, got "${value}"`);
    invalid.cause = error;
    throw invalid;
  }
}

interface AgentOptions {
  id: string;
  cloud: Cloud;
  region: string;
  store: string;
  engine: 'podman' | 'docker' | 'cri';
  podman: string;
  docker: string;
  cri: string;
  criPodNetwork: 'node' | 'pod';
  criCgroupParent?: string;
  criPodLogs: string;
  nats: string;
  chunkMib: number | string;
  parallel: number | string;
  idleTimeout: number | string;
  stateDir?: string;
  launcherDir: string;
  allowedHttpEndpoints?: string;
  commandVerifyKey?: string;
  pageRelayAddress?: string;
  pageRelayPorts?: PortRange;
  pageRelayListen?: string;
  serviceAddress?: string;
  hostNetns?: string;
  volumesDir?: string;
  notices: string;
  metadataUrl?: string;
  /** MiB/s. */
  maxUploadRate?: number;
  measureUplink: 'on' | 'off' | 'auto';
  azureVmName?: string;
  instanceId?: string;
}

const program = new Command('ums-agent')
  .description('The UMS host agent: registers this host and executes checkpoint/restore commands')
  .addOption(new Option('--id <agentId>', "this agent's id, e.g. azure-eastus-1").env('UMS_AGENT_ID').makeOptionMandatory())
  .addOption(new Option('--cloud <cloud>', 'the cloud this host is in').choices(Cloud.options).env('UMS_CLOUD').makeOptionMandatory())
  .addOption(new Option('--region <region>', 'the region or site').env('UMS_REGION').makeOptionMandatory())
  .addOption(
    new Option('--store <url>', "this host's object store, e.g. azblob://account/container/prefix")
      .env('UMS_STORE_URL')
      .makeOptionMandatory(),
  )
  .addOption(
    new Option('--engine <engine>', "the host's container engine: Podman, Docker, or a Kubernetes node's runtime through the CRI")
      .choices(['podman', 'docker', 'cri'])
      .env('UMS_ENGINE')
      .default('podman'),
  )
  .addOption(
    new Option('--podman <url>', 'Podman API socket (--engine podman)').env('UMS_PODMAN_URL').default('unix:///run/podman/podman.sock'),
  )
  .addOption(
    new Option('--docker <url>', 'dockerd API socket (--engine docker; dockerd runs with "experimental": true)')
      .env('UMS_DOCKER_SOCKET')
      .default('unix:///run/docker.sock'),
  )
  .addOption(
    new Option('--cri <socket>', "the node's CRI runtime socket (--engine cri: containerd >= 2.0 or CRI-O)")
      .env('UMS_CRI_SOCKET')
      .default('unix:///run/containerd/containerd.sock'),
  )
  .addOption(
    new Option(
      '--cri-pod-network <mode>',
      "how this node's pods are networked (--engine cri): the node's network, or a CNI network of their own",
    )
      .choices(['node', 'pod'])
      .env('UMS_CRI_POD_NETWORK')
      .default('pod'),
  )
  .addOption(
    new Option('--cri-cgroup-parent <path>', 'the cgroup parent of the pods the agent restores (--engine cri)').env(
      'UMS_CRI_CGROUP_PARENT',
    ),
  )
  .addOption(
    new Option('--cri-pod-logs <dir>', "where restored pods' logs go (--engine cri; the kubelet's)")
      .env('UMS_CRI_POD_LOGS')
      .default('/var/log/pods'),
  )
  .addOption(new Option('--nats <url>', 'NATS server').env('NATS_URL').default('nats://127.0.0.1:4222'))
  .addOption(
    new Option('--chunk-mib <n>', 'checkpoint chunk size').env('UMS_CHUNK_MIB').default(String(DEFAULT_CHUNK_MIB)).argParser(positiveInt),
  )
  .addOption(
    new Option('--parallel <n>', 'chunks moving at once, each way').env('UMS_TRANSFER_PARALLEL').default('4').argParser(positiveInt),
  )
  .addOption(
    new Option('--launcher-dir <dir>', "host directory holding each service-level container's launcher control dir (<dir>/<container>)")
      .env('UMS_LAUNCHER_DIR')
      .default(DEFAULT_LAUNCHER_HOST_DIR),
  )
  .addOption(
    new Option('--state-dir <dir>', 'where the agent keeps its restore journal and its sealing key (default /var/lib/ums/agent/<id>)').env(
      'UMS_STATE_DIR',
    ),
  )
  .addOption(
    new Option(
      '--allowed-http-endpoints <origins>',
      "object-store endpoints (origins, comma-separated) that signed URLs may point at besides the clouds' own https hosts, e.g. a local emulator on http://127.0.0.1:10000; none by default",
    ).env('UMS_ALLOWED_HTTP_ENDPOINTS'),
  )
  .addOption(
    new Option(
      '--command-verify-key <keys>',
      "the functions' command-signing public key (base64, raw Ed25519; comma-separated while rotating): commands not signed with it are refused",
    ).env('UMS_COMMAND_VERIFY_KEY'),
  )
  .addOption(
    new Option('--idle-timeout <seconds>', 'give up a restore when nothing arrives for this long')
      .env('UMS_IDLE_TIMEOUT_SECONDS')
      .default('120')
      .argParser(positiveInt),
  )
  .addOption(
    new Option(
      '--page-relay-address <address>',
      "the address other hosts' agents reach this host's page relay at (post-copy); without it, this host does not take part in post-copy",
    ).env('UMS_PAGE_RELAY_ADDRESS'),
  )
  .addOption(
    new Option(
      '--page-relay-ports <ports>',
      "the port, or range FROM-TO, this host's page relay listens on when a migration leaves it post-copy (one port per such migration at once): what the firewall opens to the other hosts; default a port the kernel picks",
    )
      .env('UMS_PAGE_RELAY_PORTS')
      .argParser(portRange),
  )
  .addOption(
    new Option(
      '--page-relay-listen <address>',
      "the local address the page relay listens on when the page relay address is not this host's own (a cloud VM's public address is translated: 0.0.0.0); default the page relay address",
    ).env('UMS_PAGE_RELAY_LISTEN'),
  )
  .addOption(
    new Option(
      '--service-address <address>',
      "where clients reach the ports this host's containers publish (its public address): a service's frontman forwards there",
    ).env('UMS_SERVICE_ADDRESS'),
  )
  .addOption(
    new Option(
      '--host-netns <name>',
      "the network namespace of this host's containers, when the agent does not run in it (the local stack's simulated hosts)",
    ).env('UMS_HOST_NETNS'),
  )
  .addOption(
    new Option(
      '--notices <cloud>',
      "watch this host's cloud's instance metadata for eviction and maintenance notices and publish them (host.notice): on, off, or the host's cloud by name",
    )
      .env('UMS_NOTICES')
      .default('off'),
  )
  .addOption(
    new Option(
      '--metadata-url <url>',
      "the instance metadata service to read notices from, instead of the cloud's own (a local stand-in on the local stack)",
    ).env('UMS_METADATA_URL'),
  )
  .addOption(
    new Option('--azure-vm-name <name>', "this VM's name in Azure's Scheduled Events; read from the instance metadata when not given").env(
      'UMS_AZURE_VM_NAME',
    ),
  )
  .addOption(
    new Option(
      '--max-upload-rate <MiB/s>',
      "the most this host's uploads to its store send per second, all migrations together, so that they leave the services that still run here some of the link; default no cap",
    )
      .env('UMS_MAX_UPLOAD_RATE')
      .argParser(positiveNumber),
  )
  .addOption(
    new Option(
      '--measure-uplink <when>',
      'measure the uplink to the store at start by storing random bytes (what an evacuation predicts with): on, off, or auto (when --notices is on)',
    )
      .env('UMS_MEASURE_UPLINK')
      .choices(['on', 'off', 'auto'])
      .default('auto'),
  )
  .addOption(
    new Option(
      '--instance-id <id>',
      "the cloud's id of this VM (Azure resource id, GCE instance id, EC2 instance id), by which the clouds' event services' notices find this agent; read from the instance metadata when notices are watched",
    ).env('UMS_INSTANCE_ID'),
  )
  .addOption(
    new Option(
      '--volumes-dir <dir>',
      "where this agent sees the engine's volume directory, when the engine names it by another path (an agent in another mount namespace or container than the engine)",
    ).env('UMS_VOLUMES_DIR'),
  )
  .action(async (options: AgentOptions) => {
    const chunkMib = positiveInt(options.chunkMib);
    if (chunkMib > MAX_CHUNK_MIB)
      throw new InvalidArgumentError(`--chunk-mib is at most ${MAX_CHUNK_MIB} (destinations refuse larger chunks)`);
    const allowedEndpoints = parseAllowedEndpoints(options.allowedHttpEndpoints);
    // No key, no commands: an agent that accepted unsigned commands would obey anyone who can publish on the broker.
    const commandVerifier = new CommandVerifier(parseVerifyKeys(options.commandVerifyKey, '--command-verify-key (UMS_COMMAND_VERIFY_KEY)'));
    const agentId = AgentId.parse(options.id);
    const noticeCloud = noticesCloud(options.notices, options.cloud);
    const log = createLogger('agent', { agentId });
    const stateDir = options.stateDir ?? join('/var/lib/ums/agent', agentId);
    // Checkpoints sent here are sealed for this key; the private half never leaves the state dir.
    const sealingKey = await loadOrCreateSealingKey(stateDir);
    if (sealingKey.tightenedFrom !== undefined)
      log.warn({ mode: sealingKey.tightenedFrom.toString(8) }, 'the sealing key was readable by others; restricted it to mode 600');
    log.info({ publicKey: sealingKey.publicKey.publicKey, created: sealingKey.created }, 'sealing key ready');
    // The manifests of this host's checkpoints are signed with this key; destinations check them with its public half.
    const signingKey = await loadOrCreateSigningKey(stateDir);
    if (signingKey.tightenedFrom !== undefined)
      log.warn(
        { mode: signingKey.tightenedFrom.toString(8) },
        'the manifest-signing key was readable by others; restricted it to mode 600',
      );
    log.info({ publicKey: signingKey.publicKey.publicKey, created: signingKey.created }, 'manifest-signing key ready');
    const bus = await connectNatsBus({ servers: options.nats, name: `ums-agent-${agentId}` });
    const engine = openEngine(options, agentId, stateDir, log);
    const drivers = engine instanceof CriEngine ? orchestratorDrivers(engine, agentId) : await engineDrivers(engine, options, agentId, log);
    const notices = noticeCloud
      ? openNoticeWatcher({
          cloud: noticeCloud,
          ...(options.metadataUrl !== undefined ? { metadataUrl: options.metadataUrl } : {}),
          ...(options.azureVmName !== undefined ? { azureVmName: options.azureVmName } : {}),
          log,
        })
      : undefined;
    const instanceId = options.instanceId ?? (notices ? await readInstanceId(notices, log) : undefined);
    const agent = new HostAgent({
      identity: {
        agentId,
        cloud: options.cloud,
        region: options.region,
        storeUrl: options.store,
        ...(options.serviceAddress !== undefined ? { serviceAddress: options.serviceAddress } : {}),
        ...(instanceId !== undefined ? { instanceId } : {}),
        sealing: sealingKey.publicKey,
        manifestSigning: signingKey.publicKey,
      },
      sealingKey: sealingKey.privateKey,
      signingKey: { privateKey: signingKey.privateKey, publicKey: signingKey.publicKey },
      commandVerifier,
      engine,
      drivers: drivers.drivers,
      probe: drivers.probe,
      bus,
      store: await openObjectStore(options.store),
      transfer: {
        chunkBytes: chunkMib * 1024 * 1024,
        parallel: positiveInt(options.parallel),
        idleTimeoutMs: positiveInt(options.idleTimeout) * 1000,
        allowedEndpoints,
        ...(options.maxUploadRate !== undefined ? { maxUploadBytesPerSecond: options.maxUploadRate * 1024 * 1024 } : {}),
      },
      ...(options.measureUplink !== 'auto' ? { measureUplink: options.measureUplink === 'on' } : {}),
      journal: new RestoreJournal(stateDir),
      ...(drivers.postCopy ? { postCopy: drivers.postCopy } : {}),
      ...(notices ? { notices } : {}),
      log,
    });
    await agent.start();
    const shutdown = async (signal: string) => {
      log.info({ signal }, 'stopping');
      await agent.stop().catch((error: unknown) => log.error({ err: error }, 'error while stopping'));
      await bus.close();
      process.exit(0);
    };
    process.once('SIGTERM', () => void shutdown('SIGTERM'));
    process.once('SIGINT', () => void shutdown('SIGINT'));
  });

/**
 * Which cloud's notices to watch (--notices): none when off, else the host's own cloud; a host reads only its
 * own cloud's metadata, so another cloud's name, or on for a host outside the three clouds, is refused.
 */
function noticesCloud(value: string, cloud: Cloud): NoticeCloud | undefined {
  if (value === 'off') return undefined;
  const own = NoticeCloud.safeParse(cloud);
  if (!own.success) throw new InvalidArgumentError(`--notices ${value}: this host is in ${cloud}, which announces nothing; say off`);
  if (value !== 'on' && value !== cloud) {
    throw new InvalidArgumentError(
      `--notices ${value}: a host watches its own cloud's notices and this one is in ${cloud}; say on, off or ${cloud}`,
    );
  }
  return own.data;
}

/**
 * This VM's id from its cloud's instance metadata, for the notices of the clouds' event services. Without it the
 * agent still runs and reads its metadata's notices itself: a failure is logged, not fatal.
 */
async function readInstanceId(watcher: NoticeWatcher, log: Logger): Promise<string | undefined> {
  try {
    const instanceId = await watcher.readInstanceId(AbortSignal.timeout(10_000));
    log.info({ instanceId }, "read this VM's id from the instance metadata");
    return instanceId;
  } catch (error) {
    log.warn(
      { err: error },
      "could not read this VM's id from the instance metadata: the event services' notices will not find this agent (set --instance-id)",
    );
    return undefined;
  }
}

/** The host's engine, as --engine says. */
function openEngine(options: AgentOptions, agentId: string, stateDir: string, log: Logger): PodmanEngine | DockerEngine | CriEngine {
  const socket = (url: string) => url.replace(/^unix:\/\//, '');
  switch (options.engine) {
    case 'docker':
      return new DockerEngine({ socketPath: socket(options.docker), where: agentId, logger: log.child({ component: 'docker-engine' }) });
    case 'cri':
      return new CriEngine({
        socketPath: socket(options.cri),
        where: agentId,
        podNetwork: options.criPodNetwork === 'node' ? 'NODE' : 'POD',
        ...(options.criCgroupParent !== undefined ? { cgroupParent: options.criCgroupParent } : {}),
        podLogRoot: options.criPodLogs,
        // Beside the agent's keys: the tars hold process memory.
        checkpointDir: join(stateDir, 'checkpoints'),
        logger: log.child({ component: 'cri-engine' }),
      });
    case 'podman':
      return new PodmanEngine({ socketPath: socket(options.podman), where: agentId, logger: log.child({ component: 'podman-engine' }) });
  }
}

interface Drivers {
  drivers: Partial<Record<MigrationApproach, ApproachDriver>>;
  probe: CapabilityProbe;
  postCopy?: PostCopyHost;
}

/** A Kubernetes node: orchestrator level only, through its runtime's CRI. */
function orchestratorDrivers(engine: CriEngine, agentId: string): Drivers {
  const probe = new CapabilityProbe({
    engine,
    orchestrator: () =>
      probeCriOrchestratorLevel({
        engineInfo: () => engine.info(),
        // A container id no runtime has: the answer says whether CheckpointContainer is implemented.
        checkpointUnknown: () => engine.cri.checkpointContainer('0'.repeat(64), join(tmpdir(), 'ums-probe-never-written.tar')),
        nodeName: agentId,
      }),
    containerTtlMs: 2_000,
  });
  return { drivers: { orchestrator: new OrchestratorLevel(engine, agentId) }, probe };
}

/** Podman or Docker: container level (the engine's CRIU) and service level (the launcher in the image). */
async function engineDrivers(engine: PodmanEngine | DockerEngine, options: AgentOptions, agentId: string, log: Logger): Promise<Drivers> {
  // Post-copy and the memory beside the export go through the runtime shim Podman is given (agents/post-copy/).
  const shim = options.engine === 'podman';
  const serviceLevel = new ServiceLevel(engine, options.launcherDir, agentId);
  const volumeMove = new VolumeMove({
    engine,
    ...(options.volumesDir !== undefined ? { localVolumesDir: options.volumesDir } : {}),
    log: log.child({ component: 'volumes' }),
  });
  const kubelet = kubeletClientFromEnv();
  const postCopy: PostCopyHost | undefined =
    options.pageRelayAddress === undefined || !shim
      ? undefined
      : {
          markerDir: DEFAULT_MARKER_DIR,
          relayAddress: options.pageRelayAddress,
          ...(options.pageRelayListen !== undefined ? { relayListen: options.pageRelayListen } : {}),
          ...(options.pageRelayPorts !== undefined ? { relayPorts: options.pageRelayPorts } : {}),
          ...(options.hostNetns !== undefined ? { netns: options.hostNetns } : {}),
        };
  const probe = new CapabilityProbe({
    engine,
    postCopy: async () =>
      shim
        ? probePostCopy({ engineInfo: () => engine.info(), relayAddress: postCopy?.relayAddress, criu: await resolveCriu() })
        : NO_SHIM_ON_DOCKER,
    memoryBeside: async () => (shim ? probeRuntimeShim({ engineInfo: () => engine.info() }) : NO_SHIM_ON_DOCKER),
    probeLauncher: (container) => serviceLevel.probe(container),
    securityProfile: (container) => engine.securityProfile(container),
    rootfsChanges: (container) => engine.rootfsChangesBytes(container),
    volumes: (container) => volumeMove.traits(container),
    launcherHostDir: options.launcherDir,
    // A status call per container and heartbeat is cheap, and a tree still starting its processes must
    // not be taken for a single process for long.
    containerTtlMs: 2_000,
    ...(kubelet && process.env.UMS_KUBELET_URL ? { kubelet: { url: process.env.UMS_KUBELET_URL, prober: kubelet } } : {}),
  });
  const containerLevel = new ContainerLevel(engine, agentId, volumeMove, shim ? { markerDir: DEFAULT_MARKER_DIR } : undefined);
  // Before any command: a restore or checkpoint a killed agent left (memory beside the export).
  await containerLevel.clearLeftovers().catch((error: unknown) => log.warn({ err: error }, 'could not clear what a killed agent left'));
  return { drivers: { container: containerLevel, service: serviceLevel }, probe, ...(postCopy ? { postCopy } : {}) };
}

/** Docker hosts move containers stop-and-copy, with the memory inside the archive. */
const NO_SHIM_ON_DOCKER = {
  available: false,
  reason: 'post-copy and the memory beside the archive need the runtime shim that Podman is given; this host runs Docker',
} as const;

program.parseAsync().catch((error: unknown) => {
  createLogger('agent').fatal({ err: error }, 'agent failed to start');
  process.exit(1);
});
