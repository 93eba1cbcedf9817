import type { Readable } from 'node:stream';
import {
  BlobSASPermissions,
  BlobServiceClient,
  RestError,
  SASProtocol,
  type newPipeline,
  type StorageSharedKeyCredential,
  type AnonymousCredential,
  type ContainerClient,
  type UserDelegationKey,
} from '@azure/storage-blob';
import {
  ObjectExistsError,
  ObjectNotFoundError,
  type ByteRange,
  type ListedObject,
  type ObjectInfo,
  type ObjectStore,
  type PutOptions,
  type PutResult,
  type SignedUrl,
} from '../object-store.js';
import { ByteCounter, withCause } from './byte-counter.js';
import { KeySpace, checkPortableMetadata, checkSignedUrlTtl } from './key-space.js';

// 8 MiB blocks x 4 in flight: 32 MiB of buffers per upload, whatever the object size.
const BLOCK_BYTES = 8 * 1024 * 1024;
const BLOCKS_IN_FLIGHT = 4;
// SAS start times are checked against the service clock; back-date them so a host a little ahead still works.
const CLOCK_SKEW_MS = 5 * 60 * 1000;
// A user delegation key may live at most 7 days; reuse one until it is this close to expiring.
const DELEGATION_KEY_MARGIN_MS = 60 * 60 * 1000;

/** @azure/core-auth's TokenCredential, named through the client that takes it (core-auth is not a direct dependency). */
export type TokenCredential = Exclude<Parameters<typeof newPipeline>[0], StorageSharedKeyCredential | AnonymousCredential | undefined>;

export type AzureBlobCredential =
  | { kind: 'shared-key'; key: StorageSharedKeyCredential }
  /**
   * Keyless: a TokenCredential (the functions' federated identity, core/cloud-identity/; a managed
   * identity's would do too). SAS URLs are then user delegation SAS, which need the "Storage Blob Delegator"
   * role on the account and read on the blob. Tested against Azurite over HTTPS with OAuth
   * (test/integration/cloud-identity.test.ts).
   */
  | { kind: 'token'; token: TokenCredential };

export interface AzureBlobStoreOptions {
  url: string;
  account: string;
  container: string;
  prefix: string;
  /** e.g. https://ACCOUNT.blob.core.windows.net or Azurite's http://127.0.0.1:PORT/devstoreaccount1 */
  serviceUrl: string;
  credential: AzureBlobCredential;
}

export class AzureBlobStore implements ObjectStore {
  readonly url: string;
  private readonly keys: KeySpace;
  private readonly service: BlobServiceClient;
  private readonly container: ContainerClient;
  private readonly credential: AzureBlobCredential;
  private readonly httpEndpoint: boolean;
  private delegationKey: { key: UserDelegationKey; expiresAt: number } | undefined;

  constructor(options: AzureBlobStoreOptions) {
    this.url = options.url;
    this.keys = new KeySpace(options.prefix);
    this.credential = options.credential;
    const credential = options.credential.kind === 'shared-key' ? options.credential.key : options.credential.token;
    this.service = new BlobServiceClient(options.serviceUrl, credential, { retryOptions: { maxTries: 5 } });
    this.container = this.service.getContainerClient(options.container);
    this.httpEndpoint = new URL(options.serviceUrl).protocol === 'http:';
  }

  async put(key: string, body: Readable | Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    const name = this.keys.full(key);
    const metadata = checkPortableMetadata(options.metadata);
    const blob = this.container.getBlockBlobClient(name);
    const common = {
      blobHTTPHeaders: { blobContentType: options.contentType ?? 'application/octet-stream' },
      metadata,
      // Checked at commit time: staged blocks of a losing writer are never visible and expire by themselves.
      ...(options.ifNoneMatch === true ? { conditions: { ifNoneMatch: '*' } } : {}),
      ...(options.signal !== undefined ? { abortSignal: options.signal } : {}),
    };
    if (body instanceof Uint8Array) {
      try {
        // One Put Blob request whose body is a view of the caller's bytes (no copy), up to 256 MiB; above
        // that the SDK stages blocks that are views too. Retries resend the same bytes.
        await blob.uploadData(body, common);
      } catch (error) {
        if (options.ifNoneMatch === true && isStatus(error, 409, 412)) throw new ObjectExistsError(this.url, key);
        throw error;
      }
      return { key, size: body.byteLength };
    }
    const counter = ByteCounter.wrap(body);
    try {
      await blob.uploadStream(counter, BLOCK_BYTES, BLOCKS_IN_FLIGHT, common);
    } catch (error) {
      counter.destroy();
      if (counter.sourceError !== undefined) throw withCause(counter.sourceError, error);
      if (options.ifNoneMatch === true && isStatus(error, 409, 412)) throw new ObjectExistsError(this.url, key);
      throw error;
    }
    return { key, size: counter.bytes };
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    const blob = this.container.getBlobClient(this.keys.full(key));
    const offset = range?.start ?? 0;
    const count = range?.end === undefined ? undefined : range.end - offset + 1;
    try {
      // maxRetryRequests: the SDK resumes a broken download from where it stopped, with an If-Match on the ETag.
      const response = await blob.download(offset, count, { maxRetryRequests: 5 });
      const stream = response.readableStreamBody;
      if (stream === undefined) throw new Error('Azure SDK returned no body stream (not running on Node.js?)');
      return stream as Readable;
    } catch (error) {
      if (isStatus(error, 404)) throw new ObjectNotFoundError(this.url, key);
      throw error;
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const properties = await this.container.getBlobClient(this.keys.full(key)).getProperties();
      return { key, size: properties.contentLength ?? 0, metadata: { ...(properties.metadata ?? {}) } };
    } catch (error) {
      if (isStatus(error, 404)) return undefined;
      throw error;
    }
  }

  async *list(prefix: string): AsyncIterable<ListedObject> {
    for await (const item of this.container.listBlobsFlat({ prefix: this.keys.listPrefix(prefix) })) {
      yield { key: this.keys.relative(item.name), size: item.properties.contentLength ?? 0 };
    }
  }

  async delete(key: string): Promise<void> {
    await this.container.getBlobClient(this.keys.full(key)).deleteIfExists({ deleteSnapshots: 'include' });
  }

  async signedReadUrl(key: string, ttlSeconds: number): Promise<SignedUrl> {
    checkSignedUrlTtl(ttlSeconds);
    const blob = this.container.getBlobClient(this.keys.full(key));
    const now = Date.now();
    const expiresOn = new Date(now + ttlSeconds * 1000);
    const sas = {
      permissions: BlobSASPermissions.parse('r'),
      startsOn: new Date(now - CLOCK_SKEW_MS),
      expiresOn,
      // Plain HTTP only when the endpoint itself is HTTP (Azurite); a cloud SAS is HTTPS-only.
      protocol: this.httpEndpoint ? SASProtocol.HttpsAndHttp : SASProtocol.Https,
    };
    const url =
      this.credential.kind === 'shared-key'
        ? await blob.generateSasUrl(sas)
        : await blob.generateUserDelegationSasUrl(sas, await this.userDelegationKey(now, expiresOn));
    return { url, expiresAt: expiresOn.toISOString() };
  }

  private async userDelegationKey(now: number, until: Date): Promise<UserDelegationKey> {
    const cached = this.delegationKey;
    if (cached !== undefined && cached.expiresAt - DELEGATION_KEY_MARGIN_MS > until.getTime()) return cached.key;
    const startsOn = now - CLOCK_SKEW_MS;
    // The service refuses keys valid for more than 7 days from their start.
    const expiresAt = Math.min(Math.max(until.getTime(), now + 24 * 3600 * 1000), startsOn + 7 * 24 * 3600 * 1000);
    const key = await this.service.getUserDelegationKey(new Date(startsOn), new Date(expiresAt));
    this.delegationKey = { key, expiresAt };
    return key;
  }
}

function isStatus(error: unknown, ...statuses: number[]): boolean {
  return error instanceof RestError && error.statusCode !== undefined && statuses.includes(error.statusCode);
}
