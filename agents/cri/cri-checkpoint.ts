import { stat } from 'node:fs/promises';
import { createLogger } from '../../core/log.js';
import { removeArchive } from '../kubelet/checkpoint-archive.js';
import type { CriClient, PodSandboxConfig } from './cri-client.js';

/**
 * The two operations an orchestrator-level approach driver needs, done through the CRI as the kubelet does
 * them, on top of CriClient. Verified against containerd 2.1.9 (test/integration/cri-containerd.test.ts);
 * CRI-O implements the same two calls.
 *
 *   checkpoint: CheckpointContainer(id, location) has the runtime dump the container with CRIU and write one
 *     tar (CRIU images, config.dump, spec.dump, status.dump, rootfs-diff.tar, container.log) at `location` on
 *     its node. The container keeps running (the CRI call is the kubelet's forensic checkpoint), so a
 *     migration stops it right after (`stopAfter`); what it does in between is lost.
 *   restore: containerd 2.1-2.3 restores in CreateContainer when the container's image is the path of such a tar
 *     (CreateContainer in internal/cri/server/container_create.go: `"%q is a file. Assuming it is a checkpoint
 *     archive"`, then CRImportCheckpoint in container_checkpoint_linux.go) or an OCI image whose index carries
 *     the checkpoint annotation (CONTAINERD_CHECKPOINT_ANNOTATION); StartContainer then restores the task
 *     instead of starting it (containerd 2.3 deprecated this and 2.4 removed it, for KEP-5823's RestorePod). The runtime
 *     unpacks the tar into the new container's state dir during CreateContainer, so the tar can go after it.
 *     containerd pulls the checkpoint's base image by NAME@DIGEST (config.dump's rootfsImageRef) from its
 *     registry during CreateContainer, even when the image is local: the destination node needs that
 *     registry reachable, or the restore fails with "failed to pull checkpoint base image".
 */

const log = createLogger('cri-checkpoint');

/**
 * containerd 2.1-2.3 restores from an image whose index (or, for an image that is a single manifest, whose
 * manifest) carries this annotation (checkIfCheckpointOCIImage in container_checkpoint_linux.go; the name is
 * checkpointctl's lib.CheckpointAnnotationName). CRI-O reads its own (CRIO_CHECKPOINT_ANNOTATION); one image
 * can carry both (agents/kubelet/checkpoint-image.ts takes extra annotations).
 */
export const CONTAINERD_CHECKPOINT_ANNOTATION = 'org.criu.checkpoint.container.name';

export interface CriCheckpointResult {
  containerId: string;
  /** The archive, on the runtime's node. */
  archivePath: string;
  sizeBytes: number;
  /** How long CheckpointContainer took (CRIU dump and the runtime's tar). */
  checkpointMs: number;
  /** How long stopping the source took, when `stopAfter` asked for it. */
  stopMs: number | undefined;
}

export interface CheckpointOptions {
  /** Where the runtime writes the tar, on its node (the kubelet uses /var/lib/kubelet/checkpoints/...). */
  location: string;
  /** Passed to the runtime; 0 or undefined: its default. */
  timeoutSeconds?: number;
  /** Stop the container right after the checkpoint (SIGKILL at once): the CRI checkpoint leaves it running. */
  stopAfter?: boolean;
}

/** Checkpoints `containerId` into a tar at `options.location` on the runtime's node. */
export async function checkpointContainer(cri: CriClient, containerId: string, options: CheckpointOptions): Promise<CriCheckpointResult> {
  const started = Date.now();
  await cri.checkpointContainer(containerId, options.location, {
    ...(options.timeoutSeconds !== undefined ? { timeoutSeconds: options.timeoutSeconds } : {}),
  });
  const checkpointMs = Date.now() - started;
  let stopMs: number | undefined;
  if (options.stopAfter === true) {
    const stopStarted = Date.now();
    await cri.stopContainer(containerId, 0).catch((cause: unknown) => {
      throw new Error(
        `checkpointed ${containerId} into ${options.location}, but could not stop it after: the source still runs and diverges from the checkpoint`,
        { cause },
      );
    });
    stopMs = Date.now() - stopStarted;
  }
  const info = await stat(options.location).catch((cause: unknown) => {
    throw new Error(`the runtime reported a checkpoint of ${containerId}, but ${options.location} is not readable here`, { cause });
  });
  log.info(
    { containerId, archivePath: options.location, sizeBytes: info.size, checkpointMs, stopMs },
    'container checkpointed through CRI',
  );
  return { containerId, archivePath: options.location, sizeBytes: info.size, checkpointMs, stopMs };
}

export interface RestoreOptions {
  /**
   * The checkpoint: the tar on the destination runtime's node (a regular file: the runtime reads it twice),
   * or the reference of a checkpoint image the runtime holds (what a Pod would name through the kubelet:
   * for containerd, an image whose manifest carries CONTAINERD_CHECKPOINT_ANNOTATION).
   */
  from: { archivePath: string } | { image: string };
  /** The new pod's sandbox config (new name and uid; the kubelet's RunPodSandbox config). */
  sandbox: PodSandboxConfig;
  /** The restored container's name in the new pod. */
  containerName: string;
  /** Relative to the sandbox's logDirectory; the runtime copies the checkpointed log there first. */
  logPath?: string;
  /**
   * The directory the archive must lie in for it to be removed after the restore (checkpoint-archive.ts
   * refuses anything outside it); undefined keeps the archive. An image stays: the caller removes it.
   */
  removeArchiveUnder?: string;
}

export interface CriRestoreResult {
  podSandboxId: string;
  containerId: string;
  sandboxMs: number;
  /** CreateContainer: unpacking the archive and preparing the container (includes the base image's pull). */
  createMs: number;
  /** StartContainer: the CRIU restore. */
  startMs: number;
  archiveRemoved: boolean;
}

/**
 * Restores a checkpoint tar into a new pod sandbox: RunPodSandbox, CreateContainer with the tar's path as the
 * image, StartContainer. On failure the new sandbox is removed again and the archive kept (a retry needs it).
 */
export async function restoreContainer(cri: CriClient, options: RestoreOptions): Promise<CriRestoreResult> {
  const archivePath = 'archivePath' in options.from ? options.from.archivePath : undefined;
  const image = archivePath ?? ('image' in options.from ? options.from.image : '');
  if (archivePath !== undefined) {
    await stat(archivePath).catch((cause: unknown) => {
      throw new Error(`cannot restore from ${archivePath}: the checkpoint archive is not there`, { cause });
    });
  } else if ((await cri.imageStatus(image)) === undefined) {
    throw new Error(`cannot restore from image ${image}: the runtime does not have it (load or pull it first)`);
  }
  let started = Date.now();
  const podSandboxId = await cri.runPodSandbox(options.sandbox);
  const sandboxMs = Date.now() - started;
  let containerId: string;
  let createMs: number;
  let startMs: number;
  try {
    started = Date.now();
    containerId = await cri.createContainer(
      podSandboxId,
      {
        metadata: { name: options.containerName },
        // As the kubelet sends it: containerd records it as the restored container's checkpointImage annotation.
        image: { image, userSpecifiedImage: image },
        ...(options.logPath !== undefined ? { logPath: options.logPath } : {}),
      },
      options.sandbox,
    );
    createMs = Date.now() - started;
    started = Date.now();
    await cri.startContainer(containerId);
    startMs = Date.now() - started;
  } catch (error) {
    await cri
      .stopPodSandbox(podSandboxId)
      .then(() => cri.removePodSandbox(podSandboxId))
      .catch((cleanupError: Error) =>
        log.warn({ podSandboxId, err: cleanupError.message }, 'could not remove the sandbox of a failed restore'),
      );
    throw new Error(`restore of ${image} into pod ${options.sandbox.metadata.namespace}/${options.sandbox.metadata.name} failed`, {
      cause: error,
    });
  }
  let archiveRemoved = false;
  if (archivePath !== undefined && options.removeArchiveUnder !== undefined) {
    // It holds the container's memory, and the runtime has its own copy now.
    await removeArchive(archivePath, { root: options.removeArchiveUnder });
    archiveRemoved = true;
  }
  log.info({ podSandboxId, containerId, sandboxMs, createMs, startMs, archiveRemoved }, 'container restored through CRI');
  return { podSandboxId, containerId, sandboxMs, createMs, startMs, archiveRemoved };
}
