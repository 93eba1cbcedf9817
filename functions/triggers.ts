import type { EventName } from '../core/events.js';

/**
 * Which events trigger which function: the routing table of the trigger bridge here and of the
 * Eventarc triggers in the cloud. Each function also refuses any other event type.
 */
export const triggers = {
  planMigration: ['migration.requested'],
  planRestore: [
    'restore.image-needed',
    'source.image-uploaded',
    'restore.prepared',
    'frontman.drained',
    'restore.urls-needed',
    'checkpoint.uploaded',
    'restore.started',
  ],
  finalize: [
    'restore.completed',
    'restore.pages-arrived',
    'restore.pages-lost',
    'restore.failed',
    'restore.aborted',
    'checkpoint.failed',
    'source.discarded',
    'source.resumed',
    'source.resume-failed',
    'service.running',
    'frontman.released',
  ],
  evacuateHost: [
    'host.drain-requested',
    'host.drain-cancelled',
    'host.notice',
    'host.notice-withdrawn',
    'checkpoint.uploaded',
    'migration.completed',
    'migration.failed',
  ],
  superviseMigrations: [],
} as const satisfies Record<string, readonly EventName[]>;

export type FunctionName = keyof typeof triggers;

/**
 * The functions the clouds call over HTTP with events of their own (functions/cloud-notice-ingress.ts): not in
 * `triggers`, so the bridge binds nothing to them and the local stack starts none; each authenticates its callers.
 */
export const httpIngresses = ['cloudNoticeIngress'] as const;

/** The CloudEvent type of a scheduler tick (Cloud Scheduler in the cloud, the trigger bridge locally). */
export const SCHEDULE_TICK_TYPE = 'dev.ums.schedule.tick.v1';

/** Functions run on a schedule rather than by events, and how often. */
export const schedules: Partial<Record<FunctionName, { everySeconds: number }>> = {
  superviseMigrations: { everySeconds: Number(process.env.UMS_SUPERVISE_EVERY_SECONDS ?? 5) || 5 },
};
