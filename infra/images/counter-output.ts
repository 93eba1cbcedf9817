import { spawn } from 'node:child_process';

/**
 * Reading the counter workload's output (`count=N t=MS` per tick): how the demo, the tests and the
 * benchmark see that a migrated process kept its memory (the count goes on, never resets) and how long
 * it was frozen (the largest gap between two consecutive ticks, the paper's downtime measure).
 */
export interface Tick {
  count: number;
  /** ms since the epoch, from the container's clock */
  t: number;
}

const TICK = /^count=(\d+) t=(\d+)$/;

export function parseTicks(output: string): Tick[] {
  return output.split('\n').flatMap((line) => {
    const match = TICK.exec(line.trim());
    return match ? [{ count: Number(match[1]), t: Number(match[2]) }] : [];
  });
}

/** A tick of the multi-process workload (infra/images/counter/multi-counter.sh): `a lines=N count=M t=MS`. */
export interface LabelledTick extends Tick {
  /** the labelling shell's own line count: memory of another process than the counter's */
  lines: number;
}

/** The multi-counter's ticks, by label (one counter and one labelling shell per label). */
export function parseLabelledTicks(output: string): Record<string, LabelledTick[]> {
  const result: Record<string, LabelledTick[]> = {};
  for (const m of output.matchAll(/^(\w+) lines=(\d+) count=(\d+) t=(\d+)$/gm)) {
    (result[m[1] as string] ??= []).push({ lines: Number(m[2]), count: Number(m[3]), t: Number(m[4]) });
  }
  return result;
}

export interface Continuity {
  /** every tick is the previous one plus one */
  continuous: boolean;
  /** the first place where it was not, if any */
  break: { before: Tick; after: Tick } | undefined;
  /** the longest pause between two consecutive ticks, minus nothing: the freeze plus one tick interval */
  maxGapMs: number;
  maxGapAt: Tick | undefined;
}

/** Checks a sequence of ticks (possibly gathered from two hosts, in order) for resets and gaps. */
export function continuity(ticks: Tick[]): Continuity {
  let maxGapMs = 0;
  let maxGapAt: Tick | undefined;
  for (let i = 1; i < ticks.length; i++) {
    const before = ticks[i - 1] as Tick;
    const after = ticks[i] as Tick;
    if (after.count !== before.count + 1) return { continuous: false, break: { before, after }, maxGapMs, maxGapAt };
    if (after.t - before.t > maxGapMs) {
      maxGapMs = after.t - before.t;
      maxGapAt = after;
    }
  }
  return { continuous: true, break: undefined, maxGapMs, maxGapAt };
}

/** Joins the source's ticks and the destination's, dropping the destination's copy of the source's lines. */
export function joinTicks<T extends Tick>(source: T[], destination: T[]): T[] {
  const last = source.at(-1)?.count ?? 0;
  return [...source, ...destination.filter((tick) => tick.count > last)];
}

export interface LogFollower<T = Tick> {
  /** What the parser made of the lines so far (the ticks, by default). */
  ticks: T[];
  /** Settles when the container stops (its log stream ends), e.g. when it is checkpointed. */
  ended: Promise<void>;
  stop(): void;
}

/** Where a container's log is read: a Podman host's URL, or a Docker host's socket URL. */
export type LogSource = string | { docker: string };

function logsCommand(source: LogSource, container: string, follow: boolean): [string, string[]] {
  const flags = follow ? ['-f', container] : [container];
  return typeof source === 'string' ? ['podman', ['--url', source, 'logs', ...flags]] : ['docker', ['-H', source.docker, 'logs', ...flags]];
}

/**
 * Follows a container's stdout (`podman logs -f`, `docker logs -f`) until the container stops. `parse` reads
 * each batch of complete lines (without the last newline); by default the counter's ticks.
 */
export function followTicks(source: LogSource, container: string): LogFollower<Tick>;
export function followTicks<T>(source: LogSource, container: string, parse: (lines: string) => T[]): LogFollower<T>;
export function followTicks(source: LogSource, container: string, parse: (lines: string) => unknown[] = parseTicks): LogFollower<unknown> {
  const [command, args] = logsCommand(source, container, true);
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'ignore'] });
  const ticks: unknown[] = [];
  let partial = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop() ?? '';
    if (lines.length > 0) ticks.push(...parse(lines.join('\n')));
  });
  const ended = new Promise<void>((resolve) => child.once('close', () => resolve()));
  return { ticks, ended, stop: () => child.kill('SIGTERM') };
}

export async function readTicks(source: LogSource, container: string): Promise<Tick[]> {
  const [command, args] = logsCommand(source, container, false);
  const output = await new Promise<string>((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${command} logs ${container} failed: ${err.trim()}`))));
  });
  return parseTicks(output);
}
