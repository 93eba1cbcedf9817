import { createReadStream } from 'node:fs';
import { lstat, realpath, rm } from 'node:fs/promises';
import { basename, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';

/**
 * The checkpoint archive the kubelet leaves on the node's disk: its name, and reading and removing it from a
 * node-local agent (a DaemonSet with the checkpoint directory mounted read-only).
 *
 * NOT USED IN PRODUCTION YET: the orchestrator-level driver (agents/orchestrator-level.ts) speaks the CRI to
 * the node's runtime; this is for a node where only the kubelet's API is reachable, and is exercised only by
 * test/integration/kubelet-checkpoint.test.ts. (parseCheckpointArchiveName is also used by
 * KubeletCheckpointClient.checkpoint().)
 */

/** The kubelet's default checkpoint directory: <--root-dir>/checkpoints. */
export const KUBELET_CHECKPOINT_DIR = '/var/lib/kubelet/checkpoints';

/**
 * Splits checkpoint-<pod>_<namespace>-<container>-<RFC3339>.tar. The pod full name is "<pod>_<namespace>";
 * namespace and container may contain "-", so only the pod ref passed in (or the time) anchors it: this
 * returns the time and the "<pod>_<namespace>-<container>" part as is.
 */
export function parseCheckpointArchiveName(path: string): { podAndContainer: string; checkpointedAt: string } | undefined {
  const match = /^checkpoint-(.+)-(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2}))\.tar$/.exec(basename(path));
  if (match === null) return undefined;
  const [, podAndContainer, time] = match as unknown as [string, string, string];
  return Number.isNaN(Date.parse(time)) ? undefined : { podAndContainer, checkpointedAt: time };
}

export interface OpenedArchive {
  path: string;
  sizeBytes: number;
  stream: Readable;
}

/**
 * Opens a checkpoint archive the kubelet reported, for a node-local agent (DaemonSet with the checkpoint
 * directory mounted read-only) to stream on. Refuses anything that is not a regular file inside `root`
 * (default /var/lib/kubelet/checkpoints): the path comes over the network, and the archive holds memory.
 */
export async function openArchive(path: string, options: { root?: string } = {}): Promise<OpenedArchive> {
  const resolvedPath = await insideRoot(path, options.root ?? KUBELET_CHECKPOINT_DIR);
  const info = await lstat(resolvedPath);
  if (!info.isFile()) throw new Error(`checkpoint archive ${path} is not a regular file`);
  return { path: resolvedPath, sizeBytes: info.size, stream: createReadStream(resolvedPath, { highWaterMark: 1024 * 1024 }) };
}

/** Deletes an archive once it is safely elsewhere: the kubelet never removes them, and they hold memory. */
export async function removeArchive(path: string, options: { root?: string } = {}): Promise<void> {
  const resolvedPath = await insideRoot(path, options.root ?? KUBELET_CHECKPOINT_DIR).catch((error: unknown) => {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  });
  if (resolvedPath !== undefined) await rm(resolvedPath, { force: true });
}

async function insideRoot(path: string, root: string): Promise<string> {
  const realRoot = await realpath(root);
  const candidate = resolve(realRoot, path);
  const real = await realpath(candidate);
  if (!real.startsWith(realRoot + sep)) throw new Error(`refusing ${path}: checkpoint archives are read only from ${root}`);
  return real;
}
