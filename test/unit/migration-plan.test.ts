import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AgentRegistration } from '../../core/agent-registration.js';
import { planAgainst } from '../../core/migration-plan.js';

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

describe('planAgainst: registrations to a plan, as planMigration and `ums plan` see them', () => {
  it('picks service level where the launcher runs and container level for a multi-process container without it', () => {
    const plain: Container = { name: 'plain', image: IMAGE, imageId: IMAGE_ID, state: 'running', checkpointed: false, traits: { launcher: { available: false, reason: 'no launcher control socket' } } };
    const agents = [agent('a', [launched('one', 1), launched('five', 5), plain]), agent('b', [])];
    for (const name of ['one', 'five']) {
      const plan = planAgainst(agents, { container: name, destinationAgent: 'b' }, NOW);
      assert.ok(plan.ok && plan.decision.approach === 'service', `${name}: ${plan.ok ? plan.decision.reason : plan.reason}`);
      assert.ok(!/service \d/.test(plan.decision.reason), `the reason compares with the others only: ${plan.decision.reason}`);
    }
    const multi = planAgainst(agents, { container: 'plain', destinationAgent: 'b' }, NOW);
    assert.ok(multi.ok && multi.decision.approach === 'container');
  });

  it('uses the bandwidth the source measured on its last upload', () => {
    const big = launched('big', 1, 300 * MiB);
    const fast = planAgainst([agent('a', [big], { transfer: { uploadBytesPerSecond: 500 * MiB, measuredAt: new Date(NOW).toISOString() } }), agent('b', [])], { container: 'big', destinationAgent: 'b' }, NOW);
    assert.ok(fast.ok);
    assert.match(fast.decision.candidates.find((c) => c.approach === 'container')?.why ?? '', /500 MiB\/s/);
    const unmeasured = planAgainst([agent('a', [big]), agent('b', [])], { container: 'big', destinationAgent: 'b' }, NOW);
    assert.ok(unmeasured.ok);
    assert.match(unmeasured.decision.candidates.find((c) => c.approach === 'container')?.why ?? '', /bandwidth unmeasured/);
  });

  it('treats an agent without capability reports as container level only', () => {
    const old = agent('a', [{ name: 'web', image: IMAGE, imageId: IMAGE_ID, state: 'running', checkpointed: false }], { approaches: ['container'], capabilities: undefined });
    const plan = planAgainst([old, agent('b', [])], { container: 'web', destinationAgent: 'b' }, NOW);
    assert.ok(plan.ok && plan.decision.approach === 'container');
  });

  it('refuses, with the reason, a requested approach that is not possible, and every registry problem before it', () => {
    const agents = [agent('a', [launched('one', 1)]), agent('b', [])];
    const orchestrator = planAgainst(agents, { container: 'one', destinationAgent: 'b', approach: 'orchestrator' }, NOW);
    assert.ok(!orchestrator.ok && orchestrator.code === 'approach-infeasible');
    assert.match(orchestrator.reason, /orchestrator level was requested but cannot be used/);
    const silent = planAgainst([agents[0] as AgentRegistration, agent('b', [], { heartbeatAt: new Date(NOW - 60_000).toISOString() })], { container: 'one', destinationAgent: 'b' }, NOW);
    assert.ok(!silent.ok && silent.code === 'agent-unavailable');
    const missing = planAgainst(agents, { container: 'nope', destinationAgent: 'b' }, NOW);
    assert.ok(!missing.ok && missing.code === 'container-not-found' && missing.notListedYet === true);
    const noImage = planAgainst([agents[0] as AgentRegistration, agent('b', [], { imageIds: [], images: [] })], { container: 'one', destinationAgent: 'b' }, NOW);
    assert.ok(!noImage.ok && noImage.code === 'image-missing');
  });
});
