import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/*
 * STAND-INS FOR THREE CLOUDS' TOKEN SERVICES, which cannot run here (no cloud is reachable). One HTTP server
 * on 127.0.0.1 speaks their documented wire formats, so that the code talking to them runs for real:
 *
 *   GCE metadata server  GET  /computeMetadata/v1/instance/service-accounts/default/identity?audience=A&format=full
 *                              (Metadata-Flavor: Google both ways) -> the ID token, a JWT, as the body
 *   AWS STS              POST /sts/  Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn&RoleSessionName
 *                              &WebIdentityToken&DurationSeconds -> AssumeRoleWithWebIdentityResponse XML, or an
 *                              ErrorResponse XML
 *   Microsoft Entra ID   POST /<tenant>/oauth2/v2.0/token  client_credentials with a jwt-bearer client_assertion
 *                              -> { token_type, expires_in, access_token } JSON, or { error, error_description }
 *
 * What they check is what the clouds' configuration would: STS the role's trust (the token's issuer, its azp
 * and sub against the service account's unique id, its aud against the audience: accounts.google.com:aud,
 * :sub, :oaud), Entra ID the federated credential (issuer, subject, audience) and the client id. What they
 * cannot stand in for: signatures (the tokens minted here are unsigned in effect, and nothing verifies a
 * signature), the clouds' real policy evaluation, and their exact error texts.
 */

export const GOOGLE_SA_UNIQUE_ID = '112233445566778899001';
export const GOOGLE_ISSUER = 'https://accounts.google.com';

export interface CloudTokenServicesOptions {
  aws?: { roleArn: string; audience: string; accessKeyId: string; secretAccessKey: string };
  azure?: { tenantId: string; clientId: string; audience: string; principalId: string };
  /** Lifetime of every token minted (ID tokens, STS sessions up to what was asked, Entra tokens). */
  tokenLifetimeSeconds?: number;
}

export interface CloudTokenServices {
  /** http://127.0.0.1:PORT */
  url: string;
  /** GCE_METADATA_HOST for the metadata stand-in: 127.0.0.1:PORT */
  metadataHost: string;
  stsEndpoint: string;
  authorityHost: string;
  /** Requests seen: ID tokens by audience, STS calls, Entra calls. */
  seen: { identity: Map<string, number>; sts: number; entra: number };
  /** Every token and credential handed out, to check none ends up in a message. */
  issued: Set<string>;
  /** Answer the next request of a kind with this HTTP status (then back to normal). */
  failNext: { identity?: number; sts?: number; entra?: number };
  /** Quote the client assertion back in Entra's error description (a service that echoes what it refused). */
  echoAssertion: boolean;
  tokenLifetimeSeconds: number;
  /** The access tokens Entra minted, to check what storage received. */
  lastEntraToken?: string;
  close(): Promise<void>;
}

/** A JWT in the shape the clouds issue, signed with nothing anyone verifies here. */
export function unsignedJwt(claims: Record<string, unknown>): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ alg: 'RS256', kid: 'stand-in', typ: 'JWT' })}.${part(claims)}.${randomBytes(64).toString('base64url')}`;
}

export async function startCloudTokenServices(options: CloudTokenServicesOptions = {}): Promise<CloudTokenServices> {
  const services: CloudTokenServices = {
    url: '',
    metadataHost: '',
    stsEndpoint: '',
    authorityHost: '',
    seen: { identity: new Map(), sts: 0, entra: 0 },
    issued: new Set(),
    failNext: {},
    echoAssertion: false,
    tokenLifetimeSeconds: options.tokenLifetimeSeconds ?? 3600,
    close: async () => undefined,
  };
  const now = () => Math.floor(Date.now() / 1000);

  const identity = (req: IncomingMessage, res: ServerResponse, url: URL) => {
    const audience = url.searchParams.get('audience') ?? '';
    services.seen.identity.set(audience, (services.seen.identity.get(audience) ?? 0) + 1);
    const headers = { 'metadata-flavor': 'Google', 'content-type': 'text/html' };
    if (req.headers['metadata-flavor'] !== 'Google') return send(res, 403, headers, 'Missing Metadata-Flavor:Google header.');
    if (services.failNext.identity !== undefined) {
      const status = services.failNext.identity;
      delete services.failNext.identity;
      return send(res, status, headers, 'stand-in: failing this request on purpose');
    }
    if (audience === '' || url.searchParams.get('format') !== 'full')
      return send(res, 400, headers, 'non-empty audience parameter required');
    const token = unsignedJwt({
      iss: GOOGLE_ISSUER,
      aud: audience,
      azp: GOOGLE_SA_UNIQUE_ID,
      sub: GOOGLE_SA_UNIQUE_ID,
      email: 'ums-functions@ums-example.iam.gserviceaccount.com',
      email_verified: true,
      iat: now(),
      exp: now() + services.tokenLifetimeSeconds,
    });
    services.issued.add(token);
    return send(res, 200, headers, token);
  };

  const sts = (res: ServerResponse, form: URLSearchParams) => {
    services.seen.sts += 1;
    const xmlError = (status: number, code: string, message: string) =>
      send(
        res,
        status,
        { 'content-type': 'text/xml' },
        `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">\n  <Error>\n    <Type>Sender</Type>\n    <Code>${code}</Code>\n    <Message>${message}</Message>\n  </Error>\n  <RequestId>${randomUUID()}</RequestId>\n</ErrorResponse>\n`,
      );
    if (services.failNext.sts !== undefined) {
      const status = services.failNext.sts;
      delete services.failNext.sts;
      return xmlError(status, 'ServiceUnavailable', 'stand-in: failing this request on purpose');
    }
    const aws = options.aws;
    if (aws === undefined) return xmlError(400, 'InvalidAction', 'no AWS stand-in configured');
    if (form.get('Action') !== 'AssumeRoleWithWebIdentity' || form.get('Version') !== '2011-06-15') {
      return xmlError(400, 'InvalidAction', 'Could not find operation');
    }
    const claims = payloadOf(form.get('WebIdentityToken') ?? '');
    if (claims === undefined) return xmlError(400, 'InvalidIdentityToken', "Couldn't parse the web identity token");
    if (typeof claims.exp !== 'number' || claims.exp <= now()) return xmlError(400, 'ExpiredTokenException', 'Token expired');
    // The role's trust policy: accounts.google.com, :aud (azp), :sub, :oaud (aud).
    const trusted =
      form.get('RoleArn') === aws.roleArn &&
      claims.iss === GOOGLE_ISSUER &&
      claims.azp === GOOGLE_SA_UNIQUE_ID &&
      claims.sub === GOOGLE_SA_UNIQUE_ID &&
      claims.aud === aws.audience;
    if (!trusted) return xmlError(403, 'AccessDenied', 'Not authorized to perform sts:AssumeRoleWithWebIdentity');
    const duration = Number(form.get('DurationSeconds') ?? 3600);
    const sessionToken = randomBytes(96).toString('base64');
    services.issued.add(sessionToken);
    const expiration = new Date((now() + Math.min(duration, services.tokenLifetimeSeconds)) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    return send(
      res,
      200,
      { 'content-type': 'text/xml' },
      `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>${GOOGLE_SA_UNIQUE_ID}</SubjectFromWebIdentityToken>
    <Audience>${GOOGLE_SA_UNIQUE_ID}</Audience>
    <AssumedRoleUser>
      <Arn>${aws.roleArn.replace(':iam::', ':sts::').replace(':role/', ':assumed-role/')}/${form.get('RoleSessionName') ?? ''}</Arn>
      <AssumedRoleId>AROA3XFRBF535PLBIFPI4:${form.get('RoleSessionName') ?? ''}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>${sessionToken}</SessionToken>
      <SecretAccessKey>${aws.secretAccessKey}</SecretAccessKey>
      <Expiration>${expiration}</Expiration>
      <AccessKeyId>${aws.accessKeyId}</AccessKeyId>
    </Credentials>
    <Provider>accounts.google.com</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>${randomUUID()}</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
`,
    );
  };

  const entra = (res: ServerResponse, tenant: string, form: URLSearchParams) => {
    services.seen.entra += 1;
    const json = { 'content-type': 'application/json; charset=utf-8' };
    const refuse = (status: number, error: string, description: string) =>
      send(res, status, json, JSON.stringify({ error, error_description: description, error_codes: [70021], trace_id: randomUUID() }));
    if (services.failNext.entra !== undefined) {
      const status = services.failNext.entra;
      delete services.failNext.entra;
      return refuse(status, 'temporarily_unavailable', 'stand-in: failing this request on purpose');
    }
    const azure = options.azure;
    if (azure === undefined) return refuse(400, 'invalid_request', 'no Azure stand-in configured');
    const assertion = form.get('client_assertion') ?? '';
    if (
      form.get('grant_type') !== 'client_credentials' ||
      form.get('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'
    ) {
      return refuse(400, 'invalid_request', 'AADSTS900144: a client_credentials request with a jwt-bearer client_assertion is expected');
    }
    if (tenant !== azure.tenantId || form.get('client_id') !== azure.clientId) {
      return refuse(
        400,
        'unauthorized_client',
        `AADSTS700016: Application with identifier '${form.get('client_id') ?? ''}' was not found in the directory '${tenant}'.`,
      );
    }
    const claims = payloadOf(assertion);
    // The federated identity credential: issuer, subject and audience must all match.
    if (claims?.iss !== GOOGLE_ISSUER || claims.sub !== GOOGLE_SA_UNIQUE_ID || claims.aud !== azure.audience) {
      const quoted = services.echoAssertion ? ` ${assertion}` : '';
      return refuse(
        401,
        'invalid_client',
        `AADSTS70021: No matching federated identity record found for presented assertion${quoted}. Assertion Issuer: '${String(claims?.iss)}'. Assertion Subject: '${String(claims?.sub)}'. Assertion Audience: '${String(claims?.aud)}'.`,
      );
    }
    if ((form.get('scope') ?? '') !== 'https://storage.azure.com/.default')
      return refuse(400, 'invalid_scope', 'AADSTS70011: The provided value for scope is not valid.');
    const access = unsignedJwt({
      aud: 'https://storage.azure.com',
      iss: `https://sts.windows.net/${azure.tenantId}/`,
      iat: now() - 5,
      nbf: now() - 5,
      exp: now() + services.tokenLifetimeSeconds,
      appid: azure.clientId,
      oid: azure.principalId,
      sub: azure.principalId,
      tid: azure.tenantId,
      ver: '1.0',
    });
    services.issued.add(access);
    services.lastEntraToken = access;
    return send(
      res,
      200,
      json,
      JSON.stringify({
        token_type: 'Bearer',
        expires_in: services.tokenLifetimeSeconds,
        ext_expires_in: services.tokenLifetimeSeconds,
        access_token: access,
      }),
    );
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://stand-in');
      const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
      if (req.method === 'GET' && url.pathname === '/computeMetadata/v1/instance/service-accounts/default/identity')
        return identity(req, res, url);
      if (req.method === 'POST' && url.pathname === '/sts/') return sts(res, form);
      const token = /^\/([^/]+)\/oauth2\/v2\.0\/token$/.exec(url.pathname);
      if (req.method === 'POST' && token !== null) return entra(res, decodeURIComponent(token[1] ?? ''), form);
      return send(res, 404, { 'content-type': 'text/plain' }, 'not a stand-in endpoint');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  services.url = `http://127.0.0.1:${port}`;
  services.metadataHost = `127.0.0.1:${port}`;
  services.stsEndpoint = `${services.url}/sts/`;
  services.authorityHost = services.url;
  services.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return services;
}

/** A JWT's payload, unverified (nothing here checks signatures: see the top of this file). */
function payloadOf(token: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8'));
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function send(res: ServerResponse, status: number, headers: Record<string, string>, body: string): void {
  res.writeHead(status, headers);
  res.end(body);
}
