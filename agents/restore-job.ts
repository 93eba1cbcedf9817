import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, open, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { Manifest, type ChunkRef } from '../core/checkpoint-artifact.js';
import { DigestStream } from '../core/digest-stream.js';
import type { EventBus, Subscription } from '../core/event-bus.js';
import type { CommandData, EventData, EventName, FailureCode } from '../core/events.js';
import type { Logger } from '../core/log.js';
import { DownloadSizeMismatchError, downloadSignedUrl, SignedUrlNotFoundError, SignedUrlRejectedError } from '../core/object-stores/signed-url-download.js';
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

/** The source gave up (or the migration ended elsewhere): stop quietly, the saga already knows. */
export class RestoreAbandonedError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'RestoreAbandonedError';
  }
}

export interface RestoreJobOptions {
  command: CommandData<'prepare'>;
  engine: ContainerEngine;
  bus: EventBus;
  emit: <N extends EventName>(name: N, data: EventData<N>) => Promise<void>;
  agentId: string;
  workDir: string;
  log: Logger;
  /** Chunks downloading at once. */
  parallel: number;
  /** Ask for the next batch of URLs when fewer than this many signed chunks are left ahead. */
  urlLowWater: number;
  urlBatch: number;
  /** Give up when nothing arrives for this long. */
  idleTimeoutMs: number;
}

export interface RestoredArchive {
  containerId: string;
  downloadedAt: Date;
  restoredAt: Date;
}

/**
 * The destination's side of one migration. It checks what it can before the source freezes (name
 * free, image present), then fetches chunks as the source announces them, each through its signed URL
 * and verified against its sha256, into one file at the chunk's offset; once the source has uploaded
 * everything it checks the manifest against the digest the source announced, and only then hands the
 * archive to the engine. Nothing is restored from bytes that were not verified.
 */
export class RestoreJob {
  private readonly urls = new Map<number, string>();
  private manifestUrl: string | undefined;
  private readonly chunks = new Map<number, ChunkRef>();
  private readonly fetched = new Set<number>();
  private readonly fetching = new Set<number>();
  private uploaded: EventData<'checkpoint.uploaded'> | undefined;
  private manifest: Manifest | undefined;
  private manifestLoading = false;
  private urlsRequestedUpTo = 0;
  private bytes = 0;
  private lastProgressAt = 0;
  private lastActivity = Date.now();
  private settle!: { resolve: () => void; reject: (error: Error) => void };
  private readonly done = new Promise<void>((resolve, reject) => (this.settle = { resolve, reject }));
  private readonly archivePath: string;

  constructor(private readonly options: RestoreJobOptions) {
    this.archivePath = join(options.workDir, `${options.command.migrationId}.tar`);
    this.done.catch(() => undefined);
  }

  /** Signed URLs from a chunk-urls command (may arrive before or while the job runs). */
  addUrls(urls: CommandData<'chunk-urls'>): void {
    if (urls.manifestUrl) this.manifestUrl = urls.manifestUrl;
    for (const chunk of urls.chunks) this.urls.set(chunk.index, chunk.url);
    this.urlsRequestedUpTo = Math.max(this.urlsRequestedUpTo, ...urls.chunks.map((c) => c.index + 1));
    this.pump();
  }

  async run(): Promise<RestoredArchive> {
    const { command, engine, bus, log } = this.options;
    await this.preflight();
    await mkdir(this.options.workDir, { recursive: true, mode: 0o700 });
    await (await open(this.archivePath, 'w', 0o600)).close();
    let subscription: Subscription | undefined;
    const idle = setInterval(() => {
      if (Date.now() - this.lastActivity > this.options.idleTimeoutMs) {
        this.fail(new RestoreRefusedError('download-failed', `nothing arrived from the source for ${this.options.idleTimeoutMs / 1000} s (${this.fetched.size} chunks fetched); giving up`));
      }
    }, 1_000);
    try {
      subscription = await bus.followMigration(command.migrationId, (event) => {
        this.lastActivity = Date.now();
        switch (event.name) {
          case 'checkpoint.chunk':
            this.chunks.set(event.data.chunk.index, event.data.chunk);
            break;
          case 'checkpoint.uploaded':
            this.uploaded = event.data;
            break;
          case 'checkpoint.failed':
          case 'migration.failed':
            this.fail(new RestoreAbandonedError(`the migration failed elsewhere: ${event.data.reason}`));
            return 'stop';
          default:
            return;
        }
        this.pump();
      });
      await this.options.emit('restore.prepared', { migrationId: command.migrationId, agent: this.options.agentId, freeDiskBytes: await this.freeDisk() });
      await this.done;
      const downloadedAt = new Date();
      log.info({ chunks: this.fetched.size, bytes: this.bytes }, 'archive fetched and verified; restoring');
      try {
        const restored = await engine.restoreFromArchive(command.container, this.archivePath);
        return { containerId: restored.id, downloadedAt, restoredAt: new Date() };
      } catch (error) {
        // Leave no half-restored container behind (the name was free when we started).
        await engine.removeContainer(command.container, { force: true }).catch(() => undefined);
        throw new RestoreRefusedError('engine-failed', `the container engine could not restore the checkpoint: ${error instanceof Error ? error.message : String(error)}`);
      }
    } finally {
      clearInterval(idle);
      await subscription?.stop();
      await rm(this.archivePath, { force: true });
    }
  }

  private async preflight(): Promise<void> {
    const { command, engine } = this.options;
    const existing = await engine.inspectContainer(command.container);
    if (existing) {
      throw new RestoreRefusedError('invalid-request', `a container named "${command.container}" already exists here (${existing.state}); remove or rename it, then migrate again`);
    }
    if (!(await engine.imageExists(command.imageId))) {
      throw new RestoreRefusedError(
        'image-missing',
        `image "${command.image}" (id ${command.imageId.slice(0, 12)}) is not present on this host; load that image here first (the checkpoint carries the container's changes, not its base image)`,
      );
    }
  }

  private async freeDisk(): Promise<number> {
    const disk = await statfs(this.options.workDir);
    return disk.bavail * disk.bsize;
  }

  private fail(error: Error): void {
    this.settle.reject(error);
  }

  /** Starts whatever can start: chunk downloads up to `parallel`, the manifest, URL requests. */
  private pump(): void {
    const { parallel, urlBatch, urlLowWater } = this.options;
    if (this.uploaded && this.manifestUrl && !this.manifest && !this.manifestLoading) void this.loadManifest();
    const pending = [...this.chunks.keys()].filter((i) => !this.fetched.has(i) && !this.fetching.has(i)).sort((a, b) => a - b);
    for (const index of pending) {
      if (this.fetching.size >= parallel) break;
      const url = this.urls.get(index);
      if (url) void this.fetch(index, url);
    }
    const highest = Math.max(-1, ...this.chunks.keys());
    if (this.chunks.size > 0 && highest + urlLowWater >= this.urlsRequestedUpTo) {
      const fromIndex = this.urlsRequestedUpTo;
      this.urlsRequestedUpTo += urlBatch;
      void this.options
        .emit('restore.urls-needed', { migrationId: this.options.command.migrationId, agent: this.options.agentId, fromIndex, count: urlBatch })
        .catch((error: unknown) => this.options.log.warn({ err: error }, 'could not ask for more chunk URLs'));
    }
    this.checkComplete();
  }

  private async fetch(index: number, url: string): Promise<void> {
    const chunk = this.chunks.get(index);
    if (!chunk) return;
    this.fetching.add(index);
    try {
      const digest = new DigestStream();
      const file = createWriteStream(this.archivePath, { flags: 'r+', start: chunk.offset });
      digest.pipe(file);
      try {
        await downloadSignedUrl(url, digest, { expectedSize: chunk.sizeBytes, retries: 4 });
      } finally {
        digest.end();
        await finished(file);
      }
      const sha256 = digest.digest();
      if (sha256 !== chunk.sha256) {
        throw new RestoreRefusedError('digest-mismatch', `chunk ${index} of the checkpoint has sha256 ${sha256}, the source announced ${chunk.sha256}: it was corrupted or replaced in the store`);
      }
      this.fetched.add(index);
      this.bytes += chunk.sizeBytes;
      this.lastActivity = Date.now();
      this.reportProgress();
    } catch (error) {
      this.fail(describeFetchError(index, error));
    } finally {
      this.fetching.delete(index);
    }
    this.pump();
  }

  private async loadManifest(): Promise<void> {
    const uploaded = this.uploaded;
    const url = this.manifestUrl;
    if (!uploaded || !url) return;
    this.manifestLoading = true;
    try {
      const parts: Buffer[] = [];
      const sink = new Writable({
        write(part: Buffer, _encoding, callback) {
          parts.push(part);
          callback();
        },
      });
      await downloadSignedUrl(url, sink, { retries: 4 });
      const body = Buffer.concat(parts);
      const sha256 = createHash('sha256').update(body).digest('hex');
      if (sha256 !== uploaded.artifact.manifestSha256) {
        throw new RestoreRefusedError('manifest-invalid', `the checkpoint manifest has sha256 ${sha256}, the source announced ${uploaded.artifact.manifestSha256}: it was replaced in the store`);
      }
      let manifest: Manifest;
      try {
        manifest = Manifest.parse(JSON.parse(body.toString('utf8')));
      } catch (error) {
        throw new RestoreRefusedError('manifest-invalid', `the checkpoint manifest does not parse: ${(error as Error).message}`);
      }
      if (manifest.chunks.length !== uploaded.artifact.chunkCount || manifest.sizeBytes !== uploaded.artifact.sizeBytes) {
        throw new RestoreRefusedError('manifest-invalid', `the manifest lists ${manifest.chunks.length} chunks / ${manifest.sizeBytes} bytes, the source announced ${uploaded.artifact.chunkCount} / ${uploaded.artifact.sizeBytes}`);
      }
      if (manifest.sizeBytes > (await this.freeDisk()) + this.bytes) {
        throw new RestoreRefusedError('disk-full', `not enough disk in ${this.options.workDir} for the ${manifest.sizeBytes}-byte checkpoint`);
      }
      for (const chunk of manifest.chunks) {
        const announced = this.chunks.get(chunk.index);
        if (announced && (announced.sha256 !== chunk.sha256 || announced.offset !== chunk.offset || announced.sizeBytes !== chunk.sizeBytes)) {
          throw new RestoreRefusedError('manifest-invalid', `chunk ${chunk.index} was announced differently from what the manifest lists`);
        }
        // Chunks whose announcement we missed are known from the manifest now.
        this.chunks.set(chunk.index, chunk);
      }
      this.manifest = manifest;
      this.pump();
    } catch (error) {
      this.fail(error instanceof RestoreRefusedError ? error : describeFetchError('manifest', error));
    }
  }

  private checkComplete(): void {
    if (this.manifest && this.fetched.size === this.manifest.chunks.length) this.settle.resolve();
  }

  private reportProgress(): void {
    const now = Date.now();
    if (now - this.lastProgressAt < 500) return;
    this.lastProgressAt = now;
    void this.options
      .emit('restore.progress', {
        migrationId: this.options.command.migrationId,
        agent: this.options.agentId,
        bytes: this.bytes,
        totalBytes: this.uploaded?.artifact.sizeBytes ?? 0,
      })
      .catch(() => undefined);
  }
}

function describeFetchError(what: number | 'manifest', error: unknown): RestoreRefusedError {
  const name = what === 'manifest' ? 'the manifest' : `chunk ${what}`;
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof RestoreRefusedError) return error;
  if (error instanceof SignedUrlRejectedError) return new RestoreRefusedError('url-rejected', `${name}: ${message}`);
  if (error instanceof SignedUrlNotFoundError) return new RestoreRefusedError('download-failed', `${name} is missing from the store: ${message}`);
  if (error instanceof DownloadSizeMismatchError) return new RestoreRefusedError('size-mismatch', `${name} was truncated or replaced in the store: ${message}`);
  if ((error as NodeJS.ErrnoException).code === 'ENOSPC') return new RestoreRefusedError('disk-full', `no space left writing ${name}`);
  return new RestoreRefusedError('download-failed', `downloading ${name} failed: ${message}`);
}
