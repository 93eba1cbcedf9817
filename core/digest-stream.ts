import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/**
 * A pass-through that measures what flows through it: byte count and sha256, computed on the way so an
 * archive is never read twice. `onProgress` fires at most every `progressIntervalMs`.
 */
export class DigestStream extends Transform {
  private readonly hash: Hash = createHash('sha256');
  private lastProgress = 0;
  bytes = 0;
  firstByteAt: Date | undefined;

  constructor(
    private readonly onProgress?: (bytes: number) => void,
    private readonly progressIntervalMs = 500,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.firstByteAt ??= new Date();
    this.hash.update(chunk);
    this.bytes += chunk.length;
    const now = Date.now();
    if (this.onProgress && now - this.lastProgress >= this.progressIntervalMs) {
      this.lastProgress = now;
      this.onProgress(this.bytes);
    }
    callback(null, chunk);
  }

  /** The hex sha256 of everything that passed; call once the stream has ended. */
  digest(): string {
    return this.hash.copy().digest('hex');
  }
}
