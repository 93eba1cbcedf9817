import { setTimeout as sleep } from 'node:timers/promises';
import type { AgentRegistration, Cloud } from '../core/agent-registration.js';
import type { SealingPublicKey } from '../core/checkpoint-sealing.js';
import type { EventBus } from '../core/event-bus.js';
import type { Logger } from '../core/log.js';
import { servicePolicyOf } from '../core/service-policy.js';
import type { SigningPublicKey } from '../core/signed-envelope.js';
import type { CapabilityProbe } from './capability-probe.js';
import type { ContainerEngine } from './container-engine.js';

export interface AgentIdentity {
  agentId: string;
  cloud: Cloud;
  region: string;
  storeUrl: string;
  /** Where clients reach this host's published ports (a frontman forwards there). */
  serviceAddress?: string;
  /** The cloud's id of this VM, by which the clouds' event services' notices find this agent (core/agent-registration.ts). */
  instanceId?: string;
  /** The public half of the agent's sealing key: checkpoints sent to this host are sealed for it. */
  sealing?: SealingPublicKey;
  /** The public half of the agent's manifest-signing key: destinations verify its manifests with it. */
  manifestSigning?: SigningPublicKey;
}

/**
 * Reads the host's state from its engine into a registration record, with what the capability probe
 * found: which approaches this host can do, and per running container its size and whether it runs
 * the service-level launcher (the planner decides the approach from these).
 */
export async function describeHost(
  identity: AgentIdentity,
  engine: ContainerEngine,
  startedAt: string,
  probe: CapabilityProbe,
): Promise<AgentRegistration> {
  const [info, containers, images, capabilities] = await Promise.all([
    engine.info(),
    engine.listContainers(),
    engine.listImages(),
    probe.host(),
  ]);
  probe.retainContainers(containers.map((c) => c.name));
  const traits = new Map(
    await Promise.all(
      containers.filter((c) => c.state === 'running').map(async (c) => [c.name, await probe.container(c.name, c)] as const),
    ),
  );
  const approaches: AgentRegistration['approaches'] = [];
  if (capabilities.containerLevel.available) approaches.push('container');
  if (capabilities.plainContainers.available) approaches.push('service');
  if (capabilities.orchestratorLevel.available) approaches.push('orchestrator');
  return {
    ...identity,
    approaches,
    capabilities,
    engine: {
      engine: info.engine,
      version: info.version,
      apiVersion: info.apiVersion,
      ociRuntime: info.ociRuntime,
      ...(info.criuVersion ? { criuVersion: info.criuVersion } : {}),
      kernel: info.kernel,
    },
    freeMemoryBytes: info.freeMemoryBytes,
    freeDiskBytes: info.freeDiskBytes,
    images: [...new Set(images.flatMap((image) => image.names))].sort(),
    imageIds: images.map((image) => image.id).sort(),
    containers: containers.map((c) => {
      const found = traits.get(c.name);
      return {
        name: c.name,
        image: c.image,
        imageId: c.imageId,
        state: c.state,
        checkpointed: c.checkpointed,
        ...(found ? { traits: found } : {}),
        policy: servicePolicyOf(c.labels),
      };
    }),
    startedAt,
    heartbeatAt: new Date().toISOString(),
  };
}

/** How long a heartbeat waits for a fresh description of the host before sending the last one. */
const DESCRIBE_BUDGET_MS = 1_500;

/**
 * Keeps the agent's registration fresh: immediately, every `intervalMs`, and on demand (after a
 * migration changed what runs here) so planners never wait a whole interval to see a change.
 * Liveness never waits for a busy engine (inspecting a container blocks while it is being
 * restored): if describing the host takes too long, the last description goes out with a fresh
 * heartbeat time, and the new one follows when it is ready.
 */
export class Heartbeat {
  private timer: NodeJS.Timeout | undefined;
  private last: AgentRegistration | undefined;
  private describing: Promise<AgentRegistration | undefined> | undefined;
  private readonly startedAt = new Date().toISOString();
  private transfer: AgentRegistration['transfer'];

  constructor(
    private readonly identity: AgentIdentity,
    private readonly engine: ContainerEngine,
    private readonly probe: CapabilityProbe,
    private readonly bus: EventBus,
    private readonly log: Logger,
    private readonly intervalMs = 2_000,
  ) {}

  async start(): Promise<void> {
    await this.beat();
    this.timer = setInterval(() => void this.beat(), this.intervalMs);
  }

  /** The uplink's rate as last measured (core/uplink.ts): the planners' bandwidth figure. */
  recordUplink(bytesPerSecond: number): void {
    this.transfer = { uploadBytesPerSecond: bytesPerSecond, measuredAt: new Date().toISOString() };
  }

  async beat(): Promise<void> {
    // One description at a time, so a slow engine never gets a pile of listings.
    this.describing ??= describeHost(this.identity, this.engine, this.startedAt, this.probe)
      .catch((error: unknown) => {
        this.log.warn({ err: error }, 'could not describe the host; the registration keeps its last description');
        return undefined;
      })
      .finally(() => (this.describing = undefined));
    const fresh = await Promise.race([this.describing, sleep(DESCRIBE_BUDGET_MS).then(() => undefined)]);
    if (fresh) this.last = fresh;
    if (!this.last) return;
    try {
      await this.bus.agents.put(this.identity.agentId, {
        ...this.last,
        ...(this.transfer ? { transfer: this.transfer } : {}),
        heartbeatAt: new Date().toISOString(),
      });
    } catch (error) {
      this.log.warn({ err: error }, 'heartbeat failed; retrying at the next interval');
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.describing;
    await this.bus.agents.delete(this.identity.agentId).catch(() => undefined);
  }
}
