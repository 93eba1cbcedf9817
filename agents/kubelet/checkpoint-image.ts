import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { checkTarStart, fileBody, padding, tarHeader, TarStartCheck } from './ustar.js';

/**
 * The checkpoint image: the kubelet's archive wrapped as the OCI image CRI-O restores from (one layer = the
 * archive's contents, manifest annotation io.kubernetes.cri-o.annotations.checkpoint.name = the container's
 * name), streamed; the destination loads it into CRI-O's storage (`podman load`, which shares
 * /var/lib/containers/storage with CRI-O) or it is pushed to a registry (`skopeo copy oci-archive:...`).
 *
 * NOT USED IN PRODUCTION YET: the orchestrator-level driver (agents/orchestrator-level.ts) speaks the CRI to
 * the node's runtime; this is for a node where only the kubelet's API is reachable, and is exercised only by
 * test/integration/kubelet-checkpoint.test.ts.
 */

/** CRI-O restores instead of starting when the image's manifest carries this annotation (value: container name). */
export const CRIO_CHECKPOINT_ANNOTATION = 'io.kubernetes.cri-o.annotations.checkpoint.name';

export interface CheckpointImageOptions {
  /** The kubelet's archive: a path, or a stream of it (then sizeBytes and sha256 are required). */
  archive: string | Readable;
  /** The archive's size; read from the file when a path is given. */
  sizeBytes?: number;
  /** The archive's sha256 (hex). With a path and without it, the file is read twice (hash, then stream). */
  sha256?: string;
  /** The checkpointed container's name: the annotation's value. */
  containerName: string;
  /** Reference name the image gets when loaded, e.g. localhost/ums/checkpoint-web:<migrationId>. */
  imageName?: string;
  /** More manifest annotations, e.g. io.kubernetes.cri-o.annotations.checkpoint.rootfsImageName. */
  annotations?: Record<string, string>;
  /** Default: now. */
  created?: Date;
  /** Default: this machine's (amd64, arm64, ...). Must match the nodes': CRIU restores only there. */
  architecture?: string;
}

export interface CheckpointImageArchive {
  /** An OCI image layout as a tar (what `podman load`, `skopeo copy oci-archive:` read). */
  stream: Readable;
  /** sha256:<hex> of the image manifest: the image's digest. */
  manifestDigest: string;
  /** sha256:<hex> of the image config: the image id once loaded. */
  configDigest: string;
  layerDigest: string;
  annotations: Record<string, string>;
}

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const OCI_LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';

/**
 * Builds the checkpoint image as an OCI image layout tar, the same image `buildah from scratch; buildah add
 * $c <archive> /; buildah config --annotation=io.kubernetes.cri-o.annotations.checkpoint.name=<ctr> $c;
 * buildah commit $c` produces, without buildah or storage: one uncompressed layer whose contents are the
 * archive's entries (an uncompressed tar is a valid layer as it stands, so the archive IS the layer blob), a
 * config naming it, and a manifest with the annotation (CRI-O reads the manifest's annotations; the index
 * entry carries them too, which is where containerd looks).
 *
 * Streamed: the archive passes through once (twice when its digest must be computed first), never held in
 * memory. Its sha256 and size are checked as it passes; a mismatch errors the stream (nothing valid comes
 * out). Refuses a gzip-compressed archive (Podman's default export): CRI-O's archives are plain tar.
 */
export async function buildCheckpointImageArchive(options: CheckpointImageOptions): Promise<CheckpointImageArchive> {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(options.containerName))
    throw new Error(`invalid container name for the checkpoint annotation: "${options.containerName}"`);
  let sizeBytes = options.sizeBytes;
  let sha256 = options.sha256?.toLowerCase();
  if (sha256 !== undefined && !/^[a-f0-9]{64}$/.test(sha256)) throw new Error('sha256 must be 64 hex digits');
  if (typeof options.archive === 'string') {
    const path = options.archive;
    const info = await lstat(path);
    if (!info.isFile()) throw new Error(`checkpoint archive ${path} is not a regular file`);
    if (sizeBytes !== undefined && sizeBytes !== info.size)
      throw new Error(`checkpoint archive ${path} has ${info.size} bytes, not the ${sizeBytes} announced`);
    sizeBytes = info.size;
    await checkTarStart(path);
    sha256 ??= await sha256OfFile(path);
  } else if (sizeBytes === undefined || sha256 === undefined) {
    throw new Error(
      'a streamed checkpoint archive needs its sizeBytes and sha256 up front (the image names its layer by digest before the layer)',
    );
  }

  const created = (options.created ?? new Date()).toISOString();
  const layerDigest = `sha256:${sha256}`;
  const annotations: Record<string, string> = { ...options.annotations, [CRIO_CHECKPOINT_ANNOTATION]: options.containerName };
  const config = jsonBlob({
    created,
    architecture: options.architecture ?? ociArchitecture(process.arch),
    os: 'linux',
    config: {},
    rootfs: { type: 'layers', diff_ids: [layerDigest] },
    history: [{ created, created_by: `ums: kubelet checkpoint of container ${options.containerName}` }],
  });
  const manifest = jsonBlob({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: config.digest, size: config.bytes.length },
    layers: [{ mediaType: OCI_LAYER_TAR, digest: layerDigest, size: sizeBytes }],
    annotations,
  });
  const index = jsonBlob({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [
      {
        mediaType: OCI_MANIFEST,
        digest: manifest.digest,
        size: manifest.bytes.length,
        annotations: {
          ...annotations,
          ...(options.imageName !== undefined ? { 'org.opencontainers.image.ref.name': options.imageName } : {}),
        },
      },
    ],
  });

  const mtime = Math.floor(Date.parse(created) / 1000);
  const archive = options.archive;
  const expectedSize = sizeBytes;
  const expectedSha = sha256;
  async function* entries(): AsyncGenerator<Buffer> {
    const layout = Buffer.from('{"imageLayoutVersion":"1.0.0"}');
    yield tarHeader('oci-layout', layout.length, 'file', mtime);
    yield* fileBody(layout);
    yield tarHeader('blobs/', 0, 'directory', mtime);
    yield tarHeader('blobs/sha256/', 0, 'directory', mtime);
    yield tarHeader(`blobs/sha256/${expectedSha}`, expectedSize, 'file', mtime);
    const source = typeof archive === 'string' ? createReadStream(archive, { highWaterMark: 1024 * 1024 }) : archive;
    const hash = createHash('sha256');
    const check = new TarStartCheck();
    let seen = 0;
    for await (const chunk of source as AsyncIterable<Buffer>) {
      check.feed(chunk);
      seen += chunk.length;
      if (seen > expectedSize) throw new Error(`checkpoint archive is longer than the ${expectedSize} bytes announced`);
      hash.update(chunk);
      yield chunk;
    }
    check.end();
    if (seen !== expectedSize) throw new Error(`checkpoint archive ended after ${seen} of ${expectedSize} bytes`);
    const actual = hash.digest('hex');
    if (actual !== expectedSha) throw new Error(`checkpoint archive changed or is corrupt: sha256 ${actual}, expected ${expectedSha}`);
    yield padding(expectedSize);
    for (const blob of [config, manifest]) {
      yield tarHeader(`blobs/sha256/${blob.digest.slice('sha256:'.length)}`, blob.bytes.length, 'file', mtime);
      yield* fileBody(blob.bytes);
    }
    yield tarHeader('index.json', index.bytes.length, 'file', mtime);
    yield* fileBody(index.bytes);
    yield Buffer.alloc(1024); // end of archive: two zero blocks
  }
  return {
    stream: Readable.from(entries(), { objectMode: false }),
    manifestDigest: manifest.digest,
    configDigest: config.digest,
    layerDigest,
    annotations,
  };
}

function jsonBlob(value: unknown): { bytes: Buffer; digest: string } {
  const bytes = Buffer.from(JSON.stringify(value));
  return { bytes, digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}` };
}

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function ociArchitecture(arch: string): string {
  switch (arch) {
    case 'x64':
      return 'amd64';
    case 'ia32':
      return '386';
    case 'ppc64':
      return 'ppc64le'; // Node calls Linux's little-endian POWER ppc64
    default:
      return arch; // arm64, arm, s390x, riscv64 are OCI's names too
  }
}
