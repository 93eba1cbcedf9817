import { createHash } from 'node:crypto';
import type { EventBus } from '../../core/event-bus.js';
import { makeEvent, type UmsEvent } from '../../core/events.js';
import type { HostNotice } from '../../core/host-notice.js';
import type { Logger } from '../../core/log.js';
import { acknowledgesNotices, describe, type NoticeWatcher } from './notice-watcher.js';

export interface NoticePublisherOptions {
  agentId: string;
  watcher: NoticeWatcher;
  bus: Pick<EventBus, 'publishEvent'>;
  log: Logger;
  /** Whether nothing on this host needs it any more (agents/host-agent.ts hostIsEmpty). */
  hostIsEmpty: () => Promise<boolean>;
  /** How soon a fact the bus refused is offered again, and how often an evicting notice checks for an empty host. */
  checkEveryMs?: number;
}

/**
 * The agent's side of its cloud's notices. Each notice the watcher reports becomes a host.notice fact on the
 * bus (host.notice-withdrawn once it is gone), in order, offered again until the bus takes it: a lost
 * eviction notice would cost the host's containers. Where the cloud lets the host say it is ready (Azure), an
 * evicting notice is approved as soon as the host is empty, so that the platform may act before the deadline
 * instead of keeping an empty VM waiting.
 */
export class NoticePublisher {
  private readonly unpublished: UmsEvent[] = [];
  /** Evicting notices to approve once the host is empty, by noticeId. */
  private readonly awaitingApproval = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private readonly checkEveryMs: number;

  constructor(private readonly options: NoticePublisherOptions) {
    this.checkEveryMs = options.checkEveryMs ?? 2_000;
  }

  start(): void {
    const { watcher } = this.options;
    watcher.on('notice', this.onNotice);
    watcher.on('withdrawn', this.onWithdrawn);
    watcher.start();
    this.timer = setInterval(() => void this.tick(), this.checkEveryMs);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    const { watcher } = this.options;
    await watcher.stop();
    watcher.off('notice', this.onNotice);
    watcher.off('withdrawn', this.onWithdrawn);
    await this.ticking;
  }

  /**
   * Checks now whether the host is empty and approves what waits for it. The agent calls this each time a service has left the host for good (a discarded source) once it has
   * moved the last container away; until then the periodic check finds it within checkEveryMs.
   */
  hostEmptied(): Promise<void> {
    return this.tick();
  }

  private readonly onNotice = (notice: HostNotice): void => {
    this.enqueue(() =>
      makeEvent(
        'host.notice',
        this.source,
        {
          agent: this.options.agentId,
          cloud: notice.cloud,
          noticeId: notice.noticeId,
          kind: notice.kind,
          evicts: notice.evicts,
          ...(notice.deadline === undefined ? {} : { deadline: notice.deadline }),
          summary: notice.summary,
          observedAt: notice.observedAt,
        },
        // Deterministic: a retried publish of the same fact is one fact for the bus (it deduplicates on the id).
        this.eventId('notice', [notice.noticeId, notice.kind, notice.deadline ?? '', notice.summary]),
      ),
    );
    if (notice.evicts && acknowledgesNotices(this.options.watcher)) this.awaitingApproval.add(notice.noticeId);
    void this.tick();
  };

  private readonly onWithdrawn = (notice: HostNotice): void => {
    this.awaitingApproval.delete(notice.noticeId);
    this.enqueue(() =>
      makeEvent(
        'host.notice-withdrawn',
        this.source,
        {
          agent: this.options.agentId,
          cloud: notice.cloud,
          noticeId: notice.noticeId,
          kind: notice.kind,
          evicts: notice.evicts,
          withdrawnAt: notice.withdrawnAt ?? new Date().toISOString(),
        },
        this.eventId('withdrawn', [notice.noticeId, notice.kind, notice.deadline ?? '', notice.withdrawnAt ?? '']),
      ),
    );
    void this.tick();
  };

  private get source(): string {
    return `/ums/agents/${this.options.agentId}`;
  }

  private eventId(what: string, parts: string[]): string {
    const digest = createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 24);
    return `${this.options.agentId}.${what}.${digest}`;
  }

  private enqueue(make: () => UmsEvent): void {
    try {
      this.unpublished.push(make());
    } catch (error) {
      // The watcher validated the notice already: this is a bug, not a cloud's garbage. Say so loudly.
      this.options.log.error({ err: error }, 'a notice does not make a valid host event; not published');
    }
  }

  private tick(): Promise<void> {
    this.ticking ??= this.publish()
      .then(() => this.approve())
      .finally(() => (this.ticking = undefined));
    return this.ticking;
  }

  private async publish(): Promise<void> {
    while (this.unpublished.length > 0) {
      const event = this.unpublished[0] as UmsEvent;
      try {
        await this.options.bus.publishEvent(event);
      } catch (error) {
        this.options.log.warn(
          { event: event.name, pending: this.unpublished.length, retryInMs: this.checkEveryMs, reason: describe(error) },
          'could not publish a host notice; offering it again',
        );
        return;
      }
      this.unpublished.shift();
    }
  }

  private async approve(): Promise<void> {
    const { watcher, log } = this.options;
    if (this.awaitingApproval.size === 0 || !acknowledgesNotices(watcher)) return;
    let empty: boolean;
    try {
      empty = await this.options.hostIsEmpty();
    } catch (error) {
      log.warn({ reason: describe(error) }, 'could not tell whether the host is empty; the notice waits for the next check');
      return;
    }
    if (!empty) return;
    for (const noticeId of [...this.awaitingApproval]) {
      try {
        const outcome = await watcher.acknowledge(noticeId);
        this.awaitingApproval.delete(noticeId);
        if (outcome.acknowledged) log.info({ noticeId }, 'the host is empty: approved the notice so that the platform may proceed');
        else log.info({ noticeId, reason: outcome.reason }, 'the host is empty but the notice is left to its deadline');
      } catch (error) {
        log.warn({ noticeId, reason: describe(error) }, 'could not approve the notice; trying again at the next check');
      }
    }
  }
}
