/**
 * Container-level post-copy through Podman's own checkpoint and restore (docs/design/post-copy.md §5.2):
 * the runtime shim Podman calls for runc (agents/post-copy/runc-shim, installed by infra/host-setup.sh and
 * named in infra/podman/containers.conf) makes both lazy when the agent's code (agents/post-copy/
 * lazy-container.ts) left it a marker, and the pages move through the two agents' page relays over the
 * stack's WAN between two simulated hosts, each relay in its host's network namespace.
 *
 * Asserted through what the counter itself says: its count goes on from where it froze, and its check of
 * the whole random block ("verify ok", which reads every page) passes after all pages arrived; through the
 * archive's size (the memory is not in it); and through Podman's records at both ends. The fault case kills
 * the source's relay (its host lost) while pages move: the destination's copy must wait on its next missing
 * page and never read one that did not arrive ("verify BAD"), and end up killed; the source's tasks, thawed
 * by CRIU, are killed by their pid (Podman's record of them is false then, §2): no copy runs. Bringing the
 * service back cold is the saga's part.
 *
 * Needs root, Podman with runc, CRIU >= 4.2 with lazy pages (infra/host-setup.sh).
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DEFAULT_MARKER_DIR } from '../../agents/post-copy/lazy-container.js';
import { alive, countsAfter, countsOf, LazyContainerHosts, waitFor, type Counter } from '../post-copy/lazy-container-hosts.js';

/** The shim's markers of a container, and pages staged for it, left behind (none after a migration). */
async function leftovers(id: string, graphRoot: string | undefined): Promise<string[]> {
  const markers = (await readdir(DEFAULT_MARKER_DIR).catch(() => [] as string[])).filter(
    (n) => n.startsWith(id) && /memory|images/.test(n),
  );
  assert.ok(graphRoot !== undefined, 'the engine says where its storage is');
  const staged = (await readdir(join(graphRoot, 'ums-memory')).catch(() => [] as string[])).filter((n) => n.startsWith(id.slice(0, 12)));
  return [...markers, ...staged];
}

const MIB = 256;
const TICK_MS = 100;
/** The counter checks its whole block every this many ticks. */
const VERIFY_EVERY = 10;

describe('container-level post-copy through Podman and the runtime shim, between two hosts on the WAN', { timeout: 600_000 }, () => {
  let hosts: LazyContainerHosts;

  before(async () => {
    hosts = await LazyContainerHosts.create('lazy-ctr', { silenceMs: 1_000, resumeWithinMs: 3_000 });
  });

  after(async () => {
    await hosts?.destroy();
  });

  const startCounter = () => hosts.startCounter({ mib: MIB, tickMs: TICK_MS, verifyEvery: VERIFY_EVERY });
  const lastCount = async (counter: Counter, side: 'source' | 'destination') =>
    countsOf(await hosts.logs(hosts[side], counter.name)).at(-1)?.count ?? 0;
  /** The counts after `count` on that side, once a full check of the memory ran there (each page was read). */
  const checkedAfter = (counter: Counter, side: 'source' | 'destination', count: number, what: string) =>
    waitFor(async () => {
      const after = countsAfter(await hosts.logs(hosts[side], counter.name), count);
      return after.verified.length > 0 ? after : undefined;
    }, what);

  it(`moves a ${MIB} MiB counter: its count goes on, every page checks after all arrived, Podman's records are true`, async () => {
    const counter = await startCounter();
    const run = await hosts.migrateLazily(counter);
    const frozenAt = await lastCount(counter, 'source');
    assert.ok(run.archiveBytes < 16 * 1024 * 1024, `the archive holds no memory: ${run.archiveBytes} bytes for ${MIB} MiB`);

    const [pagesAtDestination, dumpEnd] = await Promise.all([run.restore.ended(), run.dump.ended()]);
    assert.equal(pagesAtDestination.kind, 'complete', JSON.stringify(pagesAtDestination));
    assert.equal(dumpEnd.kind, 'moved', JSON.stringify(dumpEnd));
    assert.ok(pagesAtDestination.bytesFromPeer >= MIB * 1024 * 1024, `${pagesAtDestination.bytesFromPeer} bytes of pages arrived`);

    // A check that ran after the restore read every page, so each one arrived, and intact.
    const checked = await checkedAfter(counter, 'destination', frozenAt, 'a full check of the memory on the destination');
    assert.equal(checked.first, frozenAt + 1, 'the count goes on from where it froze');
    assert.deepEqual(checked.bad, [], 'no page came back wrong');

    const [atSource, atDestination] = await Promise.all([
      hosts.source.host.podman(['inspect', counter.name, '--format', '{{.State.Status}} {{.State.Checkpointed}}']),
      hosts.destination.host.podman(['inspect', counter.name, '--format', '{{.State.Status}} {{.State.Restored}}']),
    ]);
    assert.equal(atSource.stdout.trim(), 'exited true');
    assert.equal(atDestination.stdout.trim(), 'running true');
    assert.equal(alive(counter.pid), false, 'the source tasks are gone once every page was served');
    await hosts.remove(counter);
  });

  it(`stop-and-copy with the memory beside the export: a ${MIB} MiB counter's pages are read as CRIU writes them, not in Podman's archive; its count goes on and every page checks`, async () => {
    const counter = await startCounter();
    const run = await hosts.migrateStopAndCopy(counter);
    const frozenAt = await lastCount(counter, 'source');
    assert.ok(run.pageBytes >= MIB * 1024 * 1024, `the section carried ${run.pageBytes} bytes of page images for ${MIB} MiB`);
    assert.deepEqual(
      run.exportNames.filter((name) => /pages-\d+\.img$/.test(name)),
      [],
      "Podman's export holds no page image",
    );
    assert.ok(run.exportNames.includes('checkpoint/ums-pages.id'), `the export says where its pages went: ${run.exportNames.join(', ')}`);
    const checked = await checkedAfter(counter, 'destination', frozenAt, 'a full check of the memory on the destination');
    assert.equal(checked.first, frozenAt + 1, 'the count goes on from where it froze');
    assert.deepEqual(checked.bad, [], 'no page came back wrong');
    assert.deepEqual(
      await leftovers(counter.id, (await hosts.destination.engine.info()).graphRoot),
      [],
      'no marker or staged page is left',
    );
    await hosts.remove(counter);
  });

  it('stop-and-copy with the memory beside, turned back: the source resumes from its kept checkpoint, its pages put back; the next migration sends only new pages', async () => {
    const counter = await startCounter();
    const run = await hosts.migrateStopAndCopy(counter, { turnBack: true });
    assert.ok(run.pageBytes >= MIB * 1024 * 1024, `${run.pageBytes} bytes of page images were read`);
    const resumedAt = await lastCount(counter, 'source');
    const checked = await checkedAfter(counter, 'source', resumedAt, 'a full check of the memory on the source, resumed');
    assert.deepEqual(checked.bad, [], 'every page is back');

    // The kept checkpoint's images are still in the container's bundle: the next dump must not send them.
    await hosts.migrateStopAndCopy(counter);
    const frozenAt = await lastCount(counter, 'source');
    const moved = await checkedAfter(counter, 'destination', frozenAt, 'a full check of the memory on the destination');
    assert.equal(moved.first, frozenAt + 1, 'the count goes on from where it froze');
    assert.deepEqual(moved.bad, [], 'no page came back wrong');
    await hosts.remove(counter);
  });

  it('the source host is lost while pages move: the destination copy waits on its next missing page and never reads a zero page; no copy runs after', async () => {
    const counter = await startCounter();
    const run = await hosts.migrateLazily(counter);
    const frozenAt = await lastCount(counter, 'source');
    // The source host dies: its relay with it (SIGKILL, no goodbye).
    await hosts.killRelays('source');

    const [pagesAtDestination, dumpEnd] = await Promise.all([run.restore.ended(), run.dump.ended()]);
    assert.equal(pagesAtDestination.kind, 'lost', JSON.stringify(pagesAtDestination));
    assert.equal(dumpEnd.kind, 'lost', JSON.stringify(dumpEnd));

    // By now (resumeWithinMs, 3 s) the copy reached a full check: it waits on a page that never came.
    const stuck = await lastCount(counter, 'destination');
    await sleep(VERIFY_EVERY * TICK_MS * 2);
    assert.equal(await lastCount(counter, 'destination'), stuck, 'the destination copy is blocked');
    assert.deepEqual(
      countsAfter(await hosts.logs(hosts.destination, counter.name), frozenAt).bad,
      [],
      'no copy read a page that did not arrive',
    );

    await hosts.destination.engine.removeContainer(counter.name, { force: true });
    await run.restore.release();
    // CRIU either thawed the source's tasks (its socket failed: Podman says Exited and tore their network
    // down, so they are killed by pid) or ended them (it took the relay's FIN for the last page).
    if (dumpEnd.kind === 'lost' && dumpEnd.sourceTasks === 'thawed') process.kill(counter.pid, 'SIGKILL');
    await waitFor(async () => !alive(counter.pid) || undefined, 'the source task to be gone');
    const { stdout } = await hosts.destination.host.podman(['ps', '-a', '--filter', `name=${counter.name}`, '--format', '{{.Names}}']);
    assert.equal(stdout.trim(), '', 'nothing left on the destination');
    await hosts.remove(counter);
  });
});
