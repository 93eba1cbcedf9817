/**
 * One end of the page relay (page-relay.ts) as a process of its own: the agent starts it in the network
 * namespace of its host's containers (the local stack's simulated hosts have their own), and it outlives an
 * agent that crashes or restarts, as conmon outlives Podman: the pages of a post-copy migration keep moving.
 * Speaks JSON lines on stdout: one {"address", "criuPort"} (source) or {"local"} (destination) once ready,
 * then {"outcome"}; a source that cannot listen says {"error"} and exits. The destination finishes by itself when the runtime shim records its lazy-pages daemon's
 * exit code (DAEMON_RC, a file: 0 means every page arrived), writes its outcome to OUTCOME (a file: an agent
 * that restarted meanwhile reads it there), and reads "release" on stdin. The key comes
 * in the environment (UMS_PAGE_STREAM_PSK, hex), never in argv; UMS_PAGE_STREAM_RESUME_MS and
 * UMS_PAGE_STREAM_SILENCE_MS, if set, are the relay's resumeWithinMs and silenceMs; UMS_PAGE_RELAY_PORTS, if
 * set ("7700" or "7700-7715"), the ports the source listens on (its first free one), the range the host's
 * firewall opens to the other hosts; else the kernel picks one.
 *
 *   node relay-process.js source STREAM_ID LISTEN_HOST [CRIU_PORT]     (default: a free loopback port)
 *   node relay-process.js destination STREAM_ID SOURCE_HOST SOURCE_PORT DAEMON_RC OUTCOME
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../../core/free-port.js';
import { fetchPages, parsePortRange, servePages, type RelayOutcome } from './page-relay.js';

const [role, streamId = '', host = '', portText, daemonRc, outcomeFile] = process.argv.slice(2);
const key = { streamId, psk: Buffer.from(process.env.UMS_PAGE_STREAM_PSK ?? '', 'hex') };
delete process.env.UMS_PAGE_STREAM_PSK;
const asNumber = (value: string | undefined) => (value === undefined ? undefined : Number(value));
const resumeWithinMs = asNumber(process.env.UMS_PAGE_STREAM_RESUME_MS);
const silenceMs = asNumber(process.env.UMS_PAGE_STREAM_SILENCE_MS);
const ports = process.env.UMS_PAGE_RELAY_PORTS ? parsePortRange(process.env.UMS_PAGE_RELAY_PORTS) : undefined;
// An agent that died closed its end of stdout; the relay goes on without telling it.
process.stdout.on('error', () => undefined);
const say = (message: object) => process.stdout.write(`${JSON.stringify(message)}\n`);
const report = (outcome: Promise<RelayOutcome>) => void outcome.then((result) => say({ outcome: result }));

if (role === 'source') {
  // CRIU's page server listens on this port once the dump starts; the relay dials it when the destination asks.
  const criuPort = portText === undefined ? await freePort() : Number(portText);
  const source = await servePages({
    key,
    resumeWithinMs,
    silenceMs,
    listen: { host, ...(ports !== undefined ? { ports } : {}) },
    criu: { host: '127.0.0.1', port: criuPort },
  }).catch((error: unknown) => {
    // The agent reads why (every port of the range taken, an address not on this host) before the freeze.
    say({ error: (error as Error).message });
    process.exit(1);
  });
  say({ address: source.address, criuPort });
  report(source.outcome);
} else if (role === 'destination' && daemonRc !== undefined && outcomeFile !== undefined) {
  const sink = await fetchPages({ key, resumeWithinMs, silenceMs, source: { host, port: Number(portText) } });
  say({ local: sink.local });
  // The file first, then the report: an agent that hears the report removes the markers, this file among them.
  report(
    sink.outcome.then(async (outcome) => {
      await writeFile(`${outcomeFile}.tmp`, JSON.stringify({ outcome, endedAt: new Date().toISOString() }), { mode: 0o600 });
      await rename(`${outcomeFile}.tmp`, outcomeFile);
      return outcome;
    }),
  );
  void (async () => {
    let settled = false;
    void sink.outcome.then(() => (settled = true));
    while (!settled) {
      // The shim writes it whole (a rename); an empty file is still being written, not a failure.
      const rc = (await readFile(daemonRc, 'utf8').catch(() => undefined))?.trim();
      if (rc !== undefined && rc !== '') return sink.finish(rc === '0');
      await sleep(50);
    }
  })();
  for await (const line of createInterface({ input: process.stdin })) if (line === 'release') sink.release();
} else {
  process.stderr.write(
    'usage: relay-process.js source STREAM_ID LISTEN_HOST [CRIU_PORT] | destination STREAM_ID SOURCE_HOST SOURCE_PORT DAEMON_RC OUTCOME\n',
  );
  process.exit(2);
}
