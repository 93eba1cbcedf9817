/**
 * The pure parts of the open-loop load runner (infra/load/open-loop.ts): the schedule rebuilt from the
 * sends, percentiles, the summary, and the exactly-once comparison of what the client was told with what
 * the server holds.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { exactlyOnce, percentile, RunnerLine, scheduleOf, summarizeLoad, type SentRequest } from '../../infra/load/open-loop.js';

const T0 = 1_800_000_000_000;

function sentRequest(index: number, lagMs: number, tookMs: number, outcome: { status: number } | { error: string }): SentRequest {
  // 100 rps: one every 10 ms.
  const sentAt = T0 + index * 10 + lagMs;
  return { id: `r-${index}`, index, sentAt, endAt: sentAt + tookMs, ...outcome };
}

describe('percentile (nearest rank)', () => {
  it('picks the value at rank ceil(p/100 * n)', () => {
    const values = Array.from({ length: 100 }, (_, i) => 100 - i); // 100..1, unsorted on purpose
    assert.equal(percentile(values, 50), 50);
    assert.equal(percentile(values, 99), 99);
    assert.equal(percentile(values, 100), 100);
    assert.equal(percentile(values, 0), 1);
  });

  it('handles one value and none', () => {
    assert.equal(percentile([7], 50), 7);
    assert.equal(percentile([7], 99), 7);
    assert.equal(percentile([], 99), 0);
  });

  it('takes the upper value of an even split', () => {
    assert.equal(percentile([1, 2, 3, 4], 50), 2);
    assert.equal(percentile([1, 2, 3, 4], 51), 3);
  });
});

describe('scheduleOf', () => {
  it("rebuilds the generator's schedule from the earliest send and measures from it", () => {
    // Send 0 came 2 ms after the timer's start, send 1 on time, send 2 late by 15 ms (a stalled event loop).
    const records = scheduleOf(
      [sentRequest(2, 15, 5, { status: 200 }), sentRequest(0, 2, 5, { status: 200 }), sentRequest(1, 0, 30, { status: 200 })],
      100,
    );
    assert.deepEqual(
      records.map((r) => r.index),
      [0, 1, 2],
    );
    assert.deepEqual(
      records.map((r) => r.scheduledAt - T0),
      [0, 10, 20],
    );
    assert.deepEqual(
      records.map((r) => r.sendLagMs),
      [2, 0, 15],
    );
    // Latency from the scheduled time: lag plus the time the request took.
    assert.deepEqual(
      records.map((r) => r.latencyMs),
      [7, 30, 20],
    );
  });

  it('keeps the outcome of each request', () => {
    const [record] = scheduleOf([sentRequest(0, 0, 1000, { error: 'ETIMEDOUT' })], 50);
    assert.equal(record?.error, 'ETIMEDOUT');
    assert.equal(record?.status, undefined);
    assert.equal(record?.latencyMs, 1000);
  });
});

describe('summarizeLoad', () => {
  const records = scheduleOf(
    [
      sentRequest(0, 0, 4, { status: 200 }),
      sentRequest(1, 0, 6, { status: 200 }),
      sentRequest(2, 0, 8, { status: 503 }),
      sentRequest(3, 0, 1000, { error: 'ETIMEDOUT' }),
      sentRequest(4, 0, 1, { error: 'ECONNREFUSED' }),
    ],
    100,
  );

  it('counts failures (no HTTP answer), non-2xx and acknowledged ids', () => {
    const summary = summarizeLoad(records, 6, 6);
    assert.equal(summary.scheduled, 6);
    assert.equal(summary.sent, 6);
    assert.equal(summary.unsettled, 1, 'one sent request was never reported');
    assert.equal(summary.failed, 2);
    assert.equal(summary.non2xx, 1);
    assert.deepEqual(summary.acknowledged, ['r-0', 'r-1']);
    assert.deepEqual(summary.errors, { ETIMEDOUT: 1, ECONNREFUSED: 1 });
  });

  it('takes latency over answered requests only', () => {
    const { latencyMs } = summarizeLoad(records, 5, 5);
    assert.deepEqual(latencyMs, { p50: 6, p99: 8, max: 8 });
  });
});

describe('exactlyOnce', () => {
  const records = scheduleOf(
    [
      sentRequest(0, 0, 4, { status: 200 }),
      sentRequest(1, 0, 4, { status: 200 }),
      sentRequest(2, 0, 4, { status: 200 }),
      sentRequest(3, 0, 1000, { error: 'ETIMEDOUT' }),
      sentRequest(4, 0, 1000, { error: 'ETIMEDOUT' }),
    ],
    100,
  );
  const run = { records, summary: summarizeLoad(records, 5, 5) };

  it('passes when every acknowledged id is applied once, unacknowledged ones at most once', () => {
    const report = exactlyOnce(run, ['r-0', 'r-3', 'r-1', 'r-2']);
    assert.equal(report.acknowledged, 3);
    assert.equal(report.appliedOnce, 3);
    assert.deepEqual(report.duplicates, []);
    assert.deepEqual(report.missing, []);
    assert.deepEqual(report.appliedUnacknowledged, ['r-3'], 'applied although the client timed out: allowed, counted');
    assert.deepEqual(report.foreign, []);
    assert.ok(report.ok);
  });

  it('flags a duplicate, acknowledged or not', () => {
    const report = exactlyOnce(run, ['r-0', 'r-1', 'r-1', 'r-2', 'r-4', 'r-4', 'r-4']);
    assert.deepEqual(report.duplicates, [
      { id: 'r-1', count: 2 },
      { id: 'r-4', count: 3 },
    ]);
    assert.equal(report.appliedOnce, 2);
    assert.equal(report.ok, false);
  });

  it('flags an acknowledged id that is missing', () => {
    const report = exactlyOnce(run, ['r-0', 'r-2']);
    assert.deepEqual(report.missing, ['r-1']);
    assert.equal(report.ok, false);
  });

  it('flags an id that this run never sent', () => {
    const report = exactlyOnce(run, ['r-0', 'r-1', 'r-2', 'other-7']);
    assert.deepEqual(report.foreign, ['other-7']);
    assert.equal(report.ok, false);
  });
});

describe("the runner's output lines", () => {
  it('parse as the protocol and refuse anything else', () => {
    const line = { kind: 'request', id: 'r-0', index: 0, sentAt: T0, endAt: T0 + 3, status: 200 };
    assert.deepEqual(RunnerLine.parse(line), line);
    assert.throws(() => RunnerLine.parse({ kind: 'request', id: 'r-0', index: -1, sentAt: T0, endAt: T0 }));
    assert.throws(() => RunnerLine.parse({ kind: 'progress' }));
  });
});
