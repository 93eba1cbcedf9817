import type { EventOf } from '../core/events.js';
import type { FunctionContext } from './function-context.js';
import { plan } from './migration-saga.js';

/**
 * On migration.requested: step 1 of the saga (functions/migration-saga.ts): checks the request before
 * anything is frozen, records the plan and commands the destination to prepare. The source is told to
 * freeze only once the destination is ready (planRestore).
 */
export function planMigration(event: EventOf<'migration.requested'>, ctx: FunctionContext): Promise<void> {
  return plan(event, ctx);
}
