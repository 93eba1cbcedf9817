import { createReadStream, createWriteStream } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import pRetry, { AbortError } from 'p-retry';
import { createLogger } from '../log.js';

const log = createLogger('signed-url-download');

/** The object store refused the URL: it expired, was altered, or does not grant reading this object. */
export class SignedUrlRejectedError extends Error {
  constructor(
    readonly status: number,
    readonly target: string,
    detail: string,
  ) {
    super(
      `the signed URL was refused (expired, forged or wrong permission): HTTP ${status} for ${target}${detail === '' ? '' : `: ${detail}`}`,
    );
    this.name = 'SignedUrlRejectedError';
  }
}

/** The URL was accepted but names no object (deleted, or never uploaded). */
export class SignedUrlNotFoundError extends Error {
  constructor(readonly target: string) {
    super(`the signed URL names an object that does not exist: ${target}`);
    this.name = 'SignedUrlNotFoundError';
  }
}

/** The object was replaced between two attempts of one download; resuming would splice two versions. */
export class ObjectChangedDuringDownloadError extends Error {
  constructor(readonly target: string) {
    super(`the object changed while it was being downloaded (its ETag no longer matches): ${target}`);
    this.name = 'ObjectChangedDuringDownloadError';
  }
}

export class DownloadSizeMismatchError extends Error {
  constructor(
    readonly target: string,
    readonly expectedSize: number,
    readonly actualSize: number,
  ) {
    super(`${target} has ${actualSize} bytes, expected ${expectedSize}: it was truncated or replaced`);
    this.name = 'DownloadSizeMismatchError';
  }
}

/** The store answered with a redirect: never followed, since only the pinned URL may be fetched. */
export class SignedUrlRedirectError extends Error {
  constructor(
    readonly status: number,
    readonly target: string,
  ) {
    super(`the store answered HTTP ${status} (a redirect), which is never followed: ${target}`);
    this.name = 'SignedUrlRedirectError';
  }
}

/** The object is larger than the caller allows (e.g. a manifest over 1 MiB). */
export class DownloadTooLargeError extends Error {
  constructor(
    readonly target: string,
    readonly maxBytes: number,
  ) {
    super(`${target} is larger than the ${maxBytes} bytes allowed`);
    this.name = 'DownloadTooLargeError';
  }
}

export interface DownloadOptions {
  /** Bytes the object must have; a longer or shorter object fails with DownloadSizeMismatchError. */
  expectedSize?: number;
  /** At most this many bytes (checked against Content-Length, then as they arrive): DownloadTooLargeError. */
  maxBytes?: number;
  /** Called after each chunk with the total bytes written so far. */
  onProgress?: (bytesWritten: number, expectedSize: number | undefined) => void;
  signal?: AbortSignal;
  /** Further attempts after the first, each resuming where the last stopped. Default 6. */
  retries?: number;
  /** First backoff delay; doubles per attempt up to 10 s. Default 500 ms. */
  minRetryDelayMs?: number;
  /** An attempt that receives nothing for this long is abandoned and resumed. Default 60 s. */
  idleTimeoutMs?: number;
}

export interface DownloadResult {
  bytesWritten: number;
  attempts: number;
}

/**
 * Streams the object behind a signed URL (https/http, or file:// from the file store) into a file or a
 * Writable, with bounded memory. A broken or stalled transfer is resumed with a Range request from the
 * last byte written (pinned to the first response's ETag with If-Match), with exponential backoff.
 *
 * A path destination is created or truncated, closed on success and removed on failure. A Writable
 * destination is written to but never ended or destroyed: the caller owns it (e.g. a hashing stream that
 * it ends after this resolves).
 *
 * The URL itself is a secret (anyone holding it can read the object): it never appears in logs or errors,
 * which name only its scheme, host and path.
 */
export async function downloadSignedUrl(
  url: string,
  destination: string | Writable,
  options: DownloadOptions = {},
): Promise<DownloadResult> {
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    throw new TypeError('downloadSignedUrl: the signed URL is not a valid absolute URL');
  }
  const where = `${target.protocol}//${target.host}${target.pathname}`;
  if (!['http:', 'https:', 'file:'].includes(target.protocol)) {
    throw new TypeError(`downloadSignedUrl: unsupported URL scheme ${target.protocol} (${where})`);
  }

  const ownsSink = typeof destination === 'string';
  const sink = typeof destination === 'string' ? createWriteStream(destination, { flags: 'w', mode: 0o600 }) : destination;
  // An error on our own file stream must not go unhandled while no write is waiting for it.
  const sinkError = ownsSink ? once(sink, 'error').then(([error]: unknown[]) => error) : undefined;
  sinkError?.catch(() => undefined);
  const state: TransferState = { written: 0, etag: undefined, attempts: 0 };

  try {
    await pRetry(
      async () => {
        state.attempts += 1;
        if (target.protocol === 'file:') await copyFromFile(target, where, sink, state, options);
        else await fetchAttempt(url, where, sink, state, options);
      },
      {
        retries: options.retries ?? 6,
        minTimeout: options.minRetryDelayMs ?? 500,
        factor: 2,
        maxTimeout: 10_000,
        ...(options.signal !== undefined ? { signal: options.signal } : {}),
        onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
          log.warn(
            { target: where, attempt: attemptNumber, retriesLeft, bytesWritten: state.written, error: error.message },
            'download attempt failed; resuming',
          );
        },
      },
    );
    if (options.expectedSize !== undefined && state.written !== options.expectedSize) {
      throw new DownloadSizeMismatchError(where, options.expectedSize, state.written);
    }
    if (ownsSink) {
      sink.end();
      await finished(sink);
    }
    return { bytesWritten: state.written, attempts: state.attempts };
  } catch (error) {
    if (typeof destination === 'string') {
      sink.destroy();
      await unlink(destination).catch(() => undefined);
    }
    throw error;
  }
}

interface TransferState {
  written: number;
  etag: string | undefined;
  attempts: number;
}

async function fetchAttempt(url: string, where: string, sink: Writable, state: TransferState, options: DownloadOptions): Promise<void> {
  const attempt = new AbortController();
  const signal = options.signal !== undefined ? AbortSignal.any([options.signal, attempt.signal]) : attempt.signal;
  const idleMs = options.idleTimeoutMs ?? 60_000;
  let idle = setTimeout(() => attempt.abort(new Error(`no data for ${idleMs} ms`)), idleMs);
  const rearm = (): void => {
    clearTimeout(idle);
    idle = setTimeout(() => attempt.abort(new Error(`no data for ${idleMs} ms`)), idleMs);
  };
  try {
    const headers: Record<string, string> = {};
    if (state.written > 0) {
      headers.range = `bytes=${state.written}-`;
      if (state.etag !== undefined) headers['if-match'] = state.etag;
    }
    let response: Response;
    try {
      // Never follow a redirect: the URL was checked against where the artifact is, its target was not.
      response = await fetch(url, { headers, signal, redirect: 'manual' });
    } catch (error) {
      throw attemptError(error, signal, options.signal);
    }
    rearm();

    if (response.type === 'opaqueredirect' || (response.status >= 300 && response.status < 400 && response.status !== 304)) {
      await response.body?.cancel();
      throw new AbortError(new SignedUrlRedirectError(response.status, where));
    }
    if (response.status === 401 || response.status === 403) {
      throw new AbortError(new SignedUrlRejectedError(response.status, where, await errorDetail(response)));
    }
    if (response.status === 404) {
      await response.body?.cancel();
      throw new AbortError(new SignedUrlNotFoundError(where));
    }
    if (response.status === 412 && headers['if-match'] !== undefined) {
      await response.body?.cancel();
      throw new AbortError(new ObjectChangedDuringDownloadError(where));
    }
    if (response.status === 416 && state.written > 0 && state.written === options.expectedSize) {
      await response.body?.cancel();
      return;
    }
    if (response.status === 408 || response.status === 429 || response.status >= 500) {
      throw new Error(`HTTP ${response.status} from ${where}: ${await errorDetail(response)}`);
    }
    if (response.status !== 200 && response.status !== 206) {
      throw new AbortError(new Error(`unexpected HTTP ${response.status} from ${where}: ${await errorDetail(response)}`));
    }

    // Bytes already written that this response repeats: all of them if the server ignored the Range header.
    let skip = 0;
    if (response.status === 206) {
      const start = Number(/^bytes (\d+)-/.exec(response.headers.get('content-range') ?? '')?.[1] ?? NaN);
      if (!Number.isSafeInteger(start) || start > state.written) {
        await response.body?.cancel();
        throw new AbortError(new Error(`HTTP 206 from ${where} without a usable Content-Range`));
      }
      skip = state.written - start;
    } else {
      skip = state.written;
      const length = Number(response.headers.get('content-length') ?? NaN);
      if (options.maxBytes !== undefined && Number.isSafeInteger(length) && length > options.maxBytes) {
        await response.body?.cancel();
        throw new AbortError(new DownloadTooLargeError(where, options.maxBytes));
      }
      if (options.expectedSize !== undefined && Number.isSafeInteger(length) && length !== options.expectedSize) {
        await response.body?.cancel();
        throw new AbortError(new DownloadSizeMismatchError(where, options.expectedSize, length));
      }
    }
    state.etag ??= response.headers.get('etag') ?? undefined;

    if (response.body !== null) {
      try {
        for await (const piece of response.body) {
          rearm();
          let chunk = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
          if (skip > 0) {
            const dropped = Math.min(skip, chunk.length);
            skip -= dropped;
            chunk = chunk.subarray(dropped);
            if (chunk.length === 0) continue;
          }
          if (options.expectedSize !== undefined && state.written + chunk.length > options.expectedSize) {
            throw new AbortError(new DownloadSizeMismatchError(where, options.expectedSize, state.written + chunk.length));
          }
          if (options.maxBytes !== undefined && state.written + chunk.length > options.maxBytes) {
            throw new AbortError(new DownloadTooLargeError(where, options.maxBytes));
          }
          await write(sink, chunk);
          state.written += chunk.length;
          options.onProgress?.(state.written, options.expectedSize);
        }
      } catch (error) {
        if (error instanceof AbortError) throw error;
        throw attemptError(error, signal, options.signal);
      }
    }
    if (options.expectedSize !== undefined && state.written < options.expectedSize) {
      // A body that ended early without a transport error (no Content-Length): resume from here.
      throw new Error(`the response from ${where} ended after ${state.written} of ${options.expectedSize} bytes`);
    }
  } finally {
    clearTimeout(idle);
  }
}

async function copyFromFile(target: URL, where: string, sink: Writable, state: TransferState, options: DownloadOptions): Promise<void> {
  const source = createReadStream(fileURLToPath(target), { start: state.written });
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      options.signal?.throwIfAborted();
      if (options.expectedSize !== undefined && state.written + chunk.length > options.expectedSize) {
        throw new AbortError(new DownloadSizeMismatchError(where, options.expectedSize, state.written + chunk.length));
      }
      if (options.maxBytes !== undefined && state.written + chunk.length > options.maxBytes) {
        throw new AbortError(new DownloadTooLargeError(where, options.maxBytes));
      }
      await write(sink, chunk);
      state.written += chunk.length;
      options.onProgress?.(state.written, options.expectedSize);
    }
  } catch (error) {
    if (error instanceof Error && 'code' in error && error.code === 'ENOENT') {
      throw new AbortError(new SignedUrlNotFoundError(where));
    }
    throw error;
  } finally {
    source.destroy();
  }
}

async function write(sink: Writable, chunk: Buffer): Promise<void> {
  if (sink.destroyed || sink.errored !== null) {
    throw new AbortError(sink.errored ?? new Error('the download destination was closed'));
  }
  if (!sink.write(chunk)) {
    // once() rejects if the sink emits 'error' instead of 'drain'.
    await once(sink, 'drain').catch((error: unknown) => {
      throw new AbortError(error instanceof Error ? error : new Error(String(error)));
    });
  }
}

/** Transport failures are retried; a cancellation by the caller is not. */
function attemptError(error: unknown, signal: AbortSignal, callerSignal: AbortSignal | undefined): Error {
  if (callerSignal?.aborted === true) {
    const reason: unknown = callerSignal.reason;
    return new AbortError(reason instanceof Error ? reason : new Error('download aborted'));
  }
  if (signal.aborted) {
    const reason: unknown = signal.reason;
    return reason instanceof Error ? reason : new Error('download attempt stalled');
  }
  return error instanceof Error ? error : new Error(String(error));
}

/**
 * The store's error code from the body (S3/Azure/GCS send XML, e.g. AuthenticationFailed), never its
 * message or any other text of the body: what a store (or whoever answers at its address) sends must not
 * travel on into errors, logs and events.
 */
async function errorDetail(response: Response): Promise<string> {
  const text = await response.text().catch(() => '');
  return /<Code>([A-Za-z0-9._-]{1,64})<\/Code>/.exec(text.slice(0, 4096))?.[1] ?? '';
}
