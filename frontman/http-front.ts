import { once } from 'node:events';
import { createServer, request, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../core/log.js';
import type { Held, ServiceGate, Upstream } from './service-gate.js';

/**
 * The HTTP front of one service: a reverse proxy whose every request goes through the service's gate. A
 * request is forwarded once; one that never reached the service (its host refused or did not answer the
 * connection) is held and sent again; one whose fate is unknown (the connection broke after it was sent) is
 * sent again only if repeating it is harmless: an idempotent method (RFC 9110 9.2.2) or an Idempotency-Key
 * header (the server deduplicates on it). Any other gets 502 and says so. Bodies are read whole before
 * they are forwarded: a held request must be sendable later.
 */

export interface HttpFrontOptions {
  host: string;
  port: number;
  /** Larger bodies get 413: the frontman holds what it forwards. */
  maxBodyBytes: number;
  /** A host that does not accept the connection within this is taken as not reached. */
  connectTimeoutMs: number;
  /** What a 503 for a request held past its deadline advises. */
  retryAfterSeconds: number;
}

export interface Front {
  address: AddressInfo;
  close(): Promise<void>;
}

/** Headers of one hop (RFC 9110 7.6.1), never forwarded. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);
const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'TRACE']);

/** Whether sending the request twice has the effect of sending it once, so it may be replayed. */
export function mayReplay(method: string, headers: IncomingHttpHeaders): boolean {
  return IDEMPOTENT.has(method.toUpperCase()) || typeof headers['idempotency-key'] === 'string';
}

/** `headers` without the hop-by-hop ones, nor those the Connection header names. */
export function endToEnd(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  const named = new Set(
    String(headers.connection ?? '')
      .split(',')
      .map((token) => token.trim().toLowerCase())
      .filter((token) => token !== ''),
  );
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !HOP_BY_HOP.has(name) && !named.has(name)));
}

export async function startHttpFront(gate: ServiceGate, options: HttpFrontOptions, log: Logger): Promise<Front> {
  const server = createServer((req, res) => {
    const arrivedAt = Date.now();
    readBody(req, options.maxBodyBytes).then(
      (body) => gate.admit(new HeldRequest(req, res, body, options), arrivedAt),
      (error: Error) => answer(res, error instanceof BodyTooLarge ? 413 : 400, error.message),
    );
  });
  // Held requests wait on the frontman's own deadline, not on Node's defaults for slow clients.
  server.requestTimeout = 0;
  server.on('clientError', (error, socket) => {
    log.debug({ err: error }, 'malformed request');
    socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
  });
  server.listen(options.port, options.host);
  await once(server, 'listening');
  return {
    address: server.address() as AddressInfo,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

class HeldRequest implements Held {
  constructor(
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly body: Buffer,
    private readonly options: HttpFrontOptions,
  ) {}

  get bytes(): number {
    return this.body.length;
  }

  get gone(): boolean {
    return this.res.writableEnded || this.res.destroyed;
  }

  forward(upstream: Upstream, retry: () => void): Promise<void> {
    return new Promise((resolve) => {
      const { req, res } = this;
      let connected = false;
      let answered = false;
      const headers: IncomingHttpHeaders = {
        ...endToEnd(req.headers),
        'content-length': String(this.body.length),
        'x-forwarded-for': [req.headers['x-forwarded-for'], req.socket.remoteAddress].filter(Boolean).join(', '),
      };
      const up = request({ host: upstream.host, port: upstream.port, method: req.method, path: req.url, headers, agent: false });
      const connectTimer = setTimeout(
        () => up.destroy(new Error(`no connection to ${upstream.host}:${upstream.port} within ${this.options.connectTimeoutMs} ms`)),
        this.options.connectTimeoutMs,
      );
      up.on('socket', (socket) => socket.once('connect', () => ((connected = true), clearTimeout(connectTimer))));
      // The client left: so does its request to the service.
      const left = () => {
        if (!res.writableFinished) up.destroy();
        resolve();
      };
      res.once('close', left);
      up.on('response', (reply) => {
        answered = true;
        res.writeHead(reply.statusCode ?? 502, reply.statusMessage, endToEnd(reply.headers));
        reply.pipe(res);
        reply.once('end', () => resolve());
        reply.once('error', () => (res.destroy(), resolve()));
      });
      up.on('error', (error: NodeJS.ErrnoException) => {
        clearTimeout(connectTimer);
        // This try is over: a retry adds its own listener, and a client held for long would collect hundreds.
        res.off('close', left);
        if (answered) res.destroy();
        else if (!connected || mayReplay(req.method ?? 'GET', req.headers)) retry();
        else
          answer(
            res,
            502,
            `the connection to the service broke after the request was sent (${error.code ?? error.message}); it may have been applied, and a ${req.method} without an Idempotency-Key is not sent twice`,
          );
        resolve();
      });
      up.end(this.body);
    });
  }

  expire(reason: string): void {
    answer(this.res, 503, `${reason}; try again`, { 'retry-after': String(this.options.retryAfterSeconds) });
  }
}

function answer(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  const body = `${text}\n`;
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

class BodyTooLarge extends Error {}

async function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > max) throw new BodyTooLarge(`the body (${declared} bytes) is larger than the frontman holds (${max} bytes)`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) throw new BodyTooLarge(`the body is larger than the frontman holds (${max} bytes)`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
