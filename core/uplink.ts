import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A host's way out to its object store, shared by every upload of the agent (checkpoints, shipped images, the
 * link probe), which both caps and measures it.
 *
 * The cap (`--max-upload-rate`) keeps migrations from taking the whole link from the services that still run
 * here, as QEMU's migration max-bandwidth does: each chunk is admitted no sooner than the rate allows after
 * the one before it, whichever migration it belongs to.
 *
 * The measure is what the evacuation policy predicts with (core/evacuation-plan.ts): bytes stored over the time
 * at least one upload was under way, per busy period, so that two migrations sharing the link measure the link,
 * not half of it each, and time spent waiting on something else (a destination, the engine) does not count.
 */
export class Uplink {
  private admittedUntil = 0;
  private active = 0;
  private busySince = 0;
  private busyBytes = 0;

  /**
   * @param limitBytesPerSecond the cap; undefined: none
   * @param onMeasured called after a busy period that moved enough bytes to say something of the rate
   */
  constructor(
    readonly limitBytesPerSecond: number | undefined,
    private readonly onMeasured: (bytesPerSecond: number) => void = () => undefined,
    /** Below this a busy period is all latency, not a rate. */
    private readonly minMeasuredBytes = 16 * 1024 * 1024,
  ) {
    if (limitBytesPerSecond !== undefined && !(limitBytesPerSecond > 0)) {
      throw new RangeError(`an upload rate cap must be a positive number of bytes per second, not ${limitBytesPerSecond}`);
    }
  }

  /** Sends `bytes` through `put` once the cap admits them, counting them toward the measure when `put` succeeds. */
  async send<T>(bytes: number, put: () => Promise<T>): Promise<T> {
    if (this.active === 0) {
      this.busySince = Date.now();
      this.busyBytes = 0;
    }
    this.active += 1;
    try {
      await this.admit(bytes);
      const result = await put();
      this.busyBytes += bytes;
      return result;
    } finally {
      this.active -= 1;
      if (this.active === 0) this.measure();
    }
  }

  private async admit(bytes: number): Promise<void> {
    if (this.limitBytesPerSecond === undefined) return;
    const now = Date.now();
    const start = Math.max(now, this.admittedUntil);
    this.admittedUntil = start + (bytes * 1000) / this.limitBytesPerSecond;
    // The chunk goes at the end of its slot, so that no second ever carries more than the cap on average.
    if (this.admittedUntil > now) await sleep(this.admittedUntil - now);
  }

  private measure(): void {
    const ms = Date.now() - this.busySince;
    if (this.busyBytes >= this.minMeasuredBytes && ms > 0) this.onMeasured(Math.round((this.busyBytes * 1000) / ms));
  }
}
