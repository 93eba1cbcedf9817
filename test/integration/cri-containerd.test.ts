/**
 * Orchestrator level against a real runtime: the CRI calls the kubelet makes (RunPodSandbox, CreateContainer,
 * StartContainer, CheckpointContainer) to two containerd 2.x "nodes" on this machine (infra/containerd-host.ts:
 * Debian sid's containerd side-loaded by infra/host-setup.sh), through agents/cri/. A counter checkpointed on
 * node A and restored in a new pod on node B goes on counting from where it was. Needs root, runc, the CRIU
 * wrapper and /opt/ums/containerd2 (run infra/host-setup.sh first).
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import { checkpointContainer, CONTAINERD_CHECKPOINT_ANNOTATION, restoreContainer } from '../../agents/cri/cri-checkpoint.js';
import { CriClient, type PodSandboxConfig } from '../../agents/cri/cri-client.js';
import { CriEngine } from '../../agents/cri/cri-engine.js';
import { CriError } from '../../agents/cri/cri-errors.js';
import { EngineError } from '../../agents/container-engine.js';
import { createLogger } from '../../core/log.js';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { removeArchive } from '../../agents/kubelet/checkpoint-archive.js';
import { buildCheckpointImageArchive } from '../../agents/kubelet/checkpoint-image.js';
import { startContainerdHost, type ContainerdHost } from '../../infra/containerd-host.js';
import { buildCounterImageArchive, DEFAULT_COUNTER_IMAGE } from '../../infra/images/build-counter-image.js';
import { continuity, parseTicks, type Tick } from '../../infra/images/counter-output.js';

const CHECKPOINT_IMAGE = 'localhost/ums/checkpoint-counter:1';

/** A CRI log line is `<RFC3339Nano> <stream> <P|F> <text>` (the kubelet's container log format). */
function criLogTicks(log: string): Tick[] {
  return parseTicks(log.replace(/^\S+ (?:stdout|stderr) [PF] /gm, ''));
}

async function ticksIn(path: string): Promise<Tick[]> {
  return criLogTicks(await readFile(path, 'utf8').catch(() => ''));
}

async function waitForTicks(path: string, atLeast: (ticks: Tick[]) => boolean, what: string, timeoutMs = 20_000): Promise<Tick[]> {
  const started = Date.now();
  for (;;) {
    const ticks = await ticksIn(path);
    if (atLeast(ticks)) return ticks;
    if (Date.now() - started > timeoutMs) throw new Error(`${what}: not reached within ${timeoutMs} ms (${ticks.length} ticks in ${path})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * The restored counter's log: it holds only what the restored process writes (containerd 2.1.9 does not carry
 * the checkpointed log over into it), so its first tick is the one after the state in the checkpoint. The dump
 * came after `countBeforeCheckpoint` was logged, and the source logged `lastAtSource` before it stopped (the CRI
 * checkpoint leaves it running: those extra ticks are work the migration loses). Resolves with the first tick.
 */
async function assertCountsOn(logPath: string, checkpointed: { countBeforeCheckpoint: number; lastAtSource: number }): Promise<Tick> {
  const ticks = await waitForTicks(logPath, (t) => t.length >= 10, `restored counter going on (${logPath})`);
  const c = continuity(ticks);
  assert.ok(c.continuous, `the restored count goes on by one per tick: ${JSON.stringify(c.break)}`);
  const first = ticks[0] as Tick;
  const { countBeforeCheckpoint, lastAtSource } = checkpointed;
  assert.ok(
    first.count > countBeforeCheckpoint && first.count <= lastAtSource + 1,
    `the restored counter starts at ${first.count}, after the ${countBeforeCheckpoint} logged before the checkpoint (not at 1), at most one past the source's last ${lastAtSource}`,
  );
  return first;
}

/** A pod on the node's network (the host's own namespace): no CNI involved, and no hostname of its own (as the kubelet does for hostNetwork pods). */
function podConfig(host: ContainerdHost, name: string, uid: string): PodSandboxConfig {
  return {
    metadata: { name, uid, namespace: 'default', attempt: 0 },
    logDirectory: join(host.dir, 'pods', `default_${name}_${uid}`),
    linux: { cgroupParent: host.cgroupParent, securityContext: { namespaceOptions: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } },
  };
}

async function processesNaming(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).replace(/\0/g, ' ');
    const cwd = await readlink(`/proc/${entry}/cwd`).catch(() => '');
    if (cmdline.includes(dir) || cwd.startsWith(dir)) found.push(`${entry} ${cmdline.slice(0, 120)}`);
  }
  return found;
}

describe('CRI checkpoint and restore on two containerd 2.x nodes', { timeout: 180_000 }, () => {
  let base: string;
  let nodeA: ContainerdHost;
  let nodeB: ContainerdHost;
  let criA: CriClient;
  let criB: CriClient;
  const timings: Record<string, number> = {};
  let checkpointImageTar: string;
  let checkpointed: { countBeforeCheckpoint: number; lastAtSource: number } | undefined;

  before(async () => {
    // Short path: the sockets live below it and unix socket paths are limited to 108 bytes.
    base = await mkdtemp(join(tmpdir(), 'ums-cri-'));
    checkpointImageTar = join(base, 'checkpoint-image.tar');
    const started = Date.now();
    [nodeA, nodeB] = await Promise.all([
      startContainerdHost({ name: 'A', dir: join(base, 'A') }),
      startContainerdHost({ name: 'B', dir: join(base, 'B') }),
    ]);
    timings.hostsUpMs = Date.now() - started;
    const archive = await buildCounterImageArchive(DEFAULT_COUNTER_IMAGE);
    await Promise.all([nodeA.importImage(archive), nodeB.importImage(archive)]);
    criA = new CriClient({ socket: nodeA.socketPath, name: 'node A' });
    criB = new CriClient({ socket: nodeB.socketPath, name: 'node B' });
  });

  after(async () => {
    console.log(`timings: ${JSON.stringify(timings)}`);
    criA?.close();
    criB?.close();
    await Promise.allSettled([nodeA?.destroy(), nodeB?.destroy()]);
    if (base === undefined) return;
    assert.deepEqual(await processesNaming(base), [], 'no process left that names the nodes dir');
    const mounts = await readFile('/proc/self/mountinfo', 'utf8');
    assert.ok(!mounts.includes(base), 'no mount left below the nodes dir');
    for (const node of [nodeA, nodeB]) {
      await assert.rejects(stat(join('/sys/fs/cgroup/memory', node.cgroupParent)), { code: 'ENOENT' }, 'the pods cgroup parent is removed');
    }
    await rm(base, { recursive: true, force: true });
  });

  it('answers Version as containerd 2.x over CRI v1', () => {
    console.log(`runtime: ${JSON.stringify(nodeA.version)}`);
    assert.equal(nodeA.version.runtimeName, 'containerd');
    assert.match(nodeA.version.runtimeVersion, /^2\./);
    assert.equal(nodeA.version.runtimeApiVersion, 'v1');
  });

  it('checkpoints a counter on node A and restores it in a new pod on node B, where it counts on', async () => {
    const image = await criA.imageStatus(DEFAULT_COUNTER_IMAGE);
    assert.ok(image !== undefined, 'node A has the counter image in the CRI namespace');

    const sourcePod = podConfig(nodeA, 'counter-src', 'uid-src-1');
    const sourcePodId = await criA.runPodSandbox(sourcePod);
    const sourceId = await criA.createContainer(
      sourcePodId,
      { metadata: { name: 'counter' }, image: { image: DEFAULT_COUNTER_IMAGE }, logPath: 'counter/0.log' },
      sourcePod,
    );
    await criA.startContainer(sourceId);
    const sourceLog = join(sourcePod.logDirectory as string, 'counter/0.log');
    await waitForTicks(sourceLog, (t) => t.length >= 10, 'source counter ticking');
    assert.equal((await criA.containerStatus(sourceId)).state, 'CONTAINER_RUNNING');
    assert.ok(
      (await readdir(join('/sys/fs/cgroup/memory', nodeA.cgroupParent))).includes(sourceId),
      "the container's cgroup is under the node's cgroup parent (which destroy() removes)",
    );

    // Where the kubelet puts it on a node: <root-dir>/checkpoints/checkpoint-<pod>_<ns>-<ctr>-<time>.tar.
    const checkpointsA = join(nodeA.dir, 'checkpoints');
    await mkdir(checkpointsA, { recursive: true });
    const countBeforeCheckpoint = (await ticksIn(sourceLog)).at(-1)?.count ?? 0;
    const location = join(checkpointsA, `checkpoint-counter-src_default-counter-${new Date().toISOString()}.tar`);
    const checkpoint = await checkpointContainer(criA, sourceId, { location, stopAfter: true });
    timings.checkpointMs = checkpoint.checkpointMs;
    timings.stopMs = checkpoint.stopMs ?? -1;
    timings.archiveBytes = checkpoint.sizeBytes;
    assert.equal((await criA.containerStatus(sourceId)).state, 'CONTAINER_EXITED', 'the source is stopped after its checkpoint');
    const sourceTicks = await ticksIn(sourceLog);

    // The transfer between nodes, here a copy; the source's archive goes once it is elsewhere.
    const checkpointsB = join(nodeB.dir, 'checkpoints');
    await mkdir(checkpointsB, { recursive: true });
    const arrived = join(checkpointsB, 'counter-src.tar');
    await copyFile(location, arrived);
    await removeArchive(location, { root: checkpointsA });
    await assert.rejects(stat(location), { code: 'ENOENT' }, 'the archive is removed on node A');

    // What a Pod would name through the kubelet: the same checkpoint as an image (restored in the next test).
    const built = await buildCheckpointImageArchive({
      archive: arrived,
      containerName: 'counter',
      imageName: CHECKPOINT_IMAGE,
      annotations: { [CONTAINERD_CHECKPOINT_ANNOTATION]: 'counter' },
    });
    await pipeline(built.stream, createWriteStream(checkpointImageTar));
    const lastAtSource = sourceTicks.at(-1)?.count ?? 0;
    checkpointed = { countBeforeCheckpoint, lastAtSource };

    const targetPod = podConfig(nodeB, 'counter-dst', 'uid-dst-1');
    const restored = await restoreContainer(criB, {
      from: { archivePath: arrived },
      sandbox: targetPod,
      containerName: 'counter',
      logPath: 'counter/0.log',
      removeArchiveUnder: checkpointsB,
    });
    timings.restoreSandboxMs = restored.sandboxMs;
    timings.restoreCreateMs = restored.createMs;
    timings.restoreStartMs = restored.startMs;
    assert.equal(restored.archiveRemoved, true);
    await assert.rejects(stat(arrived), { code: 'ENOENT' }, 'the archive is removed on node B after the restore');

    const status = await criB.containerStatus(restored.containerId);
    assert.equal(status.state, 'CONTAINER_RUNNING');
    assert.equal(status.annotations.restored, 'true', 'containerd marks the container as restored');

    const first = await assertCountsOn(join(targetPod.logDirectory as string, 'counter/0.log'), checkpointed);
    const lastCheckpointed = sourceTicks.find((t) => t.count === first.count - 1);
    timings.countBeforeCheckpoint = countBeforeCheckpoint;
    timings.firstRestoredCount = first.count;
    timings.lastCountAtSource = lastAtSource;
    // Wall clock between the last tick in the checkpointed state and the first after the restore.
    timings.serviceGapMs = lastCheckpointed !== undefined ? first.t - lastCheckpointed.t : -1;
  });

  it('restores the same checkpoint from a checkpoint image on node B, as a Pod naming the image would', async () => {
    assert.ok(checkpointed !== undefined, 'the checkpoint test ran first');
    await nodeB.importImage(checkpointImageTar);
    const pod = podConfig(nodeB, 'counter-img', 'uid-img-1');
    const restored = await restoreContainer(criB, {
      from: { image: CHECKPOINT_IMAGE },
      sandbox: pod,
      containerName: 'counter',
      logPath: 'counter/0.log',
    });
    timings.imageRestoreCreateMs = restored.createMs;
    timings.imageRestoreStartMs = restored.startMs;
    const status = await criB.containerStatus(restored.containerId);
    assert.equal(status.state, 'CONTAINER_RUNNING');
    assert.equal(status.annotations.checkpointImage, CHECKPOINT_IMAGE, 'containerd records which checkpoint image it restored');
    await assertCountsOn(join(pod.logDirectory as string, 'counter/0.log'), checkpointed);
  });

  it('keeps the archive and removes the new sandbox when the runtime cannot restore from it', async () => {
    const checkpointsB = join(nodeB.dir, 'checkpoints');
    await mkdir(checkpointsB, { recursive: true });
    const bogus = join(checkpointsB, 'not-a-checkpoint.tar');
    await writeFile(bogus, 'this is not a tar');
    const pod = podConfig(nodeB, 'bogus-dst', 'uid-bogus-1');
    const error = await restoreContainer(criB, {
      from: { archivePath: bogus },
      sandbox: pod,
      containerName: 'counter',
      removeArchiveUnder: checkpointsB,
    }).then(
      () => assert.fail('a restore from a file that is no checkpoint succeeded'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof Error && error.cause instanceof CriError, `an Error caused by a CriError, got ${String(error)}`);
    console.log(`restore from a bogus archive: ${error.message}: ${error.cause.message}`);
    assert.equal(error.cause.method, 'CreateContainer');
    assert.ok((await stat(bogus)).isFile(), 'the archive is kept for a retry');
    const sandboxes = await criB.listPodSandboxes();
    assert.ok(!sandboxes.some((s) => s.metadata?.name === 'bogus-dst'), 'the sandbox made for the restore is gone');
  });

  it('the agent’s engine: a checkpointed pod resumes from its kept tar on its own node (a rollback), and counts on', async () => {
    const engine = new CriEngine({
      socketPath: nodeA.socketPath,
      where: 'node A',
      cgroupParent: nodeA.cgroupParent,
      podNetwork: 'NODE',
      podLogRoot: join(nodeA.dir, 'pods'),
      checkpointDir: join(nodeA.dir, 'agent-checkpoints'),
      logger: createLogger('cri-engine-test'),
    });
    try {
      const pod = podConfig(nodeA, 'counter-rb', 'uid-rb-1');
      const podId = await criA.runPodSandbox(pod);
      const id = await criA.createContainer(
        podId,
        { metadata: { name: 'counter' }, image: { image: DEFAULT_COUNTER_IMAGE }, logPath: 'counter/0.log' },
        pod,
      );
      await criA.startContainer(id);
      const log = join(pod.logDirectory as string, 'counter/0.log');
      await waitForTicks(log, (t) => t.length >= 5, 'counter-rb ticking');
      assert.equal((await engine.inspectContainer('counter-rb'))?.state, 'running');
      const countBefore = (await ticksIn(log)).at(-1)?.count ?? 0;
      const stream = await engine.checkpoint('counter-rb');
      stream.destroy();
      const frozen = await engine.inspectContainer('counter-rb');
      assert.equal(frozen?.state, 'exited', 'the source is stopped after its checkpoint');
      assert.equal(frozen?.checkpointed, true, 'with its tar kept');
      const lastAtSource = (await ticksIn(log)).at(-1)?.count ?? 0;

      const resumed = await engine.resumeCheckpointed('counter-rb');
      assert.equal((await engine.inspectContainer('counter-rb'))?.id, resumed.id);
      assert.equal(await engine.hasKeptCheckpoint('counter-rb'), false, 'the kept tar is gone once it runs again');
      const pods = (await criA.listPodSandboxes()).filter((p) => p.metadata?.name === 'counter-rb');
      assert.equal(pods.length, 1, 'the stopped pod was replaced, not kept beside the resumed one');
      const uid = pods[0]?.metadata?.uid ?? '';
      await assertCountsOn(join(nodeA.dir, 'pods', `default_counter-rb_${uid}`, 'counter/0.log'), {
        countBeforeCheckpoint: countBefore,
        lastAtSource,
      });
      await engine.removeContainer('counter-rb');
      assert.equal(await engine.inspectContainer('counter-rb'), undefined);
    } finally {
      engine.close();
    }
  });

  it('the agent’s engine refuses an archive that is no checkpoint tar before the runtime sees it, and leaves nothing', async () => {
    const checkpointDir = join(nodeB.dir, 'agent-checkpoints');
    const engine = new CriEngine({
      socketPath: nodeB.socketPath,
      where: 'node B',
      cgroupParent: nodeB.cgroupParent,
      podNetwork: 'NODE',
      podLogRoot: join(nodeB.dir, 'pods'),
      checkpointDir,
      logger: createLogger('cri-engine-test'),
    });
    try {
      const error = await engine.restoreFromArchive('garbage', Readable.from([randomBytes(4096)])).then(
        () => assert.fail('a restore from random bytes succeeded'),
        (e: unknown) => e,
      );
      assert.ok(error instanceof EngineError, `an EngineError, got ${String(error)}`);
      assert.match(error.message, /not a CRI checkpoint tar/);
      assert.equal(await engine.inspectContainer('garbage'), undefined, 'no pod made');
      assert.deepEqual(await readdir(checkpointDir), [], 'no file left');
    } finally {
      engine.close();
    }
  });

  it('answers a checkpoint of an unknown container with the typed NotFound error and containerd’s message', async () => {
    const location = join(nodeA.dir, 'never.tar');
    const error = await criA.checkpointContainer('0000000000000000000000000000000000000000000000000000000000000000', location).then(
      () => assert.fail('a checkpoint of an unknown container succeeded'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof CriError, `a CriError, got ${String(error)}`);
    console.log(`checkpoint of an unknown container: ${error.message}`);
    assert.equal(error.code, 'not-found');
    assert.equal(error.method, 'CheckpointContainer');
    assert.match(error.runtimeMessage, /not found/);
    assert.match(error.message, /node A: CheckpointContainer failed \(not-found\)/);
    await assert.rejects(stat(location), { code: 'ENOENT' }, 'no archive written');
  });
});
