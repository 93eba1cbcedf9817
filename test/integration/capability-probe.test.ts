/**
 * Capability probing (agents/capability-probe.ts) on this machine: container level against a real simulated
 * Podman host (infra/podman-host.ts) with the real `criu check`; service level against a real unix socket at
 * the launcher's path convention; orchestrator level without a kubelet (none runs here; the kubelet's own
 * answers are covered by test/integration/kubelet-checkpoint.test.ts). A real launched container is probed
 * through the real launcher client (ServiceLevel.probe); the launcher misbehaving (hanging, failing,
 * answering nonsense) is played by `probeLauncher` functions, because the real launcher does not do that on
 * demand. Needs root, podman, runc and CRIU >= 4.1 (infra/host-setup.sh).
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CapabilityProbe,
  kubeletClientFromEnv,
  probeContainerLevel,
  probeContainerTraits,
  probeOrchestratorLevel,
  runCriuCheck,
  type LauncherProbeResult,
} from '../../agents/capability-probe.js';
import { KubeletCheckpointClient } from '../../agents/kubelet/kubelet-client.js';
import { PodmanEngine } from '../../agents/podman-engine.js';
import { ServiceLevel } from '../../agents/service-level.js';
import { launcherControlDir, launcherRunArgs, launcherSocketPath } from '../../launcher/convention.js';
import { buildLauncherImage, DEFAULT_LAUNCHED_COUNTER_IMAGE } from '../../infra/images/build-service-image.js';
import { decideApproach } from '../../core/migration-approach.js';
import { startPodmanHost, type PodmanHost } from '../../infra/podman-host.js';

const MiB = 1024 * 1024;

describe('capability probe', { timeout: 300_000 }, () => {
  let base: string;
  let podmanHost: PodmanHost;
  let engine: PodmanEngine;
  let launcherDir: string;
  const sockets: Server[] = [];

  before(async () => {
    // Short path: the API socket lives below it and unix socket paths are limited to 108 bytes.
    base = await mkdtemp(join(tmpdir(), 'ums-cp-'));
    podmanHost = await startPodmanHost({ name: 'cp', dir: join(base, 'h'), network: 'shared' });
    engine = new PodmanEngine({ socketPath: podmanHost.socketPath, where: 'host cp' });
    launcherDir = join(base, 'launcher');
  });

  after(async () => {
    for (const socket of sockets) socket.close();
    await podmanHost?.destroy();
    if (base !== undefined) await rm(base, { recursive: true, force: true });
  });

  async function listenAt(path: string): Promise<void> {
    await mkdir(join(path, '..'), { recursive: true });
    const server = createServer((connection) => connection.end());
    await new Promise<void>((resolveListen) => server.listen(path, resolveListen));
    sockets.push(server);
  }

  it('container level: the engine answers and `criu check` passes on this machine', async () => {
    const check = await runCriuCheck();
    assert.equal(check.ok, true, check.detail);
    assert.match(check.detail, /Looks good/);
    const probed = await probeContainerLevel({ engineInfo: () => engine.info(), criuCheck: () => Promise.resolve(check) });
    assert.equal(probed.containerLevel.available, true, probed.containerLevel.reason);
    assert.match(probed.containerLevel.engine ?? '', /^podman 4\.\d+\.\d+ \(runc /);
    assert.match(probed.containerLevel.criuVersion ?? '', /^4\./);
    assert.deepEqual(probed.plainContainers, { available: true });
  });

  it('container level: unavailable, with the reason, when criu check fails, criu is missing or the engine is down', async () => {
    const failing = await runCriuCheck({ commands: ['false'] });
    assert.equal(failing.ok, false);
    assert.match(failing.detail, /`false check` failed \(exit 1\)/);
    const withFailing = await probeContainerLevel({ engineInfo: () => engine.info(), criuCheck: () => Promise.resolve(failing) });
    assert.equal(withFailing.containerLevel.available, false);
    assert.match(withFailing.containerLevel.reason ?? '', /false check/);
    assert.equal(withFailing.plainContainers.available, true, 'the engine still starts plain containers');

    const missing = await runCriuCheck({ commands: ['/nonexistent/criu'] });
    assert.match(missing.detail, /no criu binary found \(\/nonexistent\/criu: not found\): install CRIU >= 4\.1/);

    const down = new PodmanEngine({ socketPath: join(base, 'nothing.sock'), where: 'host down' });
    const withDown = await probeContainerLevel({ engineInfo: () => down.info(), criuCheck: () => runCriuCheck() });
    assert.equal(withDown.containerLevel.available, false);
    assert.match(withDown.containerLevel.reason ?? '', /does not answer \(.*cannot reach host down/);
    assert.equal(withDown.plainContainers.available, false);
  });

  it('orchestrator level: unavailable without UMS_KUBELET_URL or with an unreachable kubelet', async () => {
    assert.equal(kubeletClientFromEnv({}), undefined);
    const none = await probeOrchestratorLevel({});
    assert.deepEqual(none, {
      available: false,
      reason:
        'this host is no Kubernetes node: its agent drives Podman or Docker, not a CRI runtime (--engine cri), and has no kubelet (UMS_KUBELET_URL)',
    });
    const url = 'https://127.0.0.1:1';
    const client = kubeletClientFromEnv({ UMS_KUBELET_URL: url, UMS_KUBELET_NODE_NAME: 'node-x' });
    assert.ok(client instanceof KubeletCheckpointClient);
    const unreachable = await probeOrchestratorLevel({ kubeletUrl: url, prober: client, nodeName: 'node-x' });
    assert.equal(unreachable.available, false);
    assert.equal(unreachable.kubeletUrl, url);
    assert.match(unreachable.reason ?? '', /cannot reach kubelet node-x/);
  });

  it('service level: asks the launcher only where its control socket is, and reports what it says', async () => {
    const asked: string[] = [];
    const probeLauncher = async (container: string): Promise<LauncherProbeResult> => {
      asked.push(container);
      if (container === 'slow') return new Promise(() => undefined);
      if (container === 'broken') throw new Error('ECONNRESET');
      if (container === 'old') return { available: false, version: '0.0.9', reason: 'launcher 0.0.9 cannot checkpoint: upgrade the image' };
      return { available: true, version: '0.1.0', processCount: 1, memoryBytes: 24 * MiB };
    };
    for (const name of ['web', 'slow', 'broken', 'old']) await listenAt(launcherSocketPath(name, launcherDir));

    const web = await probeContainerTraits('web', { probeLauncher, hostDir: launcherDir });
    assert.deepEqual(web, { launcher: { available: true, version: '0.1.0' }, processCount: 1, memoryBytes: 24 * MiB });

    const plain = await probeContainerTraits('db', { probeLauncher, hostDir: launcherDir });
    assert.equal(plain.launcher?.available, false);
    assert.match(plain.launcher?.reason ?? '', /no launcher control socket at .*\/launcher\/db\/control\.sock/);
    assert.ok(!asked.includes('db'), 'no socket, no question');

    const slow = await probeContainerTraits('slow', { probeLauncher, hostDir: launcherDir, timeoutMs: 200 });
    assert.match(slow.launcher?.reason ?? '', /did not answer: no answer within 200 ms/);
    const broken = await probeContainerTraits('broken', { probeLauncher, hostDir: launcherDir });
    assert.match(broken.launcher?.reason ?? '', /did not answer: ECONNRESET/);
    const old = await probeContainerTraits('old', { probeLauncher, hostDir: launcherDir });
    assert.deepEqual(old.launcher, { available: false, version: '0.0.9', reason: 'launcher 0.0.9 cannot checkpoint: upgrade the image' });
    const unconfigured = await probeContainerTraits('web', { hostDir: launcherDir });
    assert.match(unconfigured.launcher?.reason ?? '', /no launcher client configured/);
    const nonsense = await probeContainerTraits('web', {
      hostDir: launcherDir,
      probeLauncher: async () => ({ available: true, processCount: -1 }),
    });
    assert.match(nonsense.launcher?.reason ?? '', /answered something unexpected: processCount/);
    assert.throws(() => launcherSocketPath('../etc', launcherDir), /invalid container name/);
  });

  it('caches: engine info per TTL, criu check once when it passes, launchers per container; one probe in flight', async () => {
    let clock = 1_000_000;
    let infoCalls = 0;
    let criuCalls = 0;
    let launcherCalls = 0;
    const probe = new CapabilityProbe({
      engine: {
        info: () => {
          infoCalls++;
          return engine.info();
        },
      },
      criuCheck: () => {
        criuCalls++;
        return runCriuCheck();
      },
      probeLauncher: async () => {
        launcherCalls++;
        return { available: true, version: '0.1.0', processCount: 1, memoryBytes: 24 * MiB };
      },
      launcherHostDir: launcherDir,
      hostTtlMs: 10_000,
      containerTtlMs: 15_000,
      now: () => clock,
    });
    const [first, second] = await Promise.all([probe.host(), probe.host()]);
    assert.deepEqual(first, second);
    assert.equal(first.containerLevel.available, true, first.containerLevel.reason);
    assert.equal(first.orchestratorLevel.available, false);
    assert.equal(first.probedAt, new Date(clock).toISOString());
    assert.deepEqual([infoCalls, criuCalls], [1, 1], 'concurrent heartbeats share one probe');
    clock += 5_000;
    await probe.host();
    assert.deepEqual([infoCalls, criuCalls], [1, 1], 'within the TTL nothing is asked');
    clock += 6_000;
    await probe.host();
    assert.deepEqual([infoCalls, criuCalls], [2, 1], 'after the TTL the engine is asked again, criu check is not');

    await probe.container('web');
    await probe.container('web');
    assert.equal(launcherCalls, 1);
    clock += 16_000;
    await probe.container('web');
    assert.equal(launcherCalls, 2);
    probe.retainContainers([]);
    await probe.container('web');
    assert.equal(launcherCalls, 3, 'a forgotten container is probed afresh');

    // A failed criu check is retried after criuRetryMs, not on every heartbeat.
    let failures = 0;
    const failing = new CapabilityProbe({
      engine,
      criuCheck: async () => {
        failures++;
        return { ok: false, command: 'criu', detail: 'criu check failed: Looks bad' };
      },
      hostTtlMs: 1,
      criuRetryMs: 60_000,
      now: () => clock,
    });
    assert.equal((await failing.host()).containerLevel.reason, 'criu check failed: Looks bad');
    clock += 10;
    await failing.host();
    assert.equal(failures, 1);
    clock += 60_000;
    await failing.host();
    assert.equal(failures, 2);
  });

  it('feeds the decision: a real launched container, probed through its launcher, chooses service level', async () => {
    await buildLauncherImage(podmanHost.url, DEFAULT_LAUNCHED_COUNTER_IMAGE, { env: podmanHost.env });
    const name = 'launched';
    const control = launcherControlDir(name, launcherDir);
    await mkdir(control, { recursive: true });
    await podmanHost.podman([
      'run',
      '-d',
      '--name',
      name,
      ...launcherRunArgs(control),
      '-e',
      'COUNTER_MEM_MIB=16',
      DEFAULT_LAUNCHED_COUNTER_IMAGE,
    ]);
    const serviceLevel = new ServiceLevel(engine, launcherDir, 'host cp');
    const probe = new CapabilityProbe({
      engine,
      probeLauncher: (container) => serviceLevel.probe(container),
      launcherHostDir: launcherDir,
      containerTtlMs: 0,
    });
    let traits = await probe.container(name);
    // The launcher answers at once; the counter needs a moment to start and fill its memory.
    for (let i = 0; i < 100 && !(traits.launcher?.available && (traits.memoryBytes ?? 0) > 16 * MiB); i++) {
      await new Promise((resolveWait) => setTimeout(resolveWait, 100));
      traits = await probe.container(name);
    }
    assert.equal(traits.launcher?.available, true, traits.launcher?.reason);
    assert.equal(traits.processCount, 1);
    assert.ok((traits.memoryBytes ?? 0) > 16 * MiB, `the launcher reports the tree's memory (${traits.memoryBytes})`);
    const hostCaps = await probe.host();
    const decision = decideApproach({ source: hostCaps, destination: hostCaps, container: traits });
    assert.equal(decision.kind === 'chosen' ? decision.approach : decision.reason, 'service');
    const plain = await probe.container('db');
    const forPlain = decideApproach({ source: hostCaps, destination: hostCaps, container: plain });
    assert.equal(forPlain.kind === 'chosen' ? forPlain.approach : forPlain.reason, 'container');
    await podmanHost.podman(['rm', '-f', '-t', '0', name]);
  });
});
