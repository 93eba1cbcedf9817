import { isAlive, type AgentRegistration } from './agent-registration.js';
import { conflictingPorts, planConnections, type ConnectionPlan } from './container-network.js';
import type { Approach, FailureCode } from './events.js';
import { planStorage, type StoragePlan } from './container-storage.js';
import { COST_MODEL, decideApproach, memoryBesideBetween, type Decision } from './migration-approach.js';
import { decideMode, type MigrationMode, type ModeDecision } from './migration-mode.js';

export interface PlanRequest {
  container: string;
  destinationAgent: string;
  sourceAgent?: string;
  approach?: Approach;
  mode?: MigrationMode;
  /** The longest freeze the user accepts (core/migration-mode.ts). */
  frozenBudgetMs?: number;
}

export type Plan =
  | {
      ok: true;
      source: AgentRegistration;
      destination: AgentRegistration;
      container: AgentRegistration['containers'][number];
      decision: Extract<Decision, { kind: 'chosen' }>;
      /** Stop-and-copy or post-copy, with each mode's predicted frozen time; refused when the requested one cannot be used. */
      mode: ModeDecision;
      /**
       * Container-level stop-and-copy sends the memory beside the engine's export, read as CRIU writes it
       * (agents/memory/): both hosts can.
       */
      memoryBeside: boolean;
      /** What happens to the container's sockets and connections (container level), when its agent read them. */
      connections?: ConnectionPlan;
      /** How its volumes move and which host paths it bind-mounts (container level), when its agent read them. */
      storage?: StoragePlan;
      /** Whether the image will probably be shipped, from the destination's last heartbeat (its engine decides). */
      image: ImageExpectation;
    }
  | {
      ok: false;
      code: FailureCode;
      reason: string;
      /** Where the service runs, as far as the registrations tell. */
      runningOn: string | null;
      /** The container may simply not be listed yet (registrations lag a heartbeat). */
      notListedYet?: boolean;
      decision?: Decision;
    };

/** What the destination's last heartbeat says of the container's image: a guess the destination's engine settles. */
export interface ImageExpectation {
  /** Its heartbeat did not list the image's id: the source will probably ship it before the freeze. */
  shipLikely: boolean;
  reason: string;
}

/**
 * The image by the destination's last heartbeat. Never a refusal: a heartbeat can be seconds behind an image
 * loaded there, and a missing image is shipped by the source before the freeze (agents/image-transfer.ts).
 */
export function expectImage(destination: AgentRegistration, container: AgentRegistration['containers'][number]): ImageExpectation {
  const short = container.imageId.replace(/^sha256:/, '').slice(0, 12);
  if (destination.imageIds.includes(container.imageId)) {
    return { shipLikely: false, reason: `"${destination.agentId}" has the image "${container.image}" (id ${short}): nothing to ship` };
  }
  const sameName = destination.images.includes(container.image);
  return {
    shipLikely: true,
    reason: sameName
      ? `"${destination.agentId}" has an image named "${container.image}" but not the same one (id ${short}), which the checkpoint needs: the source ships it before the freeze, and loading it there moves the name "${container.image}" to it`
      : `"${destination.agentId}" did not list the image "${container.image}" (id ${short}) at its last heartbeat: unless its engine has it by now, the source ships it before the freeze`,
  };
}

/**
 * Checks a migration request against the agents' registrations, before anything is frozen (both
 * agents alive, the container running on exactly one source), notes whether its image will have to be shipped, and
 * decides the approach (core/migration-approach.ts) from what both hosts and the container can do.
 * Pure: the planner function and `ums plan` both use it.
 */
export function planAgainst(
  agents: AgentRegistration[],
  request: PlanRequest,
  now = Date.now(),
  /** Hosts that take no new service (core/evacuation.ts closesHost), each with why. */
  closed: ReadonlyMap<string, string> = new Map(),
): Plan {
  const refuse = (
    code: FailureCode,
    reason: string,
    runningOn: string | null,
    extra: Partial<Extract<Plan, { ok: false }>> = {},
  ): Plan => ({
    ok: false,
    code,
    reason,
    runningOn,
    ...extra,
  });
  const alive = agents.filter((agent) => isAlive(agent, now));
  // Where the service runs now, as far as the registrations tell: every refusal says it, since none touches it.
  const runsOn = alive
    .filter((agent) => agent.containers.some((c) => c.name === request.container && c.state === 'running'))
    .map((agent) => agent.agentId);
  const runningNow = runsOn.length === 1 ? (runsOn[0] as string) : null;
  const destination = alive.find((agent) => agent.agentId === request.destinationAgent);
  if (!destination) {
    const known = agents.some((agent) => agent.agentId === request.destinationAgent);
    return refuse(
      'agent-unavailable',
      known
        ? `destination agent "${request.destinationAgent}" has stopped sending heartbeats; check the agent on that host`
        : `destination agent "${request.destinationAgent}" is not registered; "ums agents" lists the registered agents`,
      runningNow,
    );
  }
  const closedWhy = closed.get(destination.agentId);
  if (closedWhy !== undefined) {
    return refuse('destination-incompatible', `destination "${destination.agentId}" takes no new service: ${closedWhy}`, runningNow);
  }
  const candidates = request.sourceAgent ? alive.filter((agent) => agent.agentId === request.sourceAgent) : alive;
  if (request.sourceAgent && candidates.length === 0) {
    return refuse(
      'agent-unavailable',
      `source agent "${request.sourceAgent}" is not registered or not alive; "ums agents" lists them`,
      runningNow,
    );
  }
  const listed = candidates.flatMap((agent) => {
    const container = agent.containers.find((c) => c.name === request.container);
    return container ? [{ agent, container }] : [];
  });
  // Only a running container can be the service; a stopped copy elsewhere (a kept checkpoint, or a
  // registration a moment behind a discard) does not make the request ambiguous.
  const running = listed.filter((h) => h.container.state === 'running');
  const holders = listed.length > 1 && running.length === 1 ? running : listed;
  if (holders.length === 0) {
    const where = request.sourceAgent ? `on agent "${request.sourceAgent}"` : 'on any registered agent';
    return refuse(
      'container-not-found',
      `container "${request.container}" was not found ${where}; "ums agents" lists what each host runs`,
      null,
      { notListedYet: true },
    );
  }
  if (holders.length > 1) {
    const names = holders.map((h) => h.agent.agentId).join(', ');
    return refuse(
      'invalid-request',
      `container "${request.container}" exists on several agents (${names}); name the source with --from`,
      runningNow,
    );
  }
  const [{ agent: source, container }] = holders as [{ agent: AgentRegistration; container: AgentRegistration['containers'][number] }];
  if (source.agentId === destination.agentId) {
    return refuse('invalid-request', `container "${request.container}" already runs on "${destination.agentId}"`, source.agentId);
  }
  if (container.state !== 'running') {
    return refuse(
      'container-not-running',
      `container "${request.container}" on "${source.agentId}" is ${container.state}, not running; only a running container can be live-migrated`,
      null,
    );
  }
  const decision = decideApproach({
    source: source.capabilities,
    destination: destination.capabilities,
    container: container.traits ?? {},
    ...(source.transfer ? { bandwidthBytesPerSecond: source.transfer.uploadBytesPerSecond } : {}),
    ...(request.approach ? { requested: request.approach } : {}),
  });
  if (decision.kind === 'refused') return refuse('approach-infeasible', decision.reason, source.agentId, { decision });
  const network = container.traits?.network;
  if (network !== undefined && decision.approach === 'container') {
    const taken = destination.containers.flatMap((c) =>
      c.state === 'running' ? (c.traits?.network?.published ?? []).map((p) => ({ ...p, by: c.name })) : [],
    );
    const conflicts = conflictingPorts(network.published, taken);
    if (conflicts.length > 0) {
      const which = conflicts
        .map(
          (p) =>
            `${p.hostPort}/${p.protocol} (held by "${taken.find((t) => t.hostPort === p.hostPort && t.protocol === p.protocol)?.by ?? '?'}")`,
        )
        .join(', ');
      return refuse(
        'destination-incompatible',
        `the destination "${destination.agentId}" already publishes port ${which}, which "${request.container}" publishes: free it there, or migrate elsewhere`,
        source.agentId,
        { decision },
      );
    }
  }
  const traits = container.traits ?? {};
  const chosen = decision.candidates.find((c) => c.approach === decision.approach);
  const mode = decideMode({
    approach: decision.approach,
    ...(request.mode ? { requested: request.mode } : {}),
    ...(request.frozenBudgetMs !== undefined ? { frozenBudgetMs: request.frozenBudgetMs } : {}),
    stopAndCopyMs: chosen?.estimatedMs ?? 0,
    memoryBytes: traits.memoryBytes ?? decision.archive.bytes,
    rootfsChangesBytes: traits.rootfsChangesBytes ?? 0,
    ...(source.transfer ? { bandwidthBytesPerSecond: source.transfer.uploadBytesPerSecond } : {}),
    source: source.capabilities.postCopy,
    destination: destination.capabilities.postCopy,
  });
  const storage = planStorage(traits, source.transfer?.uploadBytesPerSecond ?? COST_MODEL.defaultBandwidthBytesPerSecond);
  return {
    ok: true,
    source,
    destination,
    container,
    decision,
    mode,
    memoryBeside:
      decision.approach === 'container' &&
      mode.kind !== 'refused' &&
      mode.mode === 'stop-and-copy' &&
      memoryBesideBetween(source.capabilities, destination.capabilities),
    ...(network !== undefined && decision.approach === 'container' ? { connections: planConnections(network) } : {}),
    ...(storage !== undefined && decision.approach === 'container' ? { storage } : {}),
    image: expectImage(destination, container),
  };
}
