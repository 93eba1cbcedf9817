/**
 * The destination's archive policy (agents/archive-policy.ts) and its tar reader (agents/tar-entries.ts):
 * a container config like Podman 4.3's (the shape of a real export's config.dump and spec.dump) is
 * accepted against its own profile, and each escalation is refused with its reason; the reader finds the
 * entries whatever the chunking, and refuses the tricks an untar would follow (PAX renames, duplicates,
 * links, compression, truncation).
 */
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { describe, it } from 'node:test';
import { ArchivePolicyCheck, archiveEscalations } from '../../agents/archive-policy.js';
import { fileBody, tarHeader } from '../../agents/kubelet/ustar.js';
import { toSecurityProfile } from '../../agents/podman-engine.js';
import { RestoreRefusedError } from '../../agents/restore-job.js';
import { TarEntryReader } from '../../agents/tar-entries.js';
import { deltaRecord, endRecord, MAGIC, volumeRecord } from '../../agents/checkpoint-section.js';
import { baselineProfile, PODMAN_DEFAULT_CAPABILITIES, type ContainerSecurityProfile } from '../../core/container-security.js';

const IMAGE = 'e8357277f514d6894cf57d213bd2cb079d2a87f740e6f978625da55acc1bdd4a';
const ID = 'c629d7f74a179bc2bed1bf09526db9f784c423598d31151087181280fdaa8982';
const RUN = `/run/containers/storage/overlay-containers/${ID}/userdata`;
const STATIC = `/var/lib/containers/storage/overlay-containers/${ID}/userdata`;
const ANNOTATIONS = { 'io.container.manager': 'libpod', 'io.podman.annotations.privileged': 'FALSE' };

/** The parts of an OCI spec (spec.dump) the cases alter. */
interface Spec {
  process: { user: { uid: number; gid: number }; capabilities: Record<string, string[]> };
  mounts: Array<{ destination: string; type?: string; source: string; options?: string[] }>;
  annotations: Record<string, string>;
  hooks?: Record<string, unknown[]>;
  linux: {
    resources: { devices: Array<Record<string, unknown>> };
    namespaces: Array<{ type: string; path?: string }>;
    seccomp?: { defaultAction: string; syscalls: unknown[] };
    devices?: Array<Record<string, unknown>>;
  };
}

/** A Podman 4.3 `podman run -d IMAGE` container's config.dump and spec.dump (trimmed). */
function podmanConfig(): { config: Record<string, unknown>; spec: Spec } {
  const caps = [...PODMAN_DEFAULT_CAPABILITIES];
  return {
    config: { id: ID, name: 'c1', rootfsImageID: IMAGE, privileged: false, createNetNS: true, mountAllDevices: false },
    spec: {
      process: { user: { uid: 0, gid: 0 }, capabilities: { bounding: caps, effective: caps, permitted: caps } },
      mounts: [
        { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
        { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid'] },
        { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'ro'] },
        { destination: '/run/.containerenv', type: 'bind', source: `${RUN}/.containerenv`, options: ['bind'] },
        { destination: '/etc/hosts', type: 'bind', source: `${RUN}/hosts`, options: ['bind'] },
        { destination: '/dev/shm', type: 'bind', source: `${STATIC}/shm`, options: ['bind'] },
        { destination: '/data', type: 'bind', source: '/srv/data', options: ['rbind'] },
        { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['ro'] },
      ],
      annotations: ANNOTATIONS,
      linux: {
        resources: { devices: [{ allow: false, access: 'rwm' }] },
        namespaces: [
          { type: 'pid' },
          { type: 'network', path: '/run/netns/netns-b74080e4' },
          { type: 'ipc' },
          { type: 'uts' },
          { type: 'mount' },
        ],
        seccomp: { defaultAction: 'SCMP_ACT_ERRNO', syscalls: [] },
      },
    },
  };
}

const PROFILE: ContainerSecurityProfile = {
  imageId: IMAGE,
  privileged: false,
  capabilities: [...PODMAN_DEFAULT_CAPABILITIES],
  devices: [],
  mounts: [{ source: '/srv/data', destination: '/data' }],
  ownDirs: [STATIC, RUN],
  hostNamespaces: ['user', 'cgroup'],
  seccomp: true,
  noNewPrivileges: false,
  user: '',
  annotations: ANNOTATIONS,
};

type Alter = (c: Record<string, unknown>, s: Spec) => void;

function escalations(alter?: Alter, profile = PROFILE): string[] {
  const { config, spec } = podmanConfig();
  alter?.(config, spec);
  return archiveEscalations(config, spec, profile, IMAGE);
}

describe('archive policy: the archive container config against the registered profile', () => {
  it('accepts the container the source registered', () => {
    assert.deepEqual(escalations(), []);
  });

  const cases: Array<[string, Alter, RegExp]> = [
    ['privileged', (c) => (c.privileged = true), /privileged container/],
    ['every device', (c) => (c.mountAllDevices = true), /every host device/],
    ['another image', (c) => (c.rootfsImageID = 'f'.repeat(64)), /runs image ffffffffffff, registered e8357277f514/],
    ['a host rootfs', (c) => (c.rootfs = '/'), /host directory as its root filesystem/],
    ["another container's pid namespace", (c) => (c.pidNsCtr = 'abc'), /joins another container's namespace \(pidNsCtr/],
    [
      'CAP_SYS_ADMIN',
      (_c, s) => s.process.capabilities.bounding!.push('CAP_SYS_ADMIN'),
      /capabilities beyond the registered set: CAP_SYS_ADMIN/,
    ],
    ['an ambient capability', (_c, s) => (s.process.capabilities.ambient = ['CAP_SYS_PTRACE']), /CAP_SYS_PTRACE/],
    ['a device node', (_c, s) => (s.linux.devices = [{ path: '/dev/sda', type: 'b', major: 8, minor: 0 }]), /adds the device \/dev\/sda/],
    ['all devices in the cgroup', (_c, s) => s.linux.resources.devices.push({ allow: true, access: 'rwm' }), /allows access to devices/],
    [
      'a bind mount of /',
      (_c, s) => s.mounts.push({ destination: '/host', type: 'bind', source: '/', options: ['rbind'] }),
      /bind-mounts the host path \/ at \/host/,
    ],
    ['a registered source elsewhere', (_c, s) => (s.mounts[6]!.destination = '/etc'), /host path \/srv\/data at \/etc/],
    ['a bind without type', (_c, s) => s.mounts.push({ destination: '/x', source: '/etc', options: ['bind'] }), /host path \/etc at \/x/],
    ['a fake Podman file', (_c, s) => (s.mounts[4]!.source = '/etc/shadow'), /host path \/etc\/shadow at \/etc\/hosts/],
    ['a Podman file out of its dir', (_c, s) => (s.mounts[4]!.source = `${RUN}/../../../../../../etc/userdata/hosts`), /at \/etc\/hosts/],
    ['a device mount', (_c, s) => s.mounts.push({ destination: '/mnt', type: 'ext4', source: '/dev/sda1' }), /mounts \/dev\/sda1 \(ext4\)/],
    ['a writable sysfs', (_c, s) => (s.mounts[2]!.options = ['nosuid']), /sysfs writable/],
    ['the host pid namespace', (_c, s) => s.linux.namespaces.shift(), /host's pid namespace/],
    [
      "the host's network by path",
      (_c, s) => (s.linux.namespaces[1]!.path = '/proc/1/ns/net'),
      /joins the network namespace at \/proc\/1\/ns\/net/,
    ],
    ['no network namespace', (c) => (c.createNetNS = false), /no network namespace/],
    ['no seccomp', (_c, s) => delete s.linux.seccomp, /without a seccomp filter/],
    ['an allow-all seccomp', (_c, s) => (s.linux.seccomp!.defaultAction = 'SCMP_ACT_ALLOW'), /without a seccomp filter/],
    ['OCI hooks', (_c, s) => (s.hooks = { prestart: [{ path: '/bin/sh' }] }), /OCI prestart hooks/],
    [
      'privileged by annotation',
      (_c, s) => (s.annotations = { ...ANNOTATIONS, 'io.podman.annotations.privileged': 'TRUE' }),
      /annotation io.podman.annotations.privileged=TRUE/,
    ],
  ];
  for (const [what, alter, reason] of cases) {
    it(`refuses ${what}`, () => {
      const found = escalations(alter);
      assert.ok(found.length > 0, `${what} is refused`);
      assert.match(found.join('; '), reason);
    });
  }

  it('refuses root where a user was registered, and another uid', () => {
    assert.match(escalations(undefined, { ...PROFILE, user: 'redis' }).join(), /runs as root, registered as user redis/);
    assert.match(escalations(undefined, { ...PROFILE, user: '1000:1000' }).join(), /runs as uid 0, registered as 1000:1000/);
    assert.deepEqual(
      escalations((_c, s) => (s.process.user.uid = 1000), { ...PROFILE, user: '1000' }),
      [],
    );
  });

  it('refuses dropping no_new_privs and a user namespace the source had', () => {
    assert.match(escalations(undefined, { ...PROFILE, noNewPrivileges: true }).join(), /no_new_privs/);
    assert.match(escalations(undefined, { ...PROFILE, hostNamespaces: ['cgroup'] }).join(), /host's user namespace/);
  });

  it('accepts what a privileged source had, but still not another image or hooks', () => {
    const privileged = { ...PROFILE, privileged: true, seccomp: false, capabilities: [] };
    const alter: Alter = (c, s) => {
      c.privileged = true;
      s.process.capabilities.bounding!.push('CAP_SYS_ADMIN');
      delete s.linux.seccomp;
    };
    assert.deepEqual(escalations(alter, privileged), []);
    assert.match(escalations((c) => (c.rootfsImageID = 'x'), privileged).join(), /runs image x/);
  });

  it('holds an archive to the baseline (no options) when the source reported no profile', () => {
    const baseline = baselineProfile(IMAGE);
    assert.deepEqual(
      escalations((_c, s) => (s.mounts = s.mounts.filter((m: { destination: string }) => m.destination !== '/data')), baseline),
      [],
    );
    assert.match(escalations(undefined, baseline).join(), /host path \/srv\/data at \/data/);
  });

  it("reads the profile from Podman's inspect", () => {
    const profile = toSecurityProfile({
      Id: ID,
      Name: 'c1',
      Image: IMAGE,
      StaticDir: STATIC,
      HostsPath: `${RUN}/hosts`,
      EffectiveCaps: ['CAP_CHOWN'],
      BoundingCaps: ['CAP_CHOWN', 'CAP_KILL'],
      Config: { User: 'redis', Annotations: ANNOTATIONS },
      HostConfig: {
        Privileged: false,
        CapAdd: ['net_admin'],
        Devices: [{ PathOnHost: '/dev/fuse', PathInContainer: '/dev/fuse' }],
        NetworkMode: 'host',
        PidMode: 'private',
        IpcMode: 'shareable',
        UTSMode: 'private',
        UsernsMode: '',
        CgroupMode: 'host',
        SecurityOpt: ['seccomp=unconfined', 'no-new-privileges'],
      },
      Mounts: [
        { Type: 'bind', Source: '/srv/data', Destination: '/data' },
        { Type: 'volume', Name: 'v', Source: '/var/lib/containers/storage/volumes/v/_data', Destination: '/v' },
        { Type: 'tmpfs', Destination: '/t' },
      ],
    });
    assert.deepEqual(profile, {
      imageId: IMAGE,
      privileged: false,
      capabilities: ['CAP_CHOWN', 'CAP_KILL', 'CAP_NET_ADMIN'],
      devices: ['/dev/fuse'],
      mounts: [
        { source: '/srv/data', destination: '/data' },
        { source: '/var/lib/containers/storage/volumes/v/_data', destination: '/v' },
      ],
      ownDirs: [STATIC, RUN],
      hostNamespaces: ['network', 'cgroup', 'user'],
      seccomp: false,
      noNewPrivileges: true,
      user: 'redis',
      annotations: ANNOTATIONS,
    });
  });
});

/** A tar of [name, body] regular files, or [name, body, typeflag] for other entries, ended by two zero blocks. */
function tar(entries: Array<[string, Buffer | string, string?]>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, raw, type] of entries) {
    const body = Buffer.from(raw);
    const header = tarHeader(name, body.length, 'file', 0);
    if (type !== undefined) {
      header[156] = type.charCodeAt(0);
      header.fill(0x20, 148, 156);
      let sum = 0;
      for (const byte of header) sum += byte;
      header.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 'latin1');
    }
    parts.push(header, ...fileBody(body));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

function pax(records: Record<string, string>): string {
  return Object.entries(records)
    .map(([key, value]) => {
      const text = ` ${key}=${value}\n`;
      let length = text.length + 1;
      while (`${length}${text}`.length !== length) length += 1;
      return `${length}${text}`;
    })
    .join('');
}

function archive(alter?: Alter, extra: Array<[string, Buffer | string, string?]> = []): Buffer {
  const { config, spec } = podmanConfig();
  alter?.(config, spec);
  return tar([
    ['artifacts/', '', '5'],
    ['config.dump', JSON.stringify(config)],
    ['spec.dump', JSON.stringify(spec)],
    ['checkpoint/pages-1.img', Buffer.alloc(5000, 7)],
    ...extra,
  ]);
}

/** Feeds `data` in pieces of `size` bytes; returns the refusal, or undefined when accepted. */
function run(data: Buffer, size: number, profile: ContainerSecurityProfile | undefined = PROFILE): RestoreRefusedError | undefined {
  const check = new ArchivePolicyCheck(profile, IMAGE, 'host B');
  try {
    for (let at = 0; at < data.length; at += size) check.write(data.subarray(at, at + size), at + size >= data.length);
    return undefined;
  } catch (error) {
    assert.ok(error instanceof RestoreRefusedError, String(error));
    assert.equal(error.code, 'archive-refused');
    return error;
  }
}

describe('archive policy over the streamed tar', () => {
  it('accepts the registered container, in pieces of any size', () => {
    for (const size of [1, 7, 511, 512, 513, 4096, 1 << 20]) assert.equal(run(archive(), size)?.message, undefined, `pieces of ${size}`);
  });

  it('refuses an escalation as soon as both files are read, before the last piece', () => {
    const data = archive((c) => (c.privileged = true));
    const check = new ArchivePolicyCheck(PROFILE, IMAGE, 'host B');
    const upTo = 3 * 512 + 2048;
    assert.throws(
      () => check.write(data.subarray(0, upTo + 2048), false),
      /refused on host B before anything was restored: it asks for a privileged/,
    );
  });

  it('refuses a missing or repeated config.dump, or one that is a link', () => {
    const { config, spec } = podmanConfig();
    assert.match(run(tar([['spec.dump', JSON.stringify(spec)]]), 4096)!.message, /lacks config.dump/);
    const twice = archive(undefined, [['./config.dump', JSON.stringify({ ...config, privileged: true })]]);
    assert.match(run(twice, 4096)!.message, /config.dump 2 times/);
    const link = tar([
      ['config.dump', '', '2'],
      ['spec.dump', JSON.stringify(spec)],
    ]);
    assert.match(run(link, 4096)!.message, /config.dump is not a regular file \(tar type 2\)/);
  });

  it('follows a PAX path and a GNU long name, as an untar does', () => {
    const { config } = podmanConfig();
    const renamed = archive(undefined, [
      ['PaxHeaders/x', pax({ path: 'checkpoint/../config.dump' }), 'x'],
      ['innocent', JSON.stringify({ ...config, privileged: true })],
    ]);
    assert.match(run(renamed, 4096)!.message, /config.dump 2 times/);
    const longName = archive(undefined, [
      ['././@LongLink', 'config.dump\u0000', 'L'],
      ['innocent', JSON.stringify(config)],
    ]);
    assert.match(run(longName, 4096)!.message, /config.dump 2 times/);
    const reader = new TarEntryReader(new Set(), 0);
    reader.write(tar([['a'.repeat(90), 'x']]));
    assert.equal(reader.entries[0]?.name, 'a'.repeat(90));
  });

  it('reads past a volume section to the export; refuses a volume the container does not mount, or a malformed section', () => {
    const section = (destination: string, withDelta = true) =>
      Buffer.concat([
        MAGIC,
        volumeRecord({ name: 'data', driver: 'local', labels: {}, options: {}, destination }),
        ...(withDelta ? [deltaRecord('data')] : []),
        endRecord(),
      ]);
    for (const size of [1, 512, 1 << 20]) assert.equal(run(Buffer.concat([section('/data'), archive()]), size)?.message, undefined);
    // An escalation behind a section is still found.
    assert.match(run(Buffer.concat([section('/data'), archive((c) => (c.privileged = true))]), 4096)!.message, /privileged/);
    assert.match(
      run(Buffer.concat([section('/etc'), archive()]), 4096)!.message,
      /fills a volume "data" at \/etc, where the registered container mounts none/,
    );
    assert.match(
      run(Buffer.concat([section('/data', false), archive()]), 4096)!.message,
      /malformed checkpoint section: .*changes made while frozen to data/,
    );
    assert.match(run(section('/data').subarray(0, 30), 4096)!.message, /ended inside the section/);
  });

  it('refuses a compressed, truncated or unterminated archive', () => {
    assert.match(run(gzipSync(archive()), 4096)!.message, /not a plain tar: bad header checksum/);
    const data = archive();
    assert.match(run(data.subarray(0, data.length - 1024 - 100), 4096)!.message, /truncated/);
    assert.match(run(data.subarray(0, data.length - 1024), 4096)!.message, /end-of-archive marker/);
  });
});
