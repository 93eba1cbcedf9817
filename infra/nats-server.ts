import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, nkeyAuthenticator } from 'nats';
import { readBrokerCredential } from '../core/nats-event-bus.js';
import { ADMIN_PRINCIPAL, type BrokerCredentials } from './broker-credentials.js';
import { ChildService } from './child-service.js';
import { freePort } from '../core/free-port.js';

export interface NatsServer {
  url: string;
  service: ChildService;
  stop(): Promise<void>;
}

export interface NatsServerOptions {
  /**
   * TLS on the listener and the principals' nkeys and permissions (infra/broker-credentials.ts): anonymous
   * clients are then refused. Without it the server is open, for tests of the bus alone.
   */
  credentials?: BrokerCredentials;
}

/** nats-server with JetStream on a free loopback port, its store under `dir`. */
export async function startNatsServer(dir: string, name = 'ums', options: NatsServerOptions = {}): Promise<NatsServer> {
  const port = await freePort();
  const { credentials } = options;
  const url = `${credentials ? 'tls' : 'nats'}://127.0.0.1:${port}`;
  // The limits spelled out rather than left to defaults: a message is at most 1 MiB (MAX_MESSAGE_BYTES,
  // which every stream's max_msg_size repeats; clients refuse to publish more than the server announces).
  await mkdir(dir, { recursive: true });
  const config = join(dir, 'nats.conf');
  const lines = ['max_payload: 1048576'];
  if (credentials) {
    const { certFile, keyFile } = credentials.tls;
    lines.push(`tls: ${JSON.stringify({ cert_file: certFile, key_file: keyFile, timeout: 2 })}`, credentials.authorization);
  }
  await writeFile(config, `${lines.join('\n')}\n`, { mode: 0o600 });
  // The readiness check connects as the admin: an anonymous client is refused.
  const adminFile = credentials?.files.get(ADMIN_PRINCIPAL);
  const admin = adminFile !== undefined ? await readBrokerCredential(adminFile) : undefined;
  const service = await new ChildService({
    name: 'nats',
    command: 'nats-server',
    args: ['-c', config, '-js', '-a', '127.0.0.1', '-p', String(port), '-sd', join(dir, 'jetstream'), '-n', name],
    env: process.env,
    logFile: join(dir, 'nats.log'),
    ready: async () => {
      const nc = await connect({
        servers: url,
        reconnect: false,
        timeout: 500,
        ...(credentials && admin
          ? { tls: { caFile: credentials.tls.caFile }, authenticator: nkeyAuthenticator(new TextEncoder().encode(admin.seed)) }
          : {}),
      });
      await nc.close();
      return true;
    },
  }).start();
  return { url, service, stop: () => service.stop() };
}
