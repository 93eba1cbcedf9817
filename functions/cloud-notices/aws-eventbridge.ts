import { z } from 'zod';
import type { NoticeKind, NoticeReporter } from '../../core/host-notice.js';
import { CloudEventFormatError, notice, noticeIdFrom, plusSeconds, zodIssues, type CloudNotice, type Translation } from './cloud-notice.js';

/**
 * EC2's notices as EventBridge sends them to an API destination: EventBridge's own JSON, not a CloudEvent (an API
 * destination POSTs the event as it is, unless an input transformer rewrites it; a transformer that wraps it in a
 * CloudEvent, the event as `data`, is taken too). The documented events:
 *
 *  - "EC2 Spot Instance Interruption Warning" (source aws.ec2; EC2 User Guide, "Spot Instance interruption notices"):
 *      {"version": "0", "id": "12345678-...", "detail-type": "EC2 Spot Instance Interruption Warning", "source": "aws.ec2",
 *       "account": "123456789012", "time": "...", "region": "us-east-2",
 *       "resources": ["arn:aws:ec2:us-east-2a:instance/i-1234567890abcdef0"],
 *       "detail": {"instance-id": "i-1234567890abcdef0", "instance-action": "terminate" | "stop" | "hibernate"}}
 *    sent two minutes before the interruption: the deadline is `time` + 2 min;
 *  - "EC2 Instance Rebalance Recommendation" (aws.ec2; "EC2 instance rebalance recommendations"): detail
 *    {"instance-id": ...}; an advisory, no deadline;
 *  - "AWS Health Event" (aws.health; AWS Health User Guide, "AWS Health events Amazon EventBridge schema"): detail
 *    {"eventArn": ..., "service": "EC2", "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED", "eventTypeCategory":
 *    "scheduledChange", "statusCode": "upcoming" | "open" | "closed", "startTime": "Fri, 27 Jan 2023 06:02:51 GMT",
 *    "eventDescription": [{"language": "en_US", "latestDescription": ...}], "affectedEntities": [{"entityValue": "i-..."}]};
 *    `closed` means it ended or was cancelled: the notice is withdrawn. The deadline is startTime.
 */

export const SPOT_INTERRUPTION = 'EC2 Spot Instance Interruption Warning';
export const REBALANCE_RECOMMENDATION = 'EC2 Instance Rebalance Recommendation';
export const HEALTH_EVENT = 'AWS Health Event';

const isoTime = z.iso.datetime({ offset: true });
const InstanceId = z.string().regex(/^i-[0-9a-f]{8,32}$/, 'an EC2 instance id');
const SPOT_NOTICE_SECONDS = 120;

const EventBridgeEvent = z.object({
  version: z.literal('0'),
  id: z.string().min(1).max(300),
  'detail-type': z.string().min(1).max(200),
  source: z.string().min(1).max(200),
  account: z.string().regex(/^\d{12}$/, 'a 12-digit AWS account id'),
  time: isoTime,
  region: z.string().min(1).max(64),
  resources: z.array(z.string().max(2048)).max(1000),
  detail: z.unknown(),
});
type EventBridgeEvent = z.infer<typeof EventBridgeEvent>;

/** An input transformer's CloudEvent around the EventBridge event. */
const WrappedEvent = z.object({ specversion: z.literal('1.0'), data: z.object({ 'detail-type': z.string() }).loose() });

const SpotDetail = z.object({ 'instance-id': InstanceId, 'instance-action': z.enum(['terminate', 'stop', 'hibernate']) });
const RebalanceDetail = z.object({ 'instance-id': InstanceId });
const HealthDetail = z.object({
  eventArn: z.string().min(1).max(1024),
  service: z.string(),
  eventTypeCode: z.string().min(1).max(200),
  eventTypeCategory: z.string().optional(),
  statusCode: z.enum(['open', 'closed', 'upcoming']),
  startTime: z.string().optional(),
  endTime: z.string().optional(),
  eventDescription: z.array(z.object({ language: z.string().optional(), latestDescription: z.string() })).optional(),
  affectedEntities: z.array(z.object({ entityValue: z.string() })).optional(),
});
type HealthDetail = z.infer<typeof HealthDetail>;

/** The EC2 scheduled changes AWS Health announces for an instance, in the notice vocabulary; the others announce nothing. */
const HEALTH_EVENT_TYPES: Readonly<Record<string, NoticeKind>> = {
  AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED: 'retirement',
  AWS_EC2_INSTANCE_RETIREMENT_EXPEDITED: 'retirement',
  AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_SCHEDULED: 'retirement',
  AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_EXPEDITED: 'retirement',
  AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED: 'reboot',
  AWS_EC2_INSTANCE_REBOOT_FLEXIBLE_MAINTENANCE_SCHEDULED: 'reboot',
  AWS_EC2_SYSTEM_REBOOT_MAINTENANCE_SCHEDULED: 'reboot',
  AWS_EC2_INSTANCE_STOP_SCHEDULED: 'stop',
  AWS_EC2_INSTANCE_TERMINATION_SCHEDULED: 'termination',
  AWS_EC2_INSTANCE_NETWORK_MAINTENANCE_SCHEDULED: 'maintenance',
  AWS_EC2_INSTANCE_POWER_MAINTENANCE_SCHEDULED: 'maintenance',
  AWS_EC2_PERSISTENT_INSTANCE_POWER_MAINTENANCE_SCHEDULED: 'maintenance',
};
/** The AWS Health event types that announce something (what terraform/modules/aws-notice-events' rule lets through). */
export const HEALTH_EVENT_TYPE_CODES: readonly string[] = Object.keys(HEALTH_EVENT_TYPES);

/** The notices of one EventBridge delivery (an API destination's POST body). */
export function eventBridgeNotices(delivery: unknown): Translation {
  const wrapped = WrappedEvent.safeParse(delivery);
  const parsed = EventBridgeEvent.safeParse(wrapped.success ? wrapped.data.data : delivery);
  if (!parsed.success) throw new CloudEventFormatError('eventbridge', zodIssues(parsed.error));
  const event = parsed.data;
  const kindOf = `${event.source} "${event['detail-type']}"`;
  if (event.source === 'aws.ec2' && event['detail-type'] === SPOT_INTERRUPTION) {
    const { 'instance-id': instance, 'instance-action': action } = detail(SpotDetail, event);
    return {
      notices: [ec2Notice(event, instance, 'preemption', `spot interruption: ${action}`, plusSeconds(event.time, SPOT_NOTICE_SECONDS))],
      ignored: [],
    };
  }
  if (event.source === 'aws.ec2' && event['detail-type'] === REBALANCE_RECOMMENDATION) {
    const { 'instance-id': instance } = detail(RebalanceDetail, event);
    return { notices: [ec2Notice(event, instance, 'rebalance-advisory', 'rebalance recommendation', undefined)], ignored: [] };
  }
  if (event.source === 'aws.health' && event['detail-type'] === HEALTH_EVENT) return healthNotices(event, detail(HealthDetail, event));
  throw new CloudEventFormatError('eventbridge', `${kindOf} is not an event the ingress takes`);
}

function detail<T>(schema: z.ZodType<T>, event: EventBridgeEvent): T {
  const parsed = schema.safeParse(event.detail);
  if (!parsed.success) throw new CloudEventFormatError('eventbridge', `detail: ${zodIssues(parsed.error)}`);
  return parsed.data;
}

function reporter(event: EventBridgeEvent): NoticeReporter {
  return { service: 'eventbridge', eventId: event.id, eventSource: `${event.source}/${event.account}/${event.region}` };
}

function ec2Notice(
  event: EventBridgeEvent,
  instance: string,
  kind: NoticeKind,
  summary: string,
  deadline: string | undefined,
): CloudNotice {
  return notice({
    instance,
    cloud: 'aws',
    reportedBy: reporter(event),
    // EC2 sends one such warning per instance; its own id names it.
    noticeId: noticeIdFrom('eventbridge', event.id),
    kind,
    withdrawn: false,
    ...(deadline === undefined ? {} : { deadline }),
    summary: `${summary} (${event['detail-type']}, ${event.region})`,
    at: event.time,
  });
}

function healthNotices(event: EventBridgeEvent, health: HealthDetail): Translation {
  const ignored = (reason: string): Translation => ({ notices: [], ignored: [{ eventId: event.id, reason }] });
  if (health.service !== 'EC2') return ignored(`an AWS Health event of ${health.service} announces nothing for a host`);
  const kind = HEALTH_EVENT_TYPES[health.eventTypeCode];
  if (kind === undefined) return ignored(`${health.eventTypeCode} announces nothing for an instance's host`);
  const startTime = health.startTime === undefined ? undefined : awsHealthTime(health.startTime);
  if (health.startTime !== undefined && startTime === undefined) {
    throw new CloudEventFormatError('eventbridge', `detail.startTime: ${JSON.stringify(health.startTime)} is not a time`);
  }
  // The affected instances: the entities, and the resources (instance ids or ARNs) where the entities are left out.
  const instances = new Set<string>();
  for (const value of [...(health.affectedEntities ?? []).map((e) => e.entityValue), ...event.resources]) {
    const id = /(?:^|:instance\/)(i-[0-9a-f]{8,32})$/.exec(value)?.[1];
    if (id !== undefined) instances.add(id);
  }
  if (instances.size === 0) return ignored(`${health.eventTypeCode} names no EC2 instance`);
  const withdrawn = health.statusCode === 'closed';
  const description = health.eventDescription?.find((d) => d.language?.startsWith('en') !== false)?.latestDescription;
  return {
    notices: [...instances].map((instance) =>
      notice({
        instance,
        cloud: 'aws',
        reportedBy: reporter(event),
        // The event ARN stays the same while AWS Health updates the event (upcoming, open, closed).
        noticeId: noticeIdFrom('eventbridge', health.eventArn),
        kind,
        withdrawn,
        ...(withdrawn || startTime === undefined ? {} : { deadline: startTime }),
        summary: [`${health.eventTypeCode} ${health.statusCode}`, health.startTime ? `starts ${health.startTime}` : undefined, description]
          .filter((part) => part !== undefined)
          .join('; '),
        at: event.time,
      }),
    ),
    ignored: [],
  };
}

const GMT_DATE =
  /^(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$/;

/** AWS Health writes its times as RFC 1123 ("Fri, 27 Jan 2023 06:02:51 GMT") in its samples, ISO 8601 elsewhere: both are read. */
function awsHealthTime(text: string): string | undefined {
  if (!isoTime.safeParse(text).success && !GMT_DATE.test(text)) return undefined;
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? undefined : new Date(ms).toISOString();
}
