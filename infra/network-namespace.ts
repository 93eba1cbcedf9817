import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readdir, stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import { createLogger } from '../core/log.js';

/**
 * Named network namespaces (`ip netns`, pinned at /run/netns/NAME) as the simulated hosts, the stack's WAN
 * and its clients use them. Everything here acts inside a named namespace; nothing changes the machine's
 * own network namespace.
 */
const execFileAsync = promisify(execFile);
const log = createLogger('network-namespace');

const NETNS_DIR = '/run/netns';

export interface CommandOutput {
  stdout: string;
  stderr: string;
}

export interface NetnsCommandOptions {
  /** Default 30 s. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export async function netnsExists(netns: string): Promise<boolean> {
  return stat(`${NETNS_DIR}/${netns}`).then(
    () => true,
    () => false,
  );
}

/** Names of the named network namespaces whose name is `exact` or starts with `prefix`. */
export async function listNetns(match: { exact: string; prefix: string }): Promise<string[]> {
  const names = await readdir(NETNS_DIR).catch(() => [] as string[]);
  return names.filter((n) => n === match.exact || n.startsWith(match.prefix)).sort();
}

/** Creates `netns` unless it exists (a restarted host finds its own again) and brings its loopback up. */
export async function ensureNetns(netns: string): Promise<void> {
  if (!(await netnsExists(netns))) await ip(['netns', 'add', netns]);
  // netavark needs loopback up for port forwarding to 127.0.0.1 inside the namespace.
  await ip(['-n', netns, 'link', 'set', 'lo', 'up']);
}

/**
 * Unpins `netns`. The kernel frees a namespace (and the veths in it) asynchronously, and only once no
 * process is left in it: callers that need a veth gone now delete it themselves first.
 */
export async function deleteNetns(netns: string): Promise<void> {
  await execFileAsync('ip', ['netns', 'delete', netns]).catch((error: Error) => {
    if (!/No such file|Cannot remove namespace file/.test(error.message)) {
      log.warn({ netns, err: error.message }, 'could not delete network namespace');
    }
  });
}

/** Kills (SIGKILL) every process living in `netns`; only for namespaces whose every process is ours. */
export async function killProcessesInNetns(netns: string): Promise<void> {
  if (!(await netnsExists(netns))) return;
  for (let round = 0; round < 5; round++) {
    const { stdout } = await execFileAsync('ip', ['netns', 'pids', netns]).catch(() => ({ stdout: '' }));
    const pids = stdout
      .split('\n')
      .map((p) => Number(p.trim()))
      .filter((p) => Number.isInteger(p) && p > 0 && p !== process.pid);
    if (pids.length === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  log.warn({ netns }, 'processes in the network namespace survive SIGKILL');
}

/** Runs `command args...` inside `netns`; rejects with its stderr on a non-zero exit. */
export async function execInNetns(
  netns: string,
  command: string,
  args: string[],
  options: NetnsCommandOptions = {},
): Promise<CommandOutput> {
  try {
    const { stdout, stderr } = await execFileAsync('ip', ['netns', 'exec', netns, command, ...args], {
      env: options.env ?? process.env,
      timeout: options.timeoutMs ?? 30_000,
      maxBuffer: 64 * 1024 * 1024,
    });
    return { stdout, stderr };
  } catch (error) {
    const e = error as { stderr?: string; message: string };
    throw new Error(`${command} ${args.join(' ')} in network namespace ${netns} failed: ${(e.stderr || e.message).trim()}`, {
      cause: error,
    });
  }
}

/** Starts `command args...` inside `netns` (`ip netns exec` execs it, so the child's pid is the command's). */
export function spawnInNetns(netns: string, command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
  return spawn('ip', ['netns', 'exec', netns, command, ...args], options);
}

/** Runs `ip ARGS...`; rejects saying which command failed and why. */
export async function ip(args: string[]): Promise<string> {
  try {
    return (await execFileAsync('ip', args)).stdout;
  } catch (error) {
    const e = error as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')} failed: ${(e.stderr || e.message).trim()}`, { cause: error });
  }
}
