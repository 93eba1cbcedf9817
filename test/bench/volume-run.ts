import { appendFile, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runMigration, type MigrationContext, type MigrationRoute } from './migration-run.js';
import type { MigrationOutcome } from './samples.js';
import { writeRandomFile } from './sdk-transfer.js';
import { formatRatio, formatSpread, ratio, spread } from './statistics.js';

/** The counter's memory in every volume migration: small, so that the volume is what differs. */
export const VOLUME_BENCH_MEMORY_MIB = 64;
const FILES = 16;

/**
 * How the volume moves: `none` is the same container without a volume (the baseline); `outside` a plain
 * local volume, which UMS copies while the service runs (agents/volumes/); `archive` the same bytes in a
 * local volume with driver options (bound to a host directory), which UMS leaves to Podman's archive: the
 * volume moves while the service is frozen, as Podman alone would move it.
 */
export type VolumeVariant = 'none' | 'outside' | 'archive';
export const VOLUME_VARIANTS: readonly VolumeVariant[] = ['none', 'outside', 'archive'];

export interface VolumeSample extends MigrationOutcome {
  volumeMiB: number;
  variant: VolumeVariant;
}

/**
 * One migration of the counter with (or without) a volume of `volumeMiB` in FILES random files, through the
 * file store, while a writer appends to one more file of the volume every 10 ms (a service's log).
 */
export async function runVolumeMigration(
  context: MigrationContext,
  route: MigrationRoute,
  scratch: string,
  volumeMiB: number,
  variant: VolumeVariant,
  rep: number,
): Promise<VolumeSample> {
  const volume = `bench-vol-${volumeMiB}-${variant}-${rep}`;
  const bound = join(scratch, volume);
  let dir: string | undefined;
  const removeVolume = async () => {
    for (const host of [route.source, route.destination]) await host.podman(['volume', 'rm', '-f', volume]).catch(() => undefined);
    await rm(bound, { recursive: true, force: true });
  };
  await removeVolume();
  if (variant === 'outside') {
    await route.source.podman(['volume', 'create', volume]);
    dir = join(route.source.volumesDir, volume, '_data');
  } else if (variant === 'archive') {
    await mkdir(bound, { recursive: true });
    await route.source.podman(['volume', 'create', '--opt', 'type=none', '--opt', 'o=bind', '--opt', `device=${bound}`, volume]);
    dir = bound;
  }
  try {
    if (dir !== undefined) await fill(dir, volumeMiB);
    let writing = dir !== undefined;
    const writer = (async () => {
      for (let i = 0; writing && dir !== undefined; i++) {
        await appendFile(join(dir, 'app.log'), `${new Date().toISOString()} line ${i}\n`).catch(() => undefined);
        await sleep(10);
      }
    })();
    const sample = await runMigration(context, route, VOLUME_BENCH_MEMORY_MIB, rep, {
      name: `vol-${volumeMiB}-${variant}-${rep}`,
      ...(dir !== undefined ? { runArgs: ['-v', `${volume}:/data`] } : {}),
    }).finally(() => {
      writing = false;
    });
    await writer;
    return { ...sample, volumeMiB, variant };
  } finally {
    await removeVolume();
  }
}

async function fill(dir: string, volumeMiB: number): Promise<void> {
  const each = Math.floor((volumeMiB * 1024 * 1024) / FILES);
  for (let i = 0; i < FILES; i++) await writeRandomFile(join(dir, `data-${i}.bin`), each);
}

/** The report's section: frozen time and downtime per variant, and each against the same run's no-volume baseline. */
export function volumeReport(samples: VolumeSample[]): string {
  const sizes = [...new Set(samples.map((s) => s.volumeMiB))];
  const of = (mib: number, variant: VolumeVariant) => samples.filter((s) => s.volumeMiB === mib && s.variant === variant && s.ok);
  const median = (list: VolumeSample[], pick: (s: VolumeSample) => number) => spread(list.map(pick))?.median;
  const rows: string[][] = [];
  const verdicts: string[] = [];
  for (const mib of sizes) {
    const baseline = of(mib, 'none');
    for (const variant of VOLUME_VARIANTS) {
      const list = of(mib, variant);
      const all = samples.filter((s) => s.volumeMiB === mib && s.variant === variant);
      rows.push([
        variant === 'none'
          ? `no volume (${mib} MiB run)`
          : `${mib} MiB volume, ${variant === 'outside' ? 'outside the freeze (UMS)' : "in Podman's archive"}`,
        `${list.length}/${all.length}`,
        formatSpread(spread(list.map((s) => s.frozenMs))),
        formatRatio(
          ratio(
            median(list, (s) => s.frozenMs),
            median(baseline, (s) => s.frozenMs),
          ),
        ),
        formatSpread(spread(list.map((s) => s.downtimeMs))),
        formatSpread(spread(list.map((s) => s.totalMs))),
        formatRatio(
          ratio(
            median(list, (s) => s.totalMs),
            median(baseline, (s) => s.totalMs),
          ),
        ),
      ]);
    }
    const added = ratio(
      median(of(mib, 'outside'), (s) => s.frozenMs),
      median(baseline, (s) => s.frozenMs),
    );
    verdicts.push(
      `${mib} MiB volume: frozen ${formatRatio(added)} the no-volume baseline (target <= 1.20x: ${added === undefined ? 'no data' : added <= 1.2 ? 'met' : '**missed**'})`,
    );
  }
  return [
    '## Volumes outside the freeze',
    '',
    `The counter (${VOLUME_BENCH_MEMORY_MIB} MiB of memory) moved through the file store without a volume, with a volume of ${FILES} random files ` +
      'that UMS copies while it runs and then sends only what changed while frozen (agents/volumes/), and with the same bytes in a volume ' +
      "UMS leaves to Podman's archive (a local volume with driver options), which moves them while it is frozen. A writer appends to one " +
      'more file of the volume every 10 ms throughout. Medians (min-max), seconds; ratios of medians to the no-volume baseline of the same run.',
    '',
    '| run | ok | frozen (record) | frozen / no volume | downtime (counter) | total | total / no volume |',
    '|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    '',
    ...verdicts.map((v) => `- ${v}`),
  ].join('\n');
}
