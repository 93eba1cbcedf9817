#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import { Cloud } from '../core/agent-registration.js';
import { DEFAULT_CHUNK_MIB } from '../core/checkpoint-artifact.js';
import { AgentId } from '../core/events.js';
import { createLogger } from '../core/log.js';
import { connectNatsBus } from '../core/nats-event-bus.js';
import { openObjectStore } from '../core/object-stores/open-object-store.js';
import { join } from 'node:path';
import { DEFAULT_LAUNCHER_HOST_DIR } from '../launcher/convention.js';
import { CapabilityProbe, kubeletClientFromEnv } from './capability-probe.js';
import { ContainerLevel } from './container-level.js';
import { HostAgent } from './host-agent.js';
import { ServiceLevel } from './service-level.js';
import { RestoreJournal } from './restore-journal.js';
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
  .addOption(new Option('--podman <url>', 'Podman API socket').env('UMS_PODMAN_URL').default('unix:///run/podman/podman.sock'))
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
    new Option('--state-dir <dir>', 'where the agent keeps its restore journal (default /var/lib/ums/agent/<id>)').env('UMS_STATE_DIR'),
  )
  .addOption(
    new Option('--idle-timeout <seconds>', 'give up a restore when nothing arrives for this long')
      .env('UMS_IDLE_TIMEOUT_SECONDS')
      .default('120')
      .argParser(positiveInt),
  )
  .action(
    async (options: {
      id: string;
      cloud: Cloud;
      region: string;
      store: string;
      podman: string;
      nats: string;
      chunkMib: number | string;
      parallel: number | string;
      idleTimeout: number | string;
      stateDir?: string;
      launcherDir: string;
    }) => {
      const agentId = AgentId.parse(options.id);
      const log = createLogger('agent', { agentId });
      const bus = await connectNatsBus({ servers: options.nats, name: `ums-agent-${agentId}` });
      const engine = new PodmanEngine({
        socketPath: options.podman.replace(/^unix:\/\//, ''),
        where: agentId,
        logger: log.child({ component: 'podman-engine' }),
      });
      const serviceLevel = new ServiceLevel(engine, options.launcherDir, agentId);
      const kubelet = kubeletClientFromEnv();
      const probe = new CapabilityProbe({
        engine,
        probeLauncher: (container) => serviceLevel.probe(container),
        securityProfile: (container) => engine.securityProfile(container),
        launcherHostDir: options.launcherDir,
        // A status call per container and heartbeat is cheap, and a tree still starting its processes must
        // not be taken for a single process for long.
        containerTtlMs: 2_000,
        ...(kubelet && process.env.UMS_KUBELET_URL ? { kubelet: { url: process.env.UMS_KUBELET_URL, prober: kubelet } } : {}),
      });
      const agent = new HostAgent({
        identity: { agentId, cloud: options.cloud, region: options.region, storeUrl: options.store },
        engine,
        // Orchestrator level goes through the kubelet (agents/kubelet/); no agent here drives it.
        drivers: { container: new ContainerLevel(engine, agentId), service: serviceLevel },
        probe,
        bus,
        store: await openObjectStore(options.store),
        transfer: {
          chunkBytes: positiveInt(options.chunkMib) * 1024 * 1024,
          parallel: positiveInt(options.parallel),
          idleTimeoutMs: positiveInt(options.idleTimeout) * 1000,
        },
        journal: new RestoreJournal(options.stateDir ?? join('/var/lib/ums/agent', agentId)),
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

program.parseAsync().catch((error: unknown) => {
  createLogger('agent').fatal({ err: error }, 'agent failed to start');
  process.exit(1);
});
