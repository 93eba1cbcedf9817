import pRetry from 'p-retry';
import { z } from 'zod';
import type { TokenCredential } from '../object-stores/azure-blob-store.js';
import { reason, type IdTokenSource } from './google-id-token.js';
import { CloudIdentityError, echoed } from './identity-error.js';

/**
 * A TokenCredential (what the Azure SDKs take) for a process that runs in GCP, without an Azure secret: a
 * user-assigned managed identity trusts the process's Google identity through a federated identity
 * credential (issuer https://accounts.google.com, subject the service account's unique id, audience
 * api://AzureADTokenExchange; terraform/modules/azure-functions-identity), and the process's Google ID token
 * is the client assertion of an OAuth 2.0 client-credentials request to Microsoft Entra ID:
 *
 *   POST https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token
 *   client_id=<the identity's client id>&scope=https://storage.azure.com/.default&grant_type=client_credentials
 *   &client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer&client_assertion=<Google ID token>
 *
 * answered with JSON { token_type: "Bearer", expires_in, access_token } or { error, error_description,
 * error_codes }. This is what @azure/identity's ClientAssertionCredential does; that package is not a
 * dependency here (it is in the tree only as a development dependency's), and the exchange is one POST.
 */

const SERVICE = 'Microsoft Entra ID';
const REFRESH_MARGIN_MS = 5 * 60 * 1000;
const TIMEOUT_MS = 10_000;
/** OAuth error codes (RFC 6749, as Entra ID uses them) that mean: ask again later. */
const RETRYABLE_ERRORS = new Set(['temporarily_unavailable', 'server_error']);

type GetTokenOptions = NonNullable<Parameters<TokenCredential['getToken']>[1]>;
type AccessToken = NonNullable<Awaited<ReturnType<TokenCredential['getToken']>>>;

export interface AzureFederatedCredentialOptions {
  tenantId: string;
  /** The user-assigned managed identity's client id. */
  clientId: string;
  /** https://login.microsoftonline.com, or another cloud's (AZURE_AUTHORITY_HOST); checkedTokenEndpoint. */
  authorityHost: URL;
  /** The ID token's audience: one of the federated credential's audiences. */
  audience: string;
  idTokens: IdTokenSource;
  refreshMarginMs?: number;
  retries?: number;
  now?: () => number;
}

const TokenAnswer = z.object({
  token_type: z.string().regex(/^bearer$/i),
  access_token: z.string().min(1),
  expires_in: z.coerce.number().int().positive(),
  refresh_in: z.coerce.number().int().positive().optional(),
});

const ErrorAnswer = z.object({
  error: z.string(),
  error_description: z.string().optional(),
  error_codes: z.array(z.number()).optional(),
});

export class AzureFederatedCredential implements TokenCredential {
  private readonly options: AzureFederatedCredentialOptions;
  private readonly now: () => number;
  private readonly tokens = new Map<string, { pending?: Promise<AccessToken>; token?: AccessToken }>();

  constructor(options: AzureFederatedCredentialOptions) {
    this.options = options;
    this.now = options.now ?? Date.now;
  }

  /** One token per scope set, reused until shortly before it expires; concurrent callers share one request. */
  async getToken(scopes: string | string[], options: GetTokenOptions = {}): Promise<AccessToken> {
    const scope = (Array.isArray(scopes) ? scopes : [scopes]).join(' ');
    const margin = this.options.refreshMarginMs ?? REFRESH_MARGIN_MS;
    const entry = this.tokens.get(scope) ?? {};
    this.tokens.set(scope, entry);
    if (entry.token !== undefined && entry.token.expiresOnTimestamp - margin > this.now()) return entry.token;
    entry.pending ??= pRetry(() => this.requestToken(scope, options), {
      retries: this.options.retries ?? 2,
      minTimeout: 200,
      factor: 3,
      shouldRetry: ({ error }) => error instanceof CloudIdentityError && error.retryable,
    }).finally(() => {
      entry.pending = undefined;
    });
    entry.token = await entry.pending;
    return entry.token;
  }

  private async requestToken(scope: string, options: GetTokenOptions): Promise<AccessToken> {
    const { tenantId, clientId, authorityHost, audience, idTokens } = this.options;
    const assertion = await idTokens.token(audience);
    const endpoint = new URL(
      `${authorityHost.pathname.replace(/\/$/, '')}/${encodeURIComponent(tenantId)}/oauth2/v2.0/token`,
      authorityHost,
    );
    const what = `a token for ${scope} as client ${clientId} of tenant ${tenantId} at ${endpoint.origin}`;
    const signals = [AbortSignal.timeout(TIMEOUT_MS)];
    const caller = options.abortSignal;
    if (caller !== undefined) {
      // The SDK's AbortSignalLike is not necessarily a DOM AbortSignal: forward it.
      const forwarded = new AbortController();
      if (caller.aborted) forwarded.abort();
      else caller.addEventListener('abort', () => forwarded.abort(), { once: true });
      signals.push(forwarded.signal);
    }
    const started = this.now();
    let response: Response;
    try {
      response = await fetch(endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8', accept: 'application/json' },
        body: new URLSearchParams({
          client_id: clientId,
          scope,
          grant_type: 'client_credentials',
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: assertion,
        }),
        redirect: 'error',
        signal: AbortSignal.any(signals),
      });
    } catch (error) {
      throw new CloudIdentityError(SERVICE, `${what} could not be asked for: ${reason(error)}`, {
        cause: error,
        retryable: caller?.aborted !== true,
      });
    }
    const text = await response.text();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    if (!response.ok) {
      const refusal = ErrorAnswer.safeParse(body);
      const detail = refusal.success
        ? `${echoed(refusal.data.error)}${refusal.data.error_description === undefined ? '' : `: ${echoed(refusal.data.error_description)}`}`
        : 'no OAuth error in the answer';
      throw new CloudIdentityError(SERVICE, `refused ${what}: HTTP ${response.status} ${detail}`, {
        retryable: response.status >= 500 || response.status === 429 || (refusal.success && RETRYABLE_ERRORS.has(refusal.data.error)),
      });
    }
    const answer = TokenAnswer.safeParse(body);
    if (!answer.success) {
      const bad = [...new Set(answer.error.issues.map((i) => i.path.join('.') || '(body)'))].join(', ');
      throw new CloudIdentityError(SERVICE, `${what}: the answer is not an OAuth token response (${bad})`);
    }
    const { access_token, expires_in, refresh_in } = answer.data;
    return {
      token: access_token,
      tokenType: 'Bearer',
      // From when it was asked for: the token's lifetime starts at the service, never later than that.
      expiresOnTimestamp: started + expires_in * 1000,
      ...(refresh_in !== undefined ? { refreshAfterTimestamp: started + refresh_in * 1000 } : {}),
    };
  }
}
