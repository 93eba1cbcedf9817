import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/**
 * How the functions know a request comes from the trigger bridge (locally; see docs/architecture.md,
 * "Function endpoints"). The bridge signs each delivery with a key the local stack provisions into its
 * environment and the functions' (UMS_FUNCTION_AUTH_KEY, base64, at least 32 bytes; never logged, never
 * in an event); each function verifies before it parses or acts on anything.
 *
 *   X-UMS-Bridge-Auth: v1;exp=<unix ms>;sig=<base64url HMAC-SHA256>
 *
 * The HMAC covers (as a JSON array): "ums-bridge-auth-v1", the function's name (a token for one function is
 * refused by another), the expiry, the CloudEvent's id, type and time, and the sha256 of the exact body
 * bytes. A token lives TOKEN_TTL_MS; one that expires later than that from now is refused too.
 *
 * In a deployment on Cloud Run the platform checks the caller too: the bridge sends an ID token for the
 * function's URL (`Authorization: Bearer`, UMS_FUNCTION_ID_TOKEN=metadata: bridge/function-request-auth.ts)
 * and IAM's run.invoker, granted to the bridge's service account alone, admits it before the function runs.
 * The HMAC token stays on top of it (defence in depth: a caller inside the VPC with some other invoker grant
 * still cannot make a function act). UMS_FUNCTION_AUTH=cloud-run-iam drops the HMAC token and relies on the
 * platform alone.
 */
export const AUTH_HEADER = 'x-ums-bridge-auth';
export const TOKEN_TTL_MS = 60_000;
/** Clock difference tolerated between the bridge and a function. */
const CLOCK_SKEW_MS = 5_000;
const MIN_KEY_BYTES = 32;

export type FunctionAuthMode = 'bridge-hmac' | 'cloud-run-iam';
export type FunctionIdTokenMode = 'metadata' | 'off';

/** What a token vouches for: one CloudEvent, exactly these body bytes, to one function. */
export interface SignedDelivery {
  functionName: string;
  id: string;
  type: string;
  time: string;
  body: Uint8Array | string;
}

export class FunctionAuthConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FunctionAuthConfigError';
  }
}

/** The mode from UMS_FUNCTION_AUTH (default bridge-hmac). */
export function functionAuthMode(env: NodeJS.ProcessEnv = process.env): FunctionAuthMode {
  const mode = env.UMS_FUNCTION_AUTH ?? 'bridge-hmac';
  if (mode !== 'bridge-hmac' && mode !== 'cloud-run-iam') {
    throw new FunctionAuthConfigError(`UMS_FUNCTION_AUTH must be "bridge-hmac" or "cloud-run-iam", not ${JSON.stringify(mode)}`);
  }
  return mode;
}

/**
 * Whether the bridge sends a Cloud Run ID token with each request (UMS_FUNCTION_ID_TOKEN): `metadata` (from
 * the metadata server, for each function URL's audience) or `off`. Explicit rather than probed: off GCP
 * (the local stack) there is no metadata server to wait for, and on Cloud Run the deployment says so
 * (terraform/modules/gcp-functions). Default `off`, or `metadata` with cloud-run-iam, which has no other proof.
 */
export function functionIdTokenMode(env: NodeJS.ProcessEnv = process.env): FunctionIdTokenMode {
  const mode = functionAuthMode(env);
  const value = env.UMS_FUNCTION_ID_TOKEN ?? (mode === 'cloud-run-iam' ? 'metadata' : 'off');
  if (value !== 'metadata' && value !== 'off') {
    throw new FunctionAuthConfigError(`UMS_FUNCTION_ID_TOKEN must be "metadata" or "off", not ${JSON.stringify(value)}`);
  }
  if (value === 'off' && mode === 'cloud-run-iam') {
    throw new FunctionAuthConfigError(
      'UMS_FUNCTION_AUTH=cloud-run-iam needs ID tokens: UMS_FUNCTION_ID_TOKEN=off leaves requests without any proof',
    );
  }
  return value;
}

/** The shared key from UMS_FUNCTION_AUTH_KEY; throws (without echoing it) when it is missing or short. */
export function functionAuthKey(env: NodeJS.ProcessEnv = process.env): Buffer {
  const text = env.UMS_FUNCTION_AUTH_KEY ?? '';
  const key = Buffer.from(text, 'base64');
  if (text === '' || key.length < MIN_KEY_BYTES) {
    throw new FunctionAuthConfigError(`UMS_FUNCTION_AUTH_KEY must hold at least ${MIN_KEY_BYTES} random bytes, base64-encoded`);
  }
  return key;
}

export function signDelivery(key: Buffer, delivery: SignedDelivery, now = Date.now()): string {
  const exp = now + TOKEN_TTL_MS;
  return `v1;exp=${exp};sig=${mac(key, delivery, exp)}`;
}

export type Verdict = { ok: true } | { ok: false; status: 401 | 403; reason: string };

/** 401 without a (well-formed) token, 403 for a wrong, expired or misdirected one. */
export function verifyDelivery(key: Buffer, header: string | undefined, delivery: SignedDelivery, now = Date.now()): Verdict {
  if (header === undefined || header === '') return { ok: false, status: 401, reason: `no ${AUTH_HEADER} token` };
  const match = /^v1;exp=(\d{1,16});sig=([A-Za-z0-9_-]{43})$/.exec(header);
  if (match === null) return { ok: false, status: 401, reason: `a malformed ${AUTH_HEADER} token` };
  const exp = Number(match[1]);
  const expected = Buffer.from(mac(key, delivery, exp), 'base64url');
  const given = Buffer.from(match[2] ?? '', 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    return { ok: false, status: 403, reason: 'the token does not match this request' };
  }
  if (exp < now - CLOCK_SKEW_MS) return { ok: false, status: 403, reason: 'the token has expired' };
  if (exp > now + TOKEN_TTL_MS + CLOCK_SKEW_MS) return { ok: false, status: 403, reason: 'the token expires too far ahead' };
  return { ok: true };
}

function mac(key: Buffer, delivery: SignedDelivery, exp: number): string {
  const bodyDigest = createHash('sha256').update(delivery.body).digest('hex');
  // JSON, so that no field's content can shift the boundary between fields.
  const text = JSON.stringify(['ums-bridge-auth-v1', delivery.functionName, exp, delivery.id, delivery.type, delivery.time, bodyDigest]);
  return createHmac('sha256', key).update(text).digest('base64url');
}
