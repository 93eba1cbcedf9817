import { isAbsolute } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AwsCredentialProvider } from '../cloud-identity/aws-web-identity.js';
import type { ObjectStore } from '../object-store.js';
import type { AzureBlobCredential, TokenCredential } from './azure-blob-store.js';
import { KeySpace } from './key-space.js';
// Only types from the cloud SDKs and the store modules that wrap them here: each SDK costs tens of MiB of
// heap once loaded, so openObjectStore imports a backend's module (and its SDK) when a store of that kind is
// opened, and a host agent carries only the SDK of its own cloud.

export class InvalidStoreUrlError extends Error {
  readonly storeUrl: string;

  constructor(storeUrl: string, why: string) {
    // A URL that wrongly carries credentials must not put them into logs through this error.
    const shown = storeUrl.replace(/^([a-z0-9+.-]+:\/\/)[^/@]*@/i, '$1[redacted]@');
    super(`invalid object store URL ${JSON.stringify(shown)}: ${why}`);
    this.storeUrl = shown;
    this.name = 'InvalidStoreUrlError';
  }
}

export class StoreCredentialsError extends Error {
  constructor(storeUrl: string, why: string) {
    super(`no usable credentials for ${storeUrl}: ${why}`);
    this.name = 'StoreCredentialsError';
  }
}

export interface OpenObjectStoreOptions {
  /**
   * For azblob:// stores: a TokenCredential (a managed identity, or core/cloud-identity's federated
   * credential from GCP), which makes signed URLs user delegation SAS. When given it is used instead of any
   * account key in the environment: a caller passes one only when it is configured to be keyless.
   */
  azureTokenCredential?: TokenCredential;
  /**
   * For s3:// stores: temporary credentials (core/cloud-identity's web identity from GCP), used instead of
   * static keys in the environment; without it, static keys there or else the SDK's default chain.
   */
  awsCredentials?: AwsCredentialProvider;
}

const S3_BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const GCS_BUCKET = /^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/;
const AZURE_ACCOUNT = /^[a-z0-9]{3,24}$/;
const AZURE_CONTAINER = /^(?=.{3,63}$)[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*$/;

/**
 * Opens the store a URL names: s3://bucket/prefix, azblob://account/container/prefix, gs://bucket/prefix or
 * file:///abs/path. Endpoints and credentials come from `env` in each cloud's standard variables (see the
 * store modules); a URL never carries credentials. Asynchronous because the backend's SDK is loaded on first
 * use; URL and credential errors (InvalidStoreUrlError, StoreCredentialsError) come as rejections.
 */
export async function openObjectStore(
  url: string,
  env: NodeJS.ProcessEnv = process.env,
  options: OpenObjectStoreOptions = {},
): Promise<ObjectStore> {
  const parsed = parseStoreUrl(url);
  switch (parsed.scheme) {
    case 's3': {
      const [{ S3Client }, { S3Store, s3ClientConfigFromEnv }] = await Promise.all([import('@aws-sdk/client-s3'), import('./s3-store.js')]);
      const config = s3ClientConfigFromEnv(env, options.awsCredentials);
      return new S3Store({ url, bucket: parsed.bucket, prefix: parsed.prefix, client: new S3Client(config) });
    }
    case 'gs': {
      const [{ Storage }, { GcsStore, gcsStorageOptionsFromEnv }] = await Promise.all([
        import('@google-cloud/storage'),
        import('./gcs-store.js'),
      ]);
      return new GcsStore({ url, bucket: parsed.bucket, prefix: parsed.prefix, storage: new Storage(gcsStorageOptionsFromEnv(env)) });
    }
    case 'azblob': {
      // Checked before loading the SDK, so a misconfigured host fails fast and without the SDK's cost.
      const access = azureAccess(url, parsed.account, env, options.azureTokenCredential);
      const [{ StorageSharedKeyCredential }, { AzureBlobStore }] = await Promise.all([
        import('@azure/storage-blob'),
        import('./azure-blob-store.js'),
      ]);
      const credential: AzureBlobCredential =
        access.credential.kind === 'shared-key'
          ? { kind: 'shared-key', key: new StorageSharedKeyCredential(parsed.account, access.credential.accountKey) }
          : access.credential;
      return new AzureBlobStore({
        url,
        account: parsed.account,
        container: parsed.container,
        prefix: parsed.prefix,
        serviceUrl: access.serviceUrl,
        credential,
      });
    }
    case 'file': {
      const { FileStore } = await import('./file-store.js');
      return new FileStore(url, parsed.root);
    }
  }
}

export type ParsedStoreUrl =
  | { scheme: 's3' | 'gs'; bucket: string; prefix: string }
  | { scheme: 'azblob'; account: string; container: string; prefix: string }
  | { scheme: 'file'; root: string };

/** Checks a store URL without opening anything. */
export function parseStoreUrl(url: string): ParsedStoreUrl {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new InvalidStoreUrlError(url, 'not an absolute URL (expected s3://, azblob://, gs:// or file://)');
  }
  if (parsed.username !== '' || parsed.password !== '') {
    throw new InvalidStoreUrlError(url, "credentials do not belong in a store URL; use the cloud's standard environment");
  }
  if (parsed.search !== '' || parsed.hash !== '') throw new InvalidStoreUrlError(url, 'query strings and fragments are not allowed');
  if (parsed.port !== '') throw new InvalidStoreUrlError(url, 'a port is not allowed; set the endpoint through the environment');

  // The URL parser silently resolves "." and ".." segments ("s3://b/a/../c" becomes "s3://b/c"): refuse them.
  const rawPath = url.replace(/^[^:]*:\/\/[^/]*/, '').split(/[?#]/)[0] ?? '';
  if (rawPath.split('/').some((segment) => /^(?:\.|%2e){1,2}$/i.test(segment))) {
    throw new InvalidStoreUrlError(url, 'bad prefix: "." and ".." segments are not allowed');
  }

  const scheme = parsed.protocol.slice(0, -1);
  if (scheme === 'file') {
    if (parsed.host !== '' && parsed.host !== 'localhost') {
      throw new InvalidStoreUrlError(url, 'file URLs must name a local path (file:///abs/path)');
    }
    const root = fileURLToPath(parsed);
    if (!isAbsolute(root) || root === '/') throw new InvalidStoreUrlError(url, 'the path must be an absolute directory other than /');
    return { scheme: 'file', root: root.replace(/\/+$/, '') };
  }

  const host = parsed.host;
  const segments = decodePath(url, parsed.pathname);
  if (scheme === 's3' || scheme === 'gs') {
    const rule = scheme === 's3' ? S3_BUCKET : GCS_BUCKET;
    if (!rule.test(host) || host.includes('..')) {
      throw new InvalidStoreUrlError(
        url,
        `"${host}" is not a valid ${scheme === 's3' ? 'S3' : 'GCS'} bucket name (lowercase letters, digits, dots, hyphens)`,
      );
    }
    return { scheme, bucket: host, prefix: checkedPrefix(url, segments.join('/')) };
  }
  if (scheme === 'azblob') {
    if (!AZURE_ACCOUNT.test(host)) {
      throw new InvalidStoreUrlError(url, `"${host}" is not a valid storage account name (3-24 lowercase letters and digits)`);
    }
    const [container, ...rest] = segments;
    if (container === undefined || container === '') {
      throw new InvalidStoreUrlError(url, 'missing container: expected azblob://account/container/prefix');
    }
    if (!AZURE_CONTAINER.test(container)) {
      throw new InvalidStoreUrlError(url, `"${container}" is not a valid container name (3-63 lowercase letters, digits, single hyphens)`);
    }
    return { scheme: 'azblob', account: host, container, prefix: checkedPrefix(url, rest.join('/')) };
  }
  throw new InvalidStoreUrlError(url, `unknown scheme "${scheme}:" (expected s3://, azblob://, gs:// or file://)`);
}

function decodePath(url: string, pathname: string): string[] {
  const trimmed = pathname.replace(/^\/+|\/+$/g, '');
  if (trimmed === '') return [];
  try {
    return trimmed.split('/').map((segment) => decodeURIComponent(segment));
  } catch {
    throw new InvalidStoreUrlError(url, 'the path has invalid percent-encoding');
  }
}

function checkedPrefix(url: string, prefix: string): string {
  try {
    return new KeySpace(prefix).prefix;
  } catch (error) {
    throw new InvalidStoreUrlError(url, `bad prefix: ${(error as Error).message}`);
  }
}

type AzureAccess = {
  serviceUrl: string;
  credential: { kind: 'shared-key'; accountKey: string } | Extract<AzureBlobCredential, { kind: 'token' }>;
};

function azureAccess(url: string, account: string, env: NodeJS.ProcessEnv, token: TokenCredential | undefined): AzureAccess {
  const connectionString = env.AZURE_STORAGE_CONNECTION_STRING;
  const fields = connectionString !== undefined && connectionString !== '' ? parseConnectionString(connectionString) : undefined;
  if (token !== undefined) {
    // Keyless: the URL names the account. A connection string for that account may still say where its
    // endpoint is (another Azure cloud's suffix, an emulator); no key in the environment is used.
    const serviceUrl =
      fields !== undefined && fields.get('accountname') === account
        ? blobEndpoint(fields, account)
        : `https://${account}.blob.core.windows.net`;
    return { serviceUrl, credential: { kind: 'token', token } };
  }
  if (fields !== undefined) {
    const named = fields.get('accountname');
    const key = fields.get('accountkey');
    if (named === undefined || key === undefined) {
      throw new StoreCredentialsError(
        url,
        'AZURE_STORAGE_CONNECTION_STRING has no AccountName/AccountKey (SAS-only strings cannot sign read URLs)',
      );
    }
    if (named !== account) {
      throw new StoreCredentialsError(url, `AZURE_STORAGE_CONNECTION_STRING is for account "${named}", the URL names "${account}"`);
    }
    return { serviceUrl: blobEndpoint(fields, account), credential: { kind: 'shared-key', accountKey: key } };
  }
  const envAccount = env.AZURE_STORAGE_ACCOUNT;
  if (envAccount !== undefined && envAccount !== '' && envAccount !== account) {
    throw new StoreCredentialsError(url, `AZURE_STORAGE_ACCOUNT is "${envAccount}", the URL names "${account}"`);
  }
  const serviceUrl = `https://${account}.blob.core.windows.net`;
  const key = env.AZURE_STORAGE_KEY;
  if (key !== undefined && key !== '') return { serviceUrl, credential: { kind: 'shared-key', accountKey: key } };
  throw new StoreCredentialsError(
    url,
    'set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY, or configure a keyless identity (UMS_AZURE_CLIENT_ID and UMS_AZURE_TENANT_ID in the functions) that passes a TokenCredential',
  );
}

/** The Blob endpoint a connection string names: BlobEndpoint, or built from its protocol and endpoint suffix. */
function blobEndpoint(fields: Map<string, string>, account: string): string {
  const protocol = fields.get('defaultendpointsprotocol') ?? 'https';
  const suffix = fields.get('endpointsuffix') ?? 'core.windows.net';
  return fields.get('blobendpoint') ?? `${protocol}://${account}.blob.${suffix}`;
}

/** Key=Value;Key=Value, names case-insensitive; values may themselves contain "=" (base64 keys do). */
function parseConnectionString(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const part of text.split(';')) {
    const at = part.indexOf('=');
    if (at <= 0) continue;
    fields.set(part.slice(0, at).trim().toLowerCase(), part.slice(at + 1).trim());
  }
  return fields;
}
