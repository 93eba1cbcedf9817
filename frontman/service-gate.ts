import type { Logger } from '../core/log.js';

/**
 * The gate of one fronted service: it forwards what clients send to the host that runs the service, or,
 * while the service is frozen, holds it (bounded in count, bytes and time) and forwards it once the saga
 * says where the service runs. A front (http-front.ts, tcp-front.ts) turns each request or connection into a
 * Held and admits it; the migration follower (migration-follower.ts) drains and releases the gate.
 */

/** Where the service runs: a host's public address and the port the container publishes there. */
export interface Upstream {
  agentId: string;
  host: string;
  port: number;
}

/** What a client sent, as a front holds it: an HTTP request with its body, or a paused TCP connection. */
export interface Held {
  /** Bytes it keeps in the frontman's memory while held. */
  readonly bytes: number;
  /** The client went away: nothing to forward any more. */
  readonly gone: boolean;
  /**
   * Sends it to the service. Settles when it is done there (the answer went back, the connection closed);
   * calls `retry` instead when it is certain the service never got it, or it is safe to send again.
   */
  forward(upstream: Upstream, retry: () => void): Promise<void>;
  /** Past its deadline, over the limits, or the service runs nowhere: 503 + Retry-After, or a clean close. */
  expire(reason: string): void;
}

export interface HoldLimits {
  /** The longest a request or connection is held (from its arrival), then it expires. */
  maxMs: number;
  maxCount: number;
  maxBytes: number;
}

/** What one hold did, from drain (or start) to release. */
export interface HoldOutcome {
  held: number;
  expired: number;
}

/** What a drain found: the requests in flight that finished, and those still running at its deadline. */
export interface DrainOutcome {
  finished: number;
  unfinished: number;
}

interface Waiting {
  item: Held;
  arrivedAt: number;
  timer: NodeJS.Timeout;
}

/** A request that met a closed door at the service is tried again this soon (until its deadline). */
const RETRY_DELAY_MS = 100;

export class ServiceGate {
  private upstream: Upstream | undefined;
  private holding = true;
  private readonly queue: Waiting[] = [];
  private heldBytes = 0;
  private inFlight = 0;
  private readonly idle = new Set<() => void>();
  private outcome: HoldOutcome = { held: 0, expired: 0 };

  constructor(
    readonly container: string,
    private readonly limits: HoldLimits,
    private readonly log: Logger,
  ) {}

  /** Where it forwards now (undefined: it holds, the service's host not known yet or frozen). */
  get target(): Upstream | undefined {
    return this.holding ? undefined : this.upstream;
  }

  get waiting(): number {
    return this.queue.length;
  }

  /** A request or connection arrived (or comes back for another try, keeping its first arrival time). */
  admit(item: Held, arrivedAt = Date.now()): void {
    if (item.gone) return;
    if (Date.now() - arrivedAt >= this.limits.maxMs) return this.expireItem(item, `held for ${this.limits.maxMs} ms, the frontman's limit`);
    if (!this.holding && this.upstream !== undefined) {
      this.dispatch(item, this.upstream, arrivedAt);
      return;
    }
    this.hold(item, arrivedAt);
  }

  /**
   * Stops forwarding: from now on everything is held. Resolves once nothing is in flight at the service, or
   * at `timeoutMs` with what is still running (the freeze will cut it; the front then answers for it).
   */
  async drain(timeoutMs: number): Promise<DrainOutcome> {
    this.holding = true;
    this.outcome = { held: this.queue.length, expired: 0 };
    const atStart = this.inFlight;
    if (atStart > 0) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.idle.delete(done);
          resolve();
        };
        const timer = setTimeout(done, timeoutMs);
        this.idle.add(done);
      });
    }
    const unfinished = this.inFlight;
    return { finished: Math.max(0, atStart - unfinished), unfinished };
  }

  /**
   * Forwards again, to `upstream`, everything held first in arrival order; null: the service runs nowhere,
   * so what is held expires now (and later arrivals are held until their deadline).
   */
  release(upstream: Upstream | null, reason = 'the service is not running anywhere'): HoldOutcome {
    const outcome = this.outcome;
    this.outcome = { held: 0, expired: 0 };
    const waiting = this.queue.splice(0);
    this.heldBytes = 0;
    if (upstream === null) {
      this.holding = true;
      for (const w of waiting) this.expireWaiting(w, reason, outcome);
      return outcome;
    }
    this.upstream = upstream;
    this.holding = false;
    for (const w of waiting) {
      clearTimeout(w.timer);
      if (!w.item.gone) this.dispatch(w.item, upstream, w.arrivedAt);
    }
    this.log.info({ container: this.container, upstream, ...outcome }, 'forwarding');
    return outcome;
  }

  /** Expires everything held (the frontman is stopping). */
  close(reason: string): void {
    for (const w of this.queue.splice(0)) this.expireWaiting(w, reason, this.outcome);
    this.heldBytes = 0;
  }

  private hold(item: Held, arrivedAt: number): void {
    const left = arrivedAt + this.limits.maxMs - Date.now();
    if (this.queue.length >= this.limits.maxCount || this.heldBytes + item.bytes > this.limits.maxBytes) {
      return this.expireItem(item, `the frontman already holds ${this.queue.length} requests (${this.heldBytes} bytes), its limit`);
    }
    const waiting: Waiting = {
      item,
      arrivedAt,
      timer: setTimeout(() => {
        const at = this.queue.indexOf(waiting);
        if (at < 0) return;
        this.queue.splice(at, 1);
        this.heldBytes -= item.bytes;
        this.expireWaiting(waiting, `held for ${this.limits.maxMs} ms, the frontman's limit`, this.outcome);
      }, left),
    };
    this.queue.push(waiting);
    this.heldBytes += item.bytes;
    this.outcome.held += 1;
  }

  private dispatch(item: Held, upstream: Upstream, arrivedAt: number): void {
    this.inFlight += 1;
    let retried = false;
    const retry = () => {
      retried = true;
    };
    item
      .forward(upstream, retry)
      .catch((error: unknown) => this.log.warn({ container: this.container, err: error }, 'forwarding failed'))
      .finally(() => {
        this.inFlight -= 1;
        if (this.inFlight === 0) for (const done of [...this.idle]) done();
        // A closed door (the service moved, or is restarting): once more after a pause, held if the gate closed.
        if (retried) setTimeout(() => this.admit(item, arrivedAt), this.holding ? 0 : RETRY_DELAY_MS);
      });
  }

  private expireWaiting(w: Waiting, reason: string, outcome: HoldOutcome): void {
    clearTimeout(w.timer);
    if (w.item.gone) return;
    outcome.expired += 1;
    w.item.expire(reason);
  }

  private expireItem(item: Held, reason: string): void {
    this.outcome.expired += 1;
    item.expire(reason);
  }
}
