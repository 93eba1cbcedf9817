import { z } from 'zod';

/**
 * The checkpoint section: what a container-level checkpoint stream carries before Podman's export, when
 * part of the container moves beside it. Podman's archive cannot hold the volumes' files read while the
 * service runs (it is made only once the container is frozen: agents/volumes/), and it holds the memory
 * only after spooling it whole (agents/memory/). The stream is
 *
 *   MAGIC, then records: a `volume` (its spec) followed by `tree` records (its files as GNU tar writes a
 *   level-0 incremental dump, read while the service runs), for each volume; then, from the freeze on, in
 *   any order: a `memory` record (a CRIU page image of the container, and the offset it continues at)
 *   followed by byte records of that image, and a `delta` (a volume's name) followed by byte records (the
 *   level-1 dump: what changed since, deletions included) for each volume; then `end`; then Podman's
 *   export itself, without what moved in the section.
 *
 * A record is its kind (one byte), its payload's length (uint32, big-endian) and the payload. A stream
 * without the section starts with Podman's export (a tar, whose first bytes are a file name), never with
 * MAGIC. The parser checks the order above and every bound (a page image arrives in order, from offset 0,
 * and all of them are of one container), so a malformed section is refused with the reason before any of
 * it is written anywhere.
 */

export const MAGIC = Buffer.from('UMS-CHECKPOINT/1\n');
/** A byte record's payload at most: keeps the parser's buffering bounded. */
export const MAX_TREE_RECORD_BYTES = 1024 * 1024;
const MAX_SPEC_BYTES = 64 * 1024;
const HEADER_BYTES = 5;
/** Podman's volume names (libpod's NameRegex). */
const VOLUME_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/** CRIU's page images (pages-<id>.img): the bulk of a dump, and the only images that move beside the export. */
export const PAGE_IMAGE = /^pages-[1-9][0-9]{0,8}\.img$/;
/** A container's page images at most (one per process, in practice). */
const MAX_PAGE_IMAGES = 4096;
/** A container id as Podman writes it. */
const CONTAINER_ID = /^[0-9a-f]{64}$/;

const Kind = { volume: 0x76, delta: 0x64, tree: 0x74, memory: 0x6d, end: 0x65 } as const;

export const SectionVolume = z.object({
  name: z.string().max(255).regex(VOLUME_NAME),
  driver: z.literal('local'),
  labels: z.record(z.string().max(1024), z.string().max(4096)),
  options: z.record(z.string(), z.string()).refine((o) => Object.keys(o).length === 0, 'a volume with driver options is not copied'),
  destination: z.string().min(1).max(4096),
});
export type SectionVolume = z.infer<typeof SectionVolume>;
const SectionDelta = z.object({ name: z.string().max(255).regex(VOLUME_NAME) });
export const SectionMemory = z.object({
  /** The source container's id: the shim at the destination finds the images by it (agents/post-copy/runc-shim). */
  container: z.string().regex(CONTAINER_ID),
  file: z.string().regex(PAGE_IMAGE),
  offset: z.number().int().nonnegative(),
});
export type SectionMemory = z.infer<typeof SectionMemory>;

export class CheckpointSectionError extends Error {
  constructor(message: string) {
    super(`malformed checkpoint section: ${message}`);
    this.name = 'CheckpointSectionError';
  }
}

// The writer's side.

function record(kind: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  header[0] = kind;
  header.writeUInt32BE(payload.length, 1);
  return Buffer.concat([header, payload]);
}

export const volumeRecord = (volume: SectionVolume): Buffer => record(Kind.volume, Buffer.from(JSON.stringify(volume)));
export const deltaRecord = (name: string): Buffer => record(Kind.delta, Buffer.from(JSON.stringify({ name })));
export const memoryRecord = (memory: SectionMemory): Buffer => record(Kind.memory, Buffer.from(JSON.stringify(memory)));
export const endRecord = (): Buffer => record(Kind.end, Buffer.alloc(0));

/** Bytes as byte records, each at most MAX_TREE_RECORD_BYTES. */
export function* byteRecords(bytes: Buffer): Generator<Buffer> {
  for (let at = 0; at < bytes.length; at += MAX_TREE_RECORD_BYTES) {
    const piece = bytes.subarray(at, at + MAX_TREE_RECORD_BYTES);
    const header = Buffer.alloc(HEADER_BYTES);
    header[0] = Kind.tree;
    header.writeUInt32BE(piece.length, 1);
    yield header;
    yield piece;
  }
}

/** A tree's bytes as records. */
export async function* treeRecords(tree: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  for await (const bytes of tree) yield* byteRecords(bytes);
}

// The reader's side.

export type SectionEvent =
  /** A volume's base tree starts (the one before ends). */
  | { kind: 'volume'; volume: SectionVolume }
  /** A volume's delta tree starts (the one before ends). */
  | { kind: 'delta'; name: string }
  /** Bytes of the current tree. */
  | { kind: 'tree'; bytes: Buffer }
  /** A page image of `container` continues at `offset` (the bytes before it arrived already). */
  | ({ kind: 'memory' } & SectionMemory)
  /** Bytes of the current page image. */
  | { kind: 'pages'; bytes: Buffer }
  /** The section ended (the current tree with it); what follows is the export. */
  | { kind: 'end' }
  /** Bytes of Podman's export (the whole stream, when it has no section). */
  | { kind: 'export'; bytes: Buffer };

/**
 * Reads a checkpoint stream as it arrives (fed in pieces of any size): the section's events, then the
 * export's bytes. It holds at most one record header and one spec record; tree bytes pass through.
 */
export class CheckpointSectionParser {
  private pending: Buffer = Buffer.alloc(0);
  private state: 'start' | 'records' | 'export' = 'start';
  /** Payload bytes of the current tree record still to pass through. */
  private treeLeft = 0;
  private readonly volumes = new Set<string>();
  private readonly deltas = new Set<string>();
  private current: 'none' | 'base' | 'delta' | 'memory' = 'none';
  /** Bytes of each page image so far, and whose images they are. */
  private readonly pageImages = new Map<string, number>();
  private memoryOf: string | undefined;
  private currentImage = '';

  /** Whether the stream has a section (known once its first MAGIC.length bytes arrived). */
  private sectionSeen = false;
  get hasSection(): boolean {
    return this.sectionSeen;
  }

  /** Whether volumes came in the section (so the export's own copies, if any, must not be restored). */
  get hasVolumes(): boolean {
    return this.volumes.size > 0;
  }

  write(data: Buffer): SectionEvent[] {
    const events: SectionEvent[] = [];
    if (this.state === 'export') {
      if (data.length > 0) events.push({ kind: 'export', bytes: data });
      return events;
    }
    this.pending = this.pending.length === 0 ? data : Buffer.concat([this.pending, data]);
    if (this.state === 'start') {
      const compared = Math.min(this.pending.length, MAGIC.length);
      if (!this.pending.subarray(0, compared).equals(MAGIC.subarray(0, compared))) return this.toExport(this.pending, events);
      if (this.pending.length < MAGIC.length) return events;
      this.pending = this.pending.subarray(MAGIC.length);
      this.state = 'records';
      this.sectionSeen = true;
    }
    while (this.state === 'records') {
      if (this.treeLeft > 0) {
        if (this.pending.length === 0) break;
        const bytes = this.pending.subarray(0, this.treeLeft);
        this.treeLeft -= bytes.length;
        this.pending = this.pending.subarray(bytes.length);
        if (this.current === 'memory') {
          this.pageImages.set(this.currentImage, (this.pageImages.get(this.currentImage) ?? 0) + bytes.length);
          events.push({ kind: 'pages', bytes });
        } else events.push({ kind: 'tree', bytes });
        continue;
      }
      if (this.pending.length < HEADER_BYTES) break;
      const kind = this.pending[0];
      const length = this.pending.readUInt32BE(1);
      if (kind === Kind.tree) {
        if (this.current === 'none') throw new CheckpointSectionError('bytes before any volume or page image');
        if (length > MAX_TREE_RECORD_BYTES)
          throw new CheckpointSectionError(`a tree record of ${length} bytes (at most ${MAX_TREE_RECORD_BYTES})`);
        this.treeLeft = length;
        this.pending = this.pending.subarray(HEADER_BYTES);
        continue;
      }
      if (kind === Kind.end) {
        if (length !== 0) throw new CheckpointSectionError('the end record has a payload');
        const missing = [...this.volumes].filter((name) => !this.deltas.has(name));
        if (missing.length > 0) throw new CheckpointSectionError(`it ends without the changes made while frozen to ${missing.join(', ')}`);
        events.push({ kind: 'end' });
        const rest = this.pending.subarray(HEADER_BYTES);
        this.pending = Buffer.alloc(0);
        return this.toExport(rest, events);
      }
      if (kind !== Kind.volume && kind !== Kind.delta && kind !== Kind.memory)
        throw new CheckpointSectionError(`unknown record kind 0x${(kind ?? 0).toString(16)}`);
      if (length > MAX_SPEC_BYTES) throw new CheckpointSectionError(`a record of ${length} bytes`);
      if (this.pending.length < HEADER_BYTES + length) break;
      const payload = this.pending.subarray(HEADER_BYTES, HEADER_BYTES + length);
      this.pending = this.pending.subarray(HEADER_BYTES + length);
      events.push(kind === Kind.volume ? this.volume(payload) : kind === Kind.delta ? this.delta(payload) : this.memory(payload));
    }
    return events;
  }

  /** Throws unless the section (if any) ended: a stream cut inside it is not a checkpoint. */
  end(): void {
    if (this.state === 'records') throw new CheckpointSectionError('the stream ended inside the section');
    if (this.state === 'start' && this.pending.length > 0) throw new CheckpointSectionError('the stream ended after a partial header');
  }

  private volume(payload: Buffer): SectionEvent {
    if (this.current === 'delta' || this.current === 'memory') throw new CheckpointSectionError('a volume announced after the freeze');
    const parsed = SectionVolume.safeParse(parseJson(payload));
    if (!parsed.success) throw new CheckpointSectionError(`a volume record: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
    if (this.volumes.has(parsed.data.name)) throw new CheckpointSectionError(`volume "${parsed.data.name}" announced twice`);
    this.volumes.add(parsed.data.name);
    this.current = 'base';
    return { kind: 'volume', volume: parsed.data };
  }

  private delta(payload: Buffer): SectionEvent {
    const parsed = SectionDelta.safeParse(parseJson(payload));
    if (!parsed.success) throw new CheckpointSectionError(`a delta record: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
    const { name } = parsed.data;
    if (!this.volumes.has(name)) throw new CheckpointSectionError(`changes to volume "${name}", which was never announced`);
    if (this.deltas.has(name)) throw new CheckpointSectionError(`changes to volume "${name}" sent twice`);
    this.deltas.add(name);
    this.current = 'delta';
    return { kind: 'delta', name };
  }

  private memory(payload: Buffer): SectionEvent {
    const parsed = SectionMemory.safeParse(parseJson(payload));
    if (!parsed.success) throw new CheckpointSectionError(`a memory record: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
    const { container, file, offset } = parsed.data;
    if (this.memoryOf !== undefined && this.memoryOf !== container)
      throw new CheckpointSectionError(`page images of two containers (${this.memoryOf.slice(0, 12)}, ${container.slice(0, 12)})`);
    const had = this.pageImages.get(file);
    if (had === undefined && this.pageImages.size >= MAX_PAGE_IMAGES)
      throw new CheckpointSectionError(`over ${MAX_PAGE_IMAGES} page images`);
    if (offset !== (had ?? 0)) throw new CheckpointSectionError(`${file} continues at ${offset}, but ${had ?? 0} bytes of it arrived`);
    this.memoryOf = container;
    this.pageImages.set(file, offset);
    this.currentImage = file;
    this.current = 'memory';
    return { kind: 'memory', container, file, offset };
  }

  private toExport(bytes: Buffer, events: SectionEvent[]): SectionEvent[] {
    this.state = 'export';
    this.pending = Buffer.alloc(0);
    if (bytes.length > 0) events.push({ kind: 'export', bytes });
    return events;
  }
}

function parseJson(payload: Buffer): unknown {
  try {
    return JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
}
