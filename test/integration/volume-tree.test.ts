/**
 * A volume's files as GNU tar's incremental dumps (agents/volumes/volume-tree.ts), on real directories:
 * the level-0 dump read while a writer appends and creates files, then the level-1 dump after changes,
 * deletions, renames and new links, extracted into an empty directory, give back exactly the tree as it
 * was at the second dump (names, contents, modes, owners, times, symlinks, hard links, sparse files, empty
 * directories); and the level-1 dump holds only what changed. Then what a forged tree attempts: a member
 * that climbs out ("../"), an absolute one, and a symlink leading out followed by a member through it:
 * nothing lands outside the volume. And Podman's export ended where its volumes start, without reading
 * them (in pax, GNU and ustar formats), which GNU tar still reads whole. (xattrs and ACLs: not checked, this machine has no
 * setfattr/setfacl.)
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  appendFile,
  chmod,
  chown,
  link,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  stat,
  symlink,
  truncate,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { exportWithoutVolumes } from '../../agents/volumes/volume-move.js';
import { dumpTree, extractTree, VolumeTreeError } from '../../agents/volumes/volume-tree.js';

const execFileAsync = promisify(execFile);
let work: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'ums-volume-tree-'));
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Every entry below `dir`: type, mode, owner, size, mtime, content digest or link target, inode group for hard links. */
async function describeTree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const inodes = new Map<number, string>();
  const walk = async (rel: string) => {
    for (const name of (await readdir(join(dir, rel))).sort()) {
      const path = join(dir, rel, name);
      const key = join(rel, name);
      const s = await lstat(path);
      const common = `mode=${(s.mode & 0o7777).toString(8)} owner=${s.uid}:${s.gid} mtime=${Math.floor(s.mtimeMs)}`;
      if (s.isSymbolicLink()) out[key] = `symlink -> ${await readlink(path)} owner=${s.uid}:${s.gid}`;
      else if (s.isDirectory()) {
        out[key] = `dir ${common}`;
        await walk(key);
      } else {
        const first = s.nlink > 1 ? (inodes.get(s.ino) ?? (inodes.set(s.ino, key), key)) : key;
        const digest = createHash('sha256')
          .update(await readFile(path))
          .digest('hex');
        out[key] = `file ${common} size=${s.size} sha256=${digest} links-with=${first}`;
      }
    }
  };
  await walk('');
  return out;
}

async function drain(dump: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const bytes of dump) parts.push(bytes);
  return Buffer.concat(parts);
}

async function extract(dir: string, tree: Buffer): Promise<void> {
  const tar = extractTree(dir);
  tar.input.end(tree);
  await tar.done;
}

describe('volume trees (GNU tar incremental dumps)', () => {
  it('base while written to, then the changes: the copy is the tree as it was at the second dump', async () => {
    const volume = join(work, 'volume');
    await mkdir(join(volume, 'db', 'empty'), { recursive: true });
    await writeFile(join(volume, 'db', 'table'), randomBytes(8 * 1024 * 1024));
    await writeFile(join(volume, 'log'), 'first line\n');
    await writeFile(join(volume, 'owned'), 'by someone else');
    await chown(join(volume, 'owned'), 1234, 5678);
    await chmod(join(volume, 'owned'), 0o640);
    await writeFile(join(volume, 'doomed'), 'deleted after the base');
    await writeFile(join(volume, 'moved'), 'renamed after the base');
    await writeFile(join(volume, 'name with spaces\nand a newline'), 'odd name');
    await symlink('db/table', join(volume, 'link'));
    await link(join(volume, 'log'), join(volume, 'log.hard'));
    await writeFile(join(volume, 'sparse'), '');
    await truncate(join(volume, 'sparse'), 64 * 1024 * 1024);
    await appendFile(join(volume, 'sparse'), 'end');
    await utimes(join(volume, 'db', 'table'), new Date('2020-01-01T00:00:00Z'), new Date('2020-01-01T00:00:00Z'));

    // A writer appends while the base is read.
    let writing = true;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        await appendFile(join(volume, 'log'), `line ${i}\n`);
        if (i % 10 === 0) await writeFile(join(volume, `new-${i}`), `made during the base: ${i}`);
        await sleep(2);
      }
    })();
    const snapshot = join(work, 'volume.snar');
    const base = await drain(dumpTree(volume, snapshot, 'base'));
    writing = false;
    await writer;

    // After the base, before the frozen dump: deletions, a rename, a new link, a changed owner.
    await rm(join(volume, 'doomed'));
    await rename(join(volume, 'moved'), join(volume, 'db', 'moved-here'));
    await symlink('../log', join(volume, 'db', 'new-link'));
    await chown(join(volume, 'log'), 42, 42);
    await appendFile(join(volume, 'log'), 'last line\n');
    const delta = await drain(dumpTree(volume, snapshot, 'delta'));
    const expected = await describeTree(volume);

    const copy = join(work, 'copy');
    await mkdir(copy);
    await extract(copy, base);
    await extract(copy, delta);
    assert.deepEqual(await describeTree(copy), expected);
    assert.equal((await stat(join(copy, 'sparse'))).blocks < 1024, true, 'the sparse file stays sparse');

    // The frozen dump carries the changed files, not the 8 MiB table nor the 64 MiB sparse file.
    assert.ok(base.length > 8 * 1024 * 1024, `base ${base.length} bytes`);
    assert.ok(delta.length < 1024 * 1024, `delta ${delta.length} bytes`);
  });

  it('a forged tree writes nothing outside the volume', async () => {
    const outside = join(work, 'outside');
    const volume = join(work, 'victim');
    await mkdir(outside);
    await mkdir(volume);
    // Crafted with GNU tar itself: -P keeps "../" and absolute names; a symlink to `outside`, then a
    // directory of the same name holding a file, appended to the same archive.
    const craft = join(work, 'craft');
    await mkdir(join(craft, 'a'), { recursive: true });
    await mkdir(join(craft, 'b', 'escape'), { recursive: true });
    await symlink(outside, join(craft, 'a', 'escape'));
    await writeFile(join(craft, 'b', 'escape', 'through-link'), 'x');
    await writeFile(join(work, 'climbed'), 'x');
    const forged = join(work, 'forged.tar');
    await execFileAsync('tar', ['-cf', forged, '-C', join(craft, 'a'), 'escape']);
    await execFileAsync('tar', ['-rf', forged, '-C', join(craft, 'b'), 'escape/through-link']);
    await execFileAsync('tar', ['-rPf', forged, '-C', volume, '../climbed', join(work, 'climbed')]);
    await rm(join(work, 'climbed'));

    const failure = await extract(volume, await readFile(forged)).then(
      () => undefined,
      (error: unknown) => error,
    );
    assert.deepEqual(await readdir(outside), [], 'nothing written through the symlink');
    await assert.rejects(stat(join(work, 'climbed')), 'nothing written above the volume');
    if (failure !== undefined) {
      assert.ok(failure instanceof VolumeTreeError, failure instanceof Error ? failure.message : 'not an error');
      assert.match(failure.message, /tar could not extract into/);
    }
  });

  it("ends Podman's export where its volumes start (it writes them last), without reading them, whatever the tar format", async () => {
    const tree = join(work, 'export');
    const longName = `${'d'.repeat(120)}/${'f'.repeat(120)}.img`; // needs PAX (or GNU) long names
    await mkdir(join(tree, 'checkpoint', 'd'.repeat(120)), { recursive: true });
    await mkdir(join(tree, 'volumes'), { recursive: true });
    await writeFile(join(tree, 'config.dump'), '{"name":"x"}');
    await writeFile(join(tree, 'checkpoint', 'pages-1.img'), randomBytes(300_000));
    await writeFile(join(tree, 'checkpoint', longName), randomBytes(1000));
    await writeFile(join(tree, 'rootfs-diff.tar'), randomBytes(10_000));
    await writeFile(join(tree, 'volumes', 'data.tar'), randomBytes(2_000_000));
    await writeFile(join(tree, 'volumes', `${'v'.repeat(150)}.tar`), randomBytes(5000));
    for (const format of ['pax', 'gnu', 'ustar']) {
      // In libpod's order: the volumes' tars last. (ustar cannot name the long files: it gets the others.)
      const before =
        format === 'ustar'
          ? ['config.dump', 'checkpoint/pages-1.img', 'rootfs-diff.tar']
          : ['config.dump', 'checkpoint', 'rootfs-diff.tar'];
      const volumes = format === 'ustar' ? ['volumes/data.tar'] : ['volumes/data.tar', `volumes/${'v'.repeat(150)}.tar`];
      const archive = join(work, `export-${format}.tar`);
      await execFileAsync('tar', [`--format=${format}`, '-cf', archive, '-C', tree, ...before, ...volumes]);
      const original = await readFile(archive);
      for (const size of [511, 4096, original.length]) {
        let read = 0;
        const pieces = async function* () {
          for (let at = 0; at < original.length; at += size) {
            read += Math.min(size, original.length - at);
            yield original.subarray(at, at + size);
          }
        };
        const filtered = await drain(exportWithoutVolumes(pieces()));
        if (size < original.length)
          assert.ok(read < original.length - 1_000_000, `the volumes were not read (${read} of ${original.length} bytes, ${format})`);
        const listed = join(work, `filtered-${format}.tar`);
        await writeFile(listed, filtered);
        // GNU tar reads it whole, and finds everything but the volumes, each file as it was.
        const { stdout } = await execFileAsync('tar', ['-tf', listed]);
        const expected = (await execFileAsync('tar', ['-tf', archive])).stdout.split('\n').filter((n) => !n.startsWith('volumes/'));
        assert.deepEqual(stdout.split('\n'), expected, `${format}, pieces of ${size}`);
        const out = join(work, `out-${format}`);
        await rm(out, { recursive: true, force: true });
        await mkdir(out);
        await execFileAsync('tar', ['-xf', listed, '-C', out]);
        for (const file of [
          'config.dump',
          'checkpoint/pages-1.img',
          'rootfs-diff.tar',
          ...(format === 'ustar' ? [] : [`checkpoint/${longName}`]),
        ])
          assert.ok((await readFile(join(out, file))).equals(await readFile(join(tree, file))), `${file} intact (${format})`);
        await assert.rejects(stat(join(out, 'volumes')));
      }
    }
    // An export without volumes (a Podman that honours ignoreVolumes) passes whole.
    const plain = join(work, 'export-plain.tar');
    await execFileAsync('tar', ['-cf', plain, '-C', tree, 'config.dump', 'rootfs-diff.tar']);
    const whole = await readFile(plain);
    const passed = await drain(
      exportWithoutVolumes(
        (async function* () {
          yield whole;
        })(),
      ),
    );
    assert.ok(passed.equals(whole));
  });

  it('says why tar failed', async () => {
    const volume = join(work, 'bad');
    await mkdir(volume);
    await assert.rejects(extract(volume, Buffer.from('this is not a tar archive'.repeat(40))), (error: unknown) => {
      assert.ok(error instanceof VolumeTreeError);
      assert.match(error.message, /tar could not extract into .*bad: .*(does not look like a tar archive|Exiting with failure)/);
      return true;
    });
    await assert.rejects(
      drain(dumpTree(join(work, 'no-such-dir'), join(work, 'x.snar'), 'base')),
      /tar could not dump .*no-such-dir: .*Cannot/,
    );
  });
});
