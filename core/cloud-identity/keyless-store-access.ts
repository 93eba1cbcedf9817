import { z } from 'zod';
import type { OpenObjectStoreOptions } from '../object-stores/open-object-store.js';
import { awsWebIdentityCredentials, defaultStsEndpoint } from './aws-web-identity.js';
import { AzureFederatedCredential } from './azure-federated-credential.js';
import { GoogleIdTokenSource, type IdTokenSource } from './google-id-token.js';
import { checkedTokenEndpoint, CloudIdentityConfigError } from './identity-error.js';

/**
 * How a process running in GCP (the functions) reaches the AWS and Azure stores without their keys, from
 * its environment. Each cloud is keyless when its variables are set, and uses the static keys of the
 * cloud's standard environment otherwise (the fallback: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
 * AZURE_STORAGE_KEY or AZURE_STORAGE_CONNECTION_STRING):
 *
 *   UMS_AWS_ROLE_ARN          the role assumed with the Google ID token (AssumeRoleWithWebIdentity)
 *   UMS_AWS_TOKEN_AUDIENCE    the ID token's audience the role's trust checks (default sts.amazonaws.com)
 *   AWS_ROLE_SESSION_NAME     the session's name in CloudTrail (default ums-functions)
 *   AWS_ENDPOINT_URL_STS      STS (default https://sts.<AWS_REGION>.amazonaws.com)
 *   UMS_AZURE_CLIENT_ID       the user-assigned managed identity federated with the Google identity
 *   UMS_AZURE_TENANT_ID       its tenant
 *   UMS_AZURE_TOKEN_AUDIENCE  the ID token's audience, one of the federated credential's (default api://AzureADTokenExchange)
 *   AZURE_AUTHORITY_HOST      Entra ID (default https://login.microsoftonline.com)
 *   GCE_METADATA_HOST         the metadata server the ID tokens come from (default metadata.google.internal)
 *
 * Nothing here is a secret: the proof is the ID token, minted per request by the metadata server.
 */

export const DEFAULT_AWS_TOKEN_AUDIENCE = 'sts.amazonaws.com';
export const DEFAULT_AZURE_TOKEN_AUDIENCE = 'api://AzureADTokenExchange';
const DEFAULT_AUTHORITY_HOST = 'https://login.microsoftonline.com';
const DEFAULT_SESSION_NAME = 'ums-functions';

const optional = (schema: z.ZodString) => z.preprocess((v) => (v === '' ? undefined : v), schema.optional());
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const KeylessEnv = z.object({
  UMS_AWS_ROLE_ARN: optional(z.string().regex(/^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/, 'an IAM role ARN')),
  UMS_AWS_TOKEN_AUDIENCE: optional(z.string().max(2048)),
  AWS_ROLE_SESSION_NAME: optional(z.string().regex(/^[\w+=,.@-]{2,64}$/, 'a role session name (2-64 of letters, digits, +=,.@_-)')),
  AWS_ENDPOINT_URL_STS: optional(z.string()),
  AWS_REGION: optional(z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d+$/, 'an AWS region such as us-east-1')),
  AWS_DEFAULT_REGION: optional(z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d+$/, 'an AWS region such as us-east-1')),
  UMS_AZURE_CLIENT_ID: optional(z.string().regex(GUID, 'a client id (GUID)')),
  UMS_AZURE_TENANT_ID: optional(z.string().regex(/^([0-9a-f-]{36}|[a-z0-9][a-z0-9.-]{1,253})$/i, 'a tenant id (GUID or domain)')),
  UMS_AZURE_TOKEN_AUDIENCE: optional(z.string().max(2048)),
  AZURE_AUTHORITY_HOST: optional(z.string()),
  GCE_METADATA_HOST: optional(z.string()),
});

/** Every variable read here (through the schema, so no `env.NAME` shows them): what a deployment may set. */
export const KEYLESS_ENV_NAMES: readonly string[] = Object.keys(KeylessEnv.shape);

export interface KeylessStoreAccess {
  /** What openObjectStore takes: a credential for each cloud that is keyless. */
  options: OpenObjectStoreOptions;
  /** What is in use, for the start-up log (identifiers only). */
  aws?: { roleArn: string; audience: string };
  azure?: { clientId: string; tenantId: string; audience: string };
  /** Static key variables set alongside a keyless setting: they are not used, and should go. */
  ignored: string[];
}

/** Reads the keyless settings; throws CloudIdentityConfigError naming a malformed variable (never its value). */
export function keylessStoreAccess(env: NodeJS.ProcessEnv, idTokens?: IdTokenSource): KeylessStoreAccess {
  const access: KeylessStoreAccess = { options: {}, ignored: [] };
  // Nothing to check unless a keyless setting is there: the static-key path is openObjectStore's.
  if (!env.UMS_AWS_ROLE_ARN && !env.UMS_AZURE_CLIENT_ID && !env.UMS_AZURE_TENANT_ID) return access;
  const parsed = KeylessEnv.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new CloudIdentityConfigError(`${String(issue?.path[0] ?? 'environment')} is not ${issue?.message ?? 'valid'}`);
  }
  const e = parsed.data;
  if ((e.UMS_AZURE_CLIENT_ID === undefined) !== (e.UMS_AZURE_TENANT_ID === undefined)) {
    throw new CloudIdentityConfigError('UMS_AZURE_CLIENT_ID and UMS_AZURE_TENANT_ID go together (the federated identity and its tenant)');
  }
  const tokens = idTokens ?? new GoogleIdTokenSource({ metadataHost: e.GCE_METADATA_HOST });
  const isSet = (name: string) => env[name] !== undefined && env[name] !== '';

  if (e.UMS_AWS_ROLE_ARN !== undefined) {
    const region = e.AWS_REGION ?? e.AWS_DEFAULT_REGION ?? 'us-east-1';
    const audience = e.UMS_AWS_TOKEN_AUDIENCE ?? DEFAULT_AWS_TOKEN_AUDIENCE;
    access.options.awsCredentials = awsWebIdentityCredentials({
      roleArn: e.UMS_AWS_ROLE_ARN,
      audience,
      sessionName: e.AWS_ROLE_SESSION_NAME ?? DEFAULT_SESSION_NAME,
      stsEndpoint: checkedTokenEndpoint('AWS_ENDPOINT_URL_STS', e.AWS_ENDPOINT_URL_STS ?? defaultStsEndpoint(region)),
      idTokens: tokens,
    });
    access.aws = { roleArn: e.UMS_AWS_ROLE_ARN, audience };
    access.ignored.push(...['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN'].filter(isSet));
  }
  if (e.UMS_AZURE_CLIENT_ID !== undefined && e.UMS_AZURE_TENANT_ID !== undefined) {
    const audience = e.UMS_AZURE_TOKEN_AUDIENCE ?? DEFAULT_AZURE_TOKEN_AUDIENCE;
    access.options.azureTokenCredential = new AzureFederatedCredential({
      clientId: e.UMS_AZURE_CLIENT_ID,
      tenantId: e.UMS_AZURE_TENANT_ID,
      authorityHost: checkedTokenEndpoint('AZURE_AUTHORITY_HOST', e.AZURE_AUTHORITY_HOST ?? DEFAULT_AUTHORITY_HOST),
      audience,
      idTokens: tokens,
    });
    access.azure = { clientId: e.UMS_AZURE_CLIENT_ID, tenantId: e.UMS_AZURE_TENANT_ID, audience };
    access.ignored.push(...['AZURE_STORAGE_KEY', 'AZURE_STORAGE_CONNECTION_STRING'].filter(isSet));
  }
  return access;
}
