import { z } from 'zod';
import { NoticeId, type NoticeKind } from '../../core/host-notice.js';
import {
  MetadataAnswerError,
  MetadataUnreachableError,
  NoticeWatcher,
  parseGmtDate,
  parseJsonAnswer,
  quote,
  zodIssues,
  type AcknowledgeOutcome,
  type AcknowledgesNotices,
  type FoundNotice,
  type NoticeWatcherSettings,
  type ReadLoop,
} from './notice-watcher.js';

/**
 * Azure Scheduled Events, read from the Instance Metadata Service as Microsoft documents it
 * (learn.microsoft.com/azure/virtual-machines/linux/scheduled-events, API version 2020-07-01):
 *
 *   GET  http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01   (header Metadata: true)
 *   -> {"DocumentIncarnation": 2, "Events": [{"EventId": "C7061BAC-...", "EventStatus": "Scheduled",
 *       "EventType": "Freeze", "ResourceType": "VirtualMachine", "Resources": ["WestNO_0", "WestNO_1"],
 *       "NotBefore": "Mon, 11 Apr 2026 22:26:58 GMT", "Description": "...", "EventSource": "Platform",
 *       "DurationInSeconds": 5}]}
 *   POST the same URL with {"StartRequests": [{"EventId": "..."}]} approves (acknowledges) an event.
 *
 * Events go to every VM of an availability set or scale-set placement group, so only those whose Resources
 * name this VM count. An event is removed from the list when it ends or Azure cancels it; NotBefore is empty
 * once it has Started. Microsoft recommends polling once a second (there is no long-poll).
 */

const API_VERSION = '2020-07-01';
const EVENTS_PATH = `/metadata/scheduledevents?api-version=${API_VERSION}`;
/** The VM's own name, as Scheduled Events lists it in Resources. */
const VM_NAME_PATH = '/metadata/instance/compute/name?api-version=2021-02-01&format=text';
/** The VM's resource id, as Event Grid's health events name it (targetResourceId). */
const RESOURCE_ID_PATH = '/metadata/instance/compute/resourceId?api-version=2021-02-01&format=text';
export const AZURE_METADATA_URL = 'http://169.254.169.254';

const EventType = z.enum(['Reboot', 'Redeploy', 'Freeze', 'Preempt', 'Terminate']);
const KIND: Readonly<Record<z.infer<typeof EventType>, NoticeKind>> = {
  Preempt: 'preemption',
  Terminate: 'termination',
  Reboot: 'reboot',
  Redeploy: 'redeploy',
  Freeze: 'freeze',
};

const ScheduledEvent = z.object({
  EventId: NoticeId,
  EventType,
  ResourceType: z.string(),
  Resources: z.array(z.string()),
  EventStatus: z.enum(['Scheduled', 'Started']),
  /** RFC 1123, or empty once the event has started. */
  NotBefore: z
    .string()
    .refine((t) => t === '' || parseGmtDate(t) !== undefined, 'an RFC 1123 date ("Mon, 19 Sep 2016 18:29:47 GMT") or ""'),
  // Added by API versions 2019-04-01, 2019-08-01 and 2020-07-01: optional, so that an older answer still reads.
  Description: z.string().optional(),
  EventSource: z.string().optional(),
  DurationInSeconds: z.number().int().optional(),
});
type ScheduledEvent = z.infer<typeof ScheduledEvent>;

const Document = z.object({
  DocumentIncarnation: z.number().int().nonnegative(),
  // Each event is checked on its own: one malformed event must not hide an eviction next to it.
  Events: z.array(z.unknown()),
});

export interface AzureScheduledEventsSettings extends NoticeWatcherSettings {
  /** This VM's name as Resources lists it; read from the instance metadata (compute/name) when not given. */
  vmName?: string;
}

export class AzureScheduledEvents extends NoticeWatcher implements AcknowledgesNotices {
  readonly cloud = 'azure';
  private vmName: string | undefined;
  /** The events of this VM in the last document read, by EventId: acknowledge() needs their Resources. */
  private events = new Map<string, ScheduledEvent>();
  private readonly acknowledged = new Set<string>();

  constructor(settings: AzureScheduledEventsSettings) {
    super(settings, 1_000);
    this.vmName = settings.vmName;
  }

  protected loops(): ReadLoop[] {
    return [{ source: 'azure scheduledevents', read: (signal) => this.read(signal) }];
  }

  private async read(signal: AbortSignal): Promise<void> {
    const vmName = this.vmName ?? (await this.readVmName(signal));
    const source = 'azure scheduledevents';
    const answer = await this.request(source, EVENTS_PATH, { headers: { Metadata: 'true' }, signal });
    if (answer.status !== 200) {
      throw new MetadataUnreachableError(source, `${source} answered HTTP ${answer.status}: ${quote(answer.body)}`);
    }
    const document = Document.safeParse(parseJsonAnswer(source, answer.body));
    if (!document.success) throw new MetadataAnswerError(source, zodIssues(document.error));

    const found: FoundNotice[] = [];
    const problems: MetadataAnswerError[] = [];
    const mine = new Map<string, ScheduledEvent>();
    document.data.Events.forEach((raw, index) => {
      const parsed = ScheduledEvent.safeParse(raw);
      if (!parsed.success) {
        const id = typeof (raw as { EventId?: unknown } | null)?.EventId === 'string' ? (raw as { EventId: string }).EventId : `#${index}`;
        problems.push(new MetadataAnswerError(source, `event ${id}: ${zodIssues(parsed.error)}`));
        return;
      }
      const event = parsed.data;
      // Azure compares VM names without regard to case.
      if (!event.Resources.some((r) => r.toLowerCase() === vmName.toLowerCase())) return;
      mine.set(event.EventId, event);
      const notBefore = event.NotBefore === '' ? undefined : parseGmtDate(event.NotBefore);
      found.push({
        noticeId: event.EventId,
        kind: KIND[event.EventType],
        // Started (NotBefore emptied) or Scheduled without a time: it may happen now.
        ...(notBefore ? { deadline: notBefore } : { noticePeriodMs: 0 }),
        summary: [
          `${event.EventType} ${event.EventStatus}`,
          event.NotBefore ? `not before ${event.NotBefore}` : undefined,
          event.EventSource ? `source ${event.EventSource}` : undefined,
          event.DurationInSeconds !== undefined && event.DurationInSeconds >= 0 ? `impact ${event.DurationInSeconds} s` : undefined,
          `resources ${event.Resources.join(', ')}`,
          event.Description || undefined,
        ]
          .filter((part) => part !== undefined)
          .join('; '),
      });
    });
    this.events = mine;
    for (const id of this.acknowledged) if (!mine.has(id)) this.acknowledged.delete(id);
    this.report(source, found, problems);
  }

  private async readVmName(signal: AbortSignal): Promise<string> {
    const source = 'azure instance metadata (compute/name)';
    const answer = await this.request(source, VM_NAME_PATH, { headers: { Metadata: 'true' }, signal });
    if (answer.status !== 200)
      throw new MetadataUnreachableError(source, `${source} answered HTTP ${answer.status}: ${quote(answer.body)}`);
    const name = answer.body.trim();
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$/.test(name)) throw new MetadataAnswerError(source, `${quote(name)} is not a VM name`);
    this.vmName = name;
    this.log.info({ vmName: name }, "read this VM's name from the instance metadata");
    return name;
  }

  async readInstanceId(signal: AbortSignal): Promise<string> {
    const source = 'azure instance metadata (compute/resourceId)';
    const answer = await this.request(source, RESOURCE_ID_PATH, { headers: { Metadata: 'true' }, signal });
    if (answer.status !== 200)
      throw new MetadataUnreachableError(source, `${source} answered HTTP ${answer.status}: ${quote(answer.body)}`);
    const id = answer.body.trim();
    if (!/^\/subscriptions\/[^/\s]+\/resourceGroups\/[^/\s]+\/providers\/Microsoft\.Compute\/[^\s]{1,400}$/i.test(id)) {
      throw new MetadataAnswerError(source, `${quote(id)} is not a VM's resource id`);
    }
    return id;
  }

  /**
   * Approves the event (POST StartRequests) so that Azure may start it before NotBefore: call it once nothing
   * on this host needs the time any more. Azure lets an approved event proceed for every VM in its Resources,
   * so an event that also names other VMs is approved only with `evenIfShared` (one of them must be elected
   * to do it; the others may still be busy).
   */
  async acknowledge(noticeId: string, options: { evenIfShared?: boolean } = {}): Promise<AcknowledgeOutcome> {
    const event = this.events.get(noticeId);
    if (!event) return { acknowledged: false, reason: `no event ${noticeId} for this VM in the last document read` };
    if (this.acknowledged.has(noticeId)) return { acknowledged: true };
    const others = event.Resources.filter((r) => r.toLowerCase() !== (this.vmName ?? '').toLowerCase());
    if (others.length > 0 && options.evenIfShared !== true) {
      return {
        acknowledged: false,
        reason: `event ${noticeId} also covers ${others.join(', ')}: approving it would let it proceed for them too`,
      };
    }
    const source = 'azure scheduledevents (StartRequests)';
    const answer = await this.request(source, EVENTS_PATH, {
      method: 'POST',
      headers: { Metadata: 'true', 'Content-Type': 'application/json' },
      body: JSON.stringify({ StartRequests: [{ EventId: noticeId }] }),
      signal: AbortSignal.timeout(this.requestTimeoutMs),
    });
    if (answer.status !== 200) {
      throw new MetadataUnreachableError(source, `approving event ${noticeId} was answered HTTP ${answer.status}: ${quote(answer.body)}`);
    }
    this.acknowledged.add(noticeId);
    this.log.info({ noticeId, eventType: event.EventType }, 'approved the scheduled event: Azure may start it now');
    return { acknowledged: true };
  }
}
