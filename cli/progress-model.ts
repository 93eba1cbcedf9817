import { bytes } from './format.js';

/**
 * What `ums migrate` shows of a transfer, kept apart from the terminal so that it can be tested: a count
 * that never moves back (progress facts arrive out of order and redelivered: the maximum is the truth), a
 * total that is the real size once the source reported it and the planner's estimate until then (said so),
 * and a rate and remaining time from the bytes seen over the time seen.
 */
export interface ProgressView {
  /** Bytes done, never less than any earlier view. */
  done: number;
  /** What `done` is measured against; undefined when nothing is known (then no percentage is shown). */
  total: number | undefined;
  /** Where the total comes from: the source's reported size, the planner's estimate, or nothing. */
  totalKind: 'exact' | 'estimate' | 'unknown';
  /** 0-100, undefined when the total is unknown; below 100 until the exact total is reached. */
  percent: number | undefined;
  /** Bytes per second over the transfer so far; undefined until two facts a moment apart were seen. */
  bytesPerSecond: number | undefined;
  /** Seconds left at that rate; undefined without a total or a rate. */
  remainingSeconds: number | undefined;
}

/** Shortest span the rate is computed over: two facts a few milliseconds apart say nothing about speed. */
const MIN_RATE_SPAN_MS = 250;

export class TransferProgress {
  private done = 0;
  private exact: number | undefined;
  private estimate: number | undefined;
  private first: { at: number; bytes: number } | undefined;
  private last: { at: number; bytes: number } | undefined;

  /** The planner's expected size: shown as an estimate until an exact size replaces it. */
  expect(bytes: number | undefined): void {
    if (bytes !== undefined && bytes > 0) this.estimate = bytes;
  }

  /** The real size (the source's checkpoint facts): from now on the total. */
  exactTotal(bytes: number | undefined): void {
    if (bytes !== undefined && bytes > 0) this.exact = bytes;
  }

  /** A progress fact; an older or repeated one (fewer bytes than already seen) changes nothing. */
  observe(bytes: number, at: number = Date.now()): void {
    if (!Number.isFinite(bytes) || bytes <= this.done) return;
    this.done = bytes;
    this.first ??= { at, bytes };
    this.last = { at, bytes };
  }

  view(): ProgressView {
    const { done } = this;
    const totalKind = this.exact !== undefined ? 'exact' : this.estimate !== undefined ? 'estimate' : 'unknown';
    // An estimate that the transfer outgrew is no total any more: show the count against itself, not 100%.
    const raw = this.exact ?? this.estimate;
    const total = raw === undefined ? undefined : Math.max(raw, done);
    let percent: number | undefined;
    if (total !== undefined) {
      percent = Math.floor((done / total) * 100);
      if (totalKind !== 'exact' || done < total) percent = Math.min(percent, 99);
    }
    const span = this.first && this.last ? this.last.at - this.first.at : 0;
    const bytesPerSecond =
      this.first && this.last && span >= MIN_RATE_SPAN_MS ? ((this.last.bytes - this.first.bytes) * 1000) / span : undefined;
    const remainingSeconds =
      total !== undefined && bytesPerSecond !== undefined && bytesPerSecond > 0 ? Math.max(0, total - done) / bytesPerSecond : undefined;
    return { done, total, totalKind, percent, bytesPerSecond, remainingSeconds };
  }
}

/** The words beside the bar: the count against its total (marked `~` when estimated, `?` when unknown), rate, time left. */
export function describeProgress(view: ProgressView): { percent: string; size: string; rate: string; eta: string } {
  const size =
    view.total === undefined
      ? `${bytes(view.done)}/? (size not known yet)`
      : `${bytes(view.done)}/${view.totalKind === 'estimate' ? '~' : ''}${bytes(view.total)}`;
  return {
    percent: view.percent === undefined ? '?%' : `${view.percent}%`,
    size,
    rate: view.bytesPerSecond === undefined ? '' : `${bytes(view.bytesPerSecond)}/s`,
    eta:
      view.remainingSeconds === undefined
        ? ''
        : `${view.totalKind === 'estimate' ? 'about ' : ''}${Math.ceil(view.remainingSeconds)} s left`,
  };
}
