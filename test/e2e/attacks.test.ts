import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadOrCreateSealingKey } from '../../agents/sealing-key.js';
import { Manifest, manifestKey } from '../../core/checkpoint-artifact.js';
import { unwrapDataKey } from '../../core/checkpoint-sealing.js';
import { AUTH_HEADER } from '../../core/function-auth.js';
import type { EventOf } from '../../core/events.js';
import { connectNatsBus, type NatsEventBus } from '../../core/nats-event-bus.js';
import { openObjectStore } from '../../core/object-stores/open-object-store.js';
import { readTicks } from '../../infra/images/counter-output.js';
import { DEFAULT_HOSTS, startLocalStack, type LocalStack } from '../../infra/local-stack.js';
import type { PodmanHost } from '../../infra/podman-host.js';
import { umsJson } from './ums-cli.js';

/**
 * The attack chains of the trust issue, each reproduced against the running stack (real broker with its
 * TLS and permissions, real functions behind their HTTP auth, real agents, real stores), each refused with
 * nothing moved, restored or deleted: the victim service keeps running, exactly once, where it was.
 */
const AZURE = 'azure-eastus-1';
const GCP = 'gcp-us-central1-1';

let stack: LocalStack;
let bus: NatsEventBus;
let azure: PodmanHost;
let gcp: PodmanHost;

async function runCounter(host: PodmanHost, name: string): Promise<void> {
  await host.podman([
    'run',
    '-d',
    '--name',
    name,
    '-e',
    `COUNTER_TOKEN=${randomBytes(8).toString('hex')}`,
    '-e',
    'COUNTER_TICK_MS=100',
    stack.info.image,
  ]);
  await sleep(1_500);
}

const running = async (host: PodmanHost): Promise<string[]> =>
  (JSON.parse((await host.podman(['ps', '--format', 'json'])).stdout) as Array<{ Names: string[] }>).map((c) => c.Names[0] ?? '?');

/** The victim is still where it was, running once, and still counting. */
async function untouched(name: string): Promise<void> {
  assert.deepEqual(await running(gcp), [], 'nothing was restored at the other host');
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
      hosts: DEFAULT_HOSTS,
    });
    bus = await connectNatsBus({ ...stack.admin, name: 'attacks-test' });
    azure = stack.hosts.get(AZURE) as PodmanHost;
    gcp = stack.hosts.get(GCP) as PodmanHost;
  });

  after(async () => {
    await bus?.close();
    await stack?.stop();
  });

  it("a caller of a function's HTTP endpoint without the bridge's token is refused: a forged restore.completed discards nothing", async () => {
    const name = 'victim-http';
    await runCounter(azure, name);
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
    await runCounter(azure, name);
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
