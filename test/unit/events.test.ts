import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidMessageError, makeCommand, makeEvent, parseCommand, parseEvent, toWire } from '../../core/events.js';

const migrationId = 'b24c00b7-a16d-4967-b816-2475c91c6379';

describe('events and commands at the boundary', () => {
  it('round-trips an event through its wire form', () => {
    const event = makeEvent('migration.requested', '/ums/cli', { migrationId, container: 'web', destinationAgent: 'gcp-us-central1-1' });
    const wire = JSON.stringify(toWire(event));
    assert.ok(!wire.includes('"name"'), 'the in-memory discriminator stays off the wire');
    const parsed = parseEvent(new TextEncoder().encode(wire));
    assert.equal(parsed.name, 'migration.requested');
    assert.equal(parsed.type, 'dev.ums.migration.requested.v1');
    assert.equal(parsed.subject, migrationId);
    assert.deepEqual(parsed.data, event.data);
  });

  it('refuses what is not JSON, not a CloudEvent, of an unknown type, or with bad data, naming the problem', () => {
    assert.throws(
      () => parseEvent('{not json'),
      (e: unknown) => e instanceof InvalidMessageError && /not JSON/.test(e.message),
    );
    assert.throws(() => parseEvent({ type: 'dev.ums.migration.requested.v1' }), /specversion/);
    const base = toWire(
      makeEvent('migration.requested', '/ums/cli', { migrationId, container: 'web', destinationAgent: 'gcp-us-central1-1' }),
    );
    assert.throws(() => parseEvent({ ...base, type: 'dev.ums.no.such.thing.v1' }), /unknown event type "dev.ums.no.such.thing.v1"/);
    assert.throws(() => parseEvent({ ...base, data: { migrationId, container: '../etc', destinationAgent: 'x' } }), /container/);
    assert.throws(() => parseEvent({ ...base, data: { migrationId: 'a.b', container: 'web', destinationAgent: 'x' } }), /migrationId/);
    // a command is not an event, and the other way round
    const command = toWire(
      makeCommand('discard', '/ums/functions/finalize', { migrationId, epoch: 1, approach: 'container', container: 'web' }),
    );
    assert.throws(() => parseEvent(command), /unknown event type/);
    assert.throws(() => parseCommand(base), /unknown command type/);
  });

  it('rejects another schema version with a reason instead of guessing at it, and a command without its epoch', () => {
    const base = toWire(
      makeEvent('migration.requested', '/ums/cli', { migrationId, container: 'web', destinationAgent: 'gcp-us-central1-1' }),
    );
    assert.throws(() => parseEvent({ ...base, type: 'dev.ums.migration.requested.v2' }), /schema version 2; this build speaks version 1/);
    const resume = toWire(makeCommand('resume', '/f', { migrationId, epoch: 2, approach: 'container', container: 'web' }));
    assert.throws(() => parseCommand({ ...resume, type: 'dev.ums.command.resume.v3' }), /schema version 3/);
    assert.throws(() => parseCommand({ ...resume, data: { migrationId, container: 'web' } }), /epoch/);
    assert.throws(() => parseCommand({ ...resume, data: { migrationId, container: 'web', epoch: 0 } }), /epoch/);
  });

  it("validates the destination's commands, including the signed URLs", () => {
    const prepare = {
      migrationId,
      epoch: 1,
      approach: 'container' as const,
      container: 'web',
      image: 'localhost/ums/counter:1',
      imageId: 'e'.repeat(64),
      sourceAgent: 'azure-eastus-1',
      artifact: { storeUrl: 'azblob://acct/ums', prefix: `migrations/${migrationId}/` },
      sourceManifestKey: { algorithm: 'Ed25519' as const, publicKey: Buffer.alloc(32, 3).toString('base64') },
    };
    assert.equal(parseCommand(toWire(makeCommand('prepare', '/f', prepare))).name, 'prepare');
    // The destination needs to know where the archive is, to fetch from there only.
    const { artifact: _artifact, ...withoutArtifact } = prepare;
    assert.throws(() => makeCommand('prepare', '/f', withoutArtifact as typeof prepare));
    assert.throws(() => makeCommand('prepare', '/f', { ...prepare, sourceAgent: 'a b' }));
    const urls = {
      migrationId,
      epoch: 1,
      manifestUrl: 'https://example.blob.core.windows.net/c/migrations/m/manifest.json?sig=x',
      chunks: [{ index: 0, url: 'https://example.blob.core.windows.net/c/migrations/m/chunks/000000?sig=x' }],
      expiresAt: new Date().toISOString(),
    };
    assert.equal(parseCommand(toWire(makeCommand('chunk-urls', '/f', urls))).name, 'chunk-urls');
    assert.throws(
      () => parseCommand({ ...toWire(makeCommand('chunk-urls', '/f', urls)), data: { ...urls, chunks: [{ index: 0, url: 'not a url' }] } }),
      /chunks\.0\.url/,
    );
  });

  it('gives a deterministic id when asked, so that a retried publish is deduplicated', () => {
    const a = makeEvent('source.resumed', '/a', { migrationId, agent: 'azure-eastus-1', container: 'web' }, `${migrationId}.resumed`);
    const b = makeEvent('source.resumed', '/a', { migrationId, agent: 'azure-eastus-1', container: 'web' }, `${migrationId}.resumed`);
    assert.equal(a.id, b.id);
    assert.notEqual(makeEvent('source.resumed', '/a', a.data).id, makeEvent('source.resumed', '/a', a.data).id);
  });
});
