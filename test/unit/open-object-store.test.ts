import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { InvalidKeyError, InvalidMetadataError } from '../../core/object-store.js';
import { AzureBlobStore } from '../../core/object-stores/azure-blob-store.js';
import { FileStore } from '../../core/object-stores/file-store.js';
import { GcsStore } from '../../core/object-stores/gcs-store.js';
import { KeySpace, checkPortableMetadata } from '../../core/object-stores/key-space.js';
import { InvalidStoreUrlError, StoreCredentialsError, openObjectStore, parseStoreUrl } from '../../core/object-stores/open-object-store.js';
import { S3Store } from '../../core/object-stores/s3-store.js';

const execFileAsync = promisify(execFile);
const openObjectStoreModule = new URL('../../core/object-stores/open-object-store.js', import.meta.url).href;

// A syntactically valid base64 key that opens nothing.
const FAKE_KEY = Buffer.alloc(64, 7).toString('base64');

describe('parseStoreUrl', () => {
  it('parses each scheme, with and without a prefix', () => {
    assert.deepEqual(parseStoreUrl('s3://ums-checkpoints'), { scheme: 's3', bucket: 'ums-checkpoints', prefix: '' });
    assert.deepEqual(parseStoreUrl('s3://ums-checkpoints/eu/west/'), { scheme: 's3', bucket: 'ums-checkpoints', prefix: 'eu/west' });
    assert.deepEqual(parseStoreUrl('gs://my_bucket.example/migrations'), {
      scheme: 'gs',
      bucket: 'my_bucket.example',
      prefix: 'migrations',
    });
    assert.deepEqual(parseStoreUrl('azblob://umsstorage/checkpoints/a/b'), {
      scheme: 'azblob',
      account: 'umsstorage',
      container: 'checkpoints',
      prefix: 'a/b',
    });
    assert.deepEqual(parseStoreUrl('azblob://umsstorage/checkpoints'), {
      scheme: 'azblob',
      account: 'umsstorage',
      container: 'checkpoints',
      prefix: '',
    });
    assert.deepEqual(parseStoreUrl('file:///var/lib/ums/objects/'), { scheme: 'file', root: '/var/lib/ums/objects' });
    assert.deepEqual(parseStoreUrl('file://localhost/srv/x'), { scheme: 'file', root: '/srv/x' });
  });

  it('decodes a percent-encoded prefix', () => {
    assert.deepEqual(parseStoreUrl('s3://bucket/with%20space'), { scheme: 's3', bucket: 'bucket', prefix: 'with space' });
  });

  const bad: Array<[string, RegExp]> = [
    ['not a url', /not an absolute URL/],
    ['/abs/path', /not an absolute URL/],
    ['http://bucket/prefix', /unknown scheme "http:"/],
    ['s3://Upper-Case', /not a valid S3 bucket name/],
    ['s3://ab', /not a valid S3 bucket name/],
    ['s3://a..b', /not a valid S3 bucket name/],
    ['gs://-bad', /not a valid GCS bucket name/],
    ['s3://key:secret@bucket/p', /credentials do not belong/],
    ['s3://bucket/p?versionId=1', /query strings and fragments/],
    ['s3://bucket/p#x', /query strings and fragments/],
    ['s3://bucket:9000/p', /a port is not allowed/],
    ['s3://bucket/a/../b', /bad prefix/],
    ['s3://bucket/a/%2E%2E/b', /bad prefix/],
    ['file:///var/lib/../../etc', /bad prefix/],
    ['s3://bucket/a//b', /bad prefix/],
    ['s3://bucket/%E0%A4%A', /invalid percent-encoding/],
    ['azblob://Account/container', /not a valid storage account name/],
    ['azblob://account', /missing container/],
    ['azblob://account/', /missing container/],
    ['azblob://account/Container', /not a valid container name/],
    ['azblob://account/a--b', /not a valid container name/],
    ['file://remotehost/path', /must name a local path/],
    ['file:///', /absolute directory other than \//],
  ];
  for (const [url, why] of bad) {
    it(`rejects ${JSON.stringify(url)}`, () => {
      assert.throws(
        () => parseStoreUrl(url),
        (error: unknown) => {
          assert.ok(error instanceof InvalidStoreUrlError);
          assert.match(error.message, why);
          return true;
        },
      );
    });
  }

  it('keeps credentials out of its error message', () => {
    assert.throws(
      () => parseStoreUrl('s3://AKIAEXAMPLE:topsecret@bucket'),
      (error: unknown) => {
        assert.ok(error instanceof InvalidStoreUrlError);
        assert.doesNotMatch(error.message, /topsecret|AKIAEXAMPLE/);
        assert.doesNotMatch(error.storeUrl, /topsecret/);
        return true;
      },
    );
  });
});

describe('openObjectStore', () => {
  it('opens the store class each scheme names, keeping the URL', async () => {
    const env = { AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'y', AZURE_STORAGE_ACCOUNT: 'acct', AZURE_STORAGE_KEY: FAKE_KEY };
    const s3 = await openObjectStore('s3://bucket/p', env);
    assert.ok(s3 instanceof S3Store);
    assert.equal(s3.url, 's3://bucket/p');
    assert.ok((await openObjectStore('gs://bucket/p', env)) instanceof GcsStore);
    assert.ok((await openObjectStore('azblob://acct/container/p', env)) instanceof AzureBlobStore);
    assert.ok((await openObjectStore('file:///tmp/ums-objects', env)) instanceof FileStore);
  });

  it('takes the Azure account and endpoint from a connection string', async () => {
    const env = {
      AZURE_STORAGE_CONNECTION_STRING: `DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=${FAKE_KEY};BlobEndpoint=http://127.0.0.1:1/acct;`,
    };
    assert.ok((await openObjectStore('azblob://acct/container', env)) instanceof AzureBlobStore);
  });

  it('refuses Azure credentials for another account', async () => {
    const env = { AZURE_STORAGE_CONNECTION_STRING: `AccountName=other;AccountKey=${FAKE_KEY}` };
    await assert.rejects(openObjectStore('azblob://acct/container', env), /is for account "other", the URL names "acct"/);
    await assert.rejects(
      openObjectStore('azblob://acct/container', { AZURE_STORAGE_ACCOUNT: 'other', AZURE_STORAGE_KEY: FAKE_KEY }),
      /AZURE_STORAGE_ACCOUNT is "other"/,
    );
  });

  it('explains what Azure needs when no key or token credential is given', async () => {
    await assert.rejects(openObjectStore('azblob://acct/container', {}), (error: unknown) => {
      assert.ok(error instanceof StoreCredentialsError);
      assert.match(error.message, /AZURE_STORAGE_CONNECTION_STRING/);
      return true;
    });
    await assert.rejects(
      openObjectStore('azblob://acct/container', { AZURE_STORAGE_CONNECTION_STRING: 'BlobEndpoint=https://x;SharedAccessSignature=sv=1' }),
      /SAS-only strings cannot sign/,
    );
  });

  it('rejects a bad URL', async () => {
    await assert.rejects(openObjectStore('ftp://bucket/p', {}), InvalidStoreUrlError);
  });

  it('loads a cloud SDK only when a store of that cloud is opened', async () => {
    // A fresh process whose module hook refuses every cloud SDK: opening a file store (and parsing any URL)
    // must work there, opening an s3:// store must be what trips the hook.
    const hooks = `export async function resolve(specifier, context, next) {
      if (['@aws-sdk/', '@azure/', '@google-cloud/', '@smithy/'].some((scope) => specifier.startsWith(scope))) {
        throw new Error('cloud SDK loaded: ' + specifier);
      }
      return next(specifier, context);
    }`;
    const child = `
      import { register } from 'node:module';
      register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hooks)}));
      const { openObjectStore, parseStoreUrl } = await import(${JSON.stringify(openObjectStoreModule)});
      parseStoreUrl('azblob://acct/container/p');
      const store = await openObjectStore('file:///tmp/ums-lazy-sdk-test', {});
      console.log('file store opened: ' + store.url);
      await openObjectStore('s3://bucket/p', { AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'y' }).then(
        () => console.log('s3 store opened without its SDK?'),
        (error) => console.log(error.message),
      );
    `;
    const { stdout } = await execFileAsync(process.execPath, ['--input-type=module', '--no-warnings', '-e', child]);
    assert.match(stdout, /^file store opened: file:\/\/\/tmp\/ums-lazy-sdk-test$/m);
    assert.match(stdout, /^cloud SDK loaded: @aws-sdk\//m);
  });
});

describe('KeySpace', () => {
  const keys = new KeySpace('migrations/m-1');

  it('maps keys into the prefix and back', () => {
    assert.equal(keys.full('chunks/0001'), 'migrations/m-1/chunks/0001');
    assert.equal(keys.relative('migrations/m-1/chunks/0001'), 'chunks/0001');
    assert.equal(keys.listPrefix(''), 'migrations/m-1/');
    assert.equal(keys.listPrefix('chunks/'), 'migrations/m-1/chunks/');
    assert.equal(new KeySpace('').full('a/b'), 'a/b');
    assert.equal(new KeySpace('/p/').prefix, 'p');
  });

  for (const key of ['', '/abs', 'a//b', 'a/', '../x', 'a/./b', 'a/../../etc/passwd', 'tab\there', 'x'.repeat(1100)]) {
    it(`rejects the key ${JSON.stringify(key.length > 40 ? `${key.slice(0, 10)}...` : key)}`, () => {
      assert.throws(() => keys.full(key), InvalidKeyError);
    });
  }
});

describe('checkPortableMetadata', () => {
  it('accepts lower-case identifier names and printable ASCII values', () => {
    assert.deepEqual(checkPortableMetadata({ sha256: 'ab12', migration_id: 'm-1 x' }), { sha256: 'ab12', migration_id: 'm-1 x' });
    assert.deepEqual(checkPortableMetadata(undefined), {});
  });

  const invalid: Array<Record<string, string>> = [
    { Sha256: 'x' },
    { 'content-sha': 'x' },
    { '1st': 'x' },
    { note: 'caf\u00e9' },
    { note: 'line\nbreak' },
    { big: 'x'.repeat(3000) },
  ];
  for (const metadata of invalid) {
    it(`rejects ${JSON.stringify(metadata).slice(0, 40)}`, () => {
      assert.throws(() => checkPortableMetadata(metadata), InvalidMetadataError);
    });
  }
});
