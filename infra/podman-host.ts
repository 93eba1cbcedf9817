import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdir, open, readFile, rm, stat, type FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { CRIU_WRAPPER_DIR } from '../agents/criu-command.js';
import { createLogger } from '../core/log.js';
import { deleteNetns, ensureNetns } from './network-namespace.js';
import { repoPath } from './repo-paths.js';
import {
  deleteRuncContainersUnder,
  hostNetnsName,
  inPrivateMountNamespace,
  killProcessesUnder,
  pingApi,
  processesInHostMountNamespace,
  seesMarker,
  unmountUnder,
  type MountNamespaceMarker,
} from './simulated-host.js';

const execFileAsync = promisify(execFile);
const log = createLogger('podman-host');

/** The repository's Podman configuration for agents (runc, ulimits, file locks, ...). */
export const DEFAULT_CONTAINERS_CONF = repoPath('infra', 'podman', 'containers.conf');

/** Where infra/host-setup.sh puts the `criu` wrapper; runc finds criu through PATH, so it goes first. */
export const DEFAULT_CRIU_WRAPPER_DIR = CRIU_WRAPPER_DIR;

const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * The runroot every simulated host's service is given. Each service runs in a private mount namespace in
 * which this path is a bind mount of the host's own `<dir>/runroot`, so all hosts name the same path (as
 * real hosts all use /run/containers/storage) while each keeps its own contents. Podman 4.3's checkpoint
 * import gives a restored container fresh pidfile paths only when the archived ones start with the
 * destination's runroot (RestoreContainer in libpod/runtime_ctr.go); with a runroot path per host, a
 * container restored on B kept A's pidfile path and conmon on B wrote into A's directory. Outside the
 * services' namespaces this is an empty directory.
 */
export const SHARED_RUNROOT = '/run/ums-podman/runroot';

/**
 * The volume path every simulated host's service is given, the same way: a bind mount of the host's own
 * `<dir>/volumes` in its mount namespace, so all hosts name the same path (as real hosts all use
 * /var/lib/containers/storage/volumes). Podman 4.3's checkpoint import fills the destination's volumes from
 * the archive, but the restored container's spec keeps the mount sources of spec.dump: with a volume path
 * per host, a container restored on B mounted A's volume directory (and saw nothing once A removed it).
 */
export const SHARED_VOLUMEPATH = '/run/ums-podman/volumes';

export interface PodmanHostOptions {
  /** Short name, used in logs and in the network namespace's name. */
  name: string;
  /** Everything of this host lives here: storage, run state, locks, events, socket, service log. */
  dir: string;
  /** Defaults to infra/podman/containers.conf. */
  containersConf?: string;
  /**
   * 'isolated' (default) runs the service in a network namespace of its own, so each simulated host has
   * its own podman0 bridge, 10.88.0.0/16 subnet, IPAM and firewall chains, as separate machines would:
   * a container restored with its source IP then fits the destination's default network unchanged.
   * Not separable in Podman 4.3: netavark's IPAM database and lock (/run/containers/networks/ipam.db,
   * /run/lock/netavark.lock) are fixed paths for rootful Podman, so simulated hosts draw addresses from one
   * pool. Addresses are therefore unique across them, and an address in use on one host is refused on another.
   * 'shared' uses the machine's network namespace (what a real single host does).
   */
  network?: 'isolated' | 'shared';
  /** Directory holding the criu wrapper, put first in the service's PATH. */
  criuWrapperDir?: string;
  /** How long to wait for the API to answer. Default 30 s. */
  startTimeoutMs?: number;
}

export interface PodmanHost {
  name: string;
  dir: string;
  /** What the service calls its runroot (SHARED_RUNROOT, visible as such only inside its mount namespace). */
  runroot: string;
  /** Where that runroot's contents really are: `<dir>/runroot`. */
  runrootDir: string;
  /** Where the volumes, which the service finds at SHARED_VOLUMEPATH, really are: `<dir>/volumes`. */
  volumesDir: string;
  socketPath: string;
  /** unix:///path/to/podman.sock, for `podman --url` and CONTAINER_HOST. */
  url: string;
  /** Environment for the podman CLI: CONTAINER_HOST points at this host (the CLI then runs remote). */
  env: NodeJS.ProcessEnv;
  /** The network namespace the service runs in, when isolated. */
  netns: string | undefined;
  /**
   * pid of the API service, which runs in a mount namespace of its own (as do conmon and, below them, the
   * containers): /proc/PID/ns/mnt and /proc/PID/mountinfo show what the host sees. undefined once stopped.
   */
  servicePid(): number | undefined;
  /** Runs `podman --url URL ARGS...` against this host; rejects with stderr on a non-zero exit. */
  podman(args: string[], options?: { timeoutMs?: number }): Promise<{ stdout: string; stderr: string }>;
  /**
   * Stops the API service only. Containers keep running under their conmon processes, as on a real host
   * whose Podman service restarts; `startPodmanHost` with the same dir serves them again (it joins the mount
   * namespace those conmon processes live in; with none left it makes a new one).
   */
  stop(): Promise<void>;
  /**
   * Tears the host down completely: removes every container (running or checkpointed), stops the service,
   * kills any process left in the host's mount namespace or naming this host's dirs (conmon and the like),
   * unmounts everything below `dir`, deletes the network namespace and removes `dir`. The mounts Podman made
   * (overlay, shm) live in the host's private mount namespace and go with its last process. Safe to call
   * more than once.
   */
  destroy(): Promise<void>;
}

/**
 * Starts `podman system service` as one simulated host. Every piece of state Podman keeps is moved under
 * `dir`, so two hosts on one machine share nothing: --root (images, containers, bolt DB under libpod/),
 * --runroot (run state, netavark IPAM/firewall state under networks/), --tmpdir (alive file, file locks,
 * events log, exit files), --volumepath, --network-config-dir, and TMPDIR (checkpoint archives being
 * exported/imported are staged there).
 *
 * The runroot and the volume path are the exceptions to "a path under dir": the service runs in a private
 * mount namespace (unshare --mount) where `<dir>/runroot` is bind-mounted at SHARED_RUNROOT and
 * `<dir>/volumes` at SHARED_VOLUMEPATH, and is told those paths, so a checkpoint taken on one simulated host restores on another as it would between real
 * hosts (see SHARED_RUNROOT). conmon, the containers and every mount Podman makes live in that namespace
 * (invisible in the machine's own mount table) and the namespace ends with its last process. The short,
 * fixed runroot also keeps Podman's runroot length limit out of the way: only the socket path bounds `dir`.
 */
export async function startPodmanHost(options: PodmanHostOptions): Promise<PodmanHost> {
  const dir = resolve(options.dir);
  const containersConf = resolve(options.containersConf ?? DEFAULT_CONTAINERS_CONF);
  const network = options.network ?? 'isolated';
  const criuWrapperDir = options.criuWrapperDir ?? DEFAULT_CRIU_WRAPPER_DIR;
  const paths = hostPaths(dir);
  if (paths.socket.length > 100) {
    // sockaddr_un holds 108 bytes; a longer path fails later with an obscure bind error.
    throw new Error(`socket path too long for a unix socket (${paths.socket.length} > 100): ${paths.socket}`);
  }
  await stat(containersConf).catch(() => {
    throw new Error(`containers.conf not found: ${containersConf}`);
  });
  for (const d of [paths.root, paths.runroot, paths.tmpdir, paths.volumes, paths.networks, paths.stagingTmp]) {
    await mkdir(d, { recursive: true });
  }
  await rm(paths.socket, { force: true });
  await mkdir(SHARED_RUNROOT, { recursive: true });
  await mkdir(SHARED_VOLUMEPATH, { recursive: true });

  let netns: string | undefined;
  if (network === 'isolated') {
    netns = hostNetnsName(options.name, dir);
    await ensureNetns(netns);
  }

  const serviceEnv: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: `${criuWrapperDir}:${SYSTEM_PATH}`,
    CONTAINERS_CONF: containersConf,
    TMPDIR: paths.stagingTmp,
  };
  // Never let the service itself act as a remote client.
  delete serviceEnv.CONTAINER_HOST;
  delete serviceEnv.CONTAINER_CONNECTION;

  const podmanArgs = [
    '--root',
    paths.root,
    '--runroot',
    SHARED_RUNROOT,
    '--tmpdir',
    paths.tmpdir,
    '--volumepath',
    SHARED_VOLUMEPATH,
    '--network-config-dir',
    paths.networks,
    '--storage-driver',
    'overlay',
    '--cgroup-manager',
    'cgroupfs',
    '--events-backend',
    'file',
    'system',
    'service',
    '--time=0',
    `unix://${paths.socket}`,
  ];
  const netArgs = netns === undefined ? [] : [`--net=/run/netns/${netns}`];
  // A service restarted after stop() must see the mounts of the containers still running under conmon:
  // join their mount namespace. Otherwise make a new private one with this host's runroot at the shared path.
  const joined = await openHostMountNamespace(paths.runroot);
  let command: string;
  let args: string[];
  if (joined !== undefined) {
    // nsenter opens /proc/self/fd/3, the namespace held open here, so the pid it was found by may be gone.
    [command, args] = ['nsenter', ['--mount=/proc/self/fd/3', ...netArgs, '--', 'podman', ...podmanArgs]];
  } else {
    const inner = netns === undefined ? ['podman', ...podmanArgs] : ['nsenter', ...netArgs, '--', 'podman', ...podmanArgs];
    [command = 'unshare', ...args] = inPrivateMountNamespace(
      [
        { source: paths.runroot, target: SHARED_RUNROOT },
        { source: paths.volumes, target: SHARED_VOLUMEPATH },
      ],
      'ums-podman-host',
      inner,
    );
  }

  const logFile = await open(paths.serviceLog, 'a');
  let child: ChildProcess;
  try {
    child = spawn(command, args, {
      env: serviceEnv,
      stdio: ['ignore', logFile.fd, logFile.fd, ...(joined !== undefined ? [joined.handle.fd] : [])],
      detached: true,
    });
  } finally {
    await logFile.close();
    await joined?.handle.close();
  }
  // A test runner exiting must not wait on the service; destroy()/stop() end it explicitly.
  child.unref();
  let exited = false;
  const exitPromise = new Promise<void>((resolveExit) => {
    child.once('exit', () => {
      exited = true;
      resolveExit();
    });
    child.once('error', () => {
      exited = true;
      resolveExit();
    });
  });

  const url = `unix://${paths.socket}`;
  const startedAt = Date.now();
  const timeoutMs = options.startTimeoutMs ?? 30_000;
  for (;;) {
    if (exited) {
      const tail = await readFile(paths.serviceLog, 'utf8').catch(() => '');
      throw new Error(`podman service for host ${options.name} exited during start-up: ${tail.slice(-2000)}`);
    }
    if (await pingApi(paths.socket)) break;
    if (Date.now() - startedAt > timeoutMs) {
      child.kill('SIGKILL');
      throw new Error(`podman service for host ${options.name} did not answer /_ping within ${timeoutMs} ms`);
    }
    await sleep(50);
  }
  // unshare, sh and nsenter each exec the next, so the child is podman itself: check what it sees.
  if (child.pid === undefined || !(await seesMarker(child.pid, runrootMarker(paths.runroot)))) {
    child.kill('SIGKILL');
    throw new Error(`podman service for host ${options.name} does not see ${paths.runroot} at ${SHARED_RUNROOT}`);
  }
  log.info(
    {
      host: options.name,
      dir,
      pid: child.pid,
      netns,
      mountNamespace: joined !== undefined ? `joined (pid ${joined.pid})` : 'new',
      startMs: Date.now() - startedAt,
    },
    'podman service up',
  );

  const cliEnv: NodeJS.ProcessEnv = { ...process.env, CONTAINER_HOST: url };
  delete cliEnv.CONTAINER_CONNECTION;

  const stop = async (): Promise<void> => {
    if (exited) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exitPromise;
    clearTimeout(timer);
    log.info({ host: options.name }, 'podman service stopped');
  };

  let destroyed = false;
  const host: PodmanHost = {
    name: options.name,
    dir,
    socketPath: paths.socket,
    url,
    runroot: SHARED_RUNROOT,
    runrootDir: paths.runroot,
    volumesDir: paths.volumes,
    env: cliEnv,
    netns,
    servicePid: () => (exited ? undefined : child.pid),
    podman: async (cliArgs, cliOptions) => {
      try {
        const { stdout, stderr } = await execFileAsync('podman', ['--url', url, ...cliArgs], {
          env: cliEnv,
          timeout: cliOptions?.timeoutMs ?? 120_000,
          maxBuffer: 64 * 1024 * 1024,
        });
        return { stdout, stderr };
      } catch (error) {
        const e = error as { stderr?: string; message: string };
        throw new Error(`podman ${cliArgs.join(' ')} on host ${options.name} failed: ${(e.stderr ?? e.message).trim()}`, {
          cause: error,
        });
      }
    },
    stop,
    destroy: async () => {
      if (destroyed) return;
      destroyed = true;
      if (!exited) {
        // Podman itself knows how to stop conmon, the container and its mounts and network; use it first.
        try {
          await host.podman(['rm', '--all', '--force', '--time', '0'], { timeoutMs: 60_000 });
          await host.podman(['pod', 'rm', '--all', '--force'], { timeoutMs: 60_000 }).catch(() => undefined);
        } catch (error) {
          log.warn({ host: options.name, err: (error as Error).message }, 'removing containers failed; cleaning up by force');
        }
      }
      await stop();
      const containerNetns = await containerNetnsIn(paths.runroot);
      // conmon and co; exec sessions' conmon pair (conmon 2.1.6 with runc) lingers after the command ends.
      await killProcessesUnder(dir, runrootMarker(paths.runroot), 'podman host');
      await deleteRuncContainersUnder(dir);
      await removeNetnsFiles(containerNetns);
      await unmountUnder(dir);
      if (netns !== undefined) await deleteNetns(netns);
      await rm(dir, { recursive: true, force: true });
      log.info({ host: options.name, dir }, 'podman host destroyed');
    },
  };
  return host;
}

interface HostPaths {
  root: string;
  runroot: string;
  tmpdir: string;
  volumes: string;
  networks: string;
  stagingTmp: string;
  socket: string;
  serviceLog: string;
}

function hostPaths(dir: string): HostPaths {
  return {
    root: join(dir, 'root'),
    runroot: join(dir, 'runroot'),
    tmpdir: join(dir, 'tmp'),
    volumes: join(dir, 'volumes'),
    networks: join(dir, 'networks'),
    stagingTmp: join(dir, 'staging'),
    socket: join(dir, 'podman.sock'),
    serviceLog: join(dir, 'service.log'),
  };
}

/** A service's mount namespace is the one that shows this host's runroot at SHARED_RUNROOT. */
function runrootMarker(runrootDir: string): MountNamespaceMarker {
  return { inside: SHARED_RUNROOT, ownDir: runrootDir };
}

/** Opens the mount namespace of a process still living in this host's namespace, if there is one. */
async function openHostMountNamespace(runrootDir: string): Promise<{ pid: number; handle: FileHandle } | undefined> {
  for (const pid of await processesInHostMountNamespace(runrootMarker(runrootDir))) {
    const handle = await open(`/proc/${pid}/ns/mnt`, 'r').catch(() => undefined);
    if (handle === undefined) continue;
    // The pid may have ended (and been reused) between the scan and the open: check again, now that the
    // namespace is held open.
    if (await seesMarker(pid, runrootMarker(runrootDir))) return { pid, handle };
    await handle.close();
  }
  return undefined;
}

/**
 * Podman pins each container's network namespace on a file /run/netns/netns-<uuid>: the file is on the
 * machine's disk, the pin (a mount) only in the host's mount namespace. Podman removes both when it removes
 * the container; when the namespace ends with containers still in it (crash, failed `rm`), the file stays,
 * empty, and `ip netns list` complains about it. These are the files to remove once the processes are gone.
 */
async function containerNetnsIn(runrootDir: string): Promise<string[]> {
  const [pid] = await processesInHostMountNamespace(runrootMarker(runrootDir));
  if (pid === undefined) return [];
  const points = (mountinfo: string) =>
    new Set(
      mountinfo
        .split('\n')
        .map((line) => line.split(' ')[4] ?? '')
        .filter((p) => p.startsWith('/run/netns/')),
    );
  const inside = points(await readFile(`/proc/${pid}/mountinfo`, 'utf8').catch(() => ''));
  const outside = points(await readFile('/proc/self/mountinfo', 'utf8'));
  // Pins the machine's namespace holds too (the simulated hosts' own ums-* namespaces) are not Podman's.
  return [...inside].filter((p) => !outside.has(p));
}

async function removeNetnsFiles(files: string[]): Promise<void> {
  const ownMounts = await readFile('/proc/self/mountinfo', 'utf8');
  for (const file of files) {
    if (ownMounts.includes(` ${file} `)) continue;
    await rm(file, { force: true }).catch((error: Error) => log.warn({ file, err: error.message }, 'could not remove netns file'));
  }
  if (files.length > 0) log.info({ files }, 'removed network namespace files of containers left behind');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
