import { fileURLToPath } from 'node:url';
import { parseStoreUrl } from './open-object-store.js';

/**
 * Which signed URLs a destination may fetch: only the object it expects (the migration's artifact, which
 * its prepare command names: store URL + prefix, then the chunk's or the manifest's key), only where that
 * store's cloud serves it over https, or at an endpoint the operator listed explicitly (the local stack's
 * emulators, plain http on loopback). A URL anywhere else (another host, bucket, container, account or
 * key, plain http by default, credentials in the URL) is refused before any request is made.
 *
 * Accepted forms, for the object `<full key>` (the store URL's own prefix, then the key):
 *   azblob://account/container  https://<account>.blob.core.windows.net/<container>/<full key>
 *                               <endpoint>/<account>/<container>/<full key>           (Azurite, IP-style)
 *   gs://bucket                 https://storage.googleapis.com/<bucket>/<full key>
 *                               https://<bucket>.storage.googleapis.com/<full key>
 *                               <endpoint>/<bucket>/<full key>
 *   s3://bucket                 https://<bucket>.s3[.<region>|.dualstack.<region>].amazonaws.com/<full key>
 *                               https://s3[.<region>|.dualstack.<region>].amazonaws.com/<bucket>/<full key>
 *                               <endpoint>/<bucket>/<full key>                       (path style)
 *   file:///root                file:///root/<full key>                                (same machine)
 *
 * Endpoints (UMS_ALLOWED_HTTP_ENDPOINTS) are origins, `http://127.0.0.1:10000`; there is no default.
 * Redirects are never followed (downloadSignedUrl), so the pinned URL is the one fetched.
 */
export interface SignedUrlPolicy {
  /** Origins allowed besides the clouds' own https hosts (http allowed only here). */
  readonly endpoints: readonly string[];
}

/** The object a URL must name. */
export interface ExpectedObject {
  /** The store URL of the migration's artifact (s3://, gs://, azblob://, file://). */
  storeUrl: string;
  /** The key in that store (below its own prefix), e.g. migrations/<id>/chunks/000003. */
  key: string;
}

export class SignedUrlPolicyError extends Error {
  constructor(
    readonly target: string,
    why: string,
  ) {
    super(`the signed URL is not allowed (${why}): ${target}`);
    this.name = 'SignedUrlPolicyError';
  }
}

/** Parses a comma- or space-separated list of origins; refuses anything that is not a bare http(s) origin. */
export function parseAllowedEndpoints(text: string | undefined): string[] {
  if (text === undefined || text.trim() === '') return [];
  return text
    .split(/[\s,]+/)
    .filter((entry) => entry !== '')
    .map((entry) => {
      let url: URL;
      try {
        url = new URL(entry);
      } catch {
        throw new TypeError(`allowed endpoint ${JSON.stringify(entry)} is not a URL (expected e.g. http://127.0.0.1:10000)`);
      }
      if (!['http:', 'https:'].includes(url.protocol) || url.username !== '' || url.password !== '') {
        throw new TypeError(`allowed endpoint ${JSON.stringify(entry)} must be an http(s) origin without credentials`);
      }
      if ((url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') {
        throw new TypeError(`allowed endpoint ${JSON.stringify(entry)} must be an origin only (no path, query or fragment)`);
      }
      return url.origin;
    });
}

/** The URL as it may appear in logs and errors: scheme, host and path, never the query (the signature). */
export function describeUrl(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

/**
 * Throws SignedUrlPolicyError unless `url` names exactly `expected`, over https at the store's cloud or at
 * an allowed endpoint.
 */
export function checkSignedUrl(url: string, expected: ExpectedObject, policy: SignedUrlPolicy): void {
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    throw new SignedUrlPolicyError('(unparseable)', 'not an absolute URL');
  }
  const where = describeUrl(target);
  if (target.username !== '' || target.password !== '') throw new SignedUrlPolicyError(where, 'it carries credentials');
  if (target.hash !== '') throw new SignedUrlPolicyError(where, 'it has a fragment');
  const store = parseStoreUrl(expected.storeUrl);

  if (store.scheme === 'file') {
    if (target.protocol !== 'file:') throw new SignedUrlPolicyError(where, 'the artifact is in a local file store');
    if (target.host !== '' || target.search !== '') throw new SignedUrlPolicyError(where, 'not a plain local file URL');
    if (fileURLToPath(target) !== `${store.root}/${expected.key}`) throw new SignedUrlPolicyError(where, 'another object');
    return;
  }
  if (target.protocol !== 'https:' && target.protocol !== 'http:') throw new SignedUrlPolicyError(where, `scheme ${target.protocol}`);

  const full = [...(store.prefix === '' ? [] : store.prefix.split('/')), ...expected.key.split('/')];
  let segments: string[];
  try {
    segments = target.pathname.split('/').slice(1).map(decodeURIComponent);
  } catch {
    throw new SignedUrlPolicyError(where, 'invalid percent-encoding in the path');
  }
  const matches = (path: string[]): boolean => path.length === segments.length && path.every((segment, i) => segment === segments[i]);

  if (policy.endpoints.includes(target.origin)) {
    // Path style at an endpoint the operator listed (emulators, S3-compatible servers, private endpoints).
    const path = store.scheme === 'azblob' ? [store.account, store.container, ...full] : [store.bucket, ...full];
    if (!matches(path)) throw new SignedUrlPolicyError(where, 'another bucket, container or object');
    return;
  }
  if (target.protocol !== 'https:') throw new SignedUrlPolicyError(where, 'plain http, and this endpoint is not configured as allowed');
  if (target.port !== '') throw new SignedUrlPolicyError(where, 'an explicit port on a cloud host');
  const host = target.hostname;
  let ok: boolean;
  switch (store.scheme) {
    case 'azblob':
      ok = host === `${store.account}.blob.core.windows.net` && matches([store.container, ...full]);
      break;
    case 'gs':
      ok =
        (host === 'storage.googleapis.com' && matches([store.bucket, ...full])) ||
        (host === `${store.bucket}.storage.googleapis.com` && matches(full));
      break;
    case 's3': {
      const regional = /^s3(?:[.-](?:dualstack\.)?[a-z0-9-]+)?\.amazonaws\.com$/;
      ok =
        (host.startsWith(`${store.bucket}.`) && regional.test(host.slice(store.bucket.length + 1)) && matches(full)) ||
        (regional.test(host) && matches([store.bucket, ...full]));
      break;
    }
  }
  if (!ok) throw new SignedUrlPolicyError(where, "not the artifact's object in its store");
}
