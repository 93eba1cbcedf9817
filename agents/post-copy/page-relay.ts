import { once } from 'node:events';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { z } from 'zod';
import { createLogger } from '../../core/log.js';
import type { PageStreamKey } from '../../core/page-stream.js';

/**
 * The post-copy page stream between two agents (design (b) of docs/design/post-copy.md). CRIU's page server
 * (the source's lazy dump) and its lazy-pages daemon (the destination) each talk to their own agent over
 * loopback TCP; the agents carry the stream between the hosts over TLS 1.2 with a pre-shared key the planner
 * issues per migration (ECDHE-PSK: the key authenticates both ends, the ephemeral exchange gives forward secrecy).
 *
 * Why not CRIU's connection end to end: CRIU takes a clean end of its socket as "every page moved". On the
 * source that ends the dump successfully and kills the frozen service; on the destination the daemon stops
 * and the restored process reads zeros where its pages should be. So the agents frame the stream and only
 * an explicit END from the destination (its daemon exited 0) lets the source's CRIU see a clean end; the
 * source answers DONE once its CRIU finished, and only that completes the destination's side.
 *
 * The connection between the agents may break (a network blip across clouds) without losing the stream:
 * each side keeps what it sent until the other acknowledged it, the destination dials again, both say how
 * much they received and resend the rest. CRIU's sockets stay open meanwhile (its faults just wait). Only if
 * no connection is back within `resumeWithinMs`, or a side aborts, is the stream lost: the source resets its
 * CRIU socket (the dump fails and CRIU thaws the source) and the destination keeps its daemon's socket open,
 * so the restored process blocks on its next missing page instead of running on wrong memory until its
 * agent decides (freeze and kill it).
 */
const log = createLogger('page-relay');

export type { PageStreamKey };

export interface Endpoint {
  host: string;
  port: number;
}

const Port = z.number().int().min(1).max(65535);

/**
 * The ports a source's relay may listen on (UMS_PAGE_RELAY_PORTS): the hosts' firewalls open exactly these to
 * the deployment's other hosts. One port per post-copy migration out of the host at once: each migration's
 * relay is a process of its own (it outlives a crashed agent), and the stream's TLS-PSK identity arrives
 * only inside the handshake, too late to hand a shared listener's connection to the right process.
 */
export const PortRange = z
  .object({ from: Port, to: Port })
  .refine((range) => range.from <= range.to, { message: 'the first port must not be above the last' });
export type PortRange = z.infer<typeof PortRange>;

/** "7700" or "7700-7715" as a PortRange; throws a ZodError (its message says what is wrong) otherwise. */
export function parsePortRange(text: string): PortRange {
  const match = /^\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?$/.exec(text);
  return PortRange.parse(match === null ? {} : { from: Number(match[1]), to: Number(match[2] ?? match[1]) });
}

/** The range as UMS_PAGE_RELAY_PORTS spells it. */
export const formatPortRange = (range: PortRange): string => (range.from === range.to ? `${range.from}` : `${range.from}-${range.to}`);

interface RelayCounts {
  /** DATA bytes this side's CRIU sent, and received from the peer's. */
  bytesToPeer: number;
  bytesFromPeer: number;
  /** Connections to the peer after the first. */
  reconnects: number;
}

/** How a relay ended. Only `complete` means every page reached the destination. */
export type RelayOutcome = ({ kind: 'complete' } | { kind: 'lost'; reason: string }) & RelayCounts;

export type PageRelayErrorCode = 'bad-key' | 'handshake-failed' | 'criu-unreachable' | 'protocol' | 'no-free-port';

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

/** How long a broken connection between the agents may take to come back before the stream is lost. */
export const DEFAULT_RESUME_WITHIN_MS = 30_000;

/** A connection that carries nothing (not even a heartbeat) this long is taken as broken: packets may be dropped, not refused. */
export const DEFAULT_SILENCE_MS = 5_000;

export interface RelayOptions {
  key: PageStreamKey;
  /** How long a broken connection may take to come back. Default DEFAULT_RESUME_WITHIN_MS. */
  resumeWithinMs?: number;
  /** How long a connection may stay silent before it is dropped and dialled again. Default DEFAULT_SILENCE_MS. */
  silenceMs?: number;
}

const TLS_OPTIONS = {
  ciphers: 'ECDHE-PSK-CHACHA20-POLY1305:ECDHE-PSK-AES256-CBC-SHA384',
  minVersion: 'TLSv1.2',
  maxVersion: 'TLSv1.2',
} as const satisfies tls.CommonConnectionOptions & tls.SecureContextOptions;

const Frame = {
  /** CRIU's bytes. */
  Data: 1,
  /** Destination to source: the lazy-pages daemon exited 0, every page arrived. */
  End: 2,
  /** Source to destination: END taken, the source's CRIU finished cleanly. */
  Done: 3,
  /** Either way: this side gives up (its CRIU failed); the other ends as lost at once. */
  Abort: 4,
  /** Payload u64: DATA bytes received so far; the sender may forget what came before. */
  Ack: 5,
  /** First frame on every connection, payload u64: DATA bytes received so far; the peer resends the rest. */
  Hello: 6,
} as const;
type Frame = (typeof Frame)[keyof typeof Frame];
type Signal = typeof Frame.End | typeof Frame.Done | typeof Frame.Abort;
const HEADER_BYTES = 5;
/** A frame's payload is what one socket read gave; larger means a peer that is not ours. */
const MAX_FRAME_BYTES = 16 * 1024 * 1024;
/** Unacknowledged bytes one side keeps for a resend; beyond it, it stops reading its CRIU socket. */
const MAX_UNACKED_BYTES = 64 * 1024 * 1024;
const ACK_EVERY_BYTES = 1024 * 1024;
const ACK_AFTER_MS = 50;
const REDIAL_EVERY_MS = 250;

function checkKey(key: PageStreamKey): void {
  if (key.psk.length !== 32) throw new PageRelayError('bad-key', `the page stream key must be 32 bytes, got ${key.psk.length}`);
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(key.streamId)) throw new PageRelayError('bad-key', `bad page stream id "${key.streamId}"`);
}

function header(type: Frame, length: number): Buffer {
  const bytes = Buffer.allocUnsafe(HEADER_BYTES);
  bytes.writeUInt8(type, 0);
  bytes.writeUInt32BE(length, 1);
  return bytes;
}

function counterFrame(type: typeof Frame.Ack | typeof Frame.Hello, value: number): Buffer {
  const bytes = Buffer.allocUnsafe(HEADER_BYTES + 8);
  header(type, 8).copy(bytes);
  bytes.writeBigUInt64BE(BigInt(value), HEADER_BYTES);
  return bytes;
}

/** Cuts one connection's byte stream into frames; a malformed frame destroys the connection. */
function readFrames(socket: tls.TLSSocket, onFrame: (type: Frame, payload: Buffer) => void): void {
  // A frame spans several TLS records: its pieces are kept apart and joined once, when it is whole.
  let pieces: Buffer[] = [];
  let piecesBytes = 0;
  let needed = HEADER_BYTES;
  socket.on('data', (data: Buffer) => {
    pieces.push(data);
    piecesBytes += data.length;
    if (piecesBytes < needed) return;
    let pending = pieces.length === 1 ? data : Buffer.concat(pieces);
    needed = HEADER_BYTES;
    while (pending.length >= HEADER_BYTES && !socket.destroyed) {
      const type = pending.readUInt8(0);
      const length = pending.readUInt32BE(1);
      const counter = type === Frame.Ack || type === Frame.Hello;
      if (
        type < Frame.Data ||
        type > Frame.Hello ||
        length > MAX_FRAME_BYTES ||
        (counter && length !== 8) ||
        (!counter && type !== Frame.Data && length !== 0)
      ) {
        socket.destroy(new PageRelayError('protocol', `unexpected frame type ${type} of ${length} bytes`));
        return;
      }
      if (pending.length < HEADER_BYTES + length) {
        needed = HEADER_BYTES + length;
        break;
      }
      const payload = pending.subarray(HEADER_BYTES, HEADER_BYTES + length);
      pending = pending.subarray(HEADER_BYTES + length);
      onFrame(type as Frame, payload);
    }
    // A partial frame left over is the first piece of the next.
    pieces = pending.length > 0 ? [pending] : [];
    piecesBytes = pending.length;
  });
}

/**
 * One side's stream over whichever connection to the peer is current: what its CRIU said is kept until the
 * peer acknowledged it, what the peer said goes to its CRIU exactly once. Connections come and go.
 */
class ResumableStream {
  private peer: tls.TLSSocket | undefined;
  /** The peer's HELLO arrived on the current connection: DATA may flow. */
  private ready = false;
  /** Sent DATA not yet acknowledged, starting at offset `ackedOffset`. */
  private unacked: Buffer[] = [];
  private unackedBytes = 0;
  private ackedOffset = 0;
  /** DATA bytes received and given to CRIU, and how many of them the peer has been told of. */
  private received = 0;
  private acknowledged = 0;
  private ackTimer: NodeJS.Timeout | undefined;
  private localPaused = false;
  private connections = 0;
  /** A signal to repeat on every new connection until the stream ends (END, DONE). */
  private standing: Signal | undefined;

  constructor(
    private readonly streamId: string,
    private readonly local: net.Socket,
    private readonly silenceMs: number,
    private readonly events: { signal: (type: Signal) => void; disconnected: () => void },
  ) {
    local.setNoDelay(true);
    local.on('data', (data: Buffer) => this.fromLocal(data));
    local.on('error', (error: Error) => log.warn({ stream: streamId, error: error.message }, "CRIU's socket failed"));
  }

  counts(): RelayCounts {
    return {
      bytesToPeer: this.ackedOffset + this.unackedBytes,
      bytesFromPeer: this.received,
      reconnects: Math.max(0, this.connections - 1),
    };
  }

  /** A (new) connection to the peer: greet it with what arrived so far; DATA waits for its greeting. */
  attach(peer: tls.TLSSocket): void {
    this.peer?.destroy();
    this.peer = peer;
    this.ready = false;
    this.connections++;
    peer.setNoDelay(true);
    peer.write(counterFrame(Frame.Hello, this.received));
    readFrames(peer, (type, payload) => this.fromPeer(peer, type, payload));
    peer.on('drain', () => this.flowControl());
    peer.on('error', (error: Error) => log.warn({ stream: this.streamId, error: error.message }, 'page stream connection failed'));
    // A connection whose packets are dropped shows no error for minutes (TCP retransmits): both sides beat
    // (an ACK of what they have) and drop a connection that stayed silent, so the destination dials again.
    let heard = Date.now();
    peer.on('data', () => (heard = Date.now()));
    const heartbeat = setInterval(() => {
      if (Date.now() - heard > this.silenceMs) {
        log.warn({ stream: this.streamId, silenceMs: this.silenceMs }, 'page stream connection silent; dropping it');
        peer.destroy();
      } else if (this.peer === peer && this.ready) peer.write(counterFrame(Frame.Ack, this.received));
    }, this.silenceMs / 4);
    heartbeat.unref();
    peer.on('close', () => {
      clearInterval(heartbeat);
      if (this.peer !== peer) return;
      this.peer = undefined;
      this.ready = false;
      this.events.disconnected();
    });
  }

  /** Sends a signal now if connected; END and DONE stand, and go again on every later connection. */
  signal(type: Signal): void {
    if (type !== Frame.Abort) this.standing = type;
    if (this.peer && this.ready) this.peer.write(header(type, 0));
  }

  /** Drops the current connection (a clean close after DONE or an abort, or at once). */
  disconnect(clean: boolean): void {
    const peer = this.peer;
    this.peer = undefined;
    clearTimeout(this.ackTimer);
    if (clean) peer?.end();
    else peer?.destroy();
  }

  /** Ends CRIU's side: `reset` makes CRIU fail (never a clean end it would take as completion). */
  closeLocal(how: 'end' | 'reset' | 'destroy'): void {
    if (how === 'end') this.local.end();
    else if (how === 'reset') this.local.resetAndDestroy();
    else this.local.destroy();
  }

  private fromLocal(data: Buffer): void {
    this.unacked.push(data);
    this.unackedBytes += data.length;
    if (this.peer && this.ready) this.writeData(this.peer, data);
    this.flowControl();
  }

  private writeData(peer: tls.TLSSocket, data: Buffer): void {
    // Corked, the header and its bytes leave in one TLS write rather than a record of 5 bytes each time.
    peer.cork();
    peer.write(header(Frame.Data, data.length));
    peer.write(data);
    peer.uncork();
  }

  private fromPeer(peer: tls.TLSSocket, type: Frame, payload: Buffer): void {
    if (type === Frame.Hello) this.resendFrom(peer, Number(payload.readBigUInt64BE(0)));
    else if (type === Frame.Ack) this.acknowledge(Number(payload.readBigUInt64BE(0)));
    else if (type === Frame.Data) {
      this.received += payload.length;
      if (!this.local.write(payload)) {
        peer.pause();
        this.local.once('drain', () => peer.resume());
      }
      this.scheduleAck();
    } else this.events.signal(type);
  }

  /** The peer's greeting: forget what it has, resend the rest, repeat a standing signal, then go on live. */
  private resendFrom(peer: tls.TLSSocket, peerReceived: number): void {
    const sent = this.ackedOffset + this.unackedBytes;
    if (peerReceived > sent || peerReceived < this.ackedOffset) {
      peer.destroy(
        new PageRelayError('protocol', `the peer says it received ${peerReceived} bytes; ${this.ackedOffset}-${sent} are possible`),
      );
      return;
    }
    this.acknowledge(peerReceived);
    for (const data of this.unacked) this.writeData(peer, data);
    this.ready = true;
    if (this.standing !== undefined) peer.write(header(this.standing, 0));
    this.flowControl();
  }

  private acknowledge(offset: number): void {
    while (this.unacked.length > 0 && this.ackedOffset + (this.unacked[0] as Buffer).length <= offset) {
      const first = this.unacked.shift() as Buffer;
      this.ackedOffset += first.length;
      this.unackedBytes -= first.length;
    }
    const first = this.unacked[0];
    if (first && offset > this.ackedOffset) {
      // Acknowledged part-way into a buffer: the connection broke inside a frame; resend from there.
      const cut = offset - this.ackedOffset;
      this.unacked[0] = first.subarray(cut);
      this.ackedOffset += cut;
      this.unackedBytes -= cut;
    }
    this.flowControl();
  }

  private scheduleAck(): void {
    if (this.received - this.acknowledged >= ACK_EVERY_BYTES) this.sendAck();
    else this.ackTimer ??= setTimeout(() => this.sendAck(), ACK_AFTER_MS);
  }

  private sendAck(): void {
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    if (!this.peer || !this.ready || this.received === this.acknowledged) return;
    this.acknowledged = this.received;
    this.peer.write(counterFrame(Frame.Ack, this.received));
  }

  /** Reads CRIU's socket only while the peer keeps up and the resend buffer has room. */
  private flowControl(): void {
    const full = this.unackedBytes >= MAX_UNACKED_BYTES || this.peer?.writableNeedDrain === true;
    if (full !== this.localPaused) {
      this.localPaused = full;
      if (full) this.local.pause();
      else this.local.resume();
    }
  }
}

/** A promise settled once, with the first outcome given. */
function outcomeLatch(): { promise: Promise<RelayOutcome>; settle: (outcome: RelayOutcome) => boolean; settled: () => boolean } {
  let resolve: (outcome: RelayOutcome) => void = () => undefined;
  let settled = false;
  const promise = new Promise<RelayOutcome>((r) => (resolve = r));
  return {
    promise,
    settle: (outcome) => {
      if (settled) return false;
      settled = true;
      resolve(outcome);
      return true;
    },
    settled: () => settled,
  };
}

const NO_COUNTS: RelayCounts = { bytesToPeer: 0, bytesFromPeer: 0, reconnects: 0 };

export interface PageSource {
  /** Where the destination dials (the TLS listener). */
  address: Endpoint;
  /** Settles once the stream ended, either way; never rejects. */
  outcome: Promise<RelayOutcome>;
  /** Stops listening and ends the stream as lost (the source's CRIU is reset). */
  close(): void;
}

/**
 * The source agent's end. Listens on `listen` for the destination holding the key (again after a broken
 * connection), dials CRIU's page server on `criu` (a lazy dump's `--address/--port`, loopback) once the
 * first destination is there, and relays both ways. `listen.ports`: the first free port of that range
 * (the one the firewall opens), else `listen.port`, else a port the kernel picks.
 */
export async function servePages(
  options: RelayOptions & { listen: { host: string; port?: number; ports?: PortRange }; criu: Endpoint },
): Promise<PageSource> {
  const { key, criu } = options;
  checkKey(key);
  const resumeWithinMs = options.resumeWithinMs ?? DEFAULT_RESUME_WITHIN_MS;
  const silenceMs = options.silenceMs ?? DEFAULT_SILENCE_MS;
  const latch = outcomeLatch();
  let stream: ResumableStream | undefined;
  let starting = false;
  let endTaken = false;
  let lostTimer: NodeJS.Timeout | undefined;
  let lingerTimer: NodeJS.Timeout | undefined;

  const lose = (reason: string) => {
    clearTimeout(lostTimer);
    server.close();
    if (!latch.settle({ kind: 'lost', reason, ...(stream?.counts() ?? NO_COUNTS) })) return;
    log.warn({ stream: key.streamId, reason }, 'page stream lost');
    stream?.signal(Frame.Abort);
    stream?.disconnect(false);
    stream?.closeLocal('reset');
  };

  const start = async (peer: tls.TLSSocket) => {
    starting = true;
    let local: net.Socket;
    try {
      local = await connectWithRetry(criu, 10_000);
    } catch (error) {
      peer.destroy();
      lose((error as Error).message);
      return;
    }
    const current = new ResumableStream(key.streamId, local, silenceMs, {
      signal: (type) => {
        if (type === Frame.End && !endTaken) {
          // The destination's daemon exited 0: only now may CRIU see a clean end.
          endTaken = true;
          current.closeLocal('end');
        } else if (type === Frame.Abort) lose('the destination aborted the page stream');
      },
      disconnected: () => {
        // After completion the destination may still dial again for DONE; nothing is lost then.
        if (latch.settled() || lostTimer !== undefined) return;
        log.warn({ stream: key.streamId, resumeWithinMs }, 'page stream connection lost; waiting for the destination to dial again');
        lostTimer = setTimeout(() => lose(`the destination did not come back within ${resumeWithinMs} ms`), resumeWithinMs);
      },
    });
    stream = current;
    local.on('close', () => {
      if (!endTaken) {
        // CRIU gave up on its own (killed, or failed): the destination must not take this as completion.
        lose("the source's CRIU closed the page stream before the destination finished");
        return;
      }
      clearTimeout(lostTimer);
      lostTimer = undefined;
      latch.settle({ kind: 'complete', ...current.counts() });
      // DONE stands: a destination that missed it dials again and gets it; then the listener goes.
      current.signal(Frame.Done);
      lingerTimer = setTimeout(() => server.close(), resumeWithinMs);
      // Lingering for a late DONE must not keep the agent (or a test) alive.
      lingerTimer.unref();
      server.unref();
    });
    current.attach(peer);
  };

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
      if (stream) {
        clearTimeout(lostTimer);
        lostTimer = undefined;
        stream.attach(peer);
      } else if (!starting) void start(peer);
      else peer.destroy();
    },
  );
  server.on('tlsClientError', (error) => log.warn({ stream: key.streamId, error: error.message }, 'a page stream handshake failed'));
  server.on('close', () => clearTimeout(lingerTimer));
  await listenOnFirstFree(server, options.listen, resumeWithinMs);
  const bound = server.address() as net.AddressInfo;
  return {
    address: { host: options.listen.host, port: bound.port },
    outcome: latch.promise,
    close: () => {
      lose('the source agent closed the page stream');
      // After completion `lose` does nothing: a connection lingering for a late DONE goes too.
      stream?.disconnect(false);
    },
  };
}

export interface PageSink {
  /** Where the lazy-pages daemon connects (`criu lazy-pages --page-server --address/--port`). */
  local: Endpoint;
  /**
   * Settles when the stream ended: `complete` once the source confirmed (DONE) after `finish(true)`; `lost`
   * when the source aborted or could not be reached again in time (the daemon's socket is then held open,
   * so the restored process waits instead of reading zeros).
   */
  outcome: Promise<RelayOutcome>;
  /** The daemon exited: with 0 (every page arrived) tell the source; otherwise abort the stream. */
  finish(daemonSucceeded: boolean): void;
  /** Closes the held daemon socket: only once the restored process is frozen or gone. */
  release(): void;
}

/**
 * The destination agent's end. Dials the source agent (TLS-PSK; again after a broken connection), waits for
 * the lazy-pages daemon on a loopback port and relays both ways.
 */
export async function fetchPages(
  options: RelayOptions & { source: Endpoint; listen?: { host: string; port?: number } },
): Promise<PageSink> {
  const { key, source } = options;
  checkKey(key);
  const resumeWithinMs = options.resumeWithinMs ?? DEFAULT_RESUME_WITHIN_MS;
  const silenceMs = options.silenceMs ?? DEFAULT_SILENCE_MS;
  const dial = async (): Promise<tls.TLSSocket> => {
    const peer = tls.connect({
      ...TLS_OPTIONS,
      host: source.host,
      port: source.port,
      // No certificates: the PSK is the identity of both ends.
      checkServerIdentity: () => undefined,
      pskCallback: () => ({ psk: key.psk, identity: key.streamId }),
    });
    // A source whose packets are dropped never refuses: give up on the attempt as on a silent connection.
    const timer = setTimeout(() => peer.destroy(new Error(`no answer within ${silenceMs} ms`)), silenceMs);
    try {
      await once(peer, 'secureConnect');
      return peer;
    } catch (error) {
      peer.destroy();
      throw new PageRelayError(
        'handshake-failed',
        `cannot open the page stream to ${source.host}:${source.port}: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    } finally {
      clearTimeout(timer);
    }
  };
  // The first connection must work: a wrong key or address is an error now, not a lost stream later.
  const first = await dial();
  const latch = outcomeLatch();
  let stream: ResumableStream | undefined;
  let redialTimer: NodeJS.Timeout | undefined;
  let redialing = false;

  const lose = (reason: string) => {
    clearTimeout(redialTimer);
    if (!latch.settle({ kind: 'lost', reason, ...(stream?.counts() ?? NO_COUNTS) })) return;
    log.warn({ stream: key.streamId, reason }, 'page stream lost; holding the daemon socket');
    // The daemon's socket stays open: the restored process blocks on its next fault until `release`.
    stream?.disconnect(false);
  };

  const redial = () => {
    if (redialing) return;
    redialing = true;
    const deadline = Date.now() + resumeWithinMs;
    log.warn({ stream: key.streamId, resumeWithinMs }, 'page stream connection lost; dialling the source again');
    const attempt = () => {
      dial().then(
        (peer) => {
          redialing = false;
          if (stream && !latch.settled()) stream.attach(peer);
          else peer.destroy();
        },
        () => {
          if (Date.now() >= deadline) {
            redialing = false;
            lose(`the source could not be reached again within ${resumeWithinMs} ms`);
          } else redialTimer = setTimeout(attempt, REDIAL_EVERY_MS);
        },
      );
    };
    attempt();
  };

  // The daemon connects once and speaks first: the stream starts with it, on the first connection.
  const listener = net.createServer((socket) => {
    listener.close();
    const current = new ResumableStream(key.streamId, socket, silenceMs, {
      signal: (type) => {
        if (type === Frame.Done && latch.settle({ kind: 'complete', ...current.counts() })) current.disconnect(true);
        else if (type === Frame.Abort) lose('the source aborted the page stream');
      },
      disconnected: () => {
        if (!latch.settled()) redial();
      },
    });
    stream = current;
    current.attach(first);
  });
  first.once('close', () => {
    if (stream) return;
    // Gone before the daemon connected: nothing restored depends on the stream yet.
    listener.close();
    latch.settle({ kind: 'lost', reason: 'the source went away before the lazy-pages daemon connected', ...NO_COUNTS });
  });
  const host = options.listen?.host ?? '127.0.0.1';
  listener.listen(options.listen?.port ?? 0, host);
  await once(listener, 'listening');
  const bound = listener.address() as net.AddressInfo;
  return {
    local: { host, port: bound.port },
    outcome: latch.promise,
    finish: (daemonSucceeded) => {
      listener.close();
      if (!stream || latch.settled()) return;
      if (daemonSucceeded) {
        stream.signal(Frame.End);
        return;
      }
      stream.signal(Frame.Abort);
      latch.settle({ kind: 'lost', reason: 'the lazy-pages daemon failed', ...stream.counts() });
      stream.disconnect(true);
    },
    release: () => {
      listener.close();
      lose('released by its agent');
      stream?.closeLocal('destroy');
    },
  };
}

/**
 * Listens on the first port of `listen.ports` no other relay holds (each migration's relay is a process of
 * its own, so two may race for a port: the loser takes the next). A relay keeps its port until the
 * destination confirmed DONE, and lingers up to resumeWithinMs after for a late one.
 */
async function listenOnFirstFree(
  server: net.Server,
  listen: { host: string; port?: number; ports?: PortRange },
  lingerMs: number,
): Promise<void> {
  const { host, ports } = listen;
  if (ports === undefined) return listenOn(server, listen.port ?? 0, host);
  for (let port = ports.from; port <= ports.to; port++) {
    try {
      return await listenOn(server, port, host);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error;
    }
  }
  throw new PageRelayError(
    'no-free-port',
    `every page relay port of ${formatPortRange(ports)} on ${host} is taken: as many post-copy migrations are leaving this host ` +
      `(or ended within the last ${lingerMs / 1000} s); widen UMS_PAGE_RELAY_PORTS together with the firewall rule that opens it`,
  );
}

/** listen() that rejects on its error (EADDRINUSE) instead of emitting it; the server may listen again after. */
function listenOn(server: net.Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const failed = (error: Error) => {
      server.off('listening', listening);
      reject(error);
    };
    const listening = () => {
      server.off('error', failed);
      resolve();
    };
    server.once('error', failed);
    server.once('listening', listening);
    server.listen(port, host);
  });
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
