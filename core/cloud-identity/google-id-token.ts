import { z } from 'zod';
import { CloudIdentityConfigError, CloudIdentityError, echoed } from './identity-error.js';

/**
 * Google ID tokens for the service account a GCE VM, a Cloud Run service or a Cloud Run function runs as,
 * from the metadata server every one of them has. They prove who this process is to someone else: Cloud
 * Run's IAM (the bridge calling the functions), AWS STS (AssumeRoleWithWebIdentity) and Microsoft Entra ID
 * (a federated credential of a managed identity). Their issuer is https://accounts.google.com and their
 * subject (and azp) the service account's unique id.
 *
 * Documented endpoint (what google-auth-library's Compute client calls too):
 *   GET http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/identity?audience=AUD&format=full
 *   Metadata-Flavor: Google
 * The answer is the JWT itself (text/html), with a `Metadata-Flavor: Google` header. GCE_METADATA_HOST
 * (host[:port], or a URL) moves it, as it does for Google's own libraries.
 *
 * Fetched directly rather than through google-auth-library: that library is only a transitive dependency
 * here (of @google-cloud/storage), and this is one GET.
 */

const SERVICE = 'GCE metadata server';
const DEFAULT_HOST = 'metadata.google.internal';
const IDENTITY_PATH = '/computeMetadata/v1/instance/service-accounts/default/identity';
/** Google ID tokens live an hour: take a new one this long before it ends, so no caller holds one that expires in flight. */
const REFRESH_MARGIN_MS = 5 * 60 * 1000;
const TIMEOUT_MS = 5_000;

/** What the users of ID tokens need: a token for an audience. */
export interface IdTokenSource {
  token(audience: string): Promise<string>;
}

export interface GoogleIdTokenSourceOptions {
  /** GCE_METADATA_HOST's value: host[:port] or http(s)://host[:port]. Default metadata.google.internal. */
  metadataHost?: string | undefined;
  refreshMarginMs?: number;
  timeoutMs?: number;
  now?: () => number;
}

const Claims = z.object({
  exp: z.number().int().positive(),
  aud: z.union([z.string(), z.array(z.string())]),
});

interface IdToken {
  value: string;
  expiresAt: number;
}

interface Entry {
  pending: Promise<IdToken>;
  token?: IdToken;
}

export class GoogleIdTokenSource implements IdTokenSource {
  /** Where the metadata server is (no path): for messages, and what tests point at a stand-in. */
  readonly base: URL;
  private readonly refreshMarginMs: number;
  private readonly timeoutMs: number;
  private readonly now: () => number;
  private readonly entries = new Map<string, Entry>();

  constructor(options: GoogleIdTokenSourceOptions = {}) {
    this.base = metadataBase(options.metadataHost);
    this.refreshMarginMs = options.refreshMarginMs ?? REFRESH_MARGIN_MS;
    this.timeoutMs = options.timeoutMs ?? TIMEOUT_MS;
    this.now = options.now ?? Date.now;
  }

  /** A token for `audience`, reused until shortly before it expires; concurrent callers share one request. */
  async token(audience: string): Promise<string> {
    if (audience === '' || audience.length > 2048) throw new CloudIdentityConfigError('an ID token needs an audience (1-2048 characters)');
    const entry = this.entries.get(audience);
    if (entry?.token !== undefined && entry.token.expiresAt - this.refreshMarginMs > this.now()) return entry.token.value;
    if (entry !== undefined && entry.token === undefined) return (await entry.pending).value;
    const fresh: Entry = { pending: this.fetchToken(audience) };
    this.entries.set(audience, fresh);
    try {
      fresh.token = await fresh.pending;
      return fresh.token.value;
    } catch (error) {
      // A failure is not kept: the next caller asks again.
      if (this.entries.get(audience) === fresh) this.entries.delete(audience);
      throw error;
    }
  }

  private async fetchToken(audience: string): Promise<IdToken> {
    const url = new URL(IDENTITY_PATH, this.base);
    url.searchParams.set('audience', audience);
    url.searchParams.set('format', 'full');
    const what = `an ID token for audience ${JSON.stringify(audience)} from ${this.base.origin}`;
    let response: Response;
    try {
      response = await fetch(url, {
        headers: { 'Metadata-Flavor': 'Google' },
        // The metadata server never redirects; following one could hand the token request elsewhere.
        redirect: 'error',
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (error) {
      throw new CloudIdentityError(SERVICE, `could not ask for ${what} (not on GCP, or GCE_METADATA_HOST is wrong?): ${reason(error)}`, {
        cause: error,
        retryable: true,
      });
    }
    const body = await response.text();
    if (response.headers.get('metadata-flavor') !== 'Google') {
      throw new CloudIdentityError(
        SERVICE,
        `asked for ${what}: the answer lacks the Metadata-Flavor: Google header, so it is not from a metadata server`,
      );
    }
    if (!response.ok) {
      throw new CloudIdentityError(SERVICE, `refused ${what}: HTTP ${response.status}: ${echoed(body)}`, {
        retryable: response.status >= 500 || response.status === 429,
      });
    }
    const value = body.trim();
    const claims = jwtClaims(value);
    if (claims === undefined)
      throw new CloudIdentityError(SERVICE, `answered the request for ${what} with something that is not a JWT with exp and aud`);
    const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!audiences.includes(audience))
      throw new CloudIdentityError(SERVICE, `answered the request for ${what} with a token for another audience`);
    const expiresAt = claims.exp * 1000;
    if (expiresAt <= this.now()) throw new CloudIdentityError(SERVICE, `answered the request for ${what} with an expired token`);
    return { value, expiresAt };
  }
}

/** The claims of a JWT, unverified: this process holds the token, it only needs to know when it ends. */
export function jwtClaims(token: string): z.infer<typeof Claims> | undefined {
  const parts = token.split('.');
  if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]*$/.test(p))) return undefined;
  try {
    const parsed = Claims.safeParse(JSON.parse(Buffer.from(parts[1] ?? '', 'base64url').toString('utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

function metadataBase(host: string | undefined): URL {
  const given = host === undefined || host === '' ? DEFAULT_HOST : host;
  let url: URL;
  try {
    url = new URL(/^https?:\/\//.test(given) ? given : `http://${given}`);
  } catch (error) {
    throw new CloudIdentityConfigError('GCE_METADATA_HOST must be host[:port] or an http(s) URL', { cause: error });
  }
  if (url.pathname !== '/' || url.search !== '' || url.username !== '') {
    throw new CloudIdentityConfigError('GCE_METADATA_HOST must be host[:port] or an http(s) URL without a path');
  }
  return new URL(url.origin);
}

/** What went wrong with a request, down to the system error (ECONNREFUSED, ENOTFOUND, a timeout). */
export function reason(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
  return `${error.message}${cause}`;
}
