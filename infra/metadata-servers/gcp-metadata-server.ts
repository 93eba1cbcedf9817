import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { z } from 'zod';
import { ControlInputError, GARBAGE, header, MetadataServer, send } from './metadata-server.js';

/**
 * A stand-in for Compute Engine's metadata server, which answers only inside a GCE VM
 * (metadata.google.internal) and cannot run here. It serves the keys Google documents for notices:
 *   /computeMetadata/v1/instance/preempted                     TRUE or FALSE
 *   /computeMetadata/v1/instance/maintenance-event             NONE, MIGRATE_ON_HOST_MAINTENANCE, TERMINATE_ON_HOST_MAINTENANCE
 *   /computeMetadata/v1/instance/scheduling/on-host-maintenance MIGRATE or TERMINATE
 *   /computeMetadata/v1/instance/scheduling/preemptible        TRUE or FALSE
 *   /computeMetadata/v1/instance/id                            the VM's numeric id (what Compute Engine's audit logs name it by)
 * with the documented request rules (cloud.google.com/compute/docs/metadata/querying-metadata): the header
 * "Metadata-Flavor: Google" is required (403 without it), X-Forwarded-For is refused (403), every answer
 * carries "Metadata-Flavor: Google" and an ETag, and `?wait_for_change=true` holds the request until the value
 * changes: at once if `last_etag` is given and differs from the current ETag, else at the change or after
 * `timeout_sec`, with the value as it is then. Not modelled: recursive directory listings, `alt=json`, and
 * the rule that a VM gets the 60 s maintenance warning only if it asked since the last maintenance.
 */

const KEYS = {
  'instance/preempted': ['FALSE', 'TRUE'],
  'instance/maintenance-event': ['NONE', 'MIGRATE_ON_HOST_MAINTENANCE', 'TERMINATE_ON_HOST_MAINTENANCE'],
  'instance/scheduling/on-host-maintenance': ['MIGRATE', 'TERMINATE'],
  'instance/scheduling/preemptible': ['FALSE', 'TRUE'],
} as const;
type Key = keyof typeof KEYS;

/** A notice to post: preempted TRUE, or a maintenance event; withdrawing it sets FALSE or NONE again. */
export const GcpNoticeInput = z.union([
  z.object({ key: z.literal('preempted'), value: z.literal('TRUE') }),
  z.object({ key: z.literal('maintenance-event'), value: z.enum(['MIGRATE_ON_HOST_MAINTENANCE', 'TERMINATE_ON_HOST_MAINTENANCE']) }),
]);
export type GcpNoticeInput = z.infer<typeof GcpNoticeInput>;

interface Waiter {
  key: Key;
  res: ServerResponse;
  timer: NodeJS.Timeout;
}

/** Google gives no maximum for timeout_sec; an hour is plenty for a stand-in. */
const MAX_WAIT_SECONDS = 3_600;

export class GcpMetadataServer extends MetadataServer {
  /** How many requests waited (wait_for_change) and how many of those the server answered at once. */
  readonly longPolls = { waited: 0, answeredAtOnce: 0 };
  private readonly values = new Map<Key, { value: string; version: number }>();
  private readonly waiters = new Set<Waiter>();

  /** The VM's numeric id. */
  readonly instanceId: string;

  constructor(options: { onHostMaintenance?: 'MIGRATE' | 'TERMINATE'; preemptible?: boolean; instanceId?: string; host?: string } = {}) {
    super(options.host);
    this.instanceId = options.instanceId ?? '4633012345678901234';
    this.values.set('instance/preempted', { value: 'FALSE', version: 1 });
    this.values.set('instance/maintenance-event', { value: 'NONE', version: 1 });
    this.values.set('instance/scheduling/on-host-maintenance', { value: options.onHostMaintenance ?? 'MIGRATE', version: 1 });
    this.values.set('instance/scheduling/preemptible', { value: options.preemptible === true ? 'TRUE' : 'FALSE', version: 1 });
  }

  /** Sets a key's value (a documented one), answering the requests that wait for its change. */
  set(key: Key, value: string): void {
    if (!(KEYS[key] as readonly string[]).includes(value)) throw new ControlInputError(`${value} is not a documented value of ${key}`);
    const current = this.values.get(key);
    if (current?.value === value) return;
    this.values.set(key, { value, version: (current?.version ?? 0) + 1 });
    for (const waiter of [...this.waiters]) if (waiter.key === key) this.answer(waiter);
  }

  preempt(): void {
    this.set('instance/preempted', 'TRUE');
  }

  maintenance(value: 'MIGRATE_ON_HOST_MAINTENANCE' | 'TERMINATE_ON_HOST_MAINTENANCE' | 'NONE'): void {
    this.set('instance/maintenance-event', value);
  }

  withdraw(noticeId: string): boolean {
    if (noticeId === 'preempted') this.set('instance/preempted', 'FALSE');
    else if (noticeId === 'maintenance-event') this.set('instance/maintenance-event', 'NONE');
    else return false;
    return true;
  }

  state(): unknown {
    return {
      values: Object.fromEntries([...this.values].map(([k, v]) => [k, v.value])),
      longPolls: this.longPolls,
      waiting: this.waiters.size,
    };
  }

  protected addNotice(input: unknown): string {
    const parsed = GcpNoticeInput.safeParse(input);
    if (!parsed.success) throw new ControlInputError(`not a GCE notice: ${parsed.error.message}`);
    this.set(`instance/${parsed.data.key}`, parsed.data.value);
    return parsed.data.key;
  }

  protected override stopping(): void {
    for (const waiter of this.waiters) clearTimeout(waiter.timer);
    this.waiters.clear();
  }

  protected handle(req: IncomingMessage, res: ServerResponse, url: URL): void {
    if (header(req, 'x-forwarded-for') !== undefined) return send(res, 403, 'Forbidden: requests with X-Forwarded-For are refused.\n');
    if (header(req, 'metadata-flavor') !== 'Google') {
      return send(res, 403, 'Your client does not have permission to get this URL. Missing Metadata-Flavor:Google header.\n');
    }
    if (req.method !== 'GET') return send(res, 405, 'Method not allowed\n');
    if (url.pathname === '/computeMetadata/v1/instance/id') {
      const value = this.mode === 'garbage' ? GARBAGE : this.instanceId;
      return send(res, 200, value, { 'Content-Type': 'application/text', 'Metadata-Flavor': 'Google' });
    }
    const key = url.pathname.replace(/^\/computeMetadata\/v1\//, '') as Key;
    if (!url.pathname.startsWith('/computeMetadata/v1/') || !this.values.has(key)) return send(res, 404, 'Not Found\n');
    if (url.searchParams.get('wait_for_change') !== 'true' || this.mode === 'garbage') return this.answer({ key, res });

    this.longPolls.waited += 1;
    const lastEtag = url.searchParams.get('last_etag');
    if (lastEtag !== null && lastEtag !== this.etag(key)) {
      this.longPolls.answeredAtOnce += 1;
      return this.answer({ key, res });
    }
    const seconds = Number(url.searchParams.get('timeout_sec') ?? MAX_WAIT_SECONDS);
    if (!Number.isInteger(seconds) || seconds < 1) return send(res, 400, 'timeout_sec must be a positive whole number\n');
    const waiter: Waiter = { key, res, timer: setTimeout(() => this.answer(waiter), Math.min(seconds, MAX_WAIT_SECONDS) * 1000) };
    this.waiters.add(waiter);
    res.on('close', () => {
      clearTimeout(waiter.timer);
      this.waiters.delete(waiter);
    });
  }

  private answer(to: { key: Key; res: ServerResponse; timer?: NodeJS.Timeout }): void {
    if (to.timer) clearTimeout(to.timer);
    this.waiters.delete(to as Waiter);
    const value = this.mode === 'garbage' ? GARBAGE : (this.values.get(to.key)?.value ?? '');
    send(to.res, 200, value, { 'Content-Type': 'application/text', 'Metadata-Flavor': 'Google', ETag: this.etag(to.key) });
  }

  /** Changes with every change of the value (a version counts them, so a value set back gets a new ETag). */
  private etag(key: Key): string {
    const current = this.values.get(key);
    return createHash('sha256')
      .update(`${key}\n${current?.version ?? 0}\n${current?.value ?? ''}`)
      .digest('hex')
      .slice(0, 16);
  }
}
