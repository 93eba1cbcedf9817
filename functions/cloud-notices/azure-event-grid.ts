import { z } from 'zod';
import type { NoticeKind, NoticeReporter } from '../../core/host-notice.js';
import { CloudEventFormatError, notice, noticeIdFrom, zodIssues, type CloudNotice, type Translation } from './cloud-notice.js';

/**
 * Azure's notices as Event Grid delivers them in the CloudEvents 1.0 schema, from the system topic of Azure
 * Resource Notifications' health resources (learn.microsoft.com/azure/event-grid/event-schema-health-resources):
 *
 *   {"specversion": "1.0", "id": "8945cf9b-...", "source": "/subscriptions/{subscription-id}",
 *    "subject": "/subscriptions/.../providers/Microsoft.Compute/virtualMachines/{vm-name}",
 *    "type": "Microsoft.ResourceNotifications.HealthResources.ResourceAnnotated", "time": "2023-07-24T19:20:37.9245071Z",
 *    "data": {"resourceInfo": {"id": ".../providers/Microsoft.ResourceHealth/resourceAnnotations/{event-id}",
 *      "name": "{event-id}", "type": "Microsoft.ResourceHealth/resourceAnnotations",
 *      "properties": {"targetResourceId": ".../virtualMachines/{vm-name}", "targetResourceType": "Microsoft.Compute/virtualMachines",
 *        "occurredTime": "...", "annotationName": "VirtualMachinePreempted", "reason": "...", "summary": "...",
 *        "context": "Platform Initiated", "category": "Unplanned"}},
 *      "operationalInfo": {"resourceEventTime": "..."}, "apiVersion": "2022-08-01"}}
 *
 * ResourceAnnotated says why a VM's availability is affected, by annotation (the list: learn.microsoft.com/azure/
 * service-health/resource-health-vm-annotation); AvailabilityStatusChanged says only that it changed, and is taken
 * but announces nothing. Event Grid carries no Scheduled Events: those annotations arrive when the platform acts,
 * so the deadline is the annotation's occurredTime (now, at the earliest), and a degraded-hardware warning has none.
 *
 * Before delivering, Event Grid checks the endpoint with the CloudEvents webhook handshake
 * (learn.microsoft.com/azure/event-grid/end-point-validation-cloud-events-schema): an OPTIONS request with
 * `WebHook-Request-Origin: eventgrid.azure.net`, answered with `WebHook-Allowed-Origin` naming it.
 */

export const ANNOTATED = 'Microsoft.ResourceNotifications.HealthResources.ResourceAnnotated';
export const AVAILABILITY_CHANGED = 'Microsoft.ResourceNotifications.HealthResources.AvailabilityStatusChanged';
/** Event Grid's origin in the webhook handshake. */
export const EVENT_GRID_ORIGIN = 'eventgrid.azure.net';

const isoTime = z.iso.datetime({ offset: true });

const HealthResourcesEvent = z.object({
  specversion: z.literal('1.0'),
  id: z.string().min(1).max(300),
  source: z.string().min(1).max(500),
  subject: z.string().max(1000).optional(),
  type: z.enum([ANNOTATED, AVAILABILITY_CHANGED]),
  time: isoTime,
  data: z.object({
    resourceInfo: z.object({
      id: z.string().min(1),
      name: z.string().min(1).max(300),
      type: z.string(),
      properties: z.object({
        targetResourceId: z
          .string()
          .regex(/^\/subscriptions\/[^/]+\/resourceGroups\/[^/]+\/providers\/Microsoft\.Compute\//i, 'an Azure compute resource id'),
        targetResourceType: z.string(),
        occurredTime: isoTime,
        annotationName: z.string().max(200).optional(),
        reason: z.string().max(1000).optional(),
        summary: z.string().max(4000).optional(),
        context: z.string().max(200).optional(),
        category: z.string().max(200).optional(),
        availabilityState: z.string().max(200).optional(),
      }),
    }),
    operationalInfo: z.object({ resourceEventTime: isoTime }).optional(),
    apiVersion: z.string().optional(),
  }),
});
type HealthResourcesEvent = z.infer<typeof HealthResourcesEvent>;

/** A planned freeze starts and ends with two annotations: one notice id per VM pairs them. */
const PLANNED_FREEZE = 'planned-freeze';

interface Reading {
  kind: NoticeKind;
  /** The annotation ends a notice an earlier one began (their shared noticeId). */
  withdrawn?: boolean;
  /** One id for the annotations that begin and end one notice; else the annotation's own event id. */
  noticeId?: string;
  /** Azure names a deadline that Event Grid does not carry ("redeploy by the deadline specified"): none is guessed. */
  noDeadline?: boolean;
}

/**
 * The annotations that announce something for the VM's host, in the notice vocabulary. The others (a live
 * migration that already succeeded, a crash of the guest, an allocation, a resize) report the past or the
 * customer's own doing to a running VM: taken, nothing published.
 */
const ANNOTATIONS: Readonly<Record<string, Reading>> = {
  // Spot capacity or price eviction.
  VirtualMachinePreempted: { kind: 'preemption' },
  // The platform restarts the VM where it is, or moves it to another host with a restart (its memory is lost).
  VirtualMachineRebootInitiatedForPlannedMaintenance: { kind: 'reboot' },
  VirtualMachineHostRebootedForRepair: { kind: 'reboot' },
  VirtualMachineHostCrashed: { kind: 'reboot' },
  VirtualMachineRebootInitiatedByControlPlane: { kind: 'reboot' },
  VirtualMachineMigrationInitiatedForPlannedMaintenance: { kind: 'redeploy' },
  VirtualMachineMigrationInitiatedForRepair: { kind: 'redeploy' },
  VirtualMachineRedeployInitiatedByControlPlaneDueToPlannedMaintenance: { kind: 'redeploy' },
  VirtualMachineRedeployInitiatedByControlPlane: { kind: 'redeploy' },
  // Degraded hardware: Azure will try a live migration but "strongly advises" a redeploy before it fails.
  VirtualMachineScheduledForServiceHealing: { kind: 'redeploy', noDeadline: true },
  VirtualMachineMigrationScheduledForDegradedHardware: { kind: 'redeploy', noDeadline: true },
  VirtualMachinePossiblyDegradedDueToHardwareFailure: { kind: 'redeploy', noDeadline: true },
  VirtualMachineStopInitiatedByControlPlane: { kind: 'stop' },
  VirtualMachineDeallocationInitiated: { kind: 'stop' },
  // A memory-preserving pause, and its end.
  VirtualMachinePlannedFreezeStarted: { kind: 'freeze', noticeId: PLANNED_FREEZE },
  VirtualMachinePlannedFreezeSucceeded: { kind: 'freeze', withdrawn: true, noticeId: PLANNED_FREEZE },
  VirtualMachinePlannedFreezeFailed: { kind: 'freeze', withdrawn: true, noticeId: PLANNED_FREEZE },
};

/**
 * The notices of one Event Grid delivery: one CloudEvent, or a batch (application/cloudevents-batch+json). A
 * batch is taken whole or not at all, so that a retry never applies half of one.
 */
export function eventGridNotices(delivery: unknown): Translation {
  const events = Array.isArray(delivery) ? delivery : [delivery];
  if (events.length === 0) throw new CloudEventFormatError('event-grid', 'an empty batch');
  const parsed = events.map((raw, index) => {
    const event = HealthResourcesEvent.safeParse(raw);
    if (!event.success) {
      const where = Array.isArray(delivery) ? `event #${index}: ` : '';
      throw new CloudEventFormatError('event-grid', `${where}${zodIssues(event.error)}`);
    }
    return event.data;
  });
  const translation: Translation = { notices: [], ignored: [] };
  for (const event of parsed) {
    const outcome = translate(event);
    if (typeof outcome === 'string') translation.ignored.push({ eventId: event.id, reason: outcome });
    else translation.notices.push(outcome);
  }
  return translation;
}

function translate(event: HealthResourcesEvent): CloudNotice | string {
  const { properties, name } = event.data.resourceInfo;
  if (event.type === AVAILABILITY_CHANGED) {
    return `an availability change (${properties.availabilityState ?? 'unknown'}) announces nothing; the annotations say why`;
  }
  const annotation = properties.annotationName;
  if (annotation === undefined) throw new CloudEventFormatError('event-grid', 'data.resourceInfo.properties.annotationName: missing');
  const reading = ANNOTATIONS[annotation];
  if (reading === undefined) return `annotation ${annotation} announces nothing for the host`;
  const reportedBy: NoticeReporter = { service: 'event-grid', eventId: event.id, eventSource: event.source };
  return notice({
    instance: properties.targetResourceId,
    cloud: 'azure',
    reportedBy,
    noticeId: noticeIdFrom('event-grid', reading.noticeId ?? name),
    kind: reading.kind,
    withdrawn: reading.withdrawn === true,
    ...(reading.withdrawn === true || reading.noDeadline === true ? {} : { deadline: properties.occurredTime }),
    summary: [
      annotation,
      properties.reason,
      [properties.context, properties.category].filter((part) => part !== undefined).join(', ') || undefined,
      properties.summary,
    ]
      .filter((part) => part !== undefined && part !== '')
      .join('; '),
    at: event.time,
  });
}

/**
 * The CloudEvents webhook handshake (abuse protection): the origin to allow, if this is Event Grid asking. It
 * parses no event and grants nothing but the right to send, each send still authenticated.
 */
export function allowedWebhookOrigin(requestOrigin: string | undefined): string | undefined {
  return requestOrigin?.trim().toLowerCase() === EVENT_GRID_ORIGIN ? EVENT_GRID_ORIGIN : undefined;
}
