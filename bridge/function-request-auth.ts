import { GoogleIdTokenSource, type IdTokenSource } from '../core/cloud-identity/google-id-token.js';
import { AUTH_HEADER, functionAuthKey, functionAuthMode, functionIdTokenMode, signDelivery } from '../core/function-auth.js';
import type { FunctionEndpoints, RequestHeaders } from './trigger-bridge.js';

/**
 * The headers that authenticate the bridge's requests to the functions (core/function-auth.ts): the HMAC
 * token over each delivery (UMS_FUNCTION_AUTH=bridge-hmac, the default) and, with
 * UMS_FUNCTION_ID_TOKEN=metadata, `Authorization: Bearer <Google ID token>` for the function URL's audience,
 * which Cloud Run's IAM checks (run.invoker) before the function runs. Both when both are configured.
 */
export interface BridgeRequestAuth {
  headers: RequestHeaders;
  /** What is sent, for the start-up log. */
  hmac: boolean;
  idTokens: 'off' | { metadata: string };
}

export function bridgeRequestAuth(env: NodeJS.ProcessEnv, endpoints: FunctionEndpoints, idTokens?: IdTokenSource): BridgeRequestAuth {
  const parts: RequestHeaders[] = [];
  const hmac = functionAuthMode(env) === 'bridge-hmac';
  if (hmac) {
    const key = functionAuthKey(env);
    parts.push(async (delivery) => ({ [AUTH_HEADER]: signDelivery(key, delivery) }));
  }
  let described: BridgeRequestAuth['idTokens'] = 'off';
  if (functionIdTokenMode(env) === 'metadata') {
    const source = idTokens ?? new GoogleIdTokenSource({ metadataHost: env.GCE_METADATA_HOST });
    parts.push(cloudRunIdTokenHeaders(endpoints, source));
    described = { metadata: source instanceof GoogleIdTokenSource ? source.base.origin : 'given' };
  }
  return {
    hmac,
    idTokens: described,
    headers: async (delivery) => {
      const all = await Promise.all(parts.map((part) => part(delivery)));
      return all.reduce<Record<string, string>>((merged, one) => ({ ...merged, ...one }), {});
    },
  };
}

/**
 * `Authorization: Bearer` with an ID token whose audience is the function's URL: what Cloud Run accepts by
 * default (the service URL, or a Cloud Functions URL with its path), without query or trailing slash. The
 * source caches each audience's token until shortly before it expires (an hour), so a delivery costs no
 * metadata request.
 */
export function cloudRunIdTokenHeaders(endpoints: FunctionEndpoints, idTokens: IdTokenSource): RequestHeaders {
  const audiences = new Map<string, string>();
  for (const [name, url] of Object.entries(endpoints)) audiences.set(name, functionAudience(url));
  return async (delivery) => {
    const audience = audiences.get(delivery.functionName);
    if (audience === undefined) throw new Error(`no endpoint for function ${delivery.functionName}: no ID token audience`);
    return { authorization: `Bearer ${await idTokens.token(audience)}` };
  };
}

export function functionAudience(url: string): string {
  const parsed = new URL(url);
  return `${parsed.origin}${parsed.pathname.replace(/\/+$/, '')}`;
}
