/**
 * A Docker checkpoint archive's docker.json (agents/docker-archive.ts) against the source's registered profile,
 * and the archive policy (agents/archive-policy.ts) over a streamed Docker archive. The container is a real
 * Docker 20.10.24 `docker run -d -p 7001:6379 -v /srv:/data -v vol1:/var/lib/redis localhost/ums/redis:1`,
 * its inspect trimmed to what the engine records.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ArchivePolicyCheck } from '../../agents/archive-policy.js';
import {
  DOCKER_CONFIG,
  DockerArchiveConfig,
  dockerConfigEscalations,
  dockerCreateBody,
  volumeDestinations,
} from '../../agents/docker-archive.js';
import { toSecurityProfile, type DockerInspect } from '../../agents/docker-engine.js';
import { fileBody, tarHeader } from '../../agents/kubelet/ustar.js';

const IMAGE = 'fc297f95a3ba59fb40a2addde5d5aacf150a12c23bab7077da80652afd1bc97e';
const ID = '93f614072830d0aa0f66e0a8c5f6df6ad54a0b2c8fcbf0b2c1b2d0d1b8c3e4f5';
const ROOT = '/var/lib/docker';

function inspect(): DockerInspect {
  return {
    Id: ID,
    Name: '/r3',
    Image: `sha256:${IMAGE}`,
    Config: {
      Hostname: '93f614072830',
      User: '',
      ExposedPorts: { '6379/tcp': {} },
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      Cmd: [],
      Image: 'localhost/ums/redis:1',
      WorkingDir: '/',
      Entrypoint: ['/usr/local/bin/ums-redis-entrypoint'],
      Labels: { 'ums.debian.suite': 'bookworm' },
      StopSignal: 'SIGTERM',
    },
    HostConfig: {
      Binds: ['/srv:/data', 'vol1:/var/lib/redis'],
      NetworkMode: 'default',
      PortBindings: { '6379/tcp': [{ HostIp: '', HostPort: '7001' }] },
      RestartPolicy: { Name: 'no', MaximumRetryCount: 0 },
      CgroupnsMode: 'host',
      IpcMode: 'private',
      ShmSize: 67108864,
      Runtime: 'runc',
      MaskedPaths: ['/proc/kcore', '/sys/firmware'],
      ReadonlyPaths: ['/proc/sys'],
      Privileged: false,
      CapAdd: null,
      CapDrop: null,
      SecurityOpt: null,
    },
    Mounts: [
      { Type: 'volume', Name: 'vol1', Source: `${ROOT}/volumes/vol1/_data`, Destination: '/var/lib/redis' },
      { Type: 'bind', Source: '/srv', Destination: '/data' },
    ],
  };
}

const PROFILE = toSecurityProfile(inspect(), ROOT);

/** docker.json as the source's engine writes it (agents/docker-engine.ts, archiveConfigOf). */
function archived(alter?: (raw: { config: Record<string, unknown>; hostConfig: Record<string, unknown> }) => void): DockerArchiveConfig {
  const c = inspect();
  const raw = { format: 1, imageId: IMAGE, image: c.Config!.Image!, config: { ...c.Config! }, hostConfig: { ...c.HostConfig! } };
  alter?.(raw);
  return DockerArchiveConfig.parse(raw);
}

describe("a Docker archive's docker.json against the registered profile", () => {
  it("reads the profile from Docker's inspect: the default capabilities, its directory, the host's user and cgroup namespaces", () => {
    assert.equal(PROFILE.imageId, IMAGE);
    assert.equal(PROFILE.capabilities.length, 14);
    assert.ok(PROFILE.capabilities.includes('CAP_NET_BIND_SERVICE'));
    assert.deepEqual(PROFILE.ownDirs, [`${ROOT}/containers/${ID}`]);
    assert.deepEqual(PROFILE.hostNamespaces.sort(), ['cgroup', 'user']);
    assert.equal(PROFILE.seccomp, true);
    const dropped = toSecurityProfile({ ...inspect(), HostConfig: { CapDrop: ['NET_RAW'], CapAdd: ['SYS_PTRACE'] } }, ROOT);
    assert.ok(!dropped.capabilities.includes('CAP_NET_RAW'));
    assert.ok(dropped.capabilities.includes('CAP_SYS_PTRACE'));
  });

  it('accepts the container the source registered', () => {
    assert.deepEqual(dockerConfigEscalations(archived(), PROFILE, IMAGE), []);
  });

  it('refuses each escalation with its reason', () => {
    const cases: Array<[(raw: { config: Record<string, unknown>; hostConfig: Record<string, unknown> }) => void, RegExp]> = [
      [(r) => (r.hostConfig.Privileged = true), /privileged container/],
      [(r) => (r.hostConfig.CapAdd = ['SYS_ADMIN']), /capabilities beyond the registered set: CAP_SYS_ADMIN/],
      [(r) => (r.hostConfig.Devices = [{ PathOnHost: '/dev/kmsg', PathInContainer: '/dev/kmsg' }]), /the device \/dev\/kmsg/],
      [(r) => (r.hostConfig.Binds = ['/etc:/host-etc']), /mounts \/etc at \/host-etc \(not registered\)/],
      [(r) => (r.hostConfig.Mounts = [{ Type: 'bind', Source: '/', Target: '/host' }]), /mounts the bind \/ at \/host/],
      [(r) => (r.hostConfig.PidMode = 'host'), /shares the host's pid namespace/],
      [(r) => (r.hostConfig.NetworkMode = 'container:other'), /joins another container's network namespace/],
      [(r) => (r.hostConfig.SecurityOpt = ['seccomp=unconfined']), /without a seccomp filter/],
      [(r) => (r.config.User = '0:0'), /runs as user "0:0", registered as ""/],
    ];
    for (const [alter, expected] of cases) assert.match(dockerConfigEscalations(archived(alter), PROFILE, IMAGE).join('; '), expected);
    assert.match(
      dockerConfigEscalations(archived(), PROFILE, 'a'.repeat(64)).join('; '),
      /runs image fc297f95a3ba, registered aaaaaaaaaaaa/,
    );
  });

  it('passes Docker only the fields it knows: a masked path lifted or a runtime named in the file is dropped, not forwarded', () => {
    const body = dockerCreateBody(
      archived((r) => {
        r.hostConfig.MaskedPaths = [];
        r.hostConfig.Runtime = '/tmp/evil';
      }),
      true,
    );
    const host = body.HostConfig as Record<string, unknown>;
    assert.equal(host.MaskedPaths, undefined);
    assert.equal(host.Runtime, undefined);
    assert.equal(body.Image, 'localhost/ums/redis:1');
    assert.equal(dockerCreateBody(archived(), false).Image, `sha256:${IMAGE}`);
    assert.deepEqual(volumeDestinations(archived()), ['/var/lib/redis']);
  });
});

describe('archive policy over a streamed Docker archive', () => {
  const tar = (entries: Array<[string, string]>) =>
    Buffer.concat([
      ...entries.flatMap(([name, text]) => [tarHeader(name, Buffer.byteLength(text), 'file', 0), ...fileBody(Buffer.from(text))]),
      Buffer.alloc(1024),
    ]);
  const dockerArchive = (config: unknown) =>
    tar([
      [DOCKER_CONFIG, JSON.stringify(config)],
      ['rootfs-diff.tar', ''],
      ['checkpoint/inventory.img', 'x'],
    ]);
  const run = (data: Buffer) => {
    const check = new ArchivePolicyCheck(PROFILE, IMAGE, 'host B');
    try {
      check.write(data, true);
      return undefined;
    } catch (error) {
      return error as Error;
    }
  };

  it('accepts the registered container, and refuses an escalated one before the CRIU images', () => {
    assert.equal(run(dockerArchive(archived()))?.message, undefined);
    const data = dockerArchive(archived((r) => (r.hostConfig.Privileged = true)));
    const check = new ArchivePolicyCheck(PROFILE, IMAGE, 'host B');
    assert.throws(() => check.write(data.subarray(0, 2048), false), /before anything was restored: it asks for a privileged container/);
  });

  it('refuses a docker.json that is no container config, and an archive mixing both engines’ metadata', () => {
    assert.match(run(dockerArchive({ format: 2 }))?.message ?? '', /docker\.json is not a container Docker would be given/);
    const mixed = tar([
      [DOCKER_CONFIG, JSON.stringify(archived())],
      ['config.dump', '{}'],
      ['spec.dump', '{}'],
    ]);
    assert.match(run(mixed)?.message ?? '', /both a Podman export's metadata and a Docker archive's docker\.json/);
    assert.match(
      run(tar([['checkpoint/inventory.img', 'x']]))?.message ?? '',
      /lacks config\.dump and spec\.dump \(a Podman export\) or docker\.json/,
    );
  });
});
