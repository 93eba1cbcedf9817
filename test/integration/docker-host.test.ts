/**
 * A simulated Docker host (infra/docker-host.ts) next to a simulated Podman host: its dockerd runs in its own
 * network and mount namespaces, takes the stack's images with the ids Podman gives them, checkpoints a
 * container holding an established loopback TCP connection thanks to the runc.conf only its namespace sees
 * (and fails without it), restores it with its memory and connection, serves a published port on the stack's
 * WAN, and destroy() leaves nothing behind. Needs root, docker.io, podman, runc and CRIU >= 4.2 (run
 * infra/setup.sh first). All traffic stays inside namespaces the test makes.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, readlink, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { Readable } from 'node:stream';
import { ContainerNotFoundError, CriuError } from '../../agents/container-engine.js';
import { DockerEngine } from '../../agents/docker-engine.js';
import { startDockerHost, type DockerHost } from '../../infra/docker-host.js';
import {
  buildCounterImage,
  buildCounterImageArchive,
  COUNTER_BINARY_PATH,
  DEFAULT_COUNTER_IMAGE,
} from '../../infra/images/build-counter-image.js';
import { continuity, parseTicks } from '../../infra/images/counter-output.js';
import { startPodmanHost, type PodmanHost } from '../../infra/podman-host.js';
import { createWan, type Wan } from '../../infra/wan.js';

const execFileAsync = promisify(execFile);
const IMAGE = DEFAULT_COUNTER_IMAGE;

/**
 * The counter, plus a loopback TCP connection inside the same container (and so in its checkpointed process
 * tree): a listener writing what it receives to /tmp/got, and a client sending `lineN` every 0.2 s. The
 * `sleep |` keeps each nc's stdin open: busybox nc closes its side at stdin's end.
 */
const WITH_CONNECTION = [
  'sh',
  '-c',
  `sleep 1000000 | nc -l -p 5000 > /tmp/got & sleep 0.3; (i=0; while true; do i=$((i+1)); echo line$i; sleep 0.2; done) | nc 127.0.0.1 5000 & exec ${COUNTER_BINARY_PATH}`,
];

/** GETs a URL, prints the body; fails on an error status (busybox wget crashes on this machine). */
const HTTP_GET = `
fetch(process.argv[1], { signal: AbortSignal.timeout(2000) })
  .then(async (r) => { if (!r.ok) throw new Error('HTTP ' + r.status); process.stdout.write(await r.text()); })
  .catch((e) => { console.error(String(e.cause ?? e)); process.exit(1); });`;

describe('simulated Docker host', { timeout: 120_000 }, () => {
  let base: string;
  let docker: DockerHost;
  let podman: PodmanHost;
  let wan: Wan | undefined;

  before(async () => {
    // Short path: the sockets live below it and unix socket paths are limited to 108 bytes.
    base = await mkdtemp(join(tmpdir(), 'ums-dh-'));
    [docker, podman] = await Promise.all([
      startDockerHost({ name: 'dh', dir: join(base, 'd') }),
      startPodmanHost({ name: 'dh-podman', dir: join(base, 'p') }),
    ]);
  });

  after(async () => {
    await Promise.allSettled([wan?.destroy(), docker?.destroy(), podman?.destroy()]);
    if (base !== undefined) await rm(base, { recursive: true, force: true });
  });

  it('runs dockerd in its own network namespace, with the CRIU options in its mount namespace only', async () => {
    const pid = docker.daemonPid();
    assert.ok(pid !== undefined, 'dockerd runs');
    assert.equal(await readlink(`/proc/${pid}/ns/net`), await netnsId(docker.netns), 'dockerd is in the host netns');
    const inside = await readFile(`/proc/${pid}/root/etc/criu/runc.conf`, 'utf8');
    assert.match(inside, /^tcp-established$/m);
    assert.match(inside, /^file-locks$/m);
    // The machine's /etc/criu is another directory: Podman's runc calls never read this file.
    const [machine, own] = await Promise.all([stat('/etc/criu'), stat(join(docker.criuConfigFile, '..'))]);
    assert.notEqual(`${machine.dev}:${machine.ino}`, `${own.dev}:${own.ino}`);
    const { stdout } = await docker.docker(['info', '--format', '{{.DockerRootDir}} {{.ExperimentalBuild}}']);
    assert.equal(stdout.trim(), `${docker.dataRoot} true`);
  });

  it('loads the counter image with the id Podman gives it', async () => {
    const archive = await buildCounterImageArchive(IMAGE);
    const [inDocker, inPodman] = await Promise.all([
      docker.loadImage(IMAGE, archive),
      buildCounterImage(podman.url, IMAGE, { env: podman.env }),
    ]);
    assert.equal(inDocker.id, inPodman.id, 'a checkpoint names its image by id: both engines must hold the very same image');
    assert.equal(inDocker.imported, true);
    assert.deepEqual(await docker.loadImage(IMAGE, archive), { id: inDocker.id, imported: false }, 'a second load is skipped');
  });

  it('checkpoints a container holding an established connection only with runc.conf, and restores it', async () => {
    await docker.docker(['run', '-d', '--name', 'c1', IMAGE, ...WITH_CONNECTION]);
    await waitFor('an established loopback connection', async () => (await netstat('c1')).includes('ESTABLISHED'));

    // Without the file, CRIU refuses the established connection and the container runs on; the agent's
    // engine tells it in CRIU's words (from the log Docker's error names), not as runc's exit status.
    await rename(docker.criuConfigFile, `${docker.criuConfigFile}.off`);
    try {
      const engine = new DockerEngine({ socketPath: docker.socketPath, where: 'dh' });
      await assert.rejects(engine.checkpoint('c1'), (error: Error) => {
        assert.ok(error instanceof CriuError, `${error.name}: ${error.message}`);
        assert.match(error.message, /established TCP connection.*Connected TCP socket/);
        return true;
      });
    } finally {
      await rename(`${docker.criuConfigFile}.off`, docker.criuConfigFile);
    }
    assert.equal(await state('c1'), 'true');

    await docker.docker(['checkpoint', 'create', 'c1', 'cp1']);
    assert.equal(await state('c1'), 'false', 'the checkpoint stops the container');
    const before = parseTicks((await docker.docker(['logs', 'c1'])).stdout);
    const linesBefore = await lastLine('c1');

    await docker.docker(['start', '--checkpoint', 'cp1', 'c1']);
    await waitFor(
      'ticks after the restore',
      async () => parseTicks((await docker.docker(['logs', 'c1'])).stdout).length > before.length + 5,
    );
    const ticks = parseTicks((await docker.docker(['logs', 'c1'])).stdout);
    const seen = continuity(ticks);
    assert.ok(seen.continuous, `the count goes on from its checkpointed value: ${JSON.stringify(seen.break)}`);
    assert.ok(ticks.length > before.length);
    // The connection was restored too: the listener keeps receiving the client's lines.
    assert.match(await netstat('c1'), /127\.0\.0\.1:5000\s+ESTABLISHED/);
    await waitFor('new lines over the restored connection', async () => (await lastLine('c1')) > linesBefore);
  });

  it("the agent's engine refuses bad input with the reason, and leaves nothing under the name", async () => {
    const engine = new DockerEngine({ socketPath: docker.socketPath, where: 'dh' });
    await assert.rejects(engine.checkpoint('no-such-container'), ContainerNotFoundError);
    const corrupt = Readable.from([Buffer.from('not a tar at all, but long enough to be read as one block'.repeat(20))]);
    await assert.rejects(
      engine.restoreFromArchive('r1', corrupt),
      /the archive does not unpack|is missing: it is not a Docker checkpoint archive/,
    );
    // A Podman export (what a Podman host's checkpoint is) has no docker.json.
    await podman.podman(['run', '-d', '--name', 'p1', IMAGE]);
    const exported = join(base, 'p1.tar');
    await podman.podman(['container', 'checkpoint', '--export', exported, 'p1']);
    await assert.rejects(
      engine.restoreFromArchive('r1', exported),
      /the archive's docker\.json is missing: it is not a Docker checkpoint archive/,
    );
    assert.equal(await engine.inspectContainer('r1'), undefined, 'nothing left under the name');
    await podman.podman(['rm', '-f', 'p1']);
  });

  it("serves a published port on the stack's WAN", async () => {
    wan = await createWan({ stackName: 'dh-test', stackDir: base });
    const onWan = await wan.attachHost('dh', docker.netns);
    await docker.docker([
      'run',
      '-d',
      '--name',
      'web',
      '-p',
      '8080:8080',
      IMAGE,
      'sh',
      '-c',
      'echo hello > /tmp/index.html && exec httpd -f -p 8080 -h /tmp',
    ]);
    const client = await wan.addClient('browser');
    let body = '';
    await waitFor('the published port on the WAN', async () => {
      body = await client.exec(process.execPath, ['-e', HTTP_GET, `http://${onWan.address}:8080/index.html`]).then(
        (r) => r.stdout,
        () => '',
      );
      return body !== '';
    });
    assert.equal(body.trim(), 'hello');
  });

  it('destroy() leaves no process, mount, runc container, namespace or file behind', async () => {
    const { stdout } = await docker.docker(['inspect', '--format', '{{.State.Pid}}', 'c1']);
    const containerPid = Number(stdout.trim());
    assert.ok(containerPid > 0);
    const daemonPid = docker.daemonPid();
    await wan?.destroy();
    await docker.destroy();
    await docker.destroy();
    assert.equal(docker.daemonPid(), undefined);
    for (const pid of [containerPid, daemonPid ?? 0]) assert.equal(await alive(pid), false, `pid ${pid} is gone`);
    assert.deepEqual(await processesMentioning(docker.dir), [], 'no processes left from the host');
    assert.deepEqual(await mountsMentioning(docker.dir), [], 'no mounts left below the host dir, in any mount namespace');
    const { stdout: namespaces } = await execFileAsync('ip', ['netns', 'list']);
    assert.doesNotMatch(namespaces, new RegExp(`^${docker.netns}\\b`, 'm'));
    await assert.rejects(stat(docker.dir), { code: 'ENOENT' });
  });

  async function netstat(container: string): Promise<string> {
    return (await docker.docker(['exec', container, 'netstat', '-tn'])).stdout;
  }

  async function state(container: string): Promise<string> {
    return (await docker.docker(['inspect', '--format', '{{.State.Running}}', container])).stdout.trim();
  }

  /** The number N of the last `lineN` the in-container listener received, read from the container's rootfs diff. */
  async function lastLine(container: string): Promise<number> {
    const { stdout } = await docker.docker(['inspect', '--format', '{{.GraphDriver.Data.UpperDir}}', container]);
    const text = await readFile(join(stdout.trim(), 'tmp', 'got'), 'utf8');
    return Number([...text.matchAll(/line(\d+)/g)].at(-1)?.[1] ?? 0);
  }
});

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function netnsId(netns: string): Promise<string> {
  const { ino } = await stat(`/run/netns/${netns}`);
  return `net:[${ino}]`;
}

/** A zombie (this machine's PID 1 reaps orphans late) counts as gone. */
async function alive(pid: number): Promise<boolean> {
  if (pid <= 0) return false;
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return status !== '' && !/^State:\s+Z/m.test(status);
}

async function mountsMentioning(dir: string): Promise<string[]> {
  const found = new Set<string>();
  for (const entry of (await readdir('/proc')).filter((e) => /^\d+$/.test(e))) {
    const mountinfo = await readFile(`/proc/${entry}/mountinfo`, 'utf8').catch(() => '');
    for (const line of mountinfo.split('\n')) if (line.includes(`${dir}/`)) found.add(`${entry}: ${line}`);
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
