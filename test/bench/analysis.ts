import {
  APPROACH_WORKLOADS,
  BENCH_APPROACHES,
  ENGINE_PAIRS,
  type ApproachSample,
  type EnginePair,
  type EngineSample,
  type MigrationOutcome,
  type BenchServer,
  type ServerCheck,
  type ApproachWorkload,
  type BenchApproach,
  type BenchRun,
  type BenchStore,
  type MigrationSample,
} from './samples.js';
import { ratio, spread, type Spread } from './statistics.js';

/**
 * Medians per size and store, ratios to the floor of the same run, and the issue's targets. Ratios are of
 * medians (median total / (median C + median R)), never of single pairs: reps are not paired in time.
 */
export const TARGET_SIZES_MIB = { from: 128, to: 1024 } as const;
export const TARGETS = {
  fileTotalVsFloor: 1.3,
  fileDowntimeVsBare: 1.2,
  cloudTotalVsFloorPlusTransfer: 1.2,
  agentRssMiB: 150,
} as const;

export interface FloorSummary {
  checkpoint: Spread | undefined;
  restore: Spread | undefined;
  /** C + R per repetition */
  pair: Spread | undefined;
  downtime: Spread | undefined;
  archiveBytes: number;
}

export interface TransferSummary {
  upload: Spread | undefined;
  download: Spread | undefined;
  /** max(U, D) per repetition */
  slower: Spread | undefined;
}

export interface MigrationSummary {
  store: BenchStore;
  route: string;
  ok: number;
  failed: number;
  total: Spread | undefined;
  wall: Spread | undefined;
  downtime: Spread | undefined;
  frozen: Spread | undefined;
  phases: Record<string, Spread | undefined>;
  /** MiB: the largest VmRSS any agent reached during these migrations */
  agentRssPeakMiB: number | undefined;
  /** the floor this store's total is judged against: C + R (file) or C + max(U, D) + R (clouds), medians */
  floorMs: number | undefined;
  totalRatio: number | undefined;
  downtimeRatio: number | undefined;
  continuityBroken: number;
}

export interface SizeSummary {
  sizeMiB: number;
  floor: FloorSummary;
  sdk: Partial<Record<BenchStore, TransferSummary>>;
  objectStore: Partial<Record<BenchStore, TransferSummary>>;
  migrations: MigrationSummary[];
  /** MiB, VmHWM per process at the end of this size (agents started fresh for it) */
  highWater: Record<string, number>;
}

export interface TargetCheck {
  what: string;
  sizeMiB: number;
  store: BenchStore | 'agents';
  value: number | undefined;
  limit: number;
  unit: 'x' | 'MiB';
  met: boolean | undefined;
}

const values = <T>(items: T[], pick: (item: T) => number): Spread | undefined => spread(items.map(pick));

export function summarise(run: BenchRun): SizeSummary[] {
  return run.options.sizes.map((sizeMiB) => {
    const floorSamples = run.floor.filter((s) => s.sizeMiB === sizeMiB);
    const floor: FloorSummary = {
      checkpoint: values(floorSamples, (s) => s.checkpointMs),
      restore: values(floorSamples, (s) => s.restoreMs),
      pair: values(floorSamples, (s) => s.checkpointMs + s.restoreMs),
      downtime: values(floorSamples, (s) => s.downtimeMs),
      archiveBytes: spread(floorSamples.map((s) => s.archiveBytes))?.median ?? 0,
    };
    const transfers = (via: 'sdk' | 'object-store') =>
      Object.fromEntries(
        run.options.stores.flatMap((store) => {
          const samples = run.transfers.filter((t) => t.sizeMiB === sizeMiB && t.store === store && t.via === via);
          if (samples.length === 0) return [];
          const summary: TransferSummary = {
            upload: values(samples, (t) => t.uploadMs),
            download: values(samples, (t) => t.downloadMs),
            slower: values(samples, (t) => Math.max(t.uploadMs, t.downloadMs)),
          };
          return [[store, summary]];
        }),
      ) as Partial<Record<BenchStore, TransferSummary>>;
    const sdk = transfers('sdk');
    const migrations = run.options.stores.flatMap((store): MigrationSummary[] => {
      const all = run.migrations.filter((m) => m.sizeMiB === sizeMiB && m.store === store);
      if (all.length === 0) return [];
      const ok = all.filter((m) => m.ok);
      const total = values(ok, (m) => m.totalMs);
      const downtime = values(ok, (m) => m.downtimeMs);
      const c = floor.checkpoint?.median;
      const r = floor.restore?.median;
      const slower = sdk[store]?.slower?.median;
      const floorMs =
        c === undefined || r === undefined ? undefined : store === 'file' ? c + r : slower === undefined ? undefined : c + slower + r;
      return [
        {
          store,
          route: `${all[0]?.source} -> ${all[0]?.destination}`,
          ok: ok.length,
          failed: all.length - ok.length,
          total,
          wall: values(ok, (m) => m.wallMs),
          downtime,
          frozen: values(ok, (m) => m.frozenMs),
          phases: phaseSpreads(ok),
          agentRssPeakMiB: maxOrUndefined(all.flatMap((m) => agentPeaks(m))),
          floorMs,
          totalRatio: ratio(total?.median, floorMs),
          downtimeRatio: ratio(downtime?.median, floor.downtime?.median),
          continuityBroken: ok.filter((m) => !m.continuous).length,
        },
      ];
    });
    const highWater = Object.fromEntries(run.highWater.filter((h) => h.sizeMiB === sizeMiB).map((h) => [h.process, h.vmHwmMiB]));
    return { sizeMiB, floor, sdk, objectStore: transfers('object-store'), migrations, highWater };
  });
}

/** Each phase the records of these migrations report, over the migrations that report it. */
function phaseSpreads(ok: MigrationOutcome[]): Record<string, Spread | undefined> {
  const names = [...new Set(ok.flatMap((m) => Object.keys(m.phases)))];
  return Object.fromEntries(names.map((name) => [name, spread(ok.flatMap((m) => (m.phases[name] === undefined ? [] : [m.phases[name]])))]));
}

const agentPeaks = (m: MigrationSample): number[] =>
  Object.entries(m.rssPeakMiB)
    .filter(([name]) => name.startsWith('agent-'))
    .map(([, mib]) => mib);

function maxOrUndefined(list: number[]): number | undefined {
  return list.length === 0 ? undefined : Math.max(...list);
}

/** The agents' peak at one size: the larger of the sampled VmRSS and the kernel's VmHWM. */
export function agentPeakMiB(size: SizeSummary): number | undefined {
  const hwm = Object.entries(size.highWater)
    .filter(([name]) => name.startsWith('agent-'))
    .map(([, mib]) => mib);
  return maxOrUndefined([...hwm, ...size.migrations.flatMap((m) => (m.agentRssPeakMiB === undefined ? [] : [m.agentRssPeakMiB]))]);
}

export function checkTargets(sizes: SizeSummary[]): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const verdict = (value: number | undefined, limit: number) => (value === undefined ? undefined : value <= limit);
  for (const size of sizes) {
    const inRange = size.sizeMiB >= TARGET_SIZES_MIB.from && size.sizeMiB <= TARGET_SIZES_MIB.to;
    if (inRange) {
      for (const m of size.migrations) {
        if (m.store === 'file') {
          checks.push({
            what: 'file store: total <= 1.3 x (C + R)',
            sizeMiB: size.sizeMiB,
            store: m.store,
            value: m.totalRatio,
            limit: TARGETS.fileTotalVsFloor,
            unit: 'x',
            met: verdict(m.totalRatio, TARGETS.fileTotalVsFloor),
          });
          checks.push({
            what: 'file store: downtime <= 1.2 x bare pair downtime',
            sizeMiB: size.sizeMiB,
            store: m.store,
            value: m.downtimeRatio,
            limit: TARGETS.fileDowntimeVsBare,
            unit: 'x',
            met: verdict(m.downtimeRatio, TARGETS.fileDowntimeVsBare),
          });
        } else {
          checks.push({
            what: `${m.store}: total <= 1.2 x (C + max(U, D) + R)`,
            sizeMiB: size.sizeMiB,
            store: m.store,
            value: m.totalRatio,
            limit: TARGETS.cloudTotalVsFloorPlusTransfer,
            unit: 'x',
            met: verdict(m.totalRatio, TARGETS.cloudTotalVsFloorPlusTransfer),
          });
        }
      }
    }
    const rss = agentPeakMiB(size);
    checks.push({
      what: 'agents: peak RSS <= 150 MiB',
      sizeMiB: size.sizeMiB,
      store: 'agents',
      value: rss,
      limit: TARGETS.agentRssMiB,
      unit: 'MiB',
      met: verdict(rss, TARGETS.agentRssMiB),
    });
  }
  return checks;
}

/** One approach's migrations of one workload at one size: medians over the ones that ended `done`. */
export interface ApproachStats {
  ok: number;
  failed: number;
  continuityBroken: number;
  total: Spread | undefined;
  frozen: Spread | undefined;
  downtime: Spread | undefined;
  archiveBytes: number | undefined;
  /** the most processes the source's agent reported for the container */
  processCount: number | undefined;
}

/** Service level against container level (the baseline, measured in the same run), per workload and size. */
export interface ApproachComparison {
  workload: ApproachWorkload;
  sizeMiB: number;
  stats: Record<BenchApproach, ApproachStats>;
  /** service / container, of medians; below 1 service level is faster */
  totalRatio: number | undefined;
  frozenRatio: number | undefined;
  downtimeRatio: number | undefined;
}

export function approachStats(samples: ApproachSample[]): ApproachStats {
  const ok = samples.filter((s) => s.ok);
  return {
    ok: ok.length,
    failed: samples.length - ok.length,
    continuityBroken: ok.filter((s) => !s.continuous).length,
    total: values(ok, (s) => s.totalMs),
    frozen: values(ok, (s) => s.frozenMs),
    downtime: values(ok, (s) => s.downtimeMs),
    archiveBytes: spread(ok.map((s) => s.archiveBytes))?.median,
    // A probe cached from the container's first instants can count fewer processes than it settles at.
    processCount: maxOrUndefined(samples.flatMap((s) => (s.processCount === undefined ? [] : [s.processCount]))),
  };
}

export function summariseApproaches(run: BenchRun): ApproachComparison[] {
  return APPROACH_WORKLOADS.flatMap((workload) =>
    run.options.approachSizes.flatMap((sizeMiB): ApproachComparison[] => {
      const samples = run.approaches.filter((s) => s.workload === workload && s.sizeMiB === sizeMiB);
      if (samples.length === 0) return [];
      const stats = Object.fromEntries(
        BENCH_APPROACHES.map((approach) => [approach, approachStats(samples.filter((s) => s.approach === approach))]),
      ) as Record<BenchApproach, ApproachStats>;
      const versus = (pick: (a: ApproachStats) => Spread | undefined) => ratio(pick(stats.service)?.median, pick(stats.container)?.median);
      return [
        {
          workload,
          sizeMiB,
          stats,
          totalRatio: versus((a) => a.total),
          frozenRatio: versus((a) => a.frozen),
          downtimeRatio: versus((a) => a.downtime),
        },
      ];
    }),
  );
}

/** One move of the engine comparison at one size, against the Podman -> Podman move of the same level and size. */
export interface EngineComparison extends EnginePair {
  sizeMiB: number;
  stats: ApproachStats;
  phases: Record<string, Spread | undefined>;
  /** this move / the baseline, of medians (1 for the baseline itself) */
  frozenRatio: number | undefined;
  totalRatio: number | undefined;
  archiveRatio: number | undefined;
}

const samePair = (s: EngineSample, pair: EnginePair): boolean =>
  s.sourceEngine === pair.from && s.destinationEngine === pair.to && s.approach === pair.approach;

export function summariseEngines(samples: EngineSample[], sizes: number[]): EngineComparison[] {
  return sizes.flatMap((sizeMiB) => {
    const at = samples.filter((s) => s.sizeMiB === sizeMiB);
    const statsOf = (pair: EnginePair) => approachStats(at.filter((s) => samePair(s, pair)));
    return ENGINE_PAIRS.flatMap((pair): EngineComparison[] => {
      const moves = at.filter((s) => samePair(s, pair));
      if (moves.length === 0) return [];
      const stats = statsOf(pair);
      const baseline = statsOf({ from: 'podman', to: 'podman', approach: pair.approach });
      const versus = (pick: (a: ApproachStats) => number | undefined) => ratio(pick(stats), pick(baseline));
      return [
        {
          ...pair,
          sizeMiB,
          stats,
          phases: phaseSpreads(moves.filter((s) => s.ok)),
          frozenRatio: versus((a) => a.frozen?.median),
          totalRatio: versus((a) => a.total?.median),
          archiveRatio: versus((a) => a.archiveBytes),
        },
      ];
    });
  });
}

/** Within 5 % of each other, two medians of two or three repetitions on a shared machine are a tie. */
export const APPROACH_TIE = 0.05;

/** What the paper found: service level fastest for single-process services, container level for multi-process. */
export const PAPER_WINNER: Record<ApproachWorkload, BenchApproach> = { single: 'service', multi: 'container' };

const winnerOf = (r: number): BenchApproach | 'tie' => (r < 1 - APPROACH_TIE ? 'service' : r > 1 + APPROACH_TIE ? 'container' : 'tie');

/** Sizes in MiB as "0, 64 and 256 MiB". */
function sizeList(sizes: number[]): string {
  const names = sizes.map(String);
  return `${names.length > 1 ? `${names.slice(0, -1).join(', ')} and ${names.at(-1)}` : (names[0] ?? '')} MiB`;
}

const ratioRange = (ratios: number[]): string => {
  const low = Math.min(...ratios);
  const high = Math.max(...ratios);
  return low === high ? `${low.toFixed(2)}x` : `${low.toFixed(2)}x-${high.toFixed(2)}x`;
};

/**
 * Which approach wins where, in total time (the paper's measure) and in downtime, and whether that agrees
 * with the paper; one paragraph per workload. Ratios are service / container.
 */
export function approachFindings(comparisons: ApproachComparison[]): string[] {
  const label: Record<ApproachWorkload, string> = { single: 'Single process', multi: 'Five processes' };
  return APPROACH_WORKLOADS.flatMap((workload) => {
    const rows = comparisons.filter((c) => c.workload === workload);
    const judged = (pick: (c: ApproachComparison) => number | undefined) =>
      rows.flatMap((c) => {
        const r = pick(c);
        return r === undefined ? [] : [{ sizeMiB: c.sizeMiB, r, winner: winnerOf(r) }];
      });
    const total = judged((c) => c.totalRatio);
    if (total.length === 0) return [];
    const describe = (items: Array<{ sizeMiB: number; r: number; winner: BenchApproach | 'tie' }>, measure: string): string => {
      const parts = (['service', 'container', 'tie'] as const).flatMap((winner) => {
        const at = items.filter((i) => i.winner === winner);
        if (at.length === 0) return [];
        const what = winner === 'tie' ? 'even with container level' : winner === 'service' ? 'shorter' : 'longer';
        return [`${what} at ${sizeList(at.map((i) => i.sizeMiB))} (${ratioRange(at.map((i) => i.r))})`];
      });
      return `service level's ${measure} is ${parts.join(', ')}`;
    };
    const downtime = judged((c) => c.downtimeRatio);
    const expected = PAPER_WINNER[workload];
    const agree = total.filter((t) => t.winner === expected);
    const against = total.filter((t) => t.winner !== expected && t.winner !== 'tie');
    const paper =
      agree.length === total.length
        ? `as in the paper, ${expected} level is faster here at every size measured`
        : agree.length === 0 && against.length === total.length
          ? `unlike the paper, ${expected === 'service' ? 'container' : 'service'} level is faster here at every size measured`
          : agree.length === 0
            ? `the paper found ${expected} level faster; here neither is clearly faster at ${sizeList(total.filter((t) => t.winner === 'tie').map((t) => t.sizeMiB))}` +
              (against.length > 0
                ? ` and ${expected === 'service' ? 'container' : 'service'} level is faster at ${sizeList(against.map((t) => t.sizeMiB))}`
                : '')
            : `the paper's finding (${expected} level faster) holds here at ${sizeList(agree.map((t) => t.sizeMiB))} only`;
    return [
      `${label[workload]}: ${describe(total, 'total time')}` +
        (downtime.length > 0 ? `; ${describe(downtime, 'downtime')}` : '') +
        `. In total time, ${paper}.`,
    ];
  });
}

/** A real server at one size: the bare pair and the migrations, medians over the moves that ended `done`. */
export interface ServerSummary {
  server: BenchServer;
  sizeMiB: number;
  usedMemoryMiB: number | undefined;
  populatedKeys: number | undefined;
  archiveBytes: number | undefined;
  floor: {
    n: number;
    checkpoint: Spread | undefined;
    restore: Spread | undefined;
    pair: Spread | undefined;
    clientGap: Spread | undefined;
    checks: string;
  };
  route: string | undefined;
  ok: number;
  failed: number;
  total: Spread | undefined;
  frozen: Spread | undefined;
  clientGap: Spread | undefined;
  wall: Spread | undefined;
  /** from the WAN client's last reply to its connection being reset at the source */
  clientClosedAfter: Spread | undefined;
  checks: string;
  /** migration / floor, of medians: total and frozen against C + R, the client's gap against the bare pair's */
  totalRatio: number | undefined;
  frozenRatio: number | undefined;
  clientGapRatio: number | undefined;
}

/** "2/2 intact, 2/2 same inner connection, 2/2 no lost write" over the moves that were checked. */
function checksOf(samples: ServerCheck[]): string {
  const of = (pick: (s: ServerCheck) => boolean) => `${samples.filter(pick).length}/${samples.length}`;
  return `${of((s) => s.intact)} intact, ${of((s) => s.innerSameConnection)} same inner connection, ${of((s) => s.noLostWrites)} no lost write`;
}

export function summariseServers(run: BenchRun): ServerSummary[] {
  return run.options.servers.flatMap((server) =>
    run.options.serverSizes.flatMap((sizeMiB): ServerSummary[] => {
      const floor = run.serverFloor.filter((s) => s.server === server && s.sizeMiB === sizeMiB);
      const all = run.serverMigrations.filter((s) => s.server === server && s.sizeMiB === sizeMiB);
      if (floor.length === 0 && all.length === 0) return [];
      const ok = all.filter((s) => s.ok);
      const pair = values(floor, (s) => s.checkpointMs + s.restoreMs);
      const floorGap = values(floor, (s) => s.clientGapMs);
      const total = values(ok, (s) => s.totalMs);
      const frozen = values(ok, (s) => s.frozenMs);
      const clientGap = values(ok, (s) => s.clientGapMs);
      const both = [...floor, ...all];
      return [
        {
          server,
          sizeMiB,
          usedMemoryMiB: spread(both.map((s) => s.usedMemoryMiB))?.median,
          populatedKeys: spread(both.map((s) => s.populatedKeys))?.median,
          archiveBytes: spread([...floor.map((s) => s.archiveBytes), ...ok.map((s) => s.archiveBytes)])?.median,
          floor: {
            n: floor.length,
            checkpoint: values(floor, (s) => s.checkpointMs),
            restore: values(floor, (s) => s.restoreMs),
            pair,
            clientGap: floorGap,
            checks: checksOf(floor),
          },
          route: all[0] === undefined ? undefined : `${all[0].source} -> ${all[0].destination}`,
          ok: ok.length,
          failed: all.length - ok.length,
          total,
          frozen,
          clientGap,
          wall: values(ok, (s) => s.wallMs),
          clientClosedAfter: spread(ok.flatMap((s) => (s.clientClosedAfterMs === undefined ? [] : [s.clientClosedAfterMs]))),
          checks: checksOf(ok),
          totalRatio: ratio(total?.median, pair?.median),
          frozenRatio: ratio(frozen?.median, pair?.median),
          clientGapRatio: ratio(clientGap?.median, floorGap?.median),
        },
      ];
    }),
  );
}
