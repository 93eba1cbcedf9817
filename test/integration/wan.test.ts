/**
 * The stack's WAN (infra/wan.ts) between two real simulated Podman hosts: the hosts reach each other over
 * TCP, a container's published port answers a client namespace at its host's WAN address, and teardown
 * (also after a crashed run) leaves no namespace, veth or bridge behind. Needs root, podman and runc (run
 * infra/host-setup.sh first). All traffic stays inside namespaces the test makes.
 */
import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, readdir, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { buildCounterImage, DEFAULT_COUNTER_IMAGE } from '../../infra/images/build-counter-image.js';
import { startPodmanHost, type PodmanHost } from '../../infra/podman-host.js';
import { createWan, removeWan, WAN_BRIDGE, WAN_INTERFACE, WAN_SUBNET, type Wan, type WanEndpoint } from '../../infra/wan.js';

const execFileAsync = promisify(execFile);

/** A TCP server that answers every connection with its own name and the peer address it sees. */
const SERVER = `
const [name, address, port] = process.argv.slice(1);
require('node:net').createServer((s) => s.end(name + ' sees ' + s.remoteAddress + '\\n'))
  .listen(Number(port), address, () => console.log('listening'));`;
/** Connects, prints what the server says. */
const CLIENT = `
const [address, port] = process.argv.slice(1);
const s = require('node:net').connect(Number(port), address);
s.setEncoding('utf8');
let got = '';
s.on('data', (d) => (got += d));
s.on('end', () => process.stdout.write(got));
s.on('error', (e) => { console.error(e.message); process.exit(1); });`;
/** GETs a URL, prints the body; fails on an error status. */
const HTTP_GET = `
fetch(process.argv[1], { signal: AbortSignal.timeout(2000) })
  .then(async (r) => { if (!r.ok) throw new Error('HTTP ' + r.status); process.stdout.write(await r.text()); })
  .catch((e) => { console.error(String(e.cause ?? e)); process.exit(1); });`;

describe('stack WAN between two simulated hosts', { timeout: 180_000 }, () => {
  let base: string;
  let hostA: PodmanHost;
  let hostB: PodmanHost;
  let wan: Wan;
  let onWanA: WanEndpoint;
  let onWanB: WanEndpoint;
  let rootLinksBefore: string[];
  const servers: ChildProcess[] = [];

  before(async () => {
    rootLinksBefore = await rootLinks();
    base = await mkdtemp(join(tmpdir(), 'ums-wan-'));
    [hostA, hostB] = await Promise.all([
      startPodmanHost({ name: 'wanA', dir: join(base, 'A') }),
      startPodmanHost({ name: 'wanB', dir: join(base, 'B') }),
    ]);
    wan = await createWan({ stackName: 'wan-test', stackDir: base });
    onWanA = await wan.attachHost('A', netnsOf(hostA));
    onWanB = await wan.attachHost('B', netnsOf(hostB));
    await buildCounterImage(hostA.url, DEFAULT_COUNTER_IMAGE, { env: hostA.env });
  });

  after(async () => {
    for (const server of servers) server.kill('SIGKILL');
    await wan?.destroy();
    await Promise.allSettled([hostA?.destroy(), hostB?.destroy()]);
    if (base !== undefined) await rm(base, { recursive: true, force: true });
  });

  it('gives each host a distinct address in the WAN subnet', () => {
    assert.equal(wan.subnet, WAN_SUBNET);
    assert.match(onWanA.address, /^198\.18\.0\.\d+$/);
    assert.match(onWanB.address, /^198\.18\.0\.\d+$/);
    assert.notEqual(onWanA.address, onWanB.address);
    assert.equal(wan.hosts.get('A'), onWanA);
  });

  it('lets the hosts reach each other over TCP in both directions', async () => {
    for (const [server, client] of [
      [onWanA, onWanB],
      [onWanB, onWanA],
    ] as const) {
      const port = 7100;
      servers.push(await startServer(server, port));
      const { stdout } = await client.exec(process.execPath, ['-e', CLIENT, server.address, String(port)]);
      // The server sees the client's own WAN address: no NAT between hosts.
      assert.equal(stdout.trim(), `${server.name} sees ${client.address}`);
    }
  });

  it("serves a container port published on host A to a client namespace at host A's address", async () => {
    await hostA.podman([
      'run',
      '-d',
      '--name',
      'web',
      '-p',
      '8080:80',
      DEFAULT_COUNTER_IMAGE,
      'sh',
      '-c',
      'mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 80 -h /www',
    ]);
    const client = await wan.addClient('browser');
    assert.match(client.address, /^198\.18\.0\.\d+$/);
    assert.notEqual(client.address, onWanA.address);
    const body = await retry(() => client.exec(process.execPath, ['-e', HTTP_GET, `http://${onWanA.address}:8080/`]));
    assert.equal(body.stdout.trim(), 'hello-from-web');
    // The other host has no such port: the answer came from host A's container.
    await assert.rejects(client.exec(process.execPath, ['-e', HTTP_GET, `http://${onWanB.address}:8080/`]), /ECONNREFUSED/);
  });

  it('removes every namespace, veth and bridge on teardown', async () => {
    const client = await wan.addClient('leftover-check');
    const sleeper = client.spawn('sleep', ['600'], { stdio: 'ignore' });
    const exited = new Promise((resolve) => sleeper.once('exit', resolve));
    const namespaces = [wan.netns, ...[...wan.clients.values()].map((c) => c.netns), netnsOf(hostA), netnsOf(hostB)];
    assert.ok(namespaces.includes(client.netns));
    const inodes = await Promise.all(namespaces.map(async (n) => (await stat(`/run/netns/${n}`)).ino));

    await wan.destroy();
    await exited;
    // The hosts lose their WAN interface at once, not when the kernel gets round to freeing the WAN namespace.
    for (const host of [hostA, hostB]) {
      const { stdout } = await execFileAsync('ip', ['-n', netnsOf(host), '-o', 'link', 'show']);
      assert.ok(!stdout.includes(`${WAN_INTERFACE}@`), `${host.name} still has ${WAN_INTERFACE}: ${stdout}`);
    }
    await Promise.all([hostA.destroy(), hostB.destroy()]);

    const listed = (await execFileAsync('ip', ['netns', 'list'])).stdout;
    for (const n of namespaces) assert.ok(!listed.includes(n), `namespace ${n} still listed`);
    // Unlisted is not gone: a process or a mount (in any mount namespace) would keep it, and its veths, alive.
    assert.deepEqual(await netnsReferences(inodes), [], 'nothing holds the namespaces any more');
    // Others may add interfaces to the machine's namespace meanwhile; none may be one of ours.
    const added = (await rootLinks()).filter((l) => !rootLinksBefore.includes(l));
    assert.deepEqual(
      added.filter((l) => l === WAN_INTERFACE || l === WAN_BRIDGE || /^v\d+$/.test(l)),
      [],
      "no WAN interface in the machine's own namespace",
    );
  });
});

describe('a WAN started again for the same stack dir', { timeout: 60_000 }, () => {
  it('removes what a crashed run left behind and works', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ums-wan-crash-'));
    try {
      const crashed = await createWan({ stackName: 'crash-test', stackDir: dir });
      const client = await crashed.addClient('c');
      const sleeper = client.spawn('sleep', ['600'], { stdio: 'ignore' });
      const exited = new Promise((resolve) => sleeper.once('exit', resolve));
      // No destroy(): the next run finds the namespaces by name.
      const wan = await createWan({ stackName: 'crash-test', stackDir: dir });
      assert.equal(wan.netns, crashed.netns);
      await exited;
      assert.ok(!(await readdir('/run/netns')).includes(client.netns), 'the old client namespace is gone');
      try {
        const again = await wan.addClient('c');
        const other = await wan.addClient('d');
        const server = await startServer(again, 7200);
        const { stdout } = await other.exec(process.execPath, ['-e', CLIENT, again.address, '7200']);
        assert.equal(stdout.trim(), `c sees ${other.address}`);
        server.kill('SIGKILL');
      } finally {
        await wan.destroy();
      }
      assert.deepEqual(
        (await readdir('/run/netns')).filter((n) => n.startsWith(wan.netns)),
        [],
      );
    } finally {
      await removeWan({ stackName: 'crash-test', stackDir: dir });
      await rm(dir, { recursive: true, force: true });
    }
  });
});

function netnsOf(host: PodmanHost): string {
  if (host.netns === undefined) throw new Error(`host ${host.name} runs without a network namespace`);
  return host.netns;
}

async function startServer(endpoint: WanEndpoint, port: number): Promise<ChildProcess> {
  const child = endpoint.spawn(process.execPath, ['-e', SERVER, endpoint.name, endpoint.address, String(port)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      if (d.toString().includes('listening')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`server in ${endpoint.netns} exited with ${code}`)));
  });
  return child;
}

/** The service in the container needs a moment to listen; try again for a few seconds. */
async function retry<T>(attempt: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await attempt();
    } catch (error) {
      if (i >= 20) throw error;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

async function rootLinks(): Promise<string[]> {
  const { stdout } = await execFileAsync('ip', ['-o', 'link', 'show']);
  return stdout
    .split('\n')
    .map((line) => /^\d+:\s+([^:@\s]+)/.exec(line)?.[1])
    .filter((n): n is string => n !== undefined)
    .sort();
}

/** Processes in, and mounts (in any process's mount namespace) of, the network namespaces with these inodes. */
async function netnsReferences(inodes: number[]): Promise<string[]> {
  const wanted = new Set(inodes.map((ino) => `net:[${ino}]`));
  const found: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const ns = await readlink(`/proc/${entry}/ns/net`).catch(() => '');
    if (wanted.has(ns)) found.push(`process ${entry} in ${ns}`);
    const mountinfo = await readFile(`/proc/${entry}/mountinfo`, 'utf8').catch(() => '');
    for (const key of wanted) if (mountinfo.includes(key)) found.push(`mount of ${key} seen by process ${entry}`);
  }
  return [...new Set(found)];
}
