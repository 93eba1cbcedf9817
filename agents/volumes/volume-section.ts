import { z } from 'zod';

/**
 * The volume section: what a container-level checkpoint stream carries before Podman's export when the
 * container's volumes move outside the freeze (agents/volumes/volume-move.ts). Podman's archive cannot
 * hold them (it is made only once the container is frozen), so the stream is
 *
 *   MAGIC, then records: a `volume` (its spec) followed by `tree` records (its files as GNU tar writes a
 *   level-0 incremental dump, read while the service runs), for each volume; then, from the freeze on,
 *   a `delta` (its name) followed by `tree` records (the level-1 dump: what changed since, deletions
 *   included) for each volume; then `end`; then Podman's export itself, unchanged.
 *
 * A record is its kind (one byte), its payload's length (uint32, big-endian) and the payload. A stream
 * without the section starts with Podman's export (a tar, whose first bytes are a file name), never with
 * MAGIC. The parser checks the order above and every bound, so a malformed section is refused with the
 * reason before any of it is written anywhere.
 */

export const MAGIC = Buffer.from('UMS-VOLUMES/1\n');
/** A tree record's payload at most: keeps the parser's buffering bounded. */
export const MAX_TREE_RECORD_BYTES = 1024 * 1024;
const MAX_SPEC_BYTES = 64 * 1024;
const HEADER_BYTES = 5;
/** Podman's volume names (libpod's NameRegex). */
const VOLUME_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

const Kind = { volume: 0x76, delta: 0x64, tree: 0x74, end: 0x65 } as const;

export const SectionVolume = z.object({
  name: z.string().max(255).regex(VOLUME_NAME),
  driver: z.literal('local'),
  labels: z.record(z.string().max(1024), z.string().max(4096)),
  options: z.record(z.string(), z.string()).refine((o) => Object.keys(o).length === 0, 'a volume with driver options is not copied'),
  destination: z.string().min(1).max(4096),
});
export type SectionVolume = z.infer<typeof SectionVolume>;
const SectionDelta = z.object({ name: z.string().max(255).regex(VOLUME_NAME) });

export class VolumeSectionError extends Error {
  constructor(message: string) {
    super(`malformed volume section: ${message}`);
    this.name = 'VolumeSectionError';
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
export const endRecord = (): Buffer => record(Kind.end, Buffer.alloc(0));

/** A tree's bytes as records, each at most MAX_TREE_RECORD_BYTES. */
export async function* treeRecords(tree: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  for await (const bytes of tree) {
    for (let at = 0; at < bytes.length; at += MAX_TREE_RECORD_BYTES) {
      const piece = bytes.subarray(at, at + MAX_TREE_RECORD_BYTES);
      const header = Buffer.alloc(HEADER_BYTES);
      header[0] = Kind.tree;
      header.writeUInt32BE(piece.length, 1);
      yield header;
      yield piece;
    }
  }
}

// The reader's side.

export type SectionEvent =
  /** A volume's base tree starts (the one before ends). */
  | { kind: 'volume'; volume: SectionVolume }
  /** A volume's delta tree starts (the one before ends). */
  | { kind: 'delta'; name: string }
  /** Bytes of the current tree. */
  | { kind: 'tree'; bytes: Buffer }
  /** The section ended (the current tree with it); what follows is the export. */
  | { kind: 'end' }
  /** Bytes of Podman's export (the whole stream, when it has no section). */
  | { kind: 'export'; bytes: Buffer };

/**
 * Reads a checkpoint stream as it arrives (fed in pieces of any size): the section's events, then the
 * export's bytes. It holds at most one record header and one spec record; tree bytes pass through.
 */
export class VolumeSectionParser {
  private pending: Buffer = Buffer.alloc(0);
  private state: 'start' | 'records' | 'export' = 'start';
  /** Payload bytes of the current tree record still to pass through. */
  private treeLeft = 0;
  private readonly volumes = new Set<string>();
  private readonly deltas = new Set<string>();
  private current: 'none' | 'base' | 'delta' = 'none';

  /** Whether the stream has a volume section (known once its first MAGIC.length bytes arrived). */
  private sectionSeen = false;
  get hasSection(): boolean {
    return this.sectionSeen;
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
        events.push({ kind: 'tree', bytes });
        continue;
      }
      if (this.pending.length < HEADER_BYTES) break;
      const kind = this.pending[0];
      const length = this.pending.readUInt32BE(1);
      if (kind === Kind.tree) {
        if (this.current === 'none') throw new VolumeSectionError('tree bytes before any volume');
        if (length > MAX_TREE_RECORD_BYTES)
          throw new VolumeSectionError(`a tree record of ${length} bytes (at most ${MAX_TREE_RECORD_BYTES})`);
        this.treeLeft = length;
        this.pending = this.pending.subarray(HEADER_BYTES);
        continue;
      }
      if (kind === Kind.end) {
        if (length !== 0) throw new VolumeSectionError('the end record has a payload');
        const missing = [...this.volumes].filter((name) => !this.deltas.has(name));
        if (missing.length > 0) throw new VolumeSectionError(`it ends without the changes made while frozen to ${missing.join(', ')}`);
        events.push({ kind: 'end' });
        const rest = this.pending.subarray(HEADER_BYTES);
        this.pending = Buffer.alloc(0);
        return this.toExport(rest, events);
      }
      if (kind !== Kind.volume && kind !== Kind.delta) throw new VolumeSectionError(`unknown record kind 0x${(kind ?? 0).toString(16)}`);
      if (length > MAX_SPEC_BYTES) throw new VolumeSectionError(`a volume record of ${length} bytes`);
      if (this.pending.length < HEADER_BYTES + length) break;
      const payload = this.pending.subarray(HEADER_BYTES, HEADER_BYTES + length);
      this.pending = this.pending.subarray(HEADER_BYTES + length);
      events.push(kind === Kind.volume ? this.volume(payload) : this.delta(payload));
    }
    return events;
  }

  /** Throws unless the section (if any) ended: a stream cut inside it is not a checkpoint. */
  end(): void {
    if (this.state === 'records') throw new VolumeSectionError('the stream ended inside the volume section');
    if (this.state === 'start' && this.pending.length > 0) throw new VolumeSectionError('the stream ended after a partial header');
  }

  private volume(payload: Buffer): SectionEvent {
    if (this.current === 'delta') throw new VolumeSectionError('a volume announced after the freeze');
    const parsed = SectionVolume.safeParse(parseJson(payload));
    if (!parsed.success) throw new VolumeSectionError(`a volume record: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
    if (this.volumes.has(parsed.data.name)) throw new VolumeSectionError(`volume "${parsed.data.name}" announced twice`);
    this.volumes.add(parsed.data.name);
    this.current = 'base';
    return { kind: 'volume', volume: parsed.data };
  }

  private delta(payload: Buffer): SectionEvent {
    const parsed = SectionDelta.safeParse(parseJson(payload));
    if (!parsed.success) throw new VolumeSectionError(`a delta record: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
    const { name } = parsed.data;
    if (!this.volumes.has(name)) throw new VolumeSectionError(`changes to volume "${name}", which was never announced`);
    if (this.deltas.has(name)) throw new VolumeSectionError(`changes to volume "${name}" sent twice`);
    this.deltas.add(name);
    this.current = 'delta';
    return { kind: 'delta', name };
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
