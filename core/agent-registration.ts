import { z } from 'zod';
import { SealingPublicKey } from './checkpoint-sealing.js';
import { Cloud } from './cloud.js';
import { ServicePolicy } from './service-policy.js';
import { AgentId, Approach } from './events.js';
import { SigningPublicKey } from './signed-envelope.js';
import { ContainerTraits, HostCapabilities } from './migration-approach.js';

/**
 * What an agent tells the world about its host, refreshed by heartbeat into the JetStream KV bucket
 * `ums_agents` (whose TTL removes an agent that stops heartbeating). Planners read it to validate a
 * request before anything is frozen.
 */
export { Cloud };

export const AgentRegistration = z.object({
  agentId: AgentId,
  cloud: Cloud,
  region: z.string().min(1),
  /**
   * Where clients reach the ports this host's containers publish (its public address): a frontman
   * (frontman/) sends a service's requests there. Absent: the host serves no frontman.
   */
  serviceAddress: z.string().min(1).max(253).optional(),
  /**
   * The cloud's own id of the VM the agent runs on (Azure: its resource id; GCP: its numeric instance id; AWS: its
   * instance id): the clouds' event services name the VM, and the notice ingress finds its agent by this
   * (functions/cloud-notice-ingress.ts). Absent: no event service's notice reaches this agent.
   */
  instanceId: z.string().min(1).max(512).optional(),
  /** The agent's own object store (URL without credentials), where its checkpoints go. */
  storeUrl: z.string().min(1),
  /**
   * The agent's long-lived X25519 public key: checkpoints sent to it are sealed for it. Optional only so
   * that an older agent's registration still reads; the planner refuses a destination without one.
   */
  sealing: SealingPublicKey.optional(),
  /**
   * The agent's long-lived Ed25519 public key: the manifests of its checkpoints are signed with its private
   * half. Optional only so that an older agent's registration still reads; the planner refuses such a source.
   */
  manifestSigning: SigningPublicKey.optional(),
  approaches: z.array(Approach),
  /** What the capability probe found (agents/capability-probe.ts); the planner decides the approach from it. */
  capabilities: HostCapabilities,
  /** Throughput of this host's last checkpoint upload into its store: the planner's bandwidth estimate. */
  transfer: z.object({ uploadBytesPerSecond: z.number().positive(), measuredAt: z.iso.datetime({ offset: true }) }).optional(),
  engine: z.object({
    engine: z.enum(['podman', 'docker', 'cri']),
    version: z.string(),
    apiVersion: z.string(),
    ociRuntime: z.string(),
    criuVersion: z.string().optional(),
    kernel: z.string(),
  }),
  freeMemoryBytes: z.number().nonnegative(),
  freeDiskBytes: z.number().nonnegative(),
  /** Image names (name:tag) present on the host. */
  images: z.array(z.string()),
  /** Image ids present: a checkpoint restores only onto the very image id it was taken from. */
  imageIds: z.array(z.string()),
  containers: z.array(
    z.object({
      name: z.string(),
      image: z.string(),
      imageId: z.string(),
      state: z.string(),
      checkpointed: z.boolean(),
      /** Process count, memory, and whether it runs the service-level launcher. */
      traits: ContainerTraits.optional(),
      /** Where it may go and how much it matters in an evacuation, from its labels (core/service-policy.ts). */
      policy: ServicePolicy.optional(),
    }),
  ),
  startedAt: z.iso.datetime({ offset: true }),
  heartbeatAt: z.iso.datetime({ offset: true }),
});
export type AgentRegistration = z.infer<typeof AgentRegistration>;

/** Heartbeats come every few seconds; an agent silent for longer than this is considered dead. */
export const AGENT_LIVENESS_MS = 15_000;

export function isAlive(registration: AgentRegistration, now: number = Date.now()): boolean {
  return now - Date.parse(registration.heartbeatAt) <= AGENT_LIVENESS_MS;
}
