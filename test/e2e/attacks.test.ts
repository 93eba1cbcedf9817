import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadOrCreateSealingKey } from '../../agents/sealing-key.js';
import { Manifest, manifestKey } from '../../core/checkpoint-artifact.js';
import { SealingError, unwrapDataKey } from '../../core/checkpoint-sealing.js';
import { subjects } from '../../core/event-bus.js';
import { agentPrincipal, CLI_PRINCIPAL } from '../../core/event-identity.js';
import { AUTH_HEADER } from '../../core/function-auth.js';
import { makeEvent, parseCommand, toWire, type EventOf, type UmsCommand } from '../../core/events.js';
import { connectNatsBus, type NatsEventBus } from '../../core/nats-event-bus.js';
import { openObjectStore } from '../../core/object-stores/open-object-store.js';
import { readTicks } from '../../infra/images/counter-output.js';
import { AWS_HOST, DEFAULT_HOSTS, startLocalStack, type LocalStack } from '../../infra/local-stack.js';
import type { PodmanHost } from '../../infra/podman-host.js';
import { BrokerClient } from '../broker-client.js';
import { BrokerRefusals } from '../broker-refusals.js';
import { runCounter } from './counter-container.js';
import { umsJson } from './ums-cli.js';

/**
 * The attack chains of the trust issue, each reproduced against the running stack (real broker with its
 * TLS and permissions, real functions behind their HTTP auth, real agents, real stores), each refused with
 * nothing moved, restored or deleted: the victim service keeps running, exactly once, where it was.
 */
const AZURE = 'azure-eastus-1';
const GCP = 'gcp-us-central1-1';
/** The attacker's host: a real agent of the deployment whose credential was stolen. */
const AWS = AWS_HOST.agentId;

let stack: LocalStack;
let bus: NatsEventBus;
let azure: PodmanHost;
let gcp: PodmanHost;
let refusals: BrokerRefusals;

const credentialOf = (principal: string): string => join(stack.info.dir, 'security', 'credentials', `${principal}.json`);
const connectAs = (principal: string) => refusals.connectAs(stack.info.natsUrl, credentialOf(principal), stack.admin.ca ?? '');

const running = async (host: PodmanHost): Promise<string[]> =>
  (JSON.parse((await host.podman(['ps', '--format', 'json'])).stdout) as Array<{ Names: string[] }>).map((c) => c.Names[0] ?? '?');

/** The victim is still where it was, running once, and still counting. */
async function untouched(name: string): Promise<void> {
  assert.ok(!(await running(gcp)).includes(name), `${name} was not restored at the other host`);
  assert.ok((await running(azure)).includes(name), `${name} still runs at the source`);
  const before = (await readTicks(azure.url, name)).at(-1)?.count ?? 0;
  await sleep(400);
  const now = (await readTicks(azure.url, name)).at(-1)?.count ?? 0;
  assert.ok(now > before, `${name} is still counting (${before} -> ${now})`);
}

/** Every regular file under `dir`, recursively (sockets, fifos and links skipped). */
async function* filesUnder(dir: string): AsyncGenerator<string> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* filesUnder(path);
    else if (entry.isFile()) yield path;
  }
}

/** Where under `dirs` any of `needles` lies on disk. */
async function findOnDisk(dirs: string[], needles: Buffer[]): Promise<string[]> {
  const found: string[] = [];
  for (const dir of dirs) {
    for await (const path of filesUnder(dir)) {
      if ((await stat(path)).size > 512 * 1024 * 1024) continue;
      const body = await readFile(path).catch(() => undefined);
      if (body && needles.some((needle) => body.includes(needle))) found.push(path);
    }
  }
  return found;
}

describe('attacks on the running stack are refused, and nothing moves', { timeout: 900_000 }, () => {
  before(async () => {
    stack = await startLocalStack({
      name: `attacks-${process.pid}`,
      dir: join(tmpdir(), `ums-attacks-${process.pid}`),
      hosts: [...DEFAULT_HOSTS, AWS_HOST],
    });
    bus = await connectNatsBus({ ...stack.admin, name: 'attacks-test' });
    azure = stack.hosts.get(AZURE) as PodmanHost;
    gcp = stack.hosts.get(GCP) as PodmanHost;
    refusals = new BrokerRefusals(join(stack.info.dir, 'nats', 'nats.log'));
  });

  after(async () => {
    await bus?.close();
    await stack?.stop();
  });

  it('an anonymous client, or one without TLS, is refused by the broker', async () => {
    const { connect } = await import('nats');
    await assert.rejects(
      connect({ servers: stack.info.natsUrl, tls: { caFile: stack.admin.ca ?? '' }, reconnect: false }),
      /Authorization/i,
    );
    await assert.rejects(connect({ servers: stack.info.natsUrl.replace('tls://', 'nats://'), reconnect: false, timeout: 2_000 }));
  });

  it("a stolen agent credential cannot make the source discard the only copy mid-migration, nor take the destination's URLs or data key", async () => {
    const name = 'victim-forged-fact';
    await runCounter(azure, name, stack.info.image);
    const migrationId = randomUUID();
    // The destination's agent goes down before the first chunk; the source freezes and uploads: its kept
    // checkpoint is then the only copy of the service, exactly what a forged restore.completed would destroy.
    const destinationAgent = stack.services.get(`agent-${GCP}`);
    assert.ok(destinationAgent);
    const uploaded = new Promise<void>((resolve) => {
      void bus.followMigration(migrationId, async (event) => {
        if (event.name === 'restore.prepared') await destinationAgent.kill();
        if (event.name !== 'checkpoint.uploaded') return;
        resolve();
        return 'stop';
      });
    });
    const run = umsJson<{ state: string }>(stack.info, ['migrate', name, '--to', GCP, '--id', migrationId]);
    try {
      await uploaded;
      const at = new Date().toISOString();
      const completed = JSON.stringify(
        toWire(
          makeEvent('restore.completed', `/ums/agents/${GCP}`, {
            migrationId,
            agent: GCP,
            container: name,
            containerId: 'f'.repeat(64),
            downloadedAt: at,
            restoredAt: at,
          }),
        ),
      );
      const attacker = await connectAs(agentPrincipal(AWS));
      try {
        // As the destination, on its subject: the broker refuses. On the attacker's own subject, naming the
        // destination: the broker stores it, and everyone who reads facts ignores it (core/event-identity.ts).
        await refusals.assertPublishRefused(attacker, subjects.event(migrationId, agentPrincipal(GCP), 'restore.completed'), completed);
        await attacker
          .jetstream()
          .publish(subjects.event(migrationId, agentPrincipal(AWS), 'restore.completed'), new TextEncoder().encode(completed));
        // The destination's queue (its signed chunk URLs): neither its consumer, nor its messages, nor a listen.
        await refusals.assertPublishRefused(attacker, `$JS.API.CONSUMER.CREATE.UMS_COMMANDS.agent-${GCP}.ums.commands.${GCP}`);
        await refusals.assertPublishRefused(attacker, `$JS.API.CONSUMER.MSG.NEXT.UMS_COMMANDS.agent-${GCP}`);
        await refusals.assertPublishRefused(attacker, `$JS.API.DIRECT.GET.${subjects.commandsStream}`);
        await refusals.assertSubscribeRefused(attacker, subjects.commandsFor(GCP));
        // Nor can it ask for migrations (to itself), or register in another agent's name.
        await refusals.assertPublishRefused(attacker, subjects.event(randomUUID(), CLI_PRINCIPAL, 'migration.requested'));
        await refusals.assertPublishRefused(attacker, `$KV.ums_agents.${GCP}`);
      } finally {
        await attacker.close();
      }
      // The data key, which any agent may read in the source's facts, is wrapped for the destination alone.
      const eavesdropper = await connectNatsBus({
        servers: stack.info.natsUrl,
        credentials: credentialOf(agentPrincipal(AWS)),
        ca: stack.admin.ca,
        name: 'attacker',
      });
      const chunk = await eavesdropper
        .lastEvent(migrationId, 'checkpoint.chunk', agentPrincipal(AZURE))
        .finally(() => eavesdropper.close());
      assert.ok(chunk, "the attacker reads the source's chunk facts");
      const { sealing } = chunk.data;
      const attackerKey = await loadOrCreateSealingKey(join((stack.hosts.get(AWS) as PodmanHost).dir, 'agent-state'));
      assert.throws(
        () => unwrapDataKey(sealing.wrappedKey, attackerKey.privateKey, migrationId, Buffer.from(sealing.noncePrefix, 'base64')),
        SealingError,
      );
      const operator = await connectAs(CLI_PRINCIPAL);
      try {
        await refusals.assertPublishRefused(operator, subjects.event(migrationId, CLI_PRINCIPAL, 'restore.completed'), completed);
      } finally {
        await operator.close();
      }
      await sleep(3_000);
      const record = (await bus.migrations.get(migrationId))?.value;
      assert.ok(record && ['uploaded', 'restoring'].includes(record.state), `the saga did not move on: ${record?.state ?? 'no record'}`);
      const kept = JSON.parse((await azure.podman(['ps', '-a', '--format', 'json'])).stdout) as Array<{ Names: string[] }>;
      assert.ok(
        kept.some((c) => c.Names.includes(name)),
        "the source's kept checkpoint is still there",
      );
    } finally {
      // Whatever happened above, the real destination returns: a failed check must not leave it down for the next cases.
      if (!destinationAgent.running) await destinationAgent.start();
    }
    // The real destination is back (above) and completes the migration: the service runs once, at the destination.
    const { code, json } = await run;
    assert.equal(code, 0, JSON.stringify(json));
    assert.equal(json.state, 'done');
    assert.ok(!(await running(azure)).includes(name), 'the source does not run it any more');
    assert.ok((await running(gcp)).includes(name));
    await gcp.podman(['rm', '-f', name]);
  });

  it('an old signed command replayed to an agent is refused, and the service it names is untouched', async () => {
    const name = 'victim-replay';
    await runCounter(azure, name, stack.info.image);
    // What an attacker with a tap on the broker's traffic could keep: every command of one migration.
    const tap = await BrokerClient.connect(stack.admin);
    const captured: UmsCommand[] = [];
    const tapping = tap.tap(`${subjects.commandsFor(AZURE)}`, (data) => captured.push(parseCommand(data)));
    const there = await umsJson<{ state: string }>(stack.info, ['migrate', name, '--to', GCP]);
    assert.equal(there.code, 0, JSON.stringify(there.json));
    await tapping.stop();
    const back = await umsJson<{ state: string }>(stack.info, ['migrate', name, '--to', AZURE]);
    assert.equal(back.code, 0, JSON.stringify(back.json));
    const checkpoint = captured.find((c) => c.name === 'checkpoint');
    const discard = captured.find((c) => c.name === 'discard');
    assert.ok(checkpoint && discard, `captured the first migration's checkpoint and discard: ${captured.map((c) => c.name).join(', ')}`);
    // The service is back at azure; the first migration's checkpoint (freeze it) and discard (remove it),
    // validly signed and not yet expired, are put in azure's queue again.
    const lettersBefore = (await bus.listDeadLetters(500)).length;
    for (const command of [checkpoint, discard]) await tap.publishRaw(subjects.commandsFor(AZURE), JSON.stringify(toWire(command)));
    await tap.close();
    let refused: string[] = [];
    for (let i = 0; i < 100 && refused.length < 2; i++) {
      await sleep(200);
      refused = (await bus.listDeadLetters(500)).slice(lettersBefore).map((letter) => letter.reason);
    }
    assert.equal(refused.length, 2, `both replays refused: ${JSON.stringify(refused)}`);
    assert.ok(
      refused.every((reason) => /^stale command: (checkpoint|discard)/.test(reason)),
      JSON.stringify(refused),
    );
    await untouched(name);
    await azure.podman(['rm', '-f', name]);
  });

  it("a caller of a function's HTTP endpoint without the bridge's token is refused: a forged restore.completed discards nothing", async () => {
    const name = 'victim-http';
    await runCounter(azure, name, stack.info.image);
    const migrationId = randomUUID();
    const forged = {
      specversion: '1.0',
      id: randomUUID(),
      source: `/ums/agents/${GCP}`,
      type: 'dev.ums.restore.completed.v1',
      subject: migrationId,
      time: new Date().toISOString(),
      datacontenttype: 'application/json',
      data: { migrationId, agent: GCP, container: name, restoredAt: new Date().toISOString() },
    };
    const finalize = stack.info.functions.finalize;
    assert.ok(finalize, 'the stack serves finalize');
    const post = (headers: Record<string, string>) =>
      fetch(finalize, {
        method: 'POST',
        headers: { 'content-type': 'application/cloudevents+json', ...headers },
        body: JSON.stringify(forged),
      });
    const anonymous = await post({});
    assert.equal(anonymous.status, 401, await anonymous.text());
    const guessed = await post({
      [AUTH_HEADER]: `v1;exp=${Date.now() + 30_000};sig=${randomBytes(32).toString('base64url').slice(0, 43)}`,
    });
    assert.equal(guessed.status, 403, await guessed.text());
    assert.equal(await bus.migrations.get(migrationId), undefined, 'no record was made');
    await untouched(name);
    await azure.podman(['rm', '-f', name]);
  });

  it("the migration's data key lies in no bucket, nowhere in the broker's store, in no log and no agent state", async () => {
    const name = 'victim-keys';
    await runCounter(azure, name, stack.info.image);
    const migrationId = randomUUID();
    // The data key is learnt the way only the destination can: unwrapped with its private key.
    const sealing = new Promise<EventOf<'checkpoint.uploaded'>>((resolve) => {
      void bus.followMigration(migrationId, (event) => {
        if (event.name !== 'checkpoint.uploaded') return;
        resolve(event);
        return 'stop';
      });
    });
    const run = umsJson<{ state: string }>(stack.info, ['migrate', name, '--to', GCP, '--id', migrationId]);
    const { artifact } = (await sealing).data;
    const store = await openObjectStore(artifact.storeUrl, { ...process.env, ...stack.storeEnv.azure });
    const manifestBody: Buffer[] = [];
    for await (const piece of await store.get(manifestKey(artifact.prefix))) manifestBody.push(piece as Buffer);
    const manifest = Manifest.parse(JSON.parse(Buffer.concat(manifestBody).toString('utf8')));
    const destinationKey = await loadOrCreateSealingKey(join(gcp.dir, 'agent-state'));
    const dataKey = unwrapDataKey(
      manifest.sealing.wrappedKey,
      destinationKey.privateKey,
      migrationId,
      Buffer.from(manifest.sealing.noncePrefix, 'base64'),
    );
    // The search reaches what it must: the wrapped key (harmless) shows in the bucket's files and the broker's.
    const wrapped = Buffer.from(manifest.sealing.wrappedKey.ciphertext);
    for (const place of ['storage', 'nats']) {
      assert.notDeepEqual(await findOnDisk([join(stack.info.dir, place)], [wrapped]), [], `the wrapped key is found in ${place}`);
    }
    const { code, json } = await run;
    assert.equal(code, 0, JSON.stringify(json));
    await sleep(2_000);
    const forms = [
      dataKey,
      Buffer.from(dataKey.toString('base64')),
      Buffer.from(dataKey.toString('base64url')),
      Buffer.from(dataKey.toString('hex')),
    ];
    const places = ['nats', 'storage', 'logs', join(azure.dir, 'agent-state'), join(gcp.dir, 'agent-state')].map((p) =>
      p.startsWith('/') ? p : join(stack.info.dir, p),
    );
    assert.deepEqual(await findOnDisk(places, forms), [], 'the data key is nowhere on disk');
    await gcp.podman(['rm', '-f', name]);
  });
});
