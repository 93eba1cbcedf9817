import type { EventBus, Subscription } from '../core/event-bus.js';
import { makeEvent, type EventData, type UmsEvent } from '../core/events.js';
import type { FrontedService } from '../core/frontman-registration.js';
import type { Logger } from '../core/log.js';
import { isTerminal } from '../core/migration.js';
import type { ServiceGate, Upstream } from './service-gate.js';

/**
 * Drives the gates from the migrations' events, as everything else in UMS is driven. For a migration of
 * one of its services whose plan names this frontman:
 *
 *   restore.prepared (the destination is ready)  drain: hold new requests, let the ones in flight finish,
 *                                                then state frontman.drained; the saga freezes only then
 *   restore.completed (the destination runs it)  release to the destination: held requests first
 *   source.resumed (the saga turned back)        release to the source
 *   migration.failed                             release to where it runs (nowhere: held ones get 503)
 *
 * Between migrations it finds where each service runs in the agents' registrations, so a restarted
 * frontman, or one started before its service, forwards to the right host.
 */

export interface FrontedGate {
  service: FrontedService;
  gate: ServiceGate;
}

export interface FollowerOptions {
  frontmanId: string;
  /** How long a drain waits for the requests in flight (then the freeze cuts them). */
  drainMs: number;
  /** How often the services' hosts are looked up between migrations. */
  locateEveryMs: number;
}

interface Followed {
  planned?: EventData<'migration.planned'>;
  drained: boolean;
  released: boolean;
}

export class MigrationFollower {
  private readonly followed = new Map<string, Subscription | undefined>();
  /** Containers whose gates a migration holds: not relocated until it releases them. */
  private readonly migrating = new Set<string>();
  private watch: Subscription | undefined;
  private locator: NodeJS.Timeout | undefined;
  private readonly source: string;

  constructor(
    private readonly bus: EventBus,
    private readonly gates: readonly FrontedGate[],
    private readonly options: FollowerOptions,
    private readonly log: Logger,
  ) {
    this.source = `/ums/frontman/${options.frontmanId}`;
  }

  async start(): Promise<void> {
    // Watch first, then list: a migration planned in between is seen twice and followed once.
    this.watch = await this.bus.watchEvents('migration.planned', (event) => {
      if (event.name === 'migration.planned' && event.data.frontman === this.options.frontmanId) void this.follow(event.data.migrationId);
    });
    for (const { value } of await this.bus.migrations.list()) {
      if (!isTerminal(value.state) && value.frontman?.id === this.options.frontmanId) await this.follow(value.migrationId);
    }
    await this.locate();
    this.locator = setInterval(() => void this.locate(), this.options.locateEveryMs);
  }

  async stop(): Promise<void> {
    clearInterval(this.locator);
    await this.watch?.stop();
    await Promise.all([...this.followed.values()].map((s) => s?.stop() ?? Promise.resolve()));
  }

  private async follow(migrationId: string): Promise<void> {
    if (this.followed.has(migrationId)) return;
    this.followed.set(migrationId, undefined);
    const state: Followed = { drained: false, released: false };
    try {
      const subscription = await this.bus.followMigration(migrationId, (event) => this.step(state, event));
      this.followed.set(migrationId, subscription);
      void subscription.closed.finally(() => this.followed.delete(migrationId));
    } catch (error) {
      this.followed.delete(migrationId);
      this.log.error({ err: error, migrationId }, 'cannot follow the migration');
    }
  }

  private async step(m: Followed, event: UmsEvent): Promise<'stop' | void> {
    if (event.name === 'migration.planned') {
      m.planned = event.data;
      return;
    }
    const plan = m.planned;
    if (plan === undefined) return;
    switch (event.name) {
      case 'restore.prepared':
        if (event.data.agent === plan.destinationAgent && !m.drained) {
          m.drained = true;
          await this.drain(plan);
        }
        return;
      case 'restore.completed':
        if (event.data.agent === plan.destinationAgent && m.drained && !m.released) await this.release(m, plan, plan.destinationAgent);
        return;
      case 'source.resumed':
        if (event.data.agent === plan.sourceAgent && m.drained && !m.released) await this.release(m, plan, plan.sourceAgent);
        return;
      case 'migration.failed':
        if (m.drained && !m.released) await this.release(m, plan, event.data.runningOn);
        return 'stop';
      case 'migration.completed':
        if (m.drained && !m.released) await this.release(m, plan, plan.destinationAgent);
        return 'stop';
      default:
        return;
    }
  }

  private async drain(plan: EventData<'migration.planned'>): Promise<void> {
    this.migrating.add(plan.container);
    const outcomes = await Promise.all(this.gatesOf(plan.container).map(({ gate }) => gate.drain(this.options.drainMs)));
    const finished = outcomes.reduce((sum, o) => sum + o.finished, 0);
    const unfinished = outcomes.reduce((sum, o) => sum + o.unfinished, 0);
    this.log.info({ migrationId: plan.migrationId, container: plan.container, finished, unfinished }, 'drained; holding');
    await this.publish('frontman.drained', {
      migrationId: plan.migrationId,
      frontman: this.options.frontmanId,
      container: plan.container,
      finished,
      unfinished,
      drainedAt: new Date().toISOString(),
    });
  }

  private async release(m: Followed, plan: EventData<'migration.planned'>, agentId: string | null): Promise<void> {
    m.released = true;
    const host = agentId === null ? undefined : await this.serviceAddressOf(agentId);
    let held = 0;
    let expired = 0;
    for (const { service, gate } of this.gatesOf(plan.container)) {
      const upstream: Upstream | null = agentId !== null && host !== undefined ? { agentId, host, port: service.port } : null;
      const why =
        agentId === null ? 'the migration failed and the service runs nowhere' : `agent "${agentId}" registers no service address`;
      const outcome = gate.release(upstream, why);
      held += outcome.held;
      expired += outcome.expired;
    }
    this.migrating.delete(plan.container);
    this.log.info({ migrationId: plan.migrationId, container: plan.container, to: agentId, held, expired }, 'released');
    await this.publish('frontman.released', {
      migrationId: plan.migrationId,
      frontman: this.options.frontmanId,
      container: plan.container,
      to: agentId,
      held,
      expired,
      releasedAt: new Date().toISOString(),
    });
  }

  /** Between migrations: each gate forwards to the host whose registration lists its container running. */
  private async locate(): Promise<void> {
    let registrations;
    try {
      registrations = (await this.bus.agents.list()).map((entry) => entry.value);
    } catch (error) {
      this.log.warn({ err: error }, 'cannot read the registrations; the gates keep their hosts');
      return;
    }
    for (const { service, gate } of this.gates) {
      if (this.migrating.has(service.container)) continue;
      const running = registrations.filter((r) =>
        r.containers.some((c) => c.name === service.container && c.state === 'running' && !c.checkpointed),
      );
      const host = running.length === 1 ? running[0] : undefined;
      if (host?.serviceAddress === undefined || gate.target?.agentId === host.agentId) continue;
      gate.release({ agentId: host.agentId, host: host.serviceAddress, port: service.port });
    }
  }

  private async serviceAddressOf(agentId: string): Promise<string | undefined> {
    const registration = await this.bus.agents.get(agentId).catch(() => undefined);
    return registration?.value.serviceAddress;
  }

  private gatesOf(container: string): readonly FrontedGate[] {
    return this.gates.filter((g) => g.service.container === container);
  }

  private async publish<N extends 'frontman.drained' | 'frontman.released'>(name: N, data: EventData<N>): Promise<void> {
    // One per migration and name: a replay after a restart is deduplicated by the stream.
    await this.bus.publishEvent(makeEvent(name, this.source, data, `${data.migrationId}.${name}`));
  }
}
