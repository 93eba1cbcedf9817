import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { chunkKey, manifestKey } from '../../core/checkpoint-artifact.js';
import {
  checkSignedUrl,
  parseAllowedEndpoints,
  SignedUrlPolicyError,
  type SignedUrlPolicy,
} from '../../core/object-stores/signed-url-policy.js';

/** The URL policy a destination applies to each chunk and manifest URL before fetching it (issue item 5). */
const PREFIX = 'migrations/m-1/';
const CHUNK = chunkKey(PREFIX, 3);
const SIG = '?sv=2024-08-04&sp=r&sig=abc%3D';
const none: SignedUrlPolicy = { endpoints: [] };
const azurite: SignedUrlPolicy = { endpoints: parseAllowedEndpoints('http://127.0.0.1:10000') };

const refused = (url: string, storeUrl: string, key: string, policy = none, why?: RegExp) =>
  assert.throws(
    () => checkSignedUrl(url, { storeUrl, key }, policy),
    (error: unknown) => {
      assert.ok(error instanceof SignedUrlPolicyError, String(error));
      if (why) assert.match(error.message, why);
      assert.doesNotMatch(error.message, /sig=/, 'the signature never appears in the error');
      return true;
    },
  );
const allowed = (url: string, storeUrl: string, key: string, policy = none) => checkSignedUrl(url, { storeUrl, key }, policy);

describe('signed URL policy', () => {
  it("accepts the artifact's own object at each cloud's https host", () => {
    allowed(`https://acct.blob.core.windows.net/ums/${CHUNK}${SIG}`, 'azblob://acct/ums', CHUNK);
    allowed(`https://acct.blob.core.windows.net/ums/pre/fix/${CHUNK}${SIG}`, 'azblob://acct/ums/pre/fix', CHUNK);
    allowed(`https://storage.googleapis.com/bkt/${CHUNK}?X-Goog-Signature=ab`, 'gs://bkt', CHUNK);
    allowed(`https://bkt.storage.googleapis.com/${CHUNK}?X-Goog-Signature=ab`, 'gs://bkt', CHUNK);
    allowed(`https://bkt.s3.us-east-1.amazonaws.com/${CHUNK}?X-Amz-Signature=ab`, 's3://bkt', CHUNK);
    allowed(`https://s3.eu-west-1.amazonaws.com/bkt/${CHUNK}?X-Amz-Signature=ab`, 's3://bkt', CHUNK);
    allowed(`https://bkt.s3.amazonaws.com/${manifestKey(PREFIX)}?X-Amz-Signature=ab`, 's3://bkt', manifestKey(PREFIX));
    allowed(`file:///srv/store/${CHUNK}`, 'file:///srv/store', CHUNK);
  });

  it('refuses another host', () => {
    refused(`https://evil.example/ums/${CHUNK}${SIG}`, 'azblob://acct/ums', CHUNK, none, /not the artifact's object/);
    refused(`https://other.blob.core.windows.net/ums/${CHUNK}${SIG}`, 'azblob://acct/ums', CHUNK);
    refused(`https://bkt.s3.amazonaws.com.evil.example/${CHUNK}`, 's3://bkt', CHUNK);
    refused(`https://storage.googleapis.com:8443/bkt/${CHUNK}`, 'gs://bkt', CHUNK, none, /port/);
    refused(`http://127.0.0.2:10000/acct/ums/${CHUNK}${SIG}`, 'azblob://acct/ums', CHUNK, azurite, /plain http/);
    refused(`https://user:pw@storage.googleapis.com/bkt/${CHUNK}`, 'gs://bkt', CHUNK, none, /credentials/);
  });

  it('refuses another bucket, container or account', () => {
    refused(`https://acct.blob.core.windows.net/other/${CHUNK}${SIG}`, 'azblob://acct/ums', CHUNK);
    refused(`https://storage.googleapis.com/other/${CHUNK}`, 'gs://bkt', CHUNK);
    refused(`https://other.s3.us-east-1.amazonaws.com/${CHUNK}`, 's3://bkt', CHUNK);
    refused(`http://127.0.0.1:10000/otheracct/ums/${CHUNK}${SIG}`, 'azblob://acct/ums', CHUNK, azurite);
  });

  it('refuses another key or prefix, also when disguised by encoding or dot segments', () => {
    refused(`https://storage.googleapis.com/bkt/${chunkKey(PREFIX, 4)}`, 'gs://bkt', CHUNK);
    refused(`https://storage.googleapis.com/bkt/${chunkKey('migrations/m-2/', 3)}`, 'gs://bkt', CHUNK);
    refused(`https://storage.googleapis.com/bkt/${manifestKey(PREFIX)}`, 'gs://bkt', CHUNK);
    refused(`https://acct.blob.core.windows.net/ums/${CHUNK}${SIG}`, 'azblob://acct/ums/pre', CHUNK);
    refused(`https://storage.googleapis.com/bkt/migrations%2Fm-1%2Fchunks%2F000003`, 'gs://bkt', CHUNK);
    refused(`https://storage.googleapis.com/bkt/migrations/m-2/../m-1/chunks/000004`, 'gs://bkt', CHUNK);
    refused(`file:///srv/other/${CHUNK}`, 'file:///srv/store', CHUNK);
    refused(`file:///srv/store/${CHUNK}`, 'gs://bkt', CHUNK, none, /scheme file:/);
    refused(`https://storage.googleapis.com/bkt/${CHUNK}`, 'file:///srv/store', CHUNK);
  });

  it('allows plain http only at endpoints configured explicitly, path-style, and never by default', () => {
    const url = `http://127.0.0.1:10000/acct/ums/${CHUNK}${SIG}`;
    refused(url, 'azblob://acct/ums', CHUNK, none, /plain http.*not configured/);
    allowed(url, 'azblob://acct/ums', CHUNK, azurite);
    allowed(`http://127.0.0.1:10000/bkt/${CHUNK}`, 's3://bkt', CHUNK, azurite);
    refused(`http://127.0.0.1:10001/bkt/${CHUNK}`, 's3://bkt', CHUNK, azurite);
    refused(`ftp://storage.googleapis.com/bkt/${CHUNK}`, 'gs://bkt', CHUNK);
  });

  it('takes endpoints as bare origins only', () => {
    assert.deepEqual(parseAllowedEndpoints(undefined), []);
    assert.deepEqual(parseAllowedEndpoints(''), []);
    assert.deepEqual(parseAllowedEndpoints('http://127.0.0.1:1, http://127.0.0.1:2/'), ['http://127.0.0.1:1', 'http://127.0.0.1:2']);
    assert.throws(() => parseAllowedEndpoints('http://127.0.0.1:1/devstoreaccount1'), /origin only/);
    assert.throws(() => parseAllowedEndpoints('http://u:p@127.0.0.1:1'), /without credentials/);
    assert.throws(() => parseAllowedEndpoints('file:///x'), /http\(s\) origin/);
    assert.throws(() => parseAllowedEndpoints('127.0.0.1:1000'), /http\(s\) origin|not a URL/);
  });
});
