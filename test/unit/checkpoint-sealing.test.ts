/**
 * Checkpoint sealing (core/checkpoint-sealing.ts): each chunk AES-256-GCM under a per-migration data key,
 * nonce from a per-migration prefix and the chunk index, AAD binding the migration id and the index; the
 * data key wrapped for the destination's X25519 key. Everything that is not the exact chunk, in its exact
 * place, of its exact migration, for the exact recipient, is refused; and uploadChunked stores only
 * ciphertext, with a manifest whose sizes add up. The agent's key file: created 0600, stable, tightened.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, stat, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { loadOrCreateSealingKey, SEALING_KEY_FILE } from '../../agents/sealing-key.js';
import { chunkKey, Manifest, manifestKey } from '../../core/checkpoint-artifact.js';
import {
  ChunkOpener,
  ChunkSealer,
  generateSealingKeyPair,
  SealingError,
  TAG_BYTES,
  unwrapDataKey,
  wrapDataKey,
} from '../../core/checkpoint-sealing.js';
import { uploadChunked } from '../../core/chunked-upload.js';
import type { ObjectStore } from '../../core/object-store.js';
import { generateSigningKeyPair } from '../../core/signed-envelope.js';
import { openObjectStore } from '../../core/object-stores/open-object-store.js';

const MIGRATION = 'mig-seal-1';
const destination = generateSealingKeyPair();
const other = generateSealingKeyPair();

function sealedPair(migrationId = MIGRATION) {
  const sealer = ChunkSealer.forRecipient(destination.publicKey, migrationId);
  return { sealer, opener: ChunkOpener.unwrap(sealer.sealing, destination.privateKey, migrationId) };
}

function flip(buffer: Buffer, at: number): Buffer {
  const copy = Buffer.from(buffer);
  copy[at] = (copy[at] ?? 0) ^ 0x01;
  return copy;
}

describe('chunk sealing: seal and open', () => {
  it('round-trips chunks of any size, each TAG_BYTES longer when stored, with no plaintext left in it', () => {
    const { sealer, opener } = sealedPair();
    for (const [index, size] of [0, 1, 4096, 1024 * 1024 + 3].entries()) {
      const plain = Buffer.concat([Buffer.from('ustar\0 MARKER-SECRET '), randomBytes(size)]);
      const sealed = sealer.seal(index, plain);
      assert.equal(sealed.length, plain.length + TAG_BYTES);
      assert.equal(sealed.includes('ustar'), false);
      assert.equal(sealed.includes('MARKER-SECRET'), false);
      assert.deepEqual(opener.open(index, sealed), plain);
    }
  });

  it('the same plaintext seals differently at each index and in each migration (unique nonces, fresh keys)', () => {
    const plain = Buffer.alloc(4096);
    const a = sealedPair();
    const b = sealedPair();
    assert.notDeepEqual(a.sealer.seal(0, plain), a.sealer.seal(1, plain));
    assert.notDeepEqual(a.sealer.seal(0, plain), b.sealer.seal(0, plain));
    assert.notEqual(
      a.sealer.sealing.noncePrefix + a.sealer.sealing.wrappedKey.ciphertext,
      b.sealer.sealing.noncePrefix + b.sealer.sealing.wrappedKey.ciphertext,
    );
  });

  it('refuses a tampered chunk: any flipped bit in the ciphertext or in the tag', () => {
    const { sealer, opener } = sealedPair();
    const sealed = sealer.seal(3, randomBytes(10_000));
    for (const at of [0, 5000, sealed.length - TAG_BYTES - 1, sealed.length - TAG_BYTES, sealed.length - 1]) {
      assert.throws(() => opener.open(3, flip(sealed, at)), SealingError, `bit flipped at ${at}`);
    }
  });

  it('refuses a chunk opened at another index (swapped or moved chunks)', () => {
    const { sealer, opener } = sealedPair();
    const two = sealer.seal(2, randomBytes(1000));
    const three = sealer.seal(3, randomBytes(1000));
    assert.throws(() => opener.open(3, two), /chunk 3 fails authentication/);
    assert.throws(() => opener.open(2, three), /chunk 2 fails authentication/);
  });

  it('refuses a chunk of another migration, even sealed for the same recipient', () => {
    const mine = sealedPair('mig-a');
    const theirs = sealedPair('mig-b');
    assert.throws(() => mine.opener.open(0, theirs.sealer.seal(0, randomBytes(100))), SealingError);
    // Nor does another migration's header open under this migration's id (HKDF info and AAD bind it).
    assert.throws(() => ChunkOpener.unwrap(theirs.sealer.sealing, destination.privateKey, 'mig-a'), /does not open/);
  });

  it('refuses a truncated chunk, and one shorter than its tag', () => {
    const { sealer, opener } = sealedPair();
    const sealed = sealer.seal(0, randomBytes(2000));
    assert.throws(() => opener.open(0, sealed.subarray(0, sealed.length - 1)), SealingError);
    assert.throws(() => opener.open(0, sealed.subarray(0, 1000)), SealingError);
    assert.throws(() => opener.open(0, sealed.subarray(0, TAG_BYTES - 1)), /shorter than its authentication tag/);
    assert.throws(() => opener.open(0, Buffer.alloc(0)), SealingError);
  });
});

describe('data key wrapping (X25519, HKDF-SHA256, AES-256-GCM)', () => {
  const prefix = randomBytes(4);
  const dataKey = randomBytes(32);

  it('unwraps with the recipient private key, and only with it', () => {
    const wrapped = wrapDataKey(dataKey, destination.publicKey, MIGRATION, prefix);
    assert.deepEqual(unwrapDataKey(wrapped, destination.privateKey, MIGRATION, prefix), dataKey);
    assert.throws(() => unwrapDataKey(wrapped, other.privateKey, MIGRATION, prefix), /wrapped for key [0-9a-f]{16}, this agent's key is/);
    // Even with the key id rewritten to match, the wrong private key derives the wrong key-encryption key.
    const relabelled = { ...wrapped, recipientKeyId: wrapDataKey(dataKey, other.publicKey, MIGRATION, prefix).recipientKeyId };
    assert.throws(() => unwrapDataKey(relabelled, other.privateKey, MIGRATION, prefix), /does not open/);
  });

  it('refuses an altered wrapped key, ephemeral key, nonce, nonce prefix or migration id', () => {
    const wrapped = wrapDataKey(dataKey, destination.publicKey, MIGRATION, prefix);
    const alter = (b64: string) => flip(Buffer.from(b64, 'base64'), 0).toString('base64');
    for (const changed of [
      { ...wrapped, ciphertext: alter(wrapped.ciphertext) },
      { ...wrapped, ephemeralPublicKey: alter(wrapped.ephemeralPublicKey) },
      { ...wrapped, nonce: alter(wrapped.nonce) },
    ]) {
      assert.throws(() => unwrapDataKey(changed, destination.privateKey, MIGRATION, prefix), SealingError);
    }
    assert.throws(() => unwrapDataKey(wrapped, destination.privateKey, MIGRATION, flip(prefix, 0)), SealingError);
    assert.throws(() => unwrapDataKey(wrapped, destination.privateKey, 'mig-other', prefix), SealingError);
  });

  it('refuses a malformed header and a low-order ephemeral key', () => {
    const { sealer } = sealedPair();
    assert.throws(() => ChunkOpener.unwrap({ ...sealer.sealing, noncePrefix: 'AA==' }, destination.privateKey, MIGRATION), /malformed/);
    const zero = { ...sealer.sealing.wrappedKey, ephemeralPublicKey: Buffer.alloc(32).toString('base64') };
    assert.throws(
      () => unwrapDataKey(zero, destination.privateKey, MIGRATION, Buffer.from(sealer.sealing.noncePrefix, 'base64')),
      SealingError,
    );
  });
});

describe('uploadChunked stores sealed chunks and a consistent manifest', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ums-seal-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('only ciphertext in the store; sizes, offsets and digests describe what is stored; the chunks open in order', async () => {
    const store = await openObjectStore(`file://${join(dir, 'store')}`);
    const chunkBytes = 64 * 1024;
    const marker = Buffer.from('ustar\0 COUNTER-MEMORY-MARKER ');
    const archive = Buffer.concat(Array.from({ length: 40 }, () => Buffer.concat([marker, randomBytes(5000)])));
    const sealer = ChunkSealer.forRecipient(destination.publicKey, MIGRATION);
    const prefix = `migrations/${MIGRATION}/`;
    const announced: number[] = [];
    const upload = await uploadChunked(Readable.from([archive.subarray(0, 70_000), archive.subarray(70_000)]), store, prefix, {
      migrationId: MIGRATION,
      chunkBytes,
      parallel: 2,
      sealer,
      signer: { agentId: 'azure-1', key: generateSigningKeyPair() },
      onChunk: async (chunk) => void announced.push(chunk.index),
    });
    const manifest = Manifest.parse(JSON.parse((await readFile(join(dir, 'store', manifestKey(prefix)))).toString()));
    assert.equal(manifest.chunks.length, Math.ceil(archive.length / chunkBytes));
    assert.equal(announced.length, manifest.chunks.length);
    assert.equal(upload.plainBytes, archive.length);
    assert.equal(manifest.sizeBytes, archive.length + TAG_BYTES * manifest.chunks.length);
    assert.deepEqual(manifest.sealing, sealer.sealing);
    assert.equal(JSON.stringify(manifest).includes('COUNTER-MEMORY-MARKER'), false);

    const opener = ChunkOpener.unwrap(manifest.sealing, destination.privateKey, MIGRATION);
    const plain: Buffer[] = [];
    // The archive's digest is a hash list: sha256 over each stored chunk's own sha256, in order.
    const hashList = createHash('sha256');
    for (const chunk of manifest.chunks) {
      const stored = await readFile(join(dir, 'store', chunkKey(prefix, chunk.index)));
      assert.equal(stored.length, chunk.sizeBytes);
      const digest = createHash('sha256').update(stored).digest();
      assert.equal(chunk.sha256, digest.toString('hex'), `chunk ${chunk.index}'s digest is of what is stored`);
      hashList.update(digest);
      assert.ok(stored.length <= chunkBytes + TAG_BYTES);
      assert.equal(stored.includes('ustar'), false, `chunk ${chunk.index} holds no tar header in clear`);
      assert.equal(stored.includes('COUNTER-MEMORY-MARKER'), false, `chunk ${chunk.index} holds no marker in clear`);
      plain.push(opener.open(chunk.index, stored));
    }
    assert.deepEqual(Buffer.concat(plain), archive);
    assert.equal(manifest.sha256, hashList.digest('hex'));
  });

  it(
    'announces each chunk once stored without holding its upload slot; a failed announcement fails the upload',
    { timeout: 10_000 },
    async () => {
      const upload = async (name: string, onChunk: (index: number) => Promise<void>) => {
        const root = join(dir, name);
        const prefix = `migrations/${MIGRATION}/`;
        const done = uploadChunked(Readable.from([randomBytes(10 * 1024)]), await openObjectStore(`file://${root}`), prefix, {
          migrationId: MIGRATION,
          chunkBytes: 1024,
          parallel: 1,
          sealer: ChunkSealer.forRecipient(destination.publicKey, MIGRATION),
          signer: { agentId: 'azure-1', key: generateSigningKeyPair() },
          onChunk: (chunk) => onChunk(chunk.index),
        });
        return { done, manifest: () => readFile(join(root, manifestKey(prefix))) };
      };
      // One upload slot, and the first announcement waits for the last chunk's: only an upload that goes on
      // while chunk 0 is still being announced gets there (one that waited would never finish).
      let release: () => void = () => undefined;
      const lastStored = new Promise<void>((resolve) => (release = resolve));
      const slow = await upload('announce-slow', async (index) => {
        if (index === 0) await lastStored;
        if (index === 9) release();
      });
      assert.equal((await slow.done).manifest.chunks.length, 10);
      assert.ok((await slow.manifest()).length > 0);

      const refused = await upload('announce-refused', async (index) => {
        if (index === 3) throw new Error('the bus refused it');
      });
      await assert.rejects(refused.done, /announcing chunk 3 failed: the bus refused it/);
      await assert.rejects(refused.manifest(), { code: 'ENOENT' });
    },
  );
});

describe('sealing in place: no second copy of a chunk', () => {
  it('seals and opens within the given buffer, to the same bytes as seal and open', () => {
    const { sealer, opener } = sealedPair();
    for (const [index, size] of [0, 1, 65_535, 65_536, 200_001, 1024 * 1024].entries()) {
      const plain = randomBytes(size);
      const room = Buffer.alloc(size + TAG_BYTES + 7);
      plain.copy(room);
      const sealed = sealer.sealInPlace(index, room, size);
      assert.equal(sealed.buffer, room.buffer, 'a view of the given buffer');
      assert.equal(sealed.length, size + TAG_BYTES);
      assert.deepEqual(opener.open(index, sealed), plain);
      const opened = opener.openInPlace(index, sealed);
      assert.equal(opened.buffer, room.buffer);
      assert.deepEqual(opened, plain);
    }
  });

  it('refuses an altered chunk opened in place, and a buffer without room for the tag', () => {
    const { sealer, opener } = sealedPair();
    const sealed = sealer.seal(4, randomBytes(100_000));
    assert.throws(() => opener.openInPlace(4, flip(sealed, 70_000)), SealingError);
    assert.throws(() => opener.openInPlace(5, Buffer.from(sealed)), SealingError);
    assert.throws(() => sealer.sealInPlace(6, Buffer.alloc(10), 10), SealingError);
  });

  it('uploadChunked reuses parallel + 1 buffers however many chunks it cuts', async () => {
    const sealer = ChunkSealer.forRecipient(destination.publicKey, MIGRATION);
    const stored = new Map<string, Buffer>();
    const buffers = new Set<ArrayBufferLike>();
    const store = {
      put: async (key: string, body: Uint8Array | Readable) => {
        assert.ok(body instanceof Uint8Array);
        buffers.add(body.buffer);
        // Copied, as a store writes it out: the buffer is reused once the put has settled.
        stored.set(key, Buffer.from(body));
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 3));
        return { sizeBytes: body.byteLength };
      },
    } as unknown as ObjectStore;
    const archive = randomBytes(40 * 4096 + 123);
    const prefix = `migrations/${MIGRATION}/`;
    const upload = await uploadChunked(Readable.from([archive]), store, prefix, {
      migrationId: MIGRATION,
      chunkBytes: 4096,
      parallel: 3,
      sealer,
      signer: { agentId: 'azure-1', key: generateSigningKeyPair() },
      onChunk: async () => undefined,
    });
    assert.equal(upload.manifest.chunks.length, 41);
    // the manifest's own body is a buffer of its own
    assert.ok(buffers.size <= 3 + 1 + 1, `${buffers.size} buffers for 41 chunks`);
    const opener = ChunkOpener.unwrap(upload.manifest.sealing, destination.privateKey, MIGRATION);
    const plain = upload.manifest.chunks.map((chunk) =>
      opener.open(chunk.index, stored.get(chunkKey(prefix, chunk.index)) ?? Buffer.alloc(0)),
    );
    assert.deepEqual(Buffer.concat(plain), archive);
  });
});

describe("the agent's sealing key file", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ums-seal-key-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is created once with mode 0600, kept across starts, and tightened if it was readable by others', async () => {
    const stateDir = join(dir, 'agent');
    const first = await loadOrCreateSealingKey(stateDir);
    assert.equal(first.created, true);
    const path = join(stateDir, SEALING_KEY_FILE);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.deepEqual(await readdir(stateDir), [SEALING_KEY_FILE], 'no temporary file left');
    const again = await loadOrCreateSealingKey(stateDir);
    assert.equal(again.created, false);
    assert.deepEqual(again.publicKey, first.publicKey);
    // A chunk sealed for the key registered before the restart still opens after it.
    const sealer = ChunkSealer.forRecipient(first.publicKey, MIGRATION);
    assert.deepEqual(
      ChunkOpener.unwrap(sealer.sealing, again.privateKey, MIGRATION).open(0, sealer.seal(0, Buffer.from('x'))),
      Buffer.from('x'),
    );
    await chmod(path, 0o644);
    const loose = await loadOrCreateSealingKey(stateDir);
    assert.equal(loose.tightenedFrom, 0o644);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    // Concurrent first starts make one key.
    const fresh = join(dir, 'race');
    const keys = await Promise.all([loadOrCreateSealingKey(fresh), loadOrCreateSealingKey(fresh), loadOrCreateSealingKey(fresh)]);
    assert.equal(new Set(keys.map((k) => k.publicKey.publicKey)).size, 1);
  });
});
