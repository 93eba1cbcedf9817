import type { BenchRun, BenchStore, MigrationSample } from './samples.js';
import { ratio, spread, type Spread } from './statistics.js';

/**
 * Medians per size and store, ratios to the floor of the same run, and the targets. Ratios are of
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
      const phaseNames = [...new Set(ok.flatMap((m) => Object.keys(m.phases)))];
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
          phases: Object.fromEntries(phaseNames.map((name) => [name, spread(ok.flatMap((m) => (m.phases[name] === undefined ? [] : [m.phases[name] as number])))])),
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

const agentPeaks = (m: MigrationSample): number[] =>
  Object.entries(m.rssPeakMiB).filter(([name]) => name.startsWith('agent-')).map(([, mib]) => mib);

function maxOrUndefined(list: number[]): number | undefined {
  return list.length === 0 ? undefined : Math.max(...list);
}

/** The agents' peak at one size: the larger of the sampled VmRSS and the kernel's VmHWM. */
export function agentPeakMiB(size: SizeSummary): number | undefined {
  const hwm = Object.entries(size.highWater).filter(([name]) => name.startsWith('agent-')).map(([, mib]) => mib);
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
          checks.push({ what: 'file store: total <= 1.3 x (C + R)', sizeMiB: size.sizeMiB, store: m.store, value: m.totalRatio, limit: TARGETS.fileTotalVsFloor, unit: 'x', met: verdict(m.totalRatio, TARGETS.fileTotalVsFloor) });
          checks.push({ what: 'file store: downtime <= 1.2 x bare pair downtime', sizeMiB: size.sizeMiB, store: m.store, value: m.downtimeRatio, limit: TARGETS.fileDowntimeVsBare, unit: 'x', met: verdict(m.downtimeRatio, TARGETS.fileDowntimeVsBare) });
        } else {
          checks.push({ what: `${m.store}: total <= 1.2 x (C + max(U, D) + R)`, sizeMiB: size.sizeMiB, store: m.store, value: m.totalRatio, limit: TARGETS.cloudTotalVsFloorPlusTransfer, unit: 'x', met: verdict(m.totalRatio, TARGETS.cloudTotalVsFloorPlusTransfer) });
        }
      }
    }
    const rss = agentPeakMiB(size);
    checks.push({ what: 'agents: peak RSS <= 150 MiB', sizeMiB: size.sizeMiB, store: 'agents', value: rss, limit: TARGETS.agentRssMiB, unit: 'MiB', met: verdict(rss, TARGETS.agentRssMiB) });
  }
  return checks;
}
