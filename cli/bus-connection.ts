import { connectNatsBus, type NatsBusOptions, type NatsEventBus } from '../core/nats-event-bus.js';
import { defaultStackDir, readStackInfo } from './stack-info.js';

/**
 * Which broker the CLI talks to, and as whom: --nats, then NATS_URL, then the local stack. The credential is
 * UMS_NATS_CREDENTIALS (and UMS_NATS_CA) when set; otherwise, for the local stack's broker, the CLI credential
 * the stack handed out (its path is in stack.json), so `ums` works against the stack with nothing to configure.
 */
export async function resolveBroker(explicit: string | undefined): Promise<Omit<NatsBusOptions, 'name'>> {
  const stack = await readStackInfo(defaultStackDir()).catch(() => undefined);
  const servers = explicit || process.env.NATS_URL || stack?.natsUrl;
  if (!servers) throw new Error('no broker given: pass --nats URL, set NATS_URL, or start the local stack with "npm run stack:up"');
  if (stack !== undefined && servers === stack.natsUrl && !process.env.UMS_NATS_CREDENTIALS) {
    return { servers, credentials: stack.cliCredentials, ca: process.env.UMS_NATS_CA || stack.natsCa };
  }
  return { servers };
}

export async function connectCli(explicit: string | undefined): Promise<NatsEventBus> {
  const broker = await resolveBroker(explicit);
  try {
    return await connectNatsBus({ ...broker, name: `ums-cli-${process.pid}` });
  } catch (error) {
    throw new Error(`cannot reach the broker at ${broker.servers}: ${(error as Error).message}`, { cause: error });
  }
}
