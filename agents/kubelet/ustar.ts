import { open } from 'node:fs/promises';

/**
 * A minimal POSIX ustar writer (headers, padding) and a check that an archive is a plain tar, for the
 * checkpoint image (checkpoint-image.ts). Hand-written because no tar library is a dependency of UMS (Node
 * has none built in); if one is added (tar-stream is the small, well-kept choice: it packs entries from
 * streams), this file should go.
 *
 * NOT USED IN PRODUCTION YET: the orchestrator-level driver (agents/orchestrator-level.ts) speaks the CRI to
 * the node's runtime; this is for a node where only the kubelet's API is reachable, and is exercised only by
 * test/integration/kubelet-checkpoint.test.ts.
 */

export function* fileBody(bytes: Buffer): Generator<Buffer> {
  yield bytes;
  const pad = padding(bytes.length);
  if (pad.length > 0) yield pad;
}

export function padding(size: number): Buffer {
  const rest = size % 512;
  return Buffer.alloc(rest === 0 ? 0 : 512 - rest);
}

/** One POSIX ustar header. Sizes past 8 GiB - 1 use the base-256 form GNU tar and Go's archive/tar read. */
export function tarHeader(name: string, size: number, type: 'file' | 'directory', mtime: number): Buffer {
  const header = Buffer.alloc(512);
  const bytes = Buffer.from(name, 'utf8');
  if (bytes.length > 100) throw new Error(`tar entry name too long: ${name}`);
  bytes.copy(header, 0);
  const isDir = type === 'directory';
  const length = size;
  writeOctal(header, 100, 8, isDir ? 0o755 : 0o644);
  writeOctal(header, 108, 8, 0);
  writeOctal(header, 116, 8, 0);
  if (length < 0o77777777777) {
    writeOctal(header, 124, 12, length);
  } else {
    header[124] = 0x80;
    let rest = BigInt(length);
    for (let i = 135; i > 124; i--) {
      header[i] = Number(rest & 0xffn);
      rest >>= 8n;
    }
  }
  writeOctal(header, 136, 12, mtime);
  header.fill(0x20, 148, 156);
  header[156] = isDir ? 0x35 : 0x30;
  header.write('ustar\u000000', 257, 'latin1');
  header.write('root', 265, 'latin1');
  header.write('root', 297, 'latin1');
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 'latin1');
  return header;
}

function writeOctal(header: Buffer, offset: number, length: number, value: number): void {
  header.write(`${value.toString(8).padStart(length - 1, '0')}\u0000`, offset, 'latin1');
}

/** Refuses what is not a plain tar as it passes (gzip is the usual mistake: Podman exports gzip by default). */
export class TarStartCheck {
  private head: Buffer = Buffer.alloc(0);
  private done = false;

  feed(chunk: Buffer): void {
    if (this.done) return;
    this.head = Buffer.concat([this.head, chunk.subarray(0, 512 - this.head.length)]);
    if (this.head.length >= 2 && this.head[0] === 0x1f && this.head[1] === 0x8b) {
      throw new Error('checkpoint archive is gzip-compressed; CRI-O restores from a plain tar layer: decompress it first');
    }
    if (this.head.length >= 512) {
      this.done = true;
      if (this.head.toString('latin1', 257, 262) !== 'ustar')
        throw new Error('checkpoint archive is not a tar (no ustar magic in its first header)');
    }
  }

  end(): void {
    if (!this.done) throw new Error('checkpoint archive is shorter than one tar header');
  }
}

export async function checkTarStart(path: string): Promise<void> {
  const file = await open(path, 'r');
  try {
    const head = Buffer.alloc(512);
    const { bytesRead } = await file.read(head, 0, 512, 0);
    const check = new TarStartCheck();
    check.feed(head.subarray(0, bytesRead));
    check.end();
  } finally {
    await file.close();
  }
}
