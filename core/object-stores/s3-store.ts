import { Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  type S3Client,
  S3ServiceException,
  paginateListObjectsV2,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
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
import type { AwsCredentialProvider } from '../cloud-identity/aws-web-identity.js';
import { ByteCounter, withCause } from './byte-counter.js';
import { KeySpace, checkPortableMetadata, checkSignedUrlTtl } from './key-space.js';

// 8 MiB parts x 4 in flight bound an upload to ~32 MiB of buffers; 10,000 parts cap objects at ~78 GiB.
const PART_BYTES = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT = 4;

export interface S3StoreOptions {
  url: string;
  bucket: string;
  prefix: string;
  client: S3Client;
}

/**
 * The client settings for a store, from an environment shaped like the AWS CLI's. Credentials: `credentials`
 * when given (temporary ones from a web identity: core/cloud-identity), else static keys when `env` names
 * them, else the SDK's default provider chain (process env, shared config/SSO, web identity token file,
 * ECS/EC2 roles), which is how a host in AWS gets its instance role's.
 */
export function s3ClientConfigFromEnv(env: NodeJS.ProcessEnv, credentials?: AwsCredentialProvider): S3ClientConfig {
  const endpoint = nonEmpty(env.AWS_ENDPOINT_URL_S3) ?? nonEmpty(env.AWS_ENDPOINT_URL);
  const accessKeyId = nonEmpty(env.AWS_ACCESS_KEY_ID);
  const secretAccessKey = nonEmpty(env.AWS_SECRET_ACCESS_KEY);
  const sessionToken = nonEmpty(env.AWS_SESSION_TOKEN);
  return {
    region: nonEmpty(env.AWS_REGION) ?? nonEmpty(env.AWS_DEFAULT_REGION) ?? 'us-east-1',
    // Custom endpoints (S3-compatible servers, the local emulator) rarely have per-bucket DNS names.
    ...(endpoint !== undefined ? { endpoint, forcePathStyle: true } : {}),
    ...(credentials !== undefined
      ? { credentials }
      : accessKeyId !== undefined && secretAccessKey !== undefined
        ? { credentials: { accessKeyId, secretAccessKey, ...(sessionToken !== undefined ? { sessionToken } : {}) } }
        : {}),
    // The default (WHEN_SUPPORTED) sends aws-chunked bodies with trailing checksums and adds checksum-mode to
    // presigned GETs; S3-compatible servers mishandle both, and sha256 of the archive is checked end to end.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 5,
  };
}

export class S3Store implements ObjectStore {
  readonly url: string;
  private readonly keys: KeySpace;
  private readonly bucket: string;
  private readonly client: S3Client;

  constructor(options: S3StoreOptions) {
    this.url = options.url;
    this.bucket = options.bucket;
    this.keys = new KeySpace(options.prefix);
    this.client = options.client;
  }

  async put(key: string, body: Readable | Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    const name = this.keys.full(key);
    const metadata = checkPortableMetadata(options.metadata);
    const params = {
      Bucket: this.bucket,
      Key: name,
      ContentType: options.contentType ?? 'application/octet-stream',
      Metadata: metadata,
      // Sent with PutObject or CompleteMultipartUpload, whichever ends the upload (S3 since 2024-08).
      ...(options.ifNoneMatch === true ? { IfNoneMatch: '*' } : {}),
    };
    if (body instanceof Uint8Array) {
      try {
        options.signal?.throwIfAborted();
        // One PutObject whose body is the caller's bytes: the HTTP handler writes them as they are (no copy);
        // SigV4 hashes them for x-amz-content-sha256, and retries resend them.
        await this.client.send(
          new PutObjectCommand({ ...params, Body: body, ContentLength: body.byteLength }),
          options.signal !== undefined ? { abortSignal: options.signal } : {},
        );
      } catch (error) {
        throw this.putError(error, key, options);
      }
      return { key, size: body.byteLength };
    }
    const counted = ByteCounter.wrap(body);
    const upload = new Upload({
      client: this.client,
      queueSize: PARTS_IN_FLIGHT,
      partSize: PART_BYTES,
      leavePartsOnError: false,
      params: { ...params, Body: counted },
    });
    const abort = (): void => {
      void upload.abort();
    };
    options.signal?.addEventListener('abort', abort, { once: true });
    try {
      options.signal?.throwIfAborted();
      await upload.done();
    } catch (error) {
      counted.destroy();
      if (counted.sourceError !== undefined) throw withCause(counted.sourceError, error);
      throw this.putError(error, key, options);
    } finally {
      options.signal?.removeEventListener('abort', abort);
    }
    return { key, size: counted.bytes };
  }

  /** 412 when the key exists; 409 when a concurrent conditional write won the race. */
  private putError(error: unknown, key: string, options: PutOptions): unknown {
    const status = httpStatus(error);
    if (options.ifNoneMatch === true && (status === 409 || status === 412)) return new ObjectExistsError(this.url, key);
    return error;
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    try {
      const response = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: this.keys.full(key),
          ...(range !== undefined ? { Range: `bytes=${range.start}-${range.end ?? ''}` } : {}),
        }),
      );
      if (!(response.Body instanceof Readable)) throw new Error('S3 SDK returned no Node.js stream body');
      if (range !== undefined) checkServedRange(this.url, key, range, response.ContentRange, response.Body);
      return response.Body;
    } catch (error) {
      if (isNotFound(error)) throw new ObjectNotFoundError(this.url, key);
      throw error;
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const response = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.keys.full(key) }));
      return { key, size: response.ContentLength ?? 0, metadata: { ...(response.Metadata ?? {}) } };
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async *list(prefix: string): AsyncIterable<ListedObject> {
    const pages = paginateListObjectsV2(
      { client: this.client, pageSize: 1000 },
      { Bucket: this.bucket, Prefix: this.keys.listPrefix(prefix) },
    );
    for await (const page of pages) {
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined) continue;
        yield { key: this.keys.relative(object.Key), size: object.Size ?? 0 };
      }
    }
  }

  async delete(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.keys.full(key) }));
  }

  async signedReadUrl(key: string, ttlSeconds: number): Promise<SignedUrl> {
    checkSignedUrlTtl(ttlSeconds);
    const expiresAt = new Date(Date.now() + ttlSeconds * 1000);
    const url = await getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: this.keys.full(key) }), {
      expiresIn: ttlSeconds,
    });
    return { url, expiresAt: expiresAt.toISOString() };
  }
}

/**
 * S3-compatible servers do not all honour Range (s3rver 4.0.4 answers "bytes=0-0" with the whole object).
 * Handing back other bytes than asked would corrupt whatever the caller assembles, so refuse instead.
 */
function checkServedRange(storeUrl: string, key: string, range: ByteRange, contentRange: string | undefined, body: Readable): void {
  const served = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(contentRange ?? '');
  const start = Number(served?.[1]);
  const end = Number(served?.[2]);
  const size = Number(served?.[3]);
  const wantedEnd = range.end === undefined ? size - 1 : Number.isFinite(size) ? Math.min(range.end, size - 1) : range.end;
  if (served === null || start !== range.start || end !== wantedEnd) {
    body.destroy();
    throw new Error(
      `${storeUrl} answered a request for bytes ${range.start}-${range.end ?? ''} of "${key}" with ${contentRange === undefined ? 'no Content-Range' : `Content-Range "${contentRange}"`}`,
    );
  }
}

function httpStatus(error: unknown): number | undefined {
  return error instanceof S3ServiceException ? error.$metadata.httpStatusCode : undefined;
}

function isNotFound(error: unknown): boolean {
  return httpStatus(error) === 404;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}
