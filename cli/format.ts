import type { AgentRegistration } from '../core/agent-registration.js';
import { isAlive } from '../core/agent-registration.js';
import type { Timeline } from '../core/events.js';
import type { MigrationRecord } from '../core/migration.js';

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
  return rows.map((row) => row.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join('  ').trimEnd()).join('\n');
}

export function formatTimeline(timeline: Timeline): string {
  const rows = timeline.phases.map((phase) => [`  ${phase.name}`, millis(phase.ms)]);
  rows.push(['  total', millis(timeline.totalMs)], ['  frozen', millis(timeline.frozenMs)], ['  archive', bytes(timeline.archiveBytes)]);
  return table(rows);
}

export function formatAgents(agents: AgentRegistration[], now = Date.now()): string {
  const header = ['AGENT', 'CLOUD', 'REGION', 'STATUS', 'ENGINE', 'CRIU', 'APPROACHES', 'FREE MEM', 'FREE DISK', 'CONTAINERS'];
  const rows = agents.map((a) => [
    a.agentId,
    a.cloud,
    a.region,
    isAlive(a, now) ? 'alive' : `silent ${Math.round((now - Date.parse(a.heartbeatAt)) / 1000)} s`,
    `${a.engine.engine} ${a.engine.version} (${a.engine.ociRuntime})`,
    a.engine.criuVersion ?? 'none',
    a.approaches.join(',') || 'none',
    bytes(a.freeMemoryBytes),
    bytes(a.freeDiskBytes),
    a.containers.map((c) => `${c.name}:${c.checkpointed ? 'checkpointed' : c.state}`).join(' ') || '-',
  ]);
  return table([header, ...rows]);
}

export function formatMigrations(records: MigrationRecord[]): string {
  const header = ['MIGRATION', 'CONTAINER', 'FROM', 'TO', 'STATE', 'REQUESTED', 'REASON'];
  const rows = records
    .sort((a, b) => a.times.requestedAt.localeCompare(b.times.requestedAt))
    .map((r) => [r.migrationId, r.container, r.sourceAgent ?? '?', r.destinationAgent, r.state, r.times.requestedAt, r.failure?.reason ?? '']);
  return table([header, ...rows]);
}
