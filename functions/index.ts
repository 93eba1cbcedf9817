import * as framework from '@google-cloud/functions-framework';
import { publisherOf } from '../core/event-identity.js';
import { eventScope, InvalidMessageError, parseEvent, type EventOf, type UmsEvent } from '../core/events.js';
import { canonicalJson } from '../core/signed-envelope.js';
import { SCHEDULE_TICK_TYPE, triggers, type FunctionName } from './triggers.js';
import { functionBus, functionContext, type FunctionContext } from './function-context.js';
import { CLOUD_NOTICE_INGRESS, cloudNoticeIngress } from './cloud-notice-ingress.js';
import { createLogger } from '../core/log.js';
import { finalize, type FinalizeTrigger } from './finalize.js';
import { evacuateHost, superviseEvacuations, type EvacuationEvent } from './evacuate-host.js';
import { authenticatedCloudEvent } from './http-trigger.js';
import { planMigration } from './plan-migration.js';
import { planRestore } from './plan-restore.js';
import { superviseMigrations } from './supervise-migrations.js';

/**
 * The functions, as the functions-framework (and Cloud Functions / Cloud Run) load them:
 * `--target=planMigration --signature-type=http`. Each is an HTTP function that takes a CloudEvent only
 * from the trigger bridge: functions/http-trigger.ts checks the bridge's token (core/function-auth.ts)
 * before anything else, then hands the event to the handler as the framework's cloudevent wrapper would.
 */

interface RegisterOptions {
  /**
   * Act only on an event the stream holds (same id, type, source, time and data): what reaches a function
   * over HTTP must be a fact that was published, not a well-formed body someone posted.
   */
  factsOnly?: boolean;
}

function register<N extends FunctionName>(
  name: N,
  handler: (event: EventOf<(typeof triggers)[N][number]>, ctx: FunctionContext) => Promise<void>,
  options: RegisterOptions = {},
): void {
  framework.http(
    name,
    authenticatedCloudEvent(name, async (incoming) => {
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
      if (options.factsOnly === true && !(await isPublishedFact(event, ctx))) {
        ctx.log.warn({ id: event.id, type: event.type, scope: eventScope(event) }, 'ignored an event the stream does not hold');
        return;
      }
      await handler(event as EventOf<(typeof triggers)[N][number]>, ctx);
    }),
  );
}

/**
 * The event as the stream holds it on the subject of the principal that may state it (an agent's fact
 * published by that agent's credential), compared field by field (the wire form, so key order does not matter).
 */
async function isPublishedFact(event: UmsEvent, ctx: FunctionContext): Promise<boolean> {
  const stored = await ctx.bus.findEvent(eventScope(event), event.name, event.id, publisherOf(event));
  if (stored === undefined) return false;
  return (
    stored.type === event.type &&
    stored.source === event.source &&
    stored.time === event.time &&
    canonicalJson(stored.data) === canonicalJson(event.data)
  );
}

/** The supervisor runs on a scheduler tick, which carries nothing but its time. */
framework.http(
  'superviseMigrations',
  authenticatedCloudEvent('superviseMigrations', async (incoming) => {
    const ctx = await functionContext('superviseMigrations');
    if (incoming.type !== SCHEDULE_TICK_TYPE) {
      const reason = `superviseMigrations runs on "${SCHEDULE_TICK_TYPE}" ticks, not "${String(incoming.type)}"`;
      await ctx.bus.deadLetter('function-superviseMigrations', new TextEncoder().encode(JSON.stringify(incoming)), reason);
      return;
    }
    const report = await superviseMigrations(ctx);
    if (report.acted.length > 0) ctx.log.warn({ acted: report.acted }, 'supervisor moved stalled migrations on');
    const evacuationsActed = await superviseEvacuations(ctx);
    if (evacuationsActed > 0) ctx.log.warn({ acted: evacuationsActed }, 'supervisor caught evacuations up with their migrations');
  }),
);

/** The clouds' event services call this one themselves, not the bridge (functions/cloud-notice-ingress.ts). */
framework.http(CLOUD_NOTICE_INGRESS, cloudNoticeIngress(functionBus, createLogger(`function.${CLOUD_NOTICE_INGRESS}`)));

register('planMigration', planMigration);
register('planRestore', planRestore);
register('finalize', (event, ctx) => finalize(event as FinalizeTrigger, ctx), { factsOnly: true });
register('evacuateHost', (event, ctx) => evacuateHost(event as EvacuationEvent, ctx), { factsOnly: true });
