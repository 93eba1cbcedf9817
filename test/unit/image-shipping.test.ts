import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { archivedImage } from '../../agents/image-transfer.js';
import { RestoreRefusedError } from '../../agents/verified-download.js';
import { formatImageShipping } from '../../cli/format.js';
import type { Artifact } from '../../core/events.js';
import { timelineOf, type RecordIn } from '../../core/migration.js';

const ID = 'f2b6183dd9656aaf5d4b37999b6eab087d56058ee38aba22446fb32206a473cc';
const manifest = (entries: unknown): Buffer => Buffer.from(JSON.stringify(entries));

describe('the shipped docker-archive is the expected image (agents/image-transfer.ts archivedImage)', () => {
  it('accepts the archive of exactly that image, by its config blob, and returns the names it carries', () => {
    const podman = manifest([{ Config: `${ID}.json`, RepoTags: ['localhost/ums/counter:1'], Layers: ['a.tar'] }]);
    assert.deepEqual(archivedImage(podman, `sha256:${ID}`), { tags: ['localhost/ums/counter:1'] });
    // Docker >= 25 writes an OCI layout: the config is a blob named by its digest. An image saved by id has no names.
    const oci = manifest([{ Config: `blobs/sha256/${ID}`, RepoTags: null, Layers: [] }]);
    assert.deepEqual(archivedImage(oci, ID), { tags: [] });
  });

  it('refuses another image, several images, no manifest or a manifest of another shape, with the reason', () => {
    const refused = (json: Buffer | undefined, why: RegExp) =>
      assert.throws(
        () => archivedImage(json, ID),
        (error: unknown) => error instanceof RestoreRefusedError && error.code === 'image-missing' && why.test(error.message),
      );
    refused(manifest([{ Config: `${'c'.repeat(64)}.json`, RepoTags: [] }]), /holds image cccccccccccc, not f2b6183dd965 .* nothing loaded/);
    refused(manifest([{ Config: `${ID}.json` }, { Config: `${'c'.repeat(64)}.json` }]), /holds image f2b6183dd965, cccccccccccc/);
    refused(undefined, /no manifest\.json: it is not a docker-archive/);
    refused(Buffer.from('{"Config": 1'), /manifest\.json is not JSON/);
    refused(manifest({ Config: `${ID}.json` }), /not the shape docker-archive writes/);
  });
});

describe('what the record says of the image (ums status, the timeline)', () => {
  const artifact: Artifact = {
    storeUrl: 'azblob://a/c',
    prefix: 'migrations/m/image/',
    sizeBytes: 33 * 1024 * 1024,
    sha256: 'a'.repeat(64),
    chunkCount: 9,
    manifestSha256: 'b'.repeat(64),
  };
  const record = (over: Partial<RecordIn<'done'>>): RecordIn<'done'> => ({
    migrationId: 'm',
    state: 'done',
    epoch: 1,
    container: 'web',
    destinationAgent: 'b',
    sourceAgent: 'a',
    image: 'localhost/ums/counter:1',
    imageId: ID,
    approach: 'container',
    artifactLocation: { storeUrl: 'azblob://a/c', prefix: 'migrations/m/' },
    times: {
      requestedAt: '2026-12-02T10:00:00.000Z',
      preparedAt: '2026-12-02T10:00:02.000Z',
      checkpointStartedAt: '2026-12-02T10:00:03.000Z',
      restoredAt: '2026-12-02T10:00:04.000Z',
      finishedAt: '2026-12-02T10:00:05.000Z',
    },
    updatedAt: '2026-12-02T10:00:05.000Z',
    ...over,
  });

  it('a shipped image: its size, how long each side took, the names restored, and its own phase in the timeline', () => {
    const shipped = record({
      imageShipping: { expected: true, needed: true, artifact, tags: ['localhost/ums/counter:1'] },
      times: {
        requestedAt: '2026-12-02T10:00:00.000Z',
        imageNeededAt: '2026-12-02T10:00:01.000Z',
        imageUploadedAt: '2026-12-02T10:00:03.500Z',
        imageLoadedAt: '2026-12-02T10:00:05.000Z',
        preparedAt: '2026-12-02T10:00:05.100Z',
        checkpointStartedAt: '2026-12-02T10:00:06.000Z',
        restoredAt: '2026-12-02T10:00:07.000Z',
        finishedAt: '2026-12-02T10:00:08.000Z',
      },
    });
    assert.equal(
      formatImageShipping(shipped),
      'shipped before the freeze: 33.0 MiB (sealed, 9 chunk(s)), saved and stored in 2.5 s, fetched, verified and loaded in 1.5 s, 4.0 s in all, names localhost/ums/counter:1',
    );
    const phases = timelineOf(shipped).phases.map((p) => [p.name, p.ms]);
    assert.deepEqual(phases.slice(0, 3), [
      ['plan+prepare', 1000],
      ['image (running)', 4000],
      ['prepare', 1000],
    ]);
    // The freeze is not where the image moved.
    assert.equal(timelineOf(shipped).frozenMs, 1000);
  });

  it('an image the destination had: not shipped, and says so when the heartbeat had guessed otherwise', () => {
    assert.equal(formatImageShipping(record({ imageShipping: { expected: false } })), 'present at the destination, not shipped');
    assert.match(
      formatImageShipping(record({ imageShipping: { expected: true } })) ?? '',
      /not shipped \(its last heartbeat had not listed it/,
    );
    assert.equal(formatImageShipping(record({})), undefined, 'a record from before images were shipped');
    const { pendingCleanup: _none, ...planned } = record({ imageShipping: { expected: false, needed: true } });
    const failed: RecordIn<'failed'> = {
      ...planned,
      state: 'failed',
      failure: { phase: 'image', code: 'upload-failed', reason: 'store down' },
      runningOn: 'a',
    };
    assert.equal(
      formatImageShipping(failed),
      'the destination lacked it; the migration failed while it was shipped (not stored), nothing was frozen',
    );
    const names = timelineOf(record({ imageShipping: { expected: false } })).phases.map((p) => p.name);
    assert.ok(!names.includes('image (running)') && !names.includes('prepare'), names.join(', '));
  });
});
