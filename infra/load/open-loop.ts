import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { createLogger } from '../../core/log.js';
import { type WanEndpoint } from '../wan.js';

/*
 * Open-loop HTTP load from a WAN client's namespace, for testing what a client sees while a service is
 * frozen and moved: requests go out on a fixed schedule whether or not earlier ones were answered (a
 * closed-loop tool such as wrk, hey or autocannon waits for replies and so sends less exactly when the
 * service stalls, hiding the stall). Each request POSTs `RPUSH/<list>/<runId>-<index>` to webdis
 * (infra/images/build-server-images.ts), so the list read back afterwards shows which POSTs were applied
 * and how often.
 *
 * The generator is npm's loadtest 8.2.1, in its requests-per-second mode. What its source says (read in
 * node_modules/loadtest):
 *   - lib/pool.js start(): with requestsPerSecond, `new HighResolutionTimer(1000 / rps, () =>
 *     this.makeRequest())` and nothing else; makeRequest() takes a free client or adds a new one
 *     (`if (!this.freeClients.length) this.addClient()`), so no send ever waits for a reply;
 *     finishRequest() only puts the client back in the free list in this mode. `concurrency` is unused.
 *   - lib/hrtimer.js delayed(): tick k is aimed at start + k * interval (`diff = (Date.now() - this.start) -
 *     (this.counter - 1) * this.delayMs`); a late tick is followed at once (setImmediate) by the next, so
 *     the count stays on schedule and the send of a late tick lags its scheduled time.
 *   - No retries anywhere (lib/: no retry logic; the `recover` option is read and never used); with
 *     agentKeepAlive off, `params.agent = false`: a new connection per request, sent with Connection: close.
 *   - Latency: lib/httpClient.js makeRequest() calls `this.latency.begin()` (process.hrtime) when the timer
 *     fires, i.e. from the actual send, truncated to whole ms (lib/latency.js getElapsedMs). Its failures
 *     reach statusCallback without the request they belong to, its `timeout` is a socket idle timeout that
 *     does not abort the request, and lib/latency.js end() counts a request finished twice as two. So the
 *     runner (open-loop-runner.ts) keeps its own records through loadtest's requestGenerator hook (the
 *     send time, the end, the outcome) with a whole-request deadline that aborts; scheduleOf() below
 *     then rebuilds loadtest's schedule from the sends and measures latency from the scheduled time, and
 *     each send's lag behind it (sendLagMs).
 */
const log = createLogger('open-loop');

/** Names that go into a webdis path segment as they are. */
const PathSegment = z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'letters, digits and _ . : - only');

export const RunnerConfig = z.object({
  url: z.string().url(),
  rps: z.number().positive().max(5000),
  durationMs: z.number().int().positive(),
  /** The client's patience per request (the benchmark's load uses 5 s, as a measured client should). */
  timeoutMs: z.number().int().positive().max(60_000),
  list: PathSegment,
  runId: PathSegment,
});
export type OpenLoopOptions = z.infer<typeof RunnerConfig>;

/** What the runner reports per request: when it went out and when it settled (epoch ms, sub-ms). */
export const SentRequest = z.object({
  id: z.string(),
  index: z.number().int().nonnegative(),
  sentAt: z.number(),
  endAt: z.number(),
  status: z.number().int().optional(),
  /** e.g. ETIMEDOUT (the client's deadline), ECONNREFUSED, ECONNRESET. */
  error: z.string().optional(),
});
export type SentRequest = z.infer<typeof SentRequest>;

export interface RequestRecord {
  id: string;
  index: number;
  /** Epoch ms at which the request was due. */
  scheduledAt: number;
  /** How late the generator actually sent it (>= 0). */
  sendLagMs: number;
  /** From the scheduled time to the reply's end, or to the failure. */
  latencyMs: number;
  status?: number;
  error?: string;
}

export const RunnerLine = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('started'), at: z.number() }),
  SentRequest.extend({ kind: z.literal('request') }),
  z.object({
    kind: z.literal('done'),
    scheduled: z.number().int(),
    sent: z.number().int(),
    settled: z.number().int(),
    elapsedMs: z.number(),
    /** loadtest's own totals, for comparison only. */
    generator: z.object({ totalRequests: z.number(), totalErrors: z.number(), errorCodes: z.record(z.string(), z.number()) }).optional(),
  }),
]);
export type RunnerLine = z.infer<typeof RunnerLine>;

export interface LoadSummary {
  /** rps * duration: what the schedule called for. */
  scheduled: number;
  sent: number;
  /** Requests sent but never reported back by the runner (should be 0). */
  unsettled: number;
  /** No HTTP answer (timeout, refused, reset). */
  failed: number;
  non2xx: number;
  /** Ids answered with a 2xx. */
  acknowledged: string[];
  errors: Record<string, number>;
  /** Over requests that got an HTTP answer, from their scheduled time. */
  latencyMs: { p50: number; p99: number; max: number };
  /** How late the generator sent, over all sent requests. */
  sendLagMs: { p50: number; p99: number; max: number };
}

export interface LoadRun {
  options: OpenLoopOptions;
  records: RequestRecord[];
  summary: LoadSummary;
  elapsedMs: number;
}

export interface OpenLoopLoad {
  /** Resolves at the first send (epoch ms), so a test can act while the load runs. */
  started: Promise<number>;
  done: Promise<LoadRun>;
}

const RUNNER = fileURLToPath(new URL('./open-loop-runner.js', import.meta.url));

/** Starts the runner in `client`'s namespace; `done` resolves once every request has settled. */
export function startOpenLoopLoad(client: Pick<WanEndpoint, 'name' | 'spawn'>, options: OpenLoopOptions): OpenLoopLoad {
  const config = RunnerConfig.parse(options);
  const child = client.spawn(process.execPath, [RUNNER, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const { stdout, stderr } = child;
  if (stdout === null || stderr === null) throw new Error('the open-loop runner was spawned without pipes');
  log.info(
    { client: client.name, target: config.url, rps: config.rps, durationMs: config.durationMs, runId: config.runId },
    'open-loop load starting',
  );

  let stderrTail = '';
  stderr.setEncoding('utf8');
  stderr.on('data', (chunk: string) => (stderrTail = (stderrTail + chunk).slice(-4000)));
  let markStarted: (at: number) => void = () => undefined;
  let failStarted: (error: Error) => void = () => undefined;
  const started = new Promise<number>((resolve, reject) => {
    markStarted = resolve;
    failStarted = reject;
  });
  // A caller that awaits only `done` must not see an unhandled rejection from `started`.
  started.catch(() => undefined);

  const done = new Promise<LoadRun>((resolve, reject) => {
    const sentRequests: SentRequest[] = [];
    let end: Extract<RunnerLine, { kind: 'done' }> | undefined;
    let parseError: Error | undefined;
    const lines = createInterface({ input: stdout });
    lines.on('line', (line) => {
      if (line.trim() === '' || parseError !== undefined) return;
      let parsed: RunnerLine;
      try {
        parsed = RunnerLine.parse(JSON.parse(line));
      } catch (error) {
        parseError = new Error(`the open-loop runner printed a line that is not its protocol: ${line.slice(0, 200)}`, { cause: error });
        return;
      }
      if (parsed.kind === 'started') markStarted(parsed.at);
      else if (parsed.kind === 'request') {
        const { kind: _kind, ...sentRequest } = parsed;
        sentRequests.push(sentRequest);
      } else end = parsed;
    });
    const fail = (error: Error): void => {
      failStarted(error);
      reject(error);
    };
    child.once('error', (error) => fail(new Error(`could not start the open-loop runner in ${client.name}`, { cause: error })));
    // 'close' (not 'exit'): stdout has been read to its end.
    child.once('close', (code, signal) => {
      if (parseError !== undefined) return fail(parseError);
      if (code !== 0 || end === undefined) {
        return fail(
          new Error(`the open-loop runner in ${client.name} ended with ${signal ?? `code ${code}`}: ${stderrTail.trim().slice(-2000)}`),
        );
      }
      failStarted(new Error('the open-loop runner sent nothing'));
      const records = scheduleOf(sentRequests, config.rps);
      const summary = summarizeLoad(records, end.scheduled, end.sent);
      log.info(
        {
          client: client.name,
          runId: config.runId,
          scheduled: summary.scheduled,
          sent: summary.sent,
          failed: summary.failed,
          non2xx: summary.non2xx,
          acknowledged: summary.acknowledged.length,
          latencyMs: summary.latencyMs,
          generator: end.generator,
        },
        'open-loop load done',
      );
      resolve({ options: config, records, summary, elapsedMs: end.elapsedMs });
    });
  });
  return { started, done };
}

/** Runs the load to its end: see startOpenLoopLoad. */
export function runOpenLoopLoad(client: Pick<WanEndpoint, 'name' | 'spawn'>, options: OpenLoopOptions): Promise<LoadRun> {
  return startOpenLoopLoad(client, options).done;
}

/**
 * Each request's scheduled time, sending lag and latency from that time. loadtest's timer aims send i at
 * start + i * (1000 / rps) and is never early, so its start is the earliest `sentAt - i * interval` over all
 * sends (to within a timer tick: the first send itself comes a setImmediate after the start).
 */
export function scheduleOf(sent: readonly SentRequest[], rps: number): RequestRecord[] {
  const intervalMs = 1000 / rps;
  const start = Math.min(...sent.map((r) => r.sentAt - r.index * intervalMs));
  return [...sent]
    .sort((a, b) => a.index - b.index)
    .map(({ sentAt, endAt, ...r }) => {
      const scheduledAt = start + r.index * intervalMs;
      return { ...r, scheduledAt, sendLagMs: sentAt - scheduledAt, latencyMs: endAt - scheduledAt };
    });
}

/** Nearest-rank percentile (p in 0..100) of `values`; 0 for none. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] ?? 0;
}

function spread(values: readonly number[]): { p50: number; p99: number; max: number } {
  return { p50: percentile(values, 50), p99: percentile(values, 99), max: percentile(values, 100) };
}

export function summarizeLoad(records: readonly RequestRecord[], scheduled: number, sent: number): LoadSummary {
  const answered = records.filter((r) => r.status !== undefined);
  const errors: Record<string, number> = {};
  for (const r of records) if (r.error !== undefined) errors[r.error] = (errors[r.error] ?? 0) + 1;
  return {
    scheduled,
    sent,
    unsettled: sent - records.length,
    failed: records.length - answered.length,
    non2xx: answered.filter((r) => !isSuccess(r.status)).length,
    acknowledged: answered.filter((r) => isSuccess(r.status)).map((r) => r.id),
    errors,
    latencyMs: spread(answered.map((r) => r.latencyMs)),
    sendLagMs: spread(records.map((r) => r.sendLagMs)),
  };
}

function isSuccess(status: number | undefined): boolean {
  return status !== undefined && status >= 200 && status < 300;
}

const Lrange = z.object({ LRANGE: z.array(z.string()) });

/** GETs a URL, prints the body; exits non-zero on a failure or an error status. */
const HTTP_GET = `
fetch(process.argv[1], { signal: AbortSignal.timeout(10000) })
  .then(async (r) => { if (!r.ok) throw new Error('HTTP ' + r.status); process.stdout.write(await r.text()); })
  .catch((e) => { console.error(String(e.cause ?? e)); process.exit(1); });`;

/** The list as webdis holds it (GET /LRANGE/<list>/0/-1), read from `client`'s namespace. */
export async function readAppliedPosts(client: Pick<WanEndpoint, 'exec'>, baseUrl: string, list: string): Promise<string[]> {
  const url = new URL(`/LRANGE/${PathSegment.parse(list)}/0/-1`, baseUrl).toString();
  const { stdout } = await client.exec(process.execPath, ['-e', HTTP_GET, url]);
  try {
    return Lrange.parse(JSON.parse(stdout)).LRANGE;
  } catch (error) {
    throw new Error(`webdis at ${url} did not answer a list: ${stdout.slice(0, 200)}`, { cause: error });
  }
}

/**
 * Until webdis answers at `baseUrl` from `client`'s namespace (it listens once its redis answers; through a
 * frontman, once the frontman has found the service's host): the readiness every user of the load waits for.
 */
export async function waitForWebdis(client: Pick<WanEndpoint, 'exec'>, baseUrl: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await readAppliedPosts(client, baseUrl, 'warmup');
      return;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`webdis at ${baseUrl} did not answer within ${timeoutMs / 1000} s`, { cause: error });
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

export interface ExactlyOnceReport {
  acknowledged: number;
  /** Acknowledged ids applied exactly once. */
  appliedOnce: number;
  /** Ids applied two or more times, acknowledged or not: a defect. */
  duplicates: Array<{ id: string; count: number }>;
  /** Acknowledged (2xx) but not in the list: a defect. */
  missing: string[];
  /** Sent, applied, but the client never saw a 2xx: its fate was unknown to the client. Allowed. */
  appliedUnacknowledged: string[];
  /** In the list but never sent by this run: a defect (or a list shared with another run). */
  foreign: string[];
  ok: boolean;
}

/** Compares what the client was told (run) with what the server holds (applied: the list's items). */
export function exactlyOnce(run: Pick<LoadRun, 'records' | 'summary'>, applied: readonly string[]): ExactlyOnceReport {
  const counts = new Map<string, number>();
  for (const id of applied) counts.set(id, (counts.get(id) ?? 0) + 1);
  const acknowledged = new Set(run.summary.acknowledged);
  const sent = new Set(run.records.map((r) => r.id));
  const duplicates = [...counts].filter(([, n]) => n > 1).map(([id, count]) => ({ id, count }));
  const missing = [...acknowledged].filter((id) => !counts.has(id));
  const appliedOnce = [...acknowledged].filter((id) => counts.get(id) === 1).length;
  const appliedUnacknowledged = [...counts.keys()].filter((id) => sent.has(id) && !acknowledged.has(id));
  const foreign = [...counts.keys()].filter((id) => !sent.has(id));
  return {
    acknowledged: acknowledged.size,
    appliedOnce,
    duplicates,
    missing,
    appliedUnacknowledged,
    foreign,
    ok: duplicates.length === 0 && missing.length === 0 && foreign.length === 0,
  };
}
