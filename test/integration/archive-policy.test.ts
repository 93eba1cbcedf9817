/**
 * The archive policy against real Podman 4.3 exports (issue item 4): a counter container is checkpointed
 * on simulated host A, its profile read from A's inspect, and the destination's check (the restore job's
 * `inspectArchive`, agents/archive-policy.ts) run over the archive in 64 KiB pieces as the job feeds it.
 * The unaltered archive passes and restores on host B; archives whose config.dump / spec.dump were altered
 * (privileged, CAP_SYS_ADMIN added, a bind mount of /) are refused with the reason. One of them is also
 * given to Podman on B without the check: Podman restores it with CAP_SYS_ADMIN, which is why the check
 * exists. Needs root, podman, runc and CRIU (infra/host-setup.sh).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { ArchivePolicyCheck } from '../../agents/archive-policy.js';
import { PodmanEngine } from '../../agents/podman-engine.js';
import { RestoreRefusedError } from '../../agents/restore-job.js';
import { TarEntryReader } from '../../agents/tar-entries.js';
import type { ContainerSecurityProfile } from '../../core/container-security.js';
import { buildCounterImage, DEFAULT_COUNTER_IMAGE } from '../../infra/images/build-counter-image.js';
import { startPodmanHost, type PodmanHost } from '../../infra/podman-host.js';

const execFileAsync = promisify(execFile);

/** The parts of spec.dump the cases alter. */
interface Spec {
  process: { capabilities: Record<string, string[]> };
  mounts: Array<{ destination: string; type: string; source: string; options: string[] }>;
}
const IMAGE = DEFAULT_COUNTER_IMAGE;
const PIECE = 64 * 1024;

describe('archive policy on real Podman checkpoint archives', { timeout: 300_000 }, () => {
  let base: string;
  let hostA: PodmanHost;
  let hostB: PodmanHost;
  let engineA: PodmanEngine;
  let engineB: PodmanEngine;
  let imageId: string;
  let profile: ContainerSecurityProfile;
  let good: Buffer;

  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'ums-ap-'));
    [hostA, hostB] = await Promise.all([
      startPodmanHost({ name: 'apA', dir: join(base, 'A') }),
      startPodmanHost({ name: 'apB', dir: join(base, 'B') }),
    ]);
    engineA = new PodmanEngine({ socketPath: hostA.socketPath, where: 'host A' });
    engineB = new PodmanEngine({ socketPath: hostB.socketPath, where: 'host B' });
    imageId = (await buildCounterImage(hostA.url, IMAGE, { env: hostA.env })).id;
    assert.equal((await buildCounterImage(hostB.url, IMAGE, { env: hostB.env })).id, imageId);
    await hostA.podman(['run', '-d', '--name', 'ap', IMAGE]);
    profile = (await engineA.securityProfile('ap'))!;
    console.log(`profile of "ap" on host A: ${JSON.stringify(profile)}`);
    good = await readAll(await engineA.checkpoint('ap', { tcpEstablished: true, fileLocks: true }));
    const reader = new TarEntryReader(new Set(), 0);
    reader.write(good);
    reader.end();
    console.log(
      `archive: ${good.length} bytes; entries in order: ${reader.entries
        .slice(0, 8)
        .map((e) => e.name)
        .join(', ')}, ...`,
    );
  });

  after(async () => {
    await Promise.allSettled([hostA?.destroy(), hostB?.destroy()]);
    if (base !== undefined) await rm(base, { recursive: true, force: true });
  });

  /** The check as the restore job runs it: each piece in order, the last one flagged. */
  function check(archive: Buffer): RestoreRefusedError | undefined {
    const policy = new ArchivePolicyCheck(profile, imageId, 'host B');
    try {
      for (let at = 0; at < archive.length; at += PIECE) policy.write(archive.subarray(at, at + PIECE), at + PIECE >= archive.length);
      return undefined;
    } catch (error) {
      assert.ok(error instanceof RestoreRefusedError, String(error));
      return error;
    }
  }

  /** The archive with config.dump and spec.dump changed, repacked in Podman's order with GNU tar. */
  async function altered(label: string, alter: (config: Record<string, unknown>, spec: Spec) => void): Promise<Buffer> {
    const dir = join(base, `alter-${label}`);
    await execFileAsync('mkdir', ['-p', dir]);
    await writeFile(join(dir, '..', `${label}.tar`), good);
    await execFileAsync('tar', ['-xf', join(dir, '..', `${label}.tar`), '-C', dir]);
    const config = JSON.parse(await readFile(join(dir, 'config.dump'), 'utf8')) as Record<string, unknown>;
    const spec = JSON.parse(await readFile(join(dir, 'spec.dump'), 'utf8')) as Spec;
    alter(config, spec);
    await writeFile(join(dir, 'config.dump'), JSON.stringify(config));
    await writeFile(join(dir, 'spec.dump'), JSON.stringify(spec));
    const reader = new TarEntryReader(new Set(), 0);
    reader.write(good);
    const top = [...new Set(reader.entries.map((e) => e.name.split('/')[0]!))];
    const out = join(base, `${label}-altered.tar`);
    await execFileAsync('tar', ['-cf', out, '-C', dir, ...top]);
    return readFile(out);
  }

  it('passes the unaltered archive, which then restores on host B', async () => {
    assert.equal(check(good)?.message, undefined);
    const restored = await engineB.restoreFromArchive('ap', Readable.from(pieces(good)), { tcpEstablished: true, fileLocks: true });
    assert.match(restored.id, /^[0-9a-f]{64}$/);
    assert.equal((await engineB.inspectContainer('ap'))?.state, 'running');
    assert.deepEqual(await engineB.securityProfile('ap').then((p) => p?.capabilities), profile.capabilities);
    await engineB.removeContainer('ap', { force: true, withVolumes: true });
  });

  it('refuses it privileged', async () => {
    const archive = await altered('privileged', (config) => (config.privileged = true));
    assert.match(check(archive)!.message, /refused on host B before anything was restored: it asks for a privileged container/);
  });

  it('refuses it with CAP_SYS_ADMIN added, which Podman alone restores', async () => {
    const archive = await altered('sysadmin', (_config, spec) => {
      for (const set of ['bounding', 'effective', 'permitted']) spec.process.capabilities[set]!.push('CAP_SYS_ADMIN');
    });
    const refusal = check(archive);
    assert.equal(refusal?.code, 'archive-refused');
    assert.match(refusal.message, /capabilities beyond the registered set: CAP_SYS_ADMIN/);
    console.log(`refused: ${refusal.message}`);
    // Without the check: Podman restores the altered archive as it is.
    await engineB.restoreFromArchive('ap-unchecked', Readable.from(pieces(archive)), { tcpEstablished: true, fileLocks: true });
    const caps = (await engineB.securityProfile('ap-unchecked'))?.capabilities ?? [];
    await engineB.removeContainer('ap-unchecked', { force: true, withVolumes: true });
    assert.ok(caps.includes('CAP_SYS_ADMIN'), `Podman restored it with ${caps.join(', ')}`);
  });

  it('refuses it with a bind mount of / added', async () => {
    const archive = await altered('bind-root', (_config, spec) =>
      spec.mounts.push({ destination: '/host', type: 'bind', source: '/', options: ['rbind', 'rw'] }),
    );
    assert.match(check(archive)!.message, /bind-mounts the host path \/ at \/host \(not registered\)/);
  });
});

function* pieces(data: Buffer): Generator<Buffer> {
  for (let at = 0; at < data.length; at += PIECE) yield data.subarray(at, at + PIECE);
}

async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(part as Buffer);
  return Buffer.concat(parts);
}
