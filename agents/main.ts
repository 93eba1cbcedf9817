#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import { Cloud } from '../core/agent-registration.js';
import { NoticeCloud } from '../core/host-notice.js';
import { DEFAULT_CHUNK_MIB, MAX_CHUNK_MIB } from '../core/checkpoint-artifact.js';
import { AgentId } from '../core/events.js';
import { createLogger } from '../core/log.js';
import { connectNatsBus } from '../core/nats-event-bus.js';
import { openObjectStore } from '../core/object-stores/open-object-store.js';
import { parseAllowedEndpoints } from '../core/object-stores/signed-url-policy.js';
import { join } from 'node:path';
import { DEFAULT_LAUNCHER_HOST_DIR } from '../launcher/convention.js';
import { CapabilityProbe, kubeletClientFromEnv } from './capability-probe.js';
import { resolveCriu } from './criu-command.js';
import { DEFAULT_MARKER_DIR, type PostCopyHost } from './post-copy/lazy-container.js';
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
import { PodmanEngine } from './podman-engine.js';

function positiveInt(value: string | number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`expected a positive whole number, got "${value}"`);
  return n;
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
    new Option('--engine <engine>', "the host's container engine").choices(['podman', 'docker']).env('UMS_ENGINE').default('podman'),
  )
  .addOption(
    new Option('--podman <url>', 'Podman API socket (--engine podman)').env('UMS_PODMAN_URL').default('unix:///run/podman/podman.sock'),
  )
  .addOption(
    new Option('--docker <url>', 'dockerd API socket (--engine docker; dockerd runs with "experimental": true)')
      .env('UMS_DOCKER_SOCKET')
      .default('unix:///run/docker.sock'),
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
      '--volumes-dir <dir>',
      "where this agent sees the engine's volume directory, when the engine names it by another path (an agent in another mount namespace or container than the engine)",
    ).env('UMS_VOLUMES_DIR'),
  )
  .action(
    async (options: {
      id: string;
      cloud: Cloud;
      region: string;
      store: string;
      engine: 'podman' | 'docker';
      podman: string;
      docker: string;
      nats: string;
      chunkMib: number | string;
      parallel: number | string;
      idleTimeout: number | string;
      stateDir?: string;
      launcherDir: string;
      allowedHttpEndpoints?: string;
      commandVerifyKey?: string;
      pageRelayAddress?: string;
      serviceAddress?: string;
      hostNetns?: string;
      volumesDir?: string;
      notices: string;
      metadataUrl?: string;
      azureVmName?: string;
    }) => {
      const chunkMib = positiveInt(options.chunkMib);
      if (chunkMib > MAX_CHUNK_MIB)
        throw new InvalidArgumentError(`--chunk-mib is at most ${MAX_CHUNK_MIB} (destinations refuse larger chunks)`);
      const allowedEndpoints = parseAllowedEndpoints(options.allowedHttpEndpoints);
      // No key, no commands: an agent that accepted unsigned commands would obey anyone who can publish on the broker.
      const commandVerifier = new CommandVerifier(
        parseVerifyKeys(options.commandVerifyKey, '--command-verify-key (UMS_COMMAND_VERIFY_KEY)'),
      );
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
      const engine =
        options.engine === 'docker'
          ? new DockerEngine({
              socketPath: options.docker.replace(/^unix:\/\//, ''),
              where: agentId,
              logger: log.child({ component: 'docker-engine' }),
            })
          : new PodmanEngine({
              socketPath: options.podman.replace(/^unix:\/\//, ''),
              where: agentId,
              logger: log.child({ component: 'podman-engine' }),
            });
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
      const agent = new HostAgent({
        identity: {
          agentId,
          cloud: options.cloud,
          region: options.region,
          storeUrl: options.store,
          ...(options.serviceAddress !== undefined ? { serviceAddress: options.serviceAddress } : {}),
          sealing: sealingKey.publicKey,
          manifestSigning: signingKey.publicKey,
        },
        sealingKey: sealingKey.privateKey,
        signingKey: { privateKey: signingKey.privateKey, publicKey: signingKey.publicKey },
        commandVerifier,
        engine,
        // Orchestrator level goes through the kubelet (agents/kubelet/); no agent here drives it.
        drivers: {
          container: containerLevel,
          service: serviceLevel,
        },
        probe,
        bus,
        store: await openObjectStore(options.store),
        transfer: {
          chunkBytes: chunkMib * 1024 * 1024,
          parallel: positiveInt(options.parallel),
          idleTimeoutMs: positiveInt(options.idleTimeout) * 1000,
          allowedEndpoints,
        },
        journal: new RestoreJournal(stateDir),
        ...(postCopy ? { postCopy } : {}),
        ...(noticeCloud
          ? {
              notices: openNoticeWatcher({
                cloud: noticeCloud,
                ...(options.metadataUrl !== undefined ? { metadataUrl: options.metadataUrl } : {}),
                ...(options.azureVmName !== undefined ? { azureVmName: options.azureVmName } : {}),
                log,
              }),
            }
          : {}),
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
    },
  );

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

/** Docker hosts move containers stop-and-copy, with the memory inside the archive. */
const NO_SHIM_ON_DOCKER = {
  available: false,
  reason: 'post-copy and the memory beside the archive need the runtime shim that Podman is given; this host runs Docker',
} as const;

program.parseAsync().catch((error: unknown) => {
  createLogger('agent').fatal({ err: error }, 'agent failed to start');
  process.exit(1);
});
