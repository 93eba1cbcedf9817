import type { Readable } from 'node:stream';
import type { MigrationApproach } from '../core/migration-approach.js';

/** What a restore needs to know of the container it recreates. */
export interface RestoreTarget {
  container: string;
  image: string;
  /** The very image the checkpoint was taken from. */
  imageId: string;
}

/**
 * How one migration approach freezes, restores, resumes and discards a service on this host. The host
 * agent runs the same saga steps for every approach (fenced commands, chunked archive, verified
 * restore); only these operations differ: the engine's CRIU for container level
 * (container-level.ts), the launcher inside the image for service level (service-level.ts).
 */
export interface ApproachDriver {
  readonly approach: MigrationApproach;
  /**
   * Freezes the service and streams its checkpoint archive; the frozen copy stays until resume or discard.
   * An approach that streams part of it while the service still runs uses `hooks`.
   */
  checkpoint(container: string, hooks?: CheckpointHooks): Promise<Readable>;
  /** Whether an earlier checkpoint left the service frozen here; undefined if there is no such container. */
  frozen(container: string): Promise<boolean | undefined>;
  /**
   * Recreates the service from `archive`, which arrives while the source is still uploading; resolves
   * once it runs. Destroying `archive` with an error aborts the restore before anything runs.
   */
  restore(target: RestoreTarget, archive: Readable): Promise<{ id: string }>;
  /** Removes a copy this agent restored (the migration rolled back), running or not, and whatever it needed. */
  removeRestored(container: string): Promise<void>;
  /** Whether the container (one this agent restored) runs the service, as opposed to a half-made one. */
  restored(container: string): Promise<boolean>;
  /** The migration failed: the frozen service runs on here. Idempotent. */
  resume(container: string): Promise<void>;
  /** The migration succeeded: remove the frozen copy. Idempotent; refuses a service that runs. */
  discard(container: string): Promise<void>;
}

/** What an approach that streams part of its archive while the service runs (container level's volumes) tells and asks. */
export interface CheckpointHooks {
  /**
   * The service froze at `at`, after the stream's first bytes: `runningCopy` when they were a copy sent while
   * it ran (volumes), not only the section's start.
   */
  frozen?(at: Date, runningCopy: boolean): void;
  /**
   * `bytes` of the stream were sent while the service ran: resolves once the destination has taken them, so
   * that the freeze does not wait on them; rejects (the service is not frozen) if the destination gave up.
   */
  beforeFreeze?(bytes: number): Promise<void>;
  /**
   * Send the memory beside the engine's export, read as CRIU writes it (agents/memory/page-images.ts): only
   * when the destination can place it there (both hosts have the runtime shim). Not a hook: a request.
   */
  memoryBeside?: boolean;
  /** With memoryBeside: the memory's bytes that went so, once all were read (none if the shim left them in the export). */
  memorySent?(bytes: number): void;
}

export class RunningServiceError extends Error {
  constructor(container: string, where: string) {
    super(`refusing to discard "${container}": it is running on ${where}, so it is not the frozen copy (it was resumed)`);
    this.name = 'RunningServiceError';
  }
}
