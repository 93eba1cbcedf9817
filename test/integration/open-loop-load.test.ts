/**
 * The open-loop load runner (infra/load/open-loop.ts) from a WAN client's namespace against Debian's webdis
 * (localhost/ums/webdis) published on a simulated host: every scheduled POST is sent and applied exactly
 * once; and, with the container paused (frozen, as during a checkpoint), requests still go out on schedule
 * and fail at the client's deadline instead of the sender slowing down. One host and a WAN of its own, no
 * stack services. Needs root, podman, runc and Debian's apt mirror for the first image build.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildWebdisImage, DEFAULT_WEBDIS_IMAGE, WEBDIS_PORT } from '../../infra/images/build-server-images.js';
import {
  exactlyOnce,
  readAppliedPosts,
  runOpenLoopLoad,
  startOpenLoopLoad,
  waitForWebdis,
  type LoadRun,
} from '../../infra/load/open-loop.js';
import { startPodmanHost, type PodmanHost } from '../../infra/podman-host.js';
import { createWan, type Wan, type WanEndpoint } from '../../infra/wan.js';

describe('open-loop load against webdis', { timeout: 180_000 }, () => {
  let base: string;
  let host: PodmanHost;
  let wan: Wan;
  let client: WanEndpoint;
  let baseUrl: string;
  const runId = `r${process.pid}`;

  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'ums-ol-'));
    wan = await createWan({ stackName: `ol-${process.pid}`, stackDir: base });
    host = await startPodmanHost({ name: 'olh', dir: join(base, 'h') });
    assert.ok(host.netns !== undefined, 'the host has a network namespace to join to the WAN');
    const onWan = await wan.attachHost('olh', host.netns);
    await buildWebdisImage(host.url, DEFAULT_WEBDIS_IMAGE, { env: host.env });
    await host.podman(['run', '-d', '--name', 'webdis', '-p', `${WEBDIS_PORT}:${WEBDIS_PORT}`, DEFAULT_WEBDIS_IMAGE]);
    client = await wan.addClient('load');
    baseUrl = `http://${onWan.address}:${WEBDIS_PORT}/`;
    await waitForWebdis(client, baseUrl, 10_000);
  });

  after(async () => {
    await wan?.destroy();
    await host?.destroy();
    if (base !== undefined) await rm(base, { recursive: true, force: true });
  });

  it('sends every scheduled POST and each acknowledged one is applied exactly once', async () => {
    const list = 'steady';
    const run = await runOpenLoopLoad(client, { url: baseUrl, rps: 100, durationMs: 2000, timeoutMs: 2000, list, runId });
    print('steady', run);
    assert.equal(run.summary.scheduled, 200);
    assert.equal(run.summary.sent, 200, 'every scheduled request sent');
    assert.equal(run.summary.unsettled, 0);
    assert.equal(run.summary.failed, 0, `no failures: ${JSON.stringify(run.summary.errors)}`);
    assert.equal(run.summary.non2xx, 0);
    assert.equal(run.summary.acknowledged.length, 200);
    const report = exactlyOnce(run, await readAppliedPosts(client, baseUrl, list));
    assert.deepEqual(report.duplicates, []);
    assert.deepEqual(report.missing, []);
    assert.deepEqual(report.foreign, []);
    assert.equal(report.appliedOnce, 200);
    assert.ok(report.ok);
  });

  it('keeps sending on schedule while the server is frozen, and requests time out at the client deadline', async () => {
    const list = 'frozen';
    const timeoutMs = 1000;
    await host.podman(['pause', 'webdis']);
    let run: LoadRun;
    try {
      const load = startOpenLoopLoad(client, { url: baseUrl, rps: 50, durationMs: 2000, timeoutMs, list, runId });
      await load.started;
      run = await load.done;
    } finally {
      await host.podman(['unpause', 'webdis']);
    }
    print('frozen', run);
    assert.equal(run.summary.sent, 100, 'open loop: the sender did not wait for replies');
    assert.equal(run.summary.failed, 100);
    assert.deepEqual(run.summary.errors, { ETIMEDOUT: 100 });
    // Sends spread over the schedule (index i due at i * 20 ms), not bunched behind a stalled reply.
    const first = run.records[0];
    const last = run.records.at(-1);
    assert.ok(first !== undefined && last !== undefined);
    assert.ok(last.scheduledAt - first.scheduledAt >= 1900, 'the schedule spans the whole duration');
    assert.ok(run.summary.sendLagMs.max < 200, `sends were on time (max lag ${run.summary.sendLagMs.max.toFixed(1)} ms)`);
    for (const r of run.records) {
      // From the scheduled time: the send lag plus the client's deadline (libuv's timers count whole ms from
      // a cached clock, so one can fire up to a ms early), plus a timer tick.
      assert.ok(r.latencyMs >= timeoutMs - 2 && r.latencyMs < timeoutMs + 300, `${r.id} failed at ${r.latencyMs.toFixed(1)} ms`);
    }
    // Once thawed, webdis may still apply what sat in its sockets: applied, never acknowledged (allowed).
    await new Promise((r) => setTimeout(r, 1000));
    const report = exactlyOnce(run, await readAppliedPosts(client, baseUrl, list));
    console.log(`frozen: applied after the thaw without acknowledgement: ${report.appliedUnacknowledged.length}`);
    assert.deepEqual(report.duplicates, []);
    assert.deepEqual(report.foreign, []);
    assert.equal(report.acknowledged, 0);
    assert.ok(report.ok);
  });
});

function print(what: string, run: LoadRun): void {
  const s = run.summary;
  const failedAt = run.records.filter((r) => r.error !== undefined).map((r) => r.latencyMs);
  console.log(
    `${what}: scheduled ${s.scheduled} sent ${s.sent} failed ${s.failed} non2xx ${s.non2xx} acknowledged ${s.acknowledged.length} ` +
      `errors ${JSON.stringify(s.errors)} latency p50/p99/max ${s.latencyMs.p50.toFixed(1)}/${s.latencyMs.p99.toFixed(1)}/${s.latencyMs.max.toFixed(1)} ms ` +
      `send lag p50/p99/max ${s.sendLagMs.p50.toFixed(2)}/${s.sendLagMs.p99.toFixed(2)}/${s.sendLagMs.max.toFixed(2)} ms in ${run.elapsedMs.toFixed(0)} ms` +
      (failedAt.length > 0
        ? `; failures at ${Math.min(...failedAt).toFixed(1)}-${Math.max(...failedAt).toFixed(1)} ms after their schedule`
        : ''),
  );
}
