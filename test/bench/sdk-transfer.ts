import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { randomFillSync } from 'node:crypto';
import { DeleteObjectCommand, GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { BlobServiceClient } from '@azure/storage-blob';
import { Storage } from '@google-cloud/storage';
import { openObjectStore } from '../../core/object-stores/open-object-store.js';
import type { BenchStore, TransferSample } from './samples.js';

/**
 * The transfer baseline: the same number of bytes as the checkpoint archive, uploaded from a file and
 * downloaded into a file with each cloud's SDK used directly, with the settings an informed user would pick
 * (8 MiB parts, 4 in flight, a single streaming request for GCS) and no UMS code in the path. Optionally the
 * same through UMS's ObjectStore seam, to see what the seam itself costs.
 */
const PART_BYTES = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT = 4;

export interface StoreAccess {
  kind: BenchStore;
  /** s3://bucket, azblob://account/container, gs://bucket, file:///dir (as the stack's hosts use) */
  storeUrl: string;
  env: NodeJS.ProcessEnv;
}

/** A file of `bytes` random bytes: random data defeats any compression on the way. */
export async function writeRandomFile(path: string, bytes: number): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const file = await open(path, 'w', 0o600);
  try {
    const chunk = Buffer.allocUnsafe(PART_BYTES);
    for (let written = 0; written < bytes;) {
      const n = Math.min(chunk.length, bytes - written);
      randomFillSync(chunk, 0, n);
      await file.write(chunk, 0, n);
      written += n;
    }
  } finally {
    await file.close();
  }
}

interface Transfer {
  upload(key: string, from: string): Promise<void>;
  download(key: string, to: string): Promise<void>;
  remove(key: string): Promise<void>;
  close(): void;
}

function sdkTransfer(access: StoreAccess): Transfer {
  const url = new URL(access.storeUrl);
  const env = access.env;
  switch (access.kind) {
    case 's3': {
      const bucket = url.host;
      const client = new S3Client({
        endpoint: env.AWS_ENDPOINT_URL_S3,
        region: env.AWS_REGION ?? 'us-east-1',
        forcePathStyle: true,
        credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID ?? '', secretAccessKey: env.AWS_SECRET_ACCESS_KEY ?? '' },
        // s3rver mishandles the SDK's default aws-chunked trailing checksums (see docs/environment.md).
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
      });
      return {
        upload: async (key, from) => {
          await new Upload({
            client,
            params: { Bucket: bucket, Key: key, Body: createReadStream(from) },
            partSize: PART_BYTES,
            queueSize: PARTS_IN_FLIGHT,
          }).done();
        },
        download: async (key, to) => {
          const answer = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
          await pipeline(answer.Body as Readable, createWriteStream(to));
        },
        remove: async (key) => {
          await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
        },
        close: () => client.destroy(),
      };
    }
    case 'azure': {
      const [container = ''] = url.pathname.replace(/^\/+/, '').split('/');
      const service = BlobServiceClient.fromConnectionString(env.AZURE_STORAGE_CONNECTION_STRING ?? '');
      const blobs = service.getContainerClient(container);
      return {
        upload: async (key, from) => {
          await blobs.getBlockBlobClient(key).uploadStream(createReadStream(from), PART_BYTES, PARTS_IN_FLIGHT);
        },
        download: async (key, to) => {
          const answer = await blobs.getBlobClient(key).download();
          if (!answer.readableStreamBody) throw new Error('Azure download returned no body');
          await pipeline(answer.readableStreamBody, createWriteStream(to));
        },
        remove: async (key) => {
          await blobs.getBlobClient(key).deleteIfExists();
        },
        close: () => undefined,
      };
    }
    case 'gcs': {
      const storage = new Storage({
        ...(env.STORAGE_EMULATOR_HOST ? { apiEndpoint: env.STORAGE_EMULATOR_HOST } : {}),
        ...(env.GOOGLE_APPLICATION_CREDENTIALS ? { keyFilename: env.GOOGLE_APPLICATION_CREDENTIALS } : {}),
        ...(env.GOOGLE_CLOUD_PROJECT ? { projectId: env.GOOGLE_CLOUD_PROJECT } : {}),
      });
      const bucket = storage.bucket(url.host);
      return {
        // resumable without chunkSize: one streaming request (the emulator truncates chunked uploads).
        upload: (key, from) => pipeline(createReadStream(from), bucket.file(key).createWriteStream({ resumable: true })),
        download: (key, to) => pipeline(bucket.file(key).createReadStream(), createWriteStream(to)),
        remove: async (key) => {
          await bucket.file(key).delete({ ignoreNotFound: true });
        },
        close: () => undefined,
      };
    }
    case 'file': {
      const root = decodeURIComponent(url.pathname);
      return {
        upload: async (key, from) => {
          await mkdir(dirname(join(root, key)), { recursive: true });
          await pipeline(createReadStream(from), createWriteStream(join(root, key)));
        },
        download: (key, to) => pipeline(createReadStream(join(root, key)), createWriteStream(to)),
        remove: (key) => rm(join(root, key), { force: true }),
        close: () => undefined,
      };
    }
  }
}

function objectStoreTransfer(access: StoreAccess): Transfer {
  // Opened once, on first use (openObjectStore loads the backend's SDK asynchronously).
  const opened = openObjectStore(access.storeUrl, { ...process.env, ...access.env });
  opened.catch(() => undefined);
  return {
    upload: async (key, from) => {
      await (await opened).put(key, createReadStream(from));
    },
    download: async (key, to) => pipeline(await (await opened).get(key), createWriteStream(to)),
    remove: async (key) => (await opened).delete(key),
    close: () => undefined,
  };
}

export async function measureTransfer(
  access: StoreAccess,
  via: TransferSample['via'],
  source: string,
  bytes: number,
  scratch: string,
  sample: { sizeMiB: number; rep: number },
): Promise<TransferSample> {
  const transfer = via === 'sdk' ? sdkTransfer(access) : objectStoreTransfer(access);
  const key = `bench/${via}-${sample.sizeMiB}-${sample.rep}.bin`;
  const target = join(scratch, `download-${access.kind}-${via}.bin`);
  try {
    let t0 = performance.now();
    await transfer.upload(key, source);
    const uploadMs = performance.now() - t0;
    t0 = performance.now();
    await transfer.download(key, target);
    const downloadMs = performance.now() - t0;
    return { ...sample, store: access.kind, via, bytes, uploadMs, downloadMs };
  } finally {
    await transfer.remove(key).catch(() => undefined);
    await rm(target, { force: true });
    transfer.close();
  }
}
