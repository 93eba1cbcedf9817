import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { createLogger } from '../core/log.js';
import { deleteNetns, ensureNetns } from './network-namespace.js';
import { CRIU_WRAPPER_DIR } from '../agents/criu-command.js';
import {
  deleteRuncContainersUnder,
  hostNetnsName,
  inPrivateMountNamespace,
  killProcessesUnder,
  pingApi,
  seesMarker,
  unmountUnder,
  type MountNamespaceMarker,
} from './simulated-host.js';

const execFileAsync = promisify(execFile);
const log = createLogger('docker-host');

/** Debian's docker.io CLI; /usr/local/bin/docker on the reference machine is an unrelated CLI. */
export const DOCKER_CLI = '/usr/bin/docker';

/** The Docker Engine API version of docker.io 20.10, the one this file speaks. */
const API = '/v1.41';

/**
 * The daemon's PATH: the criu wrapper first (runc finds criu through PATH). /usr/local/bin is left out: on
 * the reference machine it holds that unrelated docker CLI, and nothing dockerd runs lives there.
 */
const DAEMON_SYSTEM_PATH = '/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * Where runc reads extra CRIU options for every checkpoint and restore (runc's handleCriuConfigurationFile,
 * when a container has no `org.criu.config` annotation). Docker's checkpoint API has no tcp-established
 * option, so this file is how a Docker host checkpoints a container holding an established TCP connection.
 * It exists only inside the daemon's mount namespace (a bind mount of `<dir>/criu`): Podman's runc calls on
 * the same machine never see it.
 */
const CRIU_CONFIG_DIR = '/etc/criu';
const RUNC_CRIU_CONFIG = 'runc.conf';
const RUNC_CRIU_OPTIONS = ['tcp-established', 'file-locks'];

/** The same container limits as the Podman hosts (infra/podman/containers.conf), within the machine's hard limits. */
const DEFAULT_ULIMITS = {
  nofile: { Name: 'nofile', Hard: 1024, Soft: 1024 },
  nproc: { Name: 'nproc', Hard: 1024, Soft: 1024 },
};

/** sockaddr_un holds 108 bytes; a longer path fails later with an obscure bind error. */
const MAX_SOCKET_PATH = 100;

export interface DockerHostOptions {
  /** Short name, used in logs and in the network namespace's name. */
  name: string;
  /** Everything of this host lives here: data root, exec root, socket, daemon config and log. */
  dir: string;
  /** Directory holding the criu wrapper, put first in the daemon's PATH. */
  criuWrapperDir?: string;
  /** How long to wait for the API to answer. Default 30 s. */
  startTimeoutMs?: number;
}

export interface DockerHost {
  name: string;
  dir: string;
  socketPath: string;
  /** unix:///path/to/docker.sock, for DOCKER_HOST and `docker -H`. */
  url: string;
  /** dockerd's --data-root: images, containers (and their checkpoints under containers/<id>/checkpoints), volumes. */
  dataRoot: string;
  /** dockerd's --exec-root: run state, containerd's state and socket, runc's state (runtime-runc/moby). */
  execRoot: string;
  /** Where Docker keeps its volumes (`<dataRoot>/volumes`), a path the machine and the daemon see alike. */
  volumesDir: string;
  /** The runc.conf with the CRIU options, as the machine sees it (the daemon sees it at /etc/criu/runc.conf). */
  criuConfigFile: string;
  /** The network namespace the daemon, and so its containers' bridge, live in. */
  netns: string;
  /** Environment for the docker CLI: DOCKER_HOST points at this host. */
  env: NodeJS.ProcessEnv;
  /** pid of dockerd (its containerd and shims live in the same mount namespace); undefined once stopped. */
  daemonPid(): number | undefined;
  /** Runs `/usr/bin/docker ARGS...` against this host; rejects with stderr on a non-zero exit. */
  docker(args: string[], options?: { timeoutMs?: number }): Promise<{ stdout: string; stderr: string }>;
  /**
   * Loads a docker-archive (infra/images/docker-archive.ts) through the API unless the host already has
   * `tag`; `id` is the image id without its `sha256:` prefix, as Podman prints it.
   */
  loadImage(tag: string, archive: string): Promise<{ id: string; imported: boolean }>;
  /**
   * Stops dockerd, which stops its containers (no live-restore) and its containerd. `startDockerHost` with
   * the same dir starts it again on the same data.
   */
  stop(): Promise<void>;
  /**
   * Tears the host down completely: removes every container (running or checkpointed), stops dockerd and
   * its containerd, kills any process left in the host's mount namespace or naming this host's dirs, kills
   * containers runc still knows, unmounts everything below `dir`, deletes the network namespace and removes
   * `dir`. Safe to call more than once.
   */
  destroy(): Promise<void>;
}

interface HostPaths {
  dataRoot: string;
  execRoot: string;
  criuDir: string;
  config: string;
  pidfile: string;
  keyFile: string;
  socket: string;
  containerdSocket: string;
  daemonLog: string;
}

function hostPaths(dir: string): HostPaths {
  const execRoot = join(dir, 'exec');
  return {
    dataRoot: join(dir, 'root'),
    execRoot,
    criuDir: join(dir, 'criu'),
    config: join(dir, 'daemon.json'),
    pidfile: join(dir, 'docker.pid'),
    keyFile: join(dir, 'key.json'),
    socket: join(dir, 'docker.sock'),
    // The longest socket path the daemon makes (its managed containerd's ttrpc socket).
    containerdSocket: join(execRoot, 'containerd', 'containerd.sock.ttrpc'),
    daemonLog: join(dir, 'daemon.log'),
  };
}

/**
 * Starts a dockerd of its own as one simulated host: every piece of state under `dir` (data root, exec root
 * with its managed containerd, pidfile, the libtrust key), the API on `<dir>/docker.sock`, in a network
 * namespace of its own (its own docker0 bridge, iptables rules and published ports, joined to the stack's
 * WAN like a Podman host) and in a private mount namespace in which `<dir>/criu` is bind-mounted at
 * /etc/criu. containerd, its shims and every mount Docker makes live in that namespace, invisible in the
 * machine's own mount table; it ends with its last process.
 *
 * `ip netns exec` cannot start it: it remounts /sys, which hides the cgroup mounts ("Devices cgroup isn't
 * mounted"); `nsenter --net` only switches the network namespace.
 */
export async function startDockerHost(options: DockerHostOptions): Promise<DockerHost> {
  const dir = resolve(options.dir);
  const criuWrapperDir = options.criuWrapperDir ?? CRIU_WRAPPER_DIR;
  const paths = hostPaths(dir);
  for (const socket of [paths.socket, paths.containerdSocket]) {
    if (socket.length > MAX_SOCKET_PATH) {
      throw new Error(`socket path too long for a unix socket (${socket.length} > ${MAX_SOCKET_PATH}): ${socket}; use a shorter dir`);
    }
  }
  for (const d of [paths.dataRoot, paths.execRoot, paths.criuDir]) await mkdir(d, { recursive: true });
  await writeFile(
    join(paths.criuDir, RUNC_CRIU_CONFIG),
    `# CRIU options runc adds to every dump and restore of this simulated Docker host (infra/docker-host.ts)\n${RUNC_CRIU_OPTIONS.join('\n')}\n`,
  );
  // The mount point of the bind mount; an empty directory changes nothing for runc outside the namespace.
  await mkdir(CRIU_CONFIG_DIR, { recursive: true });
  const marker: MountNamespaceMarker = { inside: CRIU_CONFIG_DIR, ownDir: paths.criuDir };
  await clearCrashedDaemon(options.name, dir, paths, marker);
  await rm(paths.socket, { force: true });
  await writeFile(
    paths.config,
    `${JSON.stringify(
      {
        'data-root': paths.dataRoot,
        'exec-root': paths.execRoot,
        pidfile: paths.pidfile,
        // Else every daemon shares /etc/docker/key.json.
        'deprecated-key-path': paths.keyFile,
        hosts: [`unix://${paths.socket}`],
        // `docker checkpoint` is experimental in 20.10.
        experimental: true,
        'default-ulimits': DEFAULT_ULIMITS,
        // Bounds stop() like the Podman hosts' stop_timeout; the counter does not trap SIGTERM.
        'shutdown-timeout': 5,
      },
      null,
      2,
    )}\n`,
  );

  const netns = hostNetnsName(options.name, dir);
  await ensureNetns(netns);

  const daemonEnv: NodeJS.ProcessEnv = { ...process.env, PATH: `${criuWrapperDir}:${DAEMON_SYSTEM_PATH}` };
  // Never let the daemon, or what it runs, act as a client of another engine.
  for (const variable of ['DOCKER_HOST', 'DOCKER_CONTEXT', 'DOCKER_TLS_VERIFY', 'DOCKER_CERT_PATH', 'CONTAINER_HOST', 'NOTIFY_SOCKET']) {
    delete daemonEnv[variable];
  }
  // nsenter, unshare and sh each exec the next, so the child is dockerd itself.
  const args = [
    `--net=/run/netns/${netns}`,
    '--',
    ...inPrivateMountNamespace([{ source: paths.criuDir, target: CRIU_CONFIG_DIR }], 'ums-docker-host', [
      'dockerd',
      '--config-file',
      paths.config,
    ]),
  ];
  const logFile = await open(paths.daemonLog, 'a');
  let child: ChildProcess;
  try {
    child = spawn('nsenter', args, { env: daemonEnv, stdio: ['ignore', logFile.fd, logFile.fd], detached: true });
  } finally {
    await logFile.close();
  }
  // A test runner exiting must not wait on the daemon; destroy()/stop() end it explicitly.
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

  // A daemon that failed to come up may have started its containerd already: kill all of it.
  const abandon = async (reason: string): Promise<never> => {
    child.kill('SIGKILL');
    await exitPromise;
    await killProcessesUnder(dir, marker, 'docker host');
    const tail = await readFile(paths.daemonLog, 'utf8').catch(() => '');
    throw new Error(`dockerd for host ${options.name} ${reason}: ${tail.slice(-2000)}`);
  };
  const startedAt = Date.now();
  const timeoutMs = options.startTimeoutMs ?? 30_000;
  for (;;) {
    if (exited) await abandon('exited during start-up');
    if (await pingApi(paths.socket)) break;
    if (Date.now() - startedAt > timeoutMs) await abandon(`did not answer /_ping within ${timeoutMs} ms`);
    await sleep(50);
  }
  if (child.pid === undefined || !(await seesMarker(child.pid, marker))) {
    await abandon(`does not see ${paths.criuDir} at ${CRIU_CONFIG_DIR}`);
  }
  log.info({ host: options.name, dir, pid: child.pid, netns, startMs: Date.now() - startedAt }, 'dockerd up');

  const url = `unix://${paths.socket}`;
  const cliEnv: NodeJS.ProcessEnv = { ...process.env, DOCKER_HOST: url };
  for (const variable of ['DOCKER_CONTEXT', 'DOCKER_TLS_VERIFY', 'DOCKER_CERT_PATH']) delete cliEnv[variable];

  const api = (method: string, path: string, body?: { file: string; contentType: string }) =>
    apiRequest(paths.socket, method, `${API}${path}`, body);
  const imageId = async (tag: string): Promise<string | undefined> => {
    const res = await api('GET', `/images/${encodeURIComponent(tag)}/json`);
    if (res.status === 404) return undefined;
    if (res.status !== 200) throw new Error(`inspecting image ${tag} on docker host ${options.name}: HTTP ${res.status} ${res.text}`);
    return (JSON.parse(res.text) as { Id: string }).Id.replace(/^sha256:/, '');
  };

  const stop = async (): Promise<void> => {
    if (exited) return;
    child.kill('SIGTERM');
    // dockerd stops its containers (up to shutdown-timeout) and then its containerd.
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    await exitPromise;
    clearTimeout(timer);
    log.info({ host: options.name }, 'dockerd stopped');
  };

  let destroyed = false;
  const host: DockerHost = {
    name: options.name,
    dir,
    socketPath: paths.socket,
    url,
    dataRoot: paths.dataRoot,
    execRoot: paths.execRoot,
    volumesDir: join(paths.dataRoot, 'volumes'),
    criuConfigFile: join(paths.criuDir, RUNC_CRIU_CONFIG),
    netns,
    env: cliEnv,
    daemonPid: () => (exited ? undefined : child.pid),
    docker: async (cliArgs, cliOptions) => {
      try {
        const { stdout, stderr } = await execFileAsync(DOCKER_CLI, cliArgs, {
          env: cliEnv,
          timeout: cliOptions?.timeoutMs ?? 120_000,
          maxBuffer: 64 * 1024 * 1024,
        });
        return { stdout, stderr };
      } catch (error) {
        const e = error as { stderr?: string; message: string };
        throw new Error(`docker ${cliArgs.join(' ')} on host ${options.name} failed: ${(e.stderr || e.message).trim()}`, { cause: error });
      }
    },
    loadImage: async (tag, archive) => {
      const existing = await imageId(tag);
      if (existing !== undefined) return { id: existing, imported: false };
      const started = Date.now();
      const res = await api('POST', '/images/load?quiet=1', { file: archive, contentType: 'application/x-tar' });
      // The load reports a failure inside a 200 response, as a JSON message with an error.
      if (res.status !== 200 || res.text.includes('"error"')) {
        throw new Error(`docker load of ${tag} (${archive}) on host ${options.name} failed: HTTP ${res.status} ${res.text.trim()}`);
      }
      const id = await imageId(tag);
      if (id === undefined) throw new Error(`docker load of ${archive} on host ${options.name} did not give ${tag}: ${res.text.trim()}`);
      log.info({ host: options.name, tag, id, loadMs: Date.now() - started }, 'image loaded');
      return { id, imported: true };
    },
    stop,
    destroy: async () => {
      if (destroyed) return;
      destroyed = true;
      if (!exited) {
        // Docker itself knows how to stop a container and drop its mounts, network and checkpoints: use it first.
        try {
          const listed = await api('GET', '/containers/json?all=1');
          if (listed.status !== 200) throw new Error(`listing containers: HTTP ${listed.status} ${listed.text}`);
          for (const { Id } of JSON.parse(listed.text) as { Id: string }[]) {
            const removed = await api('DELETE', `/containers/${Id}?force=1&v=1`);
            if (removed.status !== 204 && removed.status !== 404) throw new Error(`removing ${Id}: HTTP ${removed.status} ${removed.text}`);
          }
        } catch (error) {
          log.warn({ host: options.name, err: (error as Error).message }, 'removing containers failed; cleaning up by force');
        }
      }
      await stop();
      // containerd and its shims, should dockerd have died without stopping them.
      await killProcessesUnder(dir, marker, 'docker host');
      await deleteRuncContainersUnder(dir, join(paths.execRoot, 'runtime-runc', 'moby'));
      await unmountUnder(dir);
      await deleteNetns(netns);
      await rm(dir, { recursive: true, force: true });
      log.info({ host: options.name, dir }, 'docker host destroyed');
    },
  };
  return host;
}

/**
 * What a killed dockerd leaves when this dir is started again: its pidfile, which dockerd refuses while the
 * pid in it still exists (an unreaped zombie counts; this machine's PID 1 reaps orphans only after 1-2 s),
 * and its shims and containers in the old mount namespace, whose mounts a new daemon could not see. A
 * daemon that is still running with this config is an error, not a leftover.
 */
async function clearCrashedDaemon(name: string, dir: string, paths: HostPaths, marker: MountNamespaceMarker): Promise<void> {
  const pid = Number((await readFile(paths.pidfile, 'utf8').catch(() => '')).trim());
  if (Number.isInteger(pid) && pid > 0) {
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).replace(/\0/g, ' ');
    if (cmdline.includes(paths.config)) throw new Error(`docker host ${name} already runs in ${dir} (dockerd pid ${pid})`);
    await rm(paths.pidfile, { force: true });
  }
  await killProcessesUnder(dir, marker, 'docker host');
  await deleteRuncContainersUnder(dir, join(paths.execRoot, 'runtime-runc', 'moby'));
}

/** One request to the Docker API on a unix socket, the body streamed from a file; the answer read whole. */
function apiRequest(
  socketPath: string,
  method: string,
  path: string,
  body?: { file: string; contentType: string },
): Promise<{ status: number; text: string }> {
  return new Promise((resolveRequest, rejectRequest) => {
    const fail = (error: Error) =>
      rejectRequest(new Error(`${method} ${path} on ${socketPath} failed: ${error.message}`, { cause: error }));
    const req = request(
      { socketPath, method, path, headers: { Host: 'docker', ...(body !== undefined ? { 'Content-Type': body.contentType } : {}) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolveRequest({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', fail);
      },
    );
    req.on('error', fail);
    if (body === undefined) {
      req.end();
      return;
    }
    const source = createReadStream(body.file);
    source.on('error', (error) => {
      req.destroy();
      fail(error);
    });
    source.pipe(req);
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
