import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AgentRegistration } from '../../core/agent-registration.js';
import type { ContainerNetwork } from '../../core/container-network.js';
import { baselineProfile } from '../../core/container-security.js';
import { expectImage, planAgainst } from '../../core/migration-plan.js';
import { formatPlan, planSummary } from '../../cli/format.js';

const MiB = 1024 * 1024;
const IMAGE = 'localhost/ums/counter-launched:1';
const IMAGE_ID = 'a'.repeat(64);
const NOW = Date.parse('2026-11-28T04:00:00Z');

type Container = AgentRegistration['containers'][number];

function agent(agentId: string, containers: Container[], extra: Partial<AgentRegistration> = {}): AgentRegistration {
  const at = new Date(NOW - 1_000).toISOString();
  return {
    agentId,
    cloud: 'azure',
    region: 'r',
    storeUrl: 'file:///s',
    approaches: ['container', 'service'],
    capabilities: {
      containerLevel: { available: true, engine: 'podman 4.3.1', criuVersion: '4.1.1' },
      orchestratorLevel: { available: false, reason: 'UMS_KUBELET_URL is not set' },
      plainContainers: { available: true },
    },
    engine: { engine: 'podman', version: '4.3.1', apiVersion: '4.3.1', ociRuntime: 'runc', criuVersion: '4.1.1', kernel: '6.18' },
    freeMemoryBytes: 1e10,
    freeDiskBytes: 1e11,
    images: [IMAGE],
    imageIds: [IMAGE_ID],
    containers,
    startedAt: at,
    heartbeatAt: at,
    ...extra,
  };
}

const launched = (name: string, processCount: number, memoryBytes = 8 * MiB): Container => ({
  name,
  image: IMAGE,
  imageId: IMAGE_ID,
  state: 'running',
  checkpointed: false,
  traits: { processCount, memoryBytes, launcher: { available: true, version: '1' } },
});

/** A running container of IMAGE without the launcher. */
const unlaunched = (name: string, traits: Container['traits']): Container => ({
  name,
  image: IMAGE,
  imageId: IMAGE_ID,
  state: 'running',
  checkpointed: false,
  ...(traits !== undefined ? { traits } : {}),
});

describe('planAgainst: registrations to a plan, as planMigration and `ums plan` see them', () => {
  it('picks service level where the launcher runs and container level for a multi-process container without it', () => {
    const plain = unlaunched('plain', { launcher: { available: false, reason: 'no launcher control socket' } });
    const agents = [agent('a', [launched('one', 1), launched('five', 5), plain]), agent('b', [])];
    for (const name of ['one', 'five']) {
      const plan = planAgainst(agents, { container: name, destinationAgent: 'b' }, NOW);
      assert.ok(plan.ok && plan.decision.approach === 'service', `${name}: ${plan.ok ? plan.decision.reason : plan.reason}`);
      assert.ok(!/service \d/.test(plan.decision.reason), `the reason compares with the others only: ${plan.decision.reason}`);
    }
    const multi = planAgainst(agents, { container: 'plain', destinationAgent: 'b' }, NOW);
    assert.ok(multi.ok && multi.decision.approach === 'container');
  });

  it('takes the one running copy as the source when a stopped copy of the name is listed elsewhere; two running copies are ambiguous', () => {
    const stopped: Container = { ...launched('web', 1), state: 'exited', checkpointed: true };
    // Moving back at once: the old source's registration may still list its copy a moment after the discard.
    const back = planAgainst(
      [agent('a', [stopped]), agent('b', [launched('web', 1)]), agent('c', [])],
      { container: 'web', destinationAgent: 'a' },
      NOW,
    );
    assert.ok(back.ok, back.ok ? '' : back.reason);
    assert.equal(back.source.agentId, 'b');
    const twice = planAgainst(
      [agent('a', [launched('web', 1)]), agent('b', [launched('web', 1)]), agent('c', [])],
      { container: 'web', destinationAgent: 'c' },
      NOW,
    );
    assert.ok(!twice.ok && twice.code === 'invalid-request');
    assert.match(twice.reason, /exists on several agents \(a, b\); name the source with --from/);
  });

  it('`ums plan` says how big the archive is expected to be and what that rests on', () => {
    const measured: Container = {
      ...launched('big', 2, 768 * MiB),
      traits: { processCount: 2, memoryBytes: 768 * MiB, rootfsChangesBytes: 3 * MiB },
    };
    const unknown: Container = { ...launched('unknown', 1), traits: { processCount: 1 } };
    const agents = [agent('a', [measured, unknown]), agent('b', [])];
    const plan = planAgainst(agents, { container: 'big', destinationAgent: 'b' }, NOW);
    assert.ok(plan.ok);
    const text = formatPlan(plan);
    assert.match(text, /archive ~771\.0 MiB: 768 MiB resident memory of 2 process\(es\), measured \+ 3 MiB rootfs changes/);
    assert.doesNotMatch(text, /only as good as that assumption/);
    assert.deepEqual((planSummary(plan) as { archive: unknown }).archive, plan.decision.archive);
    const guessed = planAgainst(agents, { container: 'unknown', destinationAgent: 'b' }, NOW);
    assert.ok(guessed.ok);
    assert.match(formatPlan(guessed), /archive ~64\.0 MiB: memory unknown .*assumed 64 MiB[\s\S]*only as good as that assumption/);
  });

  it('`ums plan` says how volumes move and which host paths must exist at the destination; the freeze is estimated without the volumes copied before it', () => {
    const volume = { name: 'data', destination: '/var/lib/redis', bytes: 1024 * MiB };
    const mounts = [
      { source: '/var/lib/containers/storage/volumes/data/_data', destination: '/var/lib/redis' },
      { source: '/srv/config', destination: '/etc/app' },
    ];
    const security = { ...baselineProfile(IMAGE_ID), mounts };
    const container = (name: string, outsideFreeze: boolean): Container => ({
      ...launched(name, 1, 64 * MiB),
      traits: {
        processCount: 1,
        memoryBytes: 64 * MiB,
        security,
        volumes: outsideFreeze
          ? { outsideFreeze, list: [volume] }
          : { outsideFreeze, reason: 'volume "data" is not a plain local directory', list: [volume] },
      },
    });
    const agents = [agent('a', [container('outside', true), container('inside', false)]), agent('b', [])];
    const outside = planAgainst(agents, { container: 'outside', destinationAgent: 'b', approach: 'container' }, NOW);
    assert.ok(outside.ok);
    assert.deepEqual(outside.storage?.binds, [{ source: '/srv/config', destination: '/etc/app' }], 'the volume is not a bind mount');
    assert.match(
      outside.storage?.volumesMove ?? '',
      /^copied while the service runs \(~[\d.]+ s for 1024\.0 MiB\), then only the files changed since/,
    );
    assert.equal(outside.decision.archive.bytes, 64 * MiB, 'frozen: the memory only');
    assert.equal(outside.decision.archive.beforeFreezeBytes, 1024 * MiB);
    const text = formatPlan(outside);
    for (const line of [
      'storage:\n  volumes: copied while the service runs',
      '\n    data at /var/lib/redis, 1.0 GiB\n',
      '\n  bind mounts (host paths, not moved: the destination must have them):\n    /srv/config at /etc/app',
    ])
      assert.ok(text.includes(line), `${JSON.stringify(line)} in:\n${text}`);
    const inside = planAgainst(agents, { container: 'inside', destinationAgent: 'b', approach: 'container' }, NOW);
    assert.ok(inside.ok);
    assert.equal(inside.decision.archive.bytes, 1088 * MiB, 'in the archive, the volume is frozen too');
    assert.match(
      inside.storage?.volumesMove ?? '',
      /^in the checkpoint archive, while the service is frozen: volume "data" is not a plain local directory/,
    );
    assert.ok(
      (inside.decision.candidates.find((c) => c.approach === 'container')?.estimatedMs ?? 0) >
        (outside.decision.candidates.find((c) => c.approach === 'container')?.estimatedMs ?? 0),
    );
  });

  it('sends the memory beside the archive only at container level, in stop-and-copy, when both hosts can', () => {
    const plain = unlaunched('plain', { processCount: 1 });
    const can = (available: boolean) => ({
      containerLevel: { available: true, engine: 'podman 4.3.1', criuVersion: '4.2.1' },
      orchestratorLevel: { available: false, reason: 'UMS_KUBELET_URL is not set' },
      plainContainers: { available: true },
      memoryBeside: available ? { available: true } : { available: false, reason: 'the runtime shim is not installed' },
    });
    const plan = (source: boolean, destination: boolean, container: Container = plain) =>
      planAgainst(
        [agent('a', [container], { capabilities: can(source) }), agent('b', [], { capabilities: can(destination) })],
        {
          container: container.name,
          destinationAgent: 'b',
        },
        NOW,
      );
    const both = plan(true, true);
    assert.ok(both.ok && both.decision.approach === 'container' && both.memoryBeside, 'both hosts have the shim');
    assert.match(formatPlan(both), /sends the memory as CRIU writes it/);
    assert.equal((planSummary(both) as { memoryBeside: boolean }).memoryBeside, true);
    for (const [source, destination] of [
      [true, false],
      [false, true],
    ] as const) {
      const one = plan(source, destination);
      assert.ok(one.ok && !one.memoryBeside, `source ${source}, destination ${destination}: in the archive`);
      assert.doesNotMatch(formatPlan(one), /sends the memory/);
      const estimate = (p: typeof one) => (p.ok ? p.decision.candidates.find((c) => c.approach === 'container')?.estimatedMs : undefined);
      assert.ok((estimate(both) ?? Infinity) < (estimate(one) ?? 0), 'the freeze is predicted shorter when the memory goes beside');
    }
    const service = plan(true, true, launched('svc', 1));
    assert.ok(service.ok && service.decision.approach === 'service' && !service.memoryBeside, 'service level has its own dump');
  });

  it('uses the bandwidth the source measured on its last upload', () => {
    const big = launched('big', 1, 300 * MiB);
    const fast = planAgainst(
      [agent('a', [big], { transfer: { uploadBytesPerSecond: 500 * MiB, measuredAt: new Date(NOW).toISOString() } }), agent('b', [])],
      { container: 'big', destinationAgent: 'b' },
      NOW,
    );
    assert.ok(fast.ok);
    assert.match(fast.decision.candidates.find((c) => c.approach === 'container')?.why ?? '', /500 MiB\/s/);
    const unmeasured = planAgainst([agent('a', [big]), agent('b', [])], { container: 'big', destinationAgent: 'b' }, NOW);
    assert.ok(unmeasured.ok);
    assert.match(unmeasured.decision.candidates.find((c) => c.approach === 'container')?.why ?? '', /bandwidth unmeasured/);
  });

  it('requires every registration to carry the capability report the approach is decided from', () => {
    const { capabilities, ...withoutCapabilities } = agent('a', []);
    assert.ok(AgentRegistration.safeParse(agent('a', [])).success);
    assert.match(AgentRegistration.safeParse(withoutCapabilities).error?.message ?? '', /capabilities/);
    const { plainContainers: _plainContainers, ...withoutPlainContainers } = capabilities;
    assert.match(
      AgentRegistration.safeParse({ ...withoutCapabilities, capabilities: withoutPlainContainers }).error?.message ?? '',
      /plainContainers/,
    );

    // Decided from the report alone: a host that reports container level only gets container level.
    const containerOnly = { ...capabilities, plainContainers: { available: false, reason: 'engine socket refused' } };
    const web = launched('web', 1);
    const plan = planAgainst(
      [agent('a', [web], { capabilities: containerOnly }), agent('b', [], { capabilities: containerOnly })],
      { container: 'web', destinationAgent: 'b' },
      NOW,
    );
    assert.ok(plan.ok && plan.decision.approach === 'container', plan.ok ? plan.decision.reason : plan.reason);
  });

  it('refuses, with the reason, a requested approach that is not possible, and every registry problem before it', () => {
    const agents = [agent('a', [launched('one', 1)]), agent('b', [])];
    const orchestrator = planAgainst(agents, { container: 'one', destinationAgent: 'b', approach: 'orchestrator' }, NOW);
    assert.ok(!orchestrator.ok && orchestrator.code === 'approach-infeasible');
    assert.match(orchestrator.reason, /orchestrator level was requested but cannot be used/);
    const silent = planAgainst(
      [agents[0] as AgentRegistration, agent('b', [], { heartbeatAt: new Date(NOW - 60_000).toISOString() })],
      { container: 'one', destinationAgent: 'b' },
      NOW,
    );
    assert.ok(!silent.ok && silent.code === 'agent-unavailable');
    const missing = planAgainst(agents, { container: 'nope', destinationAgent: 'b' }, NOW);
    assert.ok(!missing.ok && missing.code === 'container-not-found' && missing.notListedYet === true);
  });

  describe('the image at the destination (never a refusal: its engine decides, the source ships it)', () => {
    const agents = [agent('a', [launched('one', 1)])];
    const [source] = agents as [AgentRegistration];
    const image = source.containers[0]!;

    it('plans with nothing to ship when the last heartbeat lists the image id', () => {
      const plan = planAgainst([source, agent('b', [])], { container: 'one', destinationAgent: 'b' }, NOW);
      assert.ok(plan.ok, plan.ok ? '' : plan.reason);
      assert.equal(plan.image.shipLikely, false);
      assert.match(plan.image.reason, /has the image .* nothing to ship/);
    });

    it('plans, and expects to ship, when the last heartbeat lists neither id nor name: the heartbeat may lag a load', () => {
      const plan = planAgainst([source, agent('b', [], { imageIds: [], images: [] })], { container: 'one', destinationAgent: 'b' }, NOW);
      assert.ok(plan.ok, plan.ok ? '' : plan.reason);
      assert.equal(plan.image.shipLikely, true);
      assert.match(plan.image.reason, /did not list the image .* unless its engine has it by now, the source ships it before the freeze/);
    });

    it('expects to ship the exact image when the destination has another image of the same name, and says the name moves', () => {
      const plan = planAgainst(
        [source, agent('b', [], { imageIds: ['c'.repeat(64)], images: [image.image] })],
        { container: 'one', destinationAgent: 'b' },
        NOW,
      );
      assert.ok(plan.ok, plan.ok ? '' : plan.reason);
      assert.equal(plan.image.shipLikely, true);
      assert.match(plan.image.reason, /an image named .* but not the same one .* moves the name/);
    });

    it('reads the same from expectImage alone, with the id shortened', () => {
      const expected = expectImage(agent('b', [], { imageIds: [], images: [] }), image);
      assert.ok(expected.shipLikely);
      assert.ok(expected.reason.includes(image.imageId.replace(/^sha256:/, '').slice(0, 12)));
    });
  });

  describe('network services (container level)', () => {
    const network = (over: Partial<ContainerNetwork> = {}): ContainerNetwork => ({
      addresses: ['10.88.0.5'],
      published: [{ hostPort: 6379, containerPort: 6379, protocol: 'tcp' }],
      listening: [{ protocol: 'tcp', family: 4, address: '0.0.0.0', port: 6379 }],
      insideConnections: 1,
      insideOverOwnAddress: 0,
      outsideConnections: [{ local: { address: '10.88.0.5', port: 6379 }, peer: { address: '198.18.0.100', port: 40000 } }],
      outsideConnectionCount: 1,
      unixSockets: 0,
      ...over,
    });
    const server = (
      name: string,
      net = network(),
      checkpointable: { available: boolean; reason?: string } = { available: true },
    ): Container => ({
      name,
      image: IMAGE,
      imageId: IMAGE_ID,
      state: 'running',
      checkpointed: false,
      traits: { launcher: { available: false, reason: 'no launcher' }, network: net, checkpointable },
    });
    const criu42 = (extra: Record<string, unknown> = {}) => ({
      capabilities: {
        containerLevel: {
          available: true,
          engine: 'podman 4.3.1',
          criuVersion: '4.2.1',
          arch: 'x86_64',
          sockets: { available: true },
          ...extra,
        },
        orchestratorLevel: { available: false, reason: 'no kubelet' },
        plainContainers: { available: true },
      },
    });

    it('says what happens to each connection, and the service runs untouched where it is refused', () => {
      const plan = planAgainst(
        [agent('a', [server('redis')], criu42()), agent('b', [], criu42())],
        { container: 'redis', destinationAgent: 'b' },
        NOW,
      );
      assert.ok(plan.ok && plan.decision.approach === 'container' && plan.connections !== undefined);
      assert.match(plan.connections.kept, /^1 connection\(s\) with both ends inside the container: kept/);
      assert.match(plan.connections.closed, /198\.18\.0\.100:40000.*reset at the freeze/);
      assert.deepEqual(plan.connections.republished, ['6379 -> 6379/tcp']);
      const unknown = planAgainst([agent('a', [server('redis')], criu42())], { container: 'redis', destinationAgent: 'nowhere' }, NOW);
      assert.ok(!unknown.ok && unknown.runningOn === 'a', 'a refusal says where the untouched service runs');
    });

    it('refuses a host whose CRIU cannot dump sockets, a service CRIU cannot dump, and foreign architectures or older CRIU', () => {
      const cannot = criu42({ sockets: { available: false, reason: "Can't get 1:16 opt" } });
      const noSockets = planAgainst(
        [agent('a', [server('redis')], criu42()), agent('b', [], cannot)],
        { container: 'redis', destinationAgent: 'b' },
        NOW,
      );
      assert.ok(!noSockets.ok && noSockets.code === 'approach-infeasible');
      assert.match(
        noSockets.reason,
        /holds network sockets and CRIU cannot checkpoint or restore them on the destination's: Can't get 1:16 opt/,
      );
      const quiet = network({ listening: [], insideConnections: 0, outsideConnections: [], outsideConnectionCount: 0, published: [] });
      assert.ok(
        planAgainst(
          [agent('a', [server('batch', quiet)], criu42()), agent('b', [], cannot)],
          { container: 'batch', destinationAgent: 'b' },
          NOW,
        ).ok,
        'a service without sockets still moves',
      );
      const nonRoot = planAgainst(
        [
          agent('a', [server('pg', network(), { available: false, reason: 'process 7 (postgres) runs as uid 101' })], criu42()),
          agent('b', [], criu42()),
        ],
        { container: 'pg', destinationAgent: 'b' },
        NOW,
      );
      assert.ok(!nonRoot.ok);
      assert.match(nonRoot.reason, /CRIU cannot checkpoint the container as it is now: process 7 \(postgres\) runs as uid 101/);
      const arm = planAgainst(
        [agent('a', [server('redis')], criu42()), agent('b', [], criu42({ arch: 'aarch64' }))],
        { container: 'redis', destinationAgent: 'b' },
        NOW,
      );
      assert.ok(!arm.ok);
      assert.match(arm.reason, /x86_64 and the destination aarch64/);
      const older = planAgainst(
        [agent('a', [server('redis')], criu42()), agent('b', [], criu42({ criuVersion: '4.1.1' }))],
        { container: 'redis', destinationAgent: 'b' },
        NOW,
      );
      assert.ok(!older.ok);
      assert.match(older.reason, /CRIU 4\.1\.1 is older than the source's 4\.2\.1/);
    });

    it("refuses a destination that already publishes one of the container's host ports, naming the port and its holder", () => {
      const other = server('cache', network({ published: [{ hostPort: 6379, containerPort: 11211, protocol: 'tcp' }] }));
      const plan = planAgainst(
        [agent('a', [server('redis')], criu42()), agent('b', [other], criu42())],
        { container: 'redis', destinationAgent: 'b' },
        NOW,
      );
      assert.ok(!plan.ok && plan.code === 'destination-incompatible' && plan.runningOn === 'a');
      assert.match(plan.reason, /already publishes port 6379\/tcp \(held by "cache"\)/);
      const udp = server('dns', network({ published: [{ hostPort: 6379, containerPort: 53, protocol: 'udp' }] }));
      assert.ok(
        planAgainst(
          [agent('a', [server('redis')], criu42()), agent('b', [udp], criu42())],
          { container: 'redis', destinationAgent: 'b' },
          NOW,
        ).ok,
        'the same number over another protocol is no conflict',
      );
    });

    it("does not offer service level for a container holding sockets (the launcher's CRIU cannot dump them)", () => {
      const launchedServer: Container = {
        ...server('web'),
        traits: { ...server('web').traits, launcher: { available: true, version: '1' } },
      };
      const plan = planAgainst(
        [agent('a', [launchedServer], criu42()), agent('b', [], criu42())],
        { container: 'web', destinationAgent: 'b' },
        NOW,
      );
      assert.ok(plan.ok && plan.decision.approach === 'container');
      assert.match(plan.decision.candidates.find((c) => c.approach === 'service')?.why ?? '', /cannot dump them/);
    });
  });
});
