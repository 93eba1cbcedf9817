import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import type { Logger } from '../core/log.js';
import type { Front } from './http-front.js';
import type { Held, ServiceGate, Upstream } from './service-gate.js';

/**
 * The plain-TCP front of one service. A connection is held by not reading from it (the kernel's buffers,
 * not the frontman's, keep what the client sends meanwhile), then joined to a connection to the service.
 * A connection the service never accepted is held and tried again; once joined, the two ends live and die
 * together: when the freeze cuts the service's end, the client's end is closed cleanly, and its reconnect
 * is held until the service runs again.
 */

export interface TcpFrontOptions {
  host: string;
  port: number;
  connectTimeoutMs: number;
}

export async function startTcpFront(gate: ServiceGate, options: TcpFrontOptions, log: Logger): Promise<Front> {
  const clients = new Set<Socket>();
  const server = createServer({ pauseOnConnect: true }, (socket) => {
    clients.add(socket);
    socket.once('close', () => clients.delete(socket));
    socket.on('error', (error) => log.debug({ err: error }, 'client connection failed'));
    gate.admit(new HeldConnection(socket, options));
  });
  server.listen(options.port, options.host);
  await once(server, 'listening');
  return {
    address: server.address() as { address: string; family: string; port: number },
    close: async () => {
      for (const socket of clients) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

class HeldConnection implements Held {
  readonly bytes = 0;

  constructor(
    private readonly client: Socket,
    private readonly options: TcpFrontOptions,
  ) {}

  get gone(): boolean {
    return this.client.destroyed || this.client.readableEnded;
  }

  forward(upstream: Upstream, retry: () => void): Promise<void> {
    return new Promise((resolve) => {
      const { client } = this;
      const service = connect({ host: upstream.host, port: upstream.port });
      let joined = false;
      const timer = setTimeout(
        () => service.destroy(new Error(`no connection to ${upstream.host}:${upstream.port} within ${this.options.connectTimeoutMs} ms`)),
        this.options.connectTimeoutMs,
      );
      service.once('connect', () => {
        clearTimeout(timer);
        joined = true;
        client.pipe(service);
        service.pipe(client);
        client.resume();
      });
      service.once('error', () => {
        clearTimeout(timer);
        if (!joined) retry();
      });
      const left = () => service.destroy();
      // Whichever end goes, the other is ended: a clean close for the client, never a silent hang.
      service.once('close', () => {
        if (joined) client.end();
        // Not joined: a retry adds its own listener, and a connection held for long would collect hundreds.
        else client.off('close', left);
        resolve();
      });
      client.once('close', left);
    });
  }

  expire(): void {
    this.client.end();
  }
}
