import * as framework from '@google-cloud/functions-framework';
import type { CloudEvent as FrameworkCloudEvent } from '@google-cloud/functions-framework';
import { InvalidMessageError, parseEvent, type EventOf } from '../core/events.js';
import { SCHEDULE_TICK_TYPE, triggers, type FunctionName } from './triggers.js';
import { functionContext, type FunctionContext } from './function-context.js';
import { finalize, type FinalizeTrigger } from './finalize.js';
import { planMigration } from './plan-migration.js';
import { planRestore } from './plan-restore.js';
import { superviseMigrations } from './supervise-migrations.js';

/**
 * The functions, as the functions-framework (and Cloud Functions / Cloud Run) load them:
 * `--target=planMigration --signature-type=cloudevent`.
 */

function register<N extends FunctionName>(
  name: N,
  handler: (event: EventOf<(typeof triggers)[N][number]>, ctx: FunctionContext) => Promise<void>,
): void {
  framework.cloudEvent(name, async (incoming: FrameworkCloudEvent<unknown>) => {
    const ctx = await functionContext(name);
    let event;
    try {
      event = parseEvent({ ...incoming });
      if (!(triggers[name] as readonly string[]).includes(event.name)) {
        throw new InvalidMessageError('event', `${name} does not handle "${event.type}"`);
      }
    } catch (error) {
      // A message that will never parse must not be retried: record it as a dead letter and acknowledge.
      if (!(error instanceof InvalidMessageError)) throw error;
      ctx.log.warn({ reason: error.message, id: incoming.id, type: incoming.type }, 'rejected an invalid event');
      await ctx.bus.deadLetter(`function-${name}`, new TextEncoder().encode(JSON.stringify(incoming)), error.message);
      return;
    }
    await handler(event as EventOf<(typeof triggers)[N][number]>, ctx);
  });
}

/** The supervisor runs on a scheduler tick, which carries nothing but its time. */
framework.cloudEvent('superviseMigrations', async (incoming: FrameworkCloudEvent<unknown>) => {
  const ctx = await functionContext('superviseMigrations');
  if (incoming.type !== SCHEDULE_TICK_TYPE) {
    const reason = `superviseMigrations runs on "${SCHEDULE_TICK_TYPE}" ticks, not "${String(incoming.type)}"`;
    await ctx.bus.deadLetter('function-superviseMigrations', new TextEncoder().encode(JSON.stringify(incoming)), reason);
    return;
  }
  const report = await superviseMigrations(ctx);
  if (report.acted.length > 0) ctx.log.warn({ acted: report.acted }, 'supervisor moved stalled migrations on');
});

register('planMigration', planMigration);
register('planRestore', planRestore);
register('finalize', (event, ctx) => finalize(event as FinalizeTrigger, ctx));
