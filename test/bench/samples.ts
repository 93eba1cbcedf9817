import type { PostCopySample } from './post-copy-run.js';
import type { SealingSample } from './sealing-cost.js';
import type { FrontmanSample } from './frontman-run.js';
import type { EvacuationSample } from './evacuation-run.js';
import type { VolumeSample } from './volume-run.js';
import type { HostEngine } from '../../cli/stack-info.js';
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

/** One move of the engine comparison: which engines it went between, and at which level. */
export interface EnginePair {
  from: Exclude<HostEngine, 'containerd'>;
  to: Exclude<HostEngine, 'containerd'>;
  approach: BenchApproach;
}

/**
 * The moves the engine comparison makes, in this order in each repetition (reversed in every other one).
 * Podman -> Podman is the baseline of its level; container level between engines is refused by the planner.
 */
export const ENGINE_PAIRS: readonly EnginePair[] = [
  { from: 'podman', to: 'podman', approach: 'container' },
  { from: 'docker', to: 'docker', approach: 'container' },
  { from: 'podman', to: 'podman', approach: 'service' },
  { from: 'podman', to: 'docker', approach: 'service' },
  { from: 'docker', to: 'podman', approach: 'service' },
];

export const isEngineBaseline = (pair: EnginePair): boolean => pair.from === 'podman' && pair.to === 'podman';

/** The launched single-process counter moved between hosts of the given engines at a forced level, through the file store. */
export interface EngineSample extends ApproachSample {
  sourceEngine: HostEngine;
  destinationEngine: HostEngine;
}

/** VmHWM of a process at the end of one size's work; the agents are restarted fresh at each size. */
export interface HighWaterSample {
  sizeMiB: number;
  process: string;
  vmHwmMiB: number;
}

/** Real servers the benchmark can move (localhost/ums/<server>:1, infra/images/build-server-images.ts). */
export const BENCH_SERVERS = ['redis'] as const;
export type BenchServer = (typeof BENCH_SERVERS)[number];

/** What a real server's move looked like to its clients and its data, for the floor and for a migration alike. */
export interface ServerCheck {
  server: BenchServer;
  /** MiB asked for: the server's used_memory is filled to at least this */
  sizeMiB: number;
  rep: number;
  /** INFO used_memory before the move, MiB */
  usedMemoryMiB: number;
  /** keys populated (DEBUG POPULATE, 1000-byte values) */
  populatedKeys: number;
  /**
   * Longest time between two successive acknowledged writes of the WAN client (redis-cli RPUSH every 10 ms
   * through the host's published port; reconnecting to the service's new address after a lost connection):
   * the outage as an outside client sees it.
   */
  clientGapMs: number;
  /** from the WAN client's last reply before the gap to its connection closing (none if it survived) */
  clientClosedAfterMs: number | undefined;
  clientClosedWith: string | undefined;
  /** every acknowledged write of the WAN client is in the restored server */
  noLostWrites: boolean;
  /** the in-container client's connection: the same CLIENT LIST id and address after, and its count went on */
  innerSameConnection: boolean;
  innerCountBefore: number;
  innerCountAfter: number;
  /** DBSIZE and the digest of every key but the clients' own, before and after: equal or the run fails */
  intact: boolean;
  keysBefore: number;
  keysAfter: number | undefined;
  digestBefore: string;
  digestAfter: string | undefined;
}

/** The bare Podman pair of the same server container on one host (with --tcp-established: it has a client inside). */
export interface ServerFloorSample extends ServerCheck {
  host: string;
  checkpointMs: number;
  restoreMs: number;
  archiveBytes: number;
}

/** One migration of a real server through the stack with the CLI; downtimeMs is the WAN client's gap. */
export interface ServerMigrationSample extends MigrationOutcome, ServerCheck {
  store: BenchStore;
}

export interface BenchOptions {
  sizes: number[];
  reps: number;
  stores: BenchStore[];
  viaObjectStore: boolean;
  /** sizes of the approach comparison (empty: none) */
  approachSizes: number[];
  /** real servers to move (empty: none) and the memory sizes they are filled to */
  servers: BenchServer[];
  serverSizes: number[];
  /** sizes of the post-copy comparison, process level (empty: none; absent from older results) */
  postCopySizes?: number[];
  /** volume sizes of the volume comparison (empty: none; absent from older results) */
  volumeSizes?: number[];
  /** memory webdis is filled to in the frontman comparison, and its load's rate (absent: none) */
  frontmanFill?: number[];
  frontmanRps?: number;
  /** sizes of the engine comparison (empty: none; absent from older results) */
  engineSizes?: number[];
  /** how many services each evacuation empties the host of, and their size (empty: none; absent from older results) */
  evacuationServices?: number[];
  evacuationMiB?: number;
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
  /** real servers: the bare pair on one host, and migrations through the stack (absent from older results) */
  serverFloor: ServerFloorSample[];
  serverMigrations: ServerMigrationSample[];
  /** the CPU cost of sealing the chunks, seal + open against a pass-through (absent from older results) */
  sealing?: SealingSample;
  /** post-copy against stop-and-copy of the same process, between two simulated hosts (absent from older results) */
  postCopy?: PostCopySample[];
  /** a container with a volume moved outside the freeze, in Podman's archive, and without (absent from older results) */
  volumes?: VolumeSample[];
  /** clients through a migration with and without the frontman (absent from older results) */
  frontman?: FrontmanSample[];
  /** the same workload moved between Podman and Docker hosts (absent from older results) */
  engines?: EngineSample[];
  /** hosts emptied by an eviction notice, against the notice window (absent from older results) */
  evacuation?: EvacuationSample[];
  /** anything that went wrong but did not stop the run (a failed migration, a broken count) */
  incidents: string[];
}
