#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { AgentId } from '../core/events.js';
import { provisionBus, StreamReplicas } from '../core/nats-event-bus.js';
import { generateSigningKeyPair } from '../core/signed-envelope.js';
import { writePrincipalCredentials } from './broker-credentials.js';

/*
 * The secrets of a cloud deployment (terraform/README.md), made on the operator's machine so that no secret
 * ever passes through Terraform's state:
 *
 *   node dist/infra/deploy-credentials.js create --agents azure-eastus-1,gcp-us-central1-1 --out ./ums-secrets
 *     writes <out>/credentials/<principal>.json (one nkey seed per principal, mode 0600: put each into its
 *     cloud's secret manager, then delete the local copy), <out>/command-signing-key.pem (the functions' key,
 *     mode 0600, for Secret Manager), <out>/authorization.conf and <out>/command-verify-key.txt (public:
 *     Terraform inputs).
 *
 *   node dist/infra/deploy-credentials.js provision --nats tls://nats.example:4222 --ca ca.pem --admin <out>/credentials/admin.json \
 *       [--replicas N]
 *     creates the streams and KV buckets once, as the admin principal (components only bind to them), with N
 *     copies each (default $UMS_STREAM_REPLICAS; Terraform's `stream_replicas` output: 3 on a 3-server broker).
 *     Run again with another N to rescale the existing ones (e.g. after growing the broker from 1 to 3
 *     servers); without N and UMS_STREAM_REPLICAS, new ones get 1 and existing ones keep theirs.
 *
 * The components that connect in a deployment never create a stream (their principals may not: they bind),
 * so this command is where the replica count is applied, and the only one that reads UMS_STREAM_REPLICAS.
 */

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    agents: { type: 'string' },
    out: { type: 'string' },
    nats: { type: 'string' },
    ca: { type: 'string' },
    admin: { type: 'string' },
    replicas: { type: 'string' },
  },
});

async function create(): Promise<void> {
  if (values.agents === undefined || values.out === undefined)
    throw new Error('usage: deploy-credentials create --agents <id,id,...> --out <dir>');
  const agentIds = values.agents.split(',').map((id) => AgentId.parse(id.trim()));
  const out = resolve(values.out);
  await mkdir(out, { recursive: true, mode: 0o700 });
  const { files, authorization } = await writePrincipalCredentials(join(out, 'credentials'), agentIds);
  await writeFile(join(out, 'authorization.conf'), authorization, { mode: 0o644 });
  const { privateKey, publicKey } = generateSigningKeyPair();
  await writeFile(join(out, 'command-signing-key.pem'), privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600, flag: 'wx' });
  await writeFile(join(out, 'command-verify-key.txt'), `${publicKey.publicKey}\n`, { mode: 0o644 });
  // Paths only: the seeds are never printed.
  console.log(`wrote ${files.size} broker credentials under ${join(out, 'credentials')} (${[...files.keys()].join(', ')})`);
  console.log(
    `wrote ${join(out, 'authorization.conf')} and ${join(out, 'command-verify-key.txt')} (public), ${join(out, 'command-signing-key.pem')} (secret)`,
  );
}

async function provision(): Promise<void> {
  if (values.nats === undefined || values.ca === undefined || values.admin === undefined) {
    throw new Error('usage: deploy-credentials provision --nats <tls://host:4222> --ca <ca.pem> --admin <admin.json> [--replicas N]');
  }
  const text = values.replicas ?? process.env.UMS_STREAM_REPLICAS;
  const parsed = text === undefined ? undefined : StreamReplicas.safeParse(Number(text));
  if (parsed !== undefined && !parsed.success) {
    throw new Error(`--replicas (or UMS_STREAM_REPLICAS) must be a whole number from 1 to 5, got "${text}"`, { cause: parsed.error });
  }
  const replicas = parsed?.data;
  await provisionBus({ servers: values.nats, name: 'ums-provision', credentials: values.admin, ca: values.ca }, { replicas });
  console.log(
    `provisioned the streams and buckets on ${values.nats}` +
      (replicas === undefined ? ' (existing ones keep their replicas; new ones have 1)' : ` with ${replicas} replica(s) each`),
  );
}

const command = positionals[0];
(command === 'create'
  ? create()
  : command === 'provision'
    ? provision()
    : Promise.reject(new Error('usage: deploy-credentials create|provision ...'))
).catch((error: unknown) => {
  console.error((error as Error).message);
  process.exit(1);
});
