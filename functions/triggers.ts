import type { EventName } from '../core/events.js';

/**
 * Which events trigger which function: the routing table of the trigger bridge here and of the
 * Eventarc triggers in the cloud. Each function also refuses any other event type.
 */
export const triggers = {
  planMigration: ['migration.requested'],
  planRestore: ['restore.prepared', 'restore.urls-needed', 'checkpoint.uploaded'],
  finalize: ['restore.completed', 'restore.failed', 'checkpoint.failed', 'source.discarded', 'source.resumed', 'source.resume-failed'],
} as const satisfies Record<string, readonly EventName[]>;

export type FunctionName = keyof typeof triggers;
