import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { z } from 'zod';

/**
 * Stand-ins for the clouds' instance metadata services, which cannot run here (they answer only inside a VM of
 * their cloud, at 169.254.169.254 or metadata.google.internal, and no cloud is reachable from this machine).
 * Each serves its cloud's notice endpoints in the documented format, with the documented request checks
 * (azure-metadata-server.ts, gcp-metadata-server.ts, aws-metadata-server.ts), so that the agents' watchers
 * (agents/notices/) are tested against the format and not against themselves. What they cannot know about
 * the real services is said in each file.
 *
 * A test drives one in-process (its methods); the local stack, in another process, through its control
 * routes under /ums-control/ (no cloud has such a path):
 *   POST   /ums-control/notices        a notice, in the cloud's own terms (each server's NoticeInput) -> {"noticeId"}
 *   DELETE /ums-control/notices/<id>   withdraw it
 *   PUT    /ums-control/mode           {"mode": "documented" | "garbage"}: answer the notice endpoints with garbage
 *   GET    /ums-control/state          what the server holds and saw (approvals, tokens, long-polls)
 */

export type AnswerMode = 'documented' | 'garbage';

export interface SeenRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  at: number;
}

/** What a garbled answer looks like: an HTML error page from something that is not the metadata service. */
export const GARBAGE = '<html><head><title>502 Bad Gateway</title></head><body>upstream sent an invalid response</body></html>';

const MAX_BODY = 64 * 1024;
const KEPT_REQUESTS = 2_000;
const Mode = z.object({ mode: z.enum(['documented', 'garbage']) });

export class ControlInputError extends Error {
  override name = 'ControlInputError';
}

export abstract class MetadataServer {
  /** How the notice endpoints answer: as documented, or with garbage (an HTML page where JSON or a value belongs). */
  mode: AnswerMode = 'documented';
  /** The requests it received, oldest first (the last KEPT_REQUESTS), for tests to check what a watcher sent. */
  readonly requests: SeenRequest[] = [];
  private server: Server | undefined;
  private port = 0;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly host = '127.0.0.1') {}

  get url(): string {
    if (!this.server) throw new Error('the metadata server is not listening');
    return `http://${this.host}:${this.port}`;
  }

  /** Listens on `port` (0: any free one; after a stop(), the same one as before unless told another). */
  async start(port: number = this.port): Promise<string> {
    if (this.server) return this.url;
    const server = createServer((req, res) => void this.dispatch(req, res));
    server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, this.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('the metadata server has no TCP address');
    this.port = address.port;
    this.server = server;
    return this.url;
  }

  /** Stops answering, as a metadata service that went away: open connections (and long-polls) are cut. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    this.stopping();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }

  /** The cloud's own routes; `body` is the request body as text. */
  protected abstract handle(req: IncomingMessage, res: ServerResponse, url: URL, body: string): void;
  /** Control: a notice in the cloud's own terms (validated by the subclass); returns its id. */
  protected abstract addNotice(input: unknown): string;
  /** Control: withdraws a notice; false if there is none by that id. */
  abstract withdraw(noticeId: string): boolean;
  /** Control: what the server holds and saw. */
  abstract state(): unknown;
  /** Called when the server stops: end what waits (long-polls). */
  protected stopping(): void {}

  private async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let body: string;
    try {
      body = await readBody(req);
    } catch {
      send(res, 413, 'request body too large');
      return;
    }
    const url = new URL(req.url ?? '/', 'http://metadata');
    this.requests.push({ method: req.method ?? 'GET', path: `${url.pathname}${url.search}`, headers: req.headers, at: Date.now() });
    if (this.requests.length > KEPT_REQUESTS) this.requests.splice(0, this.requests.length - KEPT_REQUESTS);
    if (url.pathname.startsWith('/ums-control/')) {
      this.control(req, res, url, body);
      return;
    }
    try {
      this.handle(req, res, url, body);
    } catch (error) {
      send(res, 500, `metadata stand-in failed: ${(error as Error).message}`);
    }
  }

  private control(req: IncomingMessage, res: ServerResponse, url: URL, body: string): void {
    try {
      const path = url.pathname.slice('/ums-control/'.length);
      if (req.method === 'POST' && path === 'notices') {
        sendJson(res, 201, { noticeId: this.addNotice(parseJson(body)) });
      } else if (req.method === 'DELETE' && path.startsWith('notices/')) {
        const id = decodeURIComponent(path.slice('notices/'.length));
        if (this.withdraw(id)) send(res, 204, '');
        else send(res, 404, `no notice ${id}`);
      } else if (req.method === 'PUT' && path === 'mode') {
        this.mode = Mode.parse(parseJson(body)).mode;
        send(res, 204, '');
      } else if (req.method === 'GET' && path === 'state') {
        sendJson(res, 200, { mode: this.mode, ...(this.state() as object) });
      } else {
        send(res, 404, `no control route ${req.method} /ums-control/${path}`);
      }
    } catch (error) {
      send(res, error instanceof ControlInputError || error instanceof z.ZodError ? 400 : 500, (error as Error).message);
    }
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new Error('too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function parseJson(body: string): unknown {
  try {
    return JSON.parse(body) as unknown;
  } catch {
    throw new ControlInputError('the body is not JSON');
  }
}

export function send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', ...headers });
  res.end(body);
}

export function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  send(res, status, JSON.stringify(value), { 'Content-Type': 'application/json; charset=utf-8', ...headers });
}

/** A header's value (the first, if sent twice). */
export function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}
