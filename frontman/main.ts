#!/usr/bin/env node
import { Command, Option } from 'commander';
import { z } from 'zod';
import { FrontedService, type FrontmanRegistration } from '../core/frontman-registration.js';
import { FrontmanId } from '../core/events.js';
import { createLogger } from '../core/log.js';
import { connectNatsBus } from '../core/nats-event-bus.js';
import { startHttpFront, type Front } from './http-front.js';
import { MigrationFollower, type FrontedGate } from './migration-follower.js';
import { ServiceGate } from './service-gate.js';
import { startTcpFront } from './tcp-front.js';

/**
 * The frontman's process (`node dist/frontman/main.js`): the stable address of some services, at an edge
 * that is none of their hosts. Its fronts (HTTP, TCP) forward through each service's gate; the follower
 * drains and releases the gates from the migrations' events; a heartbeat tells the planner which
 * services it fronts (ums_frontmen), so that their migrations wait for it before the freeze.
 */
const log = createLogger('frontman');

/** One service as configured: what the registration says, and how long its requests may be held. */
const ServiceConfig = FrontedService.extend({ holdSeconds: z.number().positive().max(600).optional() });
const ServicesConfig = z.array(ServiceConfig).min(1).max(256);

const HEARTBEAT_MS = 3_000;
const CONNECT_TIMEOUT_MS = 2_000;

const number = (value: string): number => {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed <= 0) throw new Error(`${value} is not a positive number`);
  return parsed;
};

new Command('ums-frontman')
  .description("Keeps services' clients served through their migrations: holds requests while a service is frozen")
  .addOption(new Option('--id <id>', "this frontman's id").env('UMS_FRONTMAN_ID').makeOptionMandatory())
  .addOption(new Option('--nats <url>', 'NATS server').env('NATS_URL').default('nats://127.0.0.1:4222'))
  .addOption(
    new Option('--services <json>', 'the services it fronts: [{container, protocol: http|tcp, listen: host:port, port, holdSeconds?}]')
      .env('UMS_FRONTMAN_SERVICES')
      .makeOptionMandatory(),
  )
  .addOption(new Option('--hold-seconds <s>', 'the longest a request is held').env('UMS_FRONTMAN_HOLD_SECONDS').default('30'))
  .addOption(
    new Option('--drain-seconds <s>', 'the longest a drain waits for requests in flight').env('UMS_FRONTMAN_DRAIN_SECONDS').default('5'),
  )
  .addOption(new Option('--max-held <n>', 'requests held at once, per service').env('UMS_FRONTMAN_MAX_HELD').default('10000'))
  .addOption(new Option('--max-held-mib <n>', 'bytes held at once, per service').env('UMS_FRONTMAN_MAX_HELD_MIB').default('64'))
  .addOption(new Option('--max-body-kib <n>', 'the largest HTTP request body it takes').env('UMS_FRONTMAN_MAX_BODY_KIB').default('1024'))
  .action(
    async (options: {
      id: string;
      nats: string;
      services: string;
      holdSeconds: string;
      drainSeconds: string;
      maxHeld: string;
      maxHeldMib: string;
      maxBodyKib: string;
    }) => {
      const frontmanId = FrontmanId.parse(options.id);
      const services = ServicesConfig.parse(JSON.parse(options.services));
      const bus = await connectNatsBus({ servers: options.nats, name: `ums-frontman-${frontmanId}` });
      const gates: FrontedGate[] = [];
      const fronts: Front[] = [];
      for (const service of services) {
        const gate = new ServiceGate(
          service.container,
          {
            maxMs: (service.holdSeconds ?? number(options.holdSeconds)) * 1000,
            maxCount: number(options.maxHeld),
            maxBytes: number(options.maxHeldMib) * 1024 * 1024,
          },
          log,
        );
        const { host, port } = listenAddress(service.listen);
        const front =
          service.protocol === 'http'
            ? await startHttpFront(
                gate,
                {
                  host,
                  port,
                  maxBodyBytes: number(options.maxBodyKib) * 1024,
                  connectTimeoutMs: CONNECT_TIMEOUT_MS,
                  retryAfterSeconds: Math.ceil(service.holdSeconds ?? number(options.holdSeconds)),
                },
                log,
              )
            : await startTcpFront(gate, { host, port, connectTimeoutMs: CONNECT_TIMEOUT_MS }, log);
        gates.push({ service, gate });
        fronts.push(front);
        log.info({ container: service.container, protocol: service.protocol, listen: service.listen }, 'fronting');
      }
      const follower = new MigrationFollower(
        bus,
        gates,
        { frontmanId, drainMs: number(options.drainSeconds) * 1000, locateEveryMs: 2_000 },
        log,
      );
      await follower.start();
      const startedAt = new Date().toISOString();
      const beat = async () => {
        const registration: FrontmanRegistration = {
          frontmanId,
          services: services.map(({ container, protocol, listen, port }) => ({ container, protocol, listen, port })),
          startedAt,
          heartbeatAt: new Date().toISOString(),
        };
        await bus.frontmen.put(frontmanId, registration).catch((error: unknown) => log.warn({ err: error }, 'heartbeat failed'));
      };
      await beat();
      const heartbeat = setInterval(() => void beat(), HEARTBEAT_MS);
      log.info({ frontmanId, services: services.length }, 'frontman started');
      const shutdown = async () => {
        clearInterval(heartbeat);
        await follower.stop();
        for (const { gate } of gates) gate.close('the frontman is stopping');
        await Promise.all(fronts.map((front) => front.close()));
        await bus.frontmen.delete(frontmanId).catch(() => undefined);
        await bus.close();
        process.exit(0);
      };
      process.once('SIGTERM', () => void shutdown());
      process.once('SIGINT', () => void shutdown());
    },
  )
  .parseAsync()
  .catch((error: unknown) => {
    log.fatal({ err: error }, 'frontman failed');
    process.exit(1);
  });

function listenAddress(listen: string): { host: string; port: number } {
  const at = listen.lastIndexOf(':');
  const port = Number(listen.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`listen address ${listen} is not host:port`);
  return { host: listen.slice(0, at).replace(/^\[|\]$/g, ''), port };
}
