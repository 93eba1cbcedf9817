/**
 * Post-copy through the agents' page relay (agents/post-copy/page-relay.ts) with real CRIU lazy pages,
 * between two simulated hosts on the stack's WAN (infra/wan.ts): a process (test/post-copy/paged-workload.py)
 * is dumped lazily on the source host, restored on the destination host after only its non-memory images
 * moved, and its pages follow through the two relays over TLS-PSK. Each relay end runs as a process of its
 * own inside its host's network namespace (test/post-copy/lazy-migration.ts drives CRIU and the relays), so
 * a test can kill one as a crashed agent. The dump runs with --leave-stopped: the source stays complete and
 * resumable until its agent discards it.
 *
 * What is asserted is what the workload itself says: its tick count goes on from where it was frozen on the
 * destination, and every page checks after all have arrived ("verify ok"); after a failure, no copy ever
 * reads a page that did not arrive ("verify BAD" never appears), and exactly one copy runs in the end.
 *
 * Needs root, CRIU >= 4.2 with lazy pages (infra/host-setup.sh side-loads it), python3. Raises
 * fs.pipe-max-size to 4 MiB for its run (CRIU's lazy dump needs larger pipes) and puts it back.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { fetchPages, PageRelayError, servePages } from '../../agents/post-copy/page-relay.js';
import { join } from 'node:path';
import {
  criuErrors,
  killQuietly,
  PostCopyHosts,
  processState,
  sleep,
  waitChannel,
  waitForLine,
  type RelayTiming,
} from '../post-copy/lazy-migration.js';

const MIB = 256;

describe('post-copy through the page relay: a process moves between two hosts, its pages after it', { timeout: 300_000 }, () => {
  let hosts: PostCopyHosts;

  before(async () => {
    hosts = await PostCopyHosts.create('page-relay');
  });

  after(async () => {
    await hosts?.destroy();
  });

  async function migrate(timing: RelayTiming = {}) {
    return hosts.migrateLazily(await hosts.startWorkload({ mib: MIB }), timing);
  }

  it('moves a 256 MiB process: it goes on from its frozen tick on the destination, every page checks after all arrived', async () => {
    const run = await migrate();
    const ticksBefore = lastTick(await readFile(run.workload.log, 'utf8'));
    const daemonCode = await run.daemonExit;
    assert.equal(daemonCode, 0, `the lazy-pages daemon: ${await criuErrors(join(run.imagesAtDestination, 'lazy.log'))}`);
    const allArrivedAt = Date.now();
    const [sourceOutcome, destinationOutcome] = await Promise.all([run.sourceRelay.outcome, run.destinationRelay.outcome]);
    assert.equal(destinationOutcome.kind, 'complete');
    assert.equal(sourceOutcome.kind, 'complete', JSON.stringify(sourceOutcome));
    assert.ok(sourceOutcome.bytesToPeer >= MIB * 1024 * 1024, `${sourceOutcome.bytesToPeer} bytes of pages went through the relay`);
    assert.equal(await run.dumpExit, 0, `criu dump: ${await criuErrors(join(run.imagesAtSource, 'dump.log'))}`);
    // --leave-stopped: the source is complete and stopped until its agent discards it.
    assert.equal(await processState(run.workload.pid), 'T', 'the source is stopped, not gone');
    killQuietly(run.workload.pid);

    // The restored copy: verified after every page arrived, and its count went on.
    const verifiedAfter = await waitForLine(
      run.workload.log,
      (line, at) => line.startsWith('verify') && at > allArrivedAt,
      'a check after all pages arrived',
    );
    assert.match(verifiedAfter, /^verify ok/);
    const log = await readFile(run.workload.log, 'utf8');
    assert.doesNotMatch(log, /verify BAD/);
    assert.ok(lastTick(log) > ticksBefore, 'the restored copy ticks on');
    assert.equal(countOf(log, /^tick 1 /m), 1, 'it never started over');
    console.log(
      `post-copy ${MIB} MiB: restore returned ${run.restoredAt - run.frozenAt} ms after the freeze began, all pages ${allArrivedAt - run.frozenAt} ms; ` +
        `${sourceOutcome.bytesToPeer} bytes source to destination, ${sourceOutcome.bytesFromPeer} back; longest tick gap ${longestGap(log)} ms`,
    );
    killQuietly(run.restoredPid);
  });

  it("the source's relay dies while pages move: the restored copy waits instead of reading zeros, the source is resumed, one copy runs", async () => {
    // The destination gives the source 3 s to come back before it takes the stream as lost.
    const run = await migrate({ resumeWithinMs: 3_000 });
    // Kill the source agent's end while pages are still moving (256 MiB takes seconds through the relays).
    run.sourceRelay.child.kill('SIGKILL');
    const destinationOutcome = await run.destinationRelay.outcome;
    assert.equal(destinationOutcome.kind, 'lost', 'the destination knows the stream was lost');
    // The daemon's socket is held: the restored copy blocks on its next missing page, and stays blocked.
    // (The log cannot tell: CRIU may have thawed the source, which ticks on into the same file.)
    for (let sample = 0; sample < 6; sample++) {
      assert.equal(await waitChannel(run.restoredPid), 'handle_userfault', 'the restored copy waits for a page that will not come');
      await sleep(250);
    }
    assert.doesNotMatch(await readFile(run.workload.log, 'utf8'), /verify BAD/, 'no copy ever ran on zero-filled pages');
    // Its agent ends it (the relay keeps the socket until then).
    killQuietly(run.restoredPid);
    run.destinationRelay.child.stdin!.write('release\n');
    await run.daemonExit;
    // The source: CRIU either failed (reset: it thawed the source) or, had it seen the end, left it stopped
    // (--leave-stopped). Either way its memory is whole: resume it.
    await run.dumpExit;
    const state = await processState(run.workload.pid);
    assert.ok(state === 'S' || state === 'R' || state === 'T', `the source process is still there (${state})`);
    process.kill(run.workload.pid, 'SIGCONT');
    const resumedAt = Date.now();
    const checked = await waitForLine(
      run.workload.log,
      (line, at) => line.startsWith('verify') && at > resumedAt,
      'the resumed source to check its memory',
    );
    assert.match(checked, /^verify ok/);
    // Gone, or a zombie until this machine's PID 1 reaps it (it takes a second or two here).
    const restoredState = await processState(run.restoredPid);
    assert.ok(restoredState === undefined || restoredState === 'Z', `the restored copy is gone (${restoredState}): one copy runs`);
    killQuietly(run.workload.pid);
  });

  /**
   * Cuts the WAN link to the source relay's port for 3 s while pages move, the way `target` says: REJECT
   * answers every packet with a reset (the connection fails at once), DROP loses them silently (only the
   * relays' heartbeat notices; here after 1 s of silence). Either way the stream must resume where it was.
   */
  for (const target of ['REJECT', 'DROP'] as const) {
    it(`the link between the agents fails for 3 s (${target}) while pages move: the stream resumes where it was, every page checks`, async () => {
      const run = await migrate({ silenceMs: 1_000 });
      const rule = ['INPUT', '-p', 'tcp', '--dport', String(run.sourceRelayAddress.port), '-j', target];
      if (target === 'REJECT') rule.push('--reject-with', 'tcp-reset');
      await hosts.source.exec('iptables', ['-I', ...rule]);
      await sleep(3_000);
      await hosts.source.exec('iptables', ['-D', ...rule]);
      assert.equal(await run.daemonExit, 0, `the lazy-pages daemon: ${await criuErrors(join(run.imagesAtDestination, 'lazy.log'))}`);
      const allArrivedAt = Date.now();
      const [sourceOutcome, destinationOutcome] = await Promise.all([run.sourceRelay.outcome, run.destinationRelay.outcome]);
      assert.equal(destinationOutcome.kind, 'complete', JSON.stringify(destinationOutcome));
      assert.equal(sourceOutcome.kind, 'complete', JSON.stringify(sourceOutcome));
      assert.ok(destinationOutcome.reconnects >= 1, `the destination dialled again (${destinationOutcome.reconnects})`);
      assert.equal(await run.dumpExit, 0);
      killQuietly(run.workload.pid);
      process.kill(run.restoredPid, 'SIGUSR1');
      const checked = await waitForLine(
        run.workload.log,
        (line, at) => line.startsWith('verify') && at > allArrivedAt,
        'a check after all pages arrived',
      );
      assert.match(checked, /^verify ok/);
      assert.doesNotMatch(await readFile(run.workload.log, 'utf8'), /verify BAD/);
      console.log(
        `post-copy with the link down 3 s (${target}): all pages ${allArrivedAt - run.frozenAt} ms after the freeze began, ${destinationOutcome.reconnects} reconnect(s)`,
      );
      killQuietly(run.restoredPid);
    });
  }

  it('refuses a destination holding another key, and a key that is not 32 bytes', async () => {
    const key = { streamId: 'm-keys', psk: randomBytes(32) };
    const served = await servePages({ key, listen: { host: '127.0.0.1' }, criu: { host: '127.0.0.1', port: 1 } });
    try {
      await assert.rejects(
        fetchPages({ key: { ...key, psk: randomBytes(32) }, source: served.address }),
        (error: unknown) => error instanceof PageRelayError && error.code === 'handshake-failed',
      );
      await assert.rejects(
        fetchPages({ key: { streamId: 'm-other', psk: key.psk }, source: served.address }),
        (error: unknown) => error instanceof PageRelayError && error.code === 'handshake-failed',
      );
      await assert.rejects(
        servePages({ key: { ...key, psk: randomBytes(16) }, listen: { host: '127.0.0.1' }, criu: { host: '127.0.0.1', port: 1 } }),
        (error: unknown) => error instanceof PageRelayError && error.code === 'bad-key',
      );
    } finally {
      served.close();
    }
  });
});

function lastTick(log: string): number {
  const ticks = [...log.matchAll(/^tick (\d+) /gm)];
  return Number(ticks.at(-1)?.[1] ?? 0);
}

function countOf(log: string, pattern: RegExp): number {
  return [...log.matchAll(new RegExp(pattern.source, `${pattern.flags.replace('g', '')}g`))].length;
}

/** The longest gap between two consecutive ticks: the freeze as the workload saw it. */
function longestGap(log: string): number {
  const times = [...log.matchAll(/^tick \d+ (\d+)$/gm)].map((m) => Number(m[1]));
  return times.slice(1).reduce((max, t, i) => Math.max(max, t - (times[i] ?? t)), 0);
}
