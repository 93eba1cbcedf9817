import { isAlive } from '../core/agent-registration.js';
import { isTerminal } from '../core/migration.js';
import type { FunctionContext } from './function-context.js';
import { superviseStalled } from './migration-saga.js';

export interface SupervisionReport {
  checked: number;
  acted: Array<{ migrationId: string; state: string; action: string }>;
}

/**
 * Runs on a schedule (Cloud Scheduler in the cloud, the trigger bridge locally) and is what keeps a
 * migration from being stuck: every migration that is not over is handed to the saga's deadline rules
 * (functions/migration-saga.ts, superviseStalled) with the agents that are alive. It holds no state of
 * its own; every decision is a compare-and-set on the record, so it can race the event-driven functions
 * (or another supervisor) safely.
 */
export async function superviseMigrations(ctx: FunctionContext, now = Date.now()): Promise<SupervisionReport> {
  const [records, agents] = await Promise.all([ctx.bus.migrations.list(), ctx.bus.agents.list()]);
  const alive = new Set(agents.filter((agent) => isAlive(agent.value, now)).map((agent) => agent.value.agentId));
  const report: SupervisionReport = { checked: 0, acted: [] };
  for (const { key: _key, ...record } of records) {
    if (isTerminal(record.value.state)) continue;
    report.checked += 1;
    const action = await superviseStalled(record, alive, ctx, now).catch((error: unknown) => {
      ctx.log.warn({ err: error, migrationId: record.value.migrationId }, 'supervising a migration failed; the next round tries again');
      return undefined;
    });
    if (action) report.acted.push({ migrationId: record.value.migrationId, state: record.value.state, action });
  }
  return report;
}
