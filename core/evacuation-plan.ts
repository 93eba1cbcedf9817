import { isAlive, type AgentRegistration } from './agent-registration.js';
import type { EvacuationItem } from './evacuation.js';
import { DEFAULT_POLICY, policyAllows } from './service-policy.js';
import { COST_MODEL, fmtMiB } from './migration-approach.js';
import { planAgainst, type Plan } from './migration-plan.js';

/**
 * The evacuation policy: which of a host's services move, where, in which order, and which are left, with why.
 * Pure: the evacuation function (functions/evacuate-host.ts) decides with it, and its tests drive it directly.
 *
 * Against an eviction what counts is when the last byte of each service has left the host: after that the
 * host may go. Post-copy shortens a service's freeze, not that. The prediction plays the evacuation's own
 * schedule (simulateSending): `concurrency` services under way, each spending its time before its first byte
 * (BEFORE_FIRST_BYTE_MS and CRIU's per-MiB dump), then sharing the host's measured uplink with the others
 * sending; the next starts when one has sent its last byte. Services go by priority, highest first
 * (the smaller first among equals, so that more of them fit); with a deadline, one whose predicted time runs
 * past the deadline less a margin is left running, and a later, smaller one may still fit.
 */

export interface EvacuationInput {
  /** The host to empty. */
  host: AgentRegistration;
  /** Every registered agent (the host's too). */
  agents: readonly AgentRegistration[];
  /** Hosts that take no new service (being drained, or evacuated themselves). */
  closed: ReadonlySet<string>;
  /** How long until the host ends, from `now`; absent for a drain. */
  windowMs?: number;
  concurrency: number;
  /** The share of the window kept free for what the model does not see (default 0.15). */
  margin?: number;
  now?: number;
}

export interface EvacuationDecision {
  /** Every running service of the host, in the order they go: `pending` (to move) or `left`, each with its reason. */
  items: EvacuationItem[];
  link: { bytesPerSecond: number; basis: string };
  summary: string;
}

const MiB = 1024 * 1024;
export const DEFAULT_MARGIN = 0.15;

export function planEvacuation(input: EvacuationInput): EvacuationDecision {
  const now = input.now ?? Date.now();
  const margin = input.margin ?? DEFAULT_MARGIN;
  const { host } = input;
  const link = uplinkOf(host, now);
  const destinations = input.agents.filter(
    (agent) => agent.agentId !== host.agentId && isAlive(agent, now) && !input.closed.has(agent.agentId),
  );
  // What each destination has left once the services already given to it are counted.
  const freeMemory = new Map(destinations.map((agent) => [agent.agentId, agent.freeMemoryBytes]));
  const given = new Map<string, number>();

  type Candidate = { container: string; priority: number; memory: number; plans: Array<Extract<Plan, { ok: true }>>; refusals: string[] };
  const services: Candidate[] = [];
  const left: EvacuationItem[] = [];
  for (const container of host.containers) {
    if (container.state !== 'running') continue;
    const policy = container.policy ?? DEFAULT_POLICY;
    if (policy.invalid !== undefined) {
      left.push({
        container: container.name,
        priority: policy.priority,
        state: 'left',
        reason: `its policy labels do not read: ${policy.invalid}`,
      });
      continue;
    }
    const refusals: string[] = [];
    const plans: Array<Extract<Plan, { ok: true }>> = [];
    for (const destination of destinations) {
      const allowed = policyAllows(policy, destination.cloud, destination.region);
      if (!allowed.ok) {
        refusals.push(`${destination.agentId}: ${allowed.reason}`);
        continue;
      }
      const plan = planAgainst(
        input.agents as AgentRegistration[],
        { container: container.name, sourceAgent: host.agentId, destinationAgent: destination.agentId },
        now,
      );
      if (!plan.ok) refusals.push(`${destination.agentId}: ${plan.reason}`);
      else if (plan.mode.kind === 'refused') refusals.push(`${destination.agentId}: ${plan.mode.reason}`);
      else plans.push(plan);
    }
    if (destinations.length === 0) refusals.push('no other host is alive and open');
    const memory = container.traits?.memoryBytes ?? plans[0]?.decision.archive.bytes ?? COST_MODEL.defaultMemoryBytes;
    services.push({ container: container.name, priority: policy.priority, memory, plans, refusals });
  }
  const bytesOf = (c: Candidate) => {
    const archive = c.plans[0]?.decision.archive;
    return archive === undefined ? c.memory : archive.bytes + (archive.beforeFreezeBytes ?? 0);
  };
  services.sort((a, b) => b.priority - a.priority || bytesOf(a) - bytesOf(b) || a.container.localeCompare(b.container));

  const budgetMs = input.windowMs === undefined ? undefined : Math.max(0, input.windowMs * (1 - margin));
  const items: EvacuationItem[] = [];
  /** What goes, in order: the schedule the prediction simulates. */
  const going: Sending[] = [];
  for (const service of services) {
    const base = { container: service.container, priority: service.priority };
    // Capacity first: a destination must keep room for it after what it was given.
    const fitting = service.plans.filter((plan) => (freeMemory.get(plan.destination.agentId) ?? 0) >= service.memory * 1.1);
    if (fitting.length === 0) {
      const why =
        service.plans.length > 0
          ? `no allowed destination has ${fmtMiB(service.memory * 1.1)} of memory free for it`
          : `no destination can take it (${service.refusals.join('; ')})`;
      items.push({ ...base, state: 'left', reason: why });
      continue;
    }
    // Spread first (hosts' free memory differs by noise more than by one service; and several destinations
    // restore at once), then the most memory left, then the quickest.
    fitting.sort(
      (a, b) =>
        (given.get(a.destination.agentId) ?? 0) - (given.get(b.destination.agentId) ?? 0) ||
        (freeMemory.get(b.destination.agentId) ?? 0) - (freeMemory.get(a.destination.agentId) ?? 0) ||
        estimateOf(a) - estimateOf(b),
    );
    const chosen = fitting[0] as Extract<Plan, { ok: true }>;
    const archive = chosen.decision.archive;
    const bytes = archive.bytes + (archive.beforeFreezeBytes ?? 0);
    const trial = [...going, { startMs: startMsOf(archive.bytes), bytes }];
    const sentAt = simulateSending(trial, input.concurrency, link.bytesPerSecond);
    // Adding it may also slow the ones before it (they share the link): all must still fit.
    if (budgetMs !== undefined && Math.max(...sentAt) > budgetMs) {
      items.push({
        ...base,
        state: 'left',
        bytes,
        predictedMs: Math.round(sentAt[sentAt.length - 1] as number),
        reason:
          `it does not fit: with it the host would be empty after about ${fmtS(Math.max(...sentAt))} (${fmtMiB(bytes)} more at ${fmtMiB(link.bytesPerSecond)}/s), ` +
          `past the ${fmtS(budgetMs)} the notice leaves (${fmtS(input.windowMs ?? 0)} less a ${Math.round(margin * 100)}% margin); ` +
          `left running, services of higher priority went first`,
      });
      continue;
    }
    going.push(trial[trial.length - 1] as Sending);
    freeMemory.set(chosen.destination.agentId, (freeMemory.get(chosen.destination.agentId) ?? 0) - service.memory);
    given.set(chosen.destination.agentId, (given.get(chosen.destination.agentId) ?? 0) + 1);
    items.push({
      ...base,
      state: 'pending',
      destination: chosen.destination.agentId,
      bytes,
      reason:
        `to ${chosen.destination.agentId} (${chosen.destination.cloud} ${chosen.destination.region}): ` +
        `${chosen.decision.approach} level, ${fmtMiB(bytes)}` +
        (fitting.length > 1
          ? `; of ${fitting.length} allowed hosts, the one given fewest of this host's services, then with the most memory free`
          : ''),
    });
  }
  // Each one's time is the whole schedule's: a later service shares the link with the earlier ones.
  const sentAt = simulateSending(going, input.concurrency, link.bytesPerSecond);
  const pending = items.filter((item) => item.state === 'pending');
  pending.forEach((item, i) => {
    item.predictedMs = Math.round(sentAt[i] as number);
    item.reason += `; its last byte off the host after about ${fmtS(item.predictedMs)}`;
  });
  const ordered = [...items, ...left];
  return { items: ordered, link, summary: summarize(ordered, link, input.windowMs, budgetMs) };
}

/** A service as the prediction sees it: time before its first byte, then its bytes on the shared uplink. */
interface Sending {
  startMs: number;
  bytes: number;
}

/**
 * Before a service's first byte leaves: the saga's plan and the destination's preparation (measured at 2-6 s in
 * the evacuation e2e on 2 cores, the upper end with three migrations at once), then CRIU's dump and the engine's
 * export, which grow with the memory (the cost model's per-MiB figures).
 */
export const BEFORE_FIRST_BYTE_MS = 4_000;
const startMsOf = (archiveBytes: number): number =>
  BEFORE_FIRST_BYTE_MS + (archiveBytes / MiB) * (COST_MODEL.dumpRestoreMsPerMiB + COST_MODEL.extraMsPerMiB.container);

/**
 * When each service's last byte has left the host (ms from the start), as the evacuation function runs them: at
 * most `concurrency` under way, the next starting as one has sent its last byte; each spends its start time,
 * then shares the uplink equally with the others sending.
 */
export function simulateSending(services: readonly Sending[], concurrency: number, bytesPerSecond: number): number[] {
  const sentAt = new Array<number>(services.length).fill(0);
  const active: Array<{ index: number; readyAt: number; remaining: number }> = [];
  let queued = 0;
  let now = 0;
  while (queued < services.length || active.length > 0) {
    while (active.length < concurrency && queued < services.length) {
      const service = services[queued] as Sending;
      active.push({ index: queued, readyAt: now + service.startMs, remaining: service.bytes });
      queued += 1;
    }
    const sending = active.filter((a) => a.readyAt <= now);
    const share = sending.length > 0 ? bytesPerSecond / sending.length / 1000 : 0;
    const nextReady = Math.min(...active.filter((a) => a.readyAt > now).map((a) => a.readyAt));
    const nextSent = sending.length > 0 ? now + Math.min(...sending.map((a) => a.remaining)) / share : Number.POSITIVE_INFINITY;
    const step = Math.min(nextReady, nextSent) - now;
    for (const a of sending) a.remaining -= step * share;
    now += step;
    for (const a of [...active]) {
      if (a.readyAt <= now && a.remaining <= 1e-6) {
        sentAt[a.index] = now;
        active.splice(active.indexOf(a), 1);
      }
    }
  }
  return sentAt;
}

function estimateOf(plan: Extract<Plan, { ok: true }>): number {
  return plan.decision.candidates.find((c) => c.approach === plan.decision.approach)?.estimatedMs ?? Number.POSITIVE_INFINITY;
}

/** The host's uplink: its last measured upload, else the cost model's default (and the reason says so). */
export function uplinkOf(host: AgentRegistration, now = Date.now()): { bytesPerSecond: number; basis: string } {
  if (host.transfer) {
    const ago = Math.max(0, Math.round((now - Date.parse(host.transfer.measuredAt)) / 1000));
    return {
      bytesPerSecond: host.transfer.uploadBytesPerSecond,
      basis: `${fmtMiB(host.transfer.uploadBytesPerSecond)}/s, measured by ${host.agentId} ${ago} s ago`,
    };
  }
  const assumed = COST_MODEL.defaultBandwidthBytesPerSecond;
  return { bytesPerSecond: assumed, basis: `${fmtMiB(assumed)}/s, assumed: ${host.agentId} has measured no upload yet` };
}

function summarize(items: EvacuationItem[], link: { basis: string }, windowMs: number | undefined, budgetMs: number | undefined): string {
  const moving = items.filter((item) => item.state === 'pending');
  const left = items.filter((item) => item.state === 'left');
  const last = Math.max(0, ...moving.map((item) => item.predictedMs ?? 0));
  const bytes = moving.reduce((sum, item) => sum + (item.bytes ?? 0), 0);
  const within = windowMs === undefined ? '' : ` within the ${fmtS(windowMs)} left (${fmtS(budgetMs ?? 0)} with the margin)`;
  const moves = `moves ${moving.length} of ${items.length} service(s), ${fmtMiB(bytes)}${within}: empty after about ${fmtS(last)} at ${link.basis}`;
  return left.length === 0 ? moves : `${moves}; leaves ${left.length} running: ${left.map((item) => item.container).join(', ')}`;
}

const fmtS = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
