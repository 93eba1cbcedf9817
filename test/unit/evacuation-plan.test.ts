import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AgentRegistration } from '../../core/agent-registration.js';
import { closedHosts, type EvacuationRecord } from '../../core/evacuation.js';
import { planEvacuation } from '../../core/evacuation-plan.js';
import { planAgainst } from '../../core/migration-plan.js';
import { policyAllows, POLICY_LABELS, servicePolicyOf } from '../../core/service-policy.js';

const MiB = 1024 * 1024;
const IMAGE = 'localhost/ums/counter:1';
const IMAGE_ID = 'b'.repeat(64);
const NOW = Date.parse('2026-12-02T05:00:00Z');

type Container = AgentRegistration['containers'][number];

function agent(
  agentId: string,
  cloud: AgentRegistration['cloud'],
  region: string,
  containers: Container[] = [],
  extra: Partial<AgentRegistration> = {},
): AgentRegistration {
  const at = new Date(NOW - 1_000).toISOString();
  return {
    agentId,
    cloud,
    region,
    storeUrl: 'file:///s',
    approaches: ['container'],
    capabilities: {
      containerLevel: { available: true, engine: 'podman 4.3.1', criuVersion: '4.2.1' },
      orchestratorLevel: { available: false, reason: 'not a node' },
      plainContainers: { available: false, reason: 'no launcher' },
    },
    engine: { engine: 'podman', version: '4.3.1', apiVersion: '4.3.1', ociRuntime: 'runc', criuVersion: '4.2.1', kernel: '6.18' },
    freeMemoryBytes: 8 * 1024 * MiB,
    freeDiskBytes: 1e11,
    images: [IMAGE],
    imageIds: [IMAGE_ID],
    containers,
    startedAt: at,
    heartbeatAt: at,
    ...extra,
  };
}

const service = (name: string, memoryMiB: number, labels: Record<string, string> = {}): Container => ({
  name,
  image: IMAGE,
  imageId: IMAGE_ID,
  state: 'running',
  checkpointed: false,
  traits: { processCount: 1, memoryBytes: memoryMiB * MiB, rootfsChangesBytes: 0 },
  policy: servicePolicyOf(labels),
});

/** A host whose uplink was measured at `mibPerSecond`. */
const measured = (mibPerSecond: number): Partial<AgentRegistration> => ({
  transfer: { uploadBytesPerSecond: mibPerSecond * MiB, measuredAt: new Date(NOW - 60_000).toISOString() },
});

describe('service policy labels', () => {
  it('reads priority, clouds and regions, and keeps a label that does not read as invalid, with why', () => {
    const policy = servicePolicyOf({
      [POLICY_LABELS.priority]: '7',
      [POLICY_LABELS.allowedClouds]: 'gcp, aws',
      [POLICY_LABELS.allowedRegions]: 'europe-*,westeurope',
    });
    assert.deepEqual(policy, { priority: 7, allowedClouds: ['gcp', 'aws'], allowedRegions: ['europe-*', 'westeurope'] });
    assert.deepEqual(policyAllows(policy, 'gcp', 'europe-west1'), { ok: true });
    assert.match(
      (policyAllows(policy, 'gcp', 'us-central1') as { reason: string }).reason,
      /regions europe-\*, westeurope, not us-central1/,
    );
    assert.match((policyAllows(policy, 'azure', 'westeurope') as { reason: string }).reason, /clouds gcp, aws, not azure/);
    const bad = servicePolicyOf({ [POLICY_LABELS.priority]: 'high', [POLICY_LABELS.allowedClouds]: 'ibm' });
    assert.match(bad.invalid ?? '', /dev\.ums\.priority="high" is not an integer/);
    assert.match(bad.invalid ?? '', /names no cloud, or one not in/);
  });
});

describe('planEvacuation: which services move where, in which order, and which are left', () => {
  it('under a deadline, moves by priority what fits on the measured link and leaves the rest running with why', () => {
    const host = agent(
      'azure-1',
      'azure',
      'eastus',
      [
        service('low', 28, { [POLICY_LABELS.priority]: '0' }),
        service('top', 28, { [POLICY_LABELS.priority]: '30' }),
        service('mid', 28, { [POLICY_LABELS.priority]: '20' }),
        service('small', 20, { [POLICY_LABELS.priority]: '10' }),
      ],
      measured(4),
    );
    const decision = planEvacuation({
      host,
      agents: [host, agent('gcp-1', 'gcp', 'us-central1'), agent('aws-1', 'aws', 'us-east-1')],
      closed: new Set(),
      windowMs: 36_000,
      concurrency: 2,
      now: NOW,
    });
    assert.deepEqual(
      decision.items.map((item) => [item.container, item.state]),
      [
        ['top', 'pending'],
        ['mid', 'pending'],
        ['small', 'pending'],
        ['low', 'left'],
      ],
    );
    // top and mid start together and share the link: 4.3 s before their first bytes, 56 MiB at 4 MiB/s; then small.
    const [top, mid, small] = decision.items.map((item) => item.predictedMs ?? 0);
    assert.ok(Math.abs((top ?? 0) - 18_300) < 300 && top === mid, `predicted ${top}, ${mid} ms`);
    assert.ok(Math.abs((small ?? 0) - 27_500) < 300, `predicted ${small} ms`);
    assert.match(decision.items[3]?.reason ?? '', /does not fit: .* past the 30\.6 s the notice leaves \(36\.0 s less a 15% margin\)/);
    assert.match(decision.link.basis, /4 MiB\/s, measured by azure-1 60 s ago/);
    assert.match(decision.summary, /moves 3 of 4 service\(s\).*leaves 1 running: low/);
    // Capacity: the destinations alternate as each is given a service.
    assert.deepEqual(new Set(decision.items.slice(0, 3).map((item) => item.destination)), new Set(['gcp-1', 'aws-1']));
  });

  it('a smaller service of lower priority still goes when a larger one before it does not fit', () => {
    const host = agent('h', 'azure', 'eastus', [service('big', 100, { [POLICY_LABELS.priority]: '5' }), service('tiny', 4)], measured(4));
    const decision = planEvacuation({
      host,
      agents: [host, agent('g', 'gcp', 'us-central1')],
      closed: new Set(),
      windowMs: 20_000,
      concurrency: 1,
      now: NOW,
    });
    assert.deepEqual(
      decision.items.map((item) => [item.container, item.state]),
      [
        ['big', 'left'],
        ['tiny', 'pending'],
      ],
    );
  });

  it('a drain has no deadline: everything with an allowed, open destination moves; the rest is left with the policy as reason', () => {
    const host = agent('gcp-1', 'gcp', 'us-central1', [
      service('anywhere', 2),
      service('aws-only', 2, { [POLICY_LABELS.allowedClouds]: 'aws' }),
      service('eu-only', 2, { [POLICY_LABELS.allowedRegions]: 'europe-*' }),
      service('bad-label', 2, { [POLICY_LABELS.priority]: '1.5' }),
    ]);
    const agents = [host, agent('azure-1', 'azure', 'eastus'), agent('aws-1', 'aws', 'us-east-1'), agent('gcp-eu', 'gcp', 'europe-west1')];
    const decision = planEvacuation({ host, agents, closed: new Set(['gcp-eu']), concurrency: 3, now: NOW });
    const byName = new Map(decision.items.map((item) => [item.container, item]));
    assert.equal(byName.get('anywhere')?.state, 'pending');
    assert.equal(byName.get('aws-only')?.destination, 'aws-1');
    assert.equal(byName.get('eu-only')?.state, 'left', 'the only EU host is closed');
    assert.match(byName.get('eu-only')?.reason ?? '', /azure-1: its policy allows the regions europe-\*, not eastus/);
    assert.equal(byName.get('bad-label')?.state, 'left');
    assert.match(byName.get('bad-label')?.reason ?? '', /policy labels do not read/);
    assert.match(decision.link.basis, /assumed: gcp-1 has measured no upload yet/);
  });

  it('a host with no other open host leaves everything, saying so', () => {
    const host = agent('only', 'azure', 'eastus', [service('s', 2)]);
    const decision = planEvacuation({
      host,
      agents: [host, agent('dead', 'gcp', 'x', [], { heartbeatAt: new Date(NOW - 60_000).toISOString() })],
      closed: new Set(),
      concurrency: 2,
      now: NOW,
    });
    assert.equal(decision.items[0]?.state, 'left');
    assert.match(decision.items[0]?.reason ?? '', /no other host is alive and open/);
  });
});

describe('closed hosts', () => {
  const record = (agentId: string, state: EvacuationRecord['state'], kind: 'drain' | 'notice'): EvacuationRecord => ({
    agent: agentId,
    evacuationId: 'ev-1',
    state,
    trigger:
      kind === 'drain'
        ? { kind: 'drain' }
        : { kind: 'notice', cloud: 'azure', noticeId: 'E1', noticeKind: 'preemption', summary: 'Preempt' },
    concurrency: 2,
    link: { bytesPerSecond: MiB, basis: 'x' },
    summary: 's',
    items: [],
    startedAt: new Date(NOW).toISOString(),
    updatedAt: new Date(NOW).toISOString(),
  });

  it('a drained or evacuated host takes no new service, with why; a cancelled one does', () => {
    const closed = closedHosts([record('a', 'emptied', 'drain'), record('b', 'evacuating', 'notice'), record('c', 'cancelled', 'drain')]);
    assert.deepEqual([...closed.keys()], ['a', 'b']);
    assert.match(closed.get('a') ?? '', /it is drained: evacuated \(ev-1\); "ums drain a --cancel" opens it again/);
    assert.match(closed.get('b') ?? '', /its cloud announced its end \(azure preemption\)/);
    const src = agent('s', 'gcp', 'x', [service('svc', 2)]);
    const plan = planAgainst([src, agent('a', 'azure', 'eastus')], { container: 'svc', destinationAgent: 'a' }, NOW, closed);
    assert.equal(plan.ok, false);
    assert.match(!plan.ok ? plan.reason : '', /destination "a" takes no new service: it is drained/);
  });
});
