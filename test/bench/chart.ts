import { writeFile } from 'node:fs/promises';
import { Resvg } from '@resvg/resvg-js';
import type { SizeSummary } from './analysis.js';
import type { BenchStore } from './samples.js';
import type { Spread } from './statistics.js';

/**
 * Time and downtime against memory size, the floor beside them, as an SVG drawn here (no plotting library
 * to install) and rendered to PNG by resvg (a prebuilt binary in an npm package). Points are medians,
 * whiskers min-max; dashed lines are floors from the same run.
 */
const COLORS: Record<BenchStore | 'floor', string> = { file: '#1b9e77', azure: '#0078d4', gcs: '#d62728', s3: '#ff7f0e', floor: '#222222' };
const WIDTH = 1200;
const HEIGHT = 560;
const PANEL = { top: 60, bottom: 420, width: 480 };
const PANEL_LEFT = [80, 680];

interface Series {
  label: string;
  color: string;
  dashed: boolean;
  points: Array<{ x: number; spread: Spread }>;
}

const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function niceMax(value: number): number {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  return ([1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((m) => m >= value) as number) ?? value;
}

function panel(left: number, title: string, series: Series[], xMax: number): string {
  const yMax = niceMax(Math.max(0.1, ...series.flatMap((s) => s.points.map((p) => p.spread.max / 1000))));
  const x = (v: number) => left + (v / xMax) * PANEL.width;
  const y = (seconds: number) => PANEL.bottom - (seconds / yMax) * (PANEL.bottom - PANEL.top);
  const parts: string[] = [];
  parts.push(
    `<text x="${left + PANEL.width / 2}" y="${PANEL.top - 20}" font-size="17" font-weight="bold" text-anchor="middle">${escape(title)}</text>`,
  );
  for (let i = 0; i <= 5; i++) {
    const value = (yMax * i) / 5;
    parts.push(`<line x1="${left}" x2="${left + PANEL.width}" y1="${y(value)}" y2="${y(value)}" stroke="#ddd"/>`);
    parts.push(`<text x="${left - 8}" y="${y(value) + 4}" font-size="12" text-anchor="end">${Number(value.toFixed(2))}</text>`);
  }
  const ticks = [...new Set(series.flatMap((s) => s.points.map((p) => p.x)))].sort((a, b) => a - b);
  for (const tick of ticks) {
    parts.push(`<line x1="${x(tick)}" x2="${x(tick)}" y1="${PANEL.bottom}" y2="${PANEL.bottom + 5}" stroke="#333"/>`);
    parts.push(`<text x="${x(tick)}" y="${PANEL.bottom + 20}" font-size="12" text-anchor="middle">${tick}</text>`);
  }
  parts.push(`<line x1="${left}" x2="${left + PANEL.width}" y1="${PANEL.bottom}" y2="${PANEL.bottom}" stroke="#333"/>`);
  parts.push(`<line x1="${left}" x2="${left}" y1="${PANEL.top}" y2="${PANEL.bottom}" stroke="#333"/>`);
  parts.push(
    `<text x="${left + PANEL.width / 2}" y="${PANEL.bottom + 42}" font-size="13" text-anchor="middle">memory held by the workload (MiB)</text>`,
  );
  parts.push(
    `<text transform="translate(${left - 50} ${(PANEL.top + PANEL.bottom) / 2}) rotate(-90)" font-size="13" text-anchor="middle">seconds</text>`,
  );
  for (const s of series) {
    const path = s.points.map((p, i) => `${i === 0 ? 'M' : 'L'}${x(p.x).toFixed(1)},${y(p.spread.median / 1000).toFixed(1)}`).join(' ');
    parts.push(`<path d="${path}" fill="none" stroke="${s.color}" stroke-width="2" ${s.dashed ? 'stroke-dasharray="7 5"' : ''}/>`);
    for (const p of s.points) {
      const px = x(p.x);
      if (p.spread.max > p.spread.min) {
        parts.push(
          `<line x1="${px}" x2="${px}" y1="${y(p.spread.min / 1000)}" y2="${y(p.spread.max / 1000)}" stroke="${s.color}" stroke-width="1.5"/>`,
        );
      }
      parts.push(
        s.dashed
          ? `<rect x="${px - 3.5}" y="${y(p.spread.median / 1000) - 3.5}" width="7" height="7" fill="white" stroke="${s.color}" stroke-width="1.5"/>`
          : `<circle cx="${px}" cy="${y(p.spread.median / 1000)}" r="4" fill="${s.color}"/>`,
      );
    }
  }
  return parts.join('\n');
}

function legend(series: Series[], top: number): string {
  const parts: string[] = [];
  series.forEach((s, i) => {
    const col = i % 3;
    const row = Math.floor(i / 3);
    const lx = 80 + col * 370;
    const ly = top + row * 22;
    parts.push(
      `<line x1="${lx}" x2="${lx + 30}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2" ${s.dashed ? 'stroke-dasharray="7 5"' : ''}/>`,
    );
    parts.push(`<text x="${lx + 38}" y="${ly + 4}" font-size="13">${escape(s.label)}</text>`);
  });
  return parts.join('\n');
}

export function chartSvg(sizes: SizeSummary[], stores: BenchStore[]): string {
  const xMax = Math.max(64, ...sizes.map((s) => s.sizeMiB));
  const pointsOf = (pick: (size: SizeSummary) => Spread | undefined) =>
    sizes.flatMap((size) => {
      const value = pick(size);
      return value ? [{ x: size.sizeMiB, spread: value }] : [];
    });
  const timeSeries: Series[] = [
    { label: 'floor: bare checkpoint + restore (C + R)', color: COLORS.floor, dashed: true, points: pointsOf((s) => s.floor.pair) },
  ];
  const downtimeSeries: Series[] = [
    { label: 'floor: bare pair downtime', color: COLORS.floor, dashed: true, points: pointsOf((s) => s.floor.downtime) },
  ];
  for (const store of stores) {
    timeSeries.push({
      label: `${store} store: migration (total, downtime)`,
      color: COLORS[store],
      dashed: false,
      points: pointsOf((s) => s.migrations.find((m) => m.store === store)?.total),
    });
    downtimeSeries.push({
      label: `${store} store: migration downtime`,
      color: COLORS[store],
      dashed: false,
      points: pointsOf((s) => s.migrations.find((m) => m.store === store)?.downtime),
    });
    if (store !== 'file') {
      timeSeries.push({
        label: `floor for ${store}: C + max(U, D) + R`,
        color: COLORS[store],
        dashed: true,
        points: sizes.flatMap((size) => {
          const floorMs = size.migrations.find((m) => m.store === store)?.floorMs;
          return floorMs === undefined ? [] : [{ x: size.sizeMiB, spread: { median: floorMs, min: floorMs, max: floorMs, n: 1 } }];
        }),
      });
    }
  }
  const legendItems = [...timeSeries, ...downtimeSeries.filter((s) => s.dashed)];
  const height = HEIGHT + Math.ceil(legendItems.length / 3) * 22 - 44;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="DejaVu Sans, Arial, sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    panel(PANEL_LEFT[0] as number, 'Total migration time (request to done)', timeSeries, xMax),
    panel(PANEL_LEFT[1] as number, 'Downtime (longest gap of a 10 ms counter)', downtimeSeries, xMax),
    legend(legendItems, HEIGHT - 80),
    `<text x="${WIDTH - 10}" y="${height - 8}" font-size="11" text-anchor="end" fill="#666">medians, whiskers min-max; dashed: floors from the same run</text>`,
    '</svg>',
  ].join('\n');
}

export async function writeChart(sizes: SizeSummary[], stores: BenchStore[], svgPath: string, pngPath: string): Promise<void> {
  const svg = chartSvg(sizes, stores);
  await writeFile(svgPath, svg);
  const png = new Resvg(svg, { background: 'white', font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' } }).render().asPng();
  await writeFile(pngPath, png);
}
