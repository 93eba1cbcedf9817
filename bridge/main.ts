#!/usr/bin/env node
import { Command, Option } from 'commander';
import { createLogger } from '../core/log.js';
import { connectNatsBus } from '../core/nats-event-bus.js';
import { bridgeRequestAuth } from './function-request-auth.js';
import { FunctionEndpoints, runBridge } from './trigger-bridge.js';

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
    // How requests to the functions are authenticated (UMS_FUNCTION_AUTH, UMS_FUNCTION_AUTH_KEY,
    // UMS_FUNCTION_ID_TOKEN, GCE_METADATA_HOST): bridge/function-request-auth.ts.
    const auth = bridgeRequestAuth(process.env, endpoints);
    log.info({ hmac: auth.hmac, idTokens: auth.idTokens }, 'authenticating requests to the functions');
    const bus = await connectNatsBus({ servers: options.nats, name: 'ums-trigger-bridge' });
    const stop = await runBridge(bus, endpoints, auth.headers);
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
