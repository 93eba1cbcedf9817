import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { z } from 'zod';
import { ControlInputError, GARBAGE, header, MetadataServer, send } from './metadata-server.js';

/**
 * A stand-in for the EC2 instance metadata service, which answers only inside an EC2 instance and cannot run
 * here. It requires IMDSv2 as an instance configured with HttpTokens=required does (EC2 User Guide, "Use
 * IMDSv2"): PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds (1 to 21600; 400 otherwise, 403
 * with X-Forwarded-For) returns a token, and every GET needs a token that exists and has not expired (401
 * otherwise). It serves the notice items in their documented formats, as text/plain like the real service:
 *   /latest/meta-data/spot/instance-action              {"action": "terminate", "time": "2017-09-18T08:22:00Z"}, else 404
 *   /latest/meta-data/events/maintenance/scheduled      [{"NotBefore": "21 Jan 2019 09:00:43 GMT", "Code": ..., "State": "active"}]
 *   /latest/meta-data/events/recommendations/rebalance  {"noticeTime": "2020-10-27T08:22:00Z"}, else 404
 *   /latest/meta-data/instance-id                       the instance's id (what EventBridge's EC2 events name it by)
 * Not modelled: IMDSv1, the PUT response hop limit, throttling, and tokens outliving a stop/start.
 */

const TTL_HEADER = 'x-aws-ec2-metadata-token-ttl-seconds';
const TOKEN_HEADER = 'x-aws-ec2-metadata-token';
const NOT_FOUND = `<?xml version="1.0" encoding="iso-8859-1"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en"><head><title>404 - Not Found</title></head><body><h1>404 - Not Found</h1></body></html>
`;
const UNAUTHORIZED = NOT_FOUND.replaceAll('404 - Not Found', '401 - Unauthorized');

export interface AwsScheduledEvent {
  NotBefore: string;
  Code: string;
  Description: string;
  EventId: string;
  NotAfter: string;
  State: string;
}

/** A notice to post, in EC2's terms: a spot interruption, a scheduled event, or a rebalance recommendation. */
export const AwsNoticeInput = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('spot'), action: z.enum(['terminate', 'stop', 'hibernate']), time: z.iso.datetime().optional() }),
  z.object({
    kind: z.literal('scheduled'),
    Code: z.enum(['instance-reboot', 'system-reboot', 'system-maintenance', 'instance-retirement', 'instance-stop']),
    EventId: z.string().min(1).optional(),
    NotBefore: z.string().optional(),
    NotAfter: z.string().optional(),
    Description: z.string().optional(),
    State: z.string().optional(),
  }),
  z.object({ kind: z.literal('rebalance'), noticeTime: z.iso.datetime().optional() }),
]);
export type AwsNoticeInput = z.infer<typeof AwsNoticeInput>;

export class AwsMetadataServer extends MetadataServer {
  /** Tokens issued, and GETs refused for a missing, unknown or expired token. */
  readonly tokens = { issued: 0, refused: 0 };
  private readonly valid = new Map<string, number>();
  private spotAction: { action: string; time: string } | undefined;
  private rebalance: { noticeTime: string } | undefined;
  private readonly scheduled = new Map<string, AwsScheduledEvent>();

  readonly instanceId: string;

  constructor(options: { instanceId?: string; host?: string } = {}) {
    super(options.host);
    this.instanceId = options.instanceId ?? 'i-0123456789abcdef0';
  }

  /** A spot interruption: `action` at `time` (default: in two minutes, the documented notice). */
  interrupt(action: 'terminate' | 'stop' | 'hibernate' = 'terminate', time = new Date(Date.now() + 120_000)): void {
    this.spotAction = { action, time: time.toISOString().replace(/\.\d{3}Z$/, 'Z') };
  }

  recommendRebalance(noticeTime = new Date()): void {
    this.rebalance = { noticeTime: noticeTime.toISOString().replace(/\.\d{3}Z$/, 'Z') };
  }

  /** A scheduled event (State "active" unless given); returns its EventId. */
  scheduleEvent(input: Omit<Extract<AwsNoticeInput, { kind: 'scheduled' }>, 'kind'>): string {
    const eventId = input.EventId ?? `instance-event-${randomBytes(9).toString('hex').slice(0, 17)}`;
    const notBefore = input.NotBefore ?? awsDate(new Date(Date.now() + 14 * 24 * 3_600_000));
    this.scheduled.set(eventId, {
      NotBefore: notBefore,
      Code: input.Code,
      Description: input.Description ?? 'scheduled maintenance',
      EventId: eventId,
      NotAfter: input.NotAfter ?? notBefore,
      State: input.State ?? 'active',
    });
    return eventId;
  }

  /** Every token issued so far is forgotten, as if it had expired. */
  expireTokens(): void {
    this.valid.clear();
  }

  withdraw(noticeId: string): boolean {
    if (noticeId === 'spot-instance-action') {
      const had = this.spotAction !== undefined;
      this.spotAction = undefined;
      return had;
    }
    if (noticeId === 'rebalance-recommendation') {
      const had = this.rebalance !== undefined;
      this.rebalance = undefined;
      return had;
    }
    return this.scheduled.delete(noticeId);
  }

  state(): unknown {
    return { tokens: this.tokens, spotAction: this.spotAction, rebalance: this.rebalance, scheduled: [...this.scheduled.values()] };
  }

  protected addNotice(input: unknown): string {
    const parsed = AwsNoticeInput.safeParse(input);
    if (!parsed.success) throw new ControlInputError(`not an EC2 notice: ${parsed.error.message}`);
    const notice = parsed.data;
    switch (notice.kind) {
      case 'spot':
        this.interrupt(notice.action, notice.time === undefined ? undefined : new Date(notice.time));
        return 'spot-instance-action';
      case 'rebalance':
        this.recommendRebalance(notice.noticeTime === undefined ? undefined : new Date(notice.noticeTime));
        return 'rebalance-recommendation';
      case 'scheduled': {
        const { kind: _kind, ...event } = notice;
        return this.scheduleEvent(event);
      }
    }
  }

  protected handle(req: IncomingMessage, res: ServerResponse, url: URL): void {
    if (url.pathname === '/latest/api/token') return this.issueToken(req, res);
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, '');
    const token = header(req, TOKEN_HEADER);
    const expiresAt = token === undefined ? undefined : this.valid.get(token);
    if (expiresAt === undefined || Date.now() >= expiresAt) {
      this.tokens.refused += 1;
      return send(res, 401, UNAUTHORIZED, { 'Content-Type': 'text/html' });
    }
    const item = this.item(url.pathname);
    if (item === undefined) return send(res, 404, NOT_FOUND, { 'Content-Type': 'text/html' });
    send(res, 200, this.mode === 'garbage' ? GARBAGE : item);
  }

  private item(path: string): string | undefined {
    switch (path) {
      case '/latest/meta-data/spot/instance-action':
        return this.spotAction && JSON.stringify(this.spotAction);
      case '/latest/meta-data/events/maintenance/scheduled':
        return JSON.stringify([...this.scheduled.values()], null, 2);
      case '/latest/meta-data/events/recommendations/rebalance':
        return this.rebalance && JSON.stringify(this.rebalance);
      case '/latest/meta-data/instance-id':
        return this.instanceId;
      default:
        return undefined;
    }
  }

  private issueToken(req: IncomingMessage, res: ServerResponse): void {
    if (req.method !== 'PUT') return send(res, 405, '');
    if (header(req, 'x-forwarded-for') !== undefined) return send(res, 403, 'Forbidden');
    const ttl = Number(header(req, TTL_HEADER));
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > 21_600) return send(res, 400, 'Bad Request: the TTL header is missing or out of range');
    const token = randomBytes(42).toString('base64');
    this.valid.set(token, Date.now() + ttl * 1000);
    this.tokens.issued += 1;
    send(res, 200, token, { 'X-Aws-Ec2-Metadata-Token-Ttl-Seconds': String(ttl) });
  }
}

/** The date format of EC2's scheduled-event items: "21 Jan 2019 09:00:43 GMT". */
export function awsDate(date: Date): string {
  return date.toUTCString().replace(/^\w{3}, 0?/, '');
}
