import { connectNatsBus, type NatsEventBus } from '../core/nats-event-bus.js';
import { defaultStackDir, readStackInfo } from './stack-info.js';

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
