/**
 * Service-level migration (UMS, GLOBECOM 2023; like FastFreeze): the checkpoint/restore machinery ships in
 * the service's image (ums-launcher as PID 1 + CRIU 4.1.1), so moving a service between two simulated hosts
 * needs only "start a plain container of this image" on each; neither host's engine checkpoints anything.
 * Needs root, podman with runc and the side-loaded CRIU of infra/host-setup.sh (copied into the image).
 *
 * Every container runs with exactly these options beyond `podman run -d --name N IMAGE` (launcherRunArgs,
 * launcher/convention.ts):
 *   --cap-add CHECKPOINT_RESTORE,SYS_PTRACE  CRIU --unprivileged: ptrace/parasite (SYS_PTRACE), map_files,
 *                                            PR_SET_MM_MAP and clone3 set_tid for old PIDs (CHECKPOINT_RESTORE)
 *   --security-opt seccomp=unconfined        CRIU must suspend a traced task's seccomp filter while its
 *                                            parasite runs (PTRACE_O_SUSPEND_SECCOMP); the kernel allows that
 *                                            only to a tracer with CAP_SYS_ADMIN in the initial user namespace
 *                                            that is itself without seccomp. With the default profile every
 *                                            dump fails with "suspending seccomp failed: Operation not
 *                                            permitted". This drops the syscall filter; it adds no capability.
 *   -v DIR:/run/ums-launcher                 the control socket, reached from the host
 * No --privileged, no host PID namespace, no CRIU or checkpoint call on the hosts' engines.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { LauncherClient, LauncherError, type CheckpointStream } from '../../launcher/client.js';
import { launcherRunArgs, LAUNCHER_SOCKET_NAME } from '../../launcher/convention.js';
import { continuity, joinTicks, parseLabelledTicks, parseTicks, type LabelledTick, type Tick } from '../../infra/images/counter-output.js';
import {
  buildLauncherImage,
  DEFAULT_LAUNCHED_COUNTER_IMAGE,
  DEFAULT_LAUNCHED_MULTI_COUNTER_IMAGE,
  MULTI_COUNTER_PATH,
} from '../../infra/images/build-service-image.js';
import { COUNTER_BINARY_PATH } from '../../infra/images/build-counter-image.js';
import { startPodmanHost, type PodmanHost } from '../../infra/podman-host.js';

const COUNTER = DEFAULT_LAUNCHED_COUNTER_IMAGE;
const MULTI = DEFAULT_LAUNCHED_MULTI_COUNTER_IMAGE;

interface Launched {
  host: PodmanHost;
  name: string;
  client: LauncherClient;
}

describe('service-level migration with ums-launcher on two simulated hosts', { timeout: 600_000 }, () => {
  let base: string;
  let hostA: PodmanHost;
  let hostB: PodmanHost;
  const figures: Record<string, number[]> = {};
  const note = (key: string, value: number) => (figures[key] ??= []).push(value);

  before(async () => {
    // Short: the hosts' API sockets and the control sockets live below it (sockaddr_un holds 108 bytes).
    base = await mkdtemp(join(tmpdir(), 'ums-sl-'));
    [hostA, hostB] = await Promise.all([
      startPodmanHost({ name: 'A', dir: join(base, 'A') }),
      startPodmanHost({ name: 'B', dir: join(base, 'B') }),
    ]);
    for (const [tag, service] of [
      [COUNTER, 'counter'],
      [MULTI, 'multi-counter'],
    ] as const) {
      const onA = await buildLauncherImage(hostA.url, tag, { env: hostA.env, base: service });
      const onB = await buildLauncherImage(hostB.url, tag, { env: hostB.env, base: service });
      assert.equal(onA.id, onB.id, `${tag} has the same id on both hosts`);
    }
  });

  after(async () => {
    for (const [key, values] of Object.entries(figures)) console.log(`figure ${key}: ${values.join(', ')}`);
    await Promise.allSettled([hostA?.destroy(), hostB?.destroy()]);
    if (base !== undefined) await rm(base, { recursive: true, force: true });
  });

  /** `podman run` of a launched image, the control directory bind-mounted; restore mode waits for an archive. */
  async function launch(
    host: PodmanHost,
    name: string,
    image: string,
    mode: 'run' | 'restore' = 'run',
    env: string[] = [],
  ): Promise<Launched> {
    const control = join(base, 'ctl', `${host.name}-${name}`);
    await mkdir(control, { recursive: true });
    const service = image === MULTI ? MULTI_COUNTER_PATH : COUNTER_BINARY_PATH;
    const command = mode === 'restore' ? ['--restore', '--', service] : [];
    const envArgs = env.flatMap((e) => ['-e', e]);
    await host.podman(['run', '-d', '--name', name, ...launcherRunArgs(control), ...envArgs, image, ...command]);
    const client = new LauncherClient({ socketPath: join(control, LAUNCHER_SOCKET_NAME), where: `${name} on host ${host.name}` });
    const status = await client.waitReady();
    assert.equal(status.mode, mode === 'run' ? 'running' : 'waiting-for-restore');
    return { host, name, client };
  }

  /** Checkpoint on `from`, streamed straight into a restore on `to` (no file in between). */
  async function migrate(from: Launched, to: Launched, label: string): Promise<void> {
    const started = Date.now();
    const archive = await from.client.checkpoint();
    const restored = await to.client.restore(archive);
    const total = Date.now() - started;
    note(`${label}: checkpoint (CRIU dump) ms`, archive.info.dumpMs);
    note(`${label}: restore (CRIU) ms`, restored.restoreMs);
    note(`${label}: checkpoint+transfer+restore ms`, total);
    note(`${label}: archive bytes`, archive.info.bytes);
    assert.equal(restored.bytes, archive.info.bytes, 'the target received the whole archive');
    assert.equal((await from.client.status()).mode, 'frozen', 'the source keeps its stopped copy until discarded');
    const status = await to.client.status();
    assert.equal(status.mode, 'restored');
    assert.equal(status.pid, restored.pid);
  }

  /** Discards the source: its launcher exits 0 and so does the container. */
  async function discard(launched: Launched): Promise<void> {
    await launched.client.discard();
    const deadline = Date.now() + 15_000;
    for (;;) {
      const state = (
        await launched.host.podman(['inspect', '--format', '{{.State.Status}} {{.State.ExitCode}}', launched.name])
      ).stdout.trim();
      if (state === 'exited 0') break;
      assert.ok(Date.now() < deadline, `${launched.name} on ${launched.host.name} exits after discard (state ${state})`);
      await sleep(100);
    }
    await assert.rejects(launched.client.status(), (error: unknown) => error instanceof LauncherError && error.failure === 'unreachable');
  }

  it('migrates the counter A -> B: the count continues, the source container exits', async () => {
    // 20 ms ticks: the gap between ticks then measures the freeze to within 20 ms.
    const a = await launch(hostA, 'mig', COUNTER, 'run', ['COUNTER_TICK_MS=20']);
    await waitForTicks(a, 20);
    const before = await a.client.status();
    assert.ok(before.pid !== undefined && before.pid >= 10_000, `the service runs at a high PID (${before.pid})`);
    assert.equal(before.processes, 1);
    assert.ok(before.rssBytes > 0);

    const b = await launch(hostB, 'mig', COUNTER, 'restore');
    await migrate(a, b, 'single');
    await discard(a);
    // After the discard: the source launcher has copied all its service wrote to the log and exited.
    const ticksA = await ticksOf(a);
    const frozenAt = ticksA.at(-1)?.count ?? 0;
    assert.ok(frozenAt >= 20);

    await waitForTicks(b, frozenAt + 5);
    const ticksB = await ticksOf(b);
    assert.equal(ticksB[0]?.count, frozenAt + 1, `B's first tick follows A's last (${frozenAt})`);
    const joined = continuity(joinTicks(ticksA, ticksB));
    assert.ok(joined.continuous, `continuous across the migration: ${JSON.stringify(joined.break)}`);
    note('single: counter gap ms', joined.maxGapMs);
    const after = await b.client.status();
    assert.equal(after.pid, before.pid, 'same PID in the new container');
    assert.equal(after.restores, 1);
    // The launcher passes SIGTERM on to the restored service, which exits 0: no stop timeout, no SIGKILL.
    const stopping = Date.now();
    await b.host.podman(['stop', '--time', '10', b.name]);
    assert.ok(Date.now() - stopping < 5_000, `podman stop took ${Date.now() - stopping} ms`);
    assert.equal((await b.host.podman(['inspect', '--format', '{{.State.ExitCode}}', b.name])).stdout.trim(), '0');
  });

  it('migrates a counter holding 128 MiB of random memory A -> B', async () => {
    const a = await launch(hostA, 'big', COUNTER, 'run', ['COUNTER_MEM_MIB=128', 'COUNTER_TICK_MS=20']);
    await waitForTicks(a, 10);
    assert.ok((await a.client.status()).rssBytes > 128 * 1024 * 1024, 'the 128 MiB are resident');
    const b = await launch(hostB, 'big', COUNTER, 'restore');
    await migrate(a, b, '128 MiB');
    await discard(a);
    const ticksA = await ticksOf(a);
    await waitForTicks(b, (ticksA.at(-1)?.count ?? 0) + 10);
    const joined = continuity(joinTicks(ticksA, await ticksOf(b)));
    assert.ok(joined.continuous, JSON.stringify(joined.break));
    note('128 MiB: counter gap ms', joined.maxGapMs);
    assert.ok((await b.client.status()).rssBytes > 128 * 1024 * 1024, 'the 128 MiB came across');
    await hostB.podman(['rm', '--force', '--time', '0', b.name]);
  });

  it('migrates along a chain A -> B -> A, re-checkpointing the restored service', async () => {
    const a1 = await launch(hostA, 'chain-a1', COUNTER);
    await waitForTicks(a1, 3);
    const b = await launch(hostB, 'chain-b', COUNTER, 'restore');
    await migrate(a1, b, 'chain A->B');
    await discard(a1);
    const ticks1 = await ticksOf(a1);
    await waitForTicks(b, (ticks1.at(-1)?.count ?? 0) + 5);

    const a2 = await launch(hostA, 'chain-a2', COUNTER, 'restore');
    await migrate(b, a2, 'chain B->A');
    await discard(b);
    const ticks2 = await ticksOf(b);
    await waitForTicks(a2, (ticks2.at(-1)?.count ?? 0) + 5);
    const ticks3 = await ticksOf(a2);
    const all = joinTicks(joinTicks(ticks1, ticks2), ticks3);
    const chain = continuity(all);
    assert.ok(chain.continuous, `continuous over two hops: ${JSON.stringify(chain.break)}`);
    assert.equal(all[0]?.count, 1);
    note('chain: counter gap ms (worst hop)', chain.maxGapMs);
    assert.equal((await a2.client.status()).restores, 1);
    await hostA.podman(['rm', '--force', '--time', '0', a2.name]);
  });

  it('rolls back: after a checkpoint, resume brings the service back in the same container', async () => {
    const a = await launch(hostA, 'rollback', COUNTER);
    await waitForTicks(a, 5);
    const archive = await a.client.checkpoint();
    const bytes = await drain(archive);
    assert.equal(bytes, archive.info.bytes);
    const frozenAt = (await ticksOf(a)).at(-1)?.count ?? 0;
    await sleep(500);
    assert.equal((await ticksOf(a)).at(-1)?.count, frozenAt, 'nothing ticks while frozen');
    // A second checkpoint of a frozen service is refused, not a second dump.
    await assert.rejects(
      a.client.checkpoint(),
      (error: unknown) => error instanceof LauncherError && error.failure === 'refused' && /resume or discard/.test(error.message),
    );

    const started = Date.now();
    const resumed = await a.client.resume();
    note('rollback: resume ms', Date.now() - started);
    assert.equal(resumed.mode, 'running');
    await waitForTicks(a, frozenAt + 5);
    const ticks = await ticksOf(a);
    const c = continuity(ticks);
    assert.ok(c.continuous, `continuous after resume: ${JSON.stringify(c.break)}`);
    note('rollback: counter gap ms', c.maxGapMs);
    const status = await a.client.status();
    assert.equal(status.mode, 'running');
    assert.equal(status.checkpoints, 1);
    await assert.rejects(a.client.resume(), (error: unknown) => error instanceof LauncherError && error.failure === 'refused');
    await hostA.podman(['rm', '--force', '--time', '0', a.name]);
  });

  it('migrates a five-process service A -> B; every process keeps its state', async () => {
    const a = await launch(hostA, 'multi', MULTI);
    await waitFor(async () => {
      const lines = await labelledOf(a);
      return (lines.a.at(-1)?.count ?? 0) >= 5 && (lines.b.at(-1)?.count ?? 0) >= 5;
    }, 'both counters tick on A');
    const before = await a.client.status();
    assert.equal(before.processes, 5, 'shell, two counters, two labelling loops');
    const b = await launch(hostB, 'multi', MULTI, 'restore');
    await migrate(a, b, 'multi');
    await discard(a);
    const onA = await labelledOf(a);
    await waitFor(async () => {
      const lines = await labelledOf(b);
      return (
        (lines.a.at(-1)?.count ?? 0) >= (onA.a.at(-1)?.count ?? 0) + 5 && (lines.b.at(-1)?.count ?? 0) >= (onA.b.at(-1)?.count ?? 0) + 5
      );
    }, 'both counters tick on B');
    const onB = await labelledOf(b);
    for (const label of ['a', 'b'] as const) {
      const lastA = onA[label].at(-1);
      const firstB = onB[label][0];
      assert.ok(lastA !== undefined && firstB !== undefined);
      // The counter's count and the labelling shell's line number are both memory of different processes.
      assert.equal(firstB.count, lastA.count + 1, `${label}: the counter continues`);
      assert.equal(firstB.lines, lastA.lines + 1, `${label}: the labelling loop's line count continues`);
      const c = continuity(joinTicks(onA[label], onB[label]));
      assert.ok(c.continuous, `${label}: ${JSON.stringify(c.break)}`);
      note(`multi: counter gap ms (${label})`, c.maxGapMs);
    }
    const after = await b.client.status();
    assert.equal(after.processes, 5);
    note('multi: tree RSS KiB', Math.round(after.rssBytes / 1024));
    await hostB.podman(['rm', '--force', '--time', '0', b.name]);
  });

  it('refuses bad archives clearly; the source resumes and a later good archive still restores', async () => {
    const a = await launch(hostA, 'bad', COUNTER);
    await waitForTicks(a, 3);
    const b = await launch(hostB, 'bad', COUNTER, 'restore');

    // Wrong-mode requests and a missing socket.
    await assert.rejects(
      b.client.checkpoint(),
      (error: unknown) => error instanceof LauncherError && error.failure === 'refused' && /waiting-for-restore/.test(error.message),
    );
    await assert.rejects(
      a.client.restore(Readable.from([Buffer.alloc(1024)])),
      (error: unknown) => error instanceof LauncherError && /restore mode/.test(error.message),
    );
    const nowhere = new LauncherClient({ socketPath: join(base, 'nowhere', 'control.sock'), where: 'nowhere' });
    await assert.rejects(
      nowhere.status(),
      (error: unknown) => error instanceof LauncherError && error.failure === 'unreachable' && /bind-mounted/.test(error.message),
    );

    const archive = await collect(await a.client.checkpoint());
    const frozenAt = (await ticksOf(a)).at(-1)?.count ?? 0;
    const pages = entryOffset(archive, /^pages-\d+\.img$/);
    const corrupt = Buffer.from(archive);
    const flipAt = pages.data + Math.floor(pages.size / 2);
    corrupt.writeUInt8((corrupt.readUInt8(flipAt) ^ 0xff) & 0xff, flipAt);
    const cases: [string, Buffer, RegExp][] = [
      ['garbage', Buffer.alloc(64 * 1024, 0x5a), /bad header checksum: not a tar/],
      ['truncated', archive.subarray(0, Math.floor(archive.length / 2)), /truncated/],
      ['one flipped byte in the memory pages', corrupt, /checksum mismatch.*pages-/],
      ['empty', Buffer.alloc(0), /ended after 0 bytes/],
    ];
    for (const [what, bytes, expected] of cases) {
      await assert.rejects(b.client.restore(Readable.from([bytes])), (error: unknown) => {
        assert.ok(error instanceof LauncherError, `LauncherError, got ${String(error)}`);
        assert.equal(error.failure, 'refused');
        assert.match(error.message, expected);
        console.log(`bad archive (${what}): ${error.message}`);
        return true;
      });
      assert.equal((await b.client.status()).mode, 'waiting-for-restore', `${what}: B still waits`);
    }
    // An archive stream that breaks on the sending side: the client says so, B keeps waiting.
    const broken = new Readable({ read() {} });
    broken.push(archive.subarray(0, 4096));
    setTimeout(() => broken.destroy(new Error('source went away')), 100);
    await assert.rejects(
      b.client.restore(broken),
      (error: unknown) => error instanceof LauncherError && error.failure === 'stream' && /source went away/.test(error.message),
    );
    await waitFor(async () => (await b.client.status()).mode === 'waiting-for-restore', 'B waits after a broken stream');

    // The migration failed: the source resumes where it stopped.
    await a.client.resume();
    await waitForTicks(a, frozenAt + 3);
    const c = continuity(await ticksOf(a));
    assert.ok(c.continuous, JSON.stringify(c.break));

    // And the refused target still takes a good archive.
    await migrate(a, b, 'after bad input');
    await discard(a);
    const ticksA = await ticksOf(a);
    await waitForTicks(b, (ticksA.at(-1)?.count ?? 0) + 3);
    const joined = continuity(joinTicks(ticksA, await ticksOf(b)));
    assert.ok(joined.continuous, JSON.stringify(joined.break));
    await hostB.podman(['rm', '--force', '--time', '0', b.name]);

    // A restore target nobody needs any more goes away on discard, like a migrated source.
    await discard(await launch(hostB, 'unused', COUNTER, 'restore'));
  });
});

async function ticksOf(launched: Launched): Promise<Tick[]> {
  return parseTicks((await launched.host.podman(['logs', launched.name])).stdout);
}

/** The multi-counter's `a lines=N count=M t=MS` lines, by label. */
async function labelledOf(launched: Launched): Promise<{ a: LabelledTick[]; b: LabelledTick[] }> {
  const byLabel = parseLabelledTicks((await launched.host.podman(['logs', launched.name])).stdout);
  return { a: byLabel.a ?? [], b: byLabel.b ?? [] };
}

async function waitForTicks(launched: Launched, atLeast: number): Promise<void> {
  await waitFor(
    async () => ((await ticksOf(launched)).at(-1)?.count ?? 0) >= atLeast,
    `${launched.name} on ${launched.host.name} reaches count=${atLeast}`,
  );
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) assert.fail(`timed out: ${what}`);
    await sleep(100);
  }
}

async function drain(stream: CheckpointStream): Promise<number> {
  let bytes = 0;
  for await (const chunk of stream) bytes += (chunk as Buffer).length;
  return bytes;
}

async function collect(stream: CheckpointStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Where the first tar entry whose name matches starts its data, and its size. */
function entryOffset(tar: Buffer, name: RegExp): { data: number; size: number } {
  for (let offset = 0; offset + 512 <= tar.length;) {
    const entryName = tar
      .subarray(offset, offset + 100)
      .toString('latin1')
      .replace(/\0.*$/s, '');
    if (entryName === '') break;
    const size = parseInt(
      tar
        .subarray(offset + 124, offset + 136)
        .toString('latin1')
        .replace(/\0/g, '')
        .trim(),
      8,
    );
    if (name.test(entryName)) return { data: offset + 512, size };
    offset += 512 + Math.ceil(size / 512) * 512;
  }
  throw new Error(`no entry matching ${name} in the archive`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
