import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger } from '../../core/log.js';
import { countsOf, LazyContainerHosts, waitFor, type Counter } from '../post-copy/lazy-container-hosts.js';
import { rate, type PostCopySample } from './post-copy-run.js';

/**
 * Container-level post-copy against stop-and-copy for the same container, between the same two simulated
 * Podman hosts, in one run (test/post-copy/lazy-container-hosts.ts): Podman's own checkpoint and restore
 * made lazy by the runtime shim, the pages through the agents' relays (agents/post-copy/lazy-container.ts),
 * against Podman's checkpoint with every page in the archive, and against the same with the memory beside
 * the archive (agents/memory/page-images.ts). Both stop-and-copy runs stream the checkpoint straight into
 * the restore, so they pay no store: across a real network or a cloud store, their freeze grows with
 * memory / bandwidth and post-copy's does not.
 */
const log = createLogger('bench-post-copy-container');

/** The counter ticks every 10 ms; a freeze shows as the gap between two ticks. */
const TICK_MS = 10;
const WARM_UP_MS = 1_500;

export async function measureContainerPostCopy(sizes: number[], reps: number): Promise<PostCopySample[]> {
  const hosts = await LazyContainerHosts.create('bench-lazy-ctr');
  const samples: PostCopySample[] = [];
  try {
    for (const mib of sizes) {
      for (let rep = 1; rep <= reps; rep++) {
        for (const mode of ['stop-and-copy', 'memory-beside', 'post-copy'] as const) {
          const counter = await hosts.startCounter({ mib, tickMs: TICK_MS, verifyEvery: 0 });
          await sleep(WARM_UP_MS);
          try {
            const sample = mode === 'post-copy' ? await lazyOnce(hosts, counter, mib, rep) : await copyOnce(hosts, counter, mib, rep, mode);
            log.info(sample, 'container post-copy sample');
            samples.push(sample);
          } finally {
            await hosts.remove(counter);
          }
        }
      }
    }
  } finally {
    await hosts.destroy();
  }
  return samples;
}

async function lazyOnce(hosts: LazyContainerHosts, counter: Counter, mib: number, rep: number): Promise<PostCopySample> {
  const run = await hosts.migrateLazily(counter);
  const [pages, dumpEnd] = await Promise.all([run.restore.ended(), run.dump.ended()]);
  const allArrivedAt = Date.now();
  if (pages.kind !== 'complete' || dumpEnd.kind !== 'moved') {
    throw new Error(`the page stream ended ${pages.kind} / ${dumpEnd.kind}: ${'reason' in pages ? pages.reason : ''}`);
  }
  const verified = await verifyAfter(hosts, counter);
  return {
    level: 'container',
    mib,
    mode: 'post-copy',
    rep,
    ...(await freezeOf(hosts, counter, run.frozenAt, run.restoredAt, allArrivedAt)),
    allPagesMs: allArrivedAt - run.frozenAt,
    relayedBytes: pages.bytesFromPeer,
    imageBytes: run.archiveBytes,
    verified,
  };
}

async function copyOnce(
  hosts: LazyContainerHosts,
  counter: Counter,
  mib: number,
  rep: number,
  mode: 'stop-and-copy' | 'memory-beside',
): Promise<PostCopySample> {
  const run = await hosts.migrateStopAndCopy(counter, { memoryBeside: mode === 'memory-beside' });
  const verified = await verifyAfter(hosts, counter);
  const freeze = await freezeOf(hosts, counter, run.frozenAt, run.restoredAt, undefined);
  return { level: 'container', mib, mode, rep, ...freeze, imageBytes: run.streamBytes, verified };
}

/** Asks the restored counter to check its whole block (SIGUSR1) and waits for its answer. */
async function verifyAfter(hosts: LazyContainerHosts, counter: Counter): Promise<boolean> {
  const before = (await hosts.logs(hosts.destination, counter.name)).split('\n').length;
  await hosts.destination.host.podman(['kill', '--signal', 'USR1', counter.name]);
  const line = await waitFor(async () => {
    const lines = (await hosts.logs(hosts.destination, counter.name)).split('\n').slice(before - 1);
    return lines.find((text) => text.startsWith('verify'));
  }, 'the restored counter to check its memory');
  return line.startsWith('verify ok');
}

async function freezeOf(
  hosts: LazyContainerHosts,
  counter: Counter,
  frozenAt: number,
  restoredAt: number,
  allArrivedAt: number | undefined,
): Promise<Pick<PostCopySample, 'frozenMs' | 'restoreReturnedMs' | 'ticksPerSecondBefore' | 'ticksPerSecondWhileMoving'>> {
  const atSource = countsOf(await hosts.logs(hosts.source, counter.name));
  const last = atSource.at(-1);
  const first = countsOf(await hosts.logs(hosts.destination, counter.name)).find((tick) => tick.count > (last?.count ?? 0));
  if (last === undefined || first === undefined) throw new Error('the counter did not tick on both sides of the migration');
  const atDestination = countsOf(await hosts.logs(hosts.destination, counter.name));
  return {
    frozenMs: first.at - last.at,
    restoreReturnedMs: restoredAt - frozenAt,
    ticksPerSecondBefore: rate(atSource, frozenAt - 1000, frozenAt),
    ...(allArrivedAt === undefined ? {} : { ticksPerSecondWhileMoving: rate(atDestination, first.at, allArrivedAt) }),
  };
}
