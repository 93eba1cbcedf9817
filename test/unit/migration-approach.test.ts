import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ApproachRefusedError,
  COST_MODEL,
  decideApproach,
  decideApproachOrThrow,
  estimateArchive,
  estimateMs,
  HostCapabilities,
  type ContainerTraits,
  type Decision,
  type DecisionInput,
} from '../../core/migration-approach.js';

const MiB = 1024 * 1024;

function host(parts: { container?: boolean; orchestrator?: boolean; plain?: boolean } = {}): HostCapabilities {
  const container = parts.container ?? true;
  const orchestrator = parts.orchestrator ?? false;
  // Where the engine answers (container level available), it starts plain containers too.
  const plain = parts.plain ?? container;
  return {
    containerLevel: container
      ? { available: true, engine: 'podman 4.3.1 (runc 1.1.4)', criuVersion: '4.1.1' }
      : { available: false, reason: 'criu check failed: Looks bad' },
    orchestratorLevel: orchestrator
      ? { available: true, kubeletUrl: 'https://node-a:10250', runtime: 'cri-o://1.30.4' }
      : { available: false, reason: 'UMS_KUBELET_URL is not set' },
    plainContainers: plain ? { available: true } : { available: false, reason: 'engine socket refused' },
  };
}

const launcher = { available: true, version: '0.1.0' };
const singleSmall: ContainerTraits = { processCount: 1, memoryBytes: 32 * MiB, launcher };
const measured = { bandwidthBytesPerSecond: 100 * MiB };

function chosen(decision: Decision): Extract<Decision, { kind: 'chosen' }> {
  assert.equal(decision.kind, 'chosen', decision.kind === 'refused' ? decision.reason : '');
  return decision;
}

function refused(decision: Decision): Extract<Decision, { kind: 'refused' }> {
  assert.equal(decision.kind, 'refused', decision.kind === 'chosen' ? `chose ${decision.approach}: ${decision.reason}` : '');
  return decision;
}

function decide(input: DecisionInput): Decision {
  return decideApproach(input);
}

describe('decideApproach: the decision table', () => {
  it('row 1: container level at both ends, no launcher, no kubelet -> container', () => {
    const d = chosen(decide({ source: host(), destination: host(), container: { processCount: 3, memoryBytes: 200 * MiB }, ...measured }));
    assert.equal(d.approach, 'container');
    assert.deepEqual(
      d.candidates.map((c) => [c.approach, c.feasible]),
      [
        ['container', true],
        ['service', false],
        ['orchestrator', false],
      ],
    );
    assert.match(d.candidates.find((c) => c.approach === 'service')?.why ?? '', /launcher/);
    assert.match(d.candidates.find((c) => c.approach === 'orchestrator')?.why ?? '', /UMS_KUBELET_URL is not set/);
  });

  it('row 2: launcher in a single-process container -> service, at any memory size (measured: less downtime)', () => {
    const d = chosen(decide({ source: host(), destination: host(), container: singleSmall, ...measured }));
    assert.equal(d.approach, 'service');
    const service = d.candidates.find((c) => c.approach === 'service');
    const container = d.candidates.find((c) => c.approach === 'container');
    assert.ok(service?.estimatedMs !== undefined && container?.estimatedMs !== undefined);
    assert.ok(service.estimatedMs < container.estimatedMs);
    assert.match(d.reason, /^service level: estimated/);
    for (const memoryBytes of [300 * MiB, 4096 * MiB]) {
      assert.equal(
        chosen(decide({ source: host(), destination: host(), container: { ...singleSmall, memoryBytes }, ...measured })).approach,
        'service',
      );
    }
  });

  it('row 3: launcher in a multi-process container -> service too (measured: no per-process cost; the paper found otherwise)', () => {
    for (const processCount of [2, 5, 40]) {
      const d = chosen(decide({ source: host(), destination: host(), container: { ...singleSmall, processCount }, ...measured }));
      assert.equal(d.approach, 'service', `${processCount} processes`);
    }
  });

  it('row 4: a multi-process container without the launcher -> container', () => {
    const d = chosen(
      decide({
        source: host(),
        destination: host(),
        container: { processCount: 5, memoryBytes: 64 * MiB, launcher: { available: false, reason: 'no launcher control socket' } },
        ...measured,
      }),
    );
    assert.equal(d.approach, 'container');
    assert.match(d.candidates.find((c) => c.approach === 'service')?.why ?? '', /no launcher control socket/);
  });

  it('row 5: no container level at the source but the launcher -> service, even for many processes', () => {
    const d = chosen(
      decide({ source: host({ container: false, plain: true }), destination: host(), container: { ...singleSmall, processCount: 8 } }),
    );
    assert.equal(d.approach, 'service');
    assert.match(d.candidates.find((c) => c.approach === 'container')?.why ?? '', /the source cannot \(criu check failed: Looks bad\)/);
  });

  it('row 6: no container level, launcher and kubelets both ends -> service, whatever the process count', () => {
    const base = {
      source: host({ container: false, orchestrator: true, plain: true }),
      destination: host({ container: false, orchestrator: true, plain: true }),
    };
    for (const processCount of [4, 30])
      assert.equal(chosen(decide({ ...base, container: { ...singleSmall, processCount }, ...measured })).approach, 'service');
  });

  it('row 7: only the kubelets at both ends -> orchestrator', () => {
    const d = chosen(
      decide({
        source: host({ container: false, orchestrator: true }),
        destination: host({ container: false, orchestrator: true }),
        container: { processCount: 2 },
      }),
    );
    assert.equal(d.approach, 'orchestrator');
    const orchestrator = d.candidates.find((c) => c.approach === 'orchestrator');
    assert.match(
      orchestrator?.why ?? '',
      /memory unknown .*assumed 64 MiB, rootfs changes not known; bandwidth unmeasured, assumed 50 MiB\/s/,
    );
    assert.equal(d.archive.measured, false);
  });

  it('row 8: container level and kubelets at both ends -> container (orchestrator costs an image build and a registry round trip)', () => {
    const d = chosen(
      decide({
        source: host({ orchestrator: true }),
        destination: host({ orchestrator: true }),
        container: { processCount: 1, memoryBytes: 128 * MiB },
        ...measured,
      }),
    );
    assert.equal(d.approach, 'container');
    assert.match(d.reason, /orchestrator \d/);
  });

  it("row 9: nothing feasible -> refused, naming every approach's reason", () => {
    const r = refused(decide({ source: host({ container: false }), destination: host(), container: { processCount: 1 } }));
    assert.equal(r.code, 'none-feasible');
    assert.match(r.reason, /container level: needs .* the source cannot \(criu check failed: Looks bad\)/);
    assert.match(r.reason, /service level: needs the container to run the UMS launcher/);
    assert.match(r.reason, /orchestrator level: needs a Kubernetes node at both ends/);
    assert.ok(r.candidates.every((c) => !c.feasible && c.estimatedMs === undefined));
    assert.throws(
      () => decideApproachOrThrow({ source: host({ container: false }), destination: host(), container: {} }),
      (e: unknown) => e instanceof ApproachRefusedError && e.code === 'none-feasible' && e.candidates.length === 3,
    );
  });

  it('row 10: a destination that cannot start containers or lacks the image rules out container and service levels', () => {
    const noEngine = refused(decide({ source: host(), destination: host({ container: false, plain: false }), container: singleSmall }));
    assert.match(
      noEngine.candidates.find((c) => c.approach === 'service')?.why ?? '',
      /cannot start a plain container: engine socket refused/,
    );
    // A destination whose engine answered but whose CRIU is missing still starts plain containers.
    const criuMissing = host({ container: false, plain: true });
    criuMissing.containerLevel.engine = 'podman 4.3.1';
    assert.equal(chosen(decide({ source: host(), destination: criuMissing, container: singleSmall })).approach, 'service');

    const withKubelets = { source: host({ orchestrator: true }), destination: host({ orchestrator: true }) };
    const noImage = chosen(decide({ ...withKubelets, container: singleSmall, destinationHasImage: false }));
    assert.equal(noImage.approach, 'orchestrator');
    assert.match(noImage.candidates.find((c) => c.approach === 'container')?.why ?? '', /same image id/);
    assert.match(noImage.candidates.find((c) => c.approach === 'service')?.why ?? '', /does not hold the container's image/);
  });

  it('row 11: an explicit feasible request is honoured even when another approach is estimated faster', () => {
    const d = chosen(
      decide({
        source: host({ orchestrator: true }),
        destination: host({ orchestrator: true }),
        container: singleSmall,
        requested: 'orchestrator',
        ...measured,
      }),
    );
    assert.equal(d.approach, 'orchestrator');
    assert.match(d.reason, /^orchestrator level as requested \(service level was estimated faster/);
    const same = chosen(decide({ source: host(), destination: host(), container: { processCount: 4 }, requested: 'container' }));
    assert.equal(same.reason, 'container level as requested');
  });

  it('row 12: an infeasible request is refused with its reason, never silently replaced', () => {
    const r = refused(decide({ source: host(), destination: host(), container: { processCount: 1 }, requested: 'service' }));
    assert.equal(r.code, 'requested-infeasible');
    assert.match(r.reason, /^service level was requested but cannot be used: needs the container to run the UMS launcher/);
    // container level would have worked, and the candidates say so
    assert.equal(r.candidates.find((c) => c.approach === 'container')?.feasible, true);
    const reported = refused(
      decide({
        source: host(),
        destination: host(),
        container: { launcher: { available: false, reason: 'launcher 0.0.9 too old' } },
        requested: 'service',
      }),
    );
    assert.match(reported.reason, /launcher 0\.0\.9 too old/);
    assert.throws(
      () => decideApproachOrThrow({ source: host(), destination: host(), container: {}, requested: 'orchestrator' }),
      (e: unknown) =>
        e instanceof ApproachRefusedError &&
        e.code === 'requested-infeasible' &&
        /the source cannot \(UMS_KUBELET_URL is not set\)/.test(e.message),
    );
  });
});

describe('decideApproach: the model and the boundary', () => {
  it('lists the candidates in tie-break order: container, service, orchestrator', () => {
    // No two approaches tie with the shipped constants; the order is what decides a tie after a recalibration.
    const d = decide({ source: host(), destination: host(), container: {} });
    assert.deepEqual(
      d.candidates.map((c) => c.approach),
      ['container', 'service', 'orchestrator'],
    );
  });

  it('costs grow with memory and shrink with bandwidth, and the orchestrator pays the transfer twice', () => {
    const slow = estimateMs('container', 1, 512 * MiB, 10 * MiB);
    const fast = estimateMs('container', 1, 512 * MiB, 1000 * MiB);
    assert.ok(slow > fast);
    const transfer = (512 * MiB * 1000) / (10 * MiB);
    assert.equal(
      estimateMs('orchestrator', 1, 512 * MiB, 10 * MiB) - estimateMs('container', 1, 512 * MiB, 10 * MiB),
      Math.round(COST_MODEL.fixedMs.orchestrator - COST_MODEL.fixedMs.container + transfer),
    );
  });

  it('with the memory beside the archive, a transfer faster than the dump costs nothing more, a slower one only its excess', () => {
    const gib = 1024 * MiB;
    const dumpRestore = 1024 * COST_MODEL.dumpRestoreMsPerMiB;
    const fixed = COST_MODEL.fixedMs.container + COST_MODEL.perProcessMs.container;
    // 1 GiB at 1 GiB/s: 1 s of transfer, hidden under the dump's half of dump + restore.
    assert.equal(estimateMs('container', 1, gib, gib, { memoryBeside: true }), Math.round(fixed + dumpRestore));
    // At 50 MiB/s: 20.5 s of transfer, of which the dump hides its half of dump + restore.
    const slowTransfer = (gib * 1000) / (50 * MiB);
    assert.equal(
      estimateMs('container', 1, gib, 50 * MiB, { memoryBeside: true }),
      Math.round(fixed + dumpRestore + slowTransfer - dumpRestore / 2),
    );
    assert.ok(estimateMs('container', 1, gib, 50 * MiB, { memoryBeside: true }) < estimateMs('container', 1, gib, 50 * MiB));
    // Only container level's dump goes through the runtime shim.
    assert.equal(estimateMs('service', 1, gib, gib, { memoryBeside: true }), estimateMs('service', 1, gib, gib));
  });

  it('refuses malformed input at the boundary', () => {
    assert.throws(() => decideApproach({ source: host(), destination: host(), container: { processCount: 0 } }), /processCount/);
    assert.throws(
      () => decideApproach({ source: host(), destination: host(), container: {}, requested: 'vm' as 'container' }),
      /requested/,
    );
    assert.throws(
      () =>
        HostCapabilities.parse({ containerLevel: { available: true }, orchestratorLevel: { available: true, kubeletUrl: 'not a url' } }),
      /kubeletUrl/,
    );
  });
});

describe('the archive estimate: what the container really holds', () => {
  it('uses the resident memory the source agent measured, plus the rootfs changes, and says so', () => {
    const traits: ContainerTraits = { processCount: 2, memoryBytes: 768 * MiB, rootfsChangesBytes: 12 * MiB };
    const archive = estimateArchive(traits);
    assert.equal(archive.bytes, 780 * MiB);
    assert.equal(archive.measured, true);
    assert.match(archive.basis, /768 MiB resident memory of 2 process\(es\), measured \+ 12 MiB rootfs changes/);
    const d = chosen(decide({ source: host(), destination: host(), container: traits, ...measured }));
    assert.deepEqual(d.archive, archive);
    const container = d.candidates.find((c) => c.approach === 'container');
    // The 768 MiB migration that was estimated at 2.9 s on the 64 MiB default: now its size is in the estimate.
    assert.equal(container?.estimatedMs, estimateMs('container', 2, 780 * MiB, measured.bandwidthBytesPerSecond));
    assert.ok((container?.estimatedMs ?? 0) > 10_000);
    assert.match(container?.why ?? '', /780 MiB archive/);
    assert.match(container?.why ?? '', /bandwidth 100 MiB\/s measured/);
  });

  it('says when memory is unknown and what stands in for it; rootfs changes count even then', () => {
    const unknown = estimateArchive({});
    assert.equal(unknown.bytes, COST_MODEL.defaultMemoryBytes);
    assert.equal(unknown.measured, false);
    assert.match(unknown.basis, /memory unknown.*assumed 64 MiB, rootfs changes not known/);
    const withChanges = estimateArchive({ rootfsChangesBytes: 5 * MiB });
    assert.equal(withChanges.bytes, COST_MODEL.defaultMemoryBytes + 5 * MiB);
    assert.match(withChanges.basis, /\+ 5 MiB rootfs changes/);
  });

  it('a measured empty container is 0 bytes of memory, not the default', () => {
    const empty = estimateArchive({ processCount: 1, memoryBytes: 0 });
    assert.equal(empty.bytes, 0);
    assert.equal(empty.measured, true);
  });
});
