import type { AgentRegistration } from '../core/agent-registration.js';
import { isAlive } from '../core/agent-registration.js';
import type { Timeline } from '../core/events.js';
import type { ConnectionPlan } from '../core/container-network.js';
import type { StoragePlan } from '../core/container-storage.js';
import type { Plan } from '../core/migration-plan.js';
import type { FrontmanPhases, MigrationRecord } from '../core/migration.js';

export const bytes = (n: number): string => {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
};

export const millis = (ms: number): string => (ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`);

export function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length))) ?? [];
  return rows
    .map((row) =>
      row
        .map((cell, column) => cell.padEnd(widths[column] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function formatTimeline(timeline: Timeline): string {
  const rows = timeline.phases.map((phase) => [`  ${phase.name}`, millis(phase.ms)]);
  rows.push(['  total', millis(timeline.totalMs)], ['  frozen', millis(timeline.frozenMs)], ['  archive', bytes(timeline.archiveBytes)]);
  return table(rows);
}

export function formatAgents(
  agents: AgentRegistration[],
  now = Date.now(),
  /** Hosts that take no new service (core/evacuation.ts closedHosts), with why. */
  closed: ReadonlyMap<string, string> = new Map(),
): string {
  const header = ['AGENT', 'CLOUD', 'REGION', 'STATUS', 'ENGINE', 'CRIU', 'APPROACHES', 'FREE MEM', 'FREE DISK', 'CONTAINERS'];
  const rows = agents.map((a) => [
    a.agentId,
    a.cloud,
    a.region,
    (isAlive(a, now) ? 'alive' : `silent ${Math.round((now - Date.parse(a.heartbeatAt)) / 1000)} s`) +
      (closed.has(a.agentId) ? ', closed' : ''),
    `${a.engine.engine} ${a.engine.version} (${a.engine.ociRuntime})`,
    `${a.engine.criuVersion ?? 'none'}${a.capabilities.containerLevel.sockets?.available === true ? ' +sockets' : ''}`,
    a.approaches.join(',') || 'none',
    bytes(a.freeMemoryBytes),
    bytes(a.freeDiskBytes),
    a.containers.map((c) => `${c.name}:${c.checkpointed ? 'checkpointed' : c.state}${traitsOf(c)}`).join(' ') || '-',
  ]);
  const notes = agents.flatMap((a) => {
    const caps = a.capabilities;
    const off = [
      ...(closed.has(a.agentId) ? [`takes no new service: ${closed.get(a.agentId) ?? ''}`] : []),
      ...(caps.containerLevel.available ? [] : [`container level: ${caps.containerLevel.reason ?? 'unavailable'}`]),
      ...(caps.containerLevel.sockets?.available === false
        ? [`network services: ${caps.containerLevel.sockets.reason ?? 'unavailable'}`]
        : []),
      ...(caps.orchestratorLevel.available ? [] : [`orchestrator level: ${caps.orchestratorLevel.reason ?? 'unavailable'}`]),
      ...(caps.postCopy?.available === false ? [`post-copy: ${caps.postCopy.reason ?? 'unavailable'}`] : []),
      ...(caps.memoryBeside?.available === false
        ? [`memory beside the archive (stop-and-copy keeps it in the archive): ${caps.memoryBeside.reason ?? 'unavailable'}`]
        : []),
    ];
    return off.map((why) => `  ${a.agentId}: ${why}`);
  });
  return table([header, ...rows]) + (notes.length > 0 ? `\n\nnot available:\n${notes.join('\n')}` : '');
}

/** `[launcher, 1 proc, 12.0 MiB]` for a container whose traits were probed. */
function traitsOf(c: AgentRegistration['containers'][number]): string {
  const t = c.traits;
  if (!t) return '';
  const parts = [
    ...(t.launcher?.available ? ['launcher'] : []),
    ...(t.checkpointable?.available === false ? ['not checkpointable'] : []),
    ...(t.network !== undefined && t.network.listening.length + t.network.insideConnections + t.network.outsideConnectionCount > 0
      ? [
          `${t.network.listening.length} listening, ${t.network.insideConnections} inside + ${t.network.outsideConnectionCount} outside conn`,
        ]
      : []),
    ...(t.processCount !== undefined ? [`${t.processCount} proc`] : []),
    ...(t.memoryBytes !== undefined ? [bytes(t.memoryBytes)] : []),
  ];
  return parts.length > 0 ? `[${parts.join(', ')}]` : '';
}

/** What `ums plan --json` prints: the decision and every approach considered, without the registrations. */
export function planSummary(plan: Plan): unknown {
  if (!plan.ok) return { ok: false, code: plan.code, reason: plan.reason, candidates: plan.decision?.candidates ?? [] };
  return {
    ok: true,
    container: plan.container.name,
    source: plan.source.agentId,
    destination: plan.destination.agentId,
    approach: plan.decision.approach,
    reason: plan.decision.reason,
    archive: plan.decision.archive,
    candidates: plan.decision.candidates,
    mode: plan.mode,
    memoryBeside: plan.memoryBeside,
    image: plan.image,
    ...(plan.connections !== undefined ? { connections: plan.connections } : {}),
    ...(plan.storage !== undefined ? { storage: plan.storage } : {}),
  };
}

export function formatPlan(plan: Plan): string {
  const candidates = (plan.ok ? plan.decision.candidates : (plan.decision?.candidates ?? [])).map((c) => [
    `  ${c.approach}`,
    c.feasible ? `~${millis(c.estimatedMs ?? 0)}` : 'not possible',
    c.why,
  ]);
  const head = plan.ok
    ? [
        `${plan.container.name}: ${plan.source.agentId} -> ${plan.destination.agentId} at ${plan.decision.approach} level`,
        `  ${plan.decision.reason}`,
        `  archive ~${bytes(plan.decision.archive.bytes)}: ${plan.decision.archive.basis}`,
        `  image: ${plan.image.reason}`,
        ...(plan.decision.archive.measured ? [] : ['  (the estimate is only as good as that assumption)']),
      ].join('\n')
    : `refused (${plan.code}): ${plan.reason}`;
  const modes = plan.ok
    ? `\n\n${plan.mode.reason}\n${table(
        plan.mode.predictions.map((p) => [
          `  ${p.mode}`,
          p.feasible
            ? `frozen ~${millis(p.frozenMs)}${p.pagesMs !== undefined ? `, then ~${millis(p.pagesMs)} with both hosts needed` : ''}`
            : 'not possible',
          p.why,
        ]),
      )}${plan.memoryBeside ? "\n  stop-and-copy sends the memory as CRIU writes it, beside the engine's archive (both hosts have the runtime shim)" : ''}`
    : '';
  const withCandidates = `${candidates.length > 0 ? `${head}\n\n${table(candidates)}` : head}${modes}`;
  const sections = plan.ok
    ? [plan.connections && formatConnections(plan.connections), plan.storage && formatStorage(plan.storage)].filter((s) => s !== undefined)
    : [];
  return [withCandidates, ...sections].join('\n\n');
}

/** Volumes and bind mounts: what moves when, and which host paths the destination must have. */
function formatStorage(storage: StoragePlan): string {
  return [
    'storage:',
    `  volumes: ${storage.volumesMove}`,
    ...storage.volumes.map((v) => `    ${v.name} at ${v.destination}${v.bytes !== undefined ? `, ${bytes(v.bytes)}` : ''}`),
    storage.binds.length === 0 ? '  bind mounts: none' : '  bind mounts (host paths, not moved: the destination must have them):',
    ...storage.binds.map((b) => `    ${b.source} at ${b.destination}`),
  ].join('\n');
}

/** What happens to the service's network state, before anything is frozen. */
function formatConnections(connections: ConnectionPlan): string {
  const lines = [
    'network:',
    `  listening, restored on the destination: ${connections.restoredListening.join(', ') || 'none'}`,
    `  published ports, published again there: ${connections.republished.join(', ') || 'none'}`,
    `  kept: ${connections.kept}`,
    `  closed: ${connections.closed}`,
  ];
  return lines.join('\n');
}

/**
 * What happened to the container's image in one migration, for `ums status`: shipped (bytes, how long each
 * side took), found at the destination, or not known yet. Undefined for records planned before images moved.
 */
export function formatImageShipping(record: MigrationRecord): string | undefined {
  const shipping = record.imageShipping;
  if (shipping === undefined) return undefined;
  const t = record.times;
  const seconds = (from: string | undefined, to: string | undefined) =>
    from !== undefined && to !== undefined ? `${((Date.parse(to) - Date.parse(from)) / 1000).toFixed(1)} s` : undefined;
  if (shipping.needed !== true) {
    if (t.preparedAt === undefined)
      return shipping.expected ? 'not listed at the destination at planning; its engine not asked yet' : undefined;
    return `present at the destination, not shipped${shipping.expected ? " (its last heartbeat had not listed it: the destination's engine had it)" : ''}`;
  }
  if (t.imageLoadedAt === undefined && record.state === 'failed')
    return `the destination lacked it; the migration failed while it was shipped (${shipping.artifact ? 'stored, not loaded' : 'not stored'}), nothing was frozen`;
  if (shipping.artifact === undefined)
    return `shipping: the destination lacks it; the source is storing it (since ${t.imageNeededAt ?? '?'})`;
  const stored = seconds(t.imageNeededAt, t.imageUploadedAt);
  const loaded = seconds(t.imageUploadedAt, t.imageLoadedAt);
  const total = seconds(t.imageNeededAt, t.imageLoadedAt);
  return [
    `shipped before the freeze: ${bytes(shipping.artifact.sizeBytes)} (sealed, ${shipping.artifact.chunkCount} chunk(s))`,
    ...(stored ? [`saved and stored in ${stored}`] : []),
    loaded ? `fetched, verified and loaded in ${loaded}` : 'not loaded yet',
    ...(total ? [`${total} in all`] : []),
    ...(shipping.tags && shipping.tags.length > 0 ? [`names ${shipping.tags.join(', ')}`] : []),
  ].join(', ');
}

/** The frontman's phases in one migration: drained, held N, released (to where). */
export function formatFrontman(f: FrontmanPhases): string {
  const phases = [
    f.drainedAt === undefined
      ? 'not drained yet'
      : `drained at ${f.drainedAt} (${f.finished ?? 0} in flight finished, ${f.unfinished ?? 0} cut)`,
    ...(f.releasedAt === undefined
      ? []
      : [
          `held ${f.held ?? 0}`,
          ...(f.expired ? [`${f.expired} expired (503)`] : []),
          `released to ${f.releasedTo ?? 'nowhere'} at ${f.releasedAt}`,
        ]),
  ];
  return `${f.id}: ${phases.join(', ')}`;
}

export function formatMigrations(records: MigrationRecord[]): string {
  const header = ['MIGRATION', 'CONTAINER', 'FROM', 'TO', 'APPROACH', 'STATE', 'EPOCH', 'REQUESTED', 'REASON'];
  const rows = records
    .sort((a, b) => a.times.requestedAt.localeCompare(b.times.requestedAt))
    .map((r) => [
      r.migrationId,
      r.container,
      r.sourceAgent ?? '?',
      r.destinationAgent,
      r.approach ?? '-',
      r.state,
      String(r.epoch),
      r.times.requestedAt,
      r.failure?.reason ?? r.pendingCleanup ?? '',
    ]);
  return table([header, ...rows]);
}
