import { createWriteStream } from 'node:fs';
import { mkdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { finished } from 'node:stream/promises';
import { DigestStream } from '../core/digest-stream.js';
import type { CommandData, FailureCode } from '../core/events.js';
import { DownloadSizeMismatchError, downloadSignedUrl, SignedUrlRejectedError } from '../core/object-stores/signed-url-download.js';
import type { ContainerEngine } from './container-engine.js';

/** A restore refused for a reason the operator can act on; `code` goes into the restore.failed event. */
export class RestoreRefusedError extends Error {
  constructor(
    readonly code: FailureCode,
    message: string,
  ) {
    super(message);
    this.name = 'RestoreRefusedError';
  }
}

export interface RestoredFromArchive {
  containerId: string;
  downloadedAt: Date;
  restoredAt: Date;
}

/** Room left beyond the archive itself, for the engine's own unpacking. */
const DISK_HEADROOM = 1.1;

/**
 * Fetches the archive through the signed URL (no credentials for the source's cloud needed), checks
 * its size and sha256 on the way, and only then hands it to the engine. Every check that can fail
 * runs before the engine is touched, so a refused restore leaves nothing behind on this host.
 */
export async function restoreFromSignedUrl(
  engine: ContainerEngine,
  command: CommandData<'restore'>,
  workDir: string,
  onProgress: (bytes: number) => void,
): Promise<RestoredFromArchive> {
  const { migrationId, container, image, imageId, artifact } = command;

  const existing = await engine.inspectContainer(container);
  if (existing) {
    throw new RestoreRefusedError('invalid-request', `a container named "${container}" already exists here (${existing.state}); remove or rename it, then migrate again`);
  }
  if (!(await engine.imageExists(imageId))) {
    throw new RestoreRefusedError(
      'image-missing',
      `image "${image}" (id ${imageId.slice(0, 12)}) is not present on this host; load that image here first (the checkpoint carries the container's changes, not its base image)`,
    );
  }
  if (Date.parse(artifact.expiresAt) <= Date.now()) {
    throw new RestoreRefusedError('url-rejected', `the signed URL for the checkpoint expired at ${artifact.expiresAt}, before the restore began; migrate again`);
  }
  await mkdir(workDir, { recursive: true, mode: 0o700 });
  const disk = await statfs(workDir);
  const free = disk.bavail * disk.bsize;
  if (free < artifact.sizeBytes * DISK_HEADROOM) {
    throw new RestoreRefusedError('download-failed', `not enough disk in ${workDir}: ${free} bytes free, the checkpoint needs ${artifact.sizeBytes}`);
  }

  const archivePath = join(workDir, `${migrationId}.tar`);
  try {
    const digest = new DigestStream(onProgress);
    const file = createWriteStream(archivePath, { mode: 0o600 });
    digest.pipe(file);
    try {
      await downloadSignedUrl(artifact.signedUrl, digest, { expectedSize: artifact.sizeBytes });
    } catch (error) {
      digest.destroy();
      if (error instanceof SignedUrlRejectedError) throw new RestoreRefusedError('url-rejected', error.message);
      if (error instanceof DownloadSizeMismatchError) throw new RestoreRefusedError('size-mismatch', `${error.message}: the archive was truncated or replaced in the store`);
      throw new RestoreRefusedError('download-failed', `downloading the checkpoint failed: ${(error as Error).message}`);
    }
    digest.end();
    await finished(file);
    if (digest.bytes !== artifact.sizeBytes) {
      throw new RestoreRefusedError('size-mismatch', `the checkpoint archive has ${digest.bytes} bytes, the source announced ${artifact.sizeBytes}: it was truncated or replaced in the store`);
    }
    const sha256 = digest.digest();
    if (sha256 !== artifact.sha256) {
      throw new RestoreRefusedError('digest-mismatch', `the checkpoint archive's sha256 is ${sha256}, the source announced ${artifact.sha256}: it was corrupted or replaced in the store`);
    }
    const downloadedAt = new Date();
    try {
      const restored = await engine.restoreFromArchive(container, archivePath);
      return { containerId: restored.id, downloadedAt, restoredAt: new Date() };
    } catch (error) {
      // Leave no half-restored container behind (the name was free when we started).
      await engine.removeContainer(container, { force: true }).catch(() => undefined);
      throw new RestoreRefusedError('engine-failed', `the container engine could not restore the checkpoint: ${error instanceof Error ? error.message : String(error)}`);
    }
  } finally {
    await rm(archivePath, { force: true });
  }
}
