/**
 * The local stack with its WAN: stack.json names the WAN and each host's address on it, a container's
 * published port on one host answers a client namespace at the address stack.json gives, and stop() leaves
 * none of the stack's namespaces behind. The hosts use the file store, so no storage emulator is started.
 * Needs root, podman, runc and nats-server (run infra/host-setup.sh first).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { readStackInfo, type HostSpec, type StackInfo } from '../../cli/stack-info.js';
import { startLocalStack, type LocalStack } from '../../infra/local-stack.js';

const execFileAsync = promisify(execFile);

const HOSTS: HostSpec[] = [
  { agentId: 'azure-eastus-1', cloud: 'azure', region: 'eastus', store: 'file' },
  { agentId: 'gcp-us-central1-1', cloud: 'gcp', region: 'us-central1', store: 'file' },
];

/** GETs a URL, prints the body; fails on an error status. */
const HTTP_GET = `
fetch(process.argv[1], { signal: AbortSignal.timeout(2000) })
  .then(async (r) => { if (!r.ok) throw new Error('HTTP ' + r.status); process.stdout.write(await r.text()); })
  .catch((e) => { console.error(String(e.cause ?? e)); process.exit(1); });`;

describe('local stack WAN', { timeout: 180_000 }, () => {
  let base: string;
  let stack: LocalStack | undefined;
  let info: StackInfo;

  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'ums-lsw-'));
    stack = await startLocalStack({ name: `wan-${process.pid}`, dir: join(base, 's'), hosts: HOSTS });
    info = await readStackInfo(join(base, 's'));
  });

  after(async () => {
    await stack?.stop();
    if (base !== undefined) await rm(base, { recursive: true, force: true });
  });

  it("records the WAN and each host's address on it in stack.json", () => {
    assert.equal(info.wan.subnet, '198.18.0.0/24');
    assert.equal(info.wan.netns, stack?.wan.netns);
    const addresses = info.hosts.map((h) => h.wanAddress);
    assert.equal(new Set(addresses).size, HOSTS.length, `distinct addresses: ${addresses.join(', ')}`);
    for (const host of info.hosts) {
      assert.match(host.wanAddress, /^198\.18\.0\.\d+$/);
      assert.equal(stack?.wan.hosts.get(host.agentId)?.address, host.wanAddress);
    }
  });

  it('lets a client reach a published port at the host address stack.json gives', async () => {
    const target = info.hosts[1];
    assert.ok(stack !== undefined && target !== undefined);
    await stack.hosts
      .get(target.agentId)
      ?.podman([
        'run',
        '-d',
        '--name',
        'web',
        '-p',
        '8080:80',
        info.image,
        'sh',
        '-c',
        `mkdir -p /www && echo served-by-${target.agentId} > /www/index.html && exec httpd -f -p 80 -h /www`,
      ]);
    const client = await stack.wan.addClient('curl');
    const url = `http://${target.wanAddress}:8080/`;
    let body = '';
    for (let attempt = 0; ; attempt++) {
      try {
        body = (await client.exec(process.execPath, ['-e', HTTP_GET, url])).stdout;
        break;
      } catch (error) {
        // httpd needs a moment to listen.
        if (attempt >= 20) throw error;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    assert.equal(body.trim(), `served-by-${target.agentId}`);
  });

  it('leaves none of its namespaces behind after stop()', async () => {
    assert.ok(stack !== undefined);
    const namespaces = [info.wan.netns, ...[...stack.wan.clients.values()].map((c) => c.netns), ...info.hosts.map((h) => h.netns ?? '')];
    assert.ok(namespaces.every((n) => n !== ''));
    await stack.stop();
    stack = undefined;
    const listed = (await execFileAsync('ip', ['netns', 'list'])).stdout;
    assert.deepEqual(
      namespaces.filter((n) => listed.includes(n)),
      [],
    );
  });
});
