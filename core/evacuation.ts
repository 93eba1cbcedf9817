import { z } from 'zod';
import { AgentId, ContainerName, EvacuationId, FailureCode, MigrationId } from './events.js';
import { NoticeCloud, NoticeId, NoticeKind } from './host-notice.js';

/**
 * An evacuation: every service on one host moved elsewhere, because an operator drains the host (`ums drain`)
 * or because its cloud announced the host's end (a host.notice that evicts). One record per host, in the KV
 * bucket `ums_evacuations` keyed by the agent's id, written only by the evacuation function
 * (functions/evacuate-host.ts) with compare-and-set. While a host's record is `evacuating` or `emptied`, the
 * host is closed: the planner sends nothing there (core/migration-plan.ts).
 *
 *   evacuating --> emptied     every item ended (moved, failed or left): the host stays closed until `ums drain --cancel`
 *   evacuating --> cancelled   the notice was withdrawn, or the operator cancelled: nothing new starts, the migrations
 *                              under way run to their end (turning a frozen one back would freeze it twice)
 *   emptied    --> cancelled   the operator opens the host again
 */

export const EvacuationState = z.enum(['evacuating', 'emptied', 'cancelled']);
export type EvacuationState = z.infer<typeof EvacuationState>;

/** Whether a host with this evacuation takes no new services. */
export const closesHost = (state: EvacuationState): boolean => state !== 'cancelled';

/** What set the evacuation off. */
export const EvacuationTrigger = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('drain'), requestedBy: z.string().max(200).optional() }),
  z.object({ kind: z.literal('notice'), cloud: NoticeCloud, noticeId: NoticeId, noticeKind: NoticeKind, summary: z.string().max(500) }),
]);
export type EvacuationTrigger = z.infer<typeof EvacuationTrigger>;

const isoTime = z.iso.datetime({ offset: true });
const reason = z.string().max(2000);

/**
 * One service of the evacuation and what became of it:
 *   pending -> moving -> sent -> moved | failed   it fits: planned onto `destination`, then migrated; `sent` once
 *                                                 its last byte has left the host (checkpoint.uploaded), which
 *                                                 is what an eviction's deadline is about
 *   left                                      it does not fit (deadline, policy, no destination): left running, `reason` says why
 *   pending -> not-started                    the evacuation was cancelled before its turn
 */
export const EvacuationItemState = z.enum(['pending', 'moving', 'sent', 'moved', 'failed', 'left', 'not-started']);
export type EvacuationItemState = z.infer<typeof EvacuationItemState>;

export const EvacuationItem = z.object({
  container: ContainerName,
  priority: z.number().int(),
  state: EvacuationItemState,
  /** Where it goes (pending, moving, moved, failed). */
  destination: AgentId.optional(),
  /** What the planner expects to send from this host for it. */
  bytes: z.number().int().nonnegative().optional(),
  /** From the start of the evacuation until its last byte has left the host, as predicted when it was decided. */
  predictedMs: z.number().nonnegative().optional(),
  /** Why it moves where it moves, or why it is left. */
  reason,
  migrationId: MigrationId.optional(),
  startedAt: isoTime.optional(),
  /** When its last byte had left the host. */
  sentAt: isoTime.optional(),
  endedAt: isoTime.optional(),
  failure: z.object({ code: FailureCode, reason }).optional(),
});
export type EvacuationItem = z.infer<typeof EvacuationItem>;

export const EvacuationRecord = z.object({
  agent: AgentId,
  evacuationId: EvacuationId,
  state: EvacuationState,
  trigger: EvacuationTrigger,
  /** The drain a notice took over: it governs again if the notice is withdrawn. */
  drain: z.object({ evacuationId: EvacuationId, requestedBy: z.string().max(200).optional() }).optional(),
  /** When the host is expected to end (a notice's deadline); absent for a drain. */
  deadline: isoTime.optional(),
  /** How many of its services are sent from the host at once (a migration's slot frees when its last byte has left). */
  concurrency: z.number().int().positive().max(64),
  /** The uplink the prediction used, and where the figure comes from. */
  link: z.object({ bytesPerSecond: z.number().positive(), basis: z.string().max(300) }),
  /** What the policy decided, in one sentence. */
  summary: z.string().max(2000),
  items: z.array(EvacuationItem).max(1000),
  startedAt: isoTime,
  updatedAt: isoTime,
  endedAt: isoTime.optional(),
  /** Why it was cancelled. */
  cancelReason: z.string().max(500).optional(),
});
export type EvacuationRecord = z.infer<typeof EvacuationRecord>;

/** The items still to end: what keeps an evacuation `evacuating`. */
export const isUnderWay = (item: EvacuationItem): boolean => item.state === 'pending' || item.state === 'moving' || item.state === 'sent';

/** The hosts that take no new service, each with why (the planner's refusal says it). */
export function closedHosts(records: readonly EvacuationRecord[]): Map<string, string> {
  const closed = new Map<string, string>();
  for (const record of records) {
    if (!closesHost(record.state)) continue;
    const cause =
      record.trigger.kind === 'notice'
        ? `its cloud announced its end (${record.trigger.cloud} ${record.trigger.noticeKind}${record.deadline ? ` at ${record.deadline}` : ''})`
        : 'it is drained';
    const state = record.state === 'evacuating' ? `being evacuated (${record.evacuationId})` : `evacuated (${record.evacuationId})`;
    const reopen = record.trigger.kind === 'drain' ? `; "ums drain ${record.agent} --cancel" opens it again` : '';
    closed.set(record.agent, `${cause}: ${state}${reopen}`);
  }
  return closed;
}
