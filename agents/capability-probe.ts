import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { machine } from 'node:os';
import { promisify } from 'node:util';
import { z } from 'zod';
import {
  ContainerTraits,
  type ContainerLevelCapability,
  type HostCapabilities,
  type LauncherCapability,
  type OrchestratorLevelCapability,
  type PlainContainerCapability,
  type MemoryBesideCapability,
  type PostCopyCapability,
} from '../core/migration-approach.js';
import { launcherSocketPath, LAUNCHER_CONTROL_DIR } from '../launcher/convention.js';
import type { ContainerSecurityProfile } from '../core/container-security.js';
import type { ContainerSummary, EngineInfo } from './container-engine.js';
import { inspectContainer } from './container-inspection.js';
import { CRIU_CANDIDATES } from './criu-command.js';
import { dumpCpuinfo } from './cpu-compatibility.js';
import { KubeletCheckpointClient, tokenFromFile } from './kubelet/kubelet-client.js';
import type { KubeletCheckpointError } from './kubelet/kubelet-errors.js';

const execFileAsync = promisify(execFile);

/**
 * What this host can do for each migration approach (core/migration-approach.ts), probed at start and on each
 * heartbeat. Heartbeats come every 2 s, so everything here is cached: engine info for `hostTtlMs`, the kubelet
 * for `kubeletTtlMs`, `criu check` once when it passes (a kernel does not lose features while running; a
 * failure is retried, since an operator may fix it), each container's launcher for `containerTtlMs`. Concurrent
 * callers share one probe in flight. Probes never throw: what fails becomes `available: false` with a reason
 * that says what failed and what to do.
 */

// ---- container level ----------------------------------------------------------------------------

export interface CriuCheckResult {
  ok: boolean;
  /** The binary that answered, if any. */
  command: string | undefined;
  /** Its output ("Looks good."), or why it failed. */
  detail: string;
}

/**
 * Runs `criu check` (the kernel and CRIU agree on what a dump needs). Candidates as PodmanEngine's:
 * infra/host-setup.sh's wrapper first, then criu from PATH. Needs root, as the engine's CRIU does. An agent
 * running in a container checks its own view: give it the host's criu and /proc, or pass `commands`.
 */
export async function runCriuCheck(options: { commands?: string[]; timeoutMs?: number } = {}): Promise<CriuCheckResult> {
  const commands = options.commands ?? CRIU_CANDIDATES;
  const failures: string[] = [];
  for (const command of commands) {
    try {
      const { stdout, stderr } = await execFileAsync(command, ['check'], { timeout: options.timeoutMs ?? 20_000 });
      return { ok: true, command, detail: `${stdout}${stderr}`.trim() || 'criu check passed' };
    } catch (error) {
      const e = error as NodeJS.ErrnoException & { stdout?: string; stderr?: string; killed?: boolean };
      if (e.code === 'ENOENT') {
        failures.push(`${command}: not found`);
        continue;
      }
      const output = `${e.stdout ?? ''}${e.stderr ?? ''}`.trim().split('\n').slice(-3).join(' | ');
      const why = e.killed === true ? 'timed out' : `exit ${String(e.code ?? '?')}`;
      return { ok: false, command, detail: `\`${command} check\` failed (${why}): ${output || e.message}` };
    }
  }
  return {
    ok: false,
    command: undefined,
    detail: `no criu binary found (${failures.join('; ')}): install CRIU >= 4.1 (infra/host-setup.sh)`,
  };
}

/** Where infra/host-setup.sh installs the socket check (infra/criu/socket-check.sh). */
export const SOCKET_CHECK = '/usr/local/libexec/ums/criu-socket-check';

export interface CriuFacts {
  sockets: { available: boolean; reason?: string };
  cpuinfo: string | undefined;
}

/**
 * What `criu check` does not tell: whether this CRIU dumps and restores a process holding TCP sockets here
 * (the socket check does it for real, about a second), and the CPU's cpuinfo image for destinations to check.
 */
export async function probeCriuFacts(criu: string, socketCheck: string = SOCKET_CHECK): Promise<CriuFacts> {
  const cpuinfo = await dumpCpuinfo(criu).catch(() => undefined);
  try {
    await execFileAsync(socketCheck, [criu], { timeout: 30_000 });
    return { sockets: { available: true }, cpuinfo };
  } catch (error) {
    const e = error as NodeJS.ErrnoException & { stdout?: string };
    const reason =
      e.code === 'ENOENT'
        ? `the socket check ${socketCheck} is not installed (infra/host-setup.sh installs it), so it is unknown whether this CRIU can dump network services`
        : `this host's CRIU cannot checkpoint a process holding TCP sockets: ${(e.stdout ?? '').trim().split('\n').join(' | ') || e.message}`;
    return { sockets: { available: false, reason }, cpuinfo };
  }
}

/**
 * Container level = the engine answers and its host's CRIU works. Returns plain-container capability too
 * (service level's destination only needs the engine to answer).
 */
export async function probeContainerLevel(deps: {
  engineInfo: () => Promise<EngineInfo>;
  criuCheck: () => Promise<CriuCheckResult>;
  criuFacts?: (criu: string) => Promise<CriuFacts>;
}): Promise<{ containerLevel: ContainerLevelCapability; plainContainers: PlainContainerCapability }> {
  let info: EngineInfo;
  try {
    info = await deps.engineInfo();
  } catch (error) {
    const reason = `the container engine does not answer (${(error as Error).message}): is its API service running?`;
    return { containerLevel: { available: false, reason }, plainContainers: { available: false, reason } };
  }
  const engine = `${info.engine} ${info.version} (${info.ociRuntime})`;
  const engineKind = info.engine;
  if (engineKind === 'cri') {
    // A node's pods are the orchestrator's: UMS neither exports them as containers nor starts plain ones there.
    const reason = `this host is a Kubernetes node (${info.version}): its pods move at orchestrator level, through the CRI`;
    return { containerLevel: { available: false, engine, engineKind, reason }, plainContainers: { available: false, reason } };
  }
  const plainContainers = { available: true };
  if (info.criuVersion === undefined) {
    return {
      containerLevel: {
        available: false,
        engine,
        engineKind,
        reason: "no criu on the engine's host: install CRIU >= 4.1 (infra/host-setup.sh side-loads it where the distribution's is too old)",
      },
      plainContainers,
    };
  }
  const check = await deps.criuCheck();
  const arch = machine();
  if (!check.ok || check.command === undefined) {
    return {
      containerLevel: { available: false, engine, engineKind, criuVersion: info.criuVersion, arch, reason: check.detail },
      plainContainers,
    };
  }
  const facts = deps.criuFacts === undefined ? undefined : await deps.criuFacts(check.command);
  return {
    containerLevel: {
      available: true,
      engine,
      engineKind,
      criuVersion: info.criuVersion,
      arch,
      ...(facts !== undefined ? { sockets: facts.sockets } : {}),
      ...(facts?.cpuinfo !== undefined ? { cpuinfo: facts.cpuinfo } : {}),
    },
    plainContainers,
  };
}

// ---- orchestrator level -------------------------------------------------------------------------

export interface KubeletProber {
  probe(): Promise<{ available: true } | { available: false; error: KubeletCheckpointError }>;
}

/** Orchestrator level = a kubelet is configured and its checkpoint API answers us (not 404 page not found). */
export async function probeOrchestratorLevel(options: {
  kubeletUrl?: string;
  prober?: KubeletProber;
  nodeName?: string;
}): Promise<OrchestratorLevelCapability> {
  if (options.kubeletUrl === undefined || options.prober === undefined) {
    return {
      available: false,
      reason:
        'this host is no Kubernetes node: its agent drives Podman or Docker, not a CRI runtime (--engine cri), and has no kubelet (UMS_KUBELET_URL)',
    };
  }
  const where = { kubeletUrl: options.kubeletUrl, ...(options.nodeName !== undefined ? { nodeName: options.nodeName } : {}) };
  try {
    const probed = await options.prober.probe();
    if (probed.available) return { available: true, ...where };
    return { available: false, reason: probed.error.message, ...where };
  } catch (error) {
    return { available: false, reason: `probing the kubelet failed: ${(error as Error).message}`, ...where };
  }
}

/**
 * Orchestrator level on a node whose agent speaks the CRI itself: the runtime answers, CRIU is there, and the
 * runtime implements CheckpointContainer, asked for a container that does not exist (containerd 2.x and CRI-O
 * answer not-found; containerd 1.x "unimplemented"). Nothing is checkpointed.
 */
export async function probeCriOrchestratorLevel(deps: {
  engineInfo: () => Promise<EngineInfo>;
  checkpointUnknown: () => Promise<void>;
  nodeName: string;
}): Promise<OrchestratorLevelCapability> {
  let info: EngineInfo;
  try {
    info = await deps.engineInfo();
  } catch (error) {
    return { available: false, nodeName: deps.nodeName, reason: `the CRI runtime does not answer: ${(error as Error).message}` };
  }
  const where = { nodeName: deps.nodeName, runtime: info.version };
  if (info.criuVersion === undefined)
    return {
      available: false,
      ...where,
      reason: 'no criu on this node: the runtime checkpoints with CRIU (infra/host-setup.sh side-loads it)',
    };
  try {
    await deps.checkpointUnknown();
    return { available: false, ...where, reason: 'the runtime checkpointed a container that does not exist: it is not to be trusted' };
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === 'not-found') return { available: true, ...where };
    return {
      available: false,
      ...where,
      reason:
        code === 'unimplemented'
          ? `${info.version} does not implement the CRI's CheckpointContainer (containerd >= 2.0 and CRI-O do)`
          : `asking the runtime for CheckpointContainer failed: ${(error as Error).message}`,
    };
  }
}

/**
 * The kubelet client an agent configures from its environment, or undefined without UMS_KUBELET_URL:
 * UMS_KUBELET_URL (https://<node>:10250), UMS_KUBELET_TOKEN_FILE (default: the pod's service-account token
 * when it exists), UMS_KUBELET_CA_FILE (the kubelet's serving CA), UMS_KUBELET_NODE_NAME.
 */
export function kubeletClientFromEnv(env: NodeJS.ProcessEnv = process.env): KubeletCheckpointClient | undefined {
  const url = env.UMS_KUBELET_URL;
  if (url === undefined || url === '') return undefined;
  const serviceAccountToken = '/var/run/secrets/kubernetes.io/serviceaccount/token';
  const tokenFile = env.UMS_KUBELET_TOKEN_FILE ?? (existsSync(serviceAccountToken) ? serviceAccountToken : undefined);
  const caFile = env.UMS_KUBELET_CA_FILE;
  return new KubeletCheckpointClient({
    url,
    ...(tokenFile !== undefined ? { token: tokenFromFile(tokenFile) } : {}),
    ...(caFile !== undefined ? { ca: readFileSync(caFile) } : {}),
    ...(env.UMS_KUBELET_NODE_NAME !== undefined ? { nodeName: env.UMS_KUBELET_NODE_NAME } : {}),
  });
}

// ---- service level (per container) --------------------------------------------------------------

// The launcher's control socket convention (launcher/convention.ts): the host directory <hostDir>/<container>/
// is bind-mounted at /run/ums-launcher in the container, where the launcher (the container's entrypoint)
// listens on control.sock. The agent finds it from the host side without entering the container.

/** What the launcher client (launcher/client.ts) reports; validated here, at the boundary. */
export const LauncherProbeResult = z.object({
  available: z.boolean(),
  version: z.string().optional(),
  /** 0 while the launcher waits for a restore: then it is left out of the traits. */
  processCount: z.number().int().nonnegative().optional(),
  memoryBytes: z.number().int().nonnegative().optional(),
  reason: z.string().optional(),
});
export type LauncherProbeResult = z.infer<typeof LauncherProbeResult>;
export type ProbeLauncher = (container: string) => Promise<LauncherProbeResult>;
/** The engine's security profile of a container (ContainerEngine.securityProfile). */
export type SecurityProfileProbe = (container: string) => Promise<ContainerSecurityProfile | undefined>;
/** Bytes the container wrote into its own filesystem (ContainerEngine.rootfsChangesBytes). */
export type RootfsChangesProbe = (container: string) => Promise<number | undefined>;
/** The container's volumes, their sizes and how they would move (agents/volumes/volume-move.ts). */
export type VolumesProbe = (container: string) => Promise<ContainerTraits['volumes']>;
/** What sizing the container's storage found: both walk files, so they are read less often than the rest. */
export type StorageSizes = Pick<ContainerTraits, 'rootfsChangesBytes' | 'volumes'>;

/**
 * Service-level traits of one container: asks its launcher over the control socket (through `probeLauncher`,
 * the launcher client's job) only when the socket exists, so containers without the launcher cost one stat.
 */
export async function probeContainerTraits(
  container: string,
  options: {
    probeLauncher?: ProbeLauncher;
    hostDir?: string;
    timeoutMs?: number;
    running?: Pick<ContainerSummary, 'pid' | 'published'>;
    securityProfile?: SecurityProfileProbe;
    storage?: (container: string) => Promise<StorageSizes>;
  } = {},
): Promise<ContainerTraits> {
  const [launcherTraits, kernelTraits, security, storage] = await Promise.all([
    probeLauncherTraits(container, options),
    options.running === undefined ? {} : probeKernelTraits(options.running),
    options.running === undefined || options.securityProfile === undefined
      ? undefined
      : options.securityProfile(container).catch(() => undefined),
    options.running === undefined || options.storage === undefined ? {} : options.storage(container).catch(() => ({})),
  ]);
  // The launcher counts its service tree without itself: its figures win where it reports them.
  return {
    ...kernelTraits,
    ...launcherTraits,
    ...(security !== undefined ? { security } : {}),
    ...storage,
  };
}

/** Sockets and what CRIU would refuse, read from /proc (agents/container-inspection.ts). */
async function probeKernelTraits(running: Pick<ContainerSummary, 'pid' | 'published'>): Promise<ContainerTraits> {
  if (running.pid <= 0) return {};
  try {
    const { network, processCount, residentBytes, blockers } = await inspectContainer(running.pid, running.published);
    return {
      network,
      ...(processCount > 0 ? { processCount, memoryBytes: residentBytes } : {}),
      checkpointable: blockers.length === 0 ? { available: true } : { available: false, reason: blockers.join('; ') },
    };
  } catch (error) {
    // The container exited or was frozen meanwhile: the next heartbeat reads it again.
    return { checkpointable: { available: false, reason: `its processes could not be read: ${(error as Error).message}` } };
  }
}

async function probeLauncherTraits(
  container: string,
  options: { probeLauncher?: ProbeLauncher; hostDir?: string; timeoutMs?: number },
): Promise<ContainerTraits> {
  const socket = launcherSocketPath(container, options.hostDir);
  // lstat: a symbolic link in the container's control dir is not the launcher's socket.
  const isSocket = await lstat(socket).then(
    (s) => s.isSocket(),
    () => false,
  );
  if (!isSocket) {
    return {
      launcher: {
        available: false,
        reason: `no launcher control socket at ${socket}: the image does not run the UMS launcher as its entrypoint, or ${LAUNCHER_CONTROL_DIR} is not bind-mounted from there`,
      },
    };
  }
  if (options.probeLauncher === undefined) {
    return { launcher: { available: false, reason: `a launcher socket is at ${socket} but this agent has no launcher client configured` } };
  }
  const timeoutMs = options.timeoutMs ?? 2_000;
  let timer: NodeJS.Timeout | undefined;
  try {
    const raw = await Promise.race([
      options.probeLauncher(container),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    const parsed = LauncherProbeResult.safeParse(raw);
    if (!parsed.success) {
      return {
        launcher: {
          available: false,
          reason: `the launcher at ${socket} answered something unexpected: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
        },
      };
    }
    const result = parsed.data;
    const launcher: LauncherCapability = {
      available: result.available,
      ...(result.version !== undefined ? { version: result.version } : {}),
      ...(result.available ? {} : { reason: result.reason ?? `the launcher at ${socket} reports it cannot checkpoint` }),
    };
    return ContainerTraits.parse({
      launcher,
      ...(result.processCount !== undefined && result.processCount > 0 ? { processCount: result.processCount } : {}),
      ...(result.memoryBytes !== undefined ? { memoryBytes: result.memoryBytes } : {}),
    });
  } catch (error) {
    return { launcher: { available: false, reason: `the launcher at ${socket} did not answer: ${(error as Error).message}` } };
  } finally {
    clearTimeout(timer);
  }
}

// ---- the cached probe an agent holds -----------------------------------------------------------

export interface CapabilityProbeOptions {
  /** The host's engine (PodmanEngine); only info() is used. */
  engine: { info(): Promise<EngineInfo> };
  /** Default: runCriuCheck(). */
  criuCheck?: () => Promise<CriuCheckResult>;
  /** Default: probeCriuFacts() (the socket check and the cpuinfo image). */
  criuFacts?: (criu: string) => Promise<CriuFacts>;
  /** The kubelet to probe (kubeletClientFromEnv()), with its URL for the report. */
  kubelet?: { url: string; prober: KubeletProber; nodeName?: string };
  /** Orchestrator level through the node's CRI runtime (probeCriOrchestratorLevel), in place of a kubelet. */
  orchestrator?: () => Promise<OrchestratorLevelCapability>;
  probeLauncher?: ProbeLauncher;
  /** What the engine allows each running container; reported so the destination can hold an archive to it. */
  securityProfile?: SecurityProfileProbe;
  /** The container's filesystem changes, for the planner's size estimate; read at most every changesTtlMs. */
  rootfsChanges?: RootfsChangesProbe;
  /** The container's volumes and their sizes; read at most every changesTtlMs. */
  volumes?: VolumesProbe;
  /** Default 30 s: the engine walks the container's writable layer to size it, and the agent its volumes. */
  changesTtlMs?: number;
  /** Whether this host can take part in a post-copy migration (agents/post-copy/post-copy-probe.ts); cached like the host report. */
  postCopy?: () => Promise<PostCopyCapability>;
  /** Whether a stop-and-copy can send the memory beside the export (agents/memory/); cached like the host report. */
  memoryBeside?: () => Promise<MemoryBesideCapability>;
  launcherHostDir?: string;
  /** Engine info and the whole host report. Default 10 s. */
  hostTtlMs?: number;
  /** Default 60 s: each probe costs the kubelet an authorisation check against the API server. */
  kubeletTtlMs?: number;
  /** Default 15 s. */
  containerTtlMs?: number;
  /** How long a failed `criu check` stands before it is run again. Default 5 min. */
  criuRetryMs?: number;
  now?: () => number;
}

export class CapabilityProbe {
  private readonly now: () => number;
  private readonly hostCache: Cached<{ containerLevel: ContainerLevelCapability; plainContainers: PlainContainerCapability }>;
  private readonly kubeletCache: Cached<OrchestratorLevelCapability>;
  private readonly postCopyCache: Cached<PostCopyCapability | undefined>;
  private readonly memoryBesideCache: Cached<MemoryBesideCapability | undefined>;
  private readonly criuCache: Cached<CriuCheckResult>;
  private readonly criuFactsCache = new Map<string, Cached<CriuFacts>>();
  private readonly containerCaches = new Map<string, Cached<ContainerTraits> & { key: number | undefined }>();
  private readonly storageCaches = new Map<string, Cached<StorageSizes>>();

  constructor(private readonly options: CapabilityProbeOptions) {
    this.now = options.now ?? Date.now;
    const criuCheck = options.criuCheck ?? (() => runCriuCheck());
    const criuRetryMs = options.criuRetryMs ?? 5 * 60_000;
    this.criuCache = new Cached(criuCheck, (r) => (r.ok ? Number.POSITIVE_INFINITY : criuRetryMs), this.now);
    this.hostCache = new Cached(
      () =>
        probeContainerLevel({
          engineInfo: () => options.engine.info(),
          criuCheck: () => this.criuCache.get(),
          criuFacts: (criu) => this.criuFacts(criu, criuRetryMs),
        }),
      () => options.hostTtlMs ?? 10_000,
      this.now,
    );
    const optional = (probe: (() => Promise<PostCopyCapability>) | undefined) =>
      new Cached(
        () =>
          probe === undefined
            ? Promise.resolve(undefined)
            : probe().catch((error: unknown): PostCopyCapability => ({ available: false, reason: `the probe failed: ${String(error)}` })),
        () => options.hostTtlMs ?? 10_000,
        this.now,
      );
    this.postCopyCache = optional(options.postCopy);
    this.memoryBesideCache = optional(options.memoryBeside);
    const kubelet = options.kubelet;
    const orchestrator = options.orchestrator;
    this.kubeletCache = new Cached(
      () =>
        orchestrator?.() ??
        probeOrchestratorLevel(
          kubelet === undefined
            ? {}
            : {
                kubeletUrl: kubelet.url,
                prober: kubelet.prober,
                ...(kubelet.nodeName !== undefined ? { nodeName: kubelet.nodeName } : {}),
              },
        ),
      () => options.kubeletTtlMs ?? 60_000,
      this.now,
    );
  }

  /** The host's report for the registration: cheap when cached, never throws. */
  async host(): Promise<HostCapabilities> {
    const [{ containerLevel, plainContainers }, orchestratorLevel, postCopy, memoryBeside] = await Promise.all([
      this.hostCache.get(),
      this.kubeletCache.get(),
      this.postCopyCache.get(),
      this.memoryBesideCache.get(),
    ]);
    return {
      containerLevel,
      orchestratorLevel,
      plainContainers,
      ...(postCopy !== undefined ? { postCopy } : {}),
      ...(memoryBeside !== undefined ? { memoryBeside } : {}),
      probedAt: new Date(this.now()).toISOString(),
    };
  }

  /** Like `criu check`: once when it passes (a kernel does not lose features while running), retried when not. */
  private criuFacts(criu: string, retryMs: number): Promise<CriuFacts> {
    let cache = this.criuFactsCache.get(criu);
    if (cache === undefined) {
      const probe = this.options.criuFacts ?? ((command: string) => probeCriuFacts(command));
      cache = new Cached(
        () => probe(criu),
        (facts) => (facts.sockets.available ? Number.POSITIVE_INFINITY : retryMs),
        this.now,
      );
      this.criuFactsCache.set(criu, cache);
    }
    return cache.get();
  }

  /**
   * One container's traits, cached per container: its launcher (service level) and, when it runs (`running`
   * gives its init pid and published ports), its sockets and what CRIU would refuse.
   */
  container(name: string, running?: Pick<ContainerSummary, 'pid' | 'published'>): Promise<ContainerTraits> {
    let cache = this.containerCaches.get(name);
    // A new init pid is a new process tree (restarted, or restored here): what was read of the old one is stale.
    if (cache === undefined || cache.key !== running?.pid) {
      cache = Object.assign(
        new Cached(
          () =>
            probeContainerTraits(name, {
              ...(this.options.probeLauncher !== undefined ? { probeLauncher: this.options.probeLauncher } : {}),
              ...(this.options.launcherHostDir !== undefined ? { hostDir: this.options.launcherHostDir } : {}),
              ...(running !== undefined ? { running } : {}),
              ...(this.options.securityProfile !== undefined ? { securityProfile: this.options.securityProfile } : {}),
              storage: (c: string) => this.storage(c),
            }),
          () => this.options.containerTtlMs ?? 15_000,
          this.now,
        ),
        { key: running?.pid },
      );
      this.containerCaches.set(name, cache);
    }
    return cache.get();
  }

  /** Sizing the writable layer and the volumes walks them: cached longer than the rest of the container's traits. */
  private storage(name: string): Promise<StorageSizes> {
    const { rootfsChanges, volumes } = this.options;
    let cache = this.storageCaches.get(name);
    if (cache === undefined) {
      cache = new Cached(
        async () => {
          const [changes, found] = await Promise.all([
            rootfsChanges?.(name).catch(() => undefined),
            volumes?.(name).catch(() => undefined),
          ]);
          return { ...(changes !== undefined ? { rootfsChangesBytes: changes } : {}), ...(found !== undefined ? { volumes: found } : {}) };
        },
        () => this.options.changesTtlMs ?? 30_000,
        this.now,
      );
      this.storageCaches.set(name, cache);
    }
    return cache.get();
  }

  /** Drops cached traits of containers no longer here (call with the current list on each heartbeat). */
  retainContainers(names: Iterable<string>): void {
    const keep = new Set(names);
    for (const name of this.containerCaches.keys()) if (!keep.has(name)) this.containerCaches.delete(name);
    for (const name of this.storageCaches.keys()) if (!keep.has(name)) this.storageCaches.delete(name);
  }

  /** Forgets everything (after a migration changed what this host runs, or its configuration). */
  invalidate(): void {
    this.hostCache.clear();
    this.kubeletCache.clear();
    this.containerCaches.clear();
    this.storageCaches.clear();
  }
}

/** A value recomputed when older than its TTL (which may depend on the value); one computation at a time. */
class Cached<T> {
  private value: { at: number; ttl: number; data: T } | undefined;
  private inflight: Promise<T> | undefined;

  constructor(
    private readonly compute: () => Promise<T>,
    private readonly ttlFor: (value: T) => number,
    private readonly now: () => number,
  ) {}

  get(): Promise<T> {
    const value = this.value;
    if (value !== undefined && this.now() - value.at < value.ttl) return Promise.resolve(value.data);
    this.inflight ??= this.compute()
      .then((data) => {
        this.value = { at: this.now(), ttl: this.ttlFor(data), data };
        return data;
      })
      .finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  clear(): void {
    this.value = undefined;
  }
}
