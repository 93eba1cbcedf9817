/**
 * What one benchmark run records: every raw measurement, so the JSON can be re-analysed without re-running.
 * All times are milliseconds of wall-clock time on this machine; sizes are the workload's random memory.
 */
export const STORE_KINDS = ['file', 'azure', 'gcs', 's3'] as const;
export type BenchStore = (typeof STORE_KINDS)[number];

/** The bare `podman container checkpoint --export` + `restore --import` pair on one host: the floor. */
export interface FloorSample {
  sizeMiB: number;
  rep: number;
  host: string;
  checkpointMs: number;
  restoreMs: number;
  /** longest gap between two counter ticks across the pair (checkpoint, rm, restore) */
  downtimeMs: number;
  continuous: boolean;
  archiveBytes: number;
}

/** A plain transfer of `bytes` random bytes to a store and back, file to file. */
export interface TransferSample {
  sizeMiB: number;
  rep: number;
  store: BenchStore;
  /** 'sdk': the cloud's SDK called directly; 'object-store': the same bytes through UMS's ObjectStore seam */
  via: 'sdk' | 'object-store';
  bytes: number;
  uploadMs: number;
  downloadMs: number;
}

/** Peak resident set size per process, sampled every RSS_SAMPLE_MS during one migration. */
export type RssPeaks = Record<string, number>;

/** What every migration the benchmark runs records, whatever it compares. */
export interface MigrationOutcome {
  sizeMiB: number;
  rep: number;
  source: string;
  destination: string;
  ok: boolean;
  error: string | undefined;
  /** from spawning `ums migrate` to its exit (includes the CLI's own start-up and NATS connect) */
  wallMs: number;
  /** the migration record's requested -> finished: what the targets use as "total" */
  totalMs: number;
  /** the record's freeze -> restored (clocks of two hosts; one clock here) */
  frozenMs: number;
  /** longest gap between two counter ticks, source then destination: the paper's downtime */
  downtimeMs: number;
  continuous: boolean;
  phases: Record<string, number>;
  archiveBytes: number;
}

export interface MigrationSample extends MigrationOutcome {
  store: BenchStore;
  /** MiB, max VmRSS seen per process (agent-<id>, bridge, function-<name>) */
  rssPeakMiB: RssPeaks;
  rssSamples: number;
}

/** The approaches that run here (orchestrator level needs a kubelet), in the order the report compares them. */
export const BENCH_APPROACHES = ['container', 'service'] as const;
export type BenchApproach = (typeof BENCH_APPROACHES)[number];

/** The launched images: one counter process, or five processes (two counters, their labelling shells, a parent shell). */
export const APPROACH_WORKLOADS = ['single', 'multi'] as const;
export type ApproachWorkload = (typeof APPROACH_WORKLOADS)[number];

/**
 * One migration of a launched image at a forced approach, through the file store (the approach is the
 * variable, not the store): the paper's comparison of container and service level.
 */
export interface ApproachSample extends MigrationOutcome {
  workload: ApproachWorkload;
  approach: BenchApproach;
  /** what the source's agent probed in the container (1 or 5), if it said; memory is the whole workload's */
  processCount: number | undefined;
  /** the first series that did not continue, if any ('count', 'a', 'b', 'a lines', 'b lines'); downtime is the first counter's */
  broken: string | undefined;
}

/** VmHWM of a process at the end of one size's work; the agents are restarted fresh at each size. */
export interface HighWaterSample {
  sizeMiB: number;
  process: string;
  vmHwmMiB: number;
}

export interface BenchOptions {
  sizes: number[];
  reps: number;
  stores: BenchStore[];
  viaObjectStore: boolean;
  /** sizes of the approach comparison (empty: none) */
  approachSizes: number[];
  out: string;
}

export interface BenchRun {
  startedAt: string;
  finishedAt: string;
  machine: { node: string; cpus: number; memGiB: number; kernel: string };
  options: BenchOptions;
  /** how peak RSS was taken, said in the report */
  rssMethod: string;
  floor: FloorSample[];
  transfers: TransferSample[];
  migrations: MigrationSample[];
  /** the approach comparison (absent from results written before it existed) */
  approaches: ApproachSample[];
  highWater: HighWaterSample[];
  /** anything that went wrong but did not stop the run (a failed migration, a broken count) */
  incidents: string[];
}
