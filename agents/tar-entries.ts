import { posix } from 'node:path';

/**
 * A minimal, bounded reader of a tar stream as it passes (fed in pieces, never holding more than one
 * header block, one PAX header and the wanted entries' bodies): it lists every entry's name and type, and
 * collects the bodies of the few regular entries asked for. Written for the checkpoint archive policy
 * (agents/archive-policy.ts), which needs config.dump and spec.dump; UMS has no tar library (see
 * agents/kubelet/ustar.ts). It follows what Go's archive/tar (which Podman untars with) honours: ustar
 * prefix + name, PAX `path` and `size` records, GNU long names, base-256 sizes, and the end of the archive
 * at two zero blocks. A header whose checksum is wrong (a compressed or foreign stream) is an error.
 */

export class TarFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TarFormatError';
  }
}

export interface TarEntry {
  /** Normalised as Podman's untar resolves it: no leading "./" or "/", no "..". */
  name: string;
  /** The typeflag: '0' regular file, '5' directory, '1' hard link, '2' symlink, ... */
  type: string;
  size: number;
}

const BLOCK = 512;
const MAX_PAX_BYTES = 64 * 1024;

/**
 * A filter over the stream: every byte goes to `emit` except those of the entries `drop` names (their
 * extended headers included), so what comes out is the same archive without them.
 */
export interface TarPassThrough {
  drop(name: string): boolean;
  emit(bytes: Buffer): void;
}

/** Where the bytes being read go, with a pass-through: out, held until the entry's name is known, or nowhere. */
type Route = 'emit' | 'hold' | 'drop';

export class TarEntryReader {
  readonly entries: TarEntry[] = [];
  /** The bodies of the wanted entries, by name (the last one when a name repeats; `entries` shows repeats). */
  readonly bodies = new Map<string, Buffer>();
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** What the reader waits for next, and how many bytes of it. */
  private state:
    { kind: 'header' } | { kind: 'body'; left: number; pad: number; into?: Buffer[]; keep?: string; pax?: 'x' | 'L'; route?: Route } = {
    kind: 'header',
  };
  /** Extended headers read before the entry they name (pass-through only). */
  private held: Buffer[] = [];
  private next: { path?: string; size?: number } = {};
  private zeroBlocks = 0;
  private ended = false;
  private offset = 0;

  constructor(
    private readonly wanted: ReadonlySet<string>,
    private readonly maxBodyBytes: number,
    private readonly passThrough?: TarPassThrough,
  ) {}

  /** Whether the end-of-archive marker (two zero blocks) was read; bytes after it are ignored, as Go does. */
  get complete(): boolean {
    return this.ended;
  }

  write(data: Buffer): void {
    if (this.ended) {
      this.passThrough?.emit(data);
      return;
    }
    this.pending.push(data);
    this.pendingBytes += data.length;
    for (;;) {
      const state = this.state;
      if (state.kind === 'header') {
        const block = this.take(BLOCK);
        if (!block) return;
        this.header(block);
        if (this.ended) {
          // What follows the end (a writer's padding to its record size) passes as it is.
          for (const rest of this.pending.splice(0)) this.passThrough?.emit(rest);
          this.pendingBytes = 0;
          return;
        }
        continue;
      }
      if (state.left > 0) {
        const part = this.take(Math.min(state.left, this.pendingBytes), true);
        if (!part) return;
        state.left -= part.length;
        state.into?.push(part);
        this.route(part, state.route);
        if (state.left > 0) return;
      }
      if (state.pad > 0) {
        const pad = this.take(Math.min(state.pad, this.pendingBytes), true);
        if (!pad) return;
        state.pad -= pad.length;
        this.route(pad, state.route);
        if (state.pad > 0) return;
      }
      this.endBody(state);
      this.state = { kind: 'header' };
    }
  }

  /** The stream ended: it must end between entries. */
  end(): void {
    if (this.ended) return;
    if (this.state.kind === 'body' || this.pendingBytes > 0) {
      throw new TarFormatError(`the archive is truncated at byte ${this.offset + this.pendingBytes} (inside an entry)`);
    }
  }

  private header(block: Buffer): void {
    const at = this.offset - BLOCK;
    if (block.every((b) => b === 0)) {
      this.route(block, 'emit');
      this.zeroBlocks += 1;
      if (this.zeroBlocks === 2) this.ended = true;
      return;
    }
    if (this.zeroBlocks > 0) throw new TarFormatError(`a header follows a zero block at byte ${at}`);
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
    const recorded = parseOctal(block.subarray(148, 156));
    if (recorded !== sum) throw new TarFormatError(`not a plain tar: bad header checksum at byte ${at} (compressed, or not an archive)`);
    const type = String.fromCharCode(block[156] === 0 ? 0x30 : block[156]!);
    const ustarSize = parseSize(block.subarray(124, 136), at);
    const pad = (BLOCK - (ustarSize % BLOCK)) % BLOCK;
    const size = ustarSize;
    if (type === 'x' || type === 'L') {
      if (size > MAX_PAX_BYTES) throw new TarFormatError(`an extended header of ${size} bytes at byte ${at}`);
      this.route(block, 'hold');
      this.state = { kind: 'body', left: size, pad, into: [], pax: type, route: 'hold' };
      return;
    }
    if (type === 'K' && size > MAX_PAX_BYTES) throw new TarFormatError(`a long link name of ${size} bytes at byte ${at}`);
    if (type === 'g' || type === 'K') {
      // Global PAX headers and GNU long link names change no entry name this reader needs. A long link
      // name belongs to the next entry (held with it); a global header to every later one (passed on).
      const route = type === 'K' ? 'hold' : 'emit';
      this.route(block, route);
      this.state = { kind: 'body', left: size, pad, route };
      return;
    }
    const magic = block.subarray(257, 263).toString('latin1');
    const prefix = magic === 'ustar\u0000' ? cString(block.subarray(345, 500)) : '';
    const raw = this.next.path ?? (prefix !== '' ? `${prefix}/${cString(block.subarray(0, 100))}` : cString(block.subarray(0, 100)));
    const paxSize = this.next.size;
    this.next = {};
    const name = normalise(raw);
    // Hard links, symlinks, devices, directories and fifos have no body in the archive (as Go reads it).
    const body = '123456'.includes(type) ? 0 : (paxSize ?? ustarSize);
    this.entries.push({ name, type, size: body });
    const route: Route = this.passThrough?.drop(name) === true ? 'drop' : 'emit';
    const held = this.held;
    this.held = [];
    if (route === 'emit') for (const bytes of [...held, block]) this.route(bytes, 'emit');
    const keep = type === '0' && this.wanted.has(name) ? name : undefined;
    if (keep !== undefined && body > this.maxBodyBytes)
      throw new TarFormatError(`${name} is ${body} bytes (at most ${this.maxBodyBytes} read)`);
    const bodyPad = (BLOCK - (body % BLOCK)) % BLOCK;
    this.state =
      keep !== undefined
        ? { kind: 'body', left: body, pad: bodyPad, into: [], keep, route }
        : { kind: 'body', left: body, pad: bodyPad, route };
  }

  private route(bytes: Buffer, route: Route | undefined): void {
    if (this.passThrough === undefined || route === 'drop') return;
    if (route === 'hold') this.held.push(bytes);
    else this.passThrough.emit(bytes);
  }

  private endBody(state: { into?: Buffer[]; keep?: string; pax?: 'x' | 'L' }): void {
    if (state.into === undefined) return;
    const data = Buffer.concat(state.into);
    if (state.keep !== undefined) this.bodies.set(state.keep, data);
    else if (state.pax === 'L') this.next.path = cString(data);
    else if (state.pax === 'x') {
      for (const [key, value] of parsePax(data)) {
        if (key === 'path') this.next.path = value;
        if (key === 'size') {
          const size = Number(value);
          if (!Number.isSafeInteger(size) || size < 0) throw new TarFormatError(`a PAX size of "${value}"`);
          this.next.size = size;
        }
      }
    }
  }

  /** Takes exactly `n` bytes (or, with `partial`, up to `n`, at least one) from what was written. */
  private take(n: number, partial = false): Buffer | undefined {
    if (n === 0 || this.pendingBytes === 0 || (!partial && this.pendingBytes < n)) return undefined;
    const want = Math.min(n, this.pendingBytes);
    const first = this.pending[0]!;
    let out: Buffer;
    if (first.length >= want) {
      out = first.subarray(0, want);
      if (first.length === want) this.pending.shift();
      else this.pending[0] = first.subarray(want);
    } else {
      out = Buffer.allocUnsafe(want);
      let filled = 0;
      while (filled < want) {
        const head = this.pending[0]!;
        const n2 = Math.min(head.length, want - filled);
        head.copy(out, filled, 0, n2);
        filled += n2;
        if (n2 === head.length) this.pending.shift();
        else this.pending[0] = head.subarray(n2);
      }
    }
    this.pendingBytes -= want;
    this.offset += want;
    return out;
  }
}

function cString(bytes: Buffer): string {
  const nul = bytes.indexOf(0);
  return bytes.subarray(0, nul < 0 ? bytes.length : nul).toString('utf8');
}

function parseOctal(field: Buffer): number {
  const text = field
    .toString('latin1')
    .replace(/[\0 ]+$/g, '')
    .replace(/^[ ]+/, '');
  return text === '' ? 0 : /^[0-7]+$/.test(text) ? parseInt(text, 8) : Number.NaN;
}

function parseSize(field: Buffer, at: number): number {
  if ((field[0]! & 0x80) !== 0) {
    let value = 0n;
    for (let i = 1; i < field.length; i++) value = (value << 8n) | BigInt(field[i]!);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new TarFormatError(`an entry size too large at byte ${at}`);
    return Number(value);
  }
  const size = parseOctal(field);
  if (!Number.isSafeInteger(size)) throw new TarFormatError(`an unreadable entry size at byte ${at}`);
  return size;
}

/** PAX records: "<length> <key>=<value>\n". */
function parsePax(data: Buffer): Array<[string, string]> {
  const records: Array<[string, string]> = [];
  let at = 0;
  while (at < data.length) {
    const space = data.indexOf(0x20, at);
    const length = space < 0 ? Number.NaN : Number(data.subarray(at, space).toString('latin1'));
    if (!Number.isSafeInteger(length) || length <= 0 || at + length > data.length) throw new TarFormatError('a malformed PAX header');
    const record = data.subarray(space + 1, at + length - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq > 0) records.push([record.slice(0, eq), record.slice(eq + 1)]);
    at += length;
  }
  return records;
}

/** Where an untar puts the entry, relative to its target directory (Go's filepath.Clean of "/" + name). */
export function normalise(name: string): string {
  return posix.normalize(`/${name}`).replace(/^\/+/, '').replace(/\/+$/, '');
}
