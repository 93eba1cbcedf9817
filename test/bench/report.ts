import { postCopyReport } from './post-copy-run.js';
import { frontmanReport } from './frontman-run.js';
import { evacuationReport } from './evacuation-run.js';
import { volumeReport } from './volume-run.js';
import { sealingReport } from './sealing-cost.js';
import {
  agentPeakMiB,
  APPROACH_TIE,
  approachFindings,
  checkTargets,
  TARGET_SIZES_MIB,
  type ApproachComparison,
  type ApproachStats,
  type EngineComparison,
  type ServerSummary,
  type SizeSummary,
  type TargetCheck,
} from './analysis.js';
import { isEngineBaseline, type BenchRun } from './samples.js';
import type { HostEngine } from '../../cli/stack-info.js';
import { formatRatio, formatSpread, seconds, spread } from './statistics.js';

/** The console table and the Markdown report; both read the same summaries. */
const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
const mibValue = (value: number | undefined): string => (value === undefined ? '-' : `${value.toFixed(0)} MiB`);
const verdict = (check: TargetCheck): string => (check.met === undefined ? 'no data' : check.met ? 'met' : '**missed**');

function table(header: string[], rows: string[][]): string {
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((row) => `| ${row.join(' | ')} |`)].join('\n');
}

/** Right-aligned columns for the console. */
function columns(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i] ?? 0)).join('  ');
  return [line(header), ...rows.map(line)].join('\n');
}

/** Real servers for the console: medians in seconds, ratios to the bare pair of the same run. */
export function serverConsoleTable(servers: ServerSummary[]): string {
  const header = [
    'server',
    'MiB',
    'used MiB',
    'floor C+R',
    'bare gap',
    'total',
    'frozen',
    'client gap',
    'total/floor',
    'frozen/floor',
    'gap/bare',
    'ok',
    'checks',
  ];
  const rows = servers.map((s) => [
    s.server,
    String(s.sizeMiB),
    s.usedMemoryMiB === undefined ? '-' : s.usedMemoryMiB.toFixed(0),
    seconds(s.floor.pair?.median),
    seconds(s.floor.clientGap?.median),
    seconds(s.total?.median),
    seconds(s.frozen?.median),
    seconds(s.clientGap?.median),
    formatRatio(s.totalRatio),
    formatRatio(s.frozenRatio),
    formatRatio(s.clientGapRatio),
    `${s.ok}/${s.ok + s.failed}`,
    s.checks,
  ]);
  return [
    'Real servers (medians, seconds; floor = bare podman checkpoint + restore of the same container on one host)',
    columns(header, rows),
  ].join('\n');
}

function serverSection(run: BenchRun, servers: ServerSummary[]): string[] {
  const out: string[] = ['## Real servers', ''];
  out.push(
    "Debian's redis-server 7.0 (`localhost/ums/redis:1`, running as root in its container) filled with `DEBUG POPULATE` (1000-byte values: `value:<n>` then zero bytes; " +
      'UMS and the floor move the archive uncompressed) until INFO `used_memory` reaches the size asked for, with two real clients: the **inner client**, ' +
      "a redis-cli in the container's own process tree on one connection (INCR every 0.1 s), and a **WAN client**, one interactive redis-cli per connection writing `RPUSH outside:log <n>` every 10 ms in a client " +
      "namespace of the stack's WAN through the host's published port. " +
      '**Migration**: `ums migrate` from the azure host to the gcp host through the azure store (container level, tcp-established; outside connections are reset at the freeze). ' +
      '**Floor**: the same container, filled and with the same clients, checkpointed with bare `podman container checkpoint --export --compress none --tcp-established` (C) ' +
      'and restored with `podman container restore --import --tcp-established` (R) on the source host alone. ' +
      '**Client gap**: the longest time between two successive acknowledged writes of the WAN client, which on a lost connection reconnects every 10 ms to the ' +
      "service's new address (as after a DNS update; the same address for the floor): the outage as an outside client sees it, reconnection included. " +
      "**Frozen**: the migration record's freeze to restored. Ratios are of medians from this run: total and frozen against C + R, the client gap against the bare pair's. " +
      "**Checks** (a failed one fails the bench): DBSIZE and a digest of every key but the clients' own (DUMP, sorted, in chunks) equal before and after; the inner client's " +
      'CLIENT LIST entry has the same id and address after and its count went on; every acknowledged WAN write is in the restored server (RPUSH replies, the length of the list, go on by one, or by two after a lost connection).',
    '',
  );
  if (servers.length === 0) return [...out, '(no real-server move ended)', ''];
  out.push(
    table(
      [
        'server',
        'size',
        'used_memory',
        'keys',
        'archive',
        'ok',
        'total',
        'frozen (record)',
        'client gap',
        'CLI wall',
        'total / (C+R)',
        'frozen / (C+R)',
        'client gap / bare',
        'checks',
      ],
      servers.map((s) => [
        s.server,
        `${s.sizeMiB} MiB`,
        mibValue(s.usedMemoryMiB),
        s.populatedKeys === undefined ? '-' : String(s.populatedKeys),
        s.archiveBytes === undefined ? '-' : mib(s.archiveBytes),
        `${s.ok}/${s.ok + s.failed}`,
        formatSpread(s.total),
        formatSpread(s.frozen),
        formatSpread(s.clientGap),
        formatSpread(s.wall),
        formatRatio(s.totalRatio),
        formatRatio(s.frozenRatio),
        formatRatio(s.clientGapRatio),
        s.checks,
      ]),
    ),
    '',
    '### The floor for the same container (same run, source host alone)',
    '',
    table(
      ['server', 'size', 'checkpoint C', 'restore R', 'C + R', 'client gap (bare)', 'checks'],
      servers.map((s) => [
        s.server,
        `${s.sizeMiB} MiB`,
        formatSpread(s.floor.checkpoint),
        formatSpread(s.floor.restore),
        formatSpread(s.floor.pair),
        formatSpread(s.floor.clientGap),
        s.floor.checks,
      ]),
    ),
    '',
    `In the migrations the WAN client's connection was reset ${servers.map((s) => `${formatSpread(s.clientClosedAfter)} s`).join(', ')} (at ${servers.map((s) => `${s.sizeMiB} MiB`).join(', ')}) after its last reply from the source: a prompt close, not a hang until its own timeout. ` +
      `In the bare pair (same host, same address) CRIU dumped and restored that connection too: it was kept in ${run.serverFloor.filter((f) => f.clientClosedAfterMs === undefined).length} of ${run.serverFloor.length} runs.`,
    '',
  );
  const phases = [...new Set(run.serverMigrations.flatMap((m) => (m.ok ? Object.keys(m.phases) : [])))];
  if (phases.length > 0) {
    out.push('### Phases of the migrations (medians, seconds)', '');
    out.push(
      table(
        ['server', 'size', ...phases],
        servers.map((s) => {
          const ok = run.serverMigrations.filter((m) => m.ok && m.server === s.server && m.sizeMiB === s.sizeMiB);
          return [
            s.server,
            `${s.sizeMiB} MiB`,
            ...phases.map((p) => seconds(spread(ok.flatMap((m) => (m.phases[p] === undefined ? [] : [m.phases[p]])))?.median)),
          ];
        }),
      ),
      '',
    );
    const uploads = servers.flatMap((s) => {
      const ok = run.serverMigrations.filter((m) => m.ok && m.server === s.server && m.sizeMiB === s.sizeMiB);
      const upload = spread(ok.flatMap((m) => (m.phases.upload === undefined ? [] : [m.phases.upload])))?.median;
      if (upload === undefined || s.total === undefined || s.archiveBytes === undefined) return [];
      return [
        `${s.sizeMiB} MiB: ${seconds(upload)} of ${seconds(s.total.median)} s (${(s.archiveBytes / 2 ** 20 / (upload / 1000)).toFixed(0)} MiB/s)`,
      ];
    });
    if (uploads.length > 0)
      out.push(
        `The upload phase (the source's agent to the store's emulator; the floor moves nothing between hosts), median of the total: ${uploads.join('; ')}.`,
        '',
      );
  }
  return out;
}

export function consoleTable(sizes: SizeSummary[]): string {
  const header = ['MiB', 'store', 'total s', 'floor s', 'ratio', 'downtime s', 'bare s', 'ratio', 'agent RSS'];
  const rows: string[][] = [];
  for (const size of sizes) {
    rows.push([String(size.sizeMiB), 'floor', seconds(size.floor.pair?.median), '', '', seconds(size.floor.downtime?.median), '', '', '']);
    for (const m of size.migrations) {
      rows.push([
        String(size.sizeMiB),
        m.failed > 0 ? `${m.store} (${m.failed} failed)` : m.store,
        seconds(m.total?.median),
        seconds(m.floorMs),
        formatRatio(m.totalRatio),
        seconds(m.downtime?.median),
        seconds(size.floor.downtime?.median),
        formatRatio(m.downtimeRatio),
        mibValue(m.agentRssPeakMiB),
      ]);
    }
  }
  return columns(header, rows);
}

/** "2/2", "1/2 (1 count broken)": migrations that ended `done`, and those whose count did not continue. */
const okCount = (a: ApproachStats): string =>
  `${a.ok}/${a.ok + a.failed}${a.continuityBroken > 0 ? ` (${a.continuityBroken} count broken)` : ''}`;
const incidentsOf = (a: ApproachStats): number => a.failed + a.continuityBroken;

/** The approach comparison for the console: medians in seconds, then service / container. */
export function approachConsoleTable(comparisons: ApproachComparison[]): string {
  const header = [
    'workload',
    'MiB',
    'C total',
    'C frozen',
    'C down',
    'S total',
    'S frozen',
    'S down',
    'S/C total',
    'S/C frozen',
    'S/C down',
    'ok C',
    'ok S',
  ];
  const rows = comparisons.map((c) => {
    const { container, service } = c.stats;
    return [
      c.workload,
      String(c.sizeMiB),
      seconds(container.total?.median),
      seconds(container.frozen?.median),
      seconds(container.downtime?.median),
      seconds(service.total?.median),
      seconds(service.frozen?.median),
      seconds(service.downtime?.median),
      formatRatio(c.totalRatio),
      formatRatio(c.frozenRatio),
      formatRatio(c.downtimeRatio),
      `${okCount(container)}${incidentsOf(container) > 0 ? ' !' : ''}`,
      `${okCount(service)}${incidentsOf(service) > 0 ? ' !' : ''}`,
    ];
  });
  return [
    "Approaches (paper's comparison): C = container level, S = service level; medians, seconds",
    columns(header, rows),
    '',
    ...approachFindings(comparisons),
  ].join('\n');
}

function approachSection(run: BenchRun, comparisons: ApproachComparison[]): string[] {
  const out: string[] = [];
  const first = run.approaches[0];
  out.push("## Approaches (paper's comparison)", '');
  out.push(
    `The launched images (\`ums-launcher\` as PID 1, CRIU inside the image) moved ${first ? `from ${first.source} to ${first.destination} ` : ''}through the file store with ` +
      '`ums migrate --approach container|service`, each approach on a fresh container of the same image, interleaved with the rest of each repetition. ' +
      "**Container level**: the host's Podman + CRIU checkpoints the whole container; **service level**: the launcher checkpoints the service's process tree " +
      'from inside and restores it into a fresh container of the image. **single**: one counter process; **multi**: five processes (two counters, their ' +
      'labelling shells, the parent shell), the memory split over the two counters. Total and frozen come from the migration record; downtime is the longest ' +
      "gap of the 10 ms counter (multi: counter a), source then destination; the count must continue (multi: both counters and both shells' line counts). " +
      "Processes: the most the source's agent reported (its launcher probe). " +
      `Ratios are service / container of medians: below 1 service level wins; within ${(APPROACH_TIE * 100).toFixed(0)} % counts as even.`,
    '',
  );
  if (comparisons.length === 0) {
    out.push('(no approach migration ended)', '');
    return out;
  }
  const mark = (a: ApproachStats) => (incidentsOf(a) > 0 ? `**${okCount(a)}**` : okCount(a));
  out.push(
    table(
      [
        'workload',
        'size',
        'processes',
        'ok C, S',
        'C total',
        'C frozen',
        'C downtime',
        'S total',
        'S frozen',
        'S downtime',
        'S/C total',
        'S/C frozen',
        'S/C downtime',
        'archive C / S',
      ],
      comparisons.map((c) => {
        const { container, service } = c.stats;
        return [
          c.workload,
          `${c.sizeMiB} MiB`,
          String(container.processCount ?? service.processCount ?? '-'),
          `${mark(container)}, ${mark(service)}`,
          formatSpread(container.total),
          formatSpread(container.frozen),
          formatSpread(container.downtime),
          formatSpread(service.total),
          formatSpread(service.frozen),
          formatSpread(service.downtime),
          formatRatio(c.totalRatio),
          formatRatio(c.frozenRatio),
          formatRatio(c.downtimeRatio),
          `${container.archiveBytes === undefined ? '-' : mib(container.archiveBytes)} / ${service.archiveBytes === undefined ? '-' : mib(service.archiveBytes)}`,
        ];
      }),
    ),
    '',
  );
  out.push(...approachFindings(comparisons).flatMap((line) => [line, '']));
  out.push(
    'The paper (GLOBECOM 2023) found service level fastest for single-process services and container level better for multi-process ones. ' +
      'A failed migration or a broken count is an incident (in bold above, listed under Incidents); medians are over the migrations that ended `done`, as above.',
    '',
  );
  return out;
}

const ENGINE_NAMES: Record<HostEngine, string> = { podman: 'Podman', docker: 'Docker', containerd: 'containerd (CRI)' };

/**
 * The engine comparison, for the report and the console alike: per size and move, medians (min-max) and the
 * ratios to the Podman -> Podman move of the same level, then the phases of the record.
 */
export function engineSection(comparisons: EngineComparison[]): string {
  const move = (c: EngineComparison) =>
    `${ENGINE_NAMES[c.from]} -> ${ENGINE_NAMES[c.to]}, ${c.approach} level${isEngineBaseline(c) ? ' (baseline)' : ''}`;
  const mark = (c: EngineComparison) => (incidentsOf(c.stats) > 0 ? `**${okCount(c.stats)}**` : okCount(c.stats));
  const phases = [...new Set(comparisons.flatMap((c) => Object.keys(c.phases)))];
  return [
    '## Engines: Podman and Docker on the same workload',
    '',
    'The launched counter image (`ums-launcher` as PID 1, one counter process) filled with each size of random memory, moved with ' +
      '`ums migrate --approach container|service` between two Podman hosts (azure, gcp) and two Docker hosts (aws-us-east-1, aws-us-west-2-1, ' +
      'a dockerd each) of one stack, every host through the file store so that the engine is what differs. **Container level**: the engine ' +
      "checkpoints the whole container: Podman's export, with the memory sent beside it as CRIU writes it (the runtime shim the stack gives " +
      "Podman hosts); on Docker, Docker's checkpoint API, then the agent archives the checkpoint directory and the container's layer, the memory " +
      'inside (Docker has no shim). Between engines the planner refuses it. A Docker-started container gets CAP_SYS_ADMIN in place of ' +
      'CAP_CHECKPOINT_RESTORE, which Docker 20.10 does not know. **Service level**: the launcher checkpoints the process tree ' +
      'from inside and restores it into a fresh container of the image on either engine. Every move runs on a fresh container, the moves ' +
      'interleaved in each repetition (reversed in every other one). Frozen and total come from the migration record; downtime is the longest ' +
      'gap of the 10 ms counter, source then destination, and the count must continue (a move that breaks it fails the bench). ' +
      'Ratios are of medians to the Podman -> Podman move of the same level and size in this run.',
    '',
    comparisons.length === 0
      ? '(no engine migration ended)'
      : table(
          ['size', 'move', 'ok', 'frozen', 'frozen / baseline', 'total', 'total / baseline', 'downtime', 'archive', 'archive / baseline'],
          comparisons.map((c) => [
            `${c.sizeMiB} MiB`,
            move(c),
            mark(c),
            formatSpread(c.stats.frozen),
            formatRatio(c.frozenRatio),
            formatSpread(c.stats.total),
            formatRatio(c.totalRatio),
            formatSpread(c.stats.downtime),
            c.stats.archiveBytes === undefined ? '-' : mib(c.stats.archiveBytes),
            formatRatio(c.archiveRatio),
          ]),
        ),
    '',
    ...(phases.length === 0
      ? []
      : [
          "### Phases of the record (medians, seconds; `checkpoint` is freeze to the archive's first byte)",
          '',
          table(
            ['size', 'move', ...phases],
            comparisons.map((c) => [`${c.sizeMiB} MiB`, move(c), ...phases.map((p) => seconds(c.phases[p]?.median))]),
          ),
          '',
        ]),
  ].join('\n');
}

export function markdownReport(
  run: BenchRun,
  sizes: SizeSummary[],
  chartFile: string | undefined,
  approaches: ApproachComparison[] = [],
  servers: ServerSummary[] = [],
  engines: EngineComparison[] = [],
): string {
  const targets = checkTargets(sizes);
  const counters = run.options.sizes.length > 0;
  const out: string[] = [];
  out.push('# UMS benchmark: migration time and downtime against the Podman floor', '');
  out.push(
    `Run ${run.startedAt} to ${run.finishedAt} on ${run.machine.cpus} CPUs, ${run.machine.memGiB} GiB, kernel ${run.machine.kernel}, Node ${run.machine.node}. ` +
      `Sizes ${run.options.sizes.join(', ') || 'none'} MiB, ${run.options.reps} repetition(s), stores ${run.options.stores.join(', ') || 'none'}` +
      (run.options.approachSizes.length > 0 ? `; approach comparison at ${run.options.approachSizes.join(', ')} MiB` : '') +
      (run.options.engineSizes && run.options.engineSizes.length > 0
        ? `; engine comparison at ${run.options.engineSizes.join(', ')} MiB`
        : '') +
      (run.options.servers.length > 0
        ? `; real servers ${run.options.servers.join(', ')} at ${run.options.serverSizes.join(', ')} MiB. `
        : '. ') +
      'All servers are local (loopback); the figures compare the pipeline with the floor measured in the same run, not with real clouds.',
    '',
  );
  out.push(
    (counters ? '' : 'Counter workloads: none in this run (`--sizes`); ') +
      'Figures are medians over the repetitions with (min-max), in seconds. **Floor**: bare `podman container checkpoint --export --compress none` (C) and ' +
      '`podman container restore --import` (R) on one host; bare downtime is the longest counter gap across that pair. **U / D**: the same number of bytes as ' +
      "the archive uploaded from a file and downloaded into a file with the cloud SDK directly. **Total**: the migration record's request to finish; " +
      "**downtime**: the longest gap between two ticks of the 10 ms counter, source then destination (the paper's method). Ratios are of medians from this run.",
    '',
  );
  if (run.sealing) out.push(sealingReport(run.sealing), '');
  if (run.postCopy && run.postCopy.length > 0) out.push(postCopyReport(run.postCopy), '');
  if (run.volumes && run.volumes.length > 0) out.push(volumeReport(run.volumes), '');
  if (run.frontman && run.frontman.length > 0) out.push(frontmanReport(run.frontman), '');
  if (run.evacuation && run.evacuation.length > 0) out.push(evacuationReport(run.evacuation), '');
  if (run.engines && run.engines.length > 0) out.push(engineSection(engines), '');
  if (counters) {
    if (chartFile) out.push(`![time and downtime against memory size](${chartFile})`, '');

    out.push(
      '## Targets',
      '',
      `Judged at ${TARGET_SIZES_MIB.from} MiB to ${TARGET_SIZES_MIB.to} MiB for time and downtime, at every size for memory.`,
      '',
    );
    out.push(
      targets.length === 0
        ? '(no size in range)'
        : table(
            ['target', 'size', 'measured', 'limit', 'verdict'],
            targets.map((t) => [
              t.what,
              `${t.sizeMiB} MiB`,
              t.unit === 'x' ? formatRatio(t.value) : mibValue(t.value),
              t.unit === 'x' ? `${t.limit}x` : `${t.limit} MiB`,
              verdict(t),
            ]),
          ),
      '',
    );
    const met = targets.filter((t) => t.met === true).length;
    const missed = targets.filter((t) => t.met === false).length;
    out.push(`${met} met, ${missed} missed, ${targets.length - met - missed} without data.`, '');

    out.push('## Migrations through the stack', '');
    out.push(
      table(
        [
          'size',
          'store',
          'route',
          'ok',
          'total',
          'floor',
          'total / floor',
          'downtime',
          'downtime / bare',
          'frozen (record)',
          'CLI wall',
          'agent peak RSS',
        ],
        sizes.flatMap((size) =>
          size.migrations.map((m) => [
            `${size.sizeMiB} MiB`,
            m.store,
            m.route,
            `${m.ok}/${m.ok + m.failed}${m.continuityBroken > 0 ? ` (${m.continuityBroken} count broken)` : ''}`,
            formatSpread(m.total),
            `${seconds(m.floorMs)} (${m.store === 'file' ? 'C+R' : 'C+max(U,D)+R'})`,
            formatRatio(m.totalRatio),
            formatSpread(m.downtime),
            formatRatio(m.downtimeRatio),
            formatSpread(m.frozen),
            formatSpread(m.wall),
            mibValue(m.agentRssPeakMiB),
          ]),
        ),
      ),
      '',
    );
  }

  if (run.options.approachSizes.length > 0) out.push(...approachSection(run, approaches));
  if (run.options.servers.length > 0) out.push(...serverSection(run, servers));

  if (counters) {
    out.push('## The floor (same run, one host)', '');
    out.push(
      table(
        ['size', 'archive', 'checkpoint C', 'restore R', 'C + R', 'bare downtime'],
        sizes.map((s) => [
          `${s.sizeMiB} MiB`,
          mib(s.floor.archiveBytes),
          formatSpread(s.floor.checkpoint),
          formatSpread(s.floor.restore),
          formatSpread(s.floor.pair),
          formatSpread(s.floor.downtime),
        ]),
      ),
      '',
    );

    out.push("## Plain transfers of the archive's size", '');
    const viaSeam = sizes.some((s) => Object.keys(s.objectStore).length > 0);
    out.push(
      table(
        ['size', 'store', 'SDK upload U', 'SDK download D', ...(viaSeam ? ['ObjectStore upload', 'ObjectStore download'] : [])],
        sizes.flatMap((s) =>
          run.options.stores.flatMap((store) => {
            const sdk = s.sdk[store];
            if (!sdk) return [];
            const seam = s.objectStore[store];
            return [
              [
                `${s.sizeMiB} MiB`,
                store,
                formatSpread(sdk.upload),
                formatSpread(sdk.download),
                ...(viaSeam ? [formatSpread(seam?.upload), formatSpread(seam?.download)] : []),
              ],
            ];
          }),
        ),
      ),
      '',
    );

    out.push(
      '## Phases (medians, seconds)',
      '',
      "From the migration record's timestamps (`core/migration.ts`); checkpoint is freeze to first byte (Podman writes the whole archive first).",
      '',
    );
    // Whatever phases the record reports, in its order: the pipeline's phases change as it does.
    const phases = [...new Set(sizes.flatMap((s) => s.migrations.flatMap((m) => Object.keys(m.phases))))];
    out.push(
      table(
        ['size', 'store', ...phases],
        sizes.flatMap((s) => s.migrations.map((m) => [`${s.sizeMiB} MiB`, m.store, ...phases.map((p) => seconds(m.phases[p]?.median))])),
      ),
      '',
    );

    out.push('## Memory', '', run.rssMethod, '');
    const processes = [...new Set(sizes.flatMap((s) => Object.keys(s.highWater)))].sort();
    out.push(
      table(
        ['size', "agents' peak", ...processes.map((p) => `${p} VmHWM`)],
        sizes.map((s) => [`${s.sizeMiB} MiB`, mibValue(agentPeakMiB(s)), ...processes.map((p) => mibValue(s.highWater[p]))]),
      ),
      '',
    );
  }

  out.push('## Incidents', '');
  out.push(
    run.incidents.length === 0
      ? 'None: every migration ended `done` with its count continuous.'
      : run.incidents.map((i) => `- ${i}`).join('\n'),
    '',
  );
  const listArg = (items: readonly (number | string)[]) => (items.length > 0 ? items.join(',') : "''");
  const rerun =
    `npm run bench -- --sizes ${listArg(run.options.sizes)} --approach-sizes ${listArg(run.options.approachSizes)} ` +
    `--reps ${run.options.reps} --stores ${listArg(run.options.stores)} --servers ${listArg(run.options.servers)} --server-sizes ${listArg(run.options.serverSizes)}` +
    (run.options.postCopySizes ? ` --postcopy-sizes ${listArg(run.options.postCopySizes)}` : '') +
    (run.options.volumeSizes ? ` --volume-sizes ${listArg(run.options.volumeSizes)}` : '') +
    (run.options.frontmanFill
      ? ` --frontman-fill ${listArg(run.options.frontmanFill)} --frontman-rps ${run.options.frontmanRps ?? 200}`
      : '') +
    (run.options.engineSizes ? ` --engine-sizes ${listArg(run.options.engineSizes)}` : '') +
    (run.options.evacuationServices
      ? ` --evacuation-services ${listArg(run.options.evacuationServices)} --evacuation-mib ${run.options.evacuationMiB ?? 16}`
      : '');
  out.push(`Raw samples: \`results.json\` beside this report. Re-run: \`${rerun}\`.`, '');
  return out.join('\n');
}
