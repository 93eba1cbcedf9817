import { randomUUID } from 'node:crypto';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { z } from 'zod';
import { artifactPrefix, imagePrefix, type Manifest } from '../core/checkpoint-artifact.js';
import { ChunkOpener, ChunkSealer } from '../core/checkpoint-sealing.js';
import { artifactOf, uploadChunked } from '../core/chunked-upload.js';
import type { Uplink } from '../core/uplink.js';
import type { Artifact, CommandData, EventData } from '../core/events.js';
import type { ObjectStore } from '../core/object-store.js';
import type { SigningKeyPair } from '../core/signed-envelope.js';
import type { ContainerEngine } from './container-engine.js';
import type { RestoreJobOptions } from './restore-job.js';
import { TarEntryReader, TarFormatError } from './tar-entries.js';
import {
  describeFetchError,
  fetchChunk,
  fetchManifest,
  RestoreAbandonedError,
  RestoreRefusedError,
  type UrlCheck,
} from './verified-download.js';

/**
 * A container's image, shipped to a destination whose engine lacks it, before the freeze: the source saves it
 * (a docker-archive, what `podman save` and `docker save` write and either engine loads with the same image id)
 * and stores it through the checkpoint's own upload (core/chunked-upload.ts: chunked, sealed for the
 * destination, its manifest signed by the source agent) under the migration's prefix (imagePrefix); the
 * destination fetches every chunk through signed URLs, verifies it, loads the archive and checks the id.
 *
 * Per migration, not per image id: the chunks are sealed for one destination's key and the manifest is signed
 * for one migration, so nothing could be reused by a later migration to another host anyway, and the image
 * (which may hold secrets in its layers) goes away with the checkpoint.
 */

export interface StoredImage {
  artifact: Artifact;
  startedAt: Date;
  uploadedAt: Date;
}

/** The source's side: saves the image with its engine and stores it, sealed and signed, where the command says. */
export async function storeImage(
  engine: ContainerEngine,
  store: ObjectStore,
  command: CommandData<'ship-image'>,
  options: { chunkBytes: number; parallel: number; signer: { agentId: string; key: SigningKeyPair }; uplink?: Uplink },
): Promise<StoredImage> {
  const { migrationId, artifact, sealFor, imageId } = command;
  if (artifact.prefix !== imagePrefix(artifactPrefix(migrationId))) {
    throw new Error(`refusing to write the image of migration ${migrationId} under "${artifact.prefix}": not its own image prefix`);
  }
  // Before the engine is asked: a bad key is refused without saving anything.
  const sealer = ChunkSealer.forRecipient(sealFor, migrationId);
  const startedAt = new Date();
  const archive = await engine.saveImage(imageId);
  const upload = await uploadChunked(archive, store, artifact.prefix, {
    migrationId,
    chunkBytes: options.chunkBytes,
    parallel: options.parallel,
    sealer,
    signer: options.signer,
    ...(options.uplink ? { uplink: options.uplink } : {}),
    // The destination fetches the image once it is all stored (source.image-uploaded): nothing to announce per chunk.
    onChunk: () => Promise.resolve(),
  });
  return { artifact: artifactOf(artifact, upload), startedAt, uploadedAt: new Date() };
}

/** docker-archive's manifest.json: one entry per image, its config blob (named by the image id) and its names. */
const DockerArchiveManifest = z
  .array(z.object({ Config: z.string().min(1), RepoTags: z.array(z.string()).nullable().optional() }))
  .min(1)
  .max(64);

/** manifest.json is a few hundred bytes per image; anything far larger is not a docker-archive's. */
const MAX_ARCHIVE_MANIFEST_BYTES = 1024 * 1024;

/**
 * What the shipped docker-archive holds, from its manifest.json: exactly the image `imageId` (its config blob is
 * named by the id: `<hex>.json`, or `blobs/sha256/<hex>` in an OCI-layout archive), and the names it carries.
 * Throws RestoreRefusedError ('image-missing') otherwise: the archive must not reach the engine's end then.
 */
export function archivedImage(manifestJson: Buffer | undefined, imageId: string): { tags: string[] } {
  const wanted = imageId.replace(/^sha256:/, '');
  if (manifestJson === undefined) {
    throw new RestoreRefusedError(
      'image-missing',
      'the shipped image archive has no manifest.json: it is not a docker-archive; nothing loaded',
    );
  }
  let entries: z.infer<typeof DockerArchiveManifest>;
  try {
    entries = DockerArchiveManifest.parse(JSON.parse(manifestJson.toString('utf8')));
  } catch (error) {
    // Nothing of the archive itself goes into the reason (it reaches events).
    const why = error instanceof SyntaxError ? 'not JSON' : 'not the shape docker-archive writes';
    throw new RestoreRefusedError('image-missing', `the shipped image archive's manifest.json is ${why}; nothing loaded`, { cause: error });
  }
  const ids = entries.map((entry) => posix.basename(entry.Config).replace(/\.json$/, ''));
  if (ids.length !== 1 || ids[0] !== wanted) {
    const held = ids.map((id) => id.slice(0, 12)).join(', ');
    throw new RestoreRefusedError(
      'image-missing',
      `the shipped image archive holds image ${held}, not ${wanted.slice(0, 12)} that the checkpoint was taken on; refused, nothing loaded`,
    );
  }
  return { tags: entries[0]?.RepoTags ?? [] };
}

/** The restore job's own settings (agents/restore-job.ts), and its URL policy. */
export type ShippedImageOptions = Pick<
  RestoreJobOptions,
  'command' | 'engine' | 'bus' | 'emit' | 'agentId' | 'sealingKey' | 'parallel' | 'log'
> & {
  /** Only the migration's own objects at the source's store (the restore job's URL policy). */
  checkUrl: UrlCheck;
};

export interface LoadedImage {
  /** When the engine had loaded it and the id was checked. */
  loadedAt: Date;
  /** The names the archive carried, which the engine restored. */
  tags: string[];
  /** Stored (sealed) bytes fetched. */
  bytes: number;
}

/** Room the engine needs: it spools the archive to a file, then unpacks the layers. */
const DISK_PER_IMAGE_BYTE = 2;

/**
 * The destination's side, for a restore whose preflight found the image missing: asks for it
 * (restore.image-needed), waits for the source's upload and the signed URLs, then feeds the verified and opened
 * chunks to the engine's load in order. The archive's manifest.json is checked on the way, and the archive's
 * last bytes reach the engine only if it holds exactly the expected image: an engine loads nothing from an
 * archive whose request broke off. Whatever fails, or the migration ending elsewhere, ends the wait.
 */
export class ShippedImage {
  private readonly urls: { chunks: Map<number, string>; manifest?: string } = { chunks: new Map() };
  private uploaded: EventData<'source.image-uploaded'> | undefined;
  private failure: Error | undefined;
  /** Wakes load() when a URL, the source's announcement or a failure arrived. */
  private wake: () => void = () => undefined;

  constructor(private readonly options: ShippedImageOptions) {}

  /** Signed URLs of the image's objects (chunk-urls with `of: 'image'`; they may come before load() runs). */
  addUrls(urls: CommandData<'chunk-urls'>): void {
    if (urls.manifestUrl) this.urls.manifest = urls.manifestUrl;
    for (const chunk of urls.chunks) this.urls.chunks.set(chunk.index, chunk.url);
    this.wake();
  }

  /** Stops a load under way (the migration turns back or failed): load() rejects with `error`. */
  abandon(error: Error): void {
    this.failure ??= error;
    this.wake();
  }

  async load(): Promise<LoadedImage> {
    const { command, bus, log } = this.options;
    const subscription = await bus.followMigration(command.migrationId, (event) => {
      // Followed until the load ends: the migration failing elsewhere stops the fetch too.
      if (event.name === 'source.image-uploaded' && event.data.agent === command.sourceAgent) this.uploaded = event.data;
      else if (event.name === 'migration.failed' || (event.name === 'checkpoint.failed' && event.data.agent === command.sourceAgent))
        this.failure ??= new RestoreAbandonedError(`the migration failed elsewhere: ${event.data.reason}`);
      else return;
      this.wake();
    });
    try {
      // A request (a fresh id each time): a destination that restarted asks again and gets the URLs again.
      await this.options.emit(
        'restore.image-needed',
        { migrationId: command.migrationId, agent: this.options.agentId, imageId: command.imageId },
        randomUUID(),
      );
      log.info({ imageId: command.imageId, image: command.image }, "the engine lacks the container's image; asked the source to ship it");
      const uploaded = await this.until(() => {
        const announced = this.uploaded;
        const complete =
          announced !== undefined &&
          this.urls.manifest !== undefined &&
          Array.from({ length: announced.artifact.chunkCount }, (_, i) => i).every((i) => this.urls.chunks.has(i));
        return complete ? announced : undefined;
      });
      return await this.fetchAndLoad(uploaded);
    } finally {
      await subscription.stop();
    }
  }

  /** Resolves with `ready()`'s value once it has one; rejects with the failure if one comes first. */
  private async until<T>(ready: () => T | undefined): Promise<T> {
    for (;;) {
      if (this.failure) throw this.failure;
      const value = ready();
      if (value !== undefined) return value;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private async fetchAndLoad(uploaded: EventData<'source.image-uploaded'>): Promise<LoadedImage> {
    const { command, engine, log } = this.options;
    const prefix = imagePrefix(command.artifact.prefix);
    if (
      uploaded.imageId !== command.imageId ||
      uploaded.artifact.storeUrl !== command.artifact.storeUrl ||
      uploaded.artifact.prefix !== prefix
    ) {
      throw new RestoreRefusedError(
        'manifest-invalid',
        'the source announced another image, or at another place, than the migration names',
      );
    }
    let manifest: Manifest;
    try {
      manifest = await fetchManifest(
        this.urls.manifest ?? '',
        uploaded.artifact,
        { agentId: command.sourceAgent, publicKey: command.sourceManifestKey, migrationId: command.migrationId, prefix },
        this.options.checkUrl,
        'image',
      );
    } catch (error) {
      throw describeFetchError("the image's manifest", error);
    }
    let opener: ChunkOpener;
    try {
      opener = ChunkOpener.unwrap(manifest.sealing, this.options.sealingKey, command.migrationId);
    } catch (error) {
      throw new RestoreRefusedError('seal-invalid', `the image's data key cannot be unwrapped: ${describe(error)}`, { cause: error });
    }
    const free = (await engine.info()).freeDiskBytes;
    if (free < manifest.sizeBytes * DISK_PER_IMAGE_BYTE) {
      throw new RestoreRefusedError(
        'disk-full',
        `the engine's storage has ${free} bytes free; loading the ${manifest.sizeBytes}-byte image needs about ${manifest.sizeBytes * DISK_PER_IMAGE_BYTE}`,
      );
    }
    const archive: { tags: string[]; refusal?: Error } = { tags: [] };
    // objectMode off and a 1-byte mark: one verified chunk waits for the engine at a time, besides the prefetch.
    const body = Readable.from(this.verifiedChunks(manifest, opener, prefix, archive), { objectMode: false, highWaterMark: 1 });
    try {
      await engine.loadImage(body);
    } catch (error) {
      // The archive's own refusal broke the request off: that is the reason, not the engine's broken pipe.
      if (archive.refusal) throw archive.refusal;
      throw new RestoreRefusedError('engine-failed', `the container engine could not load the shipped image: ${describe(error)}`, {
        cause: error,
      });
    }
    if (!(await engine.imageExists(command.imageId))) {
      throw new RestoreRefusedError(
        'image-missing',
        `the engine loaded the shipped image but has no image with id ${command.imageId.replace(/^sha256:/, '').slice(0, 12)} after it: refused`,
      );
    }
    // The engine's restore finds the image by the name the container was created with (Podman: RootfsImageName).
    if (!(await engine.imageExists(command.image))) {
      throw new RestoreRefusedError(
        'image-missing',
        `the shipped image was loaded, but the name "${command.image}" that the checkpoint's restore looks it up by is not on this host (the archive carried ${archive.tags.join(', ') || 'no names'})`,
      );
    }
    log.info({ imageId: command.imageId, tags: archive.tags, bytes: manifest.sizeBytes }, 'shipped image loaded; its id checked');
    return { loadedAt: new Date(), tags: archive.tags, bytes: manifest.sizeBytes };
  }

  /**
   * The image's chunks in order, each fetched (up to `parallel` ahead), verified and opened; the tar is read as it
   * passes, and the last chunk is given only once manifest.json says it is the expected image.
   */
  private async *verifiedChunks(
    manifest: Manifest,
    opener: ChunkOpener,
    prefix: string,
    archive: { tags: string[]; refusal?: Error },
  ): AsyncGenerator<Buffer> {
    const tar = new TarEntryReader(new Set(['manifest.json']), MAX_ARCHIVE_MANIFEST_BYTES);
    const pending = new Map<number, Promise<Buffer>>();
    let next = 0;
    try {
      for (const chunk of manifest.chunks) {
        for (; next < manifest.chunks.length && next < chunk.index + this.options.parallel; next++) {
          const ref = manifest.chunks[next]!;
          const fetching = fetchChunk(ref, this.urls.chunks.get(ref.index) ?? '', prefix, opener, this.options.checkUrl, 'image');
          // Awaited in order below; a failure of one fetched ahead must not go unhandled meanwhile.
          fetching.catch(() => undefined);
          pending.set(ref.index, fetching);
        }
        const data = await pending.get(chunk.index)!.catch((error: unknown) => {
          throw describeFetchError(`image chunk ${chunk.index}`, error);
        });
        pending.delete(chunk.index);
        if (this.failure) throw this.failure;
        tar.write(data);
        if (chunk.index === manifest.chunks.length - 1) {
          try {
            tar.end();
          } catch (error) {
            if (!(error instanceof TarFormatError)) throw error;
            throw new RestoreRefusedError(
              'image-missing',
              `the shipped image archive is not a whole tar: ${error.message}; nothing loaded`,
              { cause: error },
            );
          }
          archive.tags = archivedImage(tar.bodies.get('manifest.json'), this.options.command.imageId).tags;
        }
        yield data;
      }
    } catch (error) {
      archive.refusal = error instanceof Error ? error : new Error(String(error));
      throw archive.refusal;
    }
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
