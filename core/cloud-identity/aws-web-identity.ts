import pRetry from 'p-retry';
import { z } from 'zod';
import { reason, type IdTokenSource } from './google-id-token.js';
import { CloudIdentityError, echoed } from './identity-error.js';

/**
 * Temporary AWS credentials for a process that runs in GCP, without an AWS key: its Google ID token is
 * exchanged for a role's credentials through STS AssumeRoleWithWebIdentity. The role trusts the federated
 * principal `accounts.google.com` on conditions about the token (terraform/modules/aws-functions-role):
 * `accounts.google.com:aud` (for Google service accounts AWS matches it against the token's azp claim, the
 * service account's unique id), `accounts.google.com:sub` (the same id) and `accounts.google.com:oaud` (the
 * token's aud, the audience asked for here).
 *
 * Documented Query API call, unsigned (the token is the proof):
 *   POST https://sts.<region>.amazonaws.com/
 *   Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=...&RoleSessionName=...&WebIdentityToken=...&DurationSeconds=...
 * answered with AssumeRoleWithWebIdentityResponse XML (Credentials: AccessKeyId, SecretAccessKey,
 * SessionToken, Expiration) or an ErrorResponse (Error: Type, Code, Message).
 *
 * Why not the SDK's fromWebToken: it lives in @aws-sdk/credential-provider-web-identity, which is only a
 * transitive dependency here (client-s3 -> credential-provider-node); the SDK's default chain reaches it only
 * through AWS_WEB_IDENTITY_TOKEN_FILE, i.e. a token file something must keep fresh, and it reads the process
 * environment rather than the one the store is opened with. One unsigned POST is smaller than either.
 */

const SERVICE = 'AWS STS';
/** The SDK refreshes 5 minutes before expiry; reuse across clients until a little earlier than that. */
const REFRESH_MARGIN_MS = 10 * 60 * 1000;
const TIMEOUT_MS = 10_000;
/** STS answers these when it could try again (IDPCommunicationError: it could not reach Google's keys). */
const RETRYABLE_CODES = new Set(['IDPCommunicationError', 'Throttling', 'ServiceUnavailable', 'InternalFailure']);

/** What S3Client takes as `credentials` (AwsCredentialIdentity). */
export interface AwsTemporaryCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  expiration: Date;
}

export type AwsCredentialProvider = () => Promise<AwsTemporaryCredentials>;

export interface AwsWebIdentityOptions {
  roleArn: string;
  /** The ID token's audience; the role's trust policy checks it (accounts.google.com:oaud). */
  audience: string;
  /** RoleSessionName: shows in CloudTrail as the session of the assumed role. */
  sessionName: string;
  /** e.g. https://sts.us-east-1.amazonaws.com (checkedTokenEndpoint). */
  stsEndpoint: URL;
  idTokens: IdTokenSource;
  /** 900..the role's MaxSessionDuration; default 3600. */
  durationSeconds?: number;
  refreshMarginMs?: number;
  retries?: number;
  now?: () => number;
}

const Credentials = z.object({
  // AWS documents 16-128 word characters; the lower bound is not held to, as S3-compatible servers issue
  // shorter ids (the local test server's is 6).
  AccessKeyId: z.string().regex(/^\w{1,128}$/),
  SecretAccessKey: z.string().min(1),
  SessionToken: z.string().min(1),
  Expiration: z.iso.datetime({ offset: true }),
});

/**
 * A credential provider for S3Client that assumes `roleArn` with the process's Google identity and reuses
 * the credentials (across every client it is given to) until shortly before they expire.
 */
export function awsWebIdentityCredentials(options: AwsWebIdentityOptions): AwsCredentialProvider {
  const now = options.now ?? Date.now;
  const margin = options.refreshMarginMs ?? REFRESH_MARGIN_MS;
  let current: AwsTemporaryCredentials | undefined;
  let pending: Promise<AwsTemporaryCredentials> | undefined;
  return async () => {
    if (current !== undefined && current.expiration.getTime() - margin > now()) return current;
    pending ??= pRetry(() => assumeRole(options), {
      retries: options.retries ?? 2,
      minTimeout: 200,
      factor: 3,
      shouldRetry: ({ error }) => error instanceof CloudIdentityError && error.retryable,
    }).finally(() => {
      pending = undefined;
    });
    current = await pending;
    return current;
  };
}

async function assumeRole(options: AwsWebIdentityOptions): Promise<AwsTemporaryCredentials> {
  const token = await options.idTokens.token(options.audience);
  const what = `AssumeRoleWithWebIdentity of ${options.roleArn} at ${options.stsEndpoint.origin}`;
  let response: Response;
  try {
    response = await fetch(options.stsEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8', accept: 'text/xml' },
      body: new URLSearchParams({
        Action: 'AssumeRoleWithWebIdentity',
        Version: '2011-06-15',
        RoleArn: options.roleArn,
        RoleSessionName: options.sessionName,
        WebIdentityToken: token,
        DurationSeconds: String(options.durationSeconds ?? 3600),
      }),
      redirect: 'error',
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch (error) {
    throw new CloudIdentityError(SERVICE, `${what} could not be sent: ${reason(error)}`, { cause: error, retryable: true });
  }
  const xml = await response.text();
  if (!response.ok) {
    const code = xmlText(xml, ['Error', 'Code']) ?? 'no error code';
    const message = xmlText(xml, ['Error', 'Message']) ?? '';
    throw new CloudIdentityError(
      SERVICE,
      `${what} refused: HTTP ${response.status} ${echoed(code)}${message === '' ? '' : `: ${echoed(message)}`}`,
      {
        retryable: response.status >= 500 || response.status === 429 || RETRYABLE_CODES.has(code),
      },
    );
  }
  const fields = Credentials.safeParse({
    AccessKeyId: xmlText(xml, ['AssumeRoleWithWebIdentityResult', 'Credentials', 'AccessKeyId']),
    SecretAccessKey: xmlText(xml, ['AssumeRoleWithWebIdentityResult', 'Credentials', 'SecretAccessKey']),
    SessionToken: xmlText(xml, ['AssumeRoleWithWebIdentityResult', 'Credentials', 'SessionToken']),
    Expiration: xmlText(xml, ['AssumeRoleWithWebIdentityResult', 'Credentials', 'Expiration']),
  });
  if (!fields.success) {
    // Which fields, never their values: they are the credentials.
    const bad = [...new Set(fields.error.issues.map((i) => i.path.join('.')))].join(', ');
    throw new CloudIdentityError(SERVICE, `${what}: the answer is not an AssumeRoleWithWebIdentityResponse with credentials (${bad})`);
  }
  return {
    accessKeyId: fields.data.AccessKeyId,
    secretAccessKey: fields.data.SecretAccessKey,
    sessionToken: fields.data.SessionToken,
    expiration: new Date(fields.data.Expiration),
  };
}

/** The default regional endpoint (regional rather than global: the global one is in us-east-1 only). */
export function defaultStsEndpoint(region: string): string {
  return `https://sts.${region}.amazonaws.com${region.startsWith('cn-') ? '.cn' : ''}/`;
}

/**
 * The text of the element at `path` (each step the first descendant of that name), entities decoded. The
 * STS answers are small documents of a fixed, documented shape with no attributes or CDATA on these
 * elements, so a full XML parser (only a transitive dependency here) is not needed to read four fields.
 */
export function xmlText(xml: string, path: readonly string[]): string | undefined {
  let scope = xml;
  for (const name of path) {
    const match = new RegExp(`<${name}(?:\\s[^>]*)?>([\\s\\S]*?)</${name}>`).exec(scope);
    if (match === null) return undefined;
    scope = match[1] ?? '';
  }
  return scope.trim().replace(/&(lt|gt|quot|apos|amp|#\d+|#x[0-9a-f]+);/gi, (_, entity: string) => {
    const named: Record<string, string> = { lt: '<', gt: '>', quot: '"', apos: "'", amp: '&' };
    const lower = entity.toLowerCase();
    if (lower in named) return named[lower] ?? '';
    const code = lower.startsWith('#x') ? parseInt(lower.slice(2), 16) : parseInt(lower.slice(1), 10);
    return String.fromCodePoint(code);
  });
}
