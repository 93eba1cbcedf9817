import { readFile } from 'node:fs/promises';

/**
 * Resident memory of the stack's processes from /proc/<pid>/status. VmRSS is sampled while a migration
 * runs (a sampler can miss a spike shorter than its interval); VmHWM is the kernel's own high-water mark
 * since the process started, exact but cumulative, so the agents are restarted at each size to read it.
 */
export const RSS_SAMPLE_MS = 50;

async function statusField(pid: number, field: 'VmRSS' | 'VmHWM'): Promise<number | undefined> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => undefined);
  const match = status && new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
  return match ? Number(match[1]) / 1024 : undefined;
}

export const highWaterMiB = (pid: number): Promise<number | undefined> => statusField(pid, 'VmHWM');

export interface RssSampler {
  /** Stops sampling (idempotent); MiB, the largest VmRSS seen per process name. */
  stop(): Promise<{ peaks: Record<string, number>; samples: number }>;
}

export function sampleRss(processes: ReadonlyMap<string, number>): RssSampler {
  const peaks: Record<string, number> = {};
  let samples = 0;
  let busy: Promise<void> = Promise.resolve();
  const sampleOnce = async () => {
    await Promise.all(
      [...processes].map(async ([name, pid]) => {
        const rss = await statusField(pid, 'VmRSS');
        if (rss !== undefined && rss > (peaks[name] ?? 0)) peaks[name] = rss;
      }),
    );
    samples++;
  };
  // One read at a time: if /proc reads ever take longer than the interval, skip ticks instead of piling up.
  let inFlight = false;
  const timer = setInterval(() => {
    if (inFlight) return;
    inFlight = true;
    busy = sampleOnce().finally(() => {
      inFlight = false;
    });
  }, RSS_SAMPLE_MS);
  busy = sampleOnce();
  let stopped: Promise<{ peaks: Record<string, number>; samples: number }> | undefined;
  return {
    stop: () =>
      (stopped ??= (async () => {
        clearInterval(timer);
        await busy;
        await sampleOnce();
        return { peaks, samples };
      })()),
  };
}
