import { EventEmitter } from 'node:events';
import type { z } from 'zod';
import { setTimeout as sleep } from 'node:timers/promises';
import { endsTheHost, HostNotice, type NoticeCloud, type NoticeKind } from '../../core/host-notice.js';
import type { Logger } from '../../core/log.js';

/**
 * What the three clouds' watchers share (azure-scheduled-events.ts, gcp-metadata-notices.ts,
 * aws-instance-notices.ts): reading loops that never end the agent (an unreachable or garbled metadata
 * service is logged and retried with backoff), and the bookkeeping that turns "what the metadata says now"
 * into 'notice' (new or changed) and 'withdrawn' (gone) events.
 */

export interface NoticeWatcherSettings {
  /** The metadata service (scheme://host[:port]); tests and the local stack point it at a local server. */
  baseUrl: string;
  log: Logger;
  /** Time between the starts of two reads of one source (a long-poll waits inside its read). */
  pollMs?: number;
  /** Wait after a failed read; doubles per failure up to maxBackoffMs. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Limit of one request (a long-poll's own wait is added to it). */
  requestTimeoutMs?: number;
}

export type NoticeWatcherEvents = {
  /** A notice appeared, or one already reported changed (its deadline, its status). */
  notice: [HostNotice];
  /** A reported notice is gone (withdrawnAt set). */
  withdrawn: [HostNotice];
  /** A read failed: the service did not answer as documented. The watcher goes on (after a backoff). */
  'read-failed': [NoticeReadError];
};

/** Why reading the metadata service failed; `source` names the endpoint (never a token). */
export class NoticeReadError extends Error {
  constructor(
    readonly source: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'NoticeReadError';
  }
}

/** No answer, or not one the documentation gives for this request (a refused connection, a timeout, HTTP 500). */
export class MetadataUnreachableError extends NoticeReadError {
  override name = 'MetadataUnreachableError';
}

/** An answer in a format the cloud does not document: `problem` says what was wrong with it. */
export class MetadataAnswerError extends NoticeReadError {
  override name = 'MetadataAnswerError';
  constructor(
    source: string,
    readonly problem: string,
    options?: { cause?: unknown },
  ) {
    super(source, `${source} answered in an undocumented format: ${problem}`, options);
  }
}

/** What a cloud's reader found for one notice; the watcher adds the cloud, evicts, observedAt and the deadline rule. */
export interface FoundNotice {
  noticeId: string;
  kind: NoticeKind;
  /** The cloud's own time for it, when it gives one. */
  deadline?: Date;
  /**
   * Without a deadline of its own: the documented notice period, counted from when the agent first saw it
   * (a deadline once set is kept, e.g. an Azure event whose NotBefore empties when it starts).
   */
  noticePeriodMs?: number;
  summary: string;
}

/** One reading loop: `read` reads its source once (a long-poll may wait inside it) and reports what it found. */
export interface ReadLoop {
  source: string;
  read(signal: AbortSignal): Promise<void>;
}

interface Held {
  notice: HostNotice;
  fingerprint: string;
}

export interface MetadataAnswer {
  status: number;
  headers: Headers;
  body: string;
}

/** Metadata answers are small; anything larger is not one (and must not fill the agent's memory). */
const MAX_ANSWER_BYTES = 256 * 1024;
const SUMMARY_MAX = 500;

export abstract class NoticeWatcher extends EventEmitter<NoticeWatcherEvents> {
  abstract readonly cloud: NoticeCloud;
  protected readonly log: Logger;
  protected readonly baseUrl: string;
  protected readonly pollMs: number;
  protected readonly requestTimeoutMs: number;
  private readonly backoffMs: number;
  private readonly maxBackoffMs: number;
  /** Per source, the notices it reported last, by noticeId. */
  private readonly held = new Map<string, Map<string, Held>>();
  /** Per source, the problems with single items of its last answer that were already logged. */
  private readonly itemProblems = new Map<string, Set<string>>();
  private stopper = new AbortController();
  private running: Array<Promise<void>> = [];

  constructor(settings: NoticeWatcherSettings, defaultPollMs: number) {
    super();
    this.baseUrl = settings.baseUrl.replace(/\/+$/, '');
    this.log = settings.log;
    this.pollMs = settings.pollMs ?? defaultPollMs;
    this.backoffMs = settings.backoffMs ?? 1_000;
    this.maxBackoffMs = settings.maxBackoffMs ?? 30_000;
    this.requestTimeoutMs = settings.requestTimeoutMs ?? 5_000;
  }

  /** The loops this cloud's watcher runs, one per source it reads. */
  protected abstract loops(): ReadLoop[];

  /**
   * The cloud's own id of this VM, as its event services name it (Azure: the resource id; GCP: the numeric instance
   * id; AWS: the instance id): the agent registers it, so that the notices the clouds' event services send to the
   * functions find this agent (functions/cloud-notice-ingress.ts). Read once, at the agent's start.
   */
  abstract readInstanceId(signal: AbortSignal): Promise<string>;

  start(): void {
    if (this.running.length > 0) return;
    this.stopper = new AbortController();
    this.running = this.loops().map((loop) => this.run(loop, this.stopper.signal));
    this.log.info({ cloud: this.cloud, metadata: this.baseUrl }, 'watching the instance metadata for eviction and maintenance notices');
  }

  async stop(): Promise<void> {
    this.stopper.abort();
    await Promise.all(this.running);
    this.running = [];
  }

  /** The notices the metadata holds now, as far as the last reads saw. */
  current(): HostNotice[] {
    return [...this.held.values()].flatMap((bySource) => [...bySource.values()].map((h) => h.notice));
  }

  private async run(loop: ReadLoop, signal: AbortSignal): Promise<void> {
    let failures = 0;
    while (!signal.aborted) {
      const started = Date.now();
      let wait: number;
      try {
        await loop.read(signal);
        if (failures > 0) this.log.info({ source: loop.source, failures }, 'the metadata service answers again');
        failures = 0;
        wait = Math.max(0, this.pollMs - (Date.now() - started));
      } catch (error) {
        if (signal.aborted) break;
        failures += 1;
        wait = Math.min(this.maxBackoffMs, this.backoffMs * 2 ** Math.min(failures - 1, 16));
        const problem = error instanceof NoticeReadError ? error : new NoticeReadError(loop.source, describe(error), { cause: error });
        // The backoff spaces these out: a metadata service down for an hour logs about twice a minute.
        this.log.warn({ source: loop.source, failures, retryInMs: wait, err: problem }, 'could not read the notices; retrying');
        this.emit('read-failed', problem);
      }
      await sleep(wait, undefined, { signal }).catch(() => undefined);
    }
  }

  /**
   * What one source says now: notices new or changed are emitted as 'notice', those it no longer lists as
   * 'withdrawn'. Problems with single items (one malformed event among good ones) are reported once each,
   * not on every read; the good items still count.
   */
  protected report(source: string, found: FoundNotice[], problems: MetadataAnswerError[] = []): void {
    this.reportItemProblems(source, problems);
    const before = this.held.get(source) ?? new Map<string, Held>();
    const now = new Date();
    const after = new Map<string, Held>();
    for (const item of found) {
      const previous = before.get(item.noticeId);
      const observedAt = previous?.notice.observedAt ?? now.toISOString();
      const deadline =
        item.deadline?.toISOString() ??
        previous?.notice.deadline ??
        (item.noticePeriodMs === undefined ? undefined : new Date(Date.parse(observedAt) + item.noticePeriodMs).toISOString());
      const notice = HostNotice.parse({
        cloud: this.cloud,
        noticeId: item.noticeId,
        kind: item.kind,
        evicts: endsTheHost(item.kind),
        ...(deadline === undefined ? {} : { deadline }),
        summary: oneLine(item.summary),
        observedAt,
      });
      const fingerprint = JSON.stringify([notice.kind, notice.deadline ?? null, notice.summary]);
      after.set(item.noticeId, { notice, fingerprint });
      if (previous?.fingerprint === fingerprint) continue;
      // An eviction is for an operator to see; a pause or an advisory is for the record.
      this.log[notice.evicts ? 'warn' : 'info'](
        {
          cloud: this.cloud,
          noticeId: notice.noticeId,
          kind: notice.kind,
          evicts: notice.evicts,
          deadline: notice.deadline,
          summary: notice.summary,
        },
        previous ? 'a notice changed' : 'the cloud announced a notice for this host',
      );
      this.emit('notice', notice);
    }
    this.held.set(source, after);
    for (const [noticeId, gone] of before) {
      if (after.has(noticeId)) continue;
      const withdrawn: HostNotice = { ...gone.notice, withdrawnAt: now.toISOString() };
      this.log.info({ cloud: this.cloud, noticeId, kind: withdrawn.kind }, 'a notice is gone from the metadata');
      this.emit('withdrawn', withdrawn);
    }
  }

  private reportItemProblems(source: string, problems: MetadataAnswerError[]): void {
    const logged = this.itemProblems.get(source) ?? new Set<string>();
    const still = new Set<string>();
    for (const problem of problems) {
      still.add(problem.problem);
      if (logged.has(problem.problem)) continue;
      this.log.warn({ source, err: problem }, 'ignored an item of the metadata answer');
      this.emit('read-failed', problem);
    }
    this.itemProblems.set(source, still);
  }

  /**
   * One request to the metadata service: `redirect: 'error'` because a metadata service never redirects (an
   * answer that does comes from something else), and the body is read up to MAX_ANSWER_BYTES.
   */
  protected async request(
    source: string,
    path: string,
    init: { method?: string; headers?: Record<string, string>; body?: string; signal: AbortSignal; waitMs?: number },
  ): Promise<MetadataAnswer> {
    const timeout = AbortSignal.timeout(this.requestTimeoutMs + (init.waitMs ?? 0));
    let response: Response;
    try {
      response = await fetch(`${this.baseUrl}${path}`, {
        method: init.method ?? 'GET',
        headers: init.headers ?? {},
        ...(init.body === undefined ? {} : { body: init.body }),
        redirect: 'error',
        signal: AbortSignal.any([init.signal, timeout]),
      });
    } catch (error) {
      if (init.signal.aborted) throw error;
      const reason = timeout.aborted ? `no answer within ${this.requestTimeoutMs + (init.waitMs ?? 0)} ms` : networkReason(error);
      throw new MetadataUnreachableError(source, `cannot reach ${source} at ${this.baseUrl}: ${reason}`, { cause: error });
    }
    const body = await readCapped(response, source, init.signal);
    return { status: response.status, headers: response.headers, body };
  }
}

async function readCapped(response: Response, source: string, signal: AbortSignal): Promise<string> {
  if (!response.body) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
      size += chunk.byteLength;
      if (size > MAX_ANSWER_BYTES) {
        await response.body.cancel().catch(() => undefined);
        throw new MetadataAnswerError(source, `an answer larger than ${MAX_ANSWER_BYTES} bytes`);
      }
      chunks.push(chunk);
    }
  } catch (error) {
    if (error instanceof MetadataAnswerError || signal.aborted) throw error;
    throw new MetadataUnreachableError(source, `the answer of ${source} broke off: ${networkReason(error)}`, { cause: error });
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** fetch's own error is "fetch failed"; what happened (ECONNREFUSED, a reset) is in its cause. */
function networkReason(error: unknown): string {
  const cause = error instanceof Error ? error.cause : undefined;
  if (cause instanceof Error) {
    const code = (cause as NodeJS.ErrnoException).code;
    return code ? `${code} (${cause.message})` : cause.message;
  }
  return describe(error);
}

export function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function oneLine(text: string): string {
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length <= SUMMARY_MAX ? line : `${line.slice(0, SUMMARY_MAX - 1)}…`;
}

export function parseJsonAnswer(source: string, body: string): unknown {
  try {
    return JSON.parse(body) as unknown;
  } catch (error) {
    throw new MetadataAnswerError(source, `not JSON: ${quote(body)}`, { cause: error });
  }
}

export function zodIssues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
}

/** An answer's text quoted for an error message: short, on one line. */
export function quote(text: string, max = 80): string {
  return JSON.stringify(text.length > max ? `${text.slice(0, max)}…` : text);
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const GMT_DATE =
  /^(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?(\d{1,2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/;

/**
 * The HTTP-style dates the metadata services write: Azure's RFC 1123 NotBefore ("Mon, 19 Sep 2016 18:29:47
 * GMT") and AWS's scheduled-event NotBefore ("21 Jan 2019 09:00:43 GMT"). Strict, unlike Date.parse, so
 * that a garbled date is reported rather than read as some other time; the weekday is not checked against the
 * date (a wrong one must not hide an eviction).
 */
export function parseGmtDate(text: string): Date | undefined {
  const match = GMT_DATE.exec(text);
  if (!match) return undefined;
  const month = MONTHS.indexOf(match[2] ?? '');
  const [day, year, hours, minutes, seconds] = [match[1], match[3], match[4], match[5], match[6]].map(Number) as [
    number,
    number,
    number,
    number,
    number,
  ];
  const date = new Date(Date.UTC(year, month, day, hours, minutes, seconds));
  // Date.UTC rolls 31 Feb over into March: a date that does not come back as written was not a date.
  const written =
    date.getUTCFullYear() === year &&
    date.getUTCMonth() === month &&
    date.getUTCDate() === day &&
    date.getUTCHours() === hours &&
    date.getUTCMinutes() === minutes &&
    date.getUTCSeconds() === seconds;
  return written ? date : undefined;
}

export type AcknowledgeOutcome = { acknowledged: true } | { acknowledged: false; reason: string };

/** A watcher whose cloud lets the host say it is ready, so that the platform may act before the deadline (Azure). */
export interface AcknowledgesNotices {
  acknowledge(noticeId: string): Promise<AcknowledgeOutcome>;
}

export function acknowledgesNotices(watcher: NoticeWatcher): watcher is NoticeWatcher & AcknowledgesNotices {
  return typeof (watcher as Partial<AcknowledgesNotices>).acknowledge === 'function';
}
