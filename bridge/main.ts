#!/usr/bin/env node
import { Command, Option } from 'commander';
import { AUTH_HEADER, functionAuthKey, functionAuthMode, signDelivery } from '../core/function-auth.js';
import { createLogger } from '../core/log.js';
import { connectNatsBus } from '../core/nats-event-bus.js';
import { FunctionEndpoints, runBridge, type RequestHeaders } from './trigger-bridge.js';

/**
 * The trigger bridge's process (`node dist/bridge/main.js`; a small Cloud Run service in a deployment):
 * configuration from flags or the environment, then bridge/trigger-bridge.ts until SIGTERM/SIGINT.
 */
const log = createLogger('trigger-bridge');

new Command('ums-trigger-bridge')
  .description('Delivers JetStream events to the UMS functions as CloudEvents')
  .addOption(new Option('--nats <url>', 'NATS server').env('NATS_URL').default('nats://127.0.0.1:4222'))
  .addOption(new Option('--endpoints <json>', 'function name -> URL, as JSON').env('UMS_FUNCTION_ENDPOINTS').makeOptionMandatory())
  .action(async (options: { nats: string; endpoints: string }) => {
    const endpoints = FunctionEndpoints.parse(JSON.parse(options.endpoints));
    const headers = requestHeaders();
    const bus = await connectNatsBus({ servers: options.nats, name: 'ums-trigger-bridge' });
    const stop = await runBridge(bus, endpoints, headers);
    const shutdown = async () => {
      await stop();
      await bus.close();
      process.exit(0);
    };
    process.once('SIGTERM', () => void shutdown());
    process.once('SIGINT', () => void shutdown());
  })
  .parseAsync()
  .catch((error: unknown) => {
    log.fatal({ err: error }, 'bridge failed');
    process.exit(1);
  });

/**
 * How the bridge authenticates to the functions (core/function-auth.ts). Locally (bridge-hmac, the
 * default): a token signed with UMS_FUNCTION_AUTH_KEY over the event's id, type, time and body. On Cloud
 * Run (cloud-run-iam) this is the seam where the bridge would fetch an ID token for each function URL's
 * audience (metadata server) and send it as `Authorization: Bearer`, for IAM to check; not built yet.
 */
function requestHeaders(): RequestHeaders {
  const mode = functionAuthMode();
  if (mode === 'cloud-run-iam') {
    throw new Error('UMS_FUNCTION_AUTH=cloud-run-iam: ID tokens for Cloud Run are not implemented in the bridge yet');
  }
  const key = functionAuthKey();
  return async (delivery) => ({ [AUTH_HEADER]: signDelivery(key, delivery) });
}
