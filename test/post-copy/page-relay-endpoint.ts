/**
 * One end of the agents' page relay (agents/post-copy/page-relay.ts) as a process of its own, so a test can
 * run it inside a simulated host's network namespace and kill it like a crashed agent. Speaks JSON lines:
 * prints {"address"} (source) or {"local"} (destination) once ready, then {"outcome"}; the destination reads
 * "finish ok", "finish failed" and "release" on stdin. The key comes in the environment (hex), never in argv;
 * UMS_PAGE_STREAM_RESUME_MS and UMS_PAGE_STREAM_SILENCE_MS, if set, are the relay's resumeWithinMs and silenceMs.
 *
 *   node page-relay-endpoint.js source STREAM_ID LISTEN_HOST CRIU_PORT
 *   node page-relay-endpoint.js destination STREAM_ID SOURCE_HOST SOURCE_PORT
 */
import { createInterface } from 'node:readline';
import { fetchPages, servePages, type RelayOutcome } from '../../agents/post-copy/page-relay.js';

const [role, streamId = '', host = '', portText = ''] = process.argv.slice(2);
const key = { streamId, psk: Buffer.from(process.env.UMS_PAGE_STREAM_PSK ?? '', 'hex') };
const asNumber = (value: string | undefined) => (value === undefined ? undefined : Number(value));
const resumeWithinMs = asNumber(process.env.UMS_PAGE_STREAM_RESUME_MS);
const silenceMs = asNumber(process.env.UMS_PAGE_STREAM_SILENCE_MS);
const say = (message: object) => process.stdout.write(`${JSON.stringify(message)}\n`);
const report = (outcome: Promise<RelayOutcome>) => void outcome.then((result) => say({ outcome: result }));

if (role === 'source') {
  const source = await servePages({
    key,
    resumeWithinMs,
    silenceMs,
    listen: { host },
    criu: { host: '127.0.0.1', port: Number(portText) },
  });
  say({ address: source.address });
  report(source.outcome);
} else if (role === 'destination') {
  const sink = await fetchPages({ key, resumeWithinMs, silenceMs, source: { host, port: Number(portText) } });
  say({ local: sink.local });
  report(sink.outcome);
  for await (const line of createInterface({ input: process.stdin })) {
    if (line === 'finish ok') sink.finish(true);
    else if (line === 'finish failed') sink.finish(false);
    else if (line === 'release') sink.release();
  }
} else {
  process.stderr.write('usage: page-relay-endpoint.js source|destination STREAM_ID HOST PORT\n');
  process.exit(2);
}
