import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { keylessStoreAccess } from '../../core/cloud-identity/keyless-store-access.js';
import { openObjectStore } from '../../core/object-stores/open-object-store.js';

/*
 * The Azure half of test/integration/cloud-identity.test.ts, run in a process of its own because it talks
 * HTTPS to Azurite (which takes bearer tokens over HTTPS only) with a test CA that Node trusts only through
 * NODE_EXTRA_CA_CERTS, read at start. It plays both sides of a migration's Azure store: the agent writing
 * with the account key, then the functions, their stores opened as functions/function-context.ts opens them,
 * signing a read URL keylessly (their Google ID token -> Entra ID stand-in -> bearer token -> user delegation
 * key -> user delegation SAS) and cleaning up with the token; it prints what it saw as one JSON line.
 */

const Config = z.object({
  blobEndpoint: z.url(),
  account: z.string(),
  accountKey: z.string(),
  metadataHost: z.string(),
  authorityHost: z.url(),
  tenantId: z.string(),
  clientId: z.string(),
  audience: z.string(),
});

const config = Config.parse(JSON.parse(process.env.UMS_PROBE_CONFIG ?? '{}'));
const url = `azblob://${config.account}/checkpoints/ums`;
const key = 'migrations/m-1/chunk-000000';
const bytes = randomBytes(256 * 1024);
const endpoint = `DefaultEndpointsProtocol=https;AccountName=${config.account};BlobEndpoint=${config.blobEndpoint}`;

// The agent's side: the account key (what agents/main.ts uses for Azure today).
const agentEnv = { AZURE_STORAGE_CONNECTION_STRING: `${endpoint};AccountKey=${config.accountKey}` };
const { BlobServiceClient, StorageSharedKeyCredential } = await import('@azure/storage-blob');
await new BlobServiceClient(config.blobEndpoint, new StorageSharedKeyCredential(config.account, config.accountKey))
  .getContainerClient('checkpoints')
  .createIfNotExists();
const agent = await openObjectStore(url, agentEnv);
await agent.put(key, bytes);

// The functions' side, as functions/function-context.ts opens stores: keyless settings (the connection string
// only says where the emulator's endpoint is), and a wrong account key that must go unused.
const functionsEnv: NodeJS.ProcessEnv = {
  AZURE_STORAGE_CONNECTION_STRING: endpoint,
  AZURE_STORAGE_KEY: Buffer.from('not the account key').toString('base64'),
  UMS_AZURE_CLIENT_ID: config.clientId,
  UMS_AZURE_TENANT_ID: config.tenantId,
  UMS_AZURE_TOKEN_AUDIENCE: config.audience,
  AZURE_AUTHORITY_HOST: config.authorityHost,
  GCE_METADATA_HOST: config.metadataHost,
};
const access = keylessStoreAccess(functionsEnv);
const functions = await openObjectStore(url, functionsEnv, access.options);
const signed = await functions.signedReadUrl(key, 300);
const sas = new URL(signed.url).searchParams;
const read = await fetch(signed.url);
const body = Buffer.from(await read.arrayBuffer());
const tampered = new URL(signed.url);
tampered.searchParams.set('sig', randomBytes(32).toString('base64'));
const refused = await fetch(tampered);
await refused.body?.cancel();
const otherBlob = new URL(signed.url.replace('chunk-000000', 'chunk-000001'));
const misdirected = await fetch(otherBlob);
await misdirected.body?.cancel();
const listed: string[] = [];
for await (const object of functions.list('migrations/m-1/')) listed.push(object.key);
await functions.delete(key);
const after = await agent.head(key);

process.stdout.write(
  `${JSON.stringify({
    delegationFields: ['skoid', 'sktid', 'skt', 'ske', 'sks', 'skv'].filter((f) => sas.has(f)),
    readStatus: read.status,
    bodyMatches: body.equals(bytes),
    tamperedStatus: refused.status,
    misdirectedStatus: misdirected.status,
    listed,
    goneAfterDelete: after === undefined,
  })}\n`,
);
