/**
 * Stop-and-copy with the memory beside Podman's export (container level). Podman 4.3 makes its export only
 * once runc's checkpoint returned, spools the whole tar to a file before the first byte leaves, and the
 * destination's Podman spools the body again before it untars and restores: the memory crossed four copies
 * while the service was frozen, none of them overlapping CRIU. Here the runtime shim (agents/post-copy/
 * runc-shim) tells the agent where CRIU writes its images; the agent reads the page images (pages-*.img,
 * nearly all of a dump) while CRIU writes them, and sends them in the checkpoint section
 * (agents/checkpoint-section.ts) ahead of the export, which the shim leaves without them. The destination
 * writes them into a staging directory beside its engine's storage as they arrive; its shim moves them
 * into the images Podman untarred, before runc restores. So the upload overlaps CRIU's dump, and the
 * download the upload.
 *
 * The source keeps its own pages (the shim moves them beside its kept images and back when the service
 * resumes there), so a migration that turns back loses nothing.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { byteRecords, memoryRecord, PAGE_IMAGE, MAX_TREE_RECORD_BYTES, type SectionEvent } from '../checkpoint-section.js';

/** How often the source looks for what CRIU wrote since: small against a freeze, cheap against the read. */
const POLL_MS = 20;

/** The shim's marker directory (its UMS_POST_COPY_DIR): the agent and the shim meet there. */
export interface PageImagesHost {
  markerDir: string;
}

/** The directory beside the kept images where the shim moves the pages out of Podman's export (runc-shim). */
const besideImages = (images: string): string => join(dirname(images), 'ums-pages');

/**
 * The source's half, armed before Podman's checkpoint of `containerId`: `records` yields the section's
 * memory records while the checkpoint runs and until the last page image was read whole.
 */
export class PageImagesOut {
  private bytesRead = 0;
  private images: string | undefined;

  private constructor(
    private readonly host: PageImagesHost,
    readonly containerId: string,
  ) {}

  static async arm(host: PageImagesHost, containerId: string): Promise<PageImagesOut> {
    await mkdir(host.markerDir, { recursive: true, mode: 0o700 });
    const out = new PageImagesOut(host, containerId);
    await rm(out.marker('images'), { force: true });
    await writeFile(out.marker('memory-out'), '', { mode: 0o600 });
    return out;
  }

  /** The page images' bytes sent so far. */
  get bytes(): number {
    return this.bytesRead;
  }

  /**
   * Whether the shim took the pages out of Podman's export: known once `checkpointing` resolved. False
   * when the runtime was not the shim (the export holds them, and the migration still succeeds).
   */
  async movedBeside(): Promise<boolean> {
    if (this.images === undefined) return false;
    return readFile(join(this.images, 'ums-pages.id'), 'utf8').then(
      (id) => id.trim() === this.containerId,
      () => false,
    );
  }

  /**
   * The page images as section records, read as CRIU writes them until `checkpointing` (Podman's checkpoint
   * call) settles, then to their end. If it rejects, this ends early: the caller has its error.
   */
  async *records(checkpointing: Promise<unknown>): AsyncGenerator<Buffer> {
    // An object, not a variable: the callbacks change it between the loop's reads.
    const checkpoint: { outcome: 'pending' | 'resolved' | 'rejected' } = { outcome: 'pending' };
    const settled = checkpointing.then(
      () => void (checkpoint.outcome = 'resolved'),
      () => void (checkpoint.outcome = 'rejected'),
    );
    const files = new Map<string, { handle: FileHandle; offset: number }>();
    let last = '';
    try {
      for (;;) {
        // Read before deciding: after the checkpoint resolved, one more pass reads every image to its end.
        const final = checkpoint.outcome === 'resolved';
        if (checkpoint.outcome === 'rejected') return;
        this.images ??= await readFile(this.marker('images'), 'utf8').then(
          (text) => text.trim(),
          () => undefined,
        );
        let progressed = false;
        if (this.images !== undefined) {
          const where = final ? [this.images, besideImages(this.images)] : [this.images];
          for (const name of await pageImageNames(where)) {
            if (files.has(name)) continue;
            const handle = await openEither(this.images, name);
            if (handle !== undefined) files.set(name, { handle, offset: 0 });
          }
          for (const [name, file] of files) {
            for (;;) {
              const buffer = Buffer.allocUnsafe(MAX_TREE_RECORD_BYTES);
              const { bytesRead } = await file.handle.read(buffer, 0, buffer.length, file.offset);
              if (bytesRead === 0) break;
              if (name !== last) yield memoryRecord({ container: this.containerId, file: name, offset: file.offset });
              last = name;
              yield* byteRecords(buffer.subarray(0, bytesRead));
              file.offset += bytesRead;
              this.bytesRead += bytesRead;
              progressed = true;
            }
          }
        }
        if (final) return;
        if (!progressed) await Promise.race([sleep(POLL_MS), settled]);
      }
    } finally {
      await Promise.all([...files.values()].map((f) => f.handle.close().catch(() => undefined)));
    }
  }

  /** Removes the markers; the pages beside the kept images stay until the container is removed. */
  disarm(): Promise<void> {
    return PageImagesOut.disarm(this.host, this.containerId);
  }

  /**
   * Removes `containerId`'s markers: after a checkpoint, and before one that keeps the memory in the export
   * (a marker an agent killed mid-checkpoint left would take it out of that export).
   */
  static async disarm(host: PageImagesHost, containerId: string): Promise<void> {
    await rm(join(host.markerDir, `${containerId}.memory-out`), { force: true });
    await rm(join(host.markerDir, `${containerId}.images`), { force: true });
  }

  private marker(suffix: string): string {
    return join(this.host.markerDir, `${this.containerId}.${suffix}`);
  }
}

async function pageImageNames(dirs: string[]): Promise<string[]> {
  const names = new Set<string>();
  for (const dir of dirs) {
    for (const name of await readdir(dir).catch(() => [] as string[])) if (PAGE_IMAGE.test(name)) names.add(name);
  }
  return [...names].sort();
}

/** An image in the image path, or beside it if the shim moved it there since it was listed. */
async function openEither(images: string, name: string): Promise<FileHandle | undefined> {
  for (const dir of [images, besideImages(images)]) {
    try {
      return await open(join(dir, name), 'r');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }
  return undefined;
}

/**
 * The destination's half: writes the section's page images into `<stagingRoot>/<random>` as they arrive and
 * tells the shim where they are (`<container>.memory-in`). `stagingRoot` should be on the engine's storage
 * file system, so that the shim's move into the images is a rename.
 */
export class PageImagesIn {
  private dir: string | undefined;
  private container: string | undefined;
  private current: FileHandle | undefined;
  private readonly files = new Map<string, FileHandle>();

  constructor(
    private readonly host: PageImagesHost,
    private readonly stagingRoot: string,
  ) {}

  async handle(event: Extract<SectionEvent, { kind: 'memory' | 'pages' }>): Promise<void> {
    if (event.kind === 'pages') {
      // The parser admits page bytes only after a memory record, and each image in order from offset 0.
      await this.current!.write(event.bytes);
      return;
    }
    if (this.dir === undefined) {
      this.container = event.container;
      this.dir = join(this.stagingRoot, `${event.container.slice(0, 12)}-${randomBytes(6).toString('hex')}`);
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      const marker = this.marker();
      await writeFile(`${marker}.tmp`, `${this.dir}\n`, { mode: 0o600 });
      await rename(`${marker}.tmp`, marker);
    }
    let file = this.files.get(event.file);
    if (file === undefined) {
      // 'wx': never into a file that exists.
      file = await open(join(this.dir, event.file), 'wx', 0o600);
      this.files.set(event.file, file);
    }
    this.current = file;
  }

  /** Closes the images (once the section ended, before the engine restores). */
  async close(): Promise<void> {
    const files = [...this.files.values()];
    this.files.clear();
    await Promise.all(files.map((f) => f.close()));
  }

  /**
   * Empties the staging root: what a restore left when its agent was killed (at the agent's start, when no
   * restore of its own is running; each host has its own root).
   */
  static async clearStaging(stagingRoot: string): Promise<void> {
    for (const name of await readdir(stagingRoot).catch(() => [] as string[]))
      await rm(join(stagingRoot, name), { recursive: true, force: true });
  }

  /** Removes what the shim did not move, and the marker. Safe to call more than once. */
  async dispose(): Promise<void> {
    await this.close().catch(() => undefined);
    if (this.container !== undefined) await rm(this.marker(), { force: true });
    if (this.dir !== undefined) await rm(this.dir, { recursive: true, force: true });
  }

  private marker(): string {
    return join(this.host.markerDir, `${this.container!}.memory-in`);
  }
}
