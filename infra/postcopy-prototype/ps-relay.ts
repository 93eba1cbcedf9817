/**
 * PROTOTYPE (not product code, not wired into the agents): design (b) of docs/design/post-copy.md.
 * The agent, not CRIU, carries the page-server stream: CRIU gets one end of a unix socketpair as
 * `--ps-socket 3` (Node's stdio 'pipe' is a socketpair), the agent forwards the other end over a TLS 1.2
 * ECDHE-PSK connection keyed per migration (the planner would hand both agents the PSK).
 *
 *   src: tsx ps-relay.ts src LISTEN_HOST PORT PSK_HEX -- criu dump ... --lazy-pages --ps-socket 3 --status-fd 4 ...
 *   dst: tsx ps-relay.ts dst SRC_HOST PORT PSK_HEX -- criu lazy-pages --page-server --ps-socket 3 ...
 * Prints "READY <ms>" when CRIU writes its status fd (src: non-memory images written), "CONNECTED",
 * "CRIU-EXIT <code> <ms>" and byte counts, with wall-clock ms.
 */
import { spawn } from 'node:child_process';
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { existsSync } from 'node:fs';

const [role = '', host = '', portText = '', pskHex = '', sep = '', ...cmd] = process.argv.slice(2);
const program = cmd[0];
if (!['src', 'dst'].includes(role) || sep !== '--' || program === undefined) {
  console.error('usage: ps-relay.ts src|dst HOST PORT PSK_HEX -- CRIU ARGS...');
  process.exit(2);
}
const criuCommand: string = program;
const psk = Buffer.from(pskHex, 'hex');
const identity = 'ums-migration';
const tlsOpts = { ciphers: 'ECDHE-PSK-CHACHA20-POLY1305', minVersion: 'TLSv1.2' as const, maxVersion: 'TLSv1.2' as const };
const t = () => Date.now();
const log = (s: string) => console.log(`[${role}] ${s} ${t()}`);

// The agent is long-lived: PC_GO_FILE=PATH makes the relay connect first and start CRIU only once PATH
// exists, so the timings are CRIU's and the network's, not Node's start-up.
let psEnd: Duplex | undefined;
let conn: tls.TLSSocket | undefined;
let up = 0,
  down = 0;
function startCriu() {
  log('SPAWN');
  // Container level: runc has no --ps-socket, so the local end can be a loopback TCP page server instead of
  // a CRIU child: `-- tcp-connect:127.0.0.1:PORT` (source: runc's CRIU listens there) or
  // `-- tcp-listen:127.0.0.1:PORT` (destination: the shim's lazy-pages daemon connects there).
  const tcp = /^tcp-(connect|listen):(.+):(\d+)$/.exec(criuCommand);
  if (tcp) {
    const [, mode, addr = '', port = ''] = tcp;
    const attach = (sock: net.Socket) => {
      log(`LOCAL-${mode === 'connect' ? 'CONNECTED' : 'ACCEPTED'} ${addr}:${port}`);
      sock.setNoDelay(true); // page requests/answers are small: no Nagle on the local hop
      psEnd = sock;
      sock.on('close', () => {
        log(`LOCAL-CLOSED criu->peer=${up} peer->criu=${down}`);
        setTimeout(() => process.exit(0), 200);
      });
      if (conn) join(conn);
    };
    if (mode === 'connect') {
      const tryConnect = () => {
        const sock = net.connect(Number(port), addr, () => attach(sock));
        sock.once('error', () => setTimeout(tryConnect, 5));
      };
      tryConnect();
    } else {
      const server = net.createServer((sock) => {
        server.close();
        attach(sock);
      });
      server.listen(Number(port), addr, () => log(`LOCAL-LISTEN ${addr}:${port}`));
    }
    return;
  }
  const child = spawn(criuCommand, cmd.slice(1), { stdio: ['ignore', 'inherit', 'inherit', 'pipe', 'pipe'] });
  psEnd = child.stdio[3] as Duplex;
  const statusEnd = child.stdio[4] as Duplex;
  statusEnd.on('data', () => log('READY'));
  statusEnd.on('error', () => {});
  child.on('exit', (code: number | null, sig: NodeJS.Signals | null) => {
    log(`CRIU-EXIT ${code ?? sig} criu->peer=${up} peer->criu=${down}`);
    setTimeout(() => process.exit(code ?? 1), 200);
  });
  if (conn) join(conn);
}
const go = process.env.PC_GO_FILE;
if (go) {
  log('WAITING');
  const timer = setInterval(() => {
    if (existsSync(go)) {
      clearInterval(timer);
      startCriu();
    }
  }, 2);
} else startCriu();

function connected(c: tls.TLSSocket) {
  conn = c;
  c.setNoDelay(true);
  log(`CONNECTED cipher=${c.getCipher().name} ${c.getProtocol()}`);
  if (psEnd) join(c);
}
function join(conn: tls.TLSSocket) {
  if (!psEnd) return;
  const ps = psEnd;
  ps.on('data', (b: Buffer) => {
    up += b.length;
    conn.write(b);
  });
  conn.on('data', (b: Buffer) => {
    down += b.length;
    ps.write(b);
  });
  // PC_HOLD_ON_LOSS=1 (destination): on losing the peer, keep CRIU's end open, so the lazy-pages daemon
  // waits and the restored tasks block on their next missing page instead of getting zero-filled pages.
  const hold = process.env.PC_HOLD_ON_LOSS === '1';
  conn.on('end', () => {
    log(`PEER-END${hold ? ' (holding CRIU socket)' : ''}`);
    if (!hold) ps.end();
  });
  conn.on('error', (e: Error) => {
    log(`PEER-ERROR ${e.message}`);
    if (!hold) ps.destroy();
  });
  ps.on('end', () => conn.end());
  ps.on('error', () => conn.destroy());
}

if (role === 'src') {
  const server = tls.createServer(
    {
      ...tlsOpts,
      pskCallback: (_s, id) => (id === identity ? psk : null),
    },
    (c) => {
      server.close();
      connected(c);
    },
  );
  server.listen(Number(portText), host, () => log(`LISTEN ${host}:${portText}`));
} else {
  const c = tls.connect(
    {
      ...tlsOpts,
      host,
      port: Number(portText),
      checkServerIdentity: () => undefined,
      pskCallback: () => ({ psk, identity }),
    },
    () => connected(c),
  );
  c.on('error', (e: Error) => {
    log(`CONNECT-ERROR ${e.message}`);
    process.exit(1);
  });
}
