import { once } from 'node:events';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { createLogger } from '../../core/log.js';

/**
 * The post-copy page stream between two agents (design (b) of docs/design/post-copy.md). CRIU's page server
 * (the source's lazy dump) and its lazy-pages daemon (the destination) each talk to their own agent over
 * loopback TCP; the agents carry the stream between the hosts over TLS 1.2 with a pre-shared key the planner
 * issues per migration (ECDHE-PSK: the key authenticates both ends, the ephemeral exchange gives forward secrecy).
 *
 * Why not CRIU's connection end to end: CRIU takes a clean end of its socket as "every page moved". On the
 * source that ends the dump successfully and kills the frozen service; on the destination the daemon stops
 * and the restored process reads zeros where its pages should be. So the agents frame the stream and only
 * an explicit END from the destination (its daemon exited 0) lets the source's CRIU see a clean end. Any
 * other loss resets the source's CRIU socket (the dump fails and CRIU thaws the source), and the destination
 * keeps its daemon's socket open: the restored process blocks on its next missing page instead of running
 * on wrong memory, until its agent decides (freeze and kill it).
 */
const log = createLogger('page-relay');

/** The per-migration key both agents get from the planner through signed commands. */
export interface PageStreamKey {
  /** Names the stream (the migration id): the PSK identity, checked by the source. */
  streamId: string;
  /** 32 random bytes. */
  psk: Buffer;
}

export interface Endpoint {
  host: string;
  port: number;
}

/** How a relay ended. Only `complete` means every page reached the destination. */
export type RelayOutcome =
  | { kind: 'complete'; bytesToPeer: number; bytesFromPeer: number }
  | { kind: 'lost'; reason: string; bytesToPeer: number; bytesFromPeer: number };

export type PageRelayErrorCode = 'bad-key' | 'handshake-failed' | 'criu-unreachable' | 'protocol';

export class PageRelayError extends Error {
  constructor(
    readonly code: PageRelayErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'PageRelayError';
  }
}

const TLS_OPTIONS = {
  ciphers: 'ECDHE-PSK-CHACHA20-POLY1305:ECDHE-PSK-AES256-CBC-SHA384',
  minVersion: 'TLSv1.2',
  maxVersion: 'TLSv1.2',
} as const satisfies tls.CommonConnectionOptions & tls.SecureContextOptions;

const Frame = {
  Data: 1,
  /** Destination to source: the lazy-pages daemon exited 0, every page arrived. */
  End: 2,
} as const;
type Frame = (typeof Frame)[keyof typeof Frame];
const HEADER_BYTES = 5;
/** A frame's payload is what one socket read gave; larger means a peer that is not ours. */
const MAX_FRAME_BYTES = 16 * 1024 * 1024;

function checkKey(key: PageStreamKey): void {
  if (key.psk.length !== 32) throw new PageRelayError('bad-key', `the page stream key must be 32 bytes, got ${key.psk.length}`);
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(key.streamId)) throw new PageRelayError('bad-key', `bad page stream id "${key.streamId}"`);
}

function isFrame(type: number): type is Frame {
  return type === Frame.Data || type === Frame.End;
}

function frame(type: Frame, payload: Buffer = Buffer.alloc(0)): Buffer[] {
  const header = Buffer.allocUnsafe(HEADER_BYTES);
  header.writeUInt8(type, 0);
  header.writeUInt32BE(payload.length, 1);
  return [header, payload];
}

/** Cuts the TLS byte stream into frames; a malformed frame destroys the connection. */
function readFrames(socket: tls.TLSSocket, onFrame: (type: Frame, payload: Buffer) => void): void {
  let pending: Buffer = Buffer.alloc(0);
  socket.on('data', (data: Buffer) => {
    pending = pending.length === 0 ? data : Buffer.concat([pending, data]);
    while (pending.length >= HEADER_BYTES) {
      const type = pending.readUInt8(0);
      const length = pending.readUInt32BE(1);
      if (!isFrame(type) || length > MAX_FRAME_BYTES) {
        socket.destroy(new PageRelayError('protocol', `unexpected frame type ${type} of ${length} bytes`));
        return;
      }
      if (pending.length < HEADER_BYTES + length) break;
      const payload = pending.subarray(HEADER_BYTES, HEADER_BYTES + length);
      pending = pending.subarray(HEADER_BYTES + length);
      onFrame(type, payload);
    }
  });
}

/** Copies CRIU's bytes to the peer as DATA frames, pausing CRIU's socket while the peer's buffer is full. */
function forwardToPeer(local: net.Socket, peer: tls.TLSSocket, count: (bytes: number) => void): void {
  local.on('data', (data: Buffer) => {
    count(data.length);
    let flushed = true;
    for (const part of frame(Frame.Data, data)) flushed = peer.write(part) && flushed;
    if (!flushed) {
      local.pause();
      peer.once('drain', () => local.resume());
    }
  });
}

function writeToLocal(local: net.Socket, peer: tls.TLSSocket, payload: Buffer): void {
  if (!local.write(payload)) {
    peer.pause();
    local.once('drain', () => peer.resume());
  }
}

export interface PageSource {
  /** Where the destination dials (the TLS listener). */
  address: Endpoint;
  /** Settles once the stream ended, either way; never rejects. */
  outcome: Promise<RelayOutcome>;
  /** Stops listening and, if a transfer runs, ends it as lost (the source's CRIU is reset). */
  close(): void;
}

/**
 * The source agent's end. Listens on `listen` for the one destination holding the key, then connects to
 * CRIU's page server on `criu` (a lazy dump's `--address/--port`, loopback) and relays both ways.
 */
export async function servePages(options: {
  key: PageStreamKey;
  listen: { host: string; port?: number };
  criu: Endpoint;
}): Promise<PageSource> {
  const { key, criu } = options;
  checkKey(key);
  let settle: (outcome: RelayOutcome) => void = () => undefined;
  const outcome = new Promise<RelayOutcome>((resolve) => (settle = resolve));
  let bytesToPeer = 0;
  let bytesFromPeer = 0;
  let ended = false;
  const finish = (result: { kind: 'complete' } | { kind: 'lost'; reason: string }) => {
    if (ended) return;
    ended = true;
    settle({ ...result, bytesToPeer, bytesFromPeer });
  };
  let active: { peer: tls.TLSSocket; local?: net.Socket } | undefined;

  const server = tls.createServer(
    {
      ...TLS_OPTIONS,
      pskCallback: (_socket, identity) => {
        if (identity !== key.streamId) {
          log.warn({ stream: key.streamId }, 'refused a page stream client with another identity');
          return null;
        }
        return key.psk;
      },
    },
    (peer) => {
      // One destination per migration: the listener closes on the first authenticated peer.
      server.close();
      peer.setNoDelay(true);
      active = { peer };
      void relaySource(peer).catch((error: unknown) => {
        peer.destroy();
        finish({ kind: 'lost', reason: (error as Error).message });
      });
    },
  );
  server.on('tlsClientError', (error) => log.warn({ stream: key.streamId, error: error.message }, 'a page stream handshake failed'));

  async function relaySource(peer: tls.TLSSocket): Promise<void> {
    const local = await connectWithRetry(criu, 10_000);
    if (active) active.local = local;
    local.setNoDelay(true);
    let peerEnded = false;
    forwardToPeer(local, peer, (n) => (bytesToPeer += n));
    readFrames(peer, (type, payload) => {
      if (type === Frame.Data) {
        bytesFromPeer += payload.length;
        writeToLocal(local, peer, payload);
      } else {
        // The destination's daemon exited 0: only now may CRIU see a clean end.
        peerEnded = true;
        local.end();
      }
    });
    peer.on('close', () => {
      if (!peerEnded) {
        // Lost without END: reset, never a clean end, so that CRIU fails the dump and thaws the source.
        local.resetAndDestroy();
        finish({ kind: 'lost', reason: 'the destination went away before all pages arrived' });
      }
    });
    peer.on('error', (error: Error) => log.warn({ stream: key.streamId, error: error.message }, 'page stream connection failed'));
    local.on('error', (error) => log.warn({ stream: key.streamId, error: error.message }, "CRIU's page server socket failed"));
    local.on('close', () => {
      if (peerEnded) {
        peer.end();
        finish({ kind: 'complete' });
      } else {
        // CRIU gave up on its own (killed, or failed): the destination must not take this as completion.
        peer.destroy();
        finish({ kind: 'lost', reason: "the source's CRIU closed the page stream before the destination finished" });
      }
    });
  }

  server.listen(options.listen.port ?? 0, options.listen.host);
  await once(server, 'listening');
  const bound = server.address() as net.AddressInfo;
  return {
    address: { host: options.listen.host, port: bound.port },
    outcome,
    close: () => {
      server.close();
      if (active) {
        active.local?.resetAndDestroy();
        active.peer.destroy();
      }
      finish({ kind: 'lost', reason: 'the source agent closed the page stream' });
    },
  };
}

export interface PageSink {
  /** Where the lazy-pages daemon connects (`criu lazy-pages --page-server --address/--port`). */
  local: Endpoint;
  /**
   * Settles when the stream ended: `complete` after `finish(true)`, `lost` when the source went away first
   * (the daemon's socket is then held open, so the restored process waits instead of reading zeros).
   */
  outcome: Promise<RelayOutcome>;
  /** The daemon exited: with 0 (every page arrived) tell the source; otherwise drop the stream as lost. */
  finish(daemonSucceeded: boolean): void;
  /** Closes the held daemon socket: only once the restored process is frozen or gone. */
  release(): void;
}

/**
 * The destination agent's end. Dials the source agent (TLS-PSK), then waits for the lazy-pages daemon on a
 * loopback port and relays both ways.
 */
export async function fetchPages(options: {
  key: PageStreamKey;
  source: Endpoint;
  listen?: { host: string; port?: number };
}): Promise<PageSink> {
  const { key, source } = options;
  checkKey(key);
  const peer = tls.connect({
    ...TLS_OPTIONS,
    host: source.host,
    port: source.port,
    // No certificates: the PSK is the identity of both ends.
    checkServerIdentity: () => undefined,
    pskCallback: () => ({ psk: key.psk, identity: key.streamId }),
  });
  try {
    await once(peer, 'secureConnect');
  } catch (error) {
    peer.destroy();
    throw new PageRelayError(
      'handshake-failed',
      `cannot open the page stream to ${source.host}:${source.port}: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
  peer.setNoDelay(true);

  let bytesToPeer = 0;
  let bytesFromPeer = 0;
  let ended = false;
  let settle: (outcome: RelayOutcome) => void = () => undefined;
  const outcome = new Promise<RelayOutcome>((resolve) => (settle = resolve));
  const end = (result: { kind: 'complete' } | { kind: 'lost'; reason: string }) => {
    if (ended) return;
    ended = true;
    settle({ ...result, bytesToPeer, bytesFromPeer });
  };

  let local: net.Socket | undefined;
  // Bytes from the source before the daemon connected (none expected: the daemon speaks first).
  const early: Buffer[] = [];
  readFrames(peer, (type, payload) => {
    if (type !== Frame.Data) {
      peer.destroy(new PageRelayError('protocol', 'the source sent END'));
      return;
    }
    bytesFromPeer += payload.length;
    if (local) writeToLocal(local, peer, payload);
    else early.push(Buffer.from(payload));
  });
  peer.on('error', (error: Error) => log.warn({ stream: key.streamId, error: error.message }, 'page stream connection failed'));
  peer.on('close', () => {
    // Hold the daemon's socket: the restored process blocks on its next fault; its agent decides what next.
    end({ kind: 'lost', reason: 'the source went away before all pages arrived' });
  });

  const listener = net.createServer((socket) => {
    listener.close();
    local = socket;
    socket.setNoDelay(true);
    for (const payload of early.splice(0)) socket.write(payload);
    forwardToPeer(socket, peer, (n) => (bytesToPeer += n));
    socket.on('error', (error) => log.warn({ stream: key.streamId, error: error.message }, "the lazy-pages daemon's socket failed"));
  });
  listener.listen(options.listen?.port ?? 0, options.listen?.host ?? '127.0.0.1');
  await once(listener, 'listening');
  const bound = listener.address() as net.AddressInfo;
  return {
    local: { host: options.listen?.host ?? '127.0.0.1', port: bound.port },
    outcome,
    finish: (daemonSucceeded) => {
      listener.close();
      if (ended) return;
      if (daemonSucceeded) {
        for (const part of frame(Frame.End)) peer.write(part);
        peer.end();
        end({ kind: 'complete' });
      } else {
        peer.destroy();
        end({ kind: 'lost', reason: 'the lazy-pages daemon failed' });
      }
    },
    release: () => {
      listener.close();
      local?.destroy();
    },
  };
}

/** Connects to CRIU's page server, which listens only once the dump has written its non-memory images. */
async function connectWithRetry(endpoint: Endpoint, timeoutMs: number): Promise<net.Socket> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const socket = net.connect(endpoint.port, endpoint.host);
    try {
      await once(socket, 'connect');
      return socket;
    } catch (error) {
      socket.destroy();
      if (Date.now() > deadline) {
        throw new PageRelayError('criu-unreachable', `CRIU's page server at ${endpoint.host}:${endpoint.port} did not answer`, {
          cause: error,
        });
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
}
