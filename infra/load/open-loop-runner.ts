/**
 * The open-loop load generator's process, spawned by infra/load/open-loop.ts inside a WAN client's network
 * namespace (`node open-loop-runner.js '<config JSON>'`). It drives npm's `loadtest` in its requests-per-
 * second mode, which sends on a fixed timer without waiting for replies (see open-loop.ts for the source
 * lines), and keeps its own record of every request through loadtest's per-request hook
 * (requestGenerator): loadtest reports failures without saying which request failed, measures latency from
 * the actual send, and stops counting replies once its own count says it is done.
 *
 * Output on stdout, one JSON object per line (schemas in open-loop.ts): `{"kind":"started"}` at the first
 * send, `{"kind":"request",...}` as each request settles, then `{"kind":"done",...}`. Logs go to stderr.
 */
import { type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders, type RequestOptions } from 'node:http';
import { performance } from 'node:perf_hooks';
import { loadTest } from 'loadtest';
import { createLogger } from '../../core/log.js';
import { RunnerConfig, type RunnerLine } from './open-loop.js';

const log = createLogger('open-loop-runner');

/** The part of loadtest 8.2.1's options this runner uses (its index.d.ts is older than its code). */
interface LoadtestOptions {
  url: string;
  method: 'POST';
  requestsPerSecond: number;
  maxRequests: number;
  agentKeepAlive: false;
  quiet: true;
  /** lib/httpClient.js getRequest(): called as (options, params, lib.request, onResponse) for every request. */
  requestGenerator: (
    options: unknown,
    params: RequestOptions & { headers: OutgoingHttpHeaders },
    request: (params: RequestOptions, onResponse: (response: IncomingMessage) => void) => ClientRequest,
    onResponse: (response: IncomingMessage) => void,
  ) => ClientRequest;
}
interface LoadtestResult {
  totalRequests: number;
  totalErrors: number;
  errorCodes: Record<string, number>;
}
const runLoadtest = loadTest as unknown as (options: LoadtestOptions) => Promise<LoadtestResult>;

const config = RunnerConfig.parse(JSON.parse(process.argv[2] ?? 'null'));
const count = Math.round((config.rps * config.durationMs) / 1000);
let sent = 0;
let settled = 0;
let loadtestDone = false;
const allSettled: { resolve: () => void } = { resolve: () => undefined };
const settledPromise = new Promise<void>((resolve) => (allSettled.resolve = resolve));

function emit(line: RunnerLine): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

/** Epoch ms with sub-ms resolution (Date.now() has whole ms only). */
function nowEpoch(): number {
  return performance.timeOrigin + performance.now();
}

function checkSettled(): void {
  // All sent and all settled; or loadtest stopped short of `count` by its own reckoning (the record says so).
  if (settled === sent && (sent === count || loadtestDone)) allSettled.resolve();
}

// Called by loadtest's timer tick, synchronously, right before it ends the request: sentAt is the send.
// The scheduled times are derived from all sends afterwards (open-loop.ts scheduleOf).
const requestGenerator: LoadtestOptions['requestGenerator'] = (_options, params, request, onResponse) => {
  const sentAt = nowEpoch();
  const index = sent++;
  if (index === 0) emit({ kind: 'started', at: sentAt });
  const id = `${config.runId}-${index}`;
  const body = `RPUSH/${config.list}/${id}`;
  // Content-Length up front: loadtest would write its own body first and set the header too late (chunked).
  const req = request(
    { ...params, headers: { ...params.headers, 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) } },
    onResponse,
  );
  let done = false;
  const settle = (outcome: { status: number } | { error: string }): void => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    emit({ kind: 'request', id, index, sentAt, endAt: nowEpoch(), ...outcome });
    settled++;
    checkSettled();
  };
  // A whole-request deadline from the send (loadtest's own `timeout` is a socket idle timeout that neither
  // aborts the request nor stops a late reply from being counted a second time).
  const timer = setTimeout(() => {
    settle({ error: 'ETIMEDOUT' });
    req.destroy();
  }, config.timeoutMs);
  req.on('response', (response: IncomingMessage) => {
    response.on('end', () => settle({ status: response.statusCode ?? 0 }));
    response.on('error', (error: NodeJS.ErrnoException) => settle({ error: error.code ?? error.message }));
  });
  req.on('error', (error: NodeJS.ErrnoException) => settle({ error: error.code ?? error.message }));
  req.write(body);
  return req;
};

async function main(): Promise<void> {
  const started = performance.now();
  // Every request settles within timeoutMs of its send: this guards only against loadtest never sending some.
  const guard = setTimeout(() => allSettled.resolve(), config.durationMs + config.timeoutMs + 5000);
  let result: LoadtestResult | undefined;
  // loadtest resolves when its own count of replies reaches maxRequests, which may be never for a request
  // it lost track of (see the top of this file): its result is informational, our records are the outcome.
  void runLoadtest({
    url: config.url,
    method: 'POST',
    requestsPerSecond: config.rps,
    maxRequests: count,
    // agent: false, a new connection per request (Connection: close): a reply never waits for another.
    agentKeepAlive: false,
    quiet: true,
    requestGenerator,
  }).then(
    (r) => {
      result = r;
      loadtestDone = true;
      checkSettled();
    },
    (error: unknown) => {
      log.error({ err: error }, 'loadtest failed');
      loadtestDone = true;
      checkSettled();
    },
  );
  await settledPromise;
  clearTimeout(guard);
  emit({
    kind: 'done',
    scheduled: count,
    sent,
    settled,
    elapsedMs: performance.now() - started,
    ...(result !== undefined
      ? { generator: { totalRequests: result.totalRequests, totalErrors: result.totalErrors, errorCodes: result.errorCodes } }
      : {}),
  });
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    log.error({ err: error }, 'open-loop load failed');
    process.exit(1);
  },
);
