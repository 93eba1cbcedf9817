/** Medians with their range: the run is small (3 repetitions) and the machine drifts, so no means. */
export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function spread(values: readonly number[]): Spread | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
  return { median, min: sorted[0] as number, max: sorted.at(-1) as number, n: sorted.length };
}

export const seconds = (ms: number | undefined): string => (ms === undefined ? '-' : (ms / 1000).toFixed(2));

/** "1.23 (1.10-1.40)" in seconds */
export function formatSpread(s: Spread | undefined): string {
  if (!s) return '-';
  return s.n === 1 || s.min === s.max ? seconds(s.median) : `${seconds(s.median)} (${seconds(s.min)}-${seconds(s.max)})`;
}

export const ratio = (value: number | undefined, floor: number | undefined): number | undefined =>
  value === undefined || floor === undefined || floor <= 0 ? undefined : value / floor;

export const formatRatio = (r: number | undefined): string => (r === undefined ? '-' : `${r.toFixed(2)}x`);
