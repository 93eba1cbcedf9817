import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, readdir, readlink, stat } from 'node:fs/promises';
import { request } from 'node:http';
import { promisify } from 'node:util';
import { createLogger } from '../core/log.js';

/*
 * What every simulated host of the stack does the same way, whichever engine it runs (infra/podman-host.ts,
 * infra/docker-host.ts): each owns everything under its own dir, runs its engine in a network namespace
 * named from that dir and in a private mount namespace, and on teardown finds and kills what is left of it
 * and unmounts what it mounted.
 *
 * A host's mount namespace is recognised by a marker: a directory of the host's (`ownDir`, under its dir)
 * that is bind-mounted at a fixed path (`inside`) only in that namespace. A process whose /proc/PID/root
 * shows `ownDir` at `inside` lives in it. This survives the engine's own process (a restarted engine, or a
 * crash), which a remembered namespace inode would not reliably do: inodes are reused.
 */
const execFileAsync = promisify(execFile);
const log = createLogger('simulated-host');

export interface MountNamespaceMarker {
  /** The fixed path the marker is mounted at inside the host's mount namespace. */
  inside: string;
  /** What is mounted there: a directory under the host's dir. */
  ownDir: string;
}

/** Stable per (name, dir) so a restarted host finds its namespace, distinct across parallel test runs. */
export function hostNetnsName(name: string, dir: string): string {
  const safe = name.replace(/[^a-zA-Z0-9_.-]/g, '-').slice(0, 20);
  const hash = createHash('sha256').update(dir).digest('hex').slice(0, 8);
  return `ums-${safe}-${hash}`;
}

/** Whether process `pid` sees the marker, i.e. lives in that host's mount namespace. */
export async function seesMarker(pid: number, marker: MountNamespaceMarker): Promise<boolean> {
  try {
    const [inside, own] = await Promise.all([stat(`/proc/${pid}/root${marker.inside}`), stat(marker.ownDir)]);
    return inside.dev === own.dev && inside.ino === own.ino;
  } catch {
    return false;
  }
}

/** pids of the processes in the mount namespace that shows the marker (the engine, its helpers). */
export async function processesInHostMountNamespace(marker: MountNamespaceMarker): Promise<number[]> {
  const own = await stat(marker.ownDir).catch(() => undefined);
  if (own === undefined) return [];
  const ownNs = await readlink('/proc/self/ns/mnt').catch(() => '');
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    // Cheap filter first: most processes share the machine's namespace.
    if ((await readlink(`/proc/${pid}/ns/mnt`).catch(() => ownNs)) === ownNs) continue;
    const inside = await stat(`/proc/${pid}/root${marker.inside}`).catch(() => undefined);
    if (inside !== undefined && inside.dev === own.dev && inside.ino === own.ino) found.push(pid);
  }
  return found;
}

/**
 * The engine's helpers (conmon; containerd and its shims) outlive a crashed engine, and some outlive even a
 * clean stop. Find them by the host's mount namespace, or by the host's paths on their command line or as
 * their working directory, and kill them by pid. With the last of them the mount namespace ends, and the
 * mounts the engine made in it go too. `label` names the host kind in the logs.
 */
export async function killProcessesUnder(dir: string, marker: MountNamespaceMarker, label: string): Promise<void> {
  const needle = `${dir}/`;
  for (let round = 0; round < 5; round++) {
    const victims: { pid: number; cmdline: string }[] = [];
    const inNamespace = new Set(await processesInHostMountNamespace(marker));
    for (const entry of await readdir('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const pid = Number(entry);
      if (pid === process.pid) continue;
      try {
        const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).replace(/\0/g, ' ');
        const cwd = await readlink(`/proc/${pid}/cwd`).catch(() => '');
        if (inNamespace.has(pid) || cmdline.includes(needle) || cwd.startsWith(needle)) {
          victims.push({ pid, cmdline: cmdline.slice(0, 200) });
        }
      } catch {
        // The process ended while we looked.
      }
    }
    if (victims.length === 0) return;
    for (const { pid } of victims) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    log.info({ dir, victims }, `killed processes left behind by the ${label}`);
    await sleep(200);
  }
  log.warn({ dir }, `processes of the ${label} survive SIGKILL`);
}

/**
 * A container's processes outlive its killed supervisor (conmon, containerd's shim): they are in PID and
 * mount namespaces of their own and their command lines name nothing of the host. runc's state still lists
 * them with their bundle under `dir`: `runc delete --force` kills them and drops that state. `runcRoot` is
 * where that engine keeps runc's state (runc's default, /run/runc, for Podman).
 */
export async function deleteRuncContainersUnder(dir: string, runcRoot?: string): Promise<void> {
  const rootArgs = runcRoot === undefined ? [] : ['--root', runcRoot];
  let listed: { id: string; pid: number; status: string; bundle: string }[];
  try {
    const { stdout } = await execFileAsync('runc', [...rootArgs, 'list', '--format', 'json']);
    // runc prints `null`, not `[]`, when it knows no container at all.
    listed = (JSON.parse(stdout.trim() || 'null') as typeof listed | null) ?? [];
  } catch (error) {
    log.warn({ dir, runcRoot, err: (error as Error).message }, 'runc list failed');
    return;
  }
  const ours = listed.filter((c) => c.bundle.startsWith(`${dir}/`));
  for (const c of ours) {
    await execFileAsync('runc', [...rootArgs, 'delete', '--force', c.id]).catch((error: Error) => {
      log.warn({ dir, container: c.id, err: error.message }, 'runc delete failed');
    });
  }
  if (ours.length > 0)
    log.info(
      { dir, containers: ours.map((c) => ({ id: c.id, pid: c.pid, status: c.status })) },
      'deleted containers left behind by the simulated host',
    );
}

/** Overlay, shm and bind mounts below `dir` must go before rm -rf, or rm fails (EBUSY) or descends into them. */
export async function unmountUnder(dir: string): Promise<void> {
  for (let round = 0; round < 5; round++) {
    const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
    const points = mountinfo
      .split('\n')
      .map((line) => line.split(' ')[4])
      .filter((p): p is string => p !== undefined && (p === dir || p.startsWith(`${dir}/`)))
      .map((p) => p.replace(/\\040/g, ' '))
      .sort((a, b) => b.length - a.length);
    if (points.length === 0) return;
    for (const point of points) {
      await execFileAsync('umount', [point]).catch(() => execFileAsync('umount', ['-l', point]).catch(() => undefined));
    }
  }
  log.warn({ dir }, 'mounts remain below the host dir after unmounting');
}

/** Whether the engine API on `socketPath` answers `GET /_ping` (Podman's and Docker's APIs both have it). */
export function pingApi(socketPath: string): Promise<boolean> {
  return new Promise((resolvePing) => {
    const req = request({ socketPath, path: '/_ping', method: 'GET', timeout: 2000 }, (res) => {
      res.resume();
      resolvePing(res.statusCode === 200);
    });
    req.on('error', () => resolvePing(false));
    req.on('timeout', () => {
      req.destroy();
      resolvePing(false);
    });
    req.end();
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * The argv that runs `command` in a private mount namespace of its own where each bind's `source` is mounted
 * at its `target` (seen by nothing outside it). unshare and sh each exec the next, so the process is `command`'s.
 */
export function inPrivateMountNamespace(
  binds: ReadonlyArray<{ source: string; target: string }>,
  label: string,
  command: readonly string[],
): string[] {
  const mounts = binds.map((_, i) => `mount --bind -- "$${2 * i + 1}" "$${2 * i + 2}"`);
  const script = [...mounts, `shift ${2 * binds.length}`, 'exec "$@"'].join(' && ');
  return [
    'unshare',
    '--mount',
    '--propagation',
    'private',
    '--',
    'sh',
    '-c',
    script,
    label,
    ...binds.flatMap((b) => [b.source, b.target]),
    ...command,
  ];
}
