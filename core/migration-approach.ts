import { z } from 'zod';
import { ContainerNetwork } from './container-network.js';
import { ContainerSecurityProfile } from './container-security.js';

/**
 * Which of the three migration approaches of the UMS research (GLOBECOM 2023) moves a container, decided
 * from what each end can do and what the container is like. The approaches differ by the authority the user
 * has over the machinery:
 *
 * - orchestrator: Kubernetes' machinery does it. The node's runtime (containerd >= 2.0 or CRI-O) freezes-and-dumps
 *   the container with CRIU through the CRI call the kubelet's checkpoint API makes, and restores it into a new
 *   pod from that archive; the node's agent drives the CRI as the kubelet would (agents/orchestrator-level.ts,
 *   agents/cri/). Needs it at both ends.
 * - container: our host agents with the host's engine (Podman + CRIU) do it. Needs it at both ends.
 * - service: the service's own image carries a launcher + CRIU that runs as the container's entrypoint and
 *   checkpoints its child from inside; the destination only starts a plain container from the same image and
 *   the launcher there restores. Needs the launcher in the source container; any engine at the destination.
 *
 * The paper found service level fastest for single-process services and container level better for
 * multi-process ones. Our own measurements (COST_MODEL, from `npm run bench`) agree for one process and not
 * for five: the in-image CRIU showed no per-process cost, so where the launcher runs, service level is
 * cheaper whatever the process count. Service level moves the process tree only (files written into the
 * container's filesystem stay behind; state belongs in memory or volumes), which is why it is offered only
 * for images built with the launcher: building with it is the owner's consent to that.
 *
 * Decision table (first matching feasibility, then the cheapest feasible estimate; `requested` overrides
 * the choice but never feasibility):
 *
 * | # | container level both ends | launcher in source container | orchestrator both ends | processes / memory | chosen |
 * |---|---|---|---|---|---|
 * | 1 | yes | no  | no  | any                        | container |
 * | 2 | yes | yes | any | 1 process, any memory      | service (measured: 0.25-0.7x container level's downtime) |
 * | 3 | yes | yes | any | >= 2 processes             | service (measured at 5 processes: no per-process cost) |
 * | 4 | yes | no, but the container is multi-process | any | any | container |
 * | 5 | no  | yes | no  | any                        | service (the only one left) |
 * | 6 | no  | yes | yes | any                        | service (orchestrator adds an image build and a registry round trip) |
 * | 7 | no  | no  | yes | any                        | orchestrator |
 * | 8 | yes | no  | yes | any                        | container (orchestrator's image build + registry round trip cost more) |
 * | 9 | no  | no  | no  | any                        | refused: nothing feasible, with each approach's reason |
 * | 10 | destination cannot run a plain container, or lacks the image | | | | container and service infeasible; orchestrator if both ends have it |
 * | 11 | `requested` feasible | | | | requested, even if another is cheaper |
 * | 12 | `requested` infeasible | | | | refused with that approach's reason (no silent fallback) |
 *
 * "Container level both ends" also needs the two ends to run the same engine kind (Podman or Docker), the
 * same architecture and a destination CRIU no older than the source's (hostMismatch); otherwise the row
 * reads "no", and a launched service goes at service level between them.
 *
 * Ties in the estimate go to container, then service, then orchestrator (container level is the path the
 * rest of UMS exercises most).
 */

export const MigrationApproach = z.enum(['orchestrator', 'container', 'service']);
export type MigrationApproach = z.infer<typeof MigrationApproach>;

const reason = z.string().min(1).max(2000);

/** Container level: the host's engine answers and its checkpoint/restore (CRIU) works. */
export const ContainerLevelCapability = z.object({
  available: z.boolean(),
  /** Why not, when not available (what failed and what to do). */
  reason: reason.optional(),
  /** e.g. "podman 4.3.1 (runc 1.1.4)" */
  engine: z.string().optional(),
  /** Which engine: a container-level checkpoint restores only into the engine kind that made it. */
  engineKind: z.enum(['podman', 'docker', 'cri']).optional(),
  criuVersion: z.string().optional(),
  /**
   * Whether this host's CRIU dumped and restored a process holding TCP sockets (listening and established)
   * when probed: `criu check` passes where every dump of a server fails (CRIU < 4.2 on Linux >= 6.16).
   */
  sockets: z.object({ available: z.boolean(), reason: reason.optional() }).optional(),
  /** The machine architecture (uname -m): a checkpoint restores only on the same. */
  arch: z.string().max(32).optional(),
  /** This host's `criu cpuinfo dump` image, base64: a destination checks it can run what was started here. */
  cpuinfo: z.base64().max(8192).optional(),
});
export type ContainerLevelCapability = z.infer<typeof ContainerLevelCapability>;

/** Orchestrator level: a kubelet whose checkpoint API is enabled and that lets this agent use it. */
export const OrchestratorLevelCapability = z.object({
  available: z.boolean(),
  reason: reason.optional(),
  /** https://<node>:10250, without credentials. */
  kubeletUrl: z.url().optional(),
  nodeName: z.string().optional(),
  /** The node's container runtime when known, e.g. "cri-o://1.30.4"; restore needs CRI-O. */
  runtime: z.string().optional(),
});
export type OrchestratorLevelCapability = z.infer<typeof OrchestratorLevelCapability>;

/** Whether the host can start a plain container at all (what service level needs at the destination). */
export const PlainContainerCapability = z.object({
  available: z.boolean(),
  reason: reason.optional(),
});
export type PlainContainerCapability = z.infer<typeof PlainContainerCapability>;

/**
 * Whether the host can take part in a post-copy migration (core/migration-mode.ts): the runtime shim is
 * Podman's runc, CRIU has lazy pages, pipes may be large, and the agent has a page relay address.
 */
export const PostCopyCapability = z.object({
  available: z.boolean(),
  reason: reason.optional(),
});
export type PostCopyCapability = z.infer<typeof PostCopyCapability>;

/**
 * Whether a container-level stop-and-copy can send the memory beside Podman's export (agents/memory/): the
 * runtime shim is Podman's runc. Both hosts need it: the source reads the pages as CRIU writes them and
 * leaves them out of the export, the destination puts them back before runc restores.
 */
export const MemoryBesideCapability = z.object({
  available: z.boolean(),
  reason: reason.optional(),
});
export type MemoryBesideCapability = z.infer<typeof MemoryBesideCapability>;

/** What an agent reports about its host (per host; service level is per container, see ContainerTraits). */
export const HostCapabilities = z.object({
  containerLevel: ContainerLevelCapability,
  orchestratorLevel: OrchestratorLevelCapability,
  plainContainers: PlainContainerCapability,
  /** Absent in registrations of agents older than post-copy. */
  postCopy: PostCopyCapability.optional(),
  /** Absent in registrations of agents older than it: the memory goes in the export. */
  memoryBeside: MemoryBesideCapability.optional(),
  probedAt: z.iso.datetime({ offset: true }).optional(),
});
export type HostCapabilities = z.infer<typeof HostCapabilities>;

/** The in-image launcher of service level, as its control socket reports it. */
export const LauncherCapability = z.object({
  available: z.boolean(),
  version: z.string().optional(),
  reason: reason.optional(),
});
export type LauncherCapability = z.infer<typeof LauncherCapability>;

/** Per container: what the cost model needs, and whether it runs the launcher. */
export const ContainerTraits = z.object({
  processCount: z.number().int().positive().optional(),
  /** Resident memory of the container's processes (VmRSS summed, or the launcher's count): what CRIU dumps. */
  memoryBytes: z.number().int().nonnegative().optional(),
  /** What the container wrote into its own filesystem (the engine's writable layer): it goes in the archive too. */
  rootfsChangesBytes: z.number().int().nonnegative().optional(),
  launcher: LauncherCapability.optional(),
  /**
   * The container's volumes (container level): each one's size on disk, and whether they move outside the
   * freeze (copied while it runs, only what changed moves frozen: agents/volumes/) or in the archive, and why.
   */
  volumes: z
    .object({
      outsideFreeze: z.boolean(),
      reason: reason.optional(),
      list: z
        .array(
          z.object({
            name: z.string().min(1).max(255),
            destination: z.string().min(1).max(4096),
            bytes: z.number().int().nonnegative().optional(),
          }),
        )
        // As many as the security profile's mounts may list: a longer list would get the registration refused.
        .max(256),
    })
    .optional(),
  /** Sockets, connections and published ports, read from the kernel by the source agent. */
  network: ContainerNetwork.optional(),
  /** Whether CRIU can dump the container as it is now (its processes, file descriptors), and why not. */
  checkpointable: z.object({ available: z.boolean(), reason: reason.optional() }).optional(),
  /** What the engine allows the container (privileges, capabilities, mounts, ...): the destination allows no more. */
  security: ContainerSecurityProfile.optional(),
});
export type ContainerTraits = z.infer<typeof ContainerTraits>;

/** The link between the source's store (or registry) and the destination, as measured (optional). */
export const LinkFacts = z.object({
  bandwidthBytesPerSecond: z.number().positive().optional(),
});
export type LinkFacts = z.infer<typeof LinkFacts>;

export const DecisionInput = z.object({
  source: HostCapabilities,
  destination: HostCapabilities,
  container: ContainerTraits,
  requested: MigrationApproach.optional(),
  bandwidthBytesPerSecond: z.number().positive().optional(),
  /**
   * Whether the destination holds the container's image (the planner checks it). Container level restores
   * onto the very image id and service level starts the image; orchestrator level pulls it by name through
   * the Pod. Default true (unknown: the planner refuses a missing image before anything is frozen anyway).
   */
  destinationHasImage: z.boolean().optional(),
});
export type DecisionInput = z.infer<typeof DecisionInput>;

export interface Candidate {
  approach: MigrationApproach;
  feasible: boolean;
  /** Why it is (in)feasible, and for a feasible one what its estimate assumed. */
  why: string;
  /** Only for feasible candidates. */
  estimatedMs?: number;
}

/** How big the checkpoint archive is expected to be, and what that figure rests on (shown by `ums plan`). */
export const ArchiveEstimate = z.object({
  /** What moves while the service is frozen. */
  bytes: z.number().int().nonnegative(),
  /** What the checkpoint stream carries before the freeze: the volumes copied while the service runs. */
  beforeFreezeBytes: z.number().int().nonnegative().optional(),
  /** False when the container's memory was not known and the model's default stood in for it. */
  measured: z.boolean(),
  basis: z.string(),
});
export type ArchiveEstimate = z.infer<typeof ArchiveEstimate>;

/**
 * The archive holds the processes' memory pages and the container's filesystem changes, not its image: their
 * resident memory (as the source agent read it) plus the writable layer, when known. Unknown memory falls back
 * to COST_MODEL.defaultMemoryBytes, and says so: a 768 MiB service estimated as 64 MiB took 5x its estimate.
 */
export function estimateArchive(traits: ContainerTraits): ArchiveEstimate {
  const changes = traits.rootfsChangesBytes;
  const changesPart = changes === undefined ? ', rootfs changes not known' : ` + ${fmtMiB(changes)} rootfs changes`;
  // Volumes in the archive move frozen; outside it, before the freeze (what changed since is not known ahead).
  const volumes = traits.volumes;
  const volumeBytes = (volumes?.list ?? []).reduce((sum, v) => sum + (v.bytes ?? 0), 0);
  const volumesPart =
    volumes === undefined || volumes.list.length === 0
      ? ''
      : volumes.outsideFreeze
        ? `; ${fmtMiB(volumeBytes)} in volumes copied before the freeze`
        : ` + ${fmtMiB(volumeBytes)} in volumes`;
  const frozenVolumeBytes = volumes?.outsideFreeze === false ? volumeBytes : 0;
  const before = volumes?.outsideFreeze === true && volumeBytes > 0 ? { beforeFreezeBytes: volumeBytes } : {};
  if (traits.memoryBytes === undefined) {
    const assumed = COST_MODEL.defaultMemoryBytes + (changes ?? 0) + frozenVolumeBytes;
    return {
      bytes: assumed,
      ...before,
      measured: false,
      basis: `memory unknown (the source agent could not read the container's processes), assumed ${fmtMiB(COST_MODEL.defaultMemoryBytes)}${changesPart}${volumesPart}`,
    };
  }
  const processes = traits.processCount === undefined ? 'its processes' : `${traits.processCount} process(es)`;
  return {
    bytes: traits.memoryBytes + (changes ?? 0) + frozenVolumeBytes,
    ...before,
    measured: true,
    basis: `${fmtMiB(traits.memoryBytes)} resident memory of ${processes}, measured${changesPart}${volumesPart}`,
  };
}

export type Decision =
  | { kind: 'chosen'; approach: MigrationApproach; reason: string; candidates: Candidate[]; archive: ArchiveEstimate }
  | { kind: 'refused'; code: 'requested-infeasible' | 'none-feasible'; reason: string; candidates: Candidate[] };

/**
 * The cost model, in one place. Estimated time of one migration with approach A:
 *
 *   fixedMs[A]
 *   + processes * perProcessMs[A]
 *   + MiB * (dumpRestoreMsPerMiB + extraMsPerMiB[A])
 *   + transferCopies[A] * bytes / bandwidth
 *
 * Calibrated from `npm run bench` (docs/bench/approaches/report.md, 2026-11-28: the launched counter images
 * moved through the local file store at 0, 64 and 256 MiB with one and five processes, medians of total):
 * container level took 0.81-0.98 s at 0 MiB and about 11.5 ms more per MiB; service level 0.71-0.77 s and
 * about 9.5 ms per MiB; five processes cost neither approach anything measurable over one (a 10 ms term
 * stands for the noise). dumpRestoreMsPerMiB is what both spend per MiB on CRIU and the local disk;
 * extraMsPerMiB is the rest: Podman writing the whole archive before it sends it and spooling it again
 * before it restores (container), the launcher staging CRIU's images in the container (service).
 * Orchestrator level is not measured here (no cluster): its fixed cost stands for the kubelet call, the
 * checkpoint image build, a registry push and pull and scheduling a Pod, and it moves the bytes twice.
 * Re-run the benchmark and update these when the pipeline changes; only the differences decide.
 */
export const COST_MODEL = {
  fixedMs: { service: 700, container: 850, orchestrator: 9_000 },
  perProcessMs: { service: 10, container: 10, orchestrator: 10 },
  dumpRestoreMsPerMiB: 5,
  extraMsPerMiB: { service: 4.5, container: 6.5, orchestrator: 6.5 },
  transferCopies: { service: 1, container: 1, orchestrator: 2 },
  /** Assumed when no bandwidth was measured: what the cloud stores' emulators take (see README, Benchmark). */
  defaultBandwidthBytesPerSecond: 50 * 1024 * 1024,
  /** Assumed when the container's traits are unknown. */
  defaultProcessCount: 1,
  defaultMemoryBytes: 64 * 1024 * 1024,
} as const;

/** Tie-break and display order. */
const ORDER: readonly MigrationApproach[] = ['container', 'service', 'orchestrator'];

const MiB = 1024 * 1024;

export class ApproachRefusedError extends Error {
  constructor(
    readonly code: 'requested-infeasible' | 'none-feasible',
    readonly detail: string,
    readonly candidates: Candidate[],
  ) {
    super(detail);
    this.name = 'ApproachRefusedError';
  }
}

/**
 * Decides how to migrate. Never throws for a valid input: a request that cannot be honoured, or a pair of
 * hosts with nothing in common, comes back as `kind: 'refused'` with a reason naming what is missing where.
 * Validates its input with zod (it crosses the boundary from agents' registrations); throws on malformed input.
 */
export function decideApproach(raw: DecisionInput): Decision {
  const input = DecisionInput.parse(raw);
  const candidates = ORDER.map((approach) => assess(approach, input));

  if (input.requested !== undefined) {
    const requested = candidates.find((c) => c.approach === input.requested);
    if (requested === undefined || !requested.feasible) {
      return {
        kind: 'refused',
        code: 'requested-infeasible',
        reason: `${input.requested} level was requested but cannot be used: ${requested?.why ?? 'unknown approach'}`,
        candidates,
      };
    }
    const cheapest = cheapestOf(candidates);
    const note =
      cheapest !== undefined && cheapest.approach !== requested.approach
        ? ` (${cheapest.approach} level was estimated faster: ${fmtMs(cheapest.estimatedMs)} against ${fmtMs(requested.estimatedMs)})`
        : '';
    return {
      kind: 'chosen',
      approach: requested.approach,
      reason: `${requested.approach} level as requested${note}`,
      candidates,
      archive: estimateArchive(input.container),
    };
  }

  const best = cheapestOf(candidates);
  if (best === undefined) {
    const whyNot = candidates.map((c) => `${c.approach} level: ${c.why}`).join('; ');
    return {
      kind: 'refused',
      code: 'none-feasible',
      reason: `no migration approach is possible between these hosts: ${whyNot}`,
      candidates,
    };
  }
  const others = candidates.filter((c) => c.approach !== best.approach);
  const comparison = others.map((c) => (c.feasible ? `${c.approach} ${fmtMs(c.estimatedMs)}` : `${c.approach} not possible`)).join(', ');
  return {
    kind: 'chosen',
    approach: best.approach,
    reason: `${best.approach} level: estimated ${fmtMs(best.estimatedMs)} (${comparison})`,
    candidates,
    archive: estimateArchive(input.container),
  };
}

/** decideApproach, throwing ApproachRefusedError on a refusal (for callers that treat it as a failure). */
export function decideApproachOrThrow(input: DecisionInput): Extract<Decision, { kind: 'chosen' }> {
  const decision = decideApproach(input);
  if (decision.kind === 'refused') throw new ApproachRefusedError(decision.code, decision.reason, decision.candidates);
  return decision;
}

/**
 * The estimate of the cost model for one approach (exported for the benchmark's recalibration). With
 * `memoryBeside` (container level, agents/memory/), the memory skips Podman's tar copies (extraMsPerMiB) and
 * leaves while CRIU dumps it: the transfer adds only what it takes beyond the dump (half of dump + restore).
 */
export function estimateMs(
  approach: MigrationApproach,
  processCount: number,
  memoryBytes: number,
  bandwidthBytesPerSecond: number,
  options: { memoryBeside?: boolean } = {},
): number {
  const mib = memoryBytes / MiB;
  const dumpRestoreMs = mib * COST_MODEL.dumpRestoreMsPerMiB;
  const transferMs = (COST_MODEL.transferCopies[approach] * memoryBytes * 1000) / bandwidthBytesPerSecond;
  const fixed = COST_MODEL.fixedMs[approach] + processCount * COST_MODEL.perProcessMs[approach];
  const ms =
    options.memoryBeside === true && approach === 'container'
      ? fixed + dumpRestoreMs + Math.max(0, transferMs - dumpRestoreMs / 2)
      : fixed + dumpRestoreMs + mib * COST_MODEL.extraMsPerMiB[approach] + transferMs;
  return Math.round(ms);
}

/** Both hosts can send a container's memory beside the engine's archive (agents/memory/; stop-and-copy only). */
export function memoryBesideBetween(source: HostCapabilities, destination: HostCapabilities): boolean {
  return source.memoryBeside?.available === true && destination.memoryBeside?.available === true;
}

function assess(approach: MigrationApproach, input: DecisionInput): Candidate {
  const blocker = infeasibility(approach, input);
  if (blocker !== undefined) return { approach, feasible: false, why: blocker };

  const assumptions: string[] = [];
  const processes = input.container.processCount ?? COST_MODEL.defaultProcessCount;
  if (input.container.processCount === undefined) assumptions.push(`process count unknown, assumed ${processes}`);
  const archive = estimateArchive(input.container);
  assumptions.push(archive.basis);
  const bandwidth = input.bandwidthBytesPerSecond ?? COST_MODEL.defaultBandwidthBytesPerSecond;
  assumptions.push(
    input.bandwidthBytesPerSecond === undefined
      ? `bandwidth unmeasured, assumed ${fmtMiB(bandwidth)}/s`
      : `bandwidth ${fmtMiB(bandwidth)}/s measured on the source's last upload`,
  );

  const memoryBeside = approach === 'container' && memoryBesideBetween(input.source, input.destination);
  if (memoryBeside) assumptions.push('the memory sent as CRIU writes it, beside the archive');
  const estimatedMs = estimateMs(approach, processes, archive.bytes, bandwidth, { memoryBeside });
  const basis = `${processes} process(es), ${fmtMiB(archive.bytes)} archive, ${fmtMiB(bandwidth)}/s`;
  return {
    approach,
    feasible: true,
    why: `${feasibleBecause(approach)}; estimate for ${basis}${assumptions.length > 0 ? ` (${assumptions.join('; ')})` : ''}`,
    estimatedMs,
  };
}

/** undefined when feasible, else what is missing where and what would fix it. */
function infeasibility(approach: MigrationApproach, input: DecisionInput): string | undefined {
  const { source, destination, container } = input;
  const hasImage = input.destinationHasImage ?? true;
  switch (approach) {
    case 'container': {
      const missing: string[] = [];
      if (!source.containerLevel.available) missing.push(`the source cannot (${source.containerLevel.reason ?? 'no reason reported'})`);
      if (!destination.containerLevel.available)
        missing.push(`the destination cannot (${destination.containerLevel.reason ?? 'no reason reported'})`);
      if (missing.length > 0) return `needs the engine's checkpoint/restore (Podman + CRIU) at both ends: ${missing.join('; ')}`;
      if (!hasImage)
        return "the destination does not hold the container's image, and a checkpoint restores only onto the same image id: pull it there first";
      return (
        hostMismatch(source.containerLevel, destination.containerLevel) ??
        notDumpable(container) ??
        socketBlocker(container, source, destination)
      );
    }
    case 'service': {
      const launcher = container.launcher;
      if (launcher === undefined || !launcher.available) {
        const why = launcher?.reason ?? 'no launcher control socket found for it';
        return `needs the container to run the UMS launcher as its entrypoint at the source: ${why}`;
      }
      if (holdsInetSockets(container)) {
        // The launcher image carries CRIU 4.1.1, which aborts on any inet socket on Linux >= 6.16.
        return "the container holds network sockets, and the launcher's CRIU inside the image cannot dump them on this kernel (CRIU < 4.2); container level can";
      }
      if (!destination.plainContainers.available) {
        return `the destination cannot start a plain container: ${destination.plainContainers.reason ?? destination.containerLevel.reason ?? 'its engine did not answer'}`;
      }
      if (!hasImage) return "the destination does not hold the container's image (with the launcher in it): pull it there first";
      return undefined;
    }
    case 'orchestrator': {
      const missing: string[] = [];
      if (!source.orchestratorLevel.available)
        missing.push(`the source cannot (${source.orchestratorLevel.reason ?? 'no kubelet configured'})`);
      if (!destination.orchestratorLevel.available)
        missing.push(`the destination cannot (${destination.orchestratorLevel.reason ?? 'no kubelet configured'})`);
      if (missing.length > 0)
        return `needs a Kubernetes node at both ends whose runtime checkpoints through the CRI (containerd >= 2.0 or CRI-O, with CRIU): ${missing.join('; ')}`;
      return undefined;
    }
  }
}

/** Facts of the two hosts that make any container-level restore fail after the freeze. */
function hostMismatch(source: ContainerLevelCapability, destination: ContainerLevelCapability): string | undefined {
  if (source.engineKind !== undefined && destination.engineKind !== undefined && source.engineKind !== destination.engineKind) {
    return (
      `the source runs ${source.engineKind} and the destination ${destination.engineKind}: a container-level checkpoint restores only ` +
      `into the engine kind that made it (Podman's export and Docker's checkpoint describe the container differently, and CRIU's ` +
      `images name the source engine's own files of the container, /etc/hosts, /etc/resolv.conf, /dev/shm, by its paths); ` +
      `service level moves it between engines`
    );
  }
  if (source.arch !== undefined && destination.arch !== undefined && source.arch !== destination.arch) {
    return `the source is ${source.arch} and the destination ${destination.arch}: CRIU restores a process only on the architecture it was dumped on`;
  }
  if (
    source.criuVersion !== undefined &&
    destination.criuVersion !== undefined &&
    compareVersions(destination.criuVersion, source.criuVersion) < 0
  ) {
    return `the destination's CRIU ${destination.criuVersion} is older than the source's ${source.criuVersion}: it may not read the images; upgrade it (infra/host-setup.sh)`;
  }
  return undefined;
}

function notDumpable(container: ContainerTraits): string | undefined {
  const checkpointable = container.checkpointable;
  if (checkpointable === undefined || checkpointable.available) return undefined;
  return `CRIU cannot checkpoint the container as it is now: ${checkpointable.reason ?? 'no reason reported'}`;
}

function holdsInetSockets(container: ContainerTraits): boolean {
  const network = container.network;
  return network !== undefined && (network.listening.length > 0 || network.insideConnections > 0 || network.outsideConnectionCount > 0);
}

function socketBlocker(container: ContainerTraits, source: HostCapabilities, destination: HostCapabilities): string | undefined {
  if (!holdsInetSockets(container)) return undefined;
  const unable = [
    ['source', source.containerLevel.sockets],
    ['destination', destination.containerLevel.sockets],
  ] as const;
  const missing = unable
    .filter(([, sockets]) => sockets !== undefined && !sockets.available)
    .map(([end, sockets]) => `the ${end}'s: ${sockets?.reason ?? 'no reason reported'}`);
  if (missing.length === 0) return undefined;
  return `the container holds network sockets and CRIU cannot checkpoint or restore them on ${missing.join('; ')}`;
}

/** Dotted numeric versions: negative if a < b. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.+~-]/).map((p) => Number.parseInt(p, 10));
  const pb = b.split(/[.+~-]/).map((p) => Number.parseInt(p, 10));
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = Number.isFinite(pa[i]) ? (pa[i] as number) : 0;
    const y = Number.isFinite(pb[i]) ? (pb[i] as number) : 0;
    if (x !== y) return x - y;
  }
  return 0;
}

function feasibleBecause(approach: MigrationApproach): string {
  switch (approach) {
    case 'container':
      return 'both engines checkpoint and restore';
    case 'service':
      return 'the source container runs the launcher and the destination can start the image';
    case 'orchestrator':
      return "both nodes' runtimes checkpoint and restore through the CRI";
  }
}

function cheapestOf(candidates: Candidate[]): (Candidate & { estimatedMs: number }) | undefined {
  let best: (Candidate & { estimatedMs: number }) | undefined;
  // ORDER is the candidates' order, so the first of equal estimates wins the tie.
  for (const c of candidates) {
    if (!c.feasible || c.estimatedMs === undefined) continue;
    if (best === undefined || c.estimatedMs < best.estimatedMs) best = { ...c, estimatedMs: c.estimatedMs };
  }
  return best;
}

function fmtMs(ms: number | undefined): string {
  if (ms === undefined) return '?';
  return ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

/** Bytes as MiB for reasons and summaries: whole when whole, else to a tenth. */
export function fmtMiB(bytes: number): string {
  const mib = bytes / MiB;
  return `${Number.isInteger(mib) ? mib : mib.toFixed(1)} MiB`;
}
