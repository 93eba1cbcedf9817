import { request, type IncomingMessage } from 'node:http';
import { PassThrough, Readable } from 'node:stream';
import { EngineError } from './container-engine.js';

/**
 * One transport and one error model for the engines' REST APIs (Podman's libpod API and Docker's Engine API
 * both speak HTTP on a unix socket and answer errors as JSON with a `message`). Every failure to reach the
 * engine, and every non-2xx answer read with `json`, becomes an EngineError naming the operation.
 */
export interface EngineTransportOptions {
  socketPath: string;
  /** Prepended to every path, e.g. /v4.0.0/libpod or /v1.41. */
  prefix: string;
  /** How the engine is named in errors. */
  where: string;
  /** Timeout for requests that do not opt out of it. */
  requestTimeoutMs: number;
}

export interface EngineResponse {
  status: number;
  body: IncomingMessage;
}

export interface EngineRequest {
  /** false: no timeout (checkpoint, restore, image transfers take as long as they take). */
  timeout?: false;
  body?: Readable;
  headers?: Record<string, string>;
}

export class EngineTransport {
  constructor(private readonly options: EngineTransportOptions) {}

  get where(): string {
    return this.options.where;
  }

  call(operation: string, method: string, path: string, extra: EngineRequest = {}): Promise<EngineResponse> {
    const { socketPath, prefix, where, requestTimeoutMs } = this.options;
    return new Promise((resolve, reject) => {
      const req = request({ socketPath, method, path: `${prefix}${path}`, headers: { Host: 'd', ...extra.headers } }, (res) =>
        resolve({ status: res.statusCode ?? 0, body: res }),
      );
      if (extra.timeout !== false) {
        req.setTimeout(requestTimeoutMs, () =>
          req.destroy(new EngineError(operation, 0, `no answer from ${where} within ${requestTimeoutMs} ms`)),
        );
      }
      req.once('error', (error) =>
        reject(
          error instanceof EngineError ? error : new EngineError(operation, 0, `cannot reach ${where}: ${error.message}`, { cause: error }),
        ),
      );
      if (extra.body !== undefined) {
        extra.body.once('error', (error) =>
          req.destroy(new EngineError(operation, 0, `reading the request body failed: ${error.message}`, { cause: error })),
        );
        extra.body.pipe(req);
      } else {
        req.end();
      }
    });
  }

  /** A request whose 2xx answer is JSON; anything else is an EngineError. */
  async json<T>(operation: string, method: string, path: string, extra: EngineRequest = {}): Promise<T> {
    return expectJson<T>(await this.call(operation, method, path, extra), operation);
  }

  /** A JSON request body, with its length. */
  static jsonBody(value: unknown): Required<Pick<EngineRequest, 'body' | 'headers'>> {
    const text = JSON.stringify(value);
    return {
      body: Readable.from([text]),
      headers: { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(text)) },
    };
  }
}

export async function readBody(res: IncomingMessage, limit = 4 * 1024 * 1024): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res) {
    const buf = chunk as Buffer;
    size += buf.length;
    if (size > limit) {
      res.destroy();
      break;
    }
    chunks.push(buf);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export async function expectJson<T>(res: EngineResponse, operation: string): Promise<T> {
  if (res.status < 200 || res.status >= 300) throw await toEngineError(res, operation);
  const text = await readBody(res.body);
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new EngineError(operation, res.status, `unparseable response: ${text.slice(0, 500)}`);
  }
}

/** Podman's errors are {"cause","message","response"}, Docker's {"message"}; the message already includes the cause. */
export async function toEngineError(res: EngineResponse, operation: string): Promise<EngineError> {
  const text = await readBody(res.body, 64 * 1024).catch(() => '');
  let detail = text.trim();
  try {
    const parsed = JSON.parse(text) as { message?: unknown; cause?: unknown };
    if (typeof parsed.message === 'string' && parsed.message !== '') detail = parsed.message;
    else if (typeof parsed.cause === 'string') detail = parsed.cause;
  } catch {
    // Not JSON: keep the raw text.
  }
  return new EngineError(operation, res.status, detail === '' ? 'no error detail from the engine' : detail);
}

/** Drains an answer whose body does not matter, so the socket is freed. */
export function discard(res: EngineResponse): void {
  res.body.resume();
}

/**
 * A response body handed out as a PassThrough, so that a connection that drops mid-archive surfaces as an
 * error on the stream the caller holds, instead of a silent early end that would look like a short but
 * valid tar (also when the body is shorter than the Content-Length the engine announced).
 */
export function streamBody(res: EngineResponse, operation: string): Readable {
  const out = new PassThrough({ highWaterMark: 1024 * 1024 });
  const expected = Number(res.body.headers['content-length'] ?? NaN);
  let received = 0;
  res.body.on('data', (chunk: Buffer) => {
    received += chunk.length;
  });
  res.body.once('error', (error) =>
    out.destroy(new EngineError(operation, 200, `archive stream broke: ${error.message}`, { cause: error })),
  );
  res.body.once('aborted', () => out.destroy(new EngineError(operation, 200, 'archive stream aborted by the engine')));
  res.body.once('end', () => {
    if (Number.isFinite(expected) && received !== expected) {
      out.destroy(new EngineError(operation, 200, `archive truncated: ${received} of ${expected} bytes`));
    }
  });
  out.once('close', () => {
    if (!res.body.complete) res.body.destroy();
  });
  res.body.pipe(out);
  return out;
}

/** A path segment (a container, image or volume name or id). */
export function enc(segment: string): string {
  return encodeURIComponent(segment);
}
