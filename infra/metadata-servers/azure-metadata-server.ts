import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { z } from 'zod';
import { ControlInputError, GARBAGE, header, MetadataServer, send, sendJson } from './metadata-server.js';

/**
 * A stand-in for Azure's Instance Metadata Service (Scheduled Events), which answers only inside an Azure VM
 * and cannot run here. It serves what Microsoft documents for API version 2020-07-01
 * (learn.microsoft.com/azure/virtual-machines/linux/scheduled-events):
 *   GET  /metadata/scheduledevents?api-version=...   {"DocumentIncarnation": n, "Events": [...]}; the incarnation
 *        goes up whenever the list changes; an event that ends or is cancelled leaves the list;
 *   POST /metadata/scheduledevents?api-version=...   {"StartRequests": [{"EventId": "..."}]}: approves events
 *        (200; 400 for a malformed body or an unknown EventId); an approved event then goes Started with an
 *        empty NotBefore, as Azure does when every VM concerned approved it;
 *   GET  /metadata/instance/compute/name?api-version=...&format=text   the VM's name;
 *   GET  /metadata/instance/compute/resourceId?api-version=...&format=text   the VM's resource id.
 * Every request needs the header "Metadata: true" and an api-version, and one with X-Forwarded-For is refused,
 * all with 400 as IMDS answers. Not modelled: the delay of up to two minutes of the very first call, events
 * for other VMs' own timing, approvals gathered from several tenants of a host.
 */

const EventType = z.enum(['Reboot', 'Redeploy', 'Freeze', 'Preempt', 'Terminate']);
type EventType = z.infer<typeof EventType>;

/** The documented minimum notice per event type (Terminate: configurable, 5 to 15 minutes; 5 taken). */
const MINIMUM_NOTICE_MS: Readonly<Record<EventType, number>> = {
  Freeze: 15 * 60_000,
  Reboot: 15 * 60_000,
  Redeploy: 10 * 60_000,
  Preempt: 30_000,
  Terminate: 5 * 60_000,
};

export interface AzureScheduledEvent {
  EventId: string;
  EventType: EventType;
  ResourceType: 'VirtualMachine';
  Resources: string[];
  EventStatus: 'Scheduled' | 'Started';
  NotBefore: string;
  Description: string;
  EventSource: 'Platform' | 'User';
  DurationInSeconds: number;
}

/** A notice to post, in Azure's terms; what is left out gets the documented defaults. */
export const AzureNoticeInput = z.object({
  EventId: z.string().min(1).max(100).optional(),
  EventType,
  EventStatus: z.enum(['Scheduled', 'Started']).optional(),
  Resources: z.array(z.string().min(1)).optional(),
  /** An RFC 1123 date, or "" (as for a started event); default: now plus the type's minimum notice. */
  NotBefore: z.string().optional(),
  Description: z.string().optional(),
  EventSource: z.enum(['Platform', 'User']).optional(),
  DurationInSeconds: z.number().int().optional(),
});
export type AzureNoticeInput = z.infer<typeof AzureNoticeInput>;

const StartRequests = z.object({ StartRequests: z.array(z.object({ EventId: z.string().min(1) })).min(1) });

export class AzureMetadataServer extends MetadataServer {
  /** Every approval received, in order. */
  readonly approvals: Array<{ eventId: string; at: string }> = [];
  private readonly events = new Map<string, AzureScheduledEvent>();
  /** Events in no documented shape, listed after the others: how a watcher copes with one is a test too. */
  private readonly malformed: unknown[] = [];
  private incarnation = 1;

  constructor(private readonly options: { vmName: string; resourceId?: string; startOnApproval?: boolean; host?: string }) {
    super(options.host);
  }

  /** The VM's resource id (what Event Grid's health events name it by): given, or one in a subscription of zeros. */
  get resourceId(): string {
    return (
      this.options.resourceId ??
      `/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ums/providers/Microsoft.Compute/virtualMachines/${this.options.vmName}`
    );
  }

  /** Schedules an event (for this VM unless Resources says otherwise); returns its EventId. */
  schedule(input: AzureNoticeInput): string {
    const notice = AzureNoticeInput.parse(input);
    const eventId = notice.EventId ?? randomUUID().toUpperCase();
    this.events.set(eventId, {
      EventId: eventId,
      EventType: notice.EventType,
      ResourceType: 'VirtualMachine',
      Resources: notice.Resources ?? [this.options.vmName],
      EventStatus: notice.EventStatus ?? 'Scheduled',
      NotBefore:
        notice.NotBefore ??
        (notice.EventStatus === 'Started' ? '' : new Date(Date.now() + MINIMUM_NOTICE_MS[notice.EventType]).toUTCString()),
      Description: notice.Description ?? describeType(notice.EventType),
      EventSource: notice.EventSource ?? 'Platform',
      DurationInSeconds: notice.DurationInSeconds ?? (notice.EventType === 'Freeze' ? 5 : -1),
    });
    this.incarnation += 1;
    return eventId;
  }

  /** Lists `event` as it is, documented shape or not (until clearMalformed()). */
  injectMalformed(event: unknown): void {
    this.malformed.push(event);
    this.incarnation += 1;
  }

  clearMalformed(): void {
    this.malformed.length = 0;
    this.incarnation += 1;
  }

  /** The event has begun: Started, NotBefore emptied. */
  startEvent(eventId: string): boolean {
    const event = this.events.get(eventId);
    if (!event) return false;
    this.events.set(eventId, { ...event, EventStatus: 'Started', NotBefore: '' });
    this.incarnation += 1;
    return true;
  }

  /** The event ended or Azure cancelled it: it leaves the list. */
  withdraw(eventId: string): boolean {
    const had = this.events.delete(eventId);
    if (had) this.incarnation += 1;
    return had;
  }

  state(): unknown {
    return { incarnation: this.incarnation, events: [...this.events.values()], approvals: this.approvals };
  }

  protected addNotice(input: unknown): string {
    const parsed = AzureNoticeInput.safeParse(input);
    if (!parsed.success) throw new ControlInputError(`not an Azure scheduled event: ${parsed.error.message}`);
    return this.schedule(parsed.data);
  }

  protected handle(req: IncomingMessage, res: ServerResponse, url: URL, body: string): void {
    if (header(req, 'x-forwarded-for') !== undefined) {
      return sendJson(res, 400, { error: 'Bad request. Requests with X-Forwarded-For header are not allowed' });
    }
    if (header(req, 'metadata')?.toLowerCase() !== 'true') {
      return sendJson(res, 400, { error: 'Bad request. Required metadata header not specified' });
    }
    if (!url.searchParams.get('api-version')) {
      return sendJson(res, 400, { error: 'Bad request. api-version was not specified in the request' });
    }
    if (url.pathname === '/metadata/instance/compute/name' && req.method === 'GET') {
      return send(res, 200, this.options.vmName);
    }
    if (url.pathname === '/metadata/instance/compute/resourceId' && req.method === 'GET') {
      return send(res, 200, this.mode === 'garbage' ? GARBAGE : this.resourceId);
    }
    if (url.pathname !== '/metadata/scheduledevents') return sendJson(res, 404, { error: 'Not found' });
    if (req.method === 'GET') {
      if (this.mode === 'garbage') return send(res, 200, GARBAGE, { 'Content-Type': 'text/html' });
      return sendJson(res, 200, { DocumentIncarnation: this.incarnation, Events: [...this.events.values(), ...this.malformed] });
    }
    if (req.method === 'POST') return this.approve(res, body);
    return sendJson(res, 405, { error: 'Method not allowed' });
  }

  private approve(res: ServerResponse, body: string): void {
    let parsed;
    try {
      parsed = StartRequests.safeParse(JSON.parse(body));
    } catch {
      return sendJson(res, 400, { error: 'Bad request. The body is not JSON' });
    }
    if (!parsed.success) return sendJson(res, 400, { error: 'Bad request. Expected {"StartRequests": [{"EventId": "..."}]}' });
    const unknown = parsed.data.StartRequests.find((r) => !this.events.has(r.EventId));
    if (unknown) return sendJson(res, 400, { error: `Bad request. No event ${unknown.EventId}` });
    for (const { EventId } of parsed.data.StartRequests) {
      this.approvals.push({ eventId: EventId, at: new Date().toISOString() });
      if (this.options.startOnApproval !== false) this.startEvent(EventId);
    }
    send(res, 200, '');
  }
}

function describeType(type: EventType): string {
  switch (type) {
    case 'Freeze':
      return 'Virtual machine is being paused because of a memory-preserving Live Migration operation.';
    case 'Reboot':
      return 'Host server is undergoing maintenance.';
    case 'Redeploy':
      return 'Host server is undergoing an emergency repair.';
    case 'Preempt':
      return 'Spot virtual machine is being evicted.';
    case 'Terminate':
      return 'Virtual machine is being deleted.';
  }
}
