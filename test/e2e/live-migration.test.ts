import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectNatsBus, type NatsEventBus } from '../../core/nats-event-bus.js';
import { BrokerClient } from '../broker-client.js';
import { openObjectStore } from '../../core/object-stores/open-object-store.js';
import { loadOrCreateSealingKey } from '../../agents/sealing-key.js';
import { chunkKey, Manifest, manifestKey } from '../../core/checkpoint-artifact.js';
import { ChunkOpener } from '../../core/checkpoint-sealing.js';
import type { EventOf } from '../../core/events.js';
import { COUNTER_MARKER_PATH } from '../../infra/images/build-counter-image.js';
import { continuity, followTicks, joinTicks, readTicks, type Tick } from '../../infra/images/counter-output.js';
import { AWS_HOST, DEFAULT_HOSTS, startLocalStack, type LocalStack } from '../../infra/local-stack.js';
import { runCounter, TICK_MS } from './counter-container.js';
import { umsJson, umsText } from './ums-cli.js';
import type { PodmanHost } from '../../infra/podman-host.js';

/**
 * The end-to-end slice: the real stack (nats-server, Azurite, the GCS emulator, the functions under the
 * functions-framework, the bridge, two Podman hosts with runc + CRIU, two agents) and the real CLI.
 * Nothing is mocked. Each test starts its own container, so the tests do not depend on each other.
 */
const AZURE = 'azure-eastus-1';
const GCP = 'gcp-us-central1-1';
const AWS = 'aws-us-east-1';

let stack: LocalStack;
let bus: NatsEventBus;
let azure: PodmanHost;
let gcp: PodmanHost;
let aws: PodmanHost;

interface MigrateResult {
  code: number;
  result: {
    migrationId?: string;
    state: string;
    code?: string;
    reason?: string;
    runningOn?: string | null;
    timeline?: { frozenMs: number; totalMs: number; archiveBytes: number };
  };
}

async function ums(args: string[]): Promise<MigrateResult> {
  const { code, json } = await umsJson<MigrateResult['result']>(stack.info, args);
  return { code, result: json };
}

/** "name state" for every container on the host (`podman ps` templates print a human status, JSON the state). */
const names = async (host: PodmanHost): Promise<string[]> =>
  (JSON.parse((await host.podman(['ps', '-a', '--format', 'json'])).stdout) as Array<{ Names: string[]; State: string }>).map(
    (c) => `${c.Names[0] ?? '?'} ${c.State}`,
  );

/** Asserts that the container runs on exactly one of the two hosts, and returns which. */
async function runningExactlyOnce(name: string): Promise<PodmanHost> {
  const where = [];
  for (const host of [azure, gcp, aws]) {
    const entries = await names(host);
    if (entries.some((entry) => entry === `${name} running`)) where.push(host);
  }
  assert.equal(where.length, 1, `${name} should run on exactly one host, runs on ${where.map((h) => h.name).join(', ') || 'none'}`);
  return where[0] as PodmanHost;
}

/** Migrates while following the source's output; returns the ticks from both sides, joined. */
async function migrateAndWatch(
  name: string,
  from: PodmanHost,
  to: PodmanHost,
  toAgent: string,
): Promise<{ run: MigrateResult; ticks: Tick[] }> {
  const follower = followTicks(from.url, name);
  await sleep(300);
  const run = await ums(['migrate', name, '--to', toAgent]);
  await Promise.race([follower.ended, sleep(5_000)]);
  follower.stop();
  await sleep(1_000);
  const at = run.code === 0 ? to : from;
  return { run, ticks: joinTicks(follower.ticks, await readTicks(at.url, name)) };
}

describe('live migration through the whole stack', { timeout: 900_000 }, () => {
  before(async () => {
    stack = await startLocalStack({
      name: `e2e-${process.pid}`,
      dir: join(tmpdir(), `ums-e2e-${process.pid}`),
      hosts: [...DEFAULT_HOSTS, AWS_HOST],
      // Small chunks, so that a test can move an archive of many chunks without moving much data.
      agentEnv: { UMS_CHUNK_MIB: '1' },
    });
    bus = await connectNatsBus({ ...stack.admin, name: 'e2e-test' });
    azure = stack.hosts.get(AZURE) as PodmanHost;
    gcp = stack.hosts.get(GCP) as PodmanHost;
    aws = stack.hosts.get(AWS) as PodmanHost;
  });

  after(async () => {
    await bus?.close();
    await stack?.stop();
  });

  it('moves a running counter azure -> gcp with its memory and rootfs, removes the source copy, and moves it back', async () => {
    const name = 'counter-roundtrip';
    const token = await runCounter(azure, name, stack.info.image);

    const there = await migrateAndWatch(name, azure, gcp, GCP);
    assert.equal(there.run.code, 0, `migration failed: ${there.run.result.reason}`);
    const first = continuity(there.ticks);
    assert.ok(first.continuous, `the count reset or skipped: ${JSON.stringify(first.break)}`);
    assert.ok(there.ticks.length > 20, 'ticks from both sides were read');
    const frozenMs = there.run.result.timeline?.frozenMs ?? 0;
    // The gap in the count is the freeze itself, give or take a tick on each side and the scheduling
    // delay of a loaded machine: the count never paused for longer than the migration says the
    // process was frozen.
    assert.ok(first.maxGapMs <= frozenMs + 2 * TICK_MS + 500, `largest gap ${first.maxGapMs} ms exceeds the frozen time ${frozenMs} ms`);
    assert.match((await gcp.podman(['exec', name, 'cat', COUNTER_MARKER_PATH])).stdout, new RegExp(`token=${token}`));
    assert.deepEqual(
      (await names(azure)).filter((n) => n.startsWith(`${name} `)),
      [],
      'the source copy is removed after success',
    );
    assert.equal(await runningExactlyOnce(name), gcp);

    const back = await migrateAndWatch(name, gcp, azure, AZURE);
    assert.equal(back.run.code, 0, `migration back failed: ${back.run.result.reason}`);
    const all = continuity(joinTicks(there.ticks, back.ticks));
    assert.ok(all.continuous, `the count reset on the way back: ${JSON.stringify(all.break)}`);
    assert.equal(await runningExactlyOnce(name), azure);
    await azure.podman(['rm', '-f', name]);
  });

  it('moves a container around the three clouds, each store carrying it once: azure -> gcp -> aws -> azure', async () => {
    // Each hop's archive goes through the source's own store (Azure Blob, then GCS, then S3) and is
    // read by the destination through a signed URL only.
    const name = 'counter-around';
    const token = await runCounter(azure, name, stack.info.image);
    let ticks: Tick[] = [];
    for (const [from, to, toAgent] of [
      [azure, gcp, GCP],
      [gcp, aws, AWS],
      [aws, azure, AZURE],
    ] as const) {
      const hop = await migrateAndWatch(name, from, to, toAgent);
      assert.equal(hop.run.code, 0, `${from.name} -> ${toAgent} failed: ${hop.run.result.reason}`);
      ticks = joinTicks(ticks, hop.ticks);
      const check = continuity(ticks);
      assert.ok(check.continuous, `the count reset or skipped after ${from.name} -> ${toAgent}: ${JSON.stringify(check.break)}`);
      assert.equal(await runningExactlyOnce(name), to);
    }
    assert.match((await azure.podman(['exec', name, 'cat', COUNTER_MARKER_PATH])).stdout, new RegExp(`token=${token}`));
    await azure.podman(['rm', '-f', name]);
  });

  it('moves a container whose archive spans several batches of signed URLs, its memory intact', async () => {
    // 90 MiB of random memory in 1 MiB chunks: about 90 chunks, so the destination asks the planner for
    // URLs again after the first batch of 64.
    const name = 'counter-big';
    await runCounter(gcp, name, stack.info.image, 90);
    // The plan's size is the container's measured memory, not the 64 MiB default (traits are read every 2 s).
    await sleep(3_000);
    const plan = await umsJson<{ archive?: { bytes: number; measured: boolean; basis: string }; memoryBeside?: boolean }>(stack.info, [
      'plan',
      name,
      '--to',
      AZURE,
      '--json',
    ]);
    assert.equal(plan.json.archive?.measured, true, `the estimate rests on an assumption: ${plan.json.archive?.basis ?? '?'}`);
    assert.ok((plan.json.archive?.bytes ?? 0) > 90 * 1024 * 1024, `archive estimated at ${plan.json.archive?.bytes ?? 0} bytes`);
    const { run, ticks } = await migrateAndWatch(name, gcp, azure, AZURE);
    assert.equal(run.code, 0, `migration failed: ${run.result.reason}`);
    assert.ok((run.result.timeline?.archiveBytes ?? 0) > 90 * 1024 * 1024, 'the memory travelled with it');
    // Both hosts have the runtime shim: the memory went as CRIU wrote it, beside Podman's export (agents/memory/).
    assert.equal(plan.json.memoryBeside, true, 'the plan sends the memory beside the export');
    const status = await umsJson<{ memoryBesideBytes?: number }>(stack.info, ['status', run.result.migrationId ?? '?']);
    assert.ok(
      (status.json.memoryBesideBytes ?? 0) >= 90 * 1024 * 1024,
      `${status.json.memoryBesideBytes ?? 0} bytes of memory went beside the export`,
    );
    assert.match(
      (await umsText(stack.info, ['status', run.result.migrationId ?? '?'])).stdout,
      /memory: (9\d|1\d\d)\.\d MiB sent as CRIU wrote it/,
    );
    assert.ok(continuity(ticks).continuous, 'the count went on');
    assert.equal(await runningExactlyOnce(name), azure);
    await azure.podman(['rm', '-f', name]);
  });

  it('ships the image a destination lacks before the freeze, and asks the engine, not the heartbeat, whether it has it', async (t) => {
    const name = 'counter-ships-image';
    const image = 'localhost/ums/azure-only:1';
    const imageId = async (host: PodmanHost) => (await host.podman(['image', 'inspect', image, '--format', '{{.Id}}'])).stdout.trim();
    // A new image (its own id) that only the azure host has: committed from a container there.
    await azure.podman(['run', '--name', 'image-maker', stack.info.image, 'sh', '-c', 'echo built-on-azure > /etc/origin']);
    await azure.podman(['commit', '--change', 'CMD ["/usr/local/bin/counter"]', 'image-maker', image]);
    await azure.podman(['rm', 'image-maker']);
    const id = await imageId(azure);
    await assert.rejects(imageId(gcp), 'gcp lacks the image');
    await runCounter(azure, name, image);

    const there = await migrateAndWatch(name, azure, gcp, GCP);
    assert.equal(there.run.code, 0, `migration failed: ${there.run.result.reason}`);
    assert.ok(continuity(there.ticks).continuous, `the count reset or skipped: ${JSON.stringify(continuity(there.ticks).break)}`);
    assert.equal(await runningExactlyOnce(name), gcp);
    // The same image, by id, under its name; the container runs on it.
    assert.equal(await imageId(gcp), id);
    assert.match((await gcp.podman(['exec', name, 'cat', '/etc/origin'])).stdout, /built-on-azure/);
    const migrationId = there.run.result.migrationId ?? '?';
    const shipped = await umsJson<{
      imageShipping?: { expected: boolean; needed?: boolean; artifact?: { sizeBytes: number } };
      artifactLocation: { storeUrl: string };
      times: Record<string, string>;
    }>(stack.info, ['status', migrationId]);
    assert.equal(shipped.json.imageShipping?.needed, true);
    assert.ok((shipped.json.imageShipping?.artifact?.sizeBytes ?? 0) > 1024 * 1024, 'the image went through the store');
    // All of it before the freeze: the service ran while the image moved.
    const { imageLoadedAt, checkpointStartedAt } = shipped.json.times;
    assert.ok(imageLoadedAt !== undefined && checkpointStartedAt !== undefined && imageLoadedAt < checkpointStartedAt);
    const status = (await umsText(stack.info, ['status', migrationId])).stdout;
    assert.match(
      status,
      /image: shipped before the freeze: \d+\.\d MiB \(sealed, \d+ chunk\(s\)\), saved and stored in [\d.]+ s, fetched, verified and loaded in [\d.]+ s/,
    );
    assert.match(status, /image \(running\)/);
    t.diagnostic(status.split('\n').find((line) => line.includes('image:')) ?? '');
    // The shipped objects go with the checkpoint's once the migration has ended (just after it says so).
    const store = await openObjectStore(shipped.json.artifactLocation.storeUrl, { ...process.env, ...stack.storeEnv.azure });
    const left = async () => {
      const keys: string[] = [];
      for await (const object of store.list(`migrations/${migrationId}/`)) keys.push(object.key);
      return keys;
    };
    for (const until = Date.now() + 10_000; (await left()).length > 0 && Date.now() < until;) await sleep(200);
    assert.deepEqual(await left(), []);

    // Back to azure, whose engine had the image removed (its heartbeat then listed it missing) and loaded
    // again a moment before the request: the destination's engine is asked, so nothing is shipped.
    await azure.podman(['rmi', image]);
    const listed = async () => (await bus.agents.get(AZURE))?.value.imageIds.includes(id) ?? false;
    for (const until = Date.now() + 10_000; (await listed()) && Date.now() < until;) await sleep(200);
    assert.equal(await listed(), false, "azure's heartbeat no longer lists the image");
    const archive = join(stack.info.dir, `${name}.tar`);
    await gcp.podman(['save', '--format', 'docker-archive', '-o', archive, image]);
    await azure.podman(['load', '-i', archive]);
    const back = await migrateAndWatch(name, gcp, azure, AZURE);
    assert.equal(back.run.code, 0, `migration back failed: ${back.run.result.reason}`);
    assert.ok(continuity(joinTicks(there.ticks, back.ticks)).continuous, 'the count went on, there and back');
    const notShipped = await umsJson<{ imageShipping?: { expected: boolean; needed?: boolean } }>(stack.info, [
      'status',
      back.run.result.migrationId ?? '?',
    ]);
    assert.notEqual(notShipped.json.imageShipping?.needed, true, 'the image loaded there was not shipped again');
    // Whether the planner still saw the stale heartbeat depends on when azure's next one came (every 2 s).
    t.diagnostic(
      `heartbeat at planning listed the image: ${notShipped.json.imageShipping?.expected === false}; totals: there ${there.run.result.timeline?.totalMs ?? '?'} ms (image shipped), back ${back.run.result.timeline?.totalMs ?? '?'} ms`,
    );
    assert.equal(await imageId(azure), id);
    assert.equal(await runningExactlyOnce(name), azure);
    await azure.podman(['rm', '-f', name]);
    await gcp.podman(['rmi', image]);
  });

  it('stores only ciphertext; rolls back when the archive is corrupted in the store: the destination refuses it, the source resumes', async () => {
    const name = 'counter-corrupt';
    const token = await runCounter(azure, name, stack.info.image);
    const before = await readTicks(azure.url, name);
    // The destination agent dies (kill -9) right after it said it is ready, before the source's
    // first chunk exists; its prepare command waits in its durable queue. While it is down the
    // archive is tampered with in the store, so the restarted agent must find a digest wrong.
    const destinationAgent = stack.services.get(`agent-${GCP}`);
    assert.ok(destinationAgent);
    const migrationId = randomUUID();
    const uploaded = new Promise<EventOf<'checkpoint.uploaded'>>((resolve) => {
      void bus.followMigration(migrationId, async (event) => {
        if (event.name === 'restore.prepared') await destinationAgent.kill();
        if (event.name !== 'checkpoint.uploaded') return;
        resolve(event);
        return 'stop';
      });
    });
    const running = ums(['migrate', name, '--to', GCP, '--id', migrationId]);
    const { artifact } = (await uploaded).data;
    const store = await openObjectStore(artifact.storeUrl, { ...process.env, ...stack.storeEnv.azure });
    // What lies in the store, read with the test's own store credentials, is ciphertext: neither the tar
    // headers nor the token the counter keeps in memory (its environment) and in its marker file show.
    // Opened with the destination's key (from its agent's state dir), the same bytes do hold both.
    const manifest = Manifest.parse(JSON.parse((await readAll(await store.get(manifestKey(artifact.prefix)))).toString('utf8')));
    const stored = await Promise.all(
      manifest.chunks.map(async (chunk) => readAll(await store.get(chunkKey(artifact.prefix, chunk.index)))),
    );
    for (const [index, body] of stored.entries()) {
      assert.equal(body.includes('ustar'), false, `stored chunk ${index} shows no tar header`);
      assert.equal(body.includes(token), false, `stored chunk ${index} shows no token`);
    }
    const destinationKey = await loadOrCreateSealingKey(join(gcp.dir, 'agent-state'));
    assert.equal(destinationKey.created, false, "the destination agent's key was there");
    const opener = ChunkOpener.unwrap(manifest.sealing, destinationKey.privateKey, migrationId);
    const plain = Buffer.concat(stored.map((body, index) => opener.open(index, body)));
    assert.ok(plain.includes('ustar'), 'the opened archive is a tar');
    assert.ok(plain.includes(token), "the opened archive holds the counter's token");
    const first = `${artifact.prefix}chunks/000000`;
    const size = (await store.head(first))?.size ?? 0;
    await store.put(first, Readable.from([randomBytes(size)]));
    await destinationAgent.start();

    const run = await running;
    assert.equal(run.code, 1);
    assert.equal(run.result.code, 'digest-mismatch', run.result.reason);
    assert.match(run.result.reason ?? '', /chunk 0 .*sha256/);
    assert.equal(run.result.runningOn, AZURE);
    await sleep(1_000);
    const resumed = await readTicks(azure.url, name);
    assert.ok(continuity(joinTicks(before, resumed)).continuous, 'the resumed source continues its count');
    assert.ok((resumed.at(-1)?.count ?? 0) > (before.at(-1)?.count ?? 0), 'the resumed source is counting again');
    assert.equal(await runningExactlyOnce(name), azure);
    assert.deepEqual(
      (await names(gcp)).filter((n) => n.startsWith(`${name} `)),
      [],
      'nothing is left half-restored at the destination',
    );
    await azure.podman(['rm', '-f', name]);
  });

  it('answers bad requests with a clear reason and touches nothing', async () => {
    const unknownContainer = await ums(['migrate', 'no-such-container', '--to', GCP]);
    assert.equal(unknownContainer.code, 1);
    assert.equal(unknownContainer.result.code, 'container-not-found');
    assert.match(unknownContainer.result.reason ?? '', /no-such-container/);

    const name = 'counter-bad-input';
    await runCounter(azure, name, stack.info.image);
    const unknownAgent = await ums(['migrate', name, '--to', 'aws-nowhere-1']);
    assert.equal(unknownAgent.code, 1);
    assert.equal(unknownAgent.result.code, 'agent-unavailable');
    assert.match(unknownAgent.result.reason ?? '', /aws-nowhere-1/);
    assert.equal(await runningExactlyOnce(name), azure);

    // A malformed event on the bus is refused at the function's boundary and kept as a dead letter.
    const outsider = await BrokerClient.connect(stack.admin);
    await outsider.publishRaw('ums.events.bogus.cli.migration.requested', '{"specversion":"1.0","type":"dev.ums.migration.requested.v1"}');
    await outsider.close();
    let letters: Awaited<ReturnType<NatsEventBus['listDeadLetters']>> = [];
    for (let i = 0; i < 50 && letters.length === 0; i++) {
      await sleep(100);
      letters = await bus.listDeadLetters();
    }
    assert.ok(
      letters.some((letter) => /invalid event/.test(letter.reason)),
      `a dead letter names the problem: ${JSON.stringify(letters)}`,
    );
    await azure.podman(['rm', '-f', name]);
  });

  it('ran every migration above over TLS with each component as its own principal, the broker refusing none of their steps', async () => {
    assert.match(stack.info.natsUrl, /^tls:\/\//);
    assert.ok(stack.info.cliCredentials, 'the stack handed the CLI a credential');
    // nats-server logs every publish or subscribe a principal's permissions refuse: a component needing a
    // subject it was not given would show here even where a retry hid it.
    const log = await readFile(join(stack.info.dir, 'nats', 'nats.log'), 'utf8');
    assert.deepEqual(
      log.split('\n').filter((line) => /Violation/.test(line)),
      [],
    );
  });
});

async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(part as Buffer);
  return Buffer.concat(parts);
}
