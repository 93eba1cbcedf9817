#!/usr/bin/env node
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, release, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { createLogger } from '../../core/log.js';
import { cliEnv, type HostSpec, type StoreKind } from '../../cli/stack-info.js';
import { AWS_HOST, DEFAULT_HOSTS, startLocalStack, type LocalStack } from '../../infra/local-stack.js';
import { repoRoot } from '../../infra/repo-paths.js';
import { summarise, summariseApproaches, summariseEngines, summariseServers } from './analysis.js';
import { approachIncident, approachRoute as routeBetween, runApproachMigration, type ApproachRoute } from './approach-run.js';
import { writeChart } from './chart.js';
import { measureFloor } from './floor.js';
import { runMigration, type MigrationContext, type MigrationRoute } from './migration-run.js';
import { highWaterMiB, RSS_SAMPLE_MS } from './process-memory.js';
import { approachConsoleTable, consoleTable, engineSection, markdownReport, serverConsoleTable } from './report.js';
import {
  APPROACH_WORKLOADS,
  BENCH_APPROACHES,
  BENCH_SERVERS,
  STORE_KINDS,
  type BenchOptions,
  type BenchRun,
  type BenchServer,
  type BenchStore,
  type ServerCheck,
} from './samples.js';
import { measureServerFloor, runServerMigration, type ServerHost } from './server-run.js';
import { measureTransfer, writeRandomFile, type StoreAccess } from './sdk-transfer.js';
import { measureContainerPostCopy } from './lazy-container-run.js';
import { runVolumeMigration, VOLUME_VARIANTS, volumeReport } from './volume-run.js';
import { measurePostCopy, postCopyReport } from './post-copy-run.js';
import { measureSealing, sealingReport } from './sealing-cost.js';
import { frontmanReport, measureFrontman } from './frontman-run.js';
import { stopOnSignal } from './stack-signal.js';
import { measureEngines } from './engine-run.js';
import { evacuationReport, measureEvacuation } from './evacuation-run.js';

/**
 * `npm run bench`: for each memory size, in one run and interleaved per repetition so that the machine's
 * drift hits every condition alike: the Podman floor on one host, plain SDK transfers of the archive's size
 * to each store, full migrations through the local stack per store, and the approach comparison (the
 * launched images, single- and multi-process, at container and at service level through the file store);
 * then real servers (redis filled to each --server-sizes, with an in-container and a WAN client): the bare
 * Podman pair of the same container on one host, and a migration azure -> gcp, their data checked after each.
 * Before all that, on a stack of its own, the engine comparison: the launched counter moved between Podman
 * and Docker hosts (engine-run.ts); and on another, hosts emptied by an eviction notice (evacuation-run.ts).
 * Writes results.json (every raw sample), report.md and chart.png into --out, and prints the tables.
 * Measurement only: it asserts nothing.
 */
const log = createLogger('bench');
const cli = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'cli', 'ums.js');

const EDGE_1: HostSpec = { agentId: 'edge-site-1', cloud: 'edge', region: 'site-1', store: 'file' };
const EDGE_2: HostSpec = { agentId: 'edge-site-2', cloud: 'edge', region: 'site-2', store: 'file' };
const [AZURE, GCP] = DEFAULT_HOSTS as [HostSpec, HostSpec];

/** The archive goes through the source's store, so each store is measured by migrating away from its host. */
const ROUTES: Record<BenchStore, [HostSpec, HostSpec]> = {
  file: [EDGE_1, EDGE_2],
  azure: [AZURE, GCP],
  gcs: [GCP, AZURE],
  s3: [AWS_HOST, GCP],
};

const RSS_METHOD =
  `Agents are restarted before each size, so each agent's VmHWM (/proc/<pid>/status, the kernel's high-water mark since ` +
  `process start) read after that size's work is its exact peak at that size; VmRSS is also sampled every ${RSS_SAMPLE_MS} ms ` +
  'during each migration (the migration table\'s "agent peak RSS"). The agents\' peak is the larger of the two. The bridge and ' +
  'the functions are not restarted: their VmHWM is cumulative since the stack started. At a size that is also in the approach comparison, ' +
  'the VmHWM includes its migrations.';

function list<T>(parse: (item: string) => T) {
  return (value: string): T[] =>
    value
      .split(',')
      .map((item) => item.trim())
      .filter((item) => item !== '')
      .map(parse);
}

const parseSize = (item: string): number => {
  const n = Number(item);
  if (!Number.isInteger(n) || n < 0 || n > 16384) throw new InvalidArgumentError(`not a size in MiB: ${item}`);
  return n;
};
const POSTCOPY_LEVELS = ['process', 'container'] as const;
type PostCopyLevel = (typeof POSTCOPY_LEVELS)[number];
const parsePostCopyLevel = (item: string): PostCopyLevel => {
  const level = POSTCOPY_LEVELS.find((l) => l === item);
  if (level === undefined) throw new InvalidArgumentError(`unknown post-copy level ${item} (${POSTCOPY_LEVELS.join(', ')})`);
  return level;
};
const parseStore = (item: string): BenchStore => {
  if (!(STORE_KINDS as readonly string[]).includes(item))
    throw new InvalidArgumentError(`unknown store ${item} (${STORE_KINDS.join(', ')})`);
  return item as BenchStore;
};
const parseServer = (item: string): BenchServer => {
  if (!(BENCH_SERVERS as readonly string[]).includes(item))
    throw new InvalidArgumentError(`unknown server ${item} (${BENCH_SERVERS.join(', ')})`);
  return item as BenchServer;
};
const parseCount = (item: string): number => {
  const n = Number(item);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`not a positive integer: ${item}`);
  return n;
};

const program = new Command('bench')
  .description('Benchmark migrations against the bare Podman checkpoint/restore floor and plain SDK transfers')
  .option('--sizes <MiB,...>', 'memory sizes of the workload', list(parseSize), [0, 64, 128, 256, 512, 1024])
  .option('--reps <n>', 'repetitions per size', parseCount, 3)
  .option(
    '--approach-sizes <MiB,...>',
    'sizes of the approach comparison (container vs service level; multi-process: split over two counters; empty: none)',
    list(parseSize),
    [0, 64, 256],
  )
  .option('--stores <kinds>', `stores to migrate through (${STORE_KINDS.join(', ')})`, list(parseStore), [...STORE_KINDS])
  .option(
    '--servers <names>',
    `real servers to move with their clients, azure -> gcp (${BENCH_SERVERS.join(', ')}; empty: none)`,
    list(parseServer),
    [...BENCH_SERVERS],
  )
  .option('--server-sizes <MiB,...>', 'memory the real servers are filled to (INFO used_memory)', list(parseSize), [128, 1100])
  .option(
    '--postcopy-sizes <MiB,...>',
    "sizes of the post-copy comparison: a process, then a container through Podman, moved lazily through the agents' page relay against stop-and-copy (empty: none)",
    list(parseSize),
    [256, 1024],
  )
  .option(
    '--postcopy-levels <levels>',
    'which post-copy comparisons run: process (CRIU directly), container (through Podman), or both',
    list(parsePostCopyLevel),
    ['process', 'container'],
  )
  .option(
    '--volume-sizes <MiB,...>',
    "sizes of the volume comparison: the counter with a volume moved outside the freeze, in Podman's archive, and without one, through the file store (empty: none)",
    list(parseSize),
    [1024],
  )
  .option(
    '--frontman-fill <MiB,...>',
    'memory webdis is filled to in the comparison of clients through a migration with and without the frontman, under open-loop load (empty: none)',
    list(parseSize),
    // Unfilled, webdis freezes for 2-4 s here: long enough to hold hundreds of requests, short of the 5 s client timeout.
    [0],
  )
  .option('--frontman-rps <n>', 'requests per second of that load', parseCount, 200)
  .option(
    '--engine-sizes <MiB,...>',
    'sizes of the engine comparison: the launched counter moved Podman -> Podman and Docker -> Docker at container level, Podman -> Podman, Podman -> Docker and Docker -> Podman at service level (empty: none)',
    list(parseSize),
    [64, 256],
  )
  .option(
    '--evacuation-services <n,...>',
    'how many services an Azure spot eviction (30 s notice) empties the host of, on a capped uplink, against one plain migration (empty: none)',
    list(parseCount),
    [2, 4, 8],
  )
  .option('--evacuation-mib <MiB>', 'the memory of each of those services', parseCount, 16)
  .option('--no-object-store', "skip the transfer through UMS's ObjectStore seam (kept: the plain SDK transfer)")
  .option('--out <dir>', 'where to write results.json, report.md and chart.png (default bench/results/<timestamp>)')
  .option('--timeout <seconds>', 'give up on one migration after this long', parseCount, 900)
  .option('--from-results <file>', 'measure nothing: re-write report.md and chart.png from a results.json into --out (or beside it)');

async function restartAgent(stack: LocalStack, agentId: string): Promise<void> {
  const service = stack.services.get(`agent-${agentId}`);
  const logFile = stack.info.hosts.find((h) => h.agentId === agentId)?.agentLog;
  if (!service || !logFile) throw new Error(`no agent ${agentId} in the stack`);
  // The service's readiness probe looks for "agent started" in a log it appends to: count the new one.
  const startedLines = async () => (await readFile(logFile, 'utf8').catch(() => '')).split('agent started').length - 1;
  const before = await startedLines();
  await service.stop();
  await service.start();
  const deadline = Date.now() + 30_000;
  while ((await startedLines()) <= before) {
    if (Date.now() > deadline) throw new Error(`agent ${agentId} did not start again within 30 s; see ${logFile}`);
    await sleep(100);
  }
}

/** How the benchmark runs the CLI against one of its stacks. */
function migrationContext(stack: LocalStack, timeoutSeconds: number): MigrationContext {
  return { cli, cliEnv: cliEnv(stack.info), image: stack.info.image, processes: () => stackProcesses(stack), timeoutSeconds };
}

function stackProcesses(stack: LocalStack): Map<string, number> {
  const processes = new Map<string, number>();
  for (const [name, service] of stack.services) {
    if ((name.startsWith('agent-') || name.startsWith('function-') || name === 'bridge') && service.pid !== undefined)
      processes.set(name, service.pid);
  }
  return processes;
}

async function writeResults(run: BenchRun, out: string): Promise<void> {
  const sizes = summarise(run);
  const approaches = summariseApproaches(run);
  const servers = summariseServers(run);
  const engines = summariseEngines(run.engines ?? [], run.options.engineSizes ?? []);
  await writeFile(
    join(out, 'results.json'),
    `${JSON.stringify({ ...run, summary: sizes, approachSummary: approaches, serverSummary: servers, engineSummary: engines }, null, 2)}\n`,
  );
  let chart: string | undefined;
  if (sizes.length > 0) {
    try {
      await writeChart(sizes, run.options.stores, join(out, 'chart.svg'), join(out, 'chart.png'));
      chart = 'chart.png';
    } catch (error) {
      log.warn({ err: error }, 'chart could not be rendered');
    }
  }
  await writeFile(join(out, 'report.md'), markdownReport(run, sizes, chart, approaches, servers, engines));
}

/** A results.json as written, possibly before the approach comparison or the real servers existed. */
type StoredRun = Omit<BenchRun, 'approaches' | 'serverFloor' | 'serverMigrations' | 'options'> & {
  options: Omit<BenchOptions, 'approachSizes' | 'servers' | 'serverSizes'> &
    Partial<Pick<BenchOptions, 'approachSizes' | 'servers' | 'serverSizes'>>;
  approaches?: BenchRun['approaches'];
  serverFloor?: BenchRun['serverFloor'];
  serverMigrations?: BenchRun['serverMigrations'];
  summary?: unknown;
  approachSummary?: unknown;
  serverSummary?: unknown;
  engineSummary?: unknown;
};

async function readResults(file: string): Promise<BenchRun> {
  // The summaries in the file are recomputed, so a report can follow changes to the analysis.
  const {
    summary: _summary,
    approachSummary: _approachSummary,
    serverSummary: _serverSummary,
    engineSummary: _engineSummary,
    ...stored
  } = JSON.parse(await readFile(file, 'utf8')) as StoredRun;
  return {
    ...stored,
    options: {
      ...stored.options,
      approachSizes: stored.options.approachSizes ?? [],
      servers: stored.options.servers ?? [],
      serverSizes: stored.options.serverSizes ?? [],
    },
    approaches: stored.approaches ?? [],
    serverFloor: stored.serverFloor ?? [],
    serverMigrations: stored.serverMigrations ?? [],
  };
}

function printTables(run: BenchRun): string {
  const approaches = summariseApproaches(run);
  const servers = summariseServers(run);
  return [
    ...(run.sealing ? [sealingReport(run.sealing), ''] : []),
    ...(run.postCopy && run.postCopy.length > 0 ? [postCopyReport(run.postCopy), ''] : []),
    ...(run.volumes && run.volumes.length > 0 ? [volumeReport(run.volumes), ''] : []),
    ...(run.frontman && run.frontman.length > 0 ? [frontmanReport(run.frontman), ''] : []),
    ...(run.evacuation && run.evacuation.length > 0 ? [evacuationReport(run.evacuation), ''] : []),
    ...(run.engines && run.engines.length > 0 ? [engineSection(summariseEngines(run.engines, run.options.engineSizes ?? [])), ''] : []),
    ...(run.options.sizes.length > 0 ? [consoleTable(summarise(run))] : []),
    ...(approaches.length > 0 ? ['', approachConsoleTable(approaches)] : []),
    ...(servers.length > 0 ? ['', serverConsoleTable(servers)] : []),
  ].join('\n');
}

async function main(): Promise<number> {
  const raw = program.parse().opts<{
    sizes: number[];
    approachSizes: number[];
    reps: number;
    stores: BenchStore[];
    objectStore: boolean;
    servers: BenchServer[];
    serverSizes: number[];
    postcopySizes: number[];
    postcopyLevels: PostCopyLevel[];
    volumeSizes: number[];
    frontmanFill: number[];
    frontmanRps: number;
    engineSizes: number[];
    evacuationServices: number[];
    evacuationMib: number;
    out?: string;
    timeout: number;
    fromResults?: string;
  }>();
  if (raw.fromResults) {
    const run = await readResults(raw.fromResults);
    const out = resolve(raw.out ?? dirname(raw.fromResults));
    await mkdir(out, { recursive: true });
    await writeResults(run, out);
    process.stdout.write(`${printTables(run)}\n\nreport: ${join(out, 'report.md')}\n`);
    return 0;
  }
  const startedAt = new Date();
  const options: BenchOptions = {
    sizes: raw.sizes,
    reps: raw.reps,
    stores: raw.stores,
    viaObjectStore: raw.objectStore,
    approachSizes: raw.approachSizes,
    servers: raw.serverSizes.length > 0 ? raw.servers : [],
    serverSizes: raw.servers.length > 0 ? raw.serverSizes : [],
    postCopySizes: raw.postcopySizes,
    volumeSizes: raw.volumeSizes,
    frontmanFill: raw.frontmanFill,
    frontmanRps: raw.frontmanRps,
    engineSizes: raw.engineSizes,
    evacuationServices: raw.evacuationServices,
    evacuationMiB: raw.evacuationMib,
    out: resolve(raw.out ?? join(repoRoot, 'bench', 'results', startedAt.toISOString().replace(/[:.]/g, '-'))),
  };
  await mkdir(options.out, { recursive: true });
  const run: BenchRun = {
    startedAt: startedAt.toISOString(),
    finishedAt: '',
    machine: { node: process.version, cpus: cpus().length, memGiB: Math.round(totalmem() / 2 ** 30), kernel: release() },
    options,
    rssMethod: RSS_METHOD,
    floor: [],
    transfers: [],
    migrations: [],
    approaches: [],
    highWater: [],
    serverFloor: [],
    serverMigrations: [],
    incidents: [],
  };
  // Before the stack starts, on an idle machine: a few seconds of CPU.
  log.info('measuring the cost of sealing (1 GiB, in memory)');
  run.sealing = await measureSealing();
  log.info(run.sealing, 'sealing measured');
  if (raw.postcopySizes.length > 0) {
    // Before the stack too: two hosts of their own, CRIU directly. A failed move or a memory check that fails
    // is an incident; a missed freeze target is a finding.
    log.info({ sizes: raw.postcopySizes, levels: raw.postcopyLevels }, 'measuring post-copy against stop-and-copy');
    try {
      run.postCopy = raw.postcopyLevels.includes('process') ? await measurePostCopy(raw.postcopySizes, options.reps) : [];
      if (raw.postcopyLevels.includes('container')) {
        log.info({ sizes: raw.postcopySizes }, 'measuring post-copy against stop-and-copy (container level, through Podman)');
        run.postCopy.push(...(await measureContainerPostCopy(raw.postcopySizes, options.reps)));
      }
      for (const sample of run.postCopy.filter((s) => !s.verified)) {
        run.incidents.push(
          `post-copy comparison (${sample.level} level) ${sample.mode} ${sample.mib} MiB rep ${sample.rep}: the memory check failed after the move`,
        );
      }
    } catch (error) {
      run.incidents.push(`post-copy comparison failed: ${(error as Error).message}`);
    }
  }
  if (raw.frontmanFill.length > 0) {
    // A stack of its own (webdis, the frontman): before the main stack, so the two never share the machine.
    run.frontman = [];
    for (const fillMiB of raw.frontmanFill) {
      log.info({ fillMiB, rps: raw.frontmanRps }, 'measuring clients through a migration, with and without the frontman');
      try {
        const samples = await measureFrontman({
          fillMiB,
          reps: options.reps,
          rps: raw.frontmanRps,
          dir: join(tmpdir(), `ums-bench-frontman-${process.pid}`),
        });
        run.frontman.push(...samples);
        for (const s of samples.filter((sample) => !sample.ok))
          run.incidents.push(`frontman comparison ${s.way} rep ${s.rep}: ${s.error ?? 'failed'}`);
      } catch (error) {
        run.incidents.push(`frontman comparison failed: ${(error as Error).message}`);
      }
    }
    await writeResults(run, options.out);
  }
  if (raw.evacuationServices.length > 0) {
    // A stack of its own (the azure host's uplink capped, notices on): before the main stack, so the two never share the machine.
    log.info(
      { services: raw.evacuationServices, serviceMiB: raw.evacuationMib, reps: options.reps },
      'measuring evacuations against the notice window',
    );
    try {
      run.evacuation = await measureEvacuation({
        services: raw.evacuationServices,
        serviceMiB: raw.evacuationMib,
        reps: options.reps,
        dir: `/tmp/ums-bench-evac-${process.pid}`,
      });
      // Timings are findings: only a service lost or running twice fails the run.
      for (const s of run.evacuation) {
        for (const lost of s.lost) run.incidents.push(`evacuation of ${s.services} rep ${s.rep}: ${lost} runs nowhere or lost its state`);
        for (const twice of s.twice) run.incidents.push(`evacuation of ${s.services} rep ${s.rep}: ${twice} runs on both hosts`);
      }
    } catch (error) {
      run.incidents.push(`evacuation measure failed: ${(error as Error).message}`);
    }
    await writeResults(run, options.out);
  }
  if (raw.engineSizes.length > 0) {
    // A stack of its own (two Podman and two Docker hosts): before the main stack, so the two never share the machine.
    log.info({ sizes: raw.engineSizes, reps: options.reps }, 'measuring the engines on the same workload');
    try {
      const engines = await measureEngines({
        sizes: raw.engineSizes,
        reps: options.reps,
        dir: `/tmp/ums-bench-eng-${process.pid}`,
        context: (stack) => migrationContext(stack, raw.timeout),
      });
      run.engines = engines.samples;
      run.incidents.push(...engines.incidents);
    } catch (error) {
      run.incidents.push(`engine comparison failed: ${(error as Error).message}`);
    }
    await writeResults(run, options.out);
  }
  // The approach comparison goes through the file store's pair whatever --stores says.
  const compared = options.approachSizes.length > 0;
  // Real servers move azure -> gcp (the default hosts and stores) whatever --stores says.
  const serving = options.servers.length > 0;
  // Volumes move through the file store's pair whatever --stores says.
  const volumes = raw.volumeSizes.length > 0;
  const specs = [
    ...new Map(
      [
        ...options.stores.flatMap((store) => ROUTES[store]),
        ...(compared || volumes ? ROUTES.file : []),
        ...(serving ? ROUTES.azure : []),
      ].map((spec) => [spec.agentId, spec]),
    ).values(),
  ];
  // Nothing left that needs the main stack (e.g. the engine comparison alone): do not start one.
  if (specs.length === 0) return finish(run);
  // Short: Podman refuses long runroots and unix sockets cap their path length.
  const stackDir = `/tmp/ums-bench-${process.pid}`;
  log.info(
    {
      sizes: options.sizes,
      approachSizes: options.approachSizes,
      servers: options.servers,
      serverSizes: options.serverSizes,
      reps: options.reps,
      stores: options.stores,
      out: options.out,
    },
    'starting the local stack',
  );
  const stack = await startLocalStack({ name: `bench-${process.pid}`, dir: stackDir, hosts: specs, serverImages: serving });
  const signal = stopOnSignal(stack, log);
  try {
    const host = (spec: HostSpec) => {
      const found = stack.hosts.get(spec.agentId);
      if (!found) throw new Error(`host ${spec.agentId} is missing from the stack`);
      return found;
    };
    const routes: MigrationRoute[] = options.stores.map((store) => ({
      store,
      source: host(ROUTES[store][0]),
      destination: host(ROUTES[store][1]),
    }));
    const [approachSource, approachDestination] = ROUTES.file;
    const approachRoute: ApproachRoute | undefined = compared
      ? routeBetween(stack, approachSource.agentId, approachDestination.agentId)
      : undefined;
    const floorHost = host(specs[0] as HostSpec);
    const access: StoreAccess[] = options.stores.map((kind: StoreKind) => {
      const storeUrl = stack.info.hosts.find((h) => h.store === kind)?.storeUrl;
      if (!storeUrl) throw new Error(`no ${kind} store in the stack`);
      return { kind, storeUrl, env: stack.storeEnv[kind] ?? {} };
    });
    const context = migrationContext(stack, raw.timeout);
    const scratch = join(stackDir, 'bench');
    await mkdir(scratch, { recursive: true });
    const archive = join(scratch, 'floor.tar');
    const payload = join(scratch, 'payload.bin');
    const incident = (what: string, error: unknown) => {
      const message = `${what}: ${error instanceof Error ? error.message : String(error)}`;
      run.incidents.push(message);
      log.error({ err: error }, what);
    };

    // Every size of either list, in the order given; a size in both gets both kinds of work in each repetition.
    const allSizes = [...new Set([...options.sizes, ...options.approachSizes])];
    for (const [sizeIndex, sizeMiB] of allSizes.entries()) {
      if (sizeIndex > 0) {
        for (const spec of specs) await restartAgent(stack, spec.agentId);
      }
      const measureStores = options.sizes.includes(sizeMiB);
      let payloadBytes: number | undefined;
      for (let rep = 0; rep < options.reps; rep++) {
        if (measureStores) {
          log.info({ sizeMiB, rep }, 'floor');
          try {
            const floor = await measureFloor(floorHost, stack.info.image, sizeMiB, rep, archive);
            run.floor.push(floor);
            if (!floor.continuous) run.incidents.push(`floor ${sizeMiB} MiB rep ${rep}: the count did not continue across the bare pair`);
            log.info(
              {
                sizeMiB,
                rep,
                checkpointMs: Math.round(floor.checkpointMs),
                restoreMs: Math.round(floor.restoreMs),
                downtimeMs: floor.downtimeMs,
              },
              'floor measured',
            );
            if (payloadBytes === undefined) {
              payloadBytes = floor.archiveBytes;
              await writeRandomFile(payload, payloadBytes);
            }
          } catch (error) {
            incident(`floor ${sizeMiB} MiB rep ${rep}`, error);
          } finally {
            await rm(archive, { force: true });
          }
          if (payloadBytes !== undefined) {
            for (const store of access) {
              for (const via of options.viaObjectStore ? (['sdk', 'object-store'] as const) : (['sdk'] as const)) {
                try {
                  const sample = await measureTransfer(store, via, payload, payloadBytes, scratch, { sizeMiB, rep });
                  run.transfers.push(sample);
                  log.info(
                    {
                      sizeMiB,
                      rep,
                      store: store.kind,
                      via,
                      uploadMs: Math.round(sample.uploadMs),
                      downloadMs: Math.round(sample.downloadMs),
                    },
                    'transfer measured',
                  );
                } catch (error) {
                  incident(`transfer ${via} ${store.kind} ${sizeMiB} MiB rep ${rep}`, error);
                }
              }
            }
          }
          for (const route of routes) {
            log.info({ sizeMiB, rep, store: route.store }, 'migration');
            try {
              const sample = await runMigration(context, route, sizeMiB, rep);
              run.migrations.push(sample);
              if (!sample.ok) run.incidents.push(`migration ${route.store} ${sizeMiB} MiB rep ${rep} failed: ${sample.error ?? ''}`);
              else if (!sample.continuous)
                run.incidents.push(`migration ${route.store} ${sizeMiB} MiB rep ${rep}: the count did not continue`);
              log.info(
                {
                  sizeMiB,
                  rep,
                  store: route.store,
                  ok: sample.ok,
                  totalMs: sample.totalMs,
                  downtimeMs: sample.downtimeMs,
                  rss: sample.rssPeakMiB,
                },
                'migration measured',
              );
            } catch (error) {
              incident(`migration ${route.store} ${sizeMiB} MiB rep ${rep}`, error);
            }
          }
        }
        if (approachRoute && options.approachSizes.includes(sizeMiB)) {
          // Alternate which approach goes first, so neither always follows the other's leftovers.
          const order = rep % 2 === 0 ? [...BENCH_APPROACHES] : [...BENCH_APPROACHES].reverse();
          for (const workload of APPROACH_WORKLOADS) {
            for (const approach of order) {
              const what = `approach ${workload} ${approach} ${sizeMiB} MiB rep ${rep}`;
              log.info({ sizeMiB, rep, workload, approach }, 'approach migration');
              try {
                const sample = await runApproachMigration(context, approachRoute, workload, approach, sizeMiB, rep);
                run.approaches.push(sample);
                const problem = approachIncident(what, sample);
                if (problem !== undefined) run.incidents.push(problem);
                log.info(
                  {
                    sizeMiB,
                    rep,
                    workload,
                    approach,
                    ok: sample.ok,
                    totalMs: sample.totalMs,
                    frozenMs: sample.frozenMs,
                    downtimeMs: sample.downtimeMs,
                  },
                  'approach migration measured',
                );
              } catch (error) {
                incident(what, error);
              }
            }
          }
        }
      }
      if (measureStores) {
        for (const [name, pid] of stackProcesses(stack)) {
          const vmHwmMiB = await highWaterMiB(pid);
          if (vmHwmMiB !== undefined) run.highWater.push({ sizeMiB, process: name, vmHwmMiB });
        }
      }
      await rm(payload, { force: true });
      // After every size, so an interrupted run still leaves what it measured.
      run.finishedAt = new Date().toISOString();
      await writeResults(run, options.out);
    }

    if (volumes) {
      const [from, to] = ROUTES.file;
      const route: MigrationRoute = { store: 'file', source: host(from), destination: host(to) };
      run.volumes = [];
      for (const volumeMiB of raw.volumeSizes) {
        for (let rep = 0; rep < options.reps; rep++) {
          // Alternate the order, so that no variant always follows another's leftovers.
          const order = rep % 2 === 0 ? [...VOLUME_VARIANTS] : [...VOLUME_VARIANTS].reverse();
          for (const variant of order) {
            const what = `volume ${volumeMiB} MiB ${variant} rep ${rep}`;
            log.info({ volumeMiB, variant, rep }, 'volume migration');
            try {
              const sample = await runVolumeMigration(context, route, scratch, volumeMiB, variant, rep);
              run.volumes.push(sample);
              if (!sample.ok) run.incidents.push(`${what} failed: ${sample.error ?? ''}`);
              else if (!sample.continuous) run.incidents.push(`${what}: the count did not continue`);
              log.info(
                { volumeMiB, variant, rep, ok: sample.ok, frozenMs: sample.frozenMs, downtimeMs: sample.downtimeMs },
                'volume migration measured',
              );
            } catch (error) {
              incident(what, error);
            }
          }
        }
        run.finishedAt = new Date().toISOString();
        await writeResults(run, options.out);
      }
    }

    if (serving) {
      // The WAN client's own namespace: the outside client reaches each host's published port from it.
      const probe = await stack.wan.addClient('probe');
      const serverHost = (spec: HostSpec): ServerHost => {
        const wanAddress = stack.info.hosts.find((h) => h.agentId === spec.agentId)?.wanAddress;
        if (!wanAddress) throw new Error(`host ${spec.agentId} has no WAN address`);
        return { host: host(spec), wanAddress };
      };
      const [from, to] = ROUTES.azure.map(serverHost) as [ServerHost, ServerHost];
      const route: MigrationRoute = { store: 'azure', source: from.host, destination: to.host };
      const checked = (what: string, check: ServerCheck) => {
        if (!check.intact)
          run.incidents.push(
            `${what}: the dataset differs after the move (DBSIZE ${check.keysBefore} -> ${check.keysAfter ?? '?'}, digest ${check.digestBefore} -> ${check.digestAfter ?? '?'})`,
          );
        if (!check.innerSameConnection)
          run.incidents.push(
            `${what}: the inner client's connection did not go on (count ${check.innerCountBefore} -> ${check.innerCountAfter})`,
          );
        if (!check.noLostWrites) run.incidents.push(`${what}: the WAN client lost acknowledged writes or got no reply after the move`);
      };
      for (const [sizeIndex, sizeMiB] of options.serverSizes.entries()) {
        if (sizeIndex > 0 || allSizes.length > 0) {
          for (const spec of specs) await restartAgent(stack, spec.agentId);
        }
        for (let rep = 0; rep < options.reps; rep++) {
          for (const server of options.servers) {
            const what = `${server} ${sizeMiB} MiB rep ${rep}`;
            log.info({ server, sizeMiB, rep }, 'server floor');
            try {
              const floor = await measureServerFloor(from, probe, sizeMiB, rep, archive);
              run.serverFloor.push(floor);
              checked(`floor ${what}`, floor);
              log.info(
                {
                  server,
                  sizeMiB,
                  rep,
                  checkpointMs: Math.round(floor.checkpointMs),
                  restoreMs: Math.round(floor.restoreMs),
                  clientGapMs: Math.round(floor.clientGapMs),
                  intact: floor.intact,
                },
                'server floor measured',
              );
            } catch (error) {
              incident(`floor ${what}`, error);
            }
            log.info({ server, sizeMiB, rep }, 'server migration');
            try {
              const sample = await runServerMigration(context, route, from, to, probe, sizeMiB, rep);
              run.serverMigrations.push(sample);
              if (!sample.ok) run.incidents.push(`migration ${what} failed: ${sample.error ?? ''}`);
              else checked(`migration ${what}`, sample);
              log.info(
                {
                  server,
                  sizeMiB,
                  rep,
                  ok: sample.ok,
                  totalMs: sample.totalMs,
                  frozenMs: sample.frozenMs,
                  clientGapMs: Math.round(sample.clientGapMs),
                  intact: sample.intact,
                },
                'server migration measured',
              );
            } catch (error) {
              incident(`migration ${what}`, error);
            }
          }
        }
        run.finishedAt = new Date().toISOString();
        await writeResults(run, options.out);
      }
    }
  } finally {
    if (!signal.interrupted()) {
      signal.release();
      await stack.stop();
    }
  }
  return finish(run);
}

/** Writes the results a last time, prints the tables and the incidents; returns how many incidents there were. */
async function finish(run: BenchRun): Promise<number> {
  const { options } = run;
  run.finishedAt = new Date().toISOString();
  await writeResults(run, options.out);
  process.stdout.write(`\n${printTables(run)}\n\n`);
  process.stdout.write(
    `report: ${join(options.out, 'report.md')}\nchart:  ${join(options.out, 'chart.png')}\nraw:    ${join(options.out, 'results.json')}\n`,
  );
  if (run.incidents.length > 0)
    process.stdout.write(`\n${run.incidents.length} incident(s):\n${run.incidents.map((i) => `  ${i}`).join('\n')}\n`);
  return run.incidents.length;
}

// Missed targets are findings, never failures; a migration that failed or lost its count is a failure.
main().then(
  (incidents) => process.exit(incidents > 0 ? 1 : 0),
  (error: unknown) => {
    log.fatal({ err: error }, 'benchmark failed');
    process.exit(1);
  },
);
