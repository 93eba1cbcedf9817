import { createHash } from 'node:crypto';
import type { z } from 'zod';
import { endsTheHost, NoticeId, type NoticeCloud, type NoticeKind, type NoticeReporter } from '../../core/host-notice.js';

/**
 * What the clouds' event services say about a VM, in the notice model of core/host-notice.ts: the translations
 * (azure-event-grid.ts, gcp-eventarc.ts, aws-eventbridge.ts) are pure functions from each service's documented
 * event format to these, and functions/cloud-notice-ingress.ts finds the VM's agent and states the facts.
 */

/** One notice about one VM, from one event of an event service. */
export interface CloudNotice {
  /** The VM as the event names it (Azure resource id, GCE instance id, EC2 instance id): an agent's registered instanceId. */
  instance: string;
  cloud: NoticeCloud;
  reportedBy: NoticeReporter;
  noticeId: string;
  kind: NoticeKind;
  /** endsTheHost(kind), set here so that no translation can get the rule wrong. */
  evicts: boolean;
  /** The event service says the notice is over: cancelled, or it ran its course (host.notice-withdrawn). */
  withdrawn: boolean;
  /** When the cloud acts, at the earliest; absent when the event gives no time and none is documented. */
  deadline?: string;
  summary: string;
  /** When the event service emitted the event: the same on every redelivery, so the fact is too. */
  at: string;
}

/** What one delivery said: notices, and the events understood but announcing nothing for a host, with why. */
export interface Translation {
  notices: CloudNotice[];
  ignored: Array<{ eventId: string; reason: string }>;
}

/**
 * A delivery not in the format its service documents (garbled, forged, or of a type the ingress does not take):
 * answered 400 and kept as a dead letter, never retried. `problem` says what was wrong, for the answer and the log.
 */
export class CloudEventFormatError extends Error {
  constructor(
    readonly service: NoticeReporter['service'],
    readonly problem: string,
    options?: { cause?: unknown },
  ) {
    super(`the ${service} delivery was refused: ${problem}`, options);
    this.name = 'CloudEventFormatError';
  }
}

export function notice(fields: Omit<CloudNotice, 'evicts' | 'summary'> & { summary: string }): CloudNotice {
  return { ...fields, evicts: endsTheHost(fields.kind), summary: oneLine(fields.summary) };
}

/**
 * A notice id from the service's own identifier of the notice (an operation id, an event ARN), prefixed with the
 * service so that it never collides with the agent's own ids for its metadata's notices. Characters a NoticeId
 * does not allow become "_"; one too long keeps its start and a digest of the whole, so it stays unique.
 */
export function noticeIdFrom(service: NoticeReporter['service'], raw: string): string {
  const id = `${service}:${raw.replace(/[^A-Za-z0-9_.:-]/g, '_')}`;
  const fitting = id.length <= 200 ? id : `${id.slice(0, 175)}.${createHash('sha256').update(raw).digest('hex').slice(0, 24)}`;
  return NoticeId.parse(fitting);
}

const SUMMARY_MAX = 500;

function oneLine(text: string): string {
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length <= SUMMARY_MAX ? line : `${line.slice(0, SUMMARY_MAX - 1)}…`;
}

export function zodIssues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
}

export const plusSeconds = (iso: string, seconds: number): string => new Date(Date.parse(iso) + seconds * 1000).toISOString();
