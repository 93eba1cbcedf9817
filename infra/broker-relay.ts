import { once } from 'node:events';
import { rm } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { createLogger } from '../core/log.js';
import type { WanEndpoint } from './wan.js';

/**
 * Lets a program in a WAN namespace (the frontman's edge) reach the broker, which listens on this machine's
 * loopback, as a deployment's frontman reaches its broker across the network. The stack listens on a unix
 * socket (a file, which every network namespace sees) and joins each connection to the broker's port; in the
 * namespace this module, run as a program, listens on the same loopback port and joins each connection to
 * the socket. TLS runs end to end through both, so the broker's certificate (for 127.0.0.1) still matches.
 */
const log = createLogger('broker-relay');

export interface BrokerRelay {
  stop(): Promise<void>;
}

export async function startBrokerRelay(endpoint: WanEndpoint, brokerPort: number, socketPath: string): Promise<BrokerRelay> {
  await rm(socketPath, { force: true });
  const sockets = new Set<Socket>();
  const server = join(sockets, () => connect({ host: '127.0.0.1', port: brokerPort }));
  server.listen(socketPath);
  await once(server, 'listening');
  const inside = endpoint.spawn(process.execPath, [fileURLToPath(import.meta.url), String(brokerPort), socketPath], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  // Ready once the namespace's side accepts a connection on its loopback.
  const deadline = Date.now() + 10_000;
  for (;;) {
    const up = await endpoint
      .exec('bash', ['-c', `exec 3<>/dev/tcp/127.0.0.1/${brokerPort}`])
      .then(() => true)
      .catch(() => false);
    if (up) break;
    if (inside.exitCode !== null || Date.now() > deadline) {
      inside.kill('SIGKILL');
      server.close();
      throw new Error(`the broker relay in ${endpoint.netns} did not start listening on 127.0.0.1:${brokerPort}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  log.info({ netns: endpoint.netns, brokerPort }, 'broker reachable from the namespace');
  return {
    stop: async () => {
      inside.kill('SIGKILL');
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(socketPath, { force: true });
    },
  };
}

/** A server whose every connection is piped both ways to a fresh connection from `dial`. */
function join(sockets: Set<Socket>, dial: () => Socket): Server {
  return createServer((client) => {
    const far = dial();
    for (const socket of [client, far]) {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      // Either end failing ends both: the broker client reconnects.
      socket.on('error', () => (client.destroy(), far.destroy()));
    }
    client.pipe(far).pipe(client);
  });
}

// Run as a program in the namespace: listen on its loopback at the broker's port, join to the socket.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [port, socketPath] = process.argv.slice(2);
  if (port === undefined || socketPath === undefined) throw new Error('usage: broker-relay.js <port> <unix socket>');
  join(new Set(), () => connect(socketPath)).listen(Number(port), '127.0.0.1');
}
