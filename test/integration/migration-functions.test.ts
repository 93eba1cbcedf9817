import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, beforeEach, describe, it } from 'node:test';
import type { AgentRegistration } from '../../core/agent-registration.js';
import { generateSealingKeyPair, type SealingPublicKey } from '../../core/checkpoint-sealing.js';
import { subjects } from '../../core/event-bus.js';
import { makeEvent, parseCommand, toWire, type EventName, type EventOf, type UmsCommand, type UmsEvent } from '../../core/events.js';
import { FRONTMAN_LIVENESS_MS, type FrontmanRegistration } from '../../core/frontman-registration.js';
import { createLogger } from '../../core/log.js';
import { commandLifetimeMs, lockKey } from '../../core/migration.js';
import { FRONTMAN_PRINCIPAL, FUNCTIONS_PRINCIPAL } from '../../core/event-identity.js';
import { connectNatsBus, type NatsEventBus } from '../../core/nats-event-bus.js';
import { openObjectStore } from '../../core/object-stores/open-object-store.js';
import { generateSigningKeyPair, type SigningPublicKey } from '../../core/signed-envelope.js';
import { CommandSigner, CommandVerifier } from '../../core/command-signature.js';
import { getTestServer } from '@google-cloud/functions-framework/testing';
import { AUTH_HEADER, signDelivery } from '../../core/function-auth.js';
import { evacuateHost } from '../../functions/evacuate-host.js';
import { finalize } from '../../functions/finalize.js';
import { closeFunctionContext, type FunctionContext } from '../../functions/function-context.js';
import { planMigration } from '../../functions/plan-migration.js';
import { planRestore } from '../../functions/plan-restore.js';
import { superviseMigrations } from '../../functions/supervise-migrations.js';
import { startNatsServer, type NatsServer } from '../../infra/nats-server.js';
import { BrokerClient } from '../broker-client.js';

/**
 * The functions against a real nats-server with JetStream and a real (file) object store, called
 * directly as the functions-framework would call them, including the redeliveries and duplicates that
 * at-least-once delivery produces. The agents are represented by their registrations (plain data).
 */
const SOURCE = 'azure-eastus-1';
const DESTINATION = 'gcp-us-central1-1';
const IMAGE = 'localhost/ums/counter:1';
const IMAGE_ID = 'e8357277f514d6894cf57d213bd2cb079d2a87f740e6f978625da55acc1bdd4a';

const container = (name: string, state = 'running', image = IMAGE, imageId = IMAGE_ID): AgentRegistration['containers'][number] => ({
  name,
  image,
  imageId,
  state,
  checkpointed: false,
});

let dir: string;
let nats: NatsServer;
let bus: NatsEventBus;
/** Reads and empties the command queues from outside the bus (no component does either). */
let broker: BrokerClient;
let ctx: FunctionContext;
let storeUrl: string;
/** Each agent's registered sealing key (public half). */
const sealingKeys = new Map<string, SealingPublicKey>();
const sealingKeyOf = (agentId: string): SealingPublicKey => {
  const known = sealingKeys.get(agentId) ?? generateSealingKeyPair().publicKey;
  sealingKeys.set(agentId, known);
  return known;
};

/** Each agent's registered manifest-signing key (public half). */
const manifestKeys = new Map<string, SigningPublicKey>();
const manifestKeyOf = (agentId: string): SigningPublicKey => {
  const known = manifestKeys.get(agentId) ?? generateSigningKeyPair().publicKey;
  manifestKeys.set(agentId, known);
  return known;
};

/** The functions' command-signing key, as the stack provisions it; the agents hold its public half. */
const COMMAND_KEY = generateSigningKeyPair();
const commandVerifier = new CommandVerifier([COMMAND_KEY.publicKey]);

function registration(
  agentId: string,
  containers: AgentRegistration['containers'],
  images = [IMAGE],
  imageIds = [IMAGE_ID],
): AgentRegistration {
  const now = new Date().toISOString();
  return {
    agentId,
    cloud: agentId.startsWith('azure') ? 'azure' : 'gcp',
    region: 'r',
    storeUrl,
    sealing: sealingKeyOf(agentId),
    manifestSigning: manifestKeyOf(agentId),
    approaches: ['container'],
    capabilities: {
      containerLevel: { available: true, engine: 'podman 4.3.1', criuVersion: '4.1.1' },
      orchestratorLevel: { available: false, reason: 'UMS_KUBELET_URL is not set' },
      plainContainers: { available: true },
    },
    engine: { engine: 'podman', version: '4.3.1', apiVersion: '4.3.1', ociRuntime: 'runc', criuVersion: '4.1.1', kernel: '6.18' },
    freeMemoryBytes: 1e10,
    freeDiskBytes: 1e11,
    images,
    imageIds,
    containers,
    startedAt: now,
    heartbeatAt: now,
  };
}

const request = (container: string, migrationId = randomUUID(), destinationAgent = DESTINATION) =>
  makeEvent('migration.requested', '/test', { migrationId, container, destinationAgent });

async function commandsFor(agentId: string): Promise<UmsCommand[]> {
  return (await broker.stored(subjects.commandsStream, subjects.commandsFor(agentId))).map((message) => parseCommand(message.data));
}

/** The latest of the functions' own events (migration.failed, migration.completed) of a migration. */
async function lastEvent(migrationId: string, name: EventName): Promise<UmsEvent | undefined> {
  return bus.lastEvent(migrationId, name, FUNCTIONS_PRINCIPAL);
}

async function allEvents(migrationId: string): Promise<UmsEvent[]> {
  const events: UmsEvent[] = [];
  const subscription = await bus.followMigration(migrationId, (event) => {
    events.push(event);
  });
  await new Promise((resolve) => setTimeout(resolve, 300));
  await subscription.stop();
  return events;
}

async function purgeCommands(): Promise<void> {
  await broker.purge(subjects.commandsStream);
}

describe('the migration functions against a real JetStream', () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ums-functions-'));
    nats = await startNatsServer(dir);
    bus = await connectNatsBus({ servers: nats.url, name: 'functions-test' });
    broker = await BrokerClient.connect(nats.url);
    storeUrl = `file://${join(dir, 'store')}`;
    ctx = {
      bus,
      log: createLogger('test'),
      source: '/test/functions',
      openStore: (url) => openObjectStore(url),
      signedUrlTtlSeconds: 60,
      artifactRetention: 'delete-when-done',
      commandSigner: new CommandSigner(COMMAND_KEY, (name) => commandLifetimeMs(name)),
    };
  });

  after(async () => {
    for (const server of served) server.close();
    await closeFunctionContext();
    await broker?.close();
    await bus?.close();
    await nats?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  beforeEach(async () => {
    await purgeCommands();
    await bus.agents.put(SOURCE, registration(SOURCE, [container('web')]));
    await bus.agents.put(DESTINATION, registration(DESTINATION, []));
  });

  it('refuses, before anything is frozen, what cannot work, each with its reason', async () => {
    const cases: Array<[ReturnType<typeof request>, string, RegExp]> = [
      [request('web', randomUUID(), 'aws-nowhere-1'), 'agent-unavailable', /"aws-nowhere-1" is not registered/],
      [
        { ...request('nope'), time: new Date(Date.now() - 60_000).toISOString() },
        'container-not-found',
        /"nope" was not found on any registered agent/,
      ],
      [request('web', randomUUID(), SOURCE), 'invalid-request', /already runs on "azure-eastus-1"/],
    ];
    await bus.agents.put(
      SOURCE,
      registration(SOURCE, [
        container('web'),
        container('old', 'exited'),
        container('odd', 'running', 'localhost/odd:1', 'f'.repeat(64)),
        container('rebuilt', 'running', IMAGE, 'c'.repeat(64)),
      ]),
    );
    cases.push([request('old'), 'container-not-running', /is exited, not running/]);
    for (const [event, code, reason] of cases) {
      await planMigration(event, ctx);
      const record = await bus.migrations.get(event.data.migrationId);
      assert.equal(record?.value.state, 'failed', event.data.container);
      assert.equal(record?.value.failure?.code, code);
      assert.match(record?.value.failure?.reason ?? '', reason);
      const failed = await lastEvent(event.data.migrationId, 'migration.failed');
      assert.equal(failed?.name === 'migration.failed' && failed.data.code, code);
    }
    assert.deepEqual(await commandsFor(SOURCE), [], 'nothing was commanded');
    assert.equal(await bus.locks.get(lockKey(SOURCE, 'web')), undefined, 'no lock is left behind');
  });

  it('waits a few seconds for a container that no heartbeat listed yet (the request is delivered again)', async () => {
    const fresh = request('started-a-moment-ago');
    await assert.rejects(planMigration(fresh, ctx), /is not listed on any registered agent yet/);
    assert.equal((await bus.migrations.get(fresh.data.migrationId))?.value.state, 'requested', 'nothing decided yet');
    await bus.agents.put(SOURCE, registration(SOURCE, [container('web'), container('started-a-moment-ago')]));
    await planMigration(fresh, ctx);
    assert.equal((await bus.migrations.get(fresh.data.migrationId))?.value.state, 'preflight');
    await bus.locks.delete(lockKey(SOURCE, 'started-a-moment-ago'));
  });

  it('refuses a destination that registers no sealing key: the checkpoint could not be encrypted for it', async () => {
    const { sealing: _sealing, ...unsealed } = registration(DESTINATION, []);
    await bus.agents.put(DESTINATION, unsealed);
    const event = request('web');
    await planMigration(event, ctx);
    const record = (await bus.migrations.get(event.data.migrationId))?.value;
    assert.equal(record?.failure?.code, 'destination-incompatible');
    assert.match(record?.failure?.reason ?? '', /registers no sealing key/);
    assert.deepEqual(await commandsFor(DESTINATION), [], 'the destination was not even told to prepare');
  });

  it('refuses a source that registers no manifest-signing key: its checkpoint could not be verified', async () => {
    await bus.agents.put(DESTINATION, registration(DESTINATION, []));
    const { manifestSigning: _key, ...unsigned } = registration(SOURCE, [container('web')]);
    await bus.agents.put(SOURCE, unsigned);
    const event = request('web');
    await planMigration(event, ctx);
    const record = (await bus.migrations.get(event.data.migrationId))?.value;
    assert.equal(record?.failure?.code, 'approach-infeasible');
    assert.match(record?.failure?.reason ?? '', /registers no manifest-signing key/);
    assert.deepEqual(await commandsFor(DESTINATION), [], 'the destination was not even told to prepare');
  });

  it('refuses a destination whose heartbeat stopped', async () => {
    const stale = registration(DESTINATION, []);
    stale.heartbeatAt = new Date(Date.now() - 60_000).toISOString();
    await bus.agents.put(DESTINATION, stale);
    const event = request('web');
    await planMigration(event, ctx);
    assert.match((await bus.migrations.get(event.data.migrationId))?.value.failure?.reason ?? '', /stopped sending heartbeats/);
  });

  it('plans once however often the request is delivered, and refuses a second migration of the same container', async () => {
    const event = request('web');
    await Promise.all([planMigration(event, ctx), planMigration(event, ctx)]);
    await planMigration(event, ctx);
    const record = await bus.migrations.get(event.data.migrationId);
    assert.equal(record?.value.state, 'preflight');
    assert.equal(record?.value.sourceAgent, SOURCE);
    const commands = await commandsFor(DESTINATION);
    assert.equal(commands.length, 1, 'duplicates are dropped by the stream');
    assert.equal(commands[0]?.name, 'prepare');
    assert.equal((await bus.locks.get(lockKey(SOURCE, 'web')))?.value.migrationId, event.data.migrationId);

    const second = request('web');
    await planMigration(second, ctx);
    const refused = await bus.migrations.get(second.data.migrationId);
    assert.equal(refused?.value.failure?.code, 'already-migrating');
    assert.equal((await bus.locks.get(lockKey(SOURCE, 'web')))?.value.migrationId, event.data.migrationId, 'the first keeps its lock');
  });

  it('signs URLs once the destination is ready, then freezes the source; rolls back on a failed restore', async () => {
    await bus.locks.delete(lockKey(SOURCE, 'web'));
    const event = request('web');
    const { migrationId } = event.data;
    const prefix = `migrations/${migrationId}/`;
    await planMigration(event, ctx);
    assert.equal((await bus.migrations.get(migrationId))?.value.state, 'preflight');
    assert.deepEqual(
      (await commandsFor(DESTINATION)).map((c) => c.name),
      ['prepare'],
    );
    assert.deepEqual(await commandsFor(SOURCE), [], 'nothing is frozen before the destination is ready');

    await planRestore(makeEvent('restore.prepared', '/a', { migrationId, agent: 'impostor-1', freeDiskBytes: 1e9 }), ctx);
    assert.equal((await bus.migrations.get(migrationId))?.value.state, 'preflight', 'readiness from another agent is ignored');
    const prepared = makeEvent('restore.prepared', '/a', { migrationId, agent: DESTINATION, freeDiskBytes: 1e9 });
    await planRestore(prepared, ctx);
    await planRestore(prepared, ctx);
    assert.equal((await bus.migrations.get(migrationId))?.value.state, 'checkpointing');
    const sourceCommands = await commandsFor(SOURCE);
    assert.deepEqual(
      sourceCommands.map((c) => c.name),
      ['checkpoint'],
    );
    const checkpoint = sourceCommands[0];
    assert.ok(checkpoint?.name === 'checkpoint');
    assert.deepEqual(checkpoint.data.sealFor, sealingKeyOf(DESTINATION), "the source seals for the destination's registered key");
    // Every command is signed for the agent whose queue it is in, and verifies there only.
    commandVerifier.verify(checkpoint, SOURCE);
    assert.throws(() => commandVerifier.verify(checkpoint, DESTINATION), /signed for agent azure-eastus-1/);
    for (const command of await commandsFor(DESTINATION)) commandVerifier.verify(command, DESTINATION);
    const prepare = (await commandsFor(DESTINATION)).find((c) => c.name === 'prepare');
    assert.ok(prepare?.name === 'prepare');
    assert.deepEqual(
      prepare.data.sourceManifestKey,
      manifestKeyOf(SOURCE),
      "the destination verifies the manifest with the source's registered key",
    );
    assert.ok(Date.parse(checkpoint.umsexpires ?? '') - Date.parse(checkpoint.time) === commandLifetimeMs('checkpoint'), 'it expires');
    const urls = (await commandsFor(DESTINATION)).filter((c) => c.name === 'chunk-urls');
    assert.equal(urls.length, 1, 'the first batch is sent once');
    const first = urls[0];
    assert.ok(first?.name === 'chunk-urls');
    assert.ok(first.data.manifestUrl?.endsWith(`${prefix}manifest.json`));
    assert.deepEqual(
      first.data.chunks.map((c) => c.index),
      Array.from({ length: 64 }, (_, i) => i),
    );
    assert.ok(Date.parse(first.data.expiresAt) > Date.now());

    await planRestore(makeEvent('restore.urls-needed', '/a', { migrationId, agent: DESTINATION, fromIndex: 64, count: 64 }), ctx);
    const more = (await commandsFor(DESTINATION)).filter((c) => c.name === 'chunk-urls').at(-1);
    assert.ok(more?.name === 'chunk-urls' && more.data.chunks[0]?.index === 64 && !more.data.manifestUrl);

    await (await openObjectStore(storeUrl)).put(`${prefix}chunks/000000`, Readable.from([Buffer.from('archive bytes')]));
    const now = new Date().toISOString();
    const artifact = { storeUrl, prefix, sizeBytes: 13, sha256: 'b'.repeat(64), chunkCount: 1, manifestSha256: 'c'.repeat(64) };
    const uploaded = (agent: string) =>
      makeEvent('checkpoint.uploaded', `/agents/${agent}`, {
        migrationId,
        agent,
        container: 'web',
        image: IMAGE,
        artifact,
        checkpointStartedAt: now,
        firstByteAt: now,
        uploadedAt: now,
      });
    await planRestore(uploaded('impostor-1'), ctx);
    assert.equal((await bus.migrations.get(migrationId))?.value.state, 'checkpointing', 'an upload from another agent is ignored');
    await planRestore(uploaded(SOURCE), ctx);
    assert.equal((await bus.migrations.get(migrationId))?.value.state, 'uploaded');
    await planRestore(makeEvent('restore.started', '/a', { migrationId, agent: DESTINATION, downloadedAt: now }), ctx);
    assert.equal((await bus.migrations.get(migrationId))?.value.state, 'restoring');
    const forwardEpoch = (await bus.migrations.get(migrationId))?.value.epoch;

    await finalize(
      makeEvent('restore.failed', '/a', { migrationId, agent: DESTINATION, code: 'digest-mismatch', reason: 'chunk 0 sha256 differs' }),
      ctx,
    );
    const rolling = await bus.migrations.get(migrationId);
    assert.equal(rolling?.value.state, 'rolling-back');
    assert.equal(rolling?.value.epoch, (forwardEpoch ?? 0) + 1, 'turning back raises the epoch');
    // the destination confirms it holds no copy before the source may resume
    assert.deepEqual(
      (await commandsFor(SOURCE)).map((c) => c.name),
      ['checkpoint'],
    );
    const abort = (await commandsFor(DESTINATION)).at(-1);
    assert.ok(abort?.name === 'abort' && abort.data.epoch === rolling?.value.epoch);
    // a late success report from the destination must not undo the rollback
    await finalize(
      makeEvent('restore.completed', '/a', {
        migrationId,
        agent: DESTINATION,
        container: 'web',
        containerId: 'x',
        downloadedAt: now,
        restoredAt: now,
      }),
      ctx,
    );
    assert.equal((await bus.migrations.get(migrationId))?.value.state, 'rolling-back');
    assert.deepEqual(
      (await commandsFor(SOURCE)).map((c) => c.name),
      ['checkpoint'],
    );
    await finalize(
      makeEvent('restore.aborted', '/a', { migrationId, agent: DESTINATION, container: 'web', removedRestoredCopy: true }),
      ctx,
    );
    const resume = (await commandsFor(SOURCE)).at(-1);
    assert.ok(resume?.name === 'resume' && resume.data.epoch === rolling?.value.epoch);
    assert.ok(
      await (await openObjectStore(storeUrl)).head(`${prefix}chunks/000000`),
      'the archive stays until the source confirmed it runs again',
    );

    await finalize(makeEvent('source.resumed', '/a', { migrationId, agent: SOURCE, container: 'web' }), ctx);
    const record = await bus.migrations.get(migrationId);
    assert.equal(record?.value.state, 'failed');
    assert.equal(record?.value.failure?.code, 'digest-mismatch');
    const failed = await lastEvent(migrationId, 'migration.failed');
    assert.ok(failed?.name === 'migration.failed' && failed.data.runningOn === SOURCE);
    assert.equal(await bus.locks.get(lockKey(SOURCE, 'web')), undefined, 'the lock is released');
    const left = [];
    for await (const object of (await openObjectStore(storeUrl)).list(prefix)) left.push(object.key);
    assert.deepEqual(left, [], 'the archive (process memory) is deleted');

    const events = await allEvents(migrationId);
    assert.ok(events.some((e) => e.name === 'migration.planned') && events.some((e) => e.name === 'migration.failed'));
    assert.ok(!events.some((e) => /manifest\.json|chunks\/0000/.test(JSON.stringify(e))), 'events never carry the signed URLs');
  });

  it('ends failed without touching the source when the destination refuses to prepare', async () => {
    await bus.locks.delete(lockKey(SOURCE, 'web'));
    const event = request('web');
    const { migrationId } = event.data;
    await planMigration(event, ctx);
    await finalize(
      makeEvent('restore.failed', '/a', { migrationId, agent: DESTINATION, code: 'image-missing', reason: 'image not here' }),
      ctx,
    );
    const record = await bus.migrations.get(migrationId);
    assert.equal(record?.value.state, 'failed');
    assert.deepEqual(await commandsFor(SOURCE), [], 'no checkpoint, no resume');
    const failed = await lastEvent(migrationId, 'migration.failed');
    assert.ok(failed?.name === 'migration.failed' && failed.data.runningOn === SOURCE && failed.data.code === 'image-missing');
  });

  it('ships the image the destination lacks before the freeze: the source stores it, the destination gets its URLs, then the freeze', async () => {
    const odd = 'f'.repeat(64);
    await bus.agents.put(SOURCE, registration(SOURCE, [container('odd', 'running', 'localhost/odd:1', odd)]));
    const event = request('odd');
    const { migrationId } = event.data;
    await planMigration(event, ctx);
    const planned = (await bus.migrations.get(migrationId))?.value;
    // Planned, not refused: the heartbeat's word is a guess, the destination's engine decides.
    assert.equal(planned?.state, 'preflight');
    assert.deepEqual(planned?.imageShipping, { expected: true });
    const needed = makeEvent('restore.image-needed', '/a', { migrationId, agent: DESTINATION, imageId: odd });
    await planRestore(needed, ctx);
    await planRestore(needed, ctx); // delivered twice: one ship-image command
    await planRestore(makeEvent('restore.image-needed', '/a', { migrationId, agent: SOURCE, imageId: odd }), ctx); // not the destination's word
    const shipping = (await bus.migrations.get(migrationId))?.value;
    assert.equal(shipping?.state, 'preflight');
    assert.equal(shipping?.imageShipping?.needed, true);
    assert.ok(
      shipping?.deadlineAt !== undefined && Date.parse(shipping.deadlineAt) > Date.now() + 120_000,
      'the preflight deadline makes room for the image',
    );
    const ship = (await commandsFor(SOURCE)).filter((c) => c.name === 'ship-image');
    assert.equal(ship.length, 1);
    assert.ok(ship[0]?.name === 'ship-image');
    assert.equal(ship[0].data.imageId, odd);
    assert.equal(ship[0].data.artifact.prefix, `migrations/${migrationId}/image/`);
    assert.deepEqual(ship[0].data.sealFor, sealingKeyOf(DESTINATION), "sealed for the destination's key");

    const artifact = {
      storeUrl,
      prefix: `migrations/${migrationId}/image/`,
      sizeBytes: 70 * 1024 * 1024,
      sha256: 'a'.repeat(64),
      chunkCount: 70,
      manifestSha256: 'b'.repeat(64),
    };
    const at = new Date().toISOString();
    await planRestore(
      makeEvent('source.image-uploaded', '/a', {
        migrationId,
        agent: SOURCE,
        imageId: odd,
        artifact: { ...artifact, prefix: `migrations/${migrationId}/` },
        startedAt: at,
        uploadedAt: at,
      }),
      ctx,
    );
    assert.deepEqual(
      await commandsFor(DESTINATION).then((c) => c.filter((x) => x.name === 'chunk-urls')),
      [],
      'another prefix than the plan: ignored',
    );
    await planRestore(
      makeEvent('source.image-uploaded', '/a', { migrationId, agent: SOURCE, imageId: odd, artifact, startedAt: at, uploadedAt: at }),
      ctx,
    );
    const urls = (await commandsFor(DESTINATION)).flatMap((c) => (c.name === 'chunk-urls' ? [c.data] : []));
    // 70 chunks: two batches, every chunk and the manifest, all of the image's prefix.
    assert.deepEqual(
      urls.map((u) => [u.of, u.chunks.length, u.manifestUrl !== undefined]),
      [
        ['image', 64, true],
        ['image', 6, false],
      ],
    );
    assert.ok(urls.every((u) => u.chunks.every((c) => c.url.includes(`/migrations/${migrationId}/image/chunks/`))));
    assert.deepEqual(await commandsFor(SOURCE).then((c) => c.map((x) => x.name)), ['ship-image'], 'no freeze while the image moves');
    // A destination that restarted asks again: it gets the URLs again.
    await planRestore(makeEvent('restore.image-needed', '/a', { migrationId, agent: DESTINATION, imageId: odd }), ctx);
    assert.equal((await commandsFor(DESTINATION)).filter((c) => c.name === 'chunk-urls').length, 4);

    const loadedAt = new Date().toISOString();
    await planRestore(
      makeEvent('restore.prepared', '/a', {
        migrationId,
        agent: DESTINATION,
        freeDiskBytes: 1e11,
        imageLoaded: { loadedAt, tags: ['localhost/odd:1'] },
      }),
      ctx,
    );
    const ready = (await bus.migrations.get(migrationId))?.value;
    assert.equal(ready?.state, 'checkpointing');
    assert.deepEqual(ready?.imageShipping, { expected: true, needed: true, artifact, tags: ['localhost/odd:1'] });
    assert.equal(ready?.times.imageLoadedAt, loadedAt);
    assert.deepEqual(await commandsFor(SOURCE).then((c) => c.map((x) => x.name)), ['ship-image', 'checkpoint']);
    await bus.locks.delete(lockKey(SOURCE, 'odd'));
  });

  it('fails before the freeze, the service untouched, when the source cannot ship the image', async () => {
    await bus.agents.put(SOURCE, registration(SOURCE, [container('rebuilt', 'running', IMAGE, 'c'.repeat(64))]));
    const event = request('rebuilt');
    const { migrationId } = event.data;
    await planMigration(event, ctx);
    assert.match((await bus.migrations.get(migrationId))?.value.approachReason ?? '', /container level/);
    await planRestore(makeEvent('restore.image-needed', '/a', { migrationId, agent: DESTINATION, imageId: 'c'.repeat(64) }), ctx);
    await finalize(
      makeEvent('checkpoint.failed', '/a', {
        migrationId,
        agent: SOURCE,
        code: 'upload-failed',
        reason: 'store down',
        containerCheckpointed: false,
      }),
      ctx,
    );
    const record = (await bus.migrations.get(migrationId))?.value;
    assert.equal(record?.state, 'failed');
    assert.deepEqual([record?.failure?.phase, record?.failure?.code, record?.runningOn], ['image', 'upload-failed', SOURCE]);
    assert.deepEqual(await commandsFor(SOURCE).then((c) => c.map((x) => x.name)), ['ship-image'], 'never frozen, nothing to resume');
  });

  it('completes only after the source discarded its copy, even when the restore report overtakes the upload report', async () => {
    await bus.locks.delete(lockKey(SOURCE, 'web'));
    const event = request('web');
    const { migrationId } = event.data;
    const prefix = `migrations/${migrationId}/`;
    await planMigration(event, ctx);
    await planRestore(makeEvent('restore.prepared', '/a', { migrationId, agent: DESTINATION, freeDiskBytes: 1e9 }), ctx);
    await (await openObjectStore(storeUrl)).put(`${prefix}manifest.json`, Readable.from([Buffer.from('{}')]));
    const base = Date.now();
    const t = (ms: number) => new Date(base + ms).toISOString();
    await finalize(
      makeEvent('restore.completed', '/a', {
        migrationId,
        agent: DESTINATION,
        container: 'web',
        containerId: 'x',
        downloadedAt: t(500),
        restoredAt: t(900),
      }),
      ctx,
    );
    assert.equal((await bus.migrations.get(migrationId))?.value.state, 'finalizing');
    // the failure report of a step that was overtaken cannot turn a confirmed restore back
    await finalize(
      makeEvent('checkpoint.failed', '/a', {
        migrationId,
        agent: SOURCE,
        code: 'upload-failed',
        reason: 'late',
        containerCheckpointed: true,
      }),
      ctx,
    );
    assert.equal((await bus.migrations.get(migrationId))?.value.state, 'finalizing');
    await planRestore(
      makeEvent('checkpoint.uploaded', '/a', {
        migrationId,
        agent: SOURCE,
        container: 'web',
        image: IMAGE,
        artifact: { storeUrl, prefix, sizeBytes: 13, sha256: 'b'.repeat(64), chunkCount: 1, manifestSha256: 'c'.repeat(64) },
        checkpointStartedAt: t(0),
        firstByteAt: t(300),
        uploadedAt: t(400),
      }),
      ctx,
    );
    assert.equal((await bus.migrations.get(migrationId))?.value.state, 'finalizing', 'the late upload report only adds its facts');
    assert.ok((await commandsFor(SOURCE)).some((c) => c.name === 'discard'));
    // a discard report from the wrong agent changes nothing
    await finalize(makeEvent('source.discarded', '/a', { migrationId, agent: DESTINATION, container: 'web' }), ctx);
    assert.equal((await bus.migrations.get(migrationId))?.value.state, 'finalizing');
    assert.ok(await (await openObjectStore(storeUrl)).head(`${prefix}manifest.json`), 'the archive stays until the source confirmed');
    await finalize(makeEvent('source.discarded', '/a', { migrationId, agent: SOURCE, container: 'web' }), ctx);
    assert.equal((await bus.migrations.get(migrationId))?.value.state, 'done');
    const completed = await lastEvent(migrationId, 'migration.completed');
    assert.ok(completed?.name === 'migration.completed');
    assert.equal(completed.data.timeline.frozenMs, 900);
    assert.equal(await (await openObjectStore(storeUrl)).head(`${prefix}manifest.json`), undefined);
  });

  /** A migration planned and frozen (checkpointing), ready for the supervisor to find stalled. */
  async function frozenMigration(): Promise<string> {
    await bus.locks.delete(lockKey(SOURCE, 'web'));
    const event = request('web');
    await planMigration(event, ctx);
    await planRestore(
      makeEvent('restore.prepared', '/a', { migrationId: event.data.migrationId, agent: DESTINATION, freeDiskBytes: 1e9 }),
      ctx,
    );
    assert.equal((await bus.migrations.get(event.data.migrationId))?.value.state, 'checkpointing');
    return event.data.migrationId;
  }

  const lastHeartbeat = async (agentId: string, at: number) => {
    const entry = await bus.agents.get(agentId);
    assert.ok(entry);
    await bus.agents.put(agentId, { ...entry.value, heartbeatAt: new Date(at).toISOString() });
  };
  const silence = (agentId: string) => lastHeartbeat(agentId, Date.now() - 60_000);

  it('supervisor: leaves healthy migrations alone, rolls back one whose destination went silent, resumes the source once the destination is presumed gone', async () => {
    const migrationId = await frozenMigration();
    const quiet = await superviseMigrations(ctx);
    assert.ok(!quiet.acted.some((a) => a.migrationId === migrationId), 'on time and every agent alive: nothing to do');

    await silence(DESTINATION);
    await superviseMigrations(ctx);
    const rolling = await bus.migrations.get(migrationId);
    assert.equal(rolling?.value.state, 'rolling-back');
    assert.equal(rolling?.value.failure?.code, 'deadline-exceeded');
    assert.match(rolling?.value.failure?.reason ?? '', /"gcp-us-central1-1" stopped sending heartbeats/);
    assert.ok((await commandsFor(DESTINATION)).some((c) => c.name === 'abort'));
    assert.ok(
      !(await commandsFor(SOURCE)).some((c) => c.name === 'resume'),
      'no resume before the rollback deadline: the destination may still answer',
    );

    // Past the rollback deadline, the destination still silent: availability wins, the source resumes.
    await superviseMigrations(ctx, Date.now() + 61_000);
    const presumed = await bus.migrations.get(migrationId);
    assert.equal(presumed?.value.rollback?.destinationClear, true);
    assert.match(presumed?.value.rollback?.how ?? '', /presumed/);
    const resume = (await commandsFor(SOURCE)).find((c) => c.name === 'resume');
    assert.ok(resume?.name === 'resume' && resume.data.epoch === presumed?.value.epoch);
    await finalize(makeEvent('source.resumed', '/a', { migrationId, agent: SOURCE, container: 'web' }), ctx);
    assert.equal((await bus.migrations.get(migrationId))?.value.state, 'failed');
  });

  it('supervisor: a phase past its deadline rolls back even with every agent alive; a confirmed restore is completed, not rolled back', async () => {
    const stuck = await frozenMigration();
    const later = Date.now() + 11 * 60_000;
    // every agent still beating at that later time: only the deadline speaks
    await lastHeartbeat(SOURCE, later);
    await lastHeartbeat(DESTINATION, later);
    await superviseMigrations(ctx, later);
    assert.equal((await bus.migrations.get(stuck))?.value.state, 'rolling-back');
    assert.match((await bus.migrations.get(stuck))?.value.failure?.reason ?? '', /stayed checkpointing past its deadline/);

    await purgeCommands();
    const confirmed = await frozenMigration();
    const t = new Date().toISOString();
    await finalize(
      makeEvent('restore.completed', '/a', {
        migrationId: confirmed,
        agent: DESTINATION,
        container: 'web',
        containerId: 'x',
        downloadedAt: t,
        restoredAt: t,
      }),
      ctx,
    );
    assert.equal((await bus.migrations.get(confirmed))?.value.state, 'finalizing');
    // the source's agent is gone before it discarded its copy: the migration still completes, and says what is left
    await silence(SOURCE);
    await superviseMigrations(ctx, Date.now() + 2 * 60_000);
    const done = await bus.migrations.get(confirmed);
    assert.equal(done?.value.state, 'done');
    assert.match(done?.value.pendingCleanup ?? '', /discard its kept checkpoint/);
    assert.ok(
      (await commandsFor(SOURCE)).some((c) => c.name === 'discard'),
      "the discard waits in the source's queue",
    );
  });

  it('takes over a lock left behind by a migration that has ended', async () => {
    await bus.locks.delete(lockKey(SOURCE, 'web'));
    const ended = request('web');
    await planMigration(ended, ctx);
    await finalize(
      makeEvent('restore.failed', '/a', { migrationId: ended.data.migrationId, agent: DESTINATION, code: 'image-missing', reason: 'x' }),
      ctx,
    );
    assert.equal((await bus.migrations.get(ended.data.migrationId))?.value.state, 'failed');
    // as if the function died between ending the migration and releasing its lock
    await bus.locks.put(lockKey(SOURCE, 'web'), { migrationId: ended.data.migrationId });
    const next = request('web');
    await planMigration(next, ctx);
    assert.equal((await bus.migrations.get(next.data.migrationId))?.value.state, 'preflight');
    assert.equal((await bus.locks.get(lockKey(SOURCE, 'web')))?.value.migrationId, next.data.migrationId);
  });

  describe('with a frontman', () => {
    const FRONTMAN = 'edge-1';

    const frontmanRegistration = (frontmanId: string, heartbeatAt = Date.now()): FrontmanRegistration => ({
      frontmanId,
      services: [{ container: 'web', protocol: 'http', listen: '203.0.113.7:80', port: 8080 }],
      startedAt: new Date(heartbeatAt - 60_000).toISOString(),
      heartbeatAt: new Date(heartbeatAt).toISOString(),
    });

    /** Stated as the follower states it (frontman/migration-follower.ts): on the frontman principal's subject. */
    async function drained(migrationId: string, frontman = FRONTMAN): Promise<EventOf<'frontman.drained'>> {
      const event = makeEvent(
        'frontman.drained',
        `/ums/frontman/${frontman}`,
        { migrationId, frontman, container: 'web', finished: 2, unfinished: 1, drainedAt: new Date().toISOString() },
        `${migrationId}.frontman.drained.${frontman}`,
      );
      await bus.publishEvent(event);
      return event;
    }

    const prepared = (migrationId: string) => makeEvent('restore.prepared', '/a', { migrationId, agent: DESTINATION, freeDiskBytes: 1e9 });

    /** The checkpoint commands of this migration only: other tests leave theirs in the source's queue. */
    const checkpointsOf = async (migrationId: string) =>
      (await commandsFor(SOURCE)).filter((c) => c.name === 'checkpoint' && c.data.migrationId === migrationId);

    async function planned(): Promise<string> {
      await bus.locks.delete(lockKey(SOURCE, 'web'));
      const event = request('web');
      await planMigration(event, ctx);
      assert.equal((await bus.migrations.get(event.data.migrationId))?.value.state, 'preflight');
      return event.data.migrationId;
    }

    beforeEach(async () => {
      await bus.frontmen.put(FRONTMAN, frontmanRegistration(FRONTMAN));
    });

    after(async () => {
      for (const { key } of await bus.frontmen.list()) await bus.frontmen.delete(key);
    });

    it('plans with the live frontman and freezes only once it has drained', async () => {
      const migrationId = await planned();
      assert.deepEqual((await bus.migrations.get(migrationId))?.value.frontman, { id: FRONTMAN });
      const plannedEvent = await lastEvent(migrationId, 'migration.planned');
      assert.ok(plannedEvent?.name === 'migration.planned' && plannedEvent.data.frontman === FRONTMAN, 'the frontman learns of it');

      await planRestore(prepared(migrationId), ctx);
      assert.equal((await bus.migrations.get(migrationId))?.value.state, 'checkpointing');
      assert.deepEqual(await checkpointsOf(migrationId), [], 'not frozen while the frontman still forwards');

      const event = await drained(migrationId);
      assert.equal((await bus.lastEvent(migrationId, 'frontman.drained', FRONTMAN_PRINCIPAL))?.id, event.id, "the frontman's word");
      await planRestore(event, ctx);
      await planRestore(event, ctx);
      assert.equal((await checkpointsOf(migrationId)).length, 1, 'frozen once, however often the event is delivered');
      const frontman = (await bus.migrations.get(migrationId))?.value.frontman;
      assert.deepEqual(frontman, { id: FRONTMAN, drainedAt: event.data.drainedAt, finished: 2, unfinished: 1 });
    });

    it('freezes on restore.prepared when the frontman drained first', async () => {
      const migrationId = await planned();
      await planRestore(await drained(migrationId), ctx);
      const early = (await bus.migrations.get(migrationId))?.value;
      assert.equal(early?.state, 'preflight');
      assert.ok(early?.frontman?.drainedAt, 'the drain is recorded before the destination is ready');
      assert.deepEqual(await checkpointsOf(migrationId), [], 'no freeze before the destination is ready');

      await planRestore(prepared(migrationId), ctx);
      assert.equal((await bus.migrations.get(migrationId))?.value.state, 'checkpointing');
      assert.equal((await checkpointsOf(migrationId)).length, 1);
    });

    it("freezes once when the drain and the destination's readiness are handled at the same time", async () => {
      for (let round = 0; round < 8; round += 1) {
        const migrationId = await planned();
        const event = await drained(migrationId);
        await Promise.all([planRestore(prepared(migrationId), ctx), planRestore(event, ctx)]);
        const record = (await bus.migrations.get(migrationId))?.value;
        assert.equal(record?.state, 'checkpointing', `round ${round}`);
        assert.ok(record?.frontman?.drainedAt, `round ${round}`);
        assert.equal((await checkpointsOf(migrationId)).length, 1, `round ${round}: frozen once`);
      }
    });

    it('ignores a drain reported by another frontman', async () => {
      const migrationId = await planned();
      await planRestore(prepared(migrationId), ctx);
      await planRestore(await drained(migrationId, 'edge-2'), ctx);
      assert.equal((await bus.migrations.get(migrationId))?.value.frontman?.drainedAt, undefined);
      assert.deepEqual(await checkpointsOf(migrationId), [], 'still waiting for its own frontman');
    });

    it('supervisor: fails the migration, frozen nothing, when the frontman never drains', async () => {
      const migrationId = await planned();
      await planRestore(prepared(migrationId), ctx);
      const soon = Date.now() + 15_000;
      await lastHeartbeat(SOURCE, soon);
      await lastHeartbeat(DESTINATION, soon);
      await superviseMigrations(ctx, soon);
      assert.equal((await bus.migrations.get(migrationId))?.value.state, 'checkpointing', 'within the drain deadline');

      // every agent still beating at that later time: only the frontman's deadline speaks
      const later = Date.now() + 21_000;
      await lastHeartbeat(SOURCE, later);
      await lastHeartbeat(DESTINATION, later);
      const report = await superviseMigrations(ctx, later);
      assert.ok(report.acted.some((a) => a.migrationId === migrationId && a.action === 'failed before the freeze'));
      const record = (await bus.migrations.get(migrationId))?.value;
      assert.equal(record?.state, 'failed');
      assert.equal(record?.failure?.code, 'deadline-exceeded');
      assert.match(record?.failure?.reason ?? '', /frontman "edge-1" did not report drained/);
      const failed = await lastEvent(migrationId, 'migration.failed');
      assert.ok(failed?.name === 'migration.failed' && failed.data.runningOn === SOURCE);
      assert.equal(await bus.locks.get(lockKey(SOURCE, 'web')), undefined, 'the lock is released');

      // a drain reported after the failure freezes nothing either
      await planRestore(await drained(migrationId), ctx);
      assert.deepEqual(await checkpointsOf(migrationId), []);
    });

    it('records where the frontman released what it held, once', async () => {
      const migrationId = await planned();
      await planRestore(prepared(migrationId), ctx);
      await planRestore(await drained(migrationId), ctx);
      const t = new Date().toISOString();
      await finalize(
        makeEvent('restore.completed', '/a', {
          migrationId,
          agent: DESTINATION,
          container: 'web',
          containerId: 'x',
          downloadedAt: t,
          restoredAt: t,
        }),
        ctx,
      );
      await finalize(makeEvent('source.discarded', '/a', { migrationId, agent: SOURCE, container: 'web' }), ctx);
      assert.equal((await bus.migrations.get(migrationId))?.value.state, 'done');

      const released = (frontman: string, held: number) =>
        makeEvent(
          'frontman.released',
          `/ums/frontman/${frontman}`,
          { migrationId, frontman, container: 'web', to: DESTINATION, held, expired: 1, releasedAt: new Date().toISOString() },
          `${migrationId}.frontman.released.${frontman}.${held}`,
        );
      await finalize(released('edge-2', 9), ctx);
      assert.equal((await bus.migrations.get(migrationId))?.value.frontman?.releasedAt, undefined, "another frontman's word is ignored");
      const event = released(FRONTMAN, 3);
      await bus.publishEvent(event);
      await finalize(event, ctx);
      await finalize(released(FRONTMAN, 7), ctx);
      const record = (await bus.migrations.get(migrationId))?.value;
      assert.equal(record?.state, 'done');
      assert.equal(record?.frontman?.releasedTo, DESTINATION);
      assert.equal(record?.frontman?.held, 3, 'the first release counts');
      assert.equal(record?.frontman?.expired, 1);
      assert.equal(record?.frontman?.releasedAt, event.data.releasedAt);
    });

    it('does not wait for a frontman whose heartbeat stopped', async () => {
      await bus.frontmen.put(FRONTMAN, frontmanRegistration(FRONTMAN, Date.now() - FRONTMAN_LIVENESS_MS - 5_000));
      const migrationId = await planned();
      assert.equal((await bus.migrations.get(migrationId))?.value.frontman, undefined);
      const plannedEvent = await lastEvent(migrationId, 'migration.planned');
      assert.ok(plannedEvent?.name === 'migration.planned' && plannedEvent.data.frontman === undefined);
      await planRestore(prepared(migrationId), ctx);
      assert.equal((await checkpointsOf(migrationId)).length, 1, 'frozen right away');
    });
  });

  // ---- through the functions-framework, as the bridge calls them (issue item 6) ----------------------

  const served: Server[] = [];
  const key = randomBytes(32);

  /** The function served in-process by the framework's own server (the registrations of functions/index.ts). */
  async function serve(name: string): Promise<string> {
    process.env.NATS_URL = nats.url;
    process.env.UMS_FUNCTION_AUTH = 'bridge-hmac';
    process.env.UMS_FUNCTION_AUTH_KEY = key.toString('base64');
    const keyFile = join(dir, 'command-signing-key.pem');
    await writeFile(keyFile, COMMAND_KEY.privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600, flag: 'w' });
    process.env.UMS_COMMAND_SIGNING_KEY_FILE = keyFile;
    await import('../../functions/index.js');
    const server = getTestServer(name);
    served.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  }

  async function post(url: string, body: string, headers: Record<string, string>): Promise<number> {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/cloudevents+json; charset=utf-8', ...headers },
      body,
    });
    await response.body?.cancel();
    return response.status;
  }

  const token = (
    fn: string,
    event: { id: string; type: string; time: string },
    body: string,
    options: { key?: Buffer; now?: number } = {},
  ) => ({
    [AUTH_HEADER]: signDelivery(
      options.key ?? key,
      { functionName: fn, id: event.id, type: event.type, time: event.time, body },
      options.now,
    ),
  });

  it('functions over HTTP: refuse a request without, or with a bad, expired or misdirected token (401/403), changing nothing', async () => {
    await bus.locks.delete(lockKey(SOURCE, 'web'));
    const url = await serve('planMigration');
    const event = request('web');
    const body = JSON.stringify(toWire(event));
    const refusals: Array<[string, Record<string, string>, number]> = [
      ['no token', {}, 401],
      ['a malformed token', { [AUTH_HEADER]: 'Bearer something' }, 401],
      ['a token signed with another key', token('planMigration', event, body, { key: randomBytes(32) }), 403],
      ['an expired token', token('planMigration', event, body, { now: Date.now() - 120_000 }), 403],
      ['a token for another function', token('finalize', event, body), 403],
      ['a token for another body', token('planMigration', event, body.replace('"web"', '"db"')), 403],
      ['a token for another event id', token('planMigration', { ...event, id: randomUUID() }, body), 403],
    ];
    for (const [what, headers, status] of refusals) {
      assert.equal(await post(url, body, headers), status, what);
    }
    assert.equal(await bus.migrations.get(event.data.migrationId), undefined, 'no record was made');
    assert.deepEqual(await commandsFor(DESTINATION), [], 'no command was sent');
    assert.equal(await bus.locks.get(lockKey(SOURCE, 'web')), undefined, 'no lock was taken');

    // The same request with the bridge's token goes through.
    assert.equal(await post(url, body, token('planMigration', event, body)), 204);
    assert.equal((await bus.migrations.get(event.data.migrationId))?.value.state, 'preflight');
  });

  it('finalize over HTTP acts only on events the stream holds: a forged one, even with a valid token, changes nothing', async () => {
    await bus.locks.delete(lockKey(SOURCE, 'web'));
    const url = await serve('finalize');
    const planned = request('web');
    await planMigration(planned, ctx);
    const { migrationId } = planned.data;
    assert.equal((await bus.migrations.get(migrationId))?.value.state, 'preflight');

    // Well-formed, validly signed (as if the key leaked to a caller, or a request were replayed), never published.
    const forged = makeEvent('restore.failed', '/agents/x', { migrationId, agent: DESTINATION, code: 'image-missing', reason: 'forged' });
    const forgedBody = JSON.stringify(toWire(forged));
    assert.equal(await post(url, forgedBody, token('finalize', forged, forgedBody)), 204, 'acknowledged, so it is not delivered again');
    assert.equal((await bus.migrations.get(migrationId))?.value.state, 'preflight', 'the forged failure changed nothing');

    // A real fact, then a forgery reusing its id with other data: only the real one counts.
    const real = makeEvent('restore.failed', '/agents/gcp', { migrationId, agent: DESTINATION, code: 'image-missing', reason: 'real' });
    await bus.publishEvent(real);
    const altered = { ...real, data: { ...real.data, code: 'disk-full' as const } };
    const alteredBody = JSON.stringify(toWire(altered));
    assert.equal(await post(url, alteredBody, token('finalize', altered, alteredBody)), 204);
    assert.equal((await bus.migrations.get(migrationId))?.value.state, 'preflight', 'the altered copy changed nothing');

    const realBody = JSON.stringify(toWire(real));
    assert.equal(await post(url, realBody, token('finalize', real, realBody)), 204);
    const record = await bus.migrations.get(migrationId);
    assert.equal(record?.value.state, 'failed', 'the published fact is acted on');
    assert.equal(record?.value.failure?.code, 'image-missing');
  });
  it('evacuates a host only on a notice that ends it, asks once per notice as the functions, closes the host, and stops when the notice is withdrawn', async () => {
    await bus.evacuations.delete(SOURCE);
    await bus.agents.put(SOURCE, registration(SOURCE, [container('web'), container('db'), container('cache')]));
    const observedAt = new Date().toISOString();
    const notice = (kind: 'freeze' | 'preemption', noticeId: string) =>
      makeEvent('host.notice', '/agents/azure', {
        agent: SOURCE,
        cloud: 'azure',
        noticeId,
        kind,
        evicts: kind === 'preemption',
        deadline: new Date(Date.now() + 600_000).toISOString(),
        summary: kind === 'freeze' ? 'Freeze Scheduled' : 'Preempt Scheduled',
        observedAt,
      });
    await evacuateHost(notice('freeze', 'F1'), ctx);
    assert.equal(await bus.evacuations.get(SOURCE), undefined, 'a freeze keeps the host and its memory: nothing moves');

    const preempt = notice('preemption', 'P1');
    await evacuateHost(preempt, ctx);
    await evacuateHost(preempt, ctx);
    const record = (await bus.evacuations.get(SOURCE))?.value;
    assert.equal(record?.state, 'evacuating');
    assert.equal(record?.trigger.kind === 'notice' && record.trigger.noticeId, 'P1');
    const moving = record?.items.filter((item) => item.state === 'moving') ?? [];
    assert.equal(moving.length, 2, 'two at a time (the default concurrency)');
    assert.equal(record?.items.filter((item) => item.state === 'pending').length, 1);
    for (const item of moving) {
      // Asked once, in the functions' name (the CLI's principal could not state a request that names an evacuation).
      const asked = await bus.lastEvent(item.migrationId ?? '', 'migration.requested', FUNCTIONS_PRINCIPAL);
      assert.ok(asked?.name === 'migration.requested');
      assert.deepEqual(asked.data.evacuation, { agent: SOURCE, evacuationId: record?.evacuationId });
      assert.equal(asked.data.destinationAgent, DESTINATION);
    }

    // Nothing is planned onto a host whose end is announced.
    await bus.agents.put(DESTINATION, registration(DESTINATION, [container('other')]));
    const onto = request('other', randomUUID(), SOURCE);
    await planMigration(onto, ctx);
    const refused = await bus.migrations.get(onto.data.migrationId);
    assert.equal(refused?.value.state, 'failed');
    assert.match(refused?.value.failure?.reason ?? '', /takes no new service: its cloud announced its end \(azure preemption/);

    const withdrawn = makeEvent('host.notice-withdrawn', '/agents/azure', {
      agent: SOURCE,
      cloud: 'azure',
      noticeId: 'P1',
      kind: 'preemption',
      evicts: true,
      withdrawnAt: new Date().toISOString(),
    });
    await evacuateHost(withdrawn, ctx);
    const cancelled = (await bus.evacuations.get(SOURCE))?.value;
    assert.equal(cancelled?.state, 'cancelled');
    assert.match(cancelled?.cancelReason ?? '', /the azure notice P1 was withdrawn/);
    assert.deepEqual(
      cancelled?.items.map((item) => item.state).sort(),
      ['moving', 'moving', 'not-started'],
      'what was asked for runs to its end; the rest is not started',
    );
    await bus.evacuations.delete(SOURCE);
  });
});
