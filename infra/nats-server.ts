import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'nats';
import { ChildService } from './child-service.js';
import { freePort } from './free-port.js';

export interface NatsServer {
  url: string;
  service: ChildService;
  stop(): Promise<void>;
}

/** nats-server with JetStream on a free loopback port, its store under `dir`. */
export async function startNatsServer(dir: string, name = 'ums'): Promise<NatsServer> {
  const port = await freePort();
  const url = `nats://127.0.0.1:${port}`;
  // The limits spelled out rather than left to defaults: a message is at most 1 MiB (MAX_MESSAGE_BYTES,
  // which every stream's max_msg_size repeats; clients refuse to publish more than the server announces).
  const config = join(dir, 'nats.conf');
  await writeFile(config, 'max_payload: 1048576\n');
  const service = await new ChildService({
    name: 'nats',
    command: 'nats-server',
    args: ['-c', config, '-js', '-a', '127.0.0.1', '-p', String(port), '-sd', join(dir, 'jetstream'), '-n', name],
    env: process.env,
    logFile: join(dir, 'nats.log'),
    ready: async () => {
      const nc = await connect({ servers: url, reconnect: false, timeout: 500 });
      await nc.close();
      return true;
    },
  }).start();
  return { url, service, stop: () => service.stop() };
}
