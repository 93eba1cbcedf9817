import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { isAlive } from '../core/agent-registration.js';
import type { EvacuationItem, EvacuationRecord } from '../core/evacuation.js';
import { makeEvent } from '../core/events.js';
import type { NatsEventBus } from '../core/nats-event-bus.js';
import { connectCli } from './bus-connection.js';

export interface DrainOptions {
  concurrency?: number;
  cancel?: boolean;
  timeout: string;
  json?: boolean;
  nats?: string;
}

/** How often the evacuation's record is read while following it. */
const FOLLOW_EVERY_MS = 500;

/**
 * `ums drain <agent>`: asks the evacuation function to empty the host (functions/evacuate-host.ts), then follows
 * its record: the decision (what goes where, what is left and why), each service as it moves, the outcome.
 * Exit code 0 when every service moved, 1 when some were left or failed (each with why), 2 when it did not end
 * in time. With --cancel: stops the drain (nothing new starts) and opens the host again.
 */
export async function drain(agent: string, options: DrainOptions): Promise<number> {
  const bus = await connectCli(options.nats);
  const say = (line: string) => {
    if (!options.json) process.stderr.write(`${line}\n`);
  };
  // The record as it ended, and the exit code (undefined: it did not end in time).
  const report = (ended: EvacuationRecord | undefined, code: (record: EvacuationRecord) => number): number => {
    if (ended === undefined) return 2;
    process.stdout.write(options.json ? `${JSON.stringify(ended, null, 2)}\n` : `${formatEvacuation(ended)}\n`);
    return code(ended);
  };
  const emptied = (record: EvacuationRecord) => (record.items.every((item) => item.state === 'moved') ? 0 : 1);
  const over = (record: EvacuationRecord) => record.state !== 'evacuating';
  try {
    const requestedBy = process.env.USER ?? 'cli';
    const current = await bus.evacuations.get(agent);
    if (options.cancel) {
      if (!current || current.value.state === 'cancelled') {
        say(`${agent} is not being drained or evacuated: nothing to cancel`);
        return 0;
      }
      await bus.publishEvent(makeEvent('host.drain-cancelled', '/ums/cli', { agent, requestedBy }));
      return report(await follow(bus, agent, current.value.evacuationId, (r) => r.state === 'cancelled', options, say), () => 0);
    }
    if (current?.value.state === 'evacuating') {
      // One evacuation per host: a drain asked now would join it, so follow that one.
      say(`${agent} is already being evacuated (${current.value.evacuationId}); following it`);
      return report(await follow(bus, agent, current.value.evacuationId, over, options, say), emptied);
    }
    const registration = await bus.agents.get(agent);
    if (!registration || !isAlive(registration.value)) {
      throw new Error(
        registration
          ? `agent "${agent}" has stopped sending heartbeats: nothing can be moved off its host through it`
          : `agent "${agent}" is not registered; "ums agents" lists the registered agents`,
      );
    }
    const evacuationId = `dr-${randomBytes(5).toString('hex')}`;
    await bus.publishEvent(
      makeEvent('host.drain-requested', '/ums/cli', {
        agent,
        evacuationId,
        ...(options.concurrency !== undefined ? { concurrency: options.concurrency } : {}),
        requestedBy,
      }),
    );
    say(`draining ${agent} (${evacuationId})`);
    return report(await follow(bus, agent, evacuationId, over, options, say), emptied);
  } finally {
    await bus.close();
  }
}

/** Reads the host's evacuation record until `done` holds for this evacuation, telling each change; undefined on timeout. */
async function follow(
  bus: NatsEventBus,
  agent: string,
  evacuationId: string,
  done: (record: EvacuationRecord) => boolean,
  options: DrainOptions,
  say: (line: string) => void,
): Promise<EvacuationRecord | undefined> {
  const until = Date.now() + Number(options.timeout) * 1000;
  const told = new Map<string, string>();
  let decided = false;
  while (Date.now() < until) {
    const record = (await bus.evacuations.get(agent))?.value;
    if (record?.evacuationId === evacuationId) {
      if (!decided) {
        decided = true;
        say(`  ${record.summary}`);
      }
      for (const item of record.items) {
        const line = formatItem(item);
        if (told.get(item.container) !== line) {
          told.set(item.container, line);
          say(`  ${line}`);
        }
      }
      if (done(record)) return record;
    }
    await sleep(FOLLOW_EVERY_MS);
  }
  say(`the evacuation of ${agent} did not end within ${options.timeout} s; "ums evacuations ${agent}" shows where it is`);
  return undefined;
}

export function formatItem(item: EvacuationItem): string {
  const where = item.destination !== undefined && item.state !== 'left' ? ` -> ${item.destination}` : '';
  const migration = item.migrationId !== undefined ? ` [${item.migrationId}]` : '';
  const why = item.state === 'failed' ? (item.failure?.reason ?? item.reason) : item.reason;
  return `${item.container}${where}: ${item.state}${migration} (priority ${item.priority}): ${why}`;
}

export function formatEvacuation(record: EvacuationRecord): string {
  const trigger =
    record.trigger.kind === 'drain'
      ? `drain${record.trigger.requestedBy ? ` by ${record.trigger.requestedBy}` : ''}`
      : `${record.trigger.cloud} ${record.trigger.noticeKind} notice ${record.trigger.noticeId}: ${record.trigger.summary}`;
  const lines = [
    `${record.agent}: ${record.state} (${record.evacuationId}, ${trigger})`,
    ...(record.deadline ? [`  deadline: ${record.deadline}`] : []),
    `  decided: ${record.summary}`,
    `  at most ${record.concurrency} at once; uplink ${record.link.basis}`,
    ...(record.cancelReason ? [`  cancelled: ${record.cancelReason}`] : []),
    ...record.items.map((item) => `  ${formatItem(item)}`),
  ];
  return lines.join('\n');
}
