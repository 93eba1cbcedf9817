import type { AgentRegistration, Cloud } from '../core/agent-registration.js';
import type { EventBus } from '../core/event-bus.js';
import type { Logger } from '../core/log.js';
import type { ContainerEngine } from './container-engine.js';

export interface AgentIdentity {
  agentId: string;
  cloud: Cloud;
  region: string;
  storeUrl: string;
}

/** Reads the host's state from its engine into a registration record. */
export async function describeHost(identity: AgentIdentity, engine: ContainerEngine, startedAt: string): Promise<AgentRegistration> {
  const [info, containers, images] = await Promise.all([engine.info(), engine.listContainers(), engine.listImages()]);
  return {
    ...identity,
    approaches: info.criuVersion ? ['container'] : [],
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
    containers: containers.map((c) => ({ name: c.name, image: c.image, imageId: c.imageId, state: c.state, checkpointed: c.checkpointed })),
    startedAt,
    heartbeatAt: new Date().toISOString(),
  };
}

/**
 * Keeps the agent's registration fresh: immediately, every `intervalMs`, and on demand (after a
 * migration changed what runs here) so planners never wait a whole interval to see a change.
 */
export class Heartbeat {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();
  private readonly startedAt = new Date().toISOString();

  constructor(
    private readonly identity: AgentIdentity,
    private readonly engine: ContainerEngine,
    private readonly bus: EventBus,
    private readonly log: Logger,
    private readonly intervalMs = 2_000,
  ) {}

  async start(): Promise<void> {
    await this.beat();
    this.timer = setInterval(() => void this.beat(), this.intervalMs);
  }

  /** Serialised, so a slow engine never gets two listings at once. */
  beat(): Promise<void> {
    this.running = this.running.then(async () => {
      try {
        await this.bus.agents.put(this.identity.agentId, await describeHost(this.identity, this.engine, this.startedAt));
      } catch (error) {
        this.log.warn({ err: error }, 'heartbeat failed; retrying at the next interval');
      }
    });
    return this.running;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
    await this.bus.agents.delete(this.identity.agentId).catch(() => undefined);
  }
}
