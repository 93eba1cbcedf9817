/**
 * Signed envelopes (core/signed-envelope.ts): canonical bytes, command signatures (every covered field,
 * expiry, key) and manifest signatures (signer, tamper, migration and prefix binding).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadOrCreateSigningKey, SIGNING_KEY_FILE } from '../../agents/signing-key.js';
import { MANIFEST_FORMAT, Manifest, signManifest, verifyManifest, type UnsignedManifest } from '../../core/checkpoint-artifact.js';
import { ChunkSealer, generateSealingKeyPair } from '../../core/checkpoint-sealing.js';
import { makeCommand, parseCommand, toWire, type UmsCommand } from '../../core/events.js';
import {
  canonicalJson,
  generateSigningKeyPair,
  parseVerifyKeys,
  readSigningKeyFile,
  SignatureError,
  type SignatureErrorCode,
} from '../../core/signed-envelope.js';
import { CommandSigner, CommandVerifier } from '../../core/command-signature.js';

const MINUTE = 60_000;
const functions = generateSigningKeyPair();
const signer = new CommandSigner(functions, () => 5 * MINUTE);
const verifier = new CommandVerifier([functions.publicKey]);
const migrationId = 'm-sign-1';
const discard = makeCommand('discard', '/ums/functions/finalize', { migrationId, epoch: 2, approach: 'container', container: 'web' });

function refused(run: () => void, code: SignatureErrorCode, message?: RegExp): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof SignatureError, `a SignatureError, got ${String(error)}`);
    assert.equal(error.code, code);
    if (message) assert.match(error.message, message);
    return true;
  });
}

describe('canonical JSON', () => {
  it('is the same whatever order the keys were written in, at every level', () => {
    const a = { b: 1, a: [{ y: 'x', x: null }, 2.5], c: { e: true, d: 'é' } };
    const b = { c: { d: 'é', e: true }, a: [{ x: null, y: 'x' }, 2.5], b: 1 };
    assert.equal(canonicalJson(a), canonicalJson(b));
    assert.equal(canonicalJson(a), '{"a":[{"x":null,"y":"x"},2.5],"b":1,"c":{"d":"é","e":true}}');
  });

  it('drops undefined members as JSON does, and refuses what JSON cannot carry', () => {
    assert.equal(canonicalJson({ a: undefined, b: 1 }), '{"b":1}');
    assert.throws(() => canonicalJson({ a: Number.NaN }), TypeError);
    assert.throws(() => canonicalJson({ a: new Date() }), TypeError);
    assert.throws(() => canonicalJson({ a: 1n }), TypeError);
  });
});

describe('signed commands', () => {
  it('verify after the wire and back, for the agent they were signed for', () => {
    const signed = signer.sign(discard, 'azure-1');
    const received = parseCommand(JSON.parse(JSON.stringify(toWire(signed))));
    assert.equal(received.umstarget, 'azure-1');
    verifier.verify(received, 'azure-1');
  });

  it('verify whatever order the received keys are in', () => {
    const wire = JSON.parse(JSON.stringify(toWire(signer.sign(discard, 'azure-1')))) as Record<string, unknown>;
    const reversed = Object.fromEntries(Object.entries(wire).reverse());
    const data = wire.data as Record<string, unknown>;
    reversed.data = Object.fromEntries(Object.entries(data).reverse());
    verifier.verify(parseCommand(reversed), 'azure-1');
  });

  const signed = signer.sign(discard, 'azure-1');
  const tampered: Array<[string, UmsCommand]> = [
    ['type', { ...signed, type: 'dev.ums.command.resume.v1', name: 'resume' }],
    ['id', { ...signed, id: 'another-id' }],
    ['source', { ...signed, source: '/elsewhere' }],
    ['migration id (subject)', { ...signed, subject: 'm-other' }],
    ['migration id (data)', { ...signed, data: { ...signed.data, migrationId: 'm-other' } }],
    ['epoch', { ...signed, data: { ...signed.data, epoch: 3 } }],
    ['data', { ...signed, data: { ...signed.data, container: 'db' } }],
    ['issue time', { ...signed, time: new Date(Date.now() + MINUTE).toISOString() }],
    ['expiry', { ...signed, umsexpires: new Date(Date.now() + 60 * MINUTE).toISOString() }],
    ['target', { ...signed, umstarget: 'gcp-1' }],
  ];
  for (const [field, command] of tampered) {
    it(`refuse a command whose ${field} was changed after signing`, () => {
      const agent = command.umstarget ?? 'azure-1';
      refused(() => verifier.verify(command, agent), 'signature-invalid');
    });
  }

  it('refuse an unsigned command, or one with its signature removed or replaced', () => {
    refused(() => verifier.verify(discard, 'azure-1'), 'signature-invalid', /not signed/);
    const { umssignature: _signature, ...stripped } = signed;
    refused(() => verifier.verify(stripped, 'azure-1'), 'signature-invalid', /not signed/);
    const other = signer.sign({ ...discard, id: 'x' }, 'azure-1');
    refused(() => verifier.verify({ ...signed, umssignature: other.umssignature }, 'azure-1'), 'signature-invalid');
  });

  it('refuse a command for another agent', () => {
    refused(() => verifier.verify(signed, 'gcp-1'), 'signature-invalid', /signed for agent azure-1, not for gcp-1/);
  });

  it('refuse a command signed with a key the agent does not trust, or naming a trusted key it was not signed with', () => {
    const forger = new CommandSigner(generateSigningKeyPair(), () => 5 * MINUTE);
    const forged = forger.sign(discard, 'azure-1');
    refused(() => verifier.verify(forged, 'azure-1'), 'signer-unknown');
    refused(() => verifier.verify({ ...forged, umskeyid: signer.keyId }, 'azure-1'), 'signature-invalid');
  });

  it('refuse an expired command, and accept it just before', () => {
    const issued = Date.now() - 10 * MINUTE;
    const old = signer.sign(discard, 'azure-1', issued);
    refused(() => verifier.verify(old, 'azure-1'), 'signature-expired');
    verifier.verify(old, 'azure-1', issued + 5 * MINUTE - 1);
  });

  it('accept any of several keys while one is rotated', () => {
    const next = generateSigningKeyPair();
    const both = new CommandVerifier([functions.publicKey, next.publicKey]);
    both.verify(new CommandSigner(next, () => MINUTE).sign(discard, 'azure-1'), 'azure-1');
    both.verify(signed, 'azure-1');
  });

  it('read the verify keys from the environment, refusing none or a malformed one', () => {
    assert.deepEqual(parseVerifyKeys(` ${functions.publicKey.publicKey} `, 'K'), [functions.publicKey]);
    assert.throws(() => parseVerifyKeys(undefined, 'UMS_COMMAND_VERIFY_KEY'), /UMS_COMMAND_VERIFY_KEY is not set/);
    assert.throws(() => parseVerifyKeys('not-a-key', 'K'), /not a base64 Ed25519 public key/);
  });

  it('read the signing key only from a file its owner alone may read', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ums-sign-'));
    try {
      const path = join(dir, 'key.pem');
      await writeFile(path, functions.privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o644 });
      await assert.rejects(readSigningKeyFile(path, 'the command-signing key'), /readable by others \(mode 644\)/);
      const own = join(dir, 'own.pem');
      await writeFile(own, functions.privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
      assert.deepEqual((await readSigningKeyFile(own, 'k')).publicKey, functions.publicKey);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('signed manifests', () => {
  const source = generateSigningKeyPair();
  const prefix = `migrations/${migrationId}/`;
  const sealer = ChunkSealer.forRecipient(generateSealingKeyPair().publicKey, migrationId);
  const unsigned: UnsignedManifest = {
    formatVersion: MANIFEST_FORMAT,
    migrationId,
    prefix,
    contentType: 'application/x-tar',
    chunkBytes: 1024,
    sealing: sealer.sealing,
    chunks: [{ index: 0, offset: 0, sizeBytes: 1040, sha256: 'a'.repeat(64) }],
    sizeBytes: 1040,
    sha256: 'b'.repeat(64),
    createdAt: new Date().toISOString(),
  };
  const expected = { agentId: 'azure-1', publicKey: source.publicKey, migrationId, prefix };
  const manifest = Manifest.parse(JSON.parse(JSON.stringify(signManifest(unsigned, { agentId: 'azure-1', key: source }))));

  it("verify with the source agent's key after a trip through JSON", () => verifyManifest(manifest, expected));

  it('refuse a manifest signed by another agent, or by the source with another key', () => {
    const other = generateSigningKeyPair();
    refused(() => verifyManifest(signManifest(unsigned, { agentId: 'gcp-1', key: other }), expected), 'signer-unknown', /signed by gcp-1/);
    refused(() => verifyManifest(signManifest(unsigned, { agentId: 'azure-1', key: other }), expected), 'signer-unknown');
    // Naming the source and its key id does not help without its private key.
    const forged = signManifest(unsigned, { agentId: 'azure-1', key: other });
    refused(
      () => verifyManifest({ ...forged, signature: { ...forged.signature, keyId: manifest.signature.keyId } }, expected),
      'signature-invalid',
    );
  });

  it('refuse a manifest altered after signing', () => {
    const altered: Manifest[] = [
      { ...manifest, chunks: [{ index: 0, offset: 0, sizeBytes: 1040, sha256: 'c'.repeat(64) }] },
      { ...manifest, sha256: 'c'.repeat(64) },
      { ...manifest, chunkBytes: 2048 },
      { ...manifest, sealing: ChunkSealer.forRecipient(generateSealingKeyPair().publicKey, migrationId).sealing },
    ];
    for (const m of altered) refused(() => verifyManifest(m, expected), 'signature-invalid', /altered after signing/);
  });

  it('refuse a genuine manifest of another migration or from another prefix', () => {
    refused(() => verifyManifest(manifest, { ...expected, migrationId: 'm-other' }), 'signature-invalid', /signed for migration m-sign-1/);
    refused(() => verifyManifest(manifest, { ...expected, prefix: 'migrations/m-other/' }), 'signature-invalid');
  });

  it("an agent's manifest-signing key is made once and kept in its state dir, mode 0600", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ums-signing-key-'));
    try {
      const first = await loadOrCreateSigningKey(dir);
      const again = await loadOrCreateSigningKey(dir);
      assert.ok(first.created && !again.created);
      assert.deepEqual(again.publicKey, first.publicKey);
      const { stat } = await import('node:fs/promises');
      assert.equal((await stat(join(dir, SIGNING_KEY_FILE))).mode & 0o777, 0o600);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
