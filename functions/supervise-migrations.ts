import { randomUUID } from 'node:crypto';
import { isAlive } from '../core/agent-registration.js';
import type { Versioned } from '../core/event-bus.js';
import { isTerminal, type MigrationRecord } from '../core/migration.js';
import { beginFinalizing, commandDestinationAbort, commandSource, deleteArtifact, rollBack } from './finalize.js';
import type { FunctionContext } from './function-context.js';
import { annotate, completeMigration, deadlineFor, failMigration } from './migration-transitions.js';

/** A rollback that cannot reach the source this long after the request ends as failed, with the operator told. */
const ROLLBACK_GIVE_UP_MS = 10 * 60_000;

export interface SupervisionReport {
  checked: number;
  acted: Array<{ migrationId: string; state: string; action: string }>;
}

/**
 * Runs on a schedule (Cloud Scheduler in the cloud, the trigger bridge locally) and is what keeps a
 * migration from being stuck: every migration that is not over and whose phase outlived its deadline,
 * or whose agent for that phase stopped sending heartbeats, is moved on by the rule for its state.
 * It holds no state of its own; every decision is a compare-and-set on the record, so it can race the
 * event-driven functions (or another supervisor) safely.
 */
export async function superviseMigrations(ctx: FunctionContext, now = Date.now()): Promise<SupervisionReport> {
  const [records, agents] = await Promise.all([ctx.bus.migrations.list(), ctx.bus.agents.list()]);
  const alive = new Set(agents.filter((agent) => isAlive(agent.value, now)).map((agent) => agent.value.agentId));
  const report: SupervisionReport = { checked: 0, acted: [] };
  for (const { key: _key, ...record } of records) {
    if (isTerminal(record.value.state)) continue;
    report.checked += 1;
    const action = await superviseOne(record, alive, ctx, now).catch((error: unknown) => {
      ctx.log.warn({ err: error, migrationId: record.value.migrationId }, 'supervising a migration failed; the next round tries again');
      return undefined;
    });
    if (action) report.acted.push({ migrationId: record.value.migrationId, state: record.value.state, action });
  }
  return report;
}

async function superviseOne(record: Versioned<MigrationRecord>, alive: Set<string>, ctx: FunctionContext, now: number): Promise<string | undefined> {
  const { bus } = ctx;
  const value = record.value;
  const { state, sourceAgent, destinationAgent } = value;
  const overdue = value.deadlineAt !== undefined && Date.parse(value.deadlineAt) <= now;
  const sourceAlive = sourceAgent !== undefined && alive.has(sourceAgent);
  const destinationAlive = alive.has(destinationAgent);
  const extend = () => annotate(bus, record, () => ({ deadlineAt: deadlineFor(state, now) }));
  const deadline = (what: string) => ({ phase: state, code: 'deadline-exceeded' as const, reason: what });

  switch (state) {
    case 'requested':
    case 'preflight': {
      // Nothing is frozen yet: give up cleanly; the service keeps running at the source.
      const silent = state === 'preflight' && !destinationAlive;
      if (!overdue && !silent) return undefined;
      const why = silent
        ? `destination "${destinationAgent}" stopped sending heartbeats before it was ready; nothing was frozen`
        : `the migration did not get past ${state} in time; nothing was frozen`;
      await failMigration(bus, record, ctx.source, deadline(why), sourceAgent ?? null);
      return 'failed before the freeze';
    }
    case 'checkpointing':
    case 'uploaded':
    case 'restoring': {
      const silent = !destinationAlive ? destinationAgent : state === 'checkpointing' && !sourceAlive ? sourceAgent : undefined;
      if (!overdue && !silent) return undefined;
      const why = silent
        ? `agent "${silent}" stopped sending heartbeats while the migration was ${state}`
        : `the migration stayed ${state} past its deadline (${value.deadlineAt})`;
      return (await rollBack(record, deadline(why), ctx)) ? 'rolling back' : undefined;
    }
    case 'restored': {
      // The function that moves restored -> finalizing did not finish; the destination has confirmed.
      if (!overdue) return undefined;
      await beginFinalizing(record, ctx, async () => undefined);
      return 'finalizing';
    }
    case 'finalizing': {
      if (!overdue) return undefined;
      if (!sourceAlive) {
        // The destination runs the service; the source is gone. The discard waits in the source's
        // queue and runs when its agent returns; the migration itself is over.
        const settled = await annotate(bus, record, () => ({
          pendingCleanup: `source "${sourceAgent}" was not reachable to discard its kept checkpoint; its agent does it when it returns (the command waits in its queue)`,
        }));
        if (!settled) return undefined;
        const done = await completeMigration(bus, settled, ctx.source);
        if (done) await deleteArtifact(done.value, ctx);
        return 'done (source cleanup pending)';
      }
      await commandSource('discard', value, ctx, randomUUID());
      await extend();
      return 'discard sent again';
    }
    case 'rolling-back': {
      if (!overdue) return undefined;
      if (value.rollback?.destinationClear) {
        if (now - Date.parse(value.times.requestedAt) > ROLLBACK_GIVE_UP_MS && !sourceAlive) {
          await failMigration(
            bus,
            record,
            ctx.source,
            {
              phase: 'rollback',
              code: 'agent-unavailable',
              reason: `${value.failure?.reason ?? 'the migration failed'}; then source "${sourceAgent}" stayed unreachable, so its kept checkpoint was not resumed. Start the agent there: it resumes the container from the resume command waiting in its queue.`,
            },
            null,
          );
          return 'failed: source unreachable';
        }
        await commandSource('resume', value, ctx, randomUUID());
        await extend();
        return 'resume sent again';
      }
      if (!destinationAlive) {
        // Certainty is impossible with a silent destination; availability wins. It cannot run a second
        // copy for long: when its agent returns, the abort waiting in its queue removes any copy it made.
        const clear = await annotate(bus, record, () => ({
          rollback: { destinationClear: true, how: `destination "${destinationAgent}" silent; presumed without a copy (the abort in its queue removes any when it returns)` },
          deadlineAt: deadlineFor(state, now),
        }));
        if (clear) await commandSource('resume', clear.value, ctx);
        return clear ? 'resume (destination presumed gone)' : undefined;
      }
      await commandDestinationAbort(value, ctx, randomUUID());
      await extend();
      return 'abort sent again';
    }
    default:
      return undefined;
  }
}
