import { z } from 'zod';

/**
 * A cloud's notice that something will happen to a host: an eviction (spot/preemptible capacity taken back,
 * a scale-in) or maintenance (a reboot, a move, a pause). Each agent reads its own cloud's instance metadata
 * (agents/notices/) and turns what the cloud says into this one model, so that whatever reacts to a notice
 * (draining, evacuating) needs to know no cloud's format.
 *
 * It lives in core, not beside the watchers, because the bus's host.notice events (core/events.ts) carry it.
 */

const isoTime = z.iso.datetime({ offset: true });

/** The clouds whose instance metadata announces evictions and maintenance. */
export const NoticeCloud = z.enum(['azure', 'gcp', 'aws']);
export type NoticeCloud = z.infer<typeof NoticeCloud>;

/**
 * What a notice announces, in the same words for every cloud:
 * - `preemption`: spot or preemptible capacity taken back (Azure Preempt, GCP preempted, an AWS spot
 *   interruption whatever its action: terminate, stop or hibernate);
 * - `termination`: the VM is to be deleted (Azure Terminate, a scale set's scale-in);
 * - `reboot`: the VM or its host restarts (Azure Reboot, AWS instance-reboot and system-reboot);
 * - `redeploy`: the VM moves to another node with a restart (Azure Redeploy);
 * - `maintenance-terminate`: GCP stops the VM for host maintenance (TERMINATE_ON_HOST_MAINTENANCE);
 * - `stop`: the VM is to be stopped (AWS instance-stop);
 * - `retirement`: the VM's hardware is retired: stopped or terminated (AWS instance-retirement);
 * - `freeze`: a pause of a few seconds with memory kept (Azure Freeze, e.g. a memory-preserving live migration);
 * - `maintenance-live-migrate`: GCP live-migrates the VM (MIGRATE_ON_HOST_MAINTENANCE), memory kept;
 * - `maintenance`: network or power maintenance that may briefly affect the VM (AWS system-maintenance);
 * - `rebalance-advisory`: AWS says this spot instance is at elevated risk of interruption; nothing is scheduled.
 */
export const NoticeKind = z.enum([
  'preemption',
  'termination',
  'reboot',
  'redeploy',
  'maintenance-terminate',
  'stop',
  'retirement',
  'freeze',
  'maintenance-live-migrate',
  'maintenance',
  'rebalance-advisory',
]);
export type NoticeKind = z.infer<typeof NoticeKind>;

/**
 * Which notices end the host: its memory, and with it every running container, is lost. Only these call
 * for an evacuation; a pause or a live migration keeps the containers running, and an advisory schedules
 * nothing. The one place this rule is written: the watchers set `evicts` from it and the event schema
 * refuses a notice whose `evicts` disagrees with its kind.
 */
const ENDS_THE_HOST: Readonly<Record<NoticeKind, boolean>> = {
  preemption: true,
  termination: true,
  reboot: true,
  redeploy: true,
  'maintenance-terminate': true,
  stop: true,
  retirement: true,
  freeze: false,
  'maintenance-live-migrate': false,
  maintenance: false,
  'rebalance-advisory': false,
};

export function endsTheHost(kind: NoticeKind): boolean {
  return ENDS_THE_HOST[kind];
}

/** A notice's id: the cloud's own where it has one (Azure EventId, AWS EventId), else a fixed name per metadata key. */
export const NoticeId = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$/, 'letters, digits, "_", ".", ":" and "-" only');

/** The fields a notice has on the bus too (core/events.ts host.notice), with the evicts rule checked. */
export const noticeShape = {
  cloud: NoticeCloud,
  noticeId: NoticeId,
  kind: NoticeKind,
  /** Whether the notice ends the host (endsTheHost): only then is the host evacuated. */
  evicts: z.boolean(),
  /**
   * When the cloud acts, at the earliest: the notice's own time where it gives one (Azure NotBefore, the AWS
   * spot action's time, an AWS event's NotBefore), else the documented notice period from when the agent
   * first saw it (GCP: 30 s for a preemption, 60 s for maintenance). Absent for an advisory.
   */
  deadline: isoTime.optional(),
  /** What the cloud said, in one line, for operators (event type, status, description; never a token). */
  summary: z.string().max(500),
  /** When this agent first saw the notice (reported by the cloud's event service: when that service emitted it). */
  observedAt: isoTime,
};

/**
 * The clouds' event services, through which a cloud also announces what happens to its VMs (Event Grid, Eventarc,
 * EventBridge): functions/cloud-notice-ingress.ts turns their events into the same notices the agents read from
 * their instance metadata.
 */
export const EventService = z.enum(['event-grid', 'eventarc', 'eventbridge']);
export type EventService = z.infer<typeof EventService>;

/**
 * Who reported a notice that is not the agent's own reading of its metadata: the cloud's event service, with the
 * id and source of its event (for an operator to find it there). A notice with a reporter is the functions' word,
 * not the agent's (core/event-identity.ts): the ingress is not the agent and cannot speak for it.
 */
export const NoticeReporter = z.object({
  service: EventService,
  eventId: z.string().min(1).max(300),
  eventSource: z.string().min(1).max(500),
});
export type NoticeReporter = z.infer<typeof NoticeReporter>;

export const evictsFollowsKind = (notice: { kind: NoticeKind; evicts: boolean }): boolean => notice.evicts === endsTheHost(notice.kind);
export const EVICTS_RULE_MESSAGE = 'evicts must say whether the kind ends the host (core/host-notice.ts)';

export const HostNotice = z
  .object({
    ...noticeShape,
    /** Set when the notice is gone again (the cloud withdrew it, or it ran its course). */
    withdrawnAt: isoTime.optional(),
  })
  .refine(evictsFollowsKind, { message: EVICTS_RULE_MESSAGE, path: ['evicts'] });
export type HostNotice = z.infer<typeof HostNotice>;
