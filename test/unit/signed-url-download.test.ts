import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import {
  DownloadSizeMismatchError,
  DownloadTooLargeError,
  SignedUrlRedirectError,
  ObjectChangedDuringDownloadError,
  SignedUrlNotFoundError,
  SignedUrlRejectedError,
  downloadSignedUrl,
} from '../../core/object-stores/signed-url-download.js';

const BODY = randomBytes(3 * 1024 * 1024 + 17);

/**
 * A stand-in object server on 127.0.0.1. Each request is answered by the next scripted behaviour (the last
 * one repeats), so a test can break the first response and let the resume succeed.
 */
type Behaviour =
  'redirect' | 'ok' | 'drop-half' | 'ignore-range' | 'stall' | 'forbidden' | 'missing' | 'changed' | 'server-error' | 'short-no-length';

let server: Server;
let base: string;
let script: Behaviour[] = [];
let seen: Array<{ range: string | undefined; ifMatch: string | undefined }> = [];
let dir: string;

function answer(request: IncomingMessage, response: ServerResponse): void {
  const behaviour = script.length > 1 ? script.shift()! : (script[0] ?? 'ok');
  const range = request.headers.range;
  seen.push({ range, ifMatch: request.headers['if-match'] });
  const etag = behaviour === 'changed' ? '"v2"' : '"v1"';
  if (behaviour === 'forbidden') {
    response.writeHead(403, { 'content-type': 'application/xml' });
    response.end(
      '<?xml version="1.0"?><Error><Code>AuthenticationFailed</Code><Message>Signature not valid in the specified time frame sig=abc</Message></Error>',
    );
    return;
  }
  if (behaviour === 'redirect') {
    response.writeHead(302, { location: `http://127.0.0.1:9/elsewhere${request.url ?? ''}` }).end();
    return;
  }
  if (behaviour === 'missing') {
    response.writeHead(404).end();
    return;
  }
  if (behaviour === 'server-error') {
    response.writeHead(503).end('busy');
    return;
  }
  if (request.headers['if-match'] !== undefined && request.headers['if-match'] !== etag) {
    response.writeHead(412).end();
    return;
  }
  let start = 0;
  const match = /^bytes=(\d+)-$/.exec(range ?? '');
  if (match !== null && behaviour !== 'ignore-range') start = Number(match[1]);
  const body = BODY.subarray(start);
  if (behaviour === 'short-no-length') {
    response.writeHead(200, { etag });
    response.end(body.subarray(0, 1000));
    return;
  }
  response.writeHead(start > 0 ? 206 : 200, {
    etag,
    'content-length': String(body.length),
    ...(start > 0 ? { 'content-range': `bytes ${start}-${BODY.length - 1}/${BODY.length}` } : {}),
  });
  if (behaviour === 'drop-half') {
    response.write(body.subarray(0, Math.floor(body.length / 2)), () => response.socket?.destroy());
    return;
  }
  if (behaviour === 'stall') {
    response.write(body.subarray(0, 4096));
    return;
  }
  response.end(body);
}

function url(path = '/bucket/object'): string {
  return `${base}${path}?X-Amz-Signature=deadbeef&X-Amz-Expires=60`;
}

function collector(): { sink: Writable; bytes(): Buffer } {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      callback();
    },
  });
  return { sink, bytes: () => Buffer.concat(chunks) };
}

describe('downloadSignedUrl', () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ums-download-'));
    server = createServer(answer);
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise((done) => server.close(done));
    await rm(dir, { recursive: true, force: true });
  });

  const fast = { minRetryDelayMs: 10 };

  it('downloads to a path', async () => {
    script = ['ok'];
    seen = [];
    const target = join(dir, 'whole');
    const result = await downloadSignedUrl(url(), target, { expectedSize: BODY.length, ...fast });
    assert.deepEqual(result, { bytesWritten: BODY.length, attempts: 1 });
    assert.deepEqual(await readFile(target), BODY);
  });

  it('resumes a dropped transfer with a Range request pinned to the ETag', async () => {
    script = ['drop-half', 'ok'];
    seen = [];
    const { sink, bytes } = collector();
    const result = await downloadSignedUrl(url(), sink, { expectedSize: BODY.length, ...fast });
    assert.equal(result.attempts, 2);
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(seen[1]?.range ?? '')?.[1]);
    assert.ok(resumedAt > 0 && resumedAt < BODY.length, 'the second request asks for the rest only');
    assert.equal(seen[1]?.ifMatch, '"v1"');
    assert.deepEqual(bytes(), BODY);
  });

  it('skips the bytes it already has when the server ignores Range', async () => {
    script = ['drop-half', 'ignore-range'];
    seen = [];
    const { sink, bytes } = collector();
    await downloadSignedUrl(url(), sink, { expectedSize: BODY.length, ...fast });
    assert.deepEqual(bytes(), BODY);
  });

  it('resumes a stalled transfer after the idle timeout', async () => {
    script = ['stall', 'ok'];
    seen = [];
    const { sink, bytes } = collector();
    const result = await downloadSignedUrl(url(), sink, { expectedSize: BODY.length, idleTimeoutMs: 200, ...fast });
    assert.equal(result.attempts, 2);
    assert.equal(seen[1]?.range, 'bytes=4096-');
    assert.deepEqual(bytes(), BODY);
  });

  it('retries server errors, then succeeds', async () => {
    script = ['server-error', 'server-error', 'ok'];
    const { sink, bytes } = collector();
    const result = await downloadSignedUrl(url(), sink, { ...fast });
    assert.equal(result.attempts, 3);
    assert.deepEqual(bytes(), BODY);
  });

  it('resumes a body that ended early without a Content-Length when the size is known', async () => {
    script = ['short-no-length', 'ok'];
    const { sink, bytes } = collector();
    await downloadSignedUrl(url(), sink, { expectedSize: BODY.length, ...fast });
    assert.deepEqual(bytes(), BODY);
  });

  it('maps 403 to SignedUrlRejectedError at once, without the URL query or signature in the message', async () => {
    script = ['forbidden'];
    seen = [];
    await assert.rejects(downloadSignedUrl(url(), collector().sink, { ...fast }), (error: unknown) => {
      assert.ok(error instanceof SignedUrlRejectedError);
      assert.equal(error.status, 403);
      assert.match(
        error.message,
        /^the signed URL was refused \(expired, forged or wrong permission\): HTTP 403 for http:\/\/127\.0\.0\.1:\d+\/bucket\/object: AuthenticationFailed/,
      );
      assert.doesNotMatch(error.message, /deadbeef|X-Amz-Signature|sig=abc/);
      return true;
    });
    assert.equal(seen.length, 1, 'a refused URL is not retried');
  });

  it('maps 404 to SignedUrlNotFoundError and removes the partial file', async () => {
    script = ['missing'];
    const target = join(dir, 'missing');
    await assert.rejects(downloadSignedUrl(url(), target, { ...fast }), SignedUrlNotFoundError);
    assert.equal(existsSync(target), false);
  });

  it('refuses to splice two versions when the object changes between attempts', async () => {
    script = ['drop-half', 'changed'];
    await assert.rejects(downloadSignedUrl(url(), collector().sink, { ...fast }), ObjectChangedDuringDownloadError);
  });

  it('fails with DownloadSizeMismatchError when the object is not the expected size', async () => {
    script = ['ok'];
    await assert.rejects(downloadSignedUrl(url(), collector().sink, { expectedSize: BODY.length - 1, ...fast }), DownloadSizeMismatchError);
  });

  it('gives up after its retries', async () => {
    script = ['server-error'];
    seen = [];
    await assert.rejects(downloadSignedUrl(url(), collector().sink, { retries: 2, ...fast }), /HTTP 503/);
    assert.equal(seen.length, 3);
  });

  it('stops when the caller aborts', async () => {
    script = ['stall'];
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('operator cancelled')), 100);
    await assert.rejects(downloadSignedUrl(url(), collector().sink, { signal: controller.signal, ...fast }), /operator cancelled/);
  });

  it('copies file:// URLs (the file store) and maps a missing file to SignedUrlNotFoundError', async () => {
    const source = join(dir, 'source.bin');
    await writeFile(source, BODY);
    const { sink, bytes } = collector();
    const result = await downloadSignedUrl(pathToFileURL(source).href, sink, { expectedSize: BODY.length });
    assert.equal(result.bytesWritten, BODY.length);
    assert.deepEqual(bytes(), BODY);
    await assert.rejects(downloadSignedUrl(pathToFileURL(join(dir, 'nope')).href, collector().sink), SignedUrlNotFoundError);
  });

  it("keeps the store's message and any other text of an error body out of its errors (only the error code)", async () => {
    script = ['forbidden'];
    await assert.rejects(downloadSignedUrl(url(), collector().sink, { ...fast }), (error: unknown) => {
      assert.ok(error instanceof SignedUrlRejectedError);
      assert.match(error.message, /: AuthenticationFailed$/);
      assert.doesNotMatch(error.message, /Signature not valid/);
      return true;
    });
    script = ['server-error'];
    await assert.rejects(downloadSignedUrl(url(), collector().sink, { retries: 0, ...fast }), (error: unknown) => {
      assert.doesNotMatch((error as Error).message, /busy/);
      return true;
    });
  });

  it('never follows a redirect: refused at once, without a request to where it points', async () => {
    script = ['redirect'];
    seen = [];
    await assert.rejects(downloadSignedUrl(url(), collector().sink, { ...fast }), (error: unknown) => {
      assert.ok(error instanceof SignedUrlRedirectError, String(error));
      assert.equal(error.status, 302);
      assert.doesNotMatch(error.message, /deadbeef|elsewhere/);
      return true;
    });
    assert.equal(seen.length, 1, 'not retried, not followed');
  });

  it('refuses an object over maxBytes, from its Content-Length or as it arrives', async () => {
    script = ['ok'];
    seen = [];
    await assert.rejects(downloadSignedUrl(url(), collector().sink, { maxBytes: 1024 * 1024, ...fast }), DownloadTooLargeError);
    assert.equal(seen.length, 1, 'not retried');
    script = ['short-no-length'];
    await assert.rejects(downloadSignedUrl(url(), collector().sink, { maxBytes: 999, ...fast }), DownloadTooLargeError);
    const source = join(dir, 'large.bin');
    await writeFile(source, BODY);
    await assert.rejects(downloadSignedUrl(pathToFileURL(source).href, collector().sink, { maxBytes: 1024 }), DownloadTooLargeError);
  });

  it('rejects URLs it cannot fetch without echoing them', async () => {
    await assert.rejects(downloadSignedUrl('not a url?sig=secret', collector().sink), (error: unknown) => {
      assert.ok(error instanceof TypeError);
      assert.doesNotMatch(error.message, /secret/);
      return true;
    });
    await assert.rejects(downloadSignedUrl('ftp://host/x?sig=secret', collector().sink), /unsupported URL scheme ftp:/);
  });
});
