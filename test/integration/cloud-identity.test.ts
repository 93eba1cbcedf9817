/**
 * Keyless cloud access from GCP, as it runs: the functions signing S3 and Azure read URLs with their Google
 * identity, and the trigger bridge sending Cloud Run ID tokens.
 *
 * The clouds' token services cannot run here (no cloud is reachable), so a local HTTP server stands in for
 * them, speaking their documented formats (test/support/cloud-token-services.ts): the GCE metadata server's
 * identity endpoint, AWS STS's AssumeRoleWithWebIdentity (XML) and Microsoft Entra ID's token endpoint (JSON).
 * Everything else is real:
 *   - S3: the S3 store with the web-identity credentials the STS stand-in hands out puts, lists, deletes and
 *     signs a presigned URL that s3rver (which checks SigV4) serves; a tampered one it refuses.
 *   - Azure: Azurite over HTTPS with OAuth takes the Entra stand-in's bearer token, hands out a user delegation
 *     key, and verifies the user delegation SAS the Azure store signs with it (tampered or misdirected: 403).
 *     Azurite's OAuth is "basic": it checks a token's issuer, audience and lifetime, not its signature.
 *   - The bridge: the real `node dist/bridge/main.js` delivers JetStream events (a real nats-server) to a
 *     functions-framework server that checks what Cloud Run's IAM would (a bearer ID token for its URL) and then
 *     the bridge's HMAC token (functions/http-trigger.ts); its logs never carry a token.
 * Not checked (only a real cloud can): the clouds' signature checks on the Google token, their evaluation of
 * the AWS trust policy and the Azure federated credential, Cloud Run's IAM itself, and Azure's RBAC on the
 * user delegation SAS.
 *
 * Run: npm ci && bash infra/storage-servers-setup.sh (s3rver), nats-server and openssl on PATH.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import * as framework from '@google-cloud/functions-framework';
import { getTestServer } from '@google-cloud/functions-framework/testing';
import { CloudIdentityError } from '../../core/cloud-identity/identity-error.js';
import { keylessStoreAccess } from '../../core/cloud-identity/keyless-store-access.js';
import { makeEvent } from '../../core/events.js';
import { connectNatsBus, type NatsEventBus } from '../../core/nats-event-bus.js';
import { openObjectStore } from '../../core/object-stores/open-object-store.js';
import { authenticatedCloudEvent } from '../../functions/http-trigger.js';
import { createBrokerTls } from '../../infra/broker-credentials.js';
import { startNatsServer, type NatsServer } from '../../infra/nats-server.js';
import { startAzuriteWithOAuth, startS3Server, type AzuriteWithOAuth, type ObjectServer } from '../../infra/object-servers.js';
import { GOOGLE_ISSUER, startCloudTokenServices, type CloudTokenServices } from '../support/cloud-token-services.js';

const execFileAsync = promisify(execFile);
const compiled = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

// s3rver knows one account: the STS stand-in hands out its key, with a session token of its own.
const S3RVER_KEYS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
const ROLE_ARN = 'arn:aws:iam::111122223333:role/ums-functions';
const AZURE = {
  tenantId: '11111111-2222-3333-4444-555555555555',
  clientId: '66666666-7777-8888-9999-000000000000',
  audience: 'api://AzureADTokenExchange',
  principalId: 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee',
};

/**
 * Azurite takes seconds to start (more on a busy machine): it starts with the file, and the Azure tests,
 * which come last, wait for it.
 */
const azuriteStarting = (async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ums-keyless-azure-'));
  const tls = await createBrokerTls(join(dir, 'tls'));
  return { dir, caFile: tls.caFile, azurite: await startAzuriteWithOAuth(join(dir, 'azurite'), tls) };
})();
// Seen by the Azure tests' before(); not an unhandled rejection before they run.
azuriteStarting.catch(() => undefined);

function assertNoToken(services: CloudTokenServices, text: string, where: string): void {
  for (const token of services.issued) assert.ok(!text.includes(token), `a token leaked into ${where}`);
}

describe('keyless access from GCP: S3 with web-identity credentials (STS stand-in, s3rver)', () => {
  let dir: string;
  let services: CloudTokenServices;
  let s3: ObjectServer;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ums-keyless-s3-'));
    services = await startCloudTokenServices({ aws: { roleArn: ROLE_ARN, audience: 'sts.amazonaws.com', ...S3RVER_KEYS } });
    s3 = await startS3Server(join(dir, 's3'));
    // The functions' environment as gcp-functions sets it, endpoints moved to the stand-ins: no static key.
    env = {
      AWS_ENDPOINT_URL_S3: s3.env.AWS_ENDPOINT_URL_S3,
      AWS_REGION: 'us-east-1',
      UMS_AWS_ROLE_ARN: ROLE_ARN,
      UMS_AWS_TOKEN_AUDIENCE: 'sts.amazonaws.com',
      AWS_ENDPOINT_URL_STS: services.stsEndpoint,
      GCE_METADATA_HOST: services.metadataHost,
    };
  });
  after(async () => {
    await s3?.stop();
    await services?.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('puts, lists and deletes, and signs a presigned URL that the S3 server accepts, with one STS session', async () => {
    // Static keys the S3 server does not know, set too: the keyless identity wins (and they are reported unused).
    const access = keylessStoreAccess({ ...env, AWS_ACCESS_KEY_ID: 'AKIAUNUSEDSTATICKEY0', AWS_SECRET_ACCESS_KEY: 'unused' });
    assert.deepEqual(access.ignored, ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']);
    const run = `${s3.storeUrl}/run-${randomUUID().slice(0, 8)}`;
    const store = await openObjectStore(
      run,
      { ...env, AWS_ACCESS_KEY_ID: 'AKIAUNUSEDSTATICKEY0', AWS_SECRET_ACCESS_KEY: 'unused' },
      access.options,
    );
    const bytes = randomBytes(64 * 1024);
    await store.put('migrations/m-1/chunk-000000', bytes);

    // What the functions do: another store (a new S3 client per invocation) signs a read URL.
    const functions = await openObjectStore(run, env, access.options);
    const signed = await functions.signedReadUrl('migrations/m-1/chunk-000000', 300);
    const query = new URL(signed.url).searchParams;
    assert.match(query.get('X-Amz-Credential') ?? '', /^S3RVER\//, 'signed with the STS credentials');
    assert.ok(services.issued.has(query.get('X-Amz-Security-Token') ?? ''), 'the STS session token is in the URL, as S3 needs it');
    const read = await fetch(signed.url);
    assert.equal(read.status, 200);
    assert.ok(Buffer.from(await read.arrayBuffer()).equals(bytes));
    const tampered = new URL(signed.url);
    tampered.searchParams.set('X-Amz-Signature', '0'.repeat(64));
    const refused = await fetch(tampered);
    await refused.body?.cancel();
    assert.equal(refused.status, 403, 's3rver checks the signature');

    const listed: string[] = [];
    for await (const object of functions.list('migrations/m-1/')) listed.push(object.key);
    assert.deepEqual(listed, ['migrations/m-1/chunk-000000']);
    await functions.delete('migrations/m-1/chunk-000000');
    assert.equal(await store.head('migrations/m-1/chunk-000000'), undefined);
    assert.equal(services.seen.sts, 1, 'one AssumeRoleWithWebIdentity for both stores and every request');
    assert.equal(services.seen.identity.get('sts.amazonaws.com'), 1);
  });

  it("fails clearly, without the token, when the role's trust does not match", async () => {
    const access = keylessStoreAccess({ ...env, UMS_AWS_TOKEN_AUDIENCE: 'not-what-the-role-trusts' });
    const store = await openObjectStore(`${s3.storeUrl}/denied`, env, access.options);
    await assert.rejects(store.put('x', new Uint8Array(1)), (error: unknown) => {
      assert.ok(error instanceof CloudIdentityError, `a CloudIdentityError, not ${String(error)}`);
      assert.match(
        error.message,
        /AWS STS: AssumeRoleWithWebIdentity of arn:aws:iam::111122223333:role\/ums-functions .* refused: HTTP 403 AccessDenied/,
      );
      assertNoToken(services, error.message, 'the error');
      return true;
    });
  });
});

describe('the trigger bridge sends a Cloud Run ID token and its HMAC token (bridge process, nats-server, functions-framework)', () => {
  let dir: string;
  let services: CloudTokenServices;
  let nats: NatsServer;
  let bus: NatsEventBus;
  let server: Server;
  let bridge: ChildProcess | undefined;
  let bridgeLog = '';
  const received: Array<{ id: unknown; bearer: string }> = [];
  const key = randomBytes(32).toString('base64');

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ums-keyless-bridge-'));
    services = await startCloudTokenServices();
    nats = await startNatsServer(join(dir, 'nats'));
    bus = await connectNatsBus({ servers: nats.url, name: 'cloud-identity-test' });
    // The function: first what Cloud Run's IAM checks (an ID token for this service's URL, from Google),
    // then the bridge's HMAC token, as functions/http-trigger.ts checks it in every function.
    process.env.UMS_FUNCTION_AUTH = 'bridge-hmac';
    process.env.UMS_FUNCTION_AUTH_KEY = key;
    let origin = '';
    let currentBearer = '';
    const hmacChecked = authenticatedCloudEvent('planMigration', async (incoming) => {
      received.push({ id: incoming.id, bearer: currentBearer });
    });
    framework.http('cloudRunIamProbe', async (req, res) => {
      const bearer = /^Bearer (\S+)$/.exec(req.header('authorization') ?? '')?.[1];
      const claims =
        bearer === undefined
          ? undefined
          : (JSON.parse(Buffer.from(bearer.split('.')[1] ?? '', 'base64url').toString()) as Record<string, unknown>);
      if (bearer === undefined || claims?.iss !== GOOGLE_ISSUER || claims.aud !== origin || !services.issued.has(bearer)) {
        res.status(bearer === undefined ? 401 : 403).send('Cloud Run IAM (stand-in): no valid ID token for this service');
        return;
      }
      currentBearer = bearer;
      await hmacChecked(req, res);
    });
    server = getTestServer('cloudRunIamProbe');
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

    services.failNext.identity = 500; // the first ID token request fails: the delivery is retried
    bridge = spawn(process.execPath, [join(compiled, 'bridge', 'main.js')], {
      env: {
        PATH: process.env.PATH,
        NATS_URL: nats.url,
        UMS_FUNCTION_ENDPOINTS: JSON.stringify({ planMigration: `${origin}/` }),
        UMS_FUNCTION_AUTH: 'bridge-hmac',
        UMS_FUNCTION_AUTH_KEY: key,
        UMS_FUNCTION_ID_TOKEN: 'metadata',
        GCE_METADATA_HOST: services.metadataHost,
        UMS_LOG_LEVEL: 'debug',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    bridge.stdout?.on('data', (chunk: Buffer) => (bridgeLog += chunk.toString()));
    bridge.stderr?.on('data', (chunk: Buffer) => (bridgeLog += chunk.toString()));
    const deadline = Date.now() + 20_000;
    while (!bridgeLog.includes('"trigger bound"') && bridge.exitCode === null && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    assert.ok(bridgeLog.includes('"trigger bound"'), `the bridge did not start:\n${bridgeLog}`);
  });
  after(async () => {
    if (bridge !== undefined && bridge.exitCode === null) {
      bridge.kill('SIGTERM');
      await new Promise((r) => bridge?.once('exit', r));
    }
    server?.close();
    await bus?.close();
    await nats?.stop();
    await services?.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  async function deliveredCount(count: number): Promise<void> {
    const deadline = Date.now() + 15_000;
    while (received.length < count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(received.length, count, `deliveries seen by the function; bridge log:\n${bridgeLog}`);
  }

  it('delivers with both tokens, retries when the metadata server fails, reuses the ID token, and logs no token', async () => {
    const first = makeEvent('migration.requested', '/test', { migrationId: randomUUID(), container: 'web', destinationAgent: 'gcp-1' });
    await bus.publishEvent(first);
    await deliveredCount(1);
    const second = makeEvent('migration.requested', '/test', { migrationId: randomUUID(), container: 'db', destinationAgent: 'gcp-1' });
    await bus.publishEvent(second);
    await deliveredCount(2);

    assert.deepEqual(
      received.map((r) => r.id),
      [first.id, second.id],
    );
    const audience = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    assert.equal(received[0]?.bearer, received[1]?.bearer, 'the same ID token for both deliveries');
    assert.equal(services.seen.identity.get(audience), 2, 'one failed request, then one token for every delivery');
    // What the bridge said: how it authenticates, and why the first attempt failed; never a token.
    assert.match(
      bridgeLog,
      /"hmac":true,"idTokens":\{"metadata":"http:\/\/127\.0\.0\.1:\d+"\}.*"authenticating requests to the functions"/,
    );
    assert.match(
      bridgeLog,
      /"failure":"GCE metadata server: refused an ID token for audience \\"http:\/\/127\.0\.0\.1:\d+\\" from http:\/\/127\.0\.0\.1:\d+: HTTP 500/,
    );
    assertNoToken(services, bridgeLog, "the bridge's log");
  });
});

describe('keyless access from GCP: Azure user delegation SAS (Entra ID stand-in, Azurite over HTTPS with OAuth)', () => {
  let services: CloudTokenServices;
  let azurite: AzuriteWithOAuth;
  let caFile: string;

  before(async () => {
    services = await startCloudTokenServices({ azure: AZURE });
    ({ caFile, azurite } = await azuriteStarting);
  });
  after(async () => {
    const started = await azuriteStarting.catch(() => undefined);
    await started?.azurite.stop();
    await services?.close();
    if (started !== undefined) await rm(started.dir, { recursive: true, force: true });
  });

  it('gets a storage token with the Google ID token, a user delegation key with it, and signs a SAS Azurite verifies', async () => {
    const config = {
      blobEndpoint: azurite.blobEndpoint,
      account: azurite.account,
      accountKey: azurite.accountKey,
      metadataHost: services.metadataHost,
      authorityHost: services.authorityHost,
      ...AZURE,
    };
    // A process of its own: the Azure SDK trusts the test CA only through NODE_EXTRA_CA_CERTS, read at start.
    const { stdout } = await execFileAsync(process.execPath, [join(compiled, 'test', 'support', 'azurite-federated-probe.js')], {
      env: { PATH: process.env.PATH, NODE_EXTRA_CA_CERTS: caFile, UMS_PROBE_CONFIG: JSON.stringify(config), UMS_LOG_LEVEL: 'warn' },
    }).catch((error: unknown) => assert.fail(`the probe failed: ${String((error as { stderr?: string }).stderr ?? error)}`));
    const seen = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>;
    assert.deepEqual(seen, {
      // A user delegation SAS names the key it was signed with: the identity (oid, tenant) and its validity.
      delegationFields: ['skoid', 'sktid', 'skt', 'ske', 'sks', 'skv'],
      readStatus: 200,
      bodyMatches: true,
      tamperedStatus: 403,
      misdirectedStatus: 403,
      listed: ['migrations/m-1/chunk-000000'],
      goneAfterDelete: true,
    });
    assert.equal(services.seen.entra, 1, 'one token for the delegation key, the listing and the delete');
    assert.equal(services.seen.identity.get(AZURE.audience), 1);
    assertNoToken(services, stdout, "the probe's output");
  });
});
