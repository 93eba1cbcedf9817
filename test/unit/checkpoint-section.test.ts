/**
 * The checkpoint section (agents/checkpoint-section.ts): what the source writes reads back as the same
 * volumes, trees, page images and export bytes however the stream is cut; a stream without a section is all export;
 * each malformed section is refused with its reason, and a stream cut inside the section is not taken
 * for a whole one.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  byteRecords,
  deltaRecord,
  endRecord,
  MAGIC,
  MAX_TREE_RECORD_BYTES,
  memoryRecord,
  type SectionEvent,
  type SectionVolume,
  treeRecords,
  volumeRecord,
  CheckpointSectionError,
  CheckpointSectionParser,
} from '../../agents/checkpoint-section.js';

const data: SectionVolume = { name: 'data', driver: 'local', labels: { app: 'redis' }, options: {}, destination: '/data' };
const logs: SectionVolume = { name: '0f3c9a1b2c', driver: 'local', labels: {}, options: {}, destination: '/var/log/app' };

async function collect(records: AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const r of records) out.push(r);
  return Buffer.concat(out);
}

async function* once(bytes: Buffer): AsyncGenerator<Buffer> {
  yield bytes;
}

/** Feeds `stream` in pieces of `size` bytes; returns what each volume's base and delta trees got, and the export. */
function read(
  stream: Buffer,
  size: number,
): { trees: Map<string, Buffer>; exported: Buffer; events: SectionEvent['kind'][]; hasSection: boolean } {
  const parser = new CheckpointSectionParser();
  const trees = new Map<string, Buffer[]>();
  const exported: Buffer[] = [];
  const events: SectionEvent['kind'][] = [];
  let current = '';
  for (let at = 0; at < stream.length; at += size) {
    for (const event of parser.write(stream.subarray(at, at + size))) {
      if (events.at(-1) !== event.kind || (event.kind !== 'tree' && event.kind !== 'pages' && event.kind !== 'export'))
        events.push(event.kind);
      if (event.kind === 'volume') current = `${event.volume.name}.base`;
      if (event.kind === 'delta') current = `${event.name}.delta`;
      if (event.kind === 'memory') current = `${event.file}@${event.offset}`;
      if (event.kind === 'tree' || event.kind === 'pages') {
        if (!trees.has(current)) trees.set(current, []);
        trees.get(current)!.push(Buffer.from(event.bytes));
      }
      if (event.kind === 'export') exported.push(Buffer.from(event.bytes));
    }
  }
  parser.end();
  return {
    trees: new Map([...trees].map(([k, v]) => [k, Buffer.concat(v)])),
    exported: Buffer.concat(exported),
    events,
    hasSection: parser.hasSection,
  };
}

const container = 'a'.repeat(64);
const other = 'b'.repeat(64);

describe('checkpoint section', () => {
  it('reads back the volumes, their trees and the export, whatever the cut', async () => {
    const dataBase = randomBytes(MAX_TREE_RECORD_BYTES * 2 + 123); // more than one tree record
    const logsBase = randomBytes(10);
    const dataDelta = randomBytes(4096);
    const logsDelta = Buffer.alloc(0); // nothing changed there
    const exported = randomBytes(70_000);
    const stream = Buffer.concat([
      MAGIC,
      volumeRecord(data),
      await collect(treeRecords(once(dataBase))),
      volumeRecord(logs),
      await collect(treeRecords(once(logsBase))),
      deltaRecord('data'),
      await collect(treeRecords(once(dataDelta))),
      deltaRecord(logs.name),
      await collect(treeRecords(once(logsDelta))),
      endRecord(),
      exported,
    ]);
    for (const size of [1, 7, 4096, stream.length]) {
      const got = read(stream, size);
      assert.equal(got.hasSection, true);
      assert.deepEqual(got.events, ['volume', 'tree', 'volume', 'tree', 'delta', 'tree', 'delta', 'end', 'export'], `cut in ${size}`);
      assert.ok(got.trees.get('data.base')?.equals(dataBase), `data's base, cut in ${size}`);
      assert.ok(got.trees.get(`${logs.name}.base`)?.equals(logsBase));
      assert.ok(got.trees.get('data.delta')?.equals(dataDelta));
      assert.equal(got.trees.get(`${logs.name}.delta`), undefined, 'an empty tree has no bytes');
      assert.ok(got.exported.equals(exported), `the export intact, cut in ${size}`);
    }
  });

  it('reads back page images sent in pieces, interleaved, beside volumes, whatever the cut', () => {
    const one = randomBytes(MAX_TREE_RECORD_BYTES + 77);
    const two = randomBytes(5000);
    const dataBase = randomBytes(300);
    const dataDelta = randomBytes(20);
    const exported = randomBytes(3000);
    const stream = Buffer.concat([
      MAGIC,
      volumeRecord(data),
      ...byteRecords(dataBase),
      memoryRecord({ container, file: 'pages-1.img', offset: 0 }),
      ...byteRecords(one.subarray(0, 1000)),
      memoryRecord({ container, file: 'pages-2.img', offset: 0 }),
      ...byteRecords(two),
      memoryRecord({ container, file: 'pages-1.img', offset: 1000 }),
      ...byteRecords(one.subarray(1000)),
      deltaRecord('data'),
      ...byteRecords(dataDelta),
      endRecord(),
      exported,
    ]);
    for (const size of [1, 13, 65536, stream.length]) {
      const got = read(stream, size);
      assert.deepEqual(
        got.events,
        ['volume', 'tree', 'memory', 'pages', 'memory', 'pages', 'memory', 'pages', 'delta', 'tree', 'end', 'export'],
        `cut in ${size}`,
      );
      assert.ok(got.trees.get('pages-1.img@0')?.equals(one.subarray(0, 1000)), `the first image's start, cut in ${size}`);
      assert.ok(got.trees.get('pages-1.img@1000')?.equals(one.subarray(1000)), `its rest, cut in ${size}`);
      assert.ok(got.trees.get('pages-2.img@0')?.equals(two));
      assert.ok(got.trees.get('data.base')?.equals(dataBase));
      assert.ok(got.trees.get('data.delta')?.equals(dataDelta));
      assert.ok(got.exported.equals(exported));
    }
  });

  it('takes a stream without a section as the export itself', () => {
    // A Podman export starts with a tar header: a file name.
    const exported = Buffer.concat([Buffer.from('artifacts/'), randomBytes(5000)]);
    for (const size of [1, 3, exported.length]) {
      const got = read(exported, size);
      assert.equal(got.hasSection, false);
      assert.ok(got.exported.equals(exported));
    }
    // Bytes that begin like MAGIC but stop matching are the export too, from their first byte.
    const almost = Buffer.concat([MAGIC.subarray(0, 5), Buffer.from('X'), randomBytes(100)]);
    assert.ok(read(almost, 1).exported.equals(almost));
  });

  const header = (kind: string, length: number) => {
    const h = Buffer.alloc(5);
    h.write(kind, 0, 'latin1');
    h.writeUInt32BE(length, 1);
    return h;
  };
  const refusals: Array<[string, Buffer, RegExp]> = [
    [
      'bytes before any volume or page image',
      Buffer.concat([MAGIC, header('t', 3), Buffer.from('abc')]),
      /bytes before any volume or page image/,
    ],
    [
      'a page image that skips ahead',
      Buffer.concat([
        MAGIC,
        memoryRecord({ container, file: 'pages-1.img', offset: 0 }),
        ...byteRecords(Buffer.alloc(10)),
        memoryRecord({ container, file: 'pages-1.img', offset: 20 }),
      ]),
      /pages-1.img continues at 20, but 10 bytes of it arrived/,
    ],
    [
      'a page image sent again from its start',
      Buffer.concat([
        MAGIC,
        memoryRecord({ container, file: 'pages-1.img', offset: 0 }),
        ...byteRecords(Buffer.alloc(10)),
        memoryRecord({ container, file: 'pages-1.img', offset: 0 }),
      ]),
      /continues at 0, but 10 bytes/,
    ],
    [
      'page images of two containers',
      Buffer.concat([
        MAGIC,
        memoryRecord({ container, file: 'pages-1.img', offset: 0 }),
        memoryRecord({ container: other, file: 'pages-2.img', offset: 0 }),
      ]),
      /two containers/,
    ],
    [
      'a page image named as a path',
      Buffer.concat([
        MAGIC,
        Buffer.from(
          memoryRecord({ container, file: 'pages-1.img', offset: 0 }).toString('latin1').replace('pages-1.img', '/etc/passwd'),
          'latin1',
        ),
      ]),
      /memory record/,
    ],
    [
      'a volume announced after the memory',
      Buffer.concat([MAGIC, memoryRecord({ container, file: 'pages-1.img', offset: 0 }), volumeRecord(data)]),
      /after the freeze/,
    ],
    ['an unknown record', Buffer.concat([MAGIC, header('z', 0)]), /unknown record kind 0x7a/],
    ['a byte record over the bound', Buffer.concat([MAGIC, volumeRecord(data), header('t', MAX_TREE_RECORD_BYTES + 1)]), /tree record of/],
    ['a name that is a path', Buffer.concat([MAGIC, volumeRecord({ ...data, name: '../etc' })]), /volume record/],
    [
      'a driver other than local',
      Buffer.concat([MAGIC, Buffer.from(volumeRecord(data).toString('latin1').replace('"local"', '"nfs00"'), 'latin1')]),
      /volume record/,
    ],
    ['a volume announced twice', Buffer.concat([MAGIC, volumeRecord(data), volumeRecord(data)]), /announced twice/],
    ['changes to a volume never announced', Buffer.concat([MAGIC, volumeRecord(data), deltaRecord('other')]), /never announced/],
    ['a volume after the freeze', Buffer.concat([MAGIC, volumeRecord(data), deltaRecord('data'), volumeRecord(logs)]), /after the freeze/],
    [
      'an end before every delta',
      Buffer.concat([MAGIC, volumeRecord(data), volumeRecord(logs), deltaRecord('data'), endRecord()]),
      /without the changes made while frozen to 0f3c9a1b2c/,
    ],
    ['a spec that is not JSON', Buffer.concat([MAGIC, header('v', 4), Buffer.from('{{{{')]), /volume record/],
  ];
  for (const [what, stream, reason] of refusals) {
    it(`refuses ${what}`, () => {
      assert.throws(
        () => read(stream, 1),
        (error: unknown) => error instanceof CheckpointSectionError && reason.test(error.message),
      );
      assert.throws(
        () => read(stream, stream.length),
        (error: unknown) => error instanceof CheckpointSectionError && reason.test(error.message),
      );
    });
  }

  it('does not take a stream cut inside the section for a whole one', () => {
    const cut = Buffer.concat([MAGIC, volumeRecord(data), header('t', 10), Buffer.from('12345')]);
    assert.throws(() => read(cut, 4), /ended inside the section/);
    assert.throws(() => read(MAGIC.subarray(0, 4), 4), /partial header/);
  });
});
