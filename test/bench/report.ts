import { agentPeakMiB, checkTargets, TARGET_SIZES_MIB, type SizeSummary, type TargetCheck } from './analysis.js';
import type { BenchRun } from './samples.js';
import { formatRatio, formatSpread, seconds } from './statistics.js';

/** The console table and the Markdown report; both read the same summaries. */
const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
const mibValue = (value: number | undefined): string => (value === undefined ? '-' : `${value.toFixed(0)} MiB`);
const verdict = (check: TargetCheck): string => (check.met === undefined ? 'no data' : check.met ? 'met' : '**missed**');

function table(header: string[], rows: string[][]): string {
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((row) => `| ${row.join(' | ')} |`)].join('\n');
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
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i] ?? 0)).join('  ');
  return [line(header), ...rows.map(line)].join('\n');
}

export function markdownReport(run: BenchRun, sizes: SizeSummary[], chartFile: string | undefined): string {
  const targets = checkTargets(sizes);
  const out: string[] = [];
  out.push('# UMS benchmark: migration time and downtime against the Podman floor', '');
  out.push(
    `Run ${run.startedAt} to ${run.finishedAt} on ${run.machine.cpus} CPUs, ${run.machine.memGiB} GiB, kernel ${run.machine.kernel}, Node ${run.machine.node}. ` +
      `Sizes ${run.options.sizes.join(', ')} MiB, ${run.options.reps} repetition(s), stores ${run.options.stores.join(', ')}. ` +
      'All servers are local (loopback); the figures compare the pipeline with the floor measured in the same run, not with real clouds.',
    '',
  );
  out.push(
    'Figures are medians over the repetitions with (min-max), in seconds. **Floor**: bare `podman container checkpoint --export --compress none` (C) and ' +
      '`podman container restore --import` (R) on one host; bare downtime is the longest counter gap across that pair. **U / D**: the same number of bytes as ' +
      'the archive uploaded from a file and downloaded into a file with the cloud SDK directly. **Total**: the migration record\'s request to finish; ' +
      '**downtime**: the longest gap between two ticks of the 10 ms counter, source then destination (the paper\'s method). Ratios are of medians from this run.',
    '',
  );
  if (chartFile) out.push(`![time and downtime against memory size](${chartFile})`, '');

  out.push('## Targets', '', `Judged at ${TARGET_SIZES_MIB.from} MiB to ${TARGET_SIZES_MIB.to} MiB for time and downtime, at every size for memory.`, '');
  out.push(
    targets.length === 0
      ? '(no size in range)'
      : table(
          ['target', 'size', 'measured', 'limit', 'verdict'],
          targets.map((t) => [t.what, `${t.sizeMiB} MiB`, t.unit === 'x' ? formatRatio(t.value) : mibValue(t.value), t.unit === 'x' ? `${t.limit}x` : `${t.limit} MiB`, verdict(t)]),
        ),
    '',
  );
  const met = targets.filter((t) => t.met === true).length;
  const missed = targets.filter((t) => t.met === false).length;
  out.push(`${met} met, ${missed} missed, ${targets.length - met - missed} without data.`, '');

  out.push('## Migrations through the stack', '');
  out.push(
    table(
      ['size', 'store', 'route', 'ok', 'total', 'floor', 'total / floor', 'downtime', 'downtime / bare', 'frozen (record)', 'CLI wall', 'agent peak RSS'],
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

  out.push('## The floor (same run, one host)', '');
  out.push(
    table(
      ['size', 'archive', 'checkpoint C', 'restore R', 'C + R', 'bare downtime'],
      sizes.map((s) => [`${s.sizeMiB} MiB`, mib(s.floor.archiveBytes), formatSpread(s.floor.checkpoint), formatSpread(s.floor.restore), formatSpread(s.floor.pair), formatSpread(s.floor.downtime)]),
    ),
    '',
  );

  out.push('## Plain transfers of the archive\'s size', '');
  const viaSeam = sizes.some((s) => Object.keys(s.objectStore).length > 0);
  out.push(
    table(
      ['size', 'store', 'SDK upload U', 'SDK download D', ...(viaSeam ? ['ObjectStore upload', 'ObjectStore download'] : [])],
      sizes.flatMap((s) =>
        run.options.stores.flatMap((store) => {
          const sdk = s.sdk[store];
          if (!sdk) return [];
          const seam = s.objectStore[store];
          return [[`${s.sizeMiB} MiB`, store, formatSpread(sdk.upload), formatSpread(sdk.download), ...(viaSeam ? [formatSpread(seam?.upload), formatSpread(seam?.download)] : [])]];
        }),
      ),
    ),
    '',
  );

  out.push('## Phases (medians, seconds)', '', 'From the migration record\'s timestamps (`core/migration.ts`); checkpoint is freeze to first byte (Podman writes the whole archive first).', '');
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
      ['size', 'agents\' peak', ...processes.map((p) => `${p} VmHWM`)],
      sizes.map((s) => [`${s.sizeMiB} MiB`, mibValue(agentPeakMiB(s)), ...processes.map((p) => mibValue(s.highWater[p]))]),
    ),
    '',
  );

  out.push('## Incidents', '');
  out.push(run.incidents.length === 0 ? 'None: every migration ended `done` with its count continuous.' : run.incidents.map((i) => `- ${i}`).join('\n'), '');
  out.push('Raw samples: `results.json` beside this report. Re-run: `npm run bench -- --sizes ' + run.options.sizes.join(',') + ` --reps ${run.options.reps}\`.`, '');
  return out.join('\n');
}
