/**
 * The page relay's stream over real sockets on loopback, without CRIU: a stand-in page server and daemon
 * exchange random bytes both ways through the two relays, and a TCP proxy between the relays is cut
 * mid-transfer to play a network that breaks. Bytes must arrive intact and in order on both sides, and
 * the ends must come out as the relay promises (test/integration/page-relay.test.ts does the same with
 * CRIU's lazy pages between two simulated hosts).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import * as net from 'node:net';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  fetchPages,
  PageRelayError,
  parsePortRange,
  servePages,
  type PageStreamKey,
  type PortRange,
} from '../../agents/post-copy/page-relay.js';

const MIB = 1024 * 1024;

/**
 * Forwards connections to `target`. `cut()` resets every connection it carries at that moment; `stall()`
 * stops carrying them without a word, as a network that drops packets does. New connections go through.
 */
async function breakableLink(target: number): Promise<{ port: number; cut: () => number; stall: () => number; close: () => void }> {
  const live = new Set<net.Socket>();
  const pairs = new Set<[net.Socket, net.Socket]>();
  const server = net.createServer((inbound) => {
    const outbound = net.connect(target, '127.0.0.1');
    const pair: [net.Socket, net.Socket] = [inbound, outbound];
    pairs.add(pair);
    for (const socket of pair) {
      live.add(socket);
      socket.on('close', () => (live.delete(socket), pairs.delete(pair)));
      socket.on('error', () => undefined);
    }
    inbound.pipe(outbound).pipe(inbound);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    cut: () => {
      const count = live.size;
      for (const socket of live) socket.resetAndDestroy();
      return count;
    },
    stall: () => {
      for (const [inbound, outbound] of pairs) {
        inbound.unpipe(outbound);
        outbound.unpipe(inbound);
        inbound.pause();
        outbound.pause();
      }
      return pairs.size;
    },
    close: () => server.close(),
  };
}

/** Writes `bytes` random bytes in pieces and hashes what it writes; hashes all it reads. */
function talker(socket: net.Socket, bytes: number) {
  const sent = createHash('sha256');
  const got = createHash('sha256');
  let received = 0;
  socket.on('data', (data: Buffer) => {
    received += data.length;
    got.update(data);
  });
  const done = (async () => {
    for (let at = 0; at < bytes; at += 256 * 1024) {
      const piece = randomBytes(Math.min(256 * 1024, bytes - at));
      sent.update(piece);
      if (!socket.write(piece)) await once(socket, 'drain');
    }
  })();
  return { bytes, done, sent: () => sent.digest('hex'), got: () => got.digest('hex'), received: () => received };
}

async function until(check: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/**
 * The two relays with a breakable link between them, a stand-in page server behind the source (it accepts
 * the source relay's one connection) and a stand-in daemon connected to the destination.
 */
async function relayPair(key: PageStreamKey, resumeWithinMs?: number, silenceMs?: number) {
  const pageServer = net.createServer();
  pageServer.listen(0, '127.0.0.1');
  await once(pageServer, 'listening');
  const accepted = once(pageServer, 'connection') as Promise<[net.Socket]>;
  const criu = { host: '127.0.0.1', port: (pageServer.address() as net.AddressInfo).port };
  const source = await servePages({ key, resumeWithinMs, silenceMs, listen: { host: '127.0.0.1' }, criu });
  const link = await breakableLink(source.address.port);
  const sink = await fetchPages({ key, resumeWithinMs, silenceMs, source: { host: '127.0.0.1', port: link.port } });
  const daemon = net.connect(sink.local.port, sink.local.host);
  const [criuSide] = await accepted;
  return { source, sink, link, daemon, criuSide, close: () => (link.close(), pageServer.close()) };
}

/**
 * Waits until both talkers' bytes arrived intact on the other side, then ends the stream as CRIU would: the
 * daemon is done (END), the page server sees a clean end and closes, DONE completes both relays.
 */
async function transferAndEnd(
  pair: Awaited<ReturnType<typeof relayPair>>,
  pageServer: ReturnType<typeof talker>,
  daemon: ReturnType<typeof talker>,
) {
  await Promise.all([pageServer.done, daemon.done]);
  await until(() => daemon.received() === pageServer.bytes && pageServer.received() === daemon.bytes, 'every byte');
  assert.equal(daemon.got(), pageServer.sent(), 'what the daemon got is what the page server sent');
  assert.equal(pageServer.got(), daemon.sent(), 'what the page server got is what the daemon sent');
  pair.daemon.end();
  pair.sink.finish(true);
  await once(pair.criuSide, 'end');
  pair.criuSide.end();
  const [sourceOutcome, sinkOutcome] = await Promise.all([pair.source.outcome, pair.sink.outcome]);
  assert.equal(sourceOutcome.kind, 'complete');
  assert.equal(sinkOutcome.kind, 'complete');
  return { sourceOutcome, sinkOutcome };
}

describe('page relay: the stream survives a connection that breaks, and ends only as promised', { timeout: 60_000 }, () => {
  it('carries 32 MiB one way and 4 MiB the other intact across two cuts, then completes on END', async () => {
    const pair = await relayPair({ streamId: 'm-unit', psk: randomBytes(32) });
    const pageServer = talker(pair.criuSide, 32 * MIB);
    const daemon = talker(pair.daemon, 4 * MIB);
    await until(() => daemon.received() > 4 * MIB, 'some pages through');
    assert.ok(pair.link.cut() > 0, 'the link carried the connection');
    await until(() => daemon.received() > 16 * MIB, 'more pages after the first cut');
    pair.link.cut();
    const { sourceOutcome, sinkOutcome } = await transferAndEnd(pair, pageServer, daemon);
    assert.ok(sinkOutcome.reconnects >= 2, `dialled again after each cut (${sinkOutcome.reconnects})`);
    assert.equal(sinkOutcome.bytesFromPeer, 32 * MIB);
    assert.equal(sourceOutcome.bytesFromPeer, 4 * MIB);
    pair.close();
  });

  it('a connection that goes silent (packets dropped, no reset) is dropped and dialled again; the bytes arrive intact', async () => {
    const pair = await relayPair({ streamId: 'm-unit-silent', psk: randomBytes(32) }, undefined, 400);
    const pageServer = talker(pair.criuSide, 16 * MIB);
    const daemon = talker(pair.daemon, MIB);
    await until(() => daemon.received() > 2 * MIB, 'some pages through');
    assert.ok(pair.link.stall() > 0, 'the link carried the connection');
    const { sinkOutcome } = await transferAndEnd(pair, pageServer, daemon);
    assert.ok(sinkOutcome.reconnects >= 1, `dialled again after the silence (${sinkOutcome.reconnects})`);
    pair.close();
  });

  it('a source that stays away is lost at the deadline: the daemon socket stays open, the page server gets a reset', async () => {
    const { source, sink, link, daemon, criuSide, close } = await relayPair({ streamId: 'm-unit-lost', psk: randomBytes(32) }, 500);
    let criuEnd: 'clean' | 'reset' | undefined;
    criuSide.on('end', () => (criuEnd ??= 'clean'));
    criuSide.on('error', () => (criuEnd ??= 'reset'));
    daemon.write('page request');
    await once(criuSide, 'data');
    // The network stays down: the link is gone for good.
    link.close();
    link.cut();
    const [sourceOutcome, sinkOutcome] = await Promise.all([source.outcome, sink.outcome]);
    assert.equal(sourceOutcome.kind, 'lost');
    assert.equal(sinkOutcome.kind, 'lost');
    await until(() => criuEnd !== undefined, "the page server's socket to end");
    assert.equal(criuEnd, 'reset', 'never a clean end the dump would take as completion');
    assert.equal(daemon.destroyed, false, "the daemon's socket is held open");
    sink.release();
    await once(daemon, 'close');
    close();
  });
});

/** `count` consecutive loopback ports that were free a moment ago (the range a test's relays listen on). */
async function freeRange(count: number): Promise<PortRange> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const probes: net.Server[] = [];
    try {
      const first = net.createServer().listen(0, '127.0.0.1');
      probes.push(first);
      await once(first, 'listening');
      const from = (first.address() as net.AddressInfo).port;
      if (from + count - 1 > 65535) continue;
      for (let port = from + 1; port < from + count; port++) {
        const probe = net.createServer();
        probes.push(probe);
        await new Promise<void>((resolve, reject) => probe.once('error', reject).listen(port, '127.0.0.1', resolve));
      }
      return { from, to: from + count - 1 };
    } catch {
      // A port of the range is taken: another start.
    } finally {
      for (const probe of probes) probe.close();
    }
  }
  throw new Error(`no ${count} consecutive free ports on 127.0.0.1`);
}

describe('page relay on a fixed port range (UMS_PAGE_RELAY_PORTS: what the firewall opens)', { timeout: 30_000 }, () => {
  it('parses a port or a range, and refuses anything else', () => {
    assert.deepEqual(parsePortRange('7700'), { from: 7700, to: 7700 });
    assert.deepEqual(parsePortRange('7700-7715'), { from: 7700, to: 7715 });
    for (const bad of ['', '0', '70000', '7715-7700', '7700-', 'a-b', '7700,7701']) assert.throws(() => parsePortRange(bad), bad);
  });

  it('two migrations leaving at once each get a port of the range and complete; a third is refused with the reason', async () => {
    const ports = await freeRange(2);
    const listen = { host: '127.0.0.1', ports };
    const pageServer = net.createServer((socket) => socket.on('data', (data) => socket.write(data)).on('end', () => socket.end()));
    pageServer.listen(0, '127.0.0.1');
    await once(pageServer, 'listening');
    const criu = { host: '127.0.0.1', port: (pageServer.address() as net.AddressInfo).port };
    const keys = [1, 2].map((n): PageStreamKey => ({ streamId: `m-range-${n}`, psk: randomBytes(32) }));
    const sources = await Promise.all(keys.map((key) => servePages({ key, listen, criu })));
    try {
      assert.deepEqual(sources.map((s) => s.address.port).sort(), [ports.from, ports.to], 'one port of the range each');
      await assert.rejects(
        servePages({ key: { streamId: 'm-range-3', psk: randomBytes(32) }, listen, criu }),
        (error: unknown) => error instanceof PageRelayError && error.code === 'no-free-port' && /UMS_PAGE_RELAY_PORTS/.test(error.message),
      );
      // Both streams, on their fixed ports, carry bytes and end as promised: each destination finds its own.
      await Promise.all(
        keys.map(async (key, i) => {
          const source = sources[i];
          assert.ok(source !== undefined);
          const sink = await fetchPages({ key, source: source.address, silenceMs: 2_000 });
          const daemon = net.connect(sink.local.port, sink.local.host);
          daemon.write(`pages of ${key.streamId}`);
          const [echoed] = (await once(daemon, 'data')) as [Buffer];
          assert.equal(echoed.toString(), `pages of ${key.streamId}`);
          daemon.end();
          sink.finish(true);
          const [sourceOutcome, sinkOutcome] = await Promise.all([source.outcome, sink.outcome]);
          assert.equal(sourceOutcome.kind, 'complete', JSON.stringify(sourceOutcome));
          assert.equal(sinkOutcome.kind, 'complete', JSON.stringify(sinkOutcome));
        }),
      );
    } finally {
      for (const source of sources) source.close();
      pageServer.close();
    }
  });

  it('the relay process listens on the range UMS_PAGE_RELAY_PORTS gives it, and says why when the range is full', async () => {
    const ports = await freeRange(1);
    const relayProcess = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'agents', 'post-copy', 'relay-process.js');
    const start = () =>
      spawn(process.execPath, [relayProcess, 'source', 'm-process', '127.0.0.1', '1'], {
        env: { PATH: process.env.PATH, UMS_PAGE_STREAM_PSK: randomBytes(32).toString('hex'), UMS_PAGE_RELAY_PORTS: `${ports.from}` },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
    const firstLine = async (child: ReturnType<typeof start>) =>
      JSON.parse(((await once(createInterface({ input: child.stdout }), 'line')) as [string])[0]) as Record<string, unknown>;
    const first = start();
    try {
      assert.deepEqual((await firstLine(first)).address, { host: '127.0.0.1', port: ports.from });
      // A second migration leaving at once finds the one port taken: what lazy-container.ts reports before the freeze.
      const second = start();
      try {
        assert.match(String((await firstLine(second)).error), /every page relay port of \d+ on 127\.0\.0\.1 is taken/);
        const code = second.exitCode ?? ((await once(second, 'exit')) as [number])[0];
        assert.equal(code, 1);
      } finally {
        second.kill('SIGKILL');
      }
    } finally {
      first.kill('SIGKILL');
    }
  });
});
