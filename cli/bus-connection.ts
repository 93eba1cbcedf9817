import { homedir } from 'node:os';
import { join } from 'node:path';
import { connectNatsBus, type NatsEventBus } from '../core/nats-event-bus.js';
import { readStackInfo } from '../infra/local-stack.js';

/** Where `ums stack up` keeps a stack by default; the CLI finds the broker there when NATS_URL is unset. */
export const defaultStackDir = (name = 'default'): string =>
  join(process.env.UMS_HOME ?? (process.getuid?.() === 0 ? '/var/lib/ums' : join(homedir(), '.ums')), 'stacks', name);

export async function resolveNatsUrl(explicit: string | undefined): Promise<string> {
  if (explicit) return explicit;
  if (process.env.NATS_URL) return process.env.NATS_URL;
  try {
    return (await readStackInfo(defaultStackDir())).natsUrl;
  } catch {
    throw new Error('no broker given: pass --nats URL, set NATS_URL, or start the local stack with "npm run stack:up"');
  }
}

export async function connectCli(explicit: string | undefined): Promise<NatsEventBus> {
  const servers = await resolveNatsUrl(explicit);
  try {
    return await connectNatsBus({ servers, name: `ums-cli-${process.pid}` });
  } catch (error) {
    throw new Error(`cannot reach the broker at ${servers}: ${(error as Error).message}`);
  }
}
