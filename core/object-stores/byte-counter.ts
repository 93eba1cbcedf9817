import { Transform, pipeline, type Readable } from 'node:stream';

/**
 * Passes a body through unchanged while counting its bytes, so a store can report the size it wrote without
 * trusting a caller's Content-Length. Errors of the source reach the SDK reading the counter, and a failed
 * upload that destroys the counter destroys the source too.
 */
export class ByteCounter extends Transform {
  bytes = 0;
  /**
   * What broke the source, if it broke. SDKs can report a later, secondary failure instead (lib-storage
   * throws the error of its AbortMultipartUpload clean-up when that fails too), so stores rethrow this.
   */
  sourceError: Error | undefined;

  static wrap(source: Readable): ByteCounter {
    const counter = new ByteCounter();
    source.once('error', (error) => {
      counter.sourceError = error;
    });
    pipeline(source, counter, () => {
      // Errors surface through the counter, which the upload is reading.
    });
    return counter;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null, data?: Buffer) => void): void {
    this.bytes += chunk.length;
    callback(null, chunk);
  }
}

/** The body's own error, keeping the SDK's report of the failed upload as its cause. */
export function withCause(sourceError: Error, uploadError: unknown): Error {
  if (sourceError !== uploadError && sourceError.cause === undefined) sourceError.cause = uploadError;
  return sourceError;
}
