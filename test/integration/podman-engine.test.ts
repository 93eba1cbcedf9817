/**
 * PodmanEngine against three real Podman services on this machine ("hosts" A, B and C, each with its own
 * storage, state and network namespace), with the counter image: migration A->B and back, a chain
 * A->B->C, rollback on the source, and the error paths. Needs root, podman, runc and a CRIU >= 4.1 (run
 * infra/host-setup.sh first).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, readdir, readlink, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { ContainerNotFoundError, EngineError } from '../../agents/container-engine.js';
import { PodmanEngine } from '../../agents/podman-engine.js';
import { buildCounterImage, COUNTER_MARKER_PATH, DEFAULT_COUNTER_IMAGE } from '../../infra/images/build-counter-image.js';
import { startPodmanHost, type PodmanHost } from '../../infra/podman-host.js';

const IMAGE = DEFAULT_COUNTER_IMAGE;
const execFileAsync = promisify(execFile);

describe('PodmanEngine on three simulated hosts', { timeout: 600_000 }, () => {
  let base: string;
  let hostA: PodmanHost;
  let hostB: PodmanHost;
  let hostC: PodmanHost;
  let engineA: PodmanEngine;
  let engineB: PodmanEngine;
  let engineC: PodmanEngine;
  const timings: Record<string, number[]> = {};

  before(async () => {
    // Short path: the API socket lives below it and unix socket paths are limited to 108 bytes.
    base = await mkdtemp(join(tmpdir(), 'ums-pe-'));
    [hostA, hostB, hostC] = await Promise.all([
      startPodmanHost({ name: 'A', dir: join(base, 'A') }),
      startPodmanHost({ name: 'B', dir: join(base, 'B') }),
      startPodmanHost({ name: 'C', dir: join(base, 'C') }),
    ]);
    engineA = new PodmanEngine({ socketPath: hostA.socketPath, where: 'host A' });
    engineB = new PodmanEngine({ socketPath: hostB.socketPath, where: 'host B' });
    engineC = new PodmanEngine({ socketPath: hostC.socketPath, where: 'host C' });
    const imageA = await buildCounterImage(hostA.url, IMAGE, { env: hostA.env });
    const imageB = await buildCounterImage(hostB.url, IMAGE, { env: hostB.env });
    const imageC = await buildCounterImage(hostC.url, IMAGE, { env: hostC.env });
    // A checkpoint names its image by id: every host must hold the very same image.
    assert.equal(imageA.id, imageB.id);
    assert.equal(imageA.id, imageC.id);
  });

  after(async () => {
    for (const [name, values] of Object.entries(timings)) {
      console.log(`timing ${name}: ${values.map((v) => `${v} ms`).join(', ')}`);
    }
    await Promise.allSettled([hostA?.destroy(), hostB?.destroy(), hostC?.destroy()]);
    if (base === undefined) return;
    // Each host's mounts live in its own mount namespace: look at every process's view, not just ours.
    assert.deepEqual(await mountsMentioning(base), [], 'no mounts left below the hosts dir, in any mount namespace');
    assert.deepEqual(await processesMentioning(base), [], 'no processes left from the hosts');
    // runc prints `null`, not `[]`, when it knows no container at all.
    const runc =
      (JSON.parse((await execFileAsync('runc', ['list', '--format', 'json'])).stdout.trim() || 'null') as { bundle: string }[] | null) ??
      [];
    assert.deepEqual(
      runc.filter((c) => c.bundle.startsWith(`${base}/`)),
      [],
      'no runc containers left from the hosts',
    );
    await rm(base, { recursive: true, force: true });
  });

  it('reports engine info', async () => {
    const info = await engineA.info();
    assert.equal(info.engine, 'podman');
    assert.match(info.version, /^4\./);
    assert.match(info.ociRuntime, /^runc /);
    assert.ok(info.criuVersion !== undefined, 'criu version probed');
    assert.ok(compareVersions(info.criuVersion, '4.1') >= 0, `criu ${info.criuVersion} >= 4.1`);
    assert.ok(info.kernel.length > 0);
    assert.ok(info.freeMemoryBytes > 0);
    assert.ok(info.freeDiskBytes > 0);
    assert.ok(await engineA.imageExists(IMAGE));
    assert.equal(await engineA.imageExists('localhost/ums/nope:0'), false);
    const images = await engineA.listImages();
    assert.ok(images.some((i) => i.names.includes(IMAGE)));
  });

  it('migrates a running counter A -> B and back B -> A; memory and rootfs survive', async () => {
    const name = 'mig';
    const token = `tok-${Date.now()}`;
    await hostA.podman(['run', '-d', '--name', name, '-e', `COUNTER_TOKEN=${token}`, IMAGE]);
    await waitForCount(hostA, name, 5);
    const listed = await engineA.listContainers();
    assert.ok(listed.some((c) => c.name === name && c.state === 'running' && c.image === IMAGE));
    // The counter wrote its marker into its rootfs: the writable layer the planner adds to the archive estimate.
    await hostA.podman(['exec', name, 'dd', 'if=/dev/zero', 'of=/var/tmp/filler', 'bs=1024', 'count=2048']);
    const changes = await engineA.rootfsChangesBytes(name);
    assert.ok(changes !== undefined && changes >= 2 * 1024 * 1024, `writable layer of ${changes ?? '?'} bytes`);
    assert.equal(await engineA.rootfsChangesBytes('no-such-container'), undefined);

    // A -> B
    const archiveAB = join(base, 'mig-ab.tar');
    await checkpointToFile(engineA, name, archiveAB, timings);
    const onA = await engineA.inspectContainer(name);
    assert.ok(onA !== undefined);
    assert.equal(onA.state, 'exited');
    assert.equal(onA.checkpointed, true, 'source keeps its checkpoint for rollback');
    const frozenAt = maxCount(await logs(hostA, name));
    assert.ok(frozenAt >= 5);

    await restoreTimed(engineB, name, archiveAB, timings);
    const onB = await engineB.inspectContainer(name);
    assert.equal(onB?.state, 'running');
    await waitForCount(hostB, name, frozenAt + 3);
    assertContinued(await logs(hostB, name), frozenAt);
    const marker = (await hostB.podman(['exec', name, 'cat', COUNTER_MARKER_PATH])).stdout;
    assert.match(marker, new RegExp(`^token=${token}$`, 'm'), 'rootfs change made on A is on B');
    // The migration committed: the source drops its copy.
    await engineA.removeContainer(name, { force: true });
    assert.equal(await engineA.inspectContainer(name), undefined);

    // B -> A (re-migration of a restored container)
    const archiveBA = join(base, 'mig-ba.tar');
    await checkpointToFile(engineB, name, archiveBA, timings);
    const frozenOnB = maxCount(await logs(hostB, name));
    assert.ok(frozenOnB > frozenAt);
    await restoreTimed(engineA, name, archiveBA, timings);
    await waitForCount(hostA, name, frozenOnB + 3);
    assertContinued(await logs(hostA, name), frozenOnB);
    assert.match((await hostA.podman(['exec', name, 'cat', COUNTER_MARKER_PATH])).stdout, new RegExp(`token=${token}`));
    await engineB.removeContainer(name, { force: true });
    await engineA.removeContainer(name, { force: true });
  });

  it('migrates along a chain A -> B -> C, re-checkpointing on B in between; the counter never resets', async () => {
    // Regression: Podman 4.3 resets a restored container's conmon pidfile only when the path starts with the
    // destination's runroot. Simulated hosts with different runroot paths kept the first host's path, and
    // once that host's copy was removed the next restore failed ("Failed to write conmon pidfile").
    const name = 'chain';
    const token = `chain-${Date.now()}`;
    await hostA.podman(['run', '-d', '--name', name, '-e', `COUNTER_TOKEN=${token}`, IMAGE]);
    await waitForCount(hostA, name, 3);
    let last = 0;
    const hop = async (from: { host: PodmanHost; engine: PodmanEngine }, to: { host: PodmanHost; engine: PodmanEngine }, label: string) => {
      const archive = join(base, `chain-${label}.tar`);
      await checkpointToFile(from.engine, name, archive, timings);
      const frozenAt = maxCount(await logs(from.host, name));
      assert.ok(frozenAt > last, `${label}: counter went on before the checkpoint (${frozenAt} > ${last})`);
      // The migration commits before the restore when source and destination are the same host (a plain
      // re-import); otherwise after it, as PodmanEngine's callers do.
      if (from.host === to.host) await from.engine.removeContainer(name, { force: true });
      await restoreTimed(to.engine, name, archive, timings);
      if (from.host !== to.host) {
        await from.engine.removeContainer(name, { force: true });
        assert.equal(await from.engine.inspectContainer(name), undefined, `${label}: the source dropped its copy`);
      }
      await waitForCount(to.host, name, frozenAt + 2);
      assertContinued(await logs(to.host, name), frozenAt);
      await assertOwnPaths(to.host, name, [hostA, hostB, hostC]);
      last = frozenAt;
    };
    await hop({ host: hostA, engine: engineA }, { host: hostB, engine: engineB }, 'a-b');
    await hop({ host: hostB, engine: engineB }, { host: hostB, engine: engineB }, 'b-b');
    await hop({ host: hostB, engine: engineB }, { host: hostC, engine: engineC }, 'b-c');
    await hop({ host: hostC, engine: engineC }, { host: hostC, engine: engineC }, 'c-c');
    assert.match((await hostC.podman(['exec', name, 'cat', COUNTER_MARKER_PATH])).stdout, new RegExp(`token=${token}`));
    for (const engine of [engineA, engineB]) assert.equal(await engine.inspectContainer(name), undefined);
    await engineC.removeContainer(name, { force: true });
  });

  it('restarts a service into the mount namespace its containers live in; destroy then leaves nothing', async () => {
    const dirD = join(base, 'D');
    let hostD = await startPodmanHost({ name: 'D', dir: dirD });
    try {
      await buildCounterImage(hostD.url, IMAGE, { env: hostD.env });
      const name = 'survivor';
      await hostD.podman(['run', '-d', '--name', name, IMAGE]);
      await waitForCount(hostD, name, 3);
      const namespace = await readlink(`/proc/${hostD.servicePid()}/ns/mnt`);
      assert.notEqual(namespace, await readlink('/proc/self/ns/mnt'), 'the service has a mount namespace of its own');
      assert.deepEqual(
        await mountsMentioning(dirD, '/proc/self/mountinfo'),
        [],
        "the machine's mount table shows none of the host's mounts",
      );

      await hostD.stop();
      hostD = await startPodmanHost({ name: 'D', dir: dirD });
      assert.equal(await readlink(`/proc/${hostD.servicePid()}/ns/mnt`), namespace, 'the restarted service joined the namespace');
      const engineD = new PodmanEngine({ socketPath: hostD.socketPath, where: 'host D' });
      assert.equal((await engineD.inspectContainer(name))?.state, 'running');
      assert.equal((await hostD.podman(['exec', name, 'echo', 'alive'])).stdout.trim(), 'alive');
      const before = maxCount(await logs(hostD, name));
      await waitForCount(hostD, name, before + 2);

      // A container served by the restarted service still migrates (its rootfs mount is visible to it).
      const archive = join(base, 'survivor.tar');
      await checkpointToFile(engineD, name, archive, timings);
      const frozenAt = maxCount(await logs(hostD, name));
      await restoreTimed(engineA, name, archive, timings);
      await waitForCount(hostA, name, frozenAt + 2);
      assertContinued(await logs(hostA, name), frozenAt);
      await engineA.removeContainer(name, { force: true });

      // As after a crash: containers still running, no service to remove them. destroy() must kill them
      // (conmon, and the container processes below it) and the namespace with its mounts must go.
      await hostD.podman(['run', '-d', '--name', 'orphan', IMAGE]);
      await waitForCount(hostD, 'orphan', 2);
      const orphanNetns = (await hostD.podman(['inspect', '--format', '{{.NetworkSettings.SandboxKey}}', 'orphan'])).stdout.trim();
      assert.match(orphanNetns, /^\/run\/netns\//);
      await hostD.stop();
      await hostD.destroy();
      await assert.rejects(stat(orphanNetns), `${orphanNetns} removed`);
    } finally {
      await hostD.destroy();
    }
    assert.deepEqual(await mountsMentioning(dirD), [], 'no mounts of host D left in any namespace');
    assert.deepEqual(await processesMentioning(dirD), [], 'no processes of host D left');
    // runc prints `null`, not `[]`, when it knows no container at all.
    const runc =
      (JSON.parse((await execFileAsync('runc', ['list', '--format', 'json'])).stdout.trim() || 'null') as { bundle: string }[] | null) ??
      [];
    assert.deepEqual(
      runc.filter((c) => c.bundle.startsWith(`${dirD}/`)),
      [],
      'no runc containers of host D left',
    );
    await assert.rejects(stat(dirD), 'host D dir removed');
  });

  it('rolls back: a checkpointed container resumes on its source host', async () => {
    const name = 'rollback';
    await hostA.podman(['run', '-d', '--name', name, IMAGE]);
    await waitForCount(hostA, name, 5);
    await checkpointToFile(engineA, name, join(base, 'rollback.tar'), timings);
    const frozenAt = maxCount(await logs(hostA, name));
    assert.equal((await engineA.inspectContainer(name))?.checkpointed, true);

    const started = Date.now();
    const resumed = await engineA.resumeCheckpointed(name);
    (timings['resume kept checkpoint'] ??= []).push(Date.now() - started);
    assert.equal(resumed.name, name);
    const state = await engineA.inspectContainer(name);
    assert.equal(state?.state, 'running');
    assert.equal(state?.checkpointed, false);
    await waitForCount(hostA, name, frozenAt + 3);
    assertContinued(await logs(hostA, name), frozenAt);
    await engineA.removeContainer(name, { force: true });
  });

  it('restores with --network none, with a fresh address when the old one is taken, or with the old one kept', async () => {
    // Podman 4.3 carries an address over only when the container was created with a static one (--ip);
    // otherwise the destination's IPAM picks one whatever the options say.
    // The simulated hosts of every run on the machine share netavark's IPAM pool: a per-run subnet part keeps
    // parallel runs from asking for the same static address.
    const net = `10.88.${200 + (process.pid % 50)}`;
    const cases = [
      { name: 'nonet', network: 'none', ip: undefined, clash: false, keep: false },
      { name: 'clash', network: 'bridge', ip: `${net}.10`, clash: true, keep: false },
      { name: 'keepip', network: 'bridge', ip: `${net}.11`, clash: false, keep: true },
    ];
    for (const { name, network, ip, clash, keep } of cases) {
      await hostA.podman(['run', '-d', '--name', name, '--network', network, ...(ip !== undefined ? ['--ip', ip] : []), IMAGE]);
      await waitForCount(hostA, name, 3);
      const ipOnA = await ipOf(hostA, name);
      const archive = join(base, `${name}.tar`);
      await checkpointToFile(engineA, name, archive, timings);
      const frozenAt = maxCount(await logs(hostA, name));
      if (clash) {
        // Another container on B takes the address the container had on A (free again once A checkpointed:
        // the simulated hosts share netavark's IPAM database, see infra/podman-host.ts).
        await hostB.podman(['run', '-d', '--name', 'squatter', '--ip', ipOnA, IMAGE]);
      }
      await engineB.restoreFromArchive(name, archive, { keepNetworkIdentity: keep });
      await waitForCount(hostB, name, frozenAt + 2);
      assertContinued(await logs(hostB, name), frozenAt);
      const ipOnB = await ipOf(hostB, name);
      if (network === 'none') assert.equal(ipOnB, '');
      else if (keep) assert.equal(ipOnB, ipOnA);
      else {
        assert.match(ipOnB, /^10\.88\./);
        assert.notEqual(ipOnB, ipOnA);
      }
      await engineA.removeContainer(name, { force: true });
      await engineB.removeContainer(name, { force: true });
    }
    await engineB.removeContainer('squatter', { force: true });
  });

  it('reports unknown containers', async () => {
    await assert.rejects(engineA.checkpoint('no-such-container'), (error: unknown) => {
      assert.ok(error instanceof ContainerNotFoundError);
      assert.equal(error.container, 'no-such-container');
      return true;
    });
    await assert.rejects(engineA.resumeCheckpointed('no-such-container'), ContainerNotFoundError);
    assert.equal(await engineA.inspectContainer('no-such-container'), undefined);
    await engineA.removeContainer('no-such-container');
  });

  it('rejects a corrupt or truncated archive with a clear EngineError and leaves nothing on B', async () => {
    const garbage = join(base, 'garbage.tar');
    await writeFile(garbage, Buffer.alloc(64 * 1024, 0x5a));
    const truncated = join(base, 'truncated.tar');
    {
      const name = 'torn';
      await hostA.podman(['run', '-d', '--name', name, IMAGE]);
      await waitForCount(hostA, name, 2);
      await checkpointToFile(engineA, name, truncated, timings);
      await truncate(truncated, Math.floor((await stat(truncated)).size / 2));
      await engineA.removeContainer(name, { force: true });
    }
    const before = await engineB.listContainers();
    for (const archive of [garbage, truncated]) {
      const name = 'corrupt';
      await assert.rejects(engineB.restoreFromArchive(name, archive), (error: unknown) => {
        assert.ok(error instanceof EngineError, `EngineError, got ${String(error)}`);
        assert.equal(error.operation, 'restore');
        assert.ok(error.status >= 400);
        assert.ok(error.detail.length > 0 && !error.detail.startsWith('{'), `readable detail: ${error.detail}`);
        console.log(`corrupt archive (${archive.endsWith('garbage.tar') ? 'garbage' : 'truncated'}): ${error.message}`);
        return true;
      });
      assert.equal(await engineB.inspectContainer(name), undefined);
      assert.deepEqual(
        (await engineB.listContainers()).map((c) => c.id),
        before.map((c) => c.id),
      );
    }
  });

  it('surfaces a checkpoint that fails inside the engine as an EngineError', async () => {
    const name = 'exited';
    await hostA.podman(['run', '--name', name, IMAGE, '/bin/true']);
    await assert.rejects(engineA.checkpoint(name), (error: unknown) => {
      assert.ok(error instanceof EngineError, `EngineError, got ${String(error)}`);
      console.log(`checkpoint of an exited container: ${error.message}`);
      assert.match(error.detail, /running|state/i);
      return true;
    });
    await engineA.removeContainer(name, { force: true });
  });
});

async function checkpointToFile(engine: PodmanEngine, name: string, path: string, timings: Record<string, number[]>): Promise<void> {
  const started = Date.now();
  const stream = await engine.checkpoint(name);
  const firstByte = Date.now() - started;
  await pipeline(stream, createWriteStream(path));
  const total = Date.now() - started;
  (timings['checkpoint export (first byte)'] ??= []).push(firstByte);
  (timings['checkpoint export (complete)'] ??= []).push(total);
  assert.ok((await stat(path)).size > 10_000, 'archive has content');
}

async function restoreTimed(engine: PodmanEngine, name: string, archive: string, timings: Record<string, number[]>): Promise<void> {
  const started = Date.now();
  const restored = await engine.restoreFromArchive(name, archive);
  (timings['restore from archive'] ??= []).push(Date.now() - started);
  if (restored.runtimeRestoreMs !== undefined) (timings['restore (runtime-reported)'] ??= []).push(Math.round(restored.runtimeRestoreMs));
  assert.equal(restored.name, name);
  assert.match(restored.id, /^[0-9a-f]{64}$/);
}

/**
 * A restored container's pidfiles must be this host's own (a fresh path under the runroot, named by the new
 * container id), and neither its configuration nor its conmon (pidfile, exit command) may point into another
 * simulated host's directory. The create command is history (`podman --url <A's socket> run ...`) and may.
 */
async function assertOwnPaths(host: PodmanHost, name: string, all: PodmanHost[]): Promise<void> {
  const [inspected] = JSON.parse((await host.podman(['container', 'inspect', name])).stdout) as {
    Id: string;
    ConmonPidFile: string;
    State: { ConmonPid: number };
    Config: { CreateCommand?: string[] };
  }[];
  assert.ok(inspected !== undefined);
  assert.ok(inspected.ConmonPidFile.startsWith(`${host.runroot}/`), `conmon pidfile under the runroot: ${inspected.ConmonPidFile}`);
  assert.ok(inspected.ConmonPidFile.includes(inspected.Id), `conmon pidfile named by the new id: ${inspected.ConmonPidFile}`);
  delete inspected.Config.CreateCommand;
  const conmonCmdline = (await readFile(`/proc/${inspected.State.ConmonPid}/cmdline`, 'utf8')).split('\0');
  assert.ok(
    conmonCmdline.some((arg) => arg.includes(inspected.Id)),
    `conmon ${inspected.State.ConmonPid} is ${name}'s`,
  );
  for (const other of all) {
    if (other === host) continue;
    const refs: string[] = [
      ...stringsContaining(inspected, `${other.dir}/`),
      ...stringsContaining(conmonCmdline, `${other.dir}/`, 'conmon'),
    ];
    assert.deepEqual(refs, [], `${name} on ${host.name} refers to ${other.name}'s dir`);
  }
}

/** `key.path: value` for every string below `value` that contains `needle`. */
function stringsContaining(value: unknown, needle: string, path = ''): string[] {
  if (typeof value === 'string') return value.includes(needle) ? [`${path}: ${value}`] : [];
  if (value === null || typeof value !== 'object') return [];
  return Object.entries(value).flatMap(([key, inner]) => stringsContaining(inner, needle, `${path}.${key}`));
}

async function ipOf(host: PodmanHost, name: string): Promise<string> {
  return (await host.podman(['inspect', '--format', '{{.NetworkSettings.IPAddress}}', name])).stdout.trim();
}

async function logs(host: PodmanHost, name: string): Promise<number[]> {
  const { stdout } = await host.podman(['logs', name]);
  return [...stdout.matchAll(/^count=(\d+) t=\d+$/gm)].map((m) => Number(m[1]));
}

function maxCount(counts: number[]): number {
  return counts.reduce((a, b) => Math.max(a, b), 0);
}

/** The counter went on from `frozenAt`: the next value is there and it never started over. */
function assertContinued(counts: number[], frozenAt: number): void {
  assert.equal(counts.filter((c) => c === 1).length, 1, 'count=1 appears once: the counter never reset');
  assert.ok(counts.includes(frozenAt + 1), `count=${frozenAt + 1} follows the checkpoint at count=${frozenAt}`);
  const afterFreeze = counts.slice(counts.lastIndexOf(frozenAt));
  for (let i = 1; i < afterFreeze.length; i++) {
    assert.equal(afterFreeze[i], (afterFreeze[i - 1] ?? 0) + 1, 'consecutive counts after the restore');
  }
}

async function waitForCount(host: PodmanHost, name: string, atLeast: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const counts = await logs(host, name).catch(() => []);
    if (maxCount(counts) >= atLeast) return;
    if (Date.now() > deadline) throw new Error(`${name} on ${host.name} did not reach count=${atLeast} (at ${maxCount(counts)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Mounts whose mount point or source (a bind mount's root) lies below `dir`, as every process sees them
 * (each simulated host's mounts are in a mount namespace of its own), or as one mountinfo file shows them.
 */
async function mountsMentioning(dir: string, mountinfoFile?: string): Promise<string[]> {
  const files =
    mountinfoFile !== undefined
      ? [mountinfoFile]
      : (await readdir('/proc')).filter((e) => /^\d+$/.test(e)).map((e) => `/proc/${e}/mountinfo`);
  const found = new Set<string>();
  for (const file of files) {
    const mountinfo = await readFile(file, 'utf8').catch(() => '');
    for (const line of mountinfo.split('\n')) if (line.includes(`${dir}/`)) found.add(`${file}: ${line}`);
  }
  return [...found];
}

async function processesMentioning(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(`${dir}/`)) found.push(`${entry}: ${cmdline.replace(/\0/g, ' ')}`);
  }
  return found;
}

function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}
