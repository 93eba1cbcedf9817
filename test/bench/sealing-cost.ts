import { createHash, randomBytes } from 'node:crypto';
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { artifactPrefix, DEFAULT_CHUNK_MIB, MANIFEST_FORMAT, signManifest, verifyManifest } from '../../core/checkpoint-artifact.js';
import { ChunkOpener, ChunkSealer, generateSealingKeyPair, TAG_BYTES, type Sealing } from '../../core/checkpoint-sealing.js';
import { makeCommand } from '../../core/events.js';
import { generateSigningKeyPair } from '../../core/signed-envelope.js';
import { CommandSigner, CommandVerifier } from '../../core/command-signature.js';

/** The CPU cost of sealing, measured in memory so that neither disk nor network hides it. */
export interface SealingSample {
  bytes: number;
  chunkBytes: number;
  /** the same stream cut into the same chunks, passed through untouched */
  plainMs: number;
  /** cut, sealed at the source and opened at the destination, in one streaming pipeline */
  sealOpenMs: number;
  /** the time inside seal() and open() alone */
  sealMs: number;
  openMs: number;
  /** sealOpenMs / plainMs */
  ratio: number;
  /** Microseconds to sign, and to verify, one command (Ed25519, core/signed-envelope.ts); absent in older runs. */
  commandSignUs?: number;
  commandVerifyUs?: number;
  /** signing, then verifying, the manifest of this archive (one chunk ref per chunk) */
  manifestSignMs?: number;
  manifestVerifyMs?: number;
}

/** Mean microseconds per signed command, signing then verifying `n` of them. */
function measureCommandSigning(n = 2000): { commandSignUs: number; commandVerifyUs: number } {
  const key = generateSigningKeyPair();
  const signer = new CommandSigner(key, () => 600_000);
  const verifier = new CommandVerifier([key.publicKey]);
  const command = makeCommand('discard', '/bench', { migrationId: 'bench-signing', epoch: 1, approach: 'container', container: 'web' });
  let at = performance.now();
  const signed = Array.from({ length: n }, () => signer.sign(command, 'agent-1'));
  const commandSignUs = ((performance.now() - at) * 1000) / n;
  at = performance.now();
  for (const c of signed) verifier.verify(c, 'agent-1');
  const commandVerifyUs = ((performance.now() - at) * 1000) / n;
  return { commandSignUs: Math.round(commandSignUs), commandVerifyUs: Math.round(commandVerifyUs) };
}

/** The source signs the archive's manifest once, the destination verifies it once: timed for `chunks` refs. */
function measureManifestSigning(sealing: Sealing, bytes: number, chunkBytes: number): { manifestSignMs: number; manifestVerifyMs: number } {
  const migrationId = 'bench-signing';
  const prefix = artifactPrefix(migrationId);
  const stored = chunkBytes + TAG_BYTES;
  const count = Math.ceil(bytes / chunkBytes);
  const chunks = Array.from({ length: count }, (_, index) => ({
    index,
    offset: index * stored,
    sizeBytes: stored,
    sha256: createHash('sha256').update(String(index)).digest('hex'),
  }));
  const key = generateSigningKeyPair();
  const unsigned = {
    formatVersion: MANIFEST_FORMAT as typeof MANIFEST_FORMAT,
    migrationId,
    prefix,
    contentType: 'application/x-tar' as const,
    chunkBytes,
    sealing,
    chunks,
    sizeBytes: count * stored,
    sha256: 'a'.repeat(64),
    createdAt: new Date().toISOString(),
  };
  let at = performance.now();
  const manifest = signManifest(unsigned, { agentId: 'agent-1', key });
  const manifestSignMs = performance.now() - at;
  at = performance.now();
  verifyManifest(manifest, { agentId: 'agent-1', publicKey: key.publicKey, migrationId, prefix });
  const manifestVerifyMs = performance.now() - at;
  const round = (ms: number) => Math.round(ms * 100) / 100;
  return { manifestSignMs: round(manifestSignMs), manifestVerifyMs: round(manifestVerifyMs) };
}

/** `total` bytes as 1 MiB pieces of one random buffer: nothing held but that piece. */
function source(total: number): Readable {
  const piece = randomBytes(1024 * 1024);
  let left = total;
  return new Readable({
    read() {
      if (left <= 0) return void this.push(null);
      const n = Math.min(left, piece.length);
      left -= n;
      this.push(n === piece.length ? piece : piece.subarray(0, n));
    },
  });
}

/** Cuts into chunks as uploadChunked does (one buffer, copied into), handing each to `each`. */
function chunker(chunkBytes: number, each: (index: number, chunk: Buffer) => Buffer): Transform {
  const buffer = Buffer.allocUnsafe(chunkBytes);
  let filled = 0;
  let index = 0;
  return new Transform({
    transform(piece: Buffer, _encoding, callback) {
      let consumed = 0;
      while (consumed < piece.length) {
        const n = piece.copy(buffer, filled, consumed);
        filled += n;
        consumed += n;
        if (filled === chunkBytes) {
          this.push(each(index++, buffer));
          filled = 0;
        }
      }
      callback();
    },
    flush(callback) {
      if (filled > 0) this.push(each(index++, buffer.subarray(0, filled)));
      callback();
    },
  });
}

function sink(): Writable {
  return new Writable({ write: (_chunk, _encoding, callback) => callback() });
}

/**
 * Throughput of seal + open against a plain pass-through of the same stream, cut the same way, in one
 * run: memory stays at a few chunks (streaming, as the agents do), 1 GiB by default.
 */
export async function measureSealing(bytes = 1024 * 1024 * 1024, chunkBytes = DEFAULT_CHUNK_MIB * 1024 * 1024): Promise<SealingSample> {
  // Warm-up (JIT, allocator), untimed, so that the first measured pass is not the slow one.
  await pipeline(
    source(64 * chunkBytes > bytes ? bytes : 8 * chunkBytes),
    chunker(chunkBytes, (_index, chunk) => Buffer.from(chunk)),
    sink(),
  );
  const started = performance.now();
  await pipeline(
    source(bytes),
    chunker(chunkBytes, (_index, chunk) => Buffer.from(chunk)),
    sink(),
  );
  const plainMs = performance.now() - started;

  const migrationId = 'bench-sealing';
  const key = generateSealingKeyPair();
  const sealer = ChunkSealer.forRecipient(key.publicKey, migrationId);
  const opener = ChunkOpener.unwrap(sealer.sealing, key.privateKey, migrationId);
  let sealMs = 0;
  let openMs = 0;
  let index = 0;
  const sealStarted = performance.now();
  await pipeline(
    source(bytes),
    chunker(chunkBytes, (i, chunk) => {
      const at = performance.now();
      const sealed = sealer.seal(i, chunk);
      sealMs += performance.now() - at;
      return sealed;
    }),
    new Transform({
      transform(sealed: Buffer, _encoding, callback) {
        const at = performance.now();
        const plain = opener.open(index++, sealed);
        openMs += performance.now() - at;
        callback(null, plain);
      },
    }),
    sink(),
  );
  const sealOpenMs = performance.now() - sealStarted;
  const round = (ms: number) => Math.round(ms);
  return {
    bytes,
    chunkBytes,
    plainMs: round(plainMs),
    sealOpenMs: round(sealOpenMs),
    sealMs: round(sealMs),
    openMs: round(openMs),
    ratio: Math.round((sealOpenMs / plainMs) * 100) / 100,
    ...measureCommandSigning(),
    ...measureManifestSigning(sealer.sealing, bytes, chunkBytes),
  };
}

const mibps = (bytes: number, ms: number) => Math.round(bytes / 1024 / 1024 / (ms / 1000));

/** One paragraph for report.md and the console. */
export function sealingReport(sample: SealingSample): string {
  const gib = sample.bytes / 2 ** 30;
  return (
    `**Sealing** (AES-256-GCM per ${sample.chunkBytes / 2 ** 20} MiB chunk, core/checkpoint-sealing.ts), ${gib} GiB streamed in memory in this run: ` +
    `plain pass-through ${sample.plainMs} ms (${mibps(sample.bytes, sample.plainMs)} MiB/s), seal + open ${sample.sealOpenMs} ms ` +
    `(${mibps(sample.bytes, sample.sealOpenMs)} MiB/s; seal ${mibps(sample.bytes, sample.sealMs)} MiB/s, open ${mibps(sample.bytes, sample.openMs)} MiB/s): ` +
    `ratio ${sample.ratio}. Every migration above includes it (the source seals, the destination opens).` +
    (sample.commandSignUs === undefined
      ? ''
      : ` Signing a command (Ed25519) takes ${sample.commandSignUs} µs, verifying it ${sample.commandVerifyUs} µs: a handful per migration.`) +
    (sample.manifestSignMs === undefined
      ? ''
      : ` The manifest of this archive (${Math.ceil(sample.bytes / sample.chunkBytes)} chunks) is signed in ${sample.manifestSignMs} ms and verified in ${sample.manifestVerifyMs} ms, once per migration.`)
  );
}
