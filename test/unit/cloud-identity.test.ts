import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe, it } from 'node:test';
import { awsWebIdentityCredentials, defaultStsEndpoint, xmlText } from '../../core/cloud-identity/aws-web-identity.js';
import { AzureFederatedCredential } from '../../core/cloud-identity/azure-federated-credential.js';
import { GoogleIdTokenSource } from '../../core/cloud-identity/google-id-token.js';
import { freePort } from '../../core/free-port.js';
import { CloudIdentityConfigError, CloudIdentityError, checkedTokenEndpoint } from '../../core/cloud-identity/identity-error.js';
import { keylessStoreAccess } from '../../core/cloud-identity/keyless-store-access.js';
import { AUTH_HEADER, FunctionAuthConfigError, functionIdTokenMode, verifyDelivery } from '../../core/function-auth.js';
import { bridgeRequestAuth, functionAudience } from '../../bridge/function-request-auth.js';
import { startCloudTokenServices, unsignedJwt, type CloudTokenServices } from '../support/cloud-token-services.js';

/*
 * The keyless identities (core/cloud-identity/) against stand-ins for the clouds' token services
 * (test/support/cloud-token-services.ts): a local HTTP server that speaks the GCE metadata server's,
 * AWS STS's and Microsoft Entra ID's documented formats and checks what their trust configuration would,
 * because the real services cannot be reached from here. What runs is this code's side of each exchange:
 * the requests, the answers' parsing, caching and expiry, retries and errors. The S3 and Azure stores and
 * the bridge using them are in test/integration/cloud-identity.test.ts.
 */

const ROLE_ARN = 'arn:aws:iam::111122223333:role/ums-functions';
const AZURE = {
  tenantId: '11111111-2222-3333-4444-555555555555',
  clientId: '66666666-7777-8888-9999-000000000000',
  audience: 'api://AzureADTokenExchange',
  principalId: 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee',
};
const AWS = { roleArn: ROLE_ARN, audience: 'sts.amazonaws.com', accessKeyId: 'ASIASTANDIN000000001', secretAccessKey: 'stand-in-secret' };

/** No token the stand-ins issued appears in `text`. */
function assertNoToken(services: CloudTokenServices, text: string): void {
  for (const token of services.issued) assert.ok(!text.includes(token), 'a token leaked into the message');
  assert.doesNotMatch(text, /eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\./, 'nothing JWT-shaped in the message');
}

describe('cloud identity: Google ID tokens from the metadata server (stand-in)', () => {
  let services: CloudTokenServices;
  before(async () => {
    services = await startCloudTokenServices();
  });
  after(async () => services.close());
  beforeEach(() => services.seen.identity.clear());

  it('asks with Metadata-Flavor for the audience, and reuses the token until shortly before it expires', async () => {
    let clock = Date.now();
    const source = new GoogleIdTokenSource({ metadataHost: services.metadataHost, now: () => clock });
    const first = await source.token('https://fn-a.example.run.app');
    assert.ok(services.issued.has(first));
    // Concurrent callers share one request; a second audience is a token of its own.
    const [again, same, other] = await Promise.all([
      source.token('https://fn-a.example.run.app'),
      source.token('https://fn-a.example.run.app'),
      source.token('https://fn-b.example.run.app'),
    ]);
    assert.equal(again, first);
    assert.equal(same, first);
    assert.notEqual(other, first);
    assert.equal(services.seen.identity.get('https://fn-a.example.run.app'), 1);
    assert.equal(services.seen.identity.get('https://fn-b.example.run.app'), 1);
    // 54 minutes on (the token lives 60): still reused. 56 minutes on: within the 5-minute margin, so renewed.
    clock += 54 * 60_000;
    assert.equal(await source.token('https://fn-a.example.run.app'), first);
    clock += 2 * 60_000;
    const renewed = await source.token('https://fn-a.example.run.app');
    assert.notEqual(renewed, first);
    assert.equal(services.seen.identity.get('https://fn-a.example.run.app'), 2);
  });

  it('takes GCE_METADATA_HOST as host:port or URL, and refuses a path', () => {
    assert.equal(new GoogleIdTokenSource({ metadataHost: services.metadataHost }).base.origin, services.url);
    assert.equal(new GoogleIdTokenSource({ metadataHost: services.url }).base.origin, services.url);
    assert.equal(new GoogleIdTokenSource({}).base.origin, 'http://metadata.google.internal');
    assert.throws(() => new GoogleIdTokenSource({ metadataHost: `${services.url}/computeMetadata` }), CloudIdentityConfigError);
  });

  it('says what failed and why: refused, not a metadata server, unreachable; a failure is not cached', async () => {
    const source = new GoogleIdTokenSource({ metadataHost: services.metadataHost });
    services.failNext.identity = 503;
    await assert.rejects(source.token('aud-1'), (error: unknown) => {
      assert.ok(error instanceof CloudIdentityError && error.retryable);
      assert.match(
        error.message,
        /^GCE metadata server: refused an ID token for audience "aud-1" from http:\/\/127\.0\.0\.1:\d+: HTTP 503/,
      );
      return true;
    });
    assert.ok(services.issued.has(await source.token('aud-1')), 'the next call asks again');

    // Something else answering at that address (no Metadata-Flavor: Google on its answer): its body is not taken.
    const impostor = createServer((_req, res) => res.end(unsignedJwt({ aud: 'aud-2', exp: Math.floor(Date.now() / 1000) + 600 })));
    await new Promise<void>((resolve) => impostor.listen(0, '127.0.0.1', resolve));
    try {
      const source = new GoogleIdTokenSource({ metadataHost: `127.0.0.1:${(impostor.address() as AddressInfo).port}` });
      await assert.rejects(source.token('aud-2'), /lacks the Metadata-Flavor: Google header, so it is not from a metadata server/);
    } finally {
      impostor.close();
    }

    const closed = await freePort();
    const nowhere = new GoogleIdTokenSource({ metadataHost: `127.0.0.1:${closed}`, timeoutMs: 2000 });
    await assert.rejects(nowhere.token('aud-3'), (error: unknown) => {
      assert.ok(error instanceof CloudIdentityError && error.retryable);
      assert.match(
        error.message,
        /could not ask for an ID token for audience "aud-3" from http:\/\/127\.0\.0\.1:\d+ \(not on GCP, or GCE_METADATA_HOST is wrong\?\): fetch failed: .*ECONNREFUSED/,
      );
      assert.ok(error.cause instanceof Error, 'the cause is kept');
      return true;
    });
  });
});

describe('cloud identity: AWS credentials by AssumeRoleWithWebIdentity (STS stand-in)', () => {
  let services: CloudTokenServices;
  before(async () => {
    services = await startCloudTokenServices({ aws: AWS });
  });
  after(async () => services.close());

  const provider = (overrides: { audience?: string; roleArn?: string; now?: () => number } = {}) =>
    awsWebIdentityCredentials({
      roleArn: overrides.roleArn ?? ROLE_ARN,
      audience: overrides.audience ?? 'sts.amazonaws.com',
      sessionName: 'ums-functions',
      stsEndpoint: checkedTokenEndpoint('AWS_ENDPOINT_URL_STS', services.stsEndpoint),
      idTokens: new GoogleIdTokenSource({ metadataHost: services.metadataHost }),
      ...(overrides.now !== undefined ? { now: overrides.now } : {}),
    });

  it('exchanges the Google ID token for temporary credentials, shared until 10 minutes before they expire', async () => {
    let clock = Date.now();
    const credentials = provider({ now: () => clock });
    const before = services.seen.sts;
    const [a, b] = await Promise.all([credentials(), credentials()]);
    assert.equal(a.accessKeyId, AWS.accessKeyId);
    assert.equal(a.secretAccessKey, AWS.secretAccessKey);
    assert.ok(services.issued.has(a.sessionToken));
    assert.ok(Math.abs(a.expiration.getTime() - (Date.now() + 3600_000)) < 5_000, 'an hour, as asked');
    assert.equal(b, a);
    assert.equal(services.seen.sts - before, 1, 'one STS call for concurrent callers');
    clock += 49 * 60_000;
    assert.equal(await credentials(), a);
    clock += 2 * 60_000;
    assert.notEqual((await credentials()).sessionToken, a.sessionToken, 'renewed within 10 minutes of expiry');
    assert.equal(services.seen.sts - before, 2);
  });

  it("is refused when the token's audience or the role is not what the trust names, saying so without the token", async () => {
    for (const credentials of [provider({ audience: 'someone-else' }), provider({ roleArn: 'arn:aws:iam::111122223333:role/other' })]) {
      await assert.rejects(credentials(), (error: unknown) => {
        assert.ok(error instanceof CloudIdentityError && !error.retryable);
        assert.match(
          error.message,
          /^AWS STS: AssumeRoleWithWebIdentity of arn:aws:iam::111122223333:role\/\S+ at http:\/\/127\.0\.0\.1:\d+ refused: HTTP 403 AccessDenied: Not authorized/,
        );
        assertNoToken(services, error.message);
        return true;
      });
    }
  });

  it('tries again after a transient failure (5xx)', async () => {
    services.failNext.sts = 503;
    const before = services.seen.sts;
    const credentials = await provider()();
    assert.equal(credentials.accessKeyId, AWS.accessKeyId);
    assert.equal(services.seen.sts - before, 2);
  });

  it('reads the documented XML shapes, entities included, and names the regional endpoint', () => {
    const xml =
      '<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>a &lt;b&gt; &amp; &#99;</Message></Error></ErrorResponse>';
    assert.equal(xmlText(xml, ['Error', 'Code']), 'InvalidIdentityToken');
    assert.equal(xmlText(xml, ['Error', 'Message']), 'a <b> & c');
    assert.equal(xmlText(xml, ['ErrorResponseX']), undefined);
    assert.equal(defaultStsEndpoint('eu-west-1'), 'https://sts.eu-west-1.amazonaws.com/');
    assert.equal(defaultStsEndpoint('cn-north-1'), 'https://sts.cn-north-1.amazonaws.com.cn/');
  });
});

describe('cloud identity: Azure access tokens by client assertion (Entra ID stand-in)', () => {
  let services: CloudTokenServices;
  before(async () => {
    services = await startCloudTokenServices({ azure: AZURE });
  });
  after(async () => services.close());

  const credential = (overrides: { audience?: string; now?: () => number } = {}) =>
    new AzureFederatedCredential({
      tenantId: AZURE.tenantId,
      clientId: AZURE.clientId,
      authorityHost: checkedTokenEndpoint('AZURE_AUTHORITY_HOST', services.authorityHost),
      audience: overrides.audience ?? AZURE.audience,
      idTokens: new GoogleIdTokenSource({ metadataHost: services.metadataHost }),
      ...(overrides.now !== undefined ? { now: overrides.now } : {}),
    });

  it('gets a storage token with the Google ID token as client assertion, and reuses it per scope until near expiry', async () => {
    let clock = Date.now();
    const azure = credential({ now: () => clock });
    const before = services.seen.entra;
    const token = await azure.getToken('https://storage.azure.com/.default');
    assert.equal(token.token, services.lastEntraToken);
    assert.equal(token.tokenType, 'Bearer');
    assert.ok(Math.abs(token.expiresOnTimestamp - (clock + 3600_000)) < 5_000);
    assert.equal((await azure.getToken(['https://storage.azure.com/.default'])).token, token.token);
    assert.equal(services.seen.entra - before, 1);
    clock += 56 * 60_000;
    assert.notEqual((await azure.getToken('https://storage.azure.com/.default')).token, token.token);
    assert.equal(services.seen.entra - before, 2);
  });

  it('is refused for an assertion the federated credential does not match, without quoting the assertion back', async () => {
    services.echoAssertion = true;
    try {
      await assert.rejects(
        credential({ audience: 'api://SomethingElse' }).getToken('https://storage.azure.com/.default'),
        (error: unknown) => {
          assert.ok(error instanceof CloudIdentityError && !error.retryable);
          assert.match(
            error.message,
            /^Microsoft Entra ID: refused a token for https:\/\/storage\.azure\.com\/\.default as client \S+ of tenant \S+ at http:\/\/127\.0\.0\.1:\d+: HTTP 401 invalid_client: AADSTS70021/,
          );
          assert.match(error.message, /\[token redacted\]/, 'the echoed assertion was cut out');
          assertNoToken(services, error.message);
          return true;
        },
      );
    } finally {
      services.echoAssertion = false;
    }
  });

  it('tries again after temporarily_unavailable', async () => {
    services.failNext.entra = 503;
    const before = services.seen.entra;
    assert.ok((await credential().getToken('https://storage.azure.com/.default')).token.length > 0);
    assert.equal(services.seen.entra - before, 2);
  });
});

describe('cloud identity: configuration from the environment', () => {
  it('is off without its variables, and names a malformed variable without its value', () => {
    assert.deepEqual(keylessStoreAccess({ AWS_ACCESS_KEY_ID: 'AKIA', AWS_SECRET_ACCESS_KEY: 'x' }), { options: {}, ignored: [] });
    assert.throws(
      () => keylessStoreAccess({ UMS_AWS_ROLE_ARN: 'arn:aws:iam::1:user/secretive' }),
      (error: unknown) =>
        error instanceof CloudIdentityConfigError &&
        /^UMS_AWS_ROLE_ARN is not an IAM role ARN/.test(error.message) &&
        !error.message.includes('secretive'),
    );
    assert.throws(
      () => keylessStoreAccess({ UMS_AZURE_CLIENT_ID: AZURE.clientId }),
      /UMS_AZURE_CLIENT_ID and UMS_AZURE_TENANT_ID go together/,
    );
    assert.throws(
      () => keylessStoreAccess({ UMS_AWS_ROLE_ARN: ROLE_ARN, AWS_ENDPOINT_URL_STS: 'http://sts.example.com/' }),
      /AWS_ENDPOINT_URL_STS must be an https URL \(plain http only to a loopback address\)/,
    );
  });

  it('builds both credentials, and lists the static keys it leaves unused', () => {
    const access = keylessStoreAccess({
      UMS_AWS_ROLE_ARN: ROLE_ARN,
      UMS_AZURE_CLIENT_ID: AZURE.clientId,
      UMS_AZURE_TENANT_ID: AZURE.tenantId,
      AWS_REGION: 'eu-west-1',
      AWS_ACCESS_KEY_ID: 'AKIA',
      AWS_SECRET_ACCESS_KEY: 'x',
      AZURE_STORAGE_KEY: 'k',
    });
    assert.equal(typeof access.options.awsCredentials, 'function');
    assert.ok(access.options.azureTokenCredential instanceof AzureFederatedCredential);
    assert.deepEqual(access.aws, { roleArn: ROLE_ARN, audience: 'sts.amazonaws.com' });
    assert.deepEqual(access.azure, { clientId: AZURE.clientId, tenantId: AZURE.tenantId, audience: 'api://AzureADTokenExchange' });
    assert.deepEqual(access.ignored, ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AZURE_STORAGE_KEY']);
  });
});

describe('the bridge: Cloud Run ID tokens next to the HMAC token', () => {
  let services: CloudTokenServices;
  before(async () => {
    services = await startCloudTokenServices();
  });
  after(async () => services.close());
  const key = Buffer.alloc(32, 7).toString('base64');

  it('is off by default, on with metadata, and needed by cloud-run-iam', () => {
    assert.equal(functionIdTokenMode({}), 'off');
    assert.equal(functionIdTokenMode({ UMS_FUNCTION_ID_TOKEN: 'metadata' }), 'metadata');
    assert.equal(functionIdTokenMode({ UMS_FUNCTION_AUTH: 'cloud-run-iam' }), 'metadata');
    assert.throws(() => functionIdTokenMode({ UMS_FUNCTION_AUTH: 'cloud-run-iam', UMS_FUNCTION_ID_TOKEN: 'off' }), FunctionAuthConfigError);
    assert.throws(() => functionIdTokenMode({ UMS_FUNCTION_ID_TOKEN: 'yes' }), /must be "metadata" or "off"/);
  });

  it("sends both: the HMAC token over the delivery and a bearer ID token for the function URL's audience", async () => {
    const endpoints = {
      planMigration: 'https://ums-plan-migration-abc123-uc.a.run.app/',
      finalize: 'https://us-central1-p.cloudfunctions.net/ums-finalize',
    };
    assert.equal(functionAudience(endpoints.planMigration), 'https://ums-plan-migration-abc123-uc.a.run.app');
    assert.equal(functionAudience(endpoints.finalize), 'https://us-central1-p.cloudfunctions.net/ums-finalize');
    const auth = bridgeRequestAuth(
      { UMS_FUNCTION_AUTH_KEY: key, UMS_FUNCTION_ID_TOKEN: 'metadata', GCE_METADATA_HOST: services.metadataHost },
      endpoints,
    );
    assert.deepEqual([auth.hmac, auth.idTokens], [true, { metadata: services.url }]);
    const delivery = {
      functionName: 'planMigration',
      id: 'e1',
      type: 'dev.ums.migration.requested.v1',
      time: new Date().toISOString(),
      body: '{}',
    };
    const headers = await auth.headers(delivery);
    assert.deepEqual(verifyDelivery(Buffer.from(key, 'base64'), headers[AUTH_HEADER], delivery), { ok: true });
    const bearer = /^Bearer (\S+)$/.exec(headers.authorization ?? '')?.[1];
    assert.ok(bearer !== undefined && services.issued.has(bearer));
    assert.equal(services.seen.identity.get('https://ums-plan-migration-abc123-uc.a.run.app'), 1);
    await auth.headers({ ...delivery, functionName: 'finalize' });
    await auth.headers(delivery);
    assert.equal(services.seen.identity.get('https://ums-plan-migration-abc123-uc.a.run.app'), 1, 'cached');
    assert.equal(services.seen.identity.get('https://us-central1-p.cloudfunctions.net/ums-finalize'), 1);

    const hmacOnly = bridgeRequestAuth({ UMS_FUNCTION_AUTH_KEY: key }, endpoints);
    assert.deepEqual(Object.keys(await hmacOnly.headers(delivery)), [AUTH_HEADER]);
    const iamOnly = bridgeRequestAuth({ UMS_FUNCTION_AUTH: 'cloud-run-iam', GCE_METADATA_HOST: services.metadataHost }, endpoints);
    assert.deepEqual(Object.keys(await iamOnly.headers(delivery)), ['authorization']);
  });
});
