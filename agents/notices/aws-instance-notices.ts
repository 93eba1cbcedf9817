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
  type FoundNotice,
  type MetadataAnswer,
  type NoticeWatcherSettings,
  type ReadLoop,
} from './notice-watcher.js';

/**
 * EC2's notices, read from the instance metadata service with IMDSv2 as AWS documents it (EC2 User Guide:
 * "Use IMDSv2", "Spot Instance interruption notices", "Scheduled events for your instances", "EC2 instance
 * rebalance recommendations"):
 *
 *   PUT /latest/api/token  (X-aws-ec2-metadata-token-ttl-seconds: 1..21600)  -> a session token; every GET
 *       carries it as X-aws-ec2-metadata-token, and one expired or unknown is answered 401;
 *   GET /latest/meta-data/spot/instance-action  -> {"action": "terminate"|"stop"|"hibernate", "time": "2017-09-18T08:22:00Z"},
 *       404 when no interruption is coming (two minutes' notice; none before a hibernation);
 *   GET /latest/meta-data/events/maintenance/scheduled  -> [{"NotBefore": "21 Jan 2019 09:00:43 GMT", "Code":
 *       "system-reboot", "Description": "...", "EventId": "instance-event-...", "NotAfter": "...", "State": "active"}];
 *   GET /latest/meta-data/events/recommendations/rebalance  -> {"noticeTime": "2020-10-27T08:22:00Z"}, else 404:
 *       an advisory (elevated risk of interruption), not an eviction.
 *
 * There is no long-poll: AWS recommends checking every 5 seconds. The token is renewed before it expires, and
 * once more on a 401 (the service may have forgotten it, e.g. after the instance was stopped and started).
 */

export const AWS_METADATA_URL = 'http://169.254.169.254';
const TOKEN_PATH = '/latest/api/token';
const TTL_HEADER = 'X-aws-ec2-metadata-token-ttl-seconds';
const TOKEN_HEADER = 'X-aws-ec2-metadata-token';

const InstanceAction = z.object({
  action: z.enum(['terminate', 'stop', 'hibernate']),
  time: z.iso.datetime({ offset: true }),
});

const EVENT_KIND: Readonly<Record<string, NoticeKind>> = {
  'instance-reboot': 'reboot',
  'system-reboot': 'reboot',
  'instance-stop': 'stop',
  'instance-retirement': 'retirement',
  'system-maintenance': 'maintenance',
};

const ScheduledEvent = z.object({
  Code: z.string().refine((code) => code in EVENT_KIND, `one of ${Object.keys(EVENT_KIND).join(', ')}`),
  EventId: NoticeId,
  NotBefore: z.string().refine((t) => parseGmtDate(t) !== undefined, 'a date like "21 Jan 2019 09:00:43 GMT"'),
  NotAfter: z.string().optional(),
  Description: z.string().optional(),
  /** "active" while scheduled; the history lists "completed" and "canceled" ones. */
  State: z.string(),
});

const Rebalance = z.object({ noticeTime: z.iso.datetime({ offset: true }) });

export interface AwsInstanceNoticesSettings extends NoticeWatcherSettings {
  /** The session token's lifetime asked for (AWS allows 1 to 21600 seconds). */
  tokenTtlSeconds?: number;
}

export class AwsInstanceNotices extends NoticeWatcher {
  readonly cloud = 'aws';
  private readonly tokenTtlSeconds: number;
  private token: { value: string; renewAt: number } | undefined;
  /** One token request at a time for the three reading loops. */
  private pendingToken: Promise<string> | undefined;

  constructor(settings: AwsInstanceNoticesSettings) {
    super(settings, 5_000);
    this.tokenTtlSeconds = settings.tokenTtlSeconds ?? 21_600;
    if (!Number.isInteger(this.tokenTtlSeconds) || this.tokenTtlSeconds < 1 || this.tokenTtlSeconds > 21_600) {
      throw new RangeError(`tokenTtlSeconds is a whole number from 1 to 21600, not ${this.tokenTtlSeconds}`);
    }
  }

  protected loops(): ReadLoop[] {
    return [
      { source: 'aws spot/instance-action', read: (signal) => this.readSpotAction(signal) },
      { source: 'aws events/maintenance/scheduled', read: (signal) => this.readScheduled(signal) },
      { source: 'aws events/recommendations/rebalance', read: (signal) => this.readRebalance(signal) },
    ];
  }

  async readInstanceId(signal: AbortSignal): Promise<string> {
    const source = 'aws meta-data/instance-id';
    const answer = await this.get(source, '/latest/meta-data/instance-id', signal);
    const id = answer?.body.trim() ?? '';
    if (!/^i-[0-9a-f]{8,32}$/.test(id)) throw new MetadataAnswerError(source, `${quote(id)} is not an instance id`);
    return id;
  }

  private async readSpotAction(signal: AbortSignal): Promise<void> {
    const source = 'aws spot/instance-action';
    const answer = await this.get(source, '/latest/meta-data/spot/instance-action', signal);
    if (answer === undefined) return this.report(source, []);
    const parsed = InstanceAction.safeParse(parseJsonAnswer(source, answer.body));
    if (!parsed.success) throw new MetadataAnswerError(source, zodIssues(parsed.error));
    const { action, time } = parsed.data;
    this.report(source, [
      {
        noticeId: 'spot-instance-action',
        kind: 'preemption',
        deadline: new Date(time),
        summary: `spot interruption: ${action} at ${time}`,
      },
    ]);
  }

  private async readScheduled(signal: AbortSignal): Promise<void> {
    const source = 'aws events/maintenance/scheduled';
    const answer = await this.get(source, '/latest/meta-data/events/maintenance/scheduled', signal);
    const list = answer === undefined ? [] : parseJsonAnswer(source, answer.body);
    if (!Array.isArray(list)) throw new MetadataAnswerError(source, `a JSON list was expected, not ${quote(answer?.body ?? '')}`);
    const found: FoundNotice[] = [];
    const problems: MetadataAnswerError[] = [];
    list.forEach((raw: unknown, index) => {
      const parsed = ScheduledEvent.safeParse(raw);
      if (!parsed.success) {
        const id = typeof (raw as { EventId?: unknown } | null)?.EventId === 'string' ? (raw as { EventId: string }).EventId : `#${index}`;
        problems.push(new MetadataAnswerError(source, `event ${id}: ${zodIssues(parsed.error)}`));
        return;
      }
      const event = parsed.data;
      if (event.State !== 'active') return;
      found.push({
        noticeId: event.EventId,
        kind: EVENT_KIND[event.Code] ?? 'maintenance',
        deadline: parseGmtDate(event.NotBefore) ?? new Date(),
        summary: [
          `${event.Code} ${event.State}`,
          `not before ${event.NotBefore}`,
          event.NotAfter ? `not after ${event.NotAfter}` : undefined,
          event.Description || undefined,
        ]
          .filter((part) => part !== undefined)
          .join('; '),
      });
    });
    this.report(source, found, problems);
  }

  private async readRebalance(signal: AbortSignal): Promise<void> {
    const source = 'aws events/recommendations/rebalance';
    const answer = await this.get(source, '/latest/meta-data/events/recommendations/rebalance', signal);
    if (answer === undefined) return this.report(source, []);
    const parsed = Rebalance.safeParse(parseJsonAnswer(source, answer.body));
    if (!parsed.success) throw new MetadataAnswerError(source, zodIssues(parsed.error));
    this.report(source, [
      {
        noticeId: 'rebalance-recommendation',
        kind: 'rebalance-advisory',
        summary: `rebalance recommendation at ${parsed.data.noticeTime}`,
      },
    ]);
  }

  /** A GET with the session token: the answer, or undefined for 404 (the item is not present: no notice). */
  private async get(source: string, path: string, signal: AbortSignal): Promise<MetadataAnswer | undefined> {
    let answer = await this.request(source, path, { headers: { [TOKEN_HEADER]: await this.sessionToken(signal) }, signal });
    if (answer.status === 401) {
      // The token expired early or was forgotten: one fresh one, once.
      this.log.info({ source }, 'the metadata service refused the session token; asking for a new one');
      this.token = undefined;
      answer = await this.request(source, path, { headers: { [TOKEN_HEADER]: await this.sessionToken(signal) }, signal });
    }
    if (answer.status === 404) return undefined;
    if (answer.status !== 200)
      throw new MetadataUnreachableError(source, `${source} answered HTTP ${answer.status}: ${quote(answer.body)}`);
    return answer;
  }

  private async sessionToken(signal: AbortSignal): Promise<string> {
    if (this.token && Date.now() < this.token.renewAt) return this.token.value;
    this.pendingToken ??= this.newToken(signal).finally(() => (this.pendingToken = undefined));
    return this.pendingToken;
  }

  private async newToken(signal: AbortSignal): Promise<string> {
    const source = 'aws api/token';
    // Counted from before the request, and renewed a quarter of its life (at most a minute) early: the
    // service's clock started no later than this one's.
    const askedAt = Date.now();
    const answer = await this.request(source, TOKEN_PATH, {
      method: 'PUT',
      headers: { [TTL_HEADER]: String(this.tokenTtlSeconds) },
      signal,
    });
    if (answer.status !== 200)
      throw new MetadataUnreachableError(source, `${source} answered HTTP ${answer.status}: ${quote(answer.body)}`);
    const value = answer.body.trim();
    if (!/^[A-Za-z0-9+/=_-]{1,1024}$/.test(value)) throw new MetadataAnswerError(source, 'the session token is empty or not printable');
    const lifeMs = this.tokenTtlSeconds * 1000;
    this.token = { value, renewAt: askedAt + lifeMs - Math.min(60_000, lifeMs / 4) };
    return value;
  }
}
