import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CriClient, type PodSandboxConfig } from '../../agents/cri/cri-client.js';
import type { HostSpec } from '../../cli/stack-info.js';
import type { EventOf } from '../../core/events.js';
import { connectNatsBus, type NatsEventBus } from '../../core/nats-event-bus.js';
import { openObjectStore } from '../../core/object-stores/open-object-store.js';
import type { ContainerdHost } from '../../infra/containerd-host.js';
import { DEFAULT_COUNTER_IMAGE } from '../../infra/images/build-counter-image.js';
import { continuity, parseTicks, type Tick } from '../../infra/images/counter-output.js';
import { AWS_HOST, criPodLogs, DEFAULT_HOSTS, startLocalStack, type LocalStack } from '../../infra/local-stack.js';
import type { PodmanHost } from '../../infra/podman-host.js';
import { umsJson } from './ums-cli.js';

/**
 * Orchestrator level for real: two simulated Kubernetes nodes, each Debian sid's containerd 2.1.9 with its CRI
 * plugin, runc and CRIU (infra/containerd-host.ts), each with its agent speaking the CRI as the kubelet would
 * (agents/orchestrator-level.ts), beside a Podman host, in the whole stack (broker, functions, bridge, the
 * clouds' storage servers) and through the real CLI. No kubelet or API server runs here: the test makes the
 * source pod with the CRI calls the kubelet makes. A pod's container moves gcp -> aws and counts on from its
 * checkpoint in a new pod there; a move to the Podman host is refused before anything freezes, with why.
 */
const AZURE = DEFAULT_HOSTS[0] as HostSpec;
const GCP_NODE: HostSpec = { ...(DEFAULT_HOSTS[1] as HostSpec), engine: 'containerd' };
const AWS_NODE: HostSpec = { ...AWS_HOST, engine: 'containerd' };
const NAMESPACE = 'default';

interface MigrateResult {
  migrationId?: string;
  state: string;
  code?: string;
  reason?: string;
  approach?: string;
  timeline?: { frozenMs: number; totalMs: number; archiveBytes: number };
}

let stack: LocalStack;
let bus: NatsEventBus;
let gcp: ContainerdHost;
let aws: ContainerdHost;
let azure: PodmanHost;
const clients = new Map<string, CriClient>();

function cri(node: ContainerdHost): CriClient {
  let client = clients.get(node.name);
  if (client === undefined) {
    client = new CriClient({ socket: node.socketPath, name: node.name });
    clients.set(node.name, client);
  }
  return client;
}

/** As the kubelet makes a pod of one container: the sandbox (on the node's network: no CNI here), then the container. */
async function runPod(node: ContainerdHost, name: string, memoryMiB: number): Promise<void> {
  const token = randomBytes(6).toString('hex');
  const uid = randomUUID();
  const sandbox: PodSandboxConfig = {
    metadata: { name, uid, namespace: NAMESPACE, attempt: 0 },
    logDirectory: join(criPodLogs(node), `${NAMESPACE}_${name}_${uid}`),
    linux: { cgroupParent: node.cgroupParent, securityContext: { namespaceOptions: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } },
  };
  const client = cri(node);
  const podId = await client.runPodSandbox(sandbox);
  const containerId = await client.createContainer(
    podId,
    {
      metadata: { name: 'counter' },
      image: { image: DEFAULT_COUNTER_IMAGE },
      logPath: 'counter/0.log',
      envs: [
        { key: 'COUNTER_TICK_MS', value: '100' },
        { key: 'COUNTER_MEM_MIB', value: String(memoryMiB) },
        { key: 'COUNTER_TOKEN', value: token },
      ],
    },
    sandbox,
  );
  await client.startContainer(containerId);
}

/** The pods named `name` on the node, and their containers' states. */
async function podsNamed(node: ContainerdHost, name: string): Promise<Array<{ uid: string; ready: boolean; states: string[] }>> {
  const client = cri(node);
  const [pods, containers] = await Promise.all([client.listPodSandboxes(), client.listContainers()]);
  return pods
    .filter((p) => p.metadata?.name === name && p.metadata.namespace === NAMESPACE)
    .map((p) => ({
      uid: p.metadata?.uid ?? '',
      ready: p.state === 'SANDBOX_READY',
      states: containers.filter((c) => c.podSandboxId === p.id).map((c) => c.state),
    }));
}

/** The counter's ticks in the log of the running pod named `name` (CRI log lines: `<time> <stream> <P|F> <text>`). */
async function ticksOf(node: ContainerdHost, name: string): Promise<Tick[]> {
  const running = (await podsNamed(node, name)).find((p) => p.states.includes('CONTAINER_RUNNING'));
  if (running === undefined) return [];
  const path = join(criPodLogs(node), `${NAMESPACE}_${name}_${running.uid}`, 'counter', '0.log');
  return parseTicks((await readFile(path, 'utf8').catch(() => '')).replace(/^\S+ (?:stdout|stderr) [PF] /gm, ''));
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(200);
  }
}

async function listed(agentId: string, name: string): Promise<void> {
  await waitFor(`${name} listed running by ${agentId}`, async () => {
    const registration = (await bus.agents.get(agentId).catch(() => undefined))?.value;
    return registration?.containers.some((c) => c.name === name && c.state === 'running') === true ? true : undefined;
  });
}

describe('orchestrator level on two Kubernetes nodes (containerd 2 through the CRI)', { timeout: 600_000 }, () => {
  before(async () => {
    stack = await startLocalStack({
      name: `cri-${process.pid}`,
      dir: join(tmpdir(), `ums-cri-${process.pid}`),
      hosts: [AZURE, GCP_NODE, AWS_NODE],
    });
    bus = await connectNatsBus({ ...stack.admin, name: 'cri-e2e' });
    gcp = stack.criNodes.get(GCP_NODE.agentId) as ContainerdHost;
    aws = stack.criNodes.get(AWS_NODE.agentId) as ContainerdHost;
    azure = stack.hosts.get(AZURE.agentId) as PodmanHost;
  });

  after(async () => {
    for (const client of clients.values()) client.close();
    await bus?.close();
    await stack?.stop();
  });

  it('registers the nodes for orchestrator level only, and Podman hosts without it, each with the reason', async () => {
    const node = await waitFor(
      'the gcp node registered',
      async () => (await bus.agents.get(GCP_NODE.agentId).catch(() => undefined))?.value,
    );
    assert.deepEqual(node.approaches, ['orchestrator']);
    assert.equal(node.capabilities.orchestratorLevel.available, true, node.capabilities.orchestratorLevel.reason);
    assert.match(node.capabilities.orchestratorLevel.runtime ?? '', /^containerd 2\./);
    assert.equal(node.capabilities.containerLevel.available, false);
    assert.match(node.capabilities.containerLevel.reason ?? '', /Kubernetes node .* orchestrator level, through the CRI/);
    const podman = (await bus.agents.get(AZURE.agentId))?.value;
    assert.equal(podman?.capabilities.orchestratorLevel.available, false);
  });

  it("moves a pod's container gcp -> aws: it counts on from its checkpoint in a new pod there, and nothing is left on gcp", async () => {
    const name = 'counter-node';
    await runPod(gcp, name, 16);
    await listed(GCP_NODE.agentId, name);
    await waitFor('ticks on gcp', async () => ((await ticksOf(gcp, name)).length >= 10 ? true : undefined));
    const countBefore = (await ticksOf(gcp, name)).at(-1)?.count ?? 0;

    const migrationId = randomUUID();
    const { code, json } = await umsJson<MigrateResult>(stack.info, ['migrate', name, '--to', AWS_NODE.agentId, '--id', migrationId]);
    assert.equal(code, 0, `migration failed: ${json.code ?? ''} ${json.reason ?? ''}`);
    const record = (await bus.migrations.get(migrationId))?.value;
    console.log(
      `orchestrator level gcp -> aws (16 MiB counter): frozen ${json.timeline?.frozenMs ?? '?'} ms, total ${json.timeline?.totalMs ?? '?'} ms, archive ${json.timeline?.archiveBytes ?? '?'} bytes`,
    );
    assert.equal(record?.approach, 'orchestrator');
    assert.equal(record?.state, 'done');

    // Counts on in the new pod: from the checkpoint's state (never from 1), at most the ticks between the
    // dump's end and the stop redone (the CRI checkpoint lets the container run until it is stopped).
    const ticks = await waitFor('ticks on aws', async () => {
      const t = await ticksOf(aws, name);
      return t.length >= 10 ? t : undefined;
    });
    const flow = continuity(ticks);
    assert.ok(flow.continuous, `the restored count breaks: ${JSON.stringify(flow.break)}`);
    const first = ticks[0] as Tick;
    assert.ok(
      first.count > countBefore,
      `the restored counter starts at ${first.count}, after the ${countBefore} seen before the migration`,
    );

    const onAws = await podsNamed(aws, name);
    assert.equal(onAws.length, 1, 'one pod of that name on aws');
    assert.deepEqual(onAws[0]?.states, ['CONTAINER_RUNNING']);
    await waitFor('the source pod removed from gcp', async () => ((await podsNamed(gcp, name)).length === 0 ? true : undefined));
    // The tars held the process's memory: neither node keeps one, and the store keeps no archive.
    for (const host of stack.info.hosts.filter((h) => h.engine === 'containerd')) {
      const dir = join(host.socketPath, '..', 'agent-state', 'checkpoints');
      const left = await readdir(dir).catch(() => [] as string[]);
      assert.deepEqual(left, [], `no checkpoint tar left in ${dir}`);
    }
    if (record?.artifactLocation) {
      const store = await openObjectStore(record.artifactLocation.storeUrl, { ...process.env, ...stack.storeEnv.gcs });
      const keys = await waitFor('the archive removed from the store', async () => {
        const found: string[] = [];
        for await (const object of store.list(record.artifactLocation?.prefix ?? '')) found.push(object.key);
        return found.length === 0 ? found : undefined;
      });
      assert.deepEqual(keys, []);
    }
  });

  it('refuses a move from a node to a Podman host before anything freezes, saying why each approach cannot', async () => {
    const name = 'counter-node';
    await listed(AWS_NODE.agentId, name);
    const before = (await ticksOf(aws, name)).at(-1)?.count ?? 0;
    const { code, json } = await umsJson<MigrateResult>(stack.info, ['migrate', name, '--to', AZURE.agentId]);
    assert.notEqual(code, 0, 'the migration was refused');
    assert.match(json.reason ?? '', /orchestrator/);
    assert.match(json.reason ?? '', /Kubernetes node/);
    await sleep(1_000);
    const after = (await ticksOf(aws, name)).at(-1)?.count ?? 0;
    assert.ok(after > before, 'the pod on aws kept counting');
    const states = JSON.parse((await azure.podman(['ps', '-a', '--format', 'json'])).stdout) as Array<{ Names: string[] }>;
    assert.ok(!states.some((c) => c.Names.includes(name)), 'nothing was created on the Podman host');
  });

  it('rolls back when the archive is corrupted in the store after the freeze: the source node restores its kept tar and counts on', async () => {
    const name = 'counter-node';
    await listed(AWS_NODE.agentId, name);
    const countBefore = (await ticksOf(aws, name)).at(-1)?.count ?? 0;
    // The destination agent dies once it is ready, before the first chunk is there; while it is down the
    // first chunk is overwritten in the source's store, so the restarted agent finds its digest wrong.
    const destinationAgent = stack.services.get(`agent-${GCP_NODE.agentId}`);
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
    const running = umsJson<MigrateResult & { runningOn?: string | null }>(stack.info, [
      ...['migrate', name, '--to', GCP_NODE.agentId, '--id', migrationId],
    ]);
    const { artifact } = (await uploaded).data;
    const store = await openObjectStore(artifact.storeUrl, { ...process.env, ...stack.storeEnv.s3 });
    const first = `${artifact.prefix}chunks/000000`;
    await store.put(first, Readable.from([randomBytes((await store.head(first))?.size ?? 0)]));
    await destinationAgent.start();

    const { code, json } = await running;
    assert.equal(code, 1);
    assert.equal(json.code, 'digest-mismatch', json.reason);
    assert.equal(json.runningOn, AWS_NODE.agentId);
    // Resumed from the tar kept on aws, in a new pod of the same name: its count goes on from the checkpoint.
    const ticks = await waitFor('ticks of the resumed pod', async () => {
      const t = await ticksOf(aws, name);
      return t.length >= 5 && (t[0]?.count ?? 0) > countBefore ? t : undefined;
    });
    assert.ok(continuity(ticks).continuous, 'the resumed count goes on by one per tick');
    const onAws = await podsNamed(aws, name);
    assert.equal(onAws.length, 1, 'one pod of that name on aws: the stopped one was replaced');
    assert.deepEqual(onAws[0]?.states, ['CONTAINER_RUNNING']);
    await waitFor('nothing left on gcp', async () => ((await podsNamed(gcp, name)).length === 0 ? true : undefined));
  });
});
