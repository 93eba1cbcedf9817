import { createHash } from 'node:crypto';
import { isAlive } from '../core/agent-registration.js';
import { RevisionConflictError, type Versioned } from '../core/event-bus.js';
import { closedHosts, isUnderWay, type EvacuationItem, type EvacuationRecord, type EvacuationTrigger } from '../core/evacuation.js';
import { BEFORE_FIRST_BYTE_MS, DEFAULT_MARGIN, planEvacuation } from '../core/evacuation-plan.js';
import { makeEvent, type EventOf } from '../core/events.js';
import { isTerminal } from '../core/migration.js';
import type { FunctionContext } from './function-context.js';

/**
 * The evacuation function: empties a host when an operator drains it (host.drain-requested) or when its cloud
 * announces its end (a host.notice that evicts), and stops when the notice is withdrawn or the operator cancels.
 * It decides with the evacuation policy (core/evacuation-plan.ts), keeps what it decided and what became of each
 * service in the host's evacuation record (core/evacuation.ts), and asks for the migrations `concurrency` at a
 * time, starting the next as each one ends (migration.completed / migration.failed). The migrations themselves are
 * ordinary sagas (functions/migration-saga.ts): each keeps its service running exactly once.
 *
 * Stateless like the saga: every change is a compare-and-set on the record, and the migrations' ids are derived
 * from the evacuation's, so a redelivered event or a racing invocation asks for nothing twice.
 */

export type EvacuationEvent = EventOf<
  | 'host.drain-requested'
  | 'host.drain-cancelled'
  | 'host.notice'
  | 'host.notice-withdrawn'
  | 'checkpoint.uploaded'
  | 'migration.completed'
  | 'migration.failed'
>;

/** How many migrations an evacuation runs at once when nobody said (UMS_EVACUATION_CONCURRENCY). */
export function defaultConcurrency(): number {
  const value = Number(process.env.UMS_EVACUATION_CONCURRENCY ?? 2);
  return Number.isInteger(value) && value > 0 && value <= 64 ? value : 2;
}

export async function evacuateHost(event: EvacuationEvent, ctx: FunctionContext): Promise<void> {
  switch (event.name) {
    case 'host.drain-requested': {
      const { agent, evacuationId, concurrency, requestedBy } = event.data;
      return begin(
        ctx,
        agent,
        evacuationId,
        { kind: 'drain', ...(requestedBy ? { requestedBy } : {}) },
        concurrency ?? defaultConcurrency(),
      );
    }
    case 'host.notice': {
      const notice = event.data;
      if (!notice.evicts) {
        // A pause, a live migration or an advisory keeps the host's memory: evacuating would stop every service for nothing.
        ctx.log.info(
          { agent: notice.agent, kind: notice.kind, noticeId: notice.noticeId },
          'not evacuating: the notice does not end the host',
        );
        return;
      }
      // One evacuation per notice, whatever the number of deliveries (the latest fact per noticeId holds).
      const evacuationId = `ev-${createHash('sha256').update(`${notice.agent}\n${notice.cloud}\n${notice.noticeId}`).digest('hex').slice(0, 12)}`;
      const trigger: EvacuationTrigger = {
        kind: 'notice',
        cloud: notice.cloud,
        noticeId: notice.noticeId,
        noticeKind: notice.kind,
        summary: notice.summary,
      };
      return begin(ctx, notice.agent, evacuationId, trigger, defaultConcurrency(), notice.deadline);
    }
    case 'host.notice-withdrawn': {
      const { agent, noticeId, cloud } = event.data;
      if (await drainGovernsAgain(ctx, agent, noticeId)) return advance(ctx, agent);
      return cancel(
        ctx,
        agent,
        `the ${cloud} notice ${noticeId} was withdrawn`,
        (trigger) => trigger.kind === 'notice' && trigger.noticeId === noticeId,
      );
    }
    case 'host.drain-cancelled':
      return cancel(ctx, event.data.agent, `cancelled by ${event.data.requestedBy ?? 'an operator'}`, () => true);
    case 'checkpoint.uploaded':
      // The service's last byte has left its host: the host no longer needs to outlive it, and the next may go.
      return itemChanged(ctx, event.data.agent, event.data.migrationId, ['moving'], { state: 'sent', sentAt: event.data.uploadedAt });
    case 'migration.completed':
      // Handled before checkpoint.uploaded (no order between them), the record's upload time says when it left.
      return itemChanged(
        ctx,
        event.data.sourceAgent,
        event.data.migrationId,
        ['moving', 'sent'],
        { state: 'moved' },
        async () => (await ctx.bus.migrations.get(event.data.migrationId))?.value.times.uploadedAt,
      );
    case 'migration.failed': {
      const record = await ctx.bus.migrations.get(event.data.migrationId);
      const source = record?.value.sourceAgent;
      if (source === undefined) return;
      const where = event.data.runningOn === null ? 'it runs nowhere: operator action needed' : `it runs on ${event.data.runningOn}`;
      return itemChanged(ctx, source, event.data.migrationId, ['moving', 'sent'], {
        state: 'failed',
        failure: { code: event.data.code, reason: `${event.data.reason} (${where})` },
      });
    }
  }
}

/**
 * Starts an evacuation of `agent`, or joins the one under way: a notice arriving during a drain puts the
 * drain's remaining services under the notice's deadline (what is moving or moved keeps its course).
 */
async function begin(
  ctx: FunctionContext,
  agent: string,
  evacuationId: string,
  trigger: EvacuationTrigger,
  concurrency: number,
  deadline?: string,
): Promise<void> {
  const { bus, log } = ctx;
  for (let attempt = 0; attempt < 5; attempt++) {
    const [existing, registration, agents, evacuations] = await Promise.all([
      bus.evacuations.get(agent),
      bus.agents.get(agent),
      bus.agents.list(),
      bus.evacuations.list(),
    ]);
    // A redelivery (or, once cancelled, a late one: a cancelled evacuation is not started again by it), or the
    // same notice with a new deadline (an Azure event moving its NotBefore, or Started): the earliest holds.
    if (existing?.value.evacuationId === evacuationId) {
      const sooner = earliest(deadline, existing.value.deadline);
      if (existing.value.state === 'evacuating' && sooner !== existing.value.deadline && sooner !== undefined) {
        const moved = { ...existing.value, deadline: sooner, updatedAt: new Date().toISOString() };
        if (!(await compareAndSet(ctx, agent, moved, existing))) continue;
        log.info({ agent, evacuationId, deadline: sooner }, 'the notice moved its deadline earlier');
      }
      return advance(ctx, agent);
    }
    if (!registration || !isAlive(registration.value)) {
      log.warn({ agent, evacuationId, trigger: trigger.kind }, 'cannot evacuate: the agent is not registered or not alive');
      return;
    }
    const under = existing !== undefined && existing.value.state === 'evacuating' ? existing.value : undefined;
    // Services the evacuation under way has already taken on stay as they are; the rest are decided now.
    const kept = (under?.items ?? []).filter((item) => item.state !== 'pending');
    const host = {
      ...registration.value,
      containers: registration.value.containers.filter((c) => !kept.some((k) => k.container === c.name)),
    };
    const now = Date.now();
    const effectiveDeadline = earliest(deadline, under?.deadline);
    const closed = closedHosts(evacuations.filter((e) => e.key !== agent).map((e) => e.value));
    const decision = planEvacuation({
      host,
      agents: agents.map((entry) => entry.value),
      closed: new Set(closed.keys()),
      ...(effectiveDeadline !== undefined ? { windowMs: Date.parse(effectiveDeadline) - now } : {}),
      concurrency: under?.concurrency ?? concurrency,
      now,
    });
    const at = new Date(now).toISOString();
    // A notice outranks a drain: its deadline and its id now govern (so a redelivery of it is recognised), and the
    // drain it took over governs again if it is withdrawn. A drain asked during a notice's evacuation joins it.
    const noticeOverDrain = under !== undefined && under.trigger.kind === 'drain' && trigger.kind === 'notice';
    const record: EvacuationRecord = {
      agent,
      evacuationId: under !== undefined && !noticeOverDrain ? under.evacuationId : evacuationId,
      ...(noticeOverDrain && under.trigger.kind === 'drain'
        ? { drain: { evacuationId: under.evacuationId, ...(under.trigger.requestedBy ? { requestedBy: under.trigger.requestedBy } : {}) } }
        : {}),
      state: 'evacuating',
      trigger: under !== undefined && trigger.kind === 'drain' ? under.trigger : trigger,
      ...(effectiveDeadline !== undefined ? { deadline: effectiveDeadline } : {}),
      concurrency: under?.concurrency ?? concurrency,
      link: decision.link,
      summary: decision.summary,
      items: [...kept, ...decision.items],
      startedAt: under?.startedAt ?? at,
      updatedAt: at,
    };
    try {
      if (existing === undefined) await bus.evacuations.create(agent, record);
      else await bus.evacuations.update(agent, record, existing.revision);
    } catch (error) {
      if (error instanceof RevisionConflictError) continue;
      throw error;
    }
    log.info(
      { agent, evacuationId: record.evacuationId, trigger: record.trigger, deadline: record.deadline, summary: record.summary },
      under ? 'evacuation re-decided under a notice' : 'evacuation decided',
    );
    for (const item of decision.items)
      log.info({ agent, container: item.container, state: item.state, why: item.reason }, 'evacuation item');
    return advance(ctx, agent);
  }
  throw new Error(`the evacuation record of "${agent}" kept changing under this invocation; the event will be delivered again`);
}

/**
 * Asks for the next migrations, up to the concurrency; ends the evacuation once nothing is under way. Before
 * starting a service under a deadline it checks the service still fits in what is left: one that no longer
 * does (the migrations before it ran slower than predicted) is left running instead of being frozen for nothing.
 */
async function advance(ctx: FunctionContext, agent: string): Promise<void> {
  const { bus } = ctx;
  for (let attempt = 0; attempt < 5; attempt++) {
    const current = await bus.evacuations.get(agent);
    if (!current || current.value.state !== 'evacuating') return;
    const record = current.value;
    const now = Date.now();
    let slots = record.concurrency - record.items.filter((item) => item.state === 'moving').length;
    const started: EvacuationItem[] = [];
    const items = record.items.map((item): EvacuationItem => {
      if (item.state !== 'pending' || slots <= 0) return item;
      const late = lateBy(record, item, now);
      if (late !== undefined) return { ...item, state: 'left', endedAt: new Date(now).toISOString(), reason: late };
      slots -= 1;
      const next: EvacuationItem = {
        ...item,
        state: 'moving',
        migrationId: migrationIdOf(record.evacuationId, item.container),
        startedAt: new Date(now).toISOString(),
      };
      started.push(next);
      return next;
    });
    const over = !items.some(isUnderWay);
    const next: EvacuationRecord = {
      ...record,
      items,
      ...(over ? { state: 'emptied', endedAt: new Date(now).toISOString() } : {}),
      updatedAt: new Date(now).toISOString(),
    };
    if (started.length === 0 && !over && items.every((item, i) => item === record.items[i])) return;
    if (!(await compareAndSet(ctx, agent, next, current))) continue;
    for (const item of started) await requestMigration(ctx, next, item);
    if (over) ctx.log.info({ agent, evacuationId: record.evacuationId, outcome: outcomeOf(next) }, 'evacuation ended');
    return;
  }
}

/** A service's migration in an evacuation (one per service): the same however often it is asked for. */
const migrationIdOf = (evacuationId: string, container: string): string =>
  `${evacuationId}-${createHash('sha256').update(container).digest('hex').slice(0, 12)}`;

/** Why a pending service would no longer leave the host before its end, if so. */
function lateBy(record: EvacuationRecord, item: EvacuationItem, now: number): string | undefined {
  if (record.deadline === undefined) return undefined;
  const leftMs = Date.parse(record.deadline) - now;
  // It shares the link with what is still being sent (not known how far along: counted whole), and keeps the margin.
  const sending = record.items.filter((other) => other.state === 'moving').reduce((sum, other) => sum + (other.bytes ?? 0), 0);
  const bytes = item.bytes ?? 0;
  const needMs = BEFORE_FIRST_BYTE_MS + ((bytes + sending) / record.link.bytesPerSecond) * 1000;
  if (needMs <= leftMs * (1 - DEFAULT_MARGIN)) return undefined;
  if (leftMs <= 0) return 'the deadline passed before its turn: left where it ran';
  return `its turn came ${(leftMs / 1000).toFixed(1)} s before the deadline and it needs about ${(needMs / 1000).toFixed(1)} s to leave the host: left running rather than frozen for nothing`;
}

async function requestMigration(ctx: FunctionContext, record: EvacuationRecord, item: EvacuationItem): Promise<void> {
  if (item.migrationId === undefined || item.destination === undefined) return;
  await ctx.bus.publishEvent(
    makeEvent(
      'migration.requested',
      ctx.source,
      {
        migrationId: item.migrationId,
        container: item.container,
        sourceAgent: record.agent,
        destinationAgent: item.destination,
        requestedBy: `evacuation ${record.evacuationId} of ${record.agent}`,
        evacuation: { agent: record.agent, evacuationId: record.evacuationId },
      },
      // The migration's id: a repeated request is deduplicated by the bus and, after that, by the saga.
      item.migrationId,
    ),
  );
}

/** Records what became of the service of `migrationId` if it is in one of the states `from` (else it was recorded already). */
async function itemChanged(
  ctx: FunctionContext,
  agent: string,
  migrationId: string,
  from: ReadonlyArray<EvacuationItem['state']>,
  change: Pick<EvacuationItem, 'state' | 'failure' | 'sentAt'>,
  /** When its last byte left, if the item does not say yet (read only for an evacuation's own migration). */
  sentAtIfUnknown?: () => Promise<string | undefined>,
): Promise<void> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const current = await ctx.bus.evacuations.get(agent);
    const index = current?.value.items.findIndex((item) => item.migrationId === migrationId) ?? -1;
    const item = current?.value.items[index];
    // Not an evacuation's migration, or already recorded.
    if (!current || item === undefined || !from.includes(item.state)) return;
    const items = [...current.value.items];
    const ended = change.state === 'moved' || change.state === 'failed';
    const sentAt = item.sentAt ?? change.sentAt ?? (await sentAtIfUnknown?.());
    items[index] = {
      ...item,
      ...change,
      ...(sentAt !== undefined ? { sentAt } : {}),
      ...(ended ? { endedAt: new Date().toISOString() } : {}),
    };
    if (await compareAndSet(ctx, agent, { ...current.value, items, updatedAt: new Date().toISOString() }, current))
      return advance(ctx, agent);
  }
  throw new Error(`the evacuation record of "${agent}" kept changing under this invocation; the event will be delivered again`);
}

/** A withdrawn notice that had taken over an operator's drain hands it back (no deadline); whether it did. */
async function drainGovernsAgain(ctx: FunctionContext, agent: string, noticeId: string): Promise<boolean> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const current = await ctx.bus.evacuations.get(agent);
    const record = current?.value;
    if (!current || !record || record.state !== 'evacuating' || record.drain === undefined) return false;
    if (record.trigger.kind !== 'notice' || record.trigger.noticeId !== noticeId) return false;
    const { drain, deadline: _deadline, ...rest } = record;
    const next: EvacuationRecord = {
      ...rest,
      trigger: { kind: 'drain', ...(drain.requestedBy !== undefined ? { requestedBy: drain.requestedBy } : {}) },
      updatedAt: new Date().toISOString(),
    };
    if (await compareAndSet(ctx, agent, next, current)) {
      ctx.log.info({ agent, noticeId }, 'the notice was withdrawn; the drain it had taken over goes on without a deadline');
      return true;
    }
  }
  throw new Error(`the evacuation record of "${agent}" kept changing under this invocation; the event will be delivered again`);
}

async function cancel(ctx: FunctionContext, agent: string, why: string, applies: (trigger: EvacuationTrigger) => boolean): Promise<void> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const current = await ctx.bus.evacuations.get(agent);
    if (!current || current.value.state === 'cancelled' || !applies(current.value.trigger)) return;
    const at = new Date().toISOString();
    const items = current.value.items.map((item): EvacuationItem =>
      item.state === 'pending'
        ? { ...item, state: 'not-started', reason: `${why} before its turn; it runs where it ran`, endedAt: at }
        : item,
    );
    const next: EvacuationRecord = {
      ...current.value,
      state: 'cancelled',
      cancelReason: why,
      items,
      updatedAt: at,
      endedAt: current.value.endedAt ?? at,
    };
    if (await compareAndSet(ctx, agent, next, current)) {
      ctx.log.info(
        { agent, evacuationId: next.evacuationId, why, moving: items.filter((i) => i.state === 'moving').length },
        'evacuation cancelled',
      );
      return;
    }
  }
  throw new Error(`the evacuation record of "${agent}" kept changing under this invocation; the event will be delivered again`);
}

/**
 * On the supervisor's tick: what an event lost or a crash between writing the record and asking would leave
 * behind. A service marked moving whose migration has ended is marked as it ended; one whose request never
 * became a migration is asked for again (same id: asked at most once in effect); then the next ones start.
 */
export async function superviseEvacuations(ctx: FunctionContext, now = Date.now()): Promise<number> {
  let acted = 0;
  for (const entry of await ctx.bus.evacuations.list()) {
    const record = entry.value;
    for (const item of record.items) {
      if ((item.state !== 'moving' && item.state !== 'sent') || item.migrationId === undefined) continue;
      const migration = await ctx.bus.migrations.get(item.migrationId);
      if (migration && isTerminal(migration.value.state)) {
        acted += 1;
        await itemChanged(
          ctx,
          record.agent,
          item.migrationId,
          ['moving', 'sent'],
          migration.value.state === 'done'
            ? { state: 'moved' }
            : { state: 'failed', failure: migration.value.failure ?? { code: 'agent-unavailable', reason: 'the migration failed' } },
        );
      } else if (!migration && item.state === 'moving' && now - Date.parse(item.startedAt ?? record.updatedAt) > 10_000) {
        acted += 1;
        await requestMigration(ctx, record, item);
      }
    }
    if (record.state === 'evacuating') await advance(ctx, record.agent);
  }
  return acted;
}

async function compareAndSet(
  ctx: FunctionContext,
  agent: string,
  next: EvacuationRecord,
  current: Versioned<EvacuationRecord>,
): Promise<boolean> {
  try {
    await ctx.bus.evacuations.update(agent, next, current.revision);
    return true;
  } catch (error) {
    if (error instanceof RevisionConflictError) return false;
    throw error;
  }
}

function earliest(a: string | undefined, b: string | undefined): string | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return Date.parse(a) <= Date.parse(b) ? a : b;
}

/** How many services of the evacuation ended each way. */
export function outcomeOf(record: EvacuationRecord): Record<EvacuationItem['state'], number> {
  const counts = { pending: 0, moving: 0, sent: 0, moved: 0, failed: 0, left: 0, 'not-started': 0 };
  for (const item of record.items) counts[item.state] += 1;
  return counts;
}
