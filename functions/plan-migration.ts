import { RevisionConflictError, type Versioned } from '../core/event-bus.js';
import { makeCommand, makeEvent, type EventOf, type FailureCode } from '../core/events.js';
import { artifactPrefix } from '../core/checkpoint-artifact.js';
import { planAgainst } from '../core/migration-plan.js';
import { isTerminal, lockKey, type MigrationRecord } from '../core/migration.js';
import type { FunctionContext } from './function-context.js';
import { advance, deadlineFor, failMigration } from './migration-transitions.js';

/** How long after a request a container missing from the registrations is waited for. */
const CONTAINER_DISCOVERY_GRACE_MS = 8_000;

/**
 * On migration.requested: checks the request against the agent registry before anything is frozen
 * (both agents alive, the container running on exactly one source, its image present at the
 * destination, no other migration of it under way), records the plan, and commands the destination to
 * prepare. The source is told to freeze only once the destination is ready (plan-restore.ts).
 */
export async function planMigration(event: EventOf<'migration.requested'>, ctx: FunctionContext): Promise<void> {
  const { bus, log } = ctx;
  const request = event.data;
  const record = await recordFor(event, ctx);
  if (record.value.state === 'preflight') {
    // A redelivery after a crash between the record update and the command: send it again (the bus
    // drops the duplicate if the first one made it).
    await commandPrepare(record.value, ctx);
    return;
  }
  if (record.value.state !== 'requested') return;

  const refuse = (code: FailureCode, reason: string, runningOn: string | null) => {
    log.info({ migrationId: request.migrationId, code, reason }, 'migration refused');
    return failMigration(bus, record, ctx.source, { phase: 'plan', code, reason }, runningOn);
  };

  const agents = (await bus.agents.list()).map((entry) => entry.value);
  const plan = planAgainst(agents, request);
  if (!plan.ok) {
    if (plan.notListedYet && Date.now() - Date.parse(event.time) < CONTAINER_DISCOVERY_GRACE_MS) {
      // Registrations lag a heartbeat behind: a container started a moment ago may not be listed yet.
      const where = request.sourceAgent ? `on agent "${request.sourceAgent}"` : 'on any registered agent';
      throw new Error(`container "${request.container}" is not listed ${where} yet; the request will be delivered again`);
    }
    return refuse(plan.code, plan.reason, plan.runningOn);
  }
  const { source, container, decision } = plan;
  log.info({ migrationId: request.migrationId, approach: decision.approach, why: decision.reason }, 'approach decided');

  const holder = await takeLock(lockKey(source.agentId, request.container), request.migrationId, ctx);
  if (holder) {
    return refuse('already-migrating', `container "${request.container}" is already being migrated by ${holder}; wait for it to end ("ums status ${holder}")`, source.agentId);
  }

  const planned = await advance(bus, record, 'preflight', () => ({
    sourceAgent: source.agentId,
    image: container.image,
    imageId: container.imageId,
    approach: decision.approach,
    approachReason: decision.reason,
    artifactLocation: { storeUrl: source.storeUrl, prefix: artifactPrefix(request.migrationId) },
    requirements: {
      ...(source.capabilities?.containerLevel.cpuinfo !== undefined ? { cpuinfo: source.capabilities.containerLevel.cpuinfo } : {}),
      ...(container.traits?.network !== undefined ? { published: container.traits.network.published } : {}),
    },
    times: { ...record.value.times, plannedAt: new Date().toISOString() },
  }));
  if (!planned) return;
  await commandPrepare(planned.value, ctx);
}

/**
 * Takes the container's migration lock; returns the id of the migration that holds it instead, if
 * that one is still under way. A lock left by a migration that has ended (its holder crashed between
 * ending it and releasing the lock) is taken over rather than blocking the container for ever.
 */
async function takeLock(key: string, migrationId: string, ctx: FunctionContext): Promise<string | undefined> {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await ctx.bus.locks.create(key, { migrationId });
      return undefined;
    } catch (error) {
      if (!(error instanceof RevisionConflictError)) throw error;
    }
    const holder = await ctx.bus.locks.get(key);
    if (!holder || holder.value.migrationId === migrationId) return undefined;
    const holding = await ctx.bus.migrations.get(holder.value.migrationId);
    if (holding && !isTerminal(holding.value.state)) return holder.value.migrationId;
    ctx.log.warn({ lock: key, staleHolder: holder.value.migrationId }, 'taking over a lock left by a migration that has ended');
    await ctx.bus.locks.delete(key);
  }
  throw new Error(`could not take the migration lock ${key}: it keeps changing hands; the request will be delivered again`);
}

async function recordFor(event: EventOf<'migration.requested'>, ctx: FunctionContext): Promise<Versioned<MigrationRecord>> {
  const { migrationId, container, destinationAgent, sourceAgent } = event.data;
  const existing = await ctx.bus.migrations.get(migrationId);
  if (existing) return existing;
  const record: MigrationRecord = {
    migrationId,
    state: 'requested',
    epoch: 1,
    deadlineAt: deadlineFor('requested'),
    container,
    destinationAgent,
    ...(sourceAgent ? { sourceAgent } : {}),
    times: { requestedAt: event.time },
    updatedAt: new Date().toISOString(),
  };
  try {
    return { value: record, revision: await ctx.bus.migrations.create(migrationId, record) };
  } catch (error) {
    if (!(error instanceof RevisionConflictError)) throw error;
    const raced = await ctx.bus.migrations.get(migrationId);
    if (!raced) throw error;
    return raced;
  }
}

async function commandPrepare(record: MigrationRecord, ctx: FunctionContext): Promise<void> {
  const { migrationId, epoch, container, destinationAgent, sourceAgent, artifactLocation, image, imageId, approach, requirements } = record;
  if (!sourceAgent || !artifactLocation || !image || !imageId || !approach) throw new Error(`migration ${migrationId} is in preflight but has no plan`);
  await ctx.bus.sendCommand(
    destinationAgent,
    makeCommand('prepare', ctx.source, { migrationId, epoch, approach, container, image, imageId, sourceAgent, ...(requirements ? { requirements } : {}) }, `${migrationId}.prepare`),
  );
  await ctx.bus.publishEvent(
    makeEvent(
      'migration.planned',
      ctx.source,
      { migrationId, container, image, sourceAgent, destinationAgent, approach, ...(record.approachReason ? { approachReason: record.approachReason } : {}), artifact: artifactLocation },
      `${migrationId}.planned`,
    ),
  );
  ctx.log.info({ migrationId, sourceAgent, destinationAgent }, 'migration planned; destination told to prepare');
}
