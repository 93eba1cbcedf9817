import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, open, readdir, readFile, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CriClient, type RuntimeVersion } from '../agents/cri/cri-client.js';
import { CRIU_WRAPPER_DIR } from '../agents/criu-command.js';
import { createLogger } from '../core/log.js';
import { buildCounterRootfs } from './images/build-counter-image.js';
import { writeDockerArchive } from './images/docker-archive.js';
import { deleteNetns, ensureNetns } from './network-namespace.js';
import {
  deleteRuncContainersUnder,
  hostNetnsName,
  inPrivateMountNamespace,
  killProcessesUnder,
  unmountUnder,
  type MountNamespaceMarker,
} from './simulated-host.js';

/*
 * A simulated Kubernetes node's runtime: Debian sid's containerd 2.x (side-loaded by infra/host-setup.sh into
 * /opt/ums/containerd2, next to the machine's containerd 1.6 which the Docker hosts use) with its CRI plugin,
 * runc v2 shims, runc 1.1.5 from the machine and the CRIU wrapper first in PATH. What a kubelet would talk to:
 * the CRI socket. Each host owns everything under its dir and runs in a network namespace and a private mount
 * namespace of its own, like infra/podman-host.ts:
 *   - in the mount namespace, <dir>/run is bind-mounted at /run/containerd, where the shims put their sockets
 *     (a path fixed in containerd: pkg/shim's socket root), so hosts share nothing there; that bind mount is
 *     also the namespace's marker (simulated-host.ts);
 *   - pods use the host's network (NamespaceMode NODE), i.e. the namespace containerd runs in: no CNI, no
 *     bridge, nothing on the machine's network;
 *   - a read-only registry on port 80 of that namespace (containerd-registry.ts) serves the host's own
 *     content store, because containerd 2.1's CRI restore pulls the base image by digest even when it is local.
 */

const execFileAsync = promisify(execFile);
const log = createLogger('containerd-host');

/** Where infra/host-setup.sh unpacks Debian sid's containerd package. */
export const CONTAINERD2_PREFIX = process.env.UMS_CONTAINERD2_PREFIX ?? '/opt/ums/containerd2';
/** The containerd namespace the CRI plugin works in: images for pods must be imported there. */
export const CRI_NAMESPACE = 'k8s.io';
/** The pinned sandbox ("pause") image: built locally, since registry.k8s.io is not reachable. */
export const PAUSE_IMAGE = 'localhost/ums/pause:1';

const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** The shims' socket root inside the host's mount namespace (containerd's fixed default state dir). */
const SHIM_SOCKET_ROOT = '/run/containerd';
const CGROUP_ROOT = '/sys/fs/cgroup';

export interface ContainerdHostOptions {
  /** Short name, used in logs and in the network namespace's name. */
  name: string;
  /** Everything of this host lives here: root, state, config, socket, logs. */
  dir: string;
  /** Default CONTAINERD2_PREFIX. */
  prefix?: string;
  /** Directory holding the criu wrapper, put early in containerd's PATH (runc finds criu there). */
  criuWrapperDir?: string;
  /** How long to wait for the CRI socket to answer. Default 30 s. */
  startTimeoutMs?: number;
}

export interface ContainerdHost {
  name: string;
  dir: string;
  /** The CRI (and containerd API) socket. */
  socketPath: string;
  netns: string;
  /** What the runtime says it is, from CRI Version. */
  version: RuntimeVersion;
  /**
   * The cgroup parent to give this host's pods (PodSandboxConfig.linux.cgroupParent, which the kubelet sets
   * on a real node): runc removes a container's cgroup but not its parent, so destroy() removes this one.
   */
  cgroupParent: string;
  /** containerd's own log (the CRIU logs are in the containers' state dirs under <dir>/state). */
  logPath: string;
  /**
   * Imports a docker-archive or OCI archive into the CRI namespace (`ctr images import`) and names each image
   * by digest as well, as a registry pull would; resolves with ctr's output.
   */
  importImage(archive: string): Promise<string>;
  /** Stops and removes every pod, stops containerd and the registry, removes what is left, removes `dir`. */
  destroy(): Promise<void>;
}

interface HostPaths {
  config: string;
  root: string;
  state: string;
  run: string;
  socket: string;
  logPath: string;
  registryLog: string;
  runcRoot: string;
}

function hostPaths(dir: string): HostPaths {
  return {
    config: join(dir, 'config.toml'),
    root: join(dir, 'root'),
    state: join(dir, 'state'),
    run: join(dir, 'run'),
    socket: join(dir, 'containerd.sock'),
    logPath: join(dir, 'containerd.log'),
    registryLog: join(dir, 'registry.log'),
    runcRoot: join(dir, 'runc'),
  };
}

/**
 * containerd's config (version 3 = containerd 2.x). Every path is under dir; plugins that would read or
 * serve machine-wide paths (NRI's socket, CDI) are off; runc keeps its state under dir too (its default,
 * /run/containerd/runc, would be shared between hosts).
 */
function configToml(dir: string, paths: HostPaths): string {
  const q = (s: string) => `'${s.replace(/'/g, '')}'`;
  return `version = 3
root = ${q(paths.root)}
state = ${q(paths.state)}
temp = ${q(join(dir, 'tmp'))}
disabled_plugins = ['io.containerd.nri.v1.nri', 'io.containerd.internal.v1.tracing', 'io.containerd.tracing.processor.v1.otlp']

[grpc]
  address = ${q(paths.socket)}
[ttrpc]
  address = ${q(`${paths.socket}.ttrpc`)}

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = ${q(join(dir, 'opt'))}
  [plugins.'io.containerd.image-verifier.v1.bindir']
    bin_dir = ${q(join(dir, 'image-verifier'))}
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = ${q(PAUSE_IMAGE)}
  [plugins.'io.containerd.cri.v1.runtime']
    enable_cdi = false
    netns_mounts_under_state_dir = true
    # The sandbox gets oom_score_adj -998, and lowering it needs CAP_SYS_RESOURCE, which this machine's root
    # lacks (runc init then dies: "can't get final child's PID from pipe: EOF"); keep it at containerd's own.
    restrict_oom_score_adj = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = ${q(paths.runcRoot)}
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['/usr/lib/cni']
      conf_dir = ${q(join(dir, 'cni'))}
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
`;
}

/** The pause image: the counter image's rootfs (busybox), sleeping; shares its layer with the counter image. */
async function pauseImageArchive(): Promise<string> {
  return writeDockerArchive({
    tag: PAUSE_IMAGE,
    cacheName: 'pause-image',
    config: { Cmd: ['/bin/busybox', 'sleep', '2147483647'], WorkingDir: '/' },
    layers: [{ tar: await buildCounterRootfs(), createdBy: 'infra/containerd-host.ts (pause)' }],
  });
}

function marker(paths: HostPaths): MountNamespaceMarker {
  return { inside: SHIM_SOCKET_ROOT, ownDir: paths.run };
}

/** Spawns detached with its output appended to `logFile`; resolves once spawned, with a promise of its exit. */
async function spawnLogged(
  command: string,
  args: string[],
  logFile: string,
  env: NodeJS.ProcessEnv,
): Promise<{ child: ChildProcess; exited: () => boolean; exit: Promise<void> }> {
  const handle = await open(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(command, args, { env, stdio: ['ignore', handle.fd, handle.fd], detached: true });
  } finally {
    await handle.close();
  }
  // A test runner exiting must not wait on it; destroy() ends it explicitly.
  child.unref();
  let done = false;
  const exit = new Promise<void>((resolveExit) => {
    const finish = () => {
      done = true;
      resolveExit();
    };
    child.once('exit', finish);
    child.once('error', finish);
  });
  return { child, exited: () => done, exit };
}

async function stopChild(proc: { child: ChildProcess; exited: () => boolean; exit: Promise<void> }): Promise<void> {
  if (proc.exited()) return;
  proc.child.kill('SIGTERM');
  const timer = setTimeout(() => proc.child.kill('SIGKILL'), 10_000);
  await proc.exit;
  clearTimeout(timer);
}

/** Removes `cgroupParent` and what is left below it in every cgroup hierarchy (empty directories only: rmdir). */
async function removeCgroups(cgroupParent: string): Promise<void> {
  const hierarchies = await readdir(CGROUP_ROOT).catch(() => [] as string[]);
  const remove = async (path: string): Promise<void> => {
    const entries = await readdir(path, { withFileTypes: true }).catch(() => undefined);
    if (entries === undefined) return;
    for (const entry of entries) if (entry.isDirectory()) await remove(join(path, entry.name));
    await rmdir(path).catch((error: Error) => log.warn({ cgroup: path, err: error.message }, 'could not remove cgroup'));
  };
  for (const hierarchy of hierarchies) await remove(join(CGROUP_ROOT, hierarchy, cgroupParent));
}

export async function startContainerdHost(options: ContainerdHostOptions): Promise<ContainerdHost> {
  const dir = resolve(options.dir);
  const prefix = options.prefix ?? CONTAINERD2_PREFIX;
  const binDir = join(prefix, 'usr', 'bin');
  const paths = hostPaths(dir);
  if (paths.socket.length + '.ttrpc'.length > 100) {
    // sockaddr_un holds 108 bytes; a longer path fails later with an obscure bind error.
    throw new Error(`socket path too long for a unix socket: ${paths.socket}.ttrpc`);
  }
  await stat(join(binDir, 'containerd')).catch((cause: unknown) => {
    throw new Error(`containerd 2.x is not installed at ${prefix}: run infra/host-setup.sh`, { cause });
  });
  for (const d of [paths.root, paths.state, paths.run, paths.runcRoot, join(dir, 'tmp'), join(dir, 'cni')])
    await mkdir(d, { recursive: true });
  await mkdir(SHIM_SOCKET_ROOT, { recursive: true });
  await writeFile(paths.config, configToml(dir, paths));
  await rm(paths.socket, { force: true });

  const netns = hostNetnsName(options.name, dir);
  await ensureNetns(netns);
  const cgroupParent = `/${netns}`;

  // The package's bin dir first: containerd finds its shim (containerd-shim-runc-v2) there, not the
  // machine's 1.6 one in /usr/bin; runc then comes from the machine and criu from the wrapper.
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${binDir}:${options.criuWrapperDir ?? CRIU_WRAPPER_DIR}:${SYSTEM_PATH}` };
  const started = Date.now();
  const [command = 'unshare', ...args] = inPrivateMountNamespace([{ source: paths.run, target: SHIM_SOCKET_ROOT }], 'ums-containerd-host', [
    'nsenter',
    `--net=/run/netns/${netns}`,
    '--',
    join(binDir, 'containerd'),
    '--config',
    paths.config,
  ]);
  const containerd = await spawnLogged(command, args, paths.logPath, env);

  const cri = new CriClient({ socket: paths.socket, name: `${options.name} (containerd)`, timeoutMs: 2000 });
  const teardown = async () => {
    await stopChild(containerd);
    await killProcessesUnder(dir, marker(paths), 'containerd host');
    await deleteRuncContainersUnder(dir, join(paths.runcRoot, CRI_NAMESPACE));
    await unmountUnder(dir);
    await deleteNetns(netns);
  };
  let version: RuntimeVersion | undefined;
  const timeoutMs = options.startTimeoutMs ?? 30_000;
  try {
    while (version === undefined) {
      if (containerd.exited()) {
        const tail = await readFile(paths.logPath, 'utf8').catch(() => '');
        throw new Error(`containerd for host ${options.name} exited during start-up: ${tail.slice(-2000)}`);
      }
      version = await cri.version().catch(() => undefined);
      if (version === undefined) {
        if (Date.now() - started > timeoutMs)
          throw new Error(`containerd for host ${options.name} did not answer CRI Version within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } catch (error) {
    cri.close();
    await teardown();
    throw error;
  }

  const ctr = async (args: string[]): Promise<string> => {
    try {
      const { stdout } = await execFileAsync(join(binDir, 'ctr'), ['--address', paths.socket, '--namespace', CRI_NAMESPACE, ...args], {
        env,
        timeout: 120_000,
        maxBuffer: 16 * 1024 * 1024,
      });
      return stdout;
    } catch (error) {
      const e = error as { stderr?: string; message: string };
      throw new Error(`ctr ${args.join(' ')} on host ${options.name} failed: ${(e.stderr ?? e.message).trim()}`, { cause: error });
    }
  };

  // The registry runs where containerd resolves "localhost": in the host's network namespace.
  const here = fileURLToPath(import.meta.url);
  const registryScript = here.replace(/containerd-host\.(ts|js)$/, 'containerd-registry.$1');
  const registry = await spawnLogged(
    'nsenter',
    [
      `--net=/run/netns/${netns}`,
      '--',
      process.execPath,
      ...(registryScript.endsWith('.ts') ? ['--import', 'tsx'] : []),
      registryScript,
      join(paths.root, 'io.containerd.content.v1.content'),
    ],
    paths.registryLog,
    process.env,
  );

  let destroyed = false;
  const host: ContainerdHost = {
    name: options.name,
    dir,
    socketPath: paths.socket,
    netns,
    version,
    cgroupParent,
    logPath: paths.logPath,
    importImage: async (archive) => {
      const importStarted = Date.now();
      const out = await ctr(['images', 'import', archive]);
      // A pull from a registry leaves the image known by NAME@DIGEST too, and that is what a CRI checkpoint
      // records as the base image (ContainerStatus.imageRef = the first repo digest, else the bare image id,
      // which the restore cannot pull). An import leaves only the tag: add the digest name a pull would.
      const digestNames: string[] = [];
      for (const line of (await ctr(['images', 'ls'])).split('\n').slice(1)) {
        const [ref, , digest] = line.trim().split(/\s+/);
        if (ref === undefined || digest === undefined || ref.startsWith('sha256:') || ref.includes('@')) continue;
        const repo = ref.replace(/:[^:/]+$/, '');
        const digestName = `${repo}@${digest}`;
        await ctr(['images', 'tag', '--force', ref, digestName]);
        digestNames.push(digestName);
      }
      log.info({ host: options.name, archive, digestNames, importMs: Date.now() - importStarted }, 'image imported');
      return out;
    },
    destroy: async () => {
      if (destroyed) return;
      destroyed = true;
      // The CRI itself stops the containers and their shims and unmounts their rootfs: use it first.
      try {
        for (const sandbox of await cri.listPodSandboxes()) {
          await cri.stopPodSandbox(sandbox.id, { timeoutMs: 30_000 });
          await cri.removePodSandbox(sandbox.id, { timeoutMs: 30_000 });
        }
      } catch (error) {
        log.warn({ host: options.name, err: (error as Error).message }, 'removing pods failed; cleaning up by force');
      }
      cri.close();
      await stopChild(registry);
      await teardown();
      await removeCgroups(cgroupParent);
      await rm(dir, { recursive: true, force: true });
      log.info({ host: options.name, dir }, 'containerd host destroyed');
    },
  };
  try {
    await host.importImage(await pauseImageArchive());
  } catch (error) {
    await host.destroy();
    throw error;
  }
  log.info(
    {
      host: options.name,
      dir,
      netns,
      pid: containerd.child.pid,
      runtime: `${version.runtimeName} ${version.runtimeVersion}`,
      startMs: Date.now() - started,
    },
    'containerd host up',
  );
  return host;
}
