import { z } from 'zod';
import type { NoticeKind, NoticeReporter } from '../../core/host-notice.js';
import { CloudEventFormatError, notice, noticeIdFrom, plusSeconds, zodIssues, type Translation } from './cloud-notice.js';

/**
 * Compute Engine's notices as Eventarc delivers them (CloudEvents 1.0, binary or structured mode): Compute Engine
 * writes a system-event audit log entry when it preempts a VM, stops one for host maintenance, restarts one after a
 * host error or live-migrates one (cloud.google.com/compute/docs/troubleshooting/troubleshooting-reboots; the
 * methods `compute.instances.preempted`, `.terminateOnHostMaintenance`, `.hostError`, `.migrateOnHostMaintenance`).
 * The entry arrives in either of two documented envelopes:
 *
 *  - `google.cloud.audit.log.v1.written` (an Eventarc Cloud Audit Logs trigger): data is the LogEntry
 *    (github.com/googleapis/google-cloudevents, google/events/cloud/audit/v1/data.proto);
 *  - `google.cloud.pubsub.topic.v1.messagePublished` (an Eventarc Pub/Sub trigger on the topic a Logging sink writes
 *    the entries to; terraform/modules/gcp-functions uses this route, since a sink's filter takes the system-event log
 *    whole): data is {"message": {"data": "<base64 of the LogEntry JSON>", "messageId": ..., "publishTime": ...},
 *    "subscription": ...}.
 *
 * The LogEntry, e.g. of a preemption:
 *   {"protoPayload": {"@type": "type.googleapis.com/google.cloud.audit.AuditLog", "serviceName": "compute.googleapis.com",
 *     "methodName": "compute.instances.preempted", "resourceName": "projects/p/zones/europe-west1-c/instances/vm-1",
 *     "status": {"message": "Instance was preempted."}},
 *    "insertId": "...", "resource": {"type": "gce_instance", "labels": {"instance_id": "1844488190...", "project_id": "p",
 *    "zone": "europe-west1-c"}}, "timestamp": "2023-09-16T10:42:31.325309Z",
 *    "logName": "projects/p/logs/cloudaudit.googleapis.com%2Fsystem_event",
 *    "operation": {"id": "systemevent-1694860946116-...", "producer": "compute.instances.preempted", "first": true, "last": true}}
 *
 * A long-running operation writes two entries with one operation id, `first` when it starts and `last` when it
 * ends (cloud.google.com/logging/docs/audit/understanding-audit-logs): the end of a live migration withdraws its
 * notice. Deadlines: Compute Engine gives a preempted VM 30 s to shut down (cloud.google.com/compute/docs/
 * instances/spot#preemption-process); the other entries are written as the platform acts.
 */

export const AUDIT_LOG_WRITTEN = 'google.cloud.audit.log.v1.written';
export const PUBSUB_PUBLISHED = 'google.cloud.pubsub.topic.v1.messagePublished';

const isoTime = z.iso.datetime({ offset: true });
const PREEMPTION_NOTICE_SECONDS = 30;

const EventarcEvent = z.object({
  specversion: z.literal('1.0'),
  id: z.string().min(1).max(300),
  source: z.string().min(1).max(500),
  type: z.enum([AUDIT_LOG_WRITTEN, PUBSUB_PUBLISHED]),
  data: z.unknown(),
});

const PubsubData = z.object({
  message: z.object({ data: z.base64(), messageId: z.string().optional(), publishTime: z.string().optional() }),
  subscription: z.string().optional(),
});

const LogEntry = z.object({
  protoPayload: z.object({
    serviceName: z.string(),
    methodName: z.string(),
    resourceName: z.string(),
    status: z.object({ message: z.string().max(2000).optional() }).optional(),
  }),
  insertId: z.string().min(1).max(300),
  resource: z.object({
    type: z.string(),
    labels: z.record(z.string(), z.string()),
  }),
  timestamp: isoTime,
  logName: z.string(),
  operation: z
    .object({
      id: z.string().min(1).max(300),
      producer: z.string().optional(),
      first: z.boolean().optional(),
      last: z.boolean().optional(),
    })
    .optional(),
});
type LogEntry = z.infer<typeof LogEntry>;

const METHODS: Readonly<Record<string, NoticeKind>> = {
  'compute.instances.preempted': 'preemption',
  'compute.instances.terminateOnHostMaintenance': 'maintenance-terminate',
  'compute.instances.hostError': 'reboot',
  'compute.instances.migrateOnHostMaintenance': 'maintenance-live-migrate',
};
/** The methods whose entries announce something (what terraform/modules/gcp-functions' Logging sink lets through). */
export const NOTICE_METHODS: readonly string[] = Object.keys(METHODS);

/** The notices of one Eventarc delivery (the CloudEvent, its data parsed from the body). */
export function eventarcNotices(delivery: unknown): Translation {
  const event = EventarcEvent.safeParse(delivery);
  if (!event.success) throw new CloudEventFormatError('eventarc', zodIssues(event.error));
  const { id, source, type, data } = event.data;
  const entry = LogEntry.safeParse(type === PUBSUB_PUBLISHED ? logEntryOfMessage(data) : data);
  if (!entry.success) throw new CloudEventFormatError('eventarc', `the log entry: ${zodIssues(entry.error)}`);
  const reportedBy: NoticeReporter = { service: 'eventarc', eventId: id, eventSource: source };
  const ignored = (reason: string): Translation => ({ notices: [], ignored: [{ eventId: id, reason }] });
  const log = entry.data;
  const { serviceName, methodName } = log.protoPayload;
  if (serviceName !== 'compute.googleapis.com' || log.resource.type !== 'gce_instance') {
    return ignored(`a ${serviceName} entry about a ${log.resource.type} announces nothing for a host`);
  }
  const kind = METHODS[methodName];
  if (kind === undefined) return ignored(`${methodName} announces nothing for the host`);
  const instance = log.resource.labels.instance_id;
  if (instance === undefined || !/^\d{1,20}$/.test(instance)) {
    throw new CloudEventFormatError('eventarc', 'the log entry: resource.labels.instance_id: not a GCE instance id');
  }
  const withdrawn = log.operation?.last === true && log.operation.first !== true;
  return {
    notices: [
      notice({
        instance,
        cloud: 'gcp',
        reportedBy,
        // The operation's id pairs its first and last entries (a live migration's start and end).
        noticeId: noticeIdFrom('eventarc', log.operation?.id ?? log.insertId),
        kind,
        withdrawn,
        ...(withdrawn ? {} : { deadline: kind === 'preemption' ? plusSeconds(log.timestamp, PREEMPTION_NOTICE_SECONDS) : log.timestamp }),
        summary: summaryOf(log, withdrawn),
        at: log.timestamp,
      }),
    ],
    ignored: [],
  };
}

/** A Logging sink's entry in a Pub/Sub message: base64 of the LogEntry's JSON. */
function logEntryOfMessage(data: unknown): unknown {
  const message = PubsubData.safeParse(data);
  if (!message.success) throw new CloudEventFormatError('eventarc', `the Pub/Sub message: ${zodIssues(message.error)}`);
  const text = Buffer.from(message.data.message.data, 'base64').toString('utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new CloudEventFormatError('eventarc', 'the Pub/Sub message: its data is not a JSON log entry', { cause: error });
  }
}

function summaryOf(log: LogEntry, withdrawn: boolean): string {
  const { methodName, resourceName, status } = log.protoPayload;
  return [
    `${methodName}${withdrawn ? ' completed' : ''}`,
    status?.message,
    resourceName,
    log.logName.endsWith('system_event') ? 'system event' : undefined,
  ]
    .filter((part) => part !== undefined && part !== '')
    .join('; ');
}
