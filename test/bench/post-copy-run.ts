import { readFile } from 'node:fs/promises';
import { createLogger } from '../../core/log.js';
import { killQuietly, PostCopyHosts, sleep, ticksOf, waitForLine, type Workload } from '../post-copy/lazy-migration.js';
import { formatRatio, formatSpread, ratio, seconds, spread } from './statistics.js';

/**
 * Post-copy against stop-and-copy for the same process, between the same two simulated hosts, in one run
 * (test/post-copy/lazy-migration.ts): CRIU's lazy pages with the page stream through the agents' relay
 * (agents/post-copy/page-relay.ts, TLS-PSK), against dumping every page, moving every image and restoring.
 * Both move images between directories of this machine, so the baseline's copy is a local disk copy: across
 * a real network the stop-and-copy freeze grows with memory / bandwidth, post-copy's does not.
 */
const log = createLogger('bench-post-copy');

/** The workload ticks every 10 ms and reads 16 random pages per tick, as a service serving requests would. */
const TICK_MS = 10;
/** No full check while it runs: the bench asks for one (SIGUSR1) once every page has arrived. */
const NEVER = 1_000_000;
/** Ticking this long before the move gives the rate it runs at undisturbed. */
const WARM_UP_MS = 1_500;

async function startWorkload(hosts: PostCopyHosts, mib: number): Promise<Workload> {
  const workload = await hosts.startWorkload({ mib, tickMs: TICK_MS, verifyEvery: NEVER });
  await sleep(WARM_UP_MS);
  return workload;
}

export interface PostCopySample {
  /** process: CRIU directly on a process tree; container: Podman's checkpoint and restore, made lazy by the runtime shim. */
  level: 'process' | 'container';
  mib: number;
  /** memory-beside: stop-and-copy with the memory read as CRIU writes it, beside Podman's export (container level). */
  mode: 'post-copy' | 'stop-and-copy' | 'memory-beside';
  rep: number;
  /** The workload's own freeze: its last tick before the dump began to its first tick after the restore. */
  frozenMs: number;
  /** The dump began to the restore returned. */
  restoreReturnedMs: number;
  /** post-copy: the dump began to the lazy-pages daemon's exit (every page arrived). */
  allPagesMs?: number;
  /** post-copy: bytes through the relay from the source (pages and CRIU's framing). */
  relayedBytes?: number;
  /** Bytes moved before the restore: the images (process level) or Podman's archive (container level). */
  imageBytes?: number;
  /** Ticks per second in the second before the freeze, and while pages were still arriving (post-copy). */
  ticksPerSecondBefore: number;
  ticksPerSecondWhileMoving?: number;
  /** The workload checked every page after all had arrived (stop-and-copy: after the restore). */
  verified: boolean;
}

export async function measurePostCopy(sizes: number[], reps: number): Promise<PostCopySample[]> {
  const hosts = await PostCopyHosts.create('bench-post-copy');
  const samples: PostCopySample[] = [];
  try {
    for (const mib of sizes) {
      for (let rep = 1; rep <= reps; rep++) {
        for (const mode of ['stop-and-copy', 'post-copy'] as const) {
          const sample = mode === 'post-copy' ? await lazyOnce(hosts, mib, rep) : await copyOnce(hosts, mib, rep);
          log.info(sample, 'post-copy sample');
          samples.push(sample);
        }
      }
    }
  } finally {
    await hosts.destroy();
  }
  return samples;
}

async function lazyOnce(hosts: PostCopyHosts, mib: number, rep: number): Promise<PostCopySample> {
  const workload = await startWorkload(hosts, mib);
  const run = await hosts.migrateLazily(workload);
  const daemonCode = await run.daemonExit;
  const allArrivedAt = Date.now();
  if (daemonCode !== 0) throw new Error(`the lazy-pages daemon exited ${daemonCode} at ${mib} MiB`);
  const outcome = await run.sourceRelay.outcome;
  if (outcome.kind !== 'complete') throw new Error(`the page stream ended ${outcome.kind}: ${'reason' in outcome ? outcome.reason : ''}`);
  await run.dumpExit;
  killQuietly(workload.pid);
  const verified = await verifyAfter(workload, run.restoredPid, allArrivedAt);
  const ticks = ticksOf(await readFile(workload.log, 'utf8'));
  killQuietly(run.restoredPid);
  return {
    level: 'process',
    mib,
    mode: 'post-copy',
    rep,
    ...freezeOf(ticks, run.frozenAt, run.restoredAt),
    allPagesMs: allArrivedAt - run.frozenAt,
    relayedBytes: outcome.bytesToPeer,
    ticksPerSecondWhileMoving: rate(ticks, run.restoredAt, allArrivedAt),
    verified,
  };
}

async function copyOnce(hosts: PostCopyHosts, mib: number, rep: number): Promise<PostCopySample> {
  const workload = await startWorkload(hosts, mib);
  const run = await hosts.migrateByCopy(workload);
  const verified = await verifyAfter(workload, run.restoredPid, run.restoredAt);
  const ticks = ticksOf(await readFile(workload.log, 'utf8'));
  killQuietly(run.restoredPid);
  return {
    level: 'process',
    mib,
    mode: 'stop-and-copy',
    rep,
    ...freezeOf(ticks, run.frozenAt, run.restoredAt),
    imageBytes: run.imageBytes,
    verified,
  };
}

/** Asks the restored copy to check every page and waits for its answer. */
async function verifyAfter(workload: Workload, pid: number, after: number): Promise<boolean> {
  process.kill(pid, 'SIGUSR1');
  const line = await waitForLine(
    workload.log,
    (text, at) => text.startsWith('verify') && at >= after,
    'the restored copy to check its memory',
  );
  return line.startsWith('verify ok');
}

function freezeOf(
  ticks: Array<{ tick: number; at: number }>,
  frozenAt: number,
  restoredAt: number,
): { frozenMs: number; restoreReturnedMs: number; ticksPerSecondBefore: number } {
  const before = ticks.filter((t) => t.at <= frozenAt).at(-1);
  const after = ticks.find((t) => t.at >= restoredAt);
  if (!before || !after) throw new Error('the workload did not tick on both sides of the migration');
  return {
    frozenMs: after.at - before.at,
    restoreReturnedMs: restoredAt - frozenAt,
    ticksPerSecondBefore: rate(ticks, frozenAt - 1000, frozenAt),
  };
}

export function rate(ticks: Array<{ at: number }>, from: number, to: number): number {
  const elapsed = (to - from) / 1000;
  return elapsed > 0 ? Math.round(ticks.filter((t) => t.at >= from && t.at < to).length / elapsed) : 0;
}

const LEVEL_INTRO: Record<PostCopySample['level'], string> = {
  process:
    "The same process (test/post-copy/paged-workload.py: ticks every 10 ms, reads 16 random pages per tick) moved between two simulated hosts on a WAN of their own by CRIU directly: lazily, its pages through the two agents' page relay over TLS-PSK (agents/post-copy/page-relay.ts), or by stop-and-copy (dump every page, copy every image, restore). Images move between directories of this machine, so the baseline pays a local disk copy only: a real network adds memory / bandwidth to its freeze and nothing to post-copy's.",
  container:
    "The same container (the counter image: random memory, ticks every 10 ms, checks its whole memory on SIGUSR1) moved between two simulated Podman hosts on a WAN of their own through Podman's own checkpoint export and restore import: lazily, made so by the runtime shim (agents/post-copy/runc-shim) with the pages through the agents' relays (agents/post-copy/lazy-container.ts); by stop-and-copy with every page in Podman's archive; or by stop-and-copy with the memory beside it (`memory-beside`: the page images read as CRIU writes them and sent ahead of the archive, agents/memory/page-images.ts). Both stop-and-copy rows stream the source's checkpoint straight into the destination's restore through the container-level driver (the product puts the object store between them); post-copy's small archive goes through a file.",
};

/** The report's section: per level, medians per size and mode, the freeze against stop-and-copy's, the target. */
export function postCopyReport(samples: PostCopySample[]): string {
  // Results written before container-level samples existed have no level: they are process level.
  const levelOf = (sample: PostCopySample) => sample.level ?? 'process';
  const levels = (['process', 'container'] as const).filter((level) => samples.some((s) => levelOf(s) === level));
  return levels
    .map((level) =>
      levelReport(
        level,
        samples.filter((s) => levelOf(s) === level),
      ),
    )
    .join('\n\n');
}

function levelReport(level: PostCopySample['level'], samples: PostCopySample[]): string {
  const sizes = [...new Set(samples.map((s) => s.mib))];
  const of = (mib: number, mode: PostCopySample['mode']) => samples.filter((s) => s.mib === mib && s.mode === mode);
  const spreadOf = (list: PostCopySample[], pick: (s: PostCopySample) => number | undefined) =>
    spread(list.map(pick).filter((v): v is number => v !== undefined));
  const mib = (bytes: number | undefined) => (bytes === undefined ? '-' : (bytes / 1024 / 1024).toFixed(1));
  const lines = [
    `## Post-copy (lazy pages through the agents' relay) against stop-and-copy, ${level} level`,
    '',
    `${LEVEL_INTRO[level]} Medians (min-max), seconds; MiB moved before the restore.`,
    '',
    '| size | mode | runs | frozen | frozen / stop-and-copy | MiB before restore | restore returned | all pages arrived | ticks/s before | ticks/s while pages arrive | memory checked after |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  const verdicts: string[] = [];
  for (const size of sizes) {
    const copyFrozen = spreadOf(of(size, 'stop-and-copy'), (s) => s.frozenMs)?.median;
    for (const mode of ['stop-and-copy', 'memory-beside', 'post-copy'] as const) {
      const list = of(size, mode);
      if (list.length === 0) continue;
      const frozen = spreadOf(list, (s) => s.frozenMs);
      const median = (pick: (s: PostCopySample) => number | undefined) => spreadOf(list, pick)?.median;
      lines.push(
        [
          `| ${size} MiB | ${mode} | ${list.length}`,
          formatSpread(frozen),
          formatRatio(ratio(frozen?.median, copyFrozen)),
          mib(median((s) => s.imageBytes)),
          formatSpread(spreadOf(list, (s) => s.restoreReturnedMs)),
          formatSpread(spreadOf(list, (s) => s.allPagesMs)),
          median((s) => s.ticksPerSecondBefore) ?? '-',
          median((s) => s.ticksPerSecondWhileMoving) ?? '-',
          `${list.filter((s) => s.verified).length}/${list.length} ok |`,
        ].join(' | '),
      );
      if (mode === 'post-copy' && frozen !== undefined) {
        const met = frozen.median <= 500 ? 'met' : '**missed**';
        verdicts.push(`| post-copy frozen <= 0.5 s | ${size} MiB | ${seconds(frozen.median)} s | 0.5 s | ${met} |`);
      }
    }
  }
  lines.push('', `| target (${level} level) | size | measured | limit | verdict |`, '|---|---|---|---|---|', ...verdicts);
  return lines.join('\n');
}
