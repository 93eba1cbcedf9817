#!/usr/bin/env node
import { getTestServer } from '@google-cloud/functions-framework/testing';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

/**
 * One function on 127.0.0.1 (development harness): what `functions-framework --target=<fn> --port=<p>`
 * does, but bound to loopback. The framework's CLI (5.x) has no host option and listens on every
 * interface; its programmatic server (the same Express app: body parsers, signature-type wrapper) is
 * reachable through its testing entry point, and listening is ours to do. Cloud Run serves the
 * functions with the framework's own CLI.
 *
 *   node dist/infra/serve-function.js --source=dist/functions/index.js --target=finalize --port=8080 [--host=127.0.0.1]
 */
const { values } = parseArgs({
  options: {
    source: { type: 'string' },
    target: { type: 'string' },
    port: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
  },
});
if (values.source === undefined || values.target === undefined || values.port === undefined) {
  console.error('usage: serve-function --source=<module> --target=<function> --port=<port> [--host=127.0.0.1]');
  process.exit(2);
}
// The module registers its functions with the framework when it loads.
await import(pathToFileURL(values.source).href);
const server = getTestServer(values.target);
server.setTimeout(0);
server.listen(Number(values.port), values.host, () => {
  console.log(`Serving function ${values.target} on http://${values.host}:${values.port}/`);
});
const stop = (): void => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
