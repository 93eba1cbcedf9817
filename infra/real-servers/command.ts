import { execFile } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { PodmanHost } from '../podman-host.js';

/**
 * How the real servers' clients (redis-client.ts, memcached-client.ts) run their programs: host programs,
 * alone or in a container's network namespace (nsenter -n: not in the container's process tree), and how
 * they wait for what the servers say.
 */
const execFileAsync = promisify(execFile);

export interface RunOptions {
  /** written to the program's stdin, which is then closed (closed at once without it) */
  input?: string;
  timeoutMs?: number;
}

/** Runs a program and returns its stdout; rejects with the command and its stderr on a non-zero exit. */
export async function run(command: string, args: string[], { input, timeoutMs = 60_000 }: RunOptions = {}): Promise<string> {
  const pending = execFileAsync(command, args, { maxBuffer: 64 * 1024 * 1024, timeout: timeoutMs });
  // A program that exits without reading its input (an error, a refused connection, or no input wanted)
  // must not crash the caller with EPIPE: its exit status and stderr say what happened.
  pending.child.stdin?.on('error', () => undefined);
  pending.child.stdin?.end(input ?? '');
  try {
    return (await pending).stdout;
  } catch (error) {
    const e = error as { stderr?: string; message: string };
    throw new Error(`${command} ${args.join(' ').slice(0, 200)} failed: ${(e.stderr ?? e.message).trim()}`, { cause: error });
  }
}

/** Runs a host program in the network namespace of process `pid` (a container's init), nothing else. */
export function inNetns(pid: number, args: string[], options?: RunOptions): Promise<string> {
  return run('nsenter', ['-t', String(pid), '-n', '--', ...args], options);
}

/** The container's init pid, from its host's Podman. */
export async function containerPid(host: PodmanHost, name: string): Promise<number> {
  const pid = Number((await host.podman(['inspect', '--format', '{{.State.Pid}}', name])).stdout.trim());
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`${name} on ${host.name} is not running (pid ${pid})`);
  return pid;
}

/**
 * Polls `check` every 100 ms until it holds; a check that throws counts as not yet (its last error is the
 * timeout's cause). `what` names the condition in the timeout's message (a function: read at the timeout).
 */
export async function waitFor(check: () => boolean | Promise<boolean>, what: string | (() => string), timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${typeof what === 'string' ? what : what()}`, { cause: last });
    await sleep(100);
  }
}
