import { spawn } from 'node:child_process';
import type { Writable } from 'node:stream';

/**
 * One volume's files as GNU tar's incremental dumps (`--listed-incremental`): a level-0 dump read while
 * the service runs, then a level-1 dump against the same snapshot file once it is frozen, which holds every
 * file whose data or inode changed since the level-0 dump started, and each directory's listing, so that
 * extracting it deletes what was deleted. GNU tar keeps owners (numeric), modes, times, sparse files,
 * hard links, xattrs and ACLs, and on extraction refuses members that leave the directory ("../",
 * absolute names) and creates symlinks that could lead out of it only after every other member
 * (its defence against symlink attacks), so a tree writes nowhere but into its volume.
 */

export class VolumeTreeError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VolumeTreeError';
  }
}

const KEEP = ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls', '--sparse'];

/**
 * The dump's bytes as tar writes them. `base`: the level-0 dump, which creates `snapshot`; a file that
 * changes while it is read is fine (tar's exit 1), the level-1 dump carries it. `delta`: the level-1
 * dump, which must read every file whole (the service is frozen). Stopping the iteration kills tar.
 */
export async function* dumpTree(dir: string, snapshot: string, level: 'base' | 'delta'): AsyncGenerator<Buffer> {
  const tar = spawn('tar', ['--create', '--file=-', `--directory=${dir}`, `--listed-incremental=${snapshot}`, ...KEEP, '.'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exit = exited(tar, `dumping ${dir}`);
  exit.catch(() => undefined); // awaited below; a failure before that must not go unhandled
  try {
    for await (const bytes of tar.stdout as AsyncIterable<Buffer>) yield bytes;
    const { code, stderr } = await exit;
    if (code !== 0 && !(code === 1 && level === 'base'))
      throw new VolumeTreeError(`tar could not dump ${dir}: ${stderr || `exit ${code}`}`);
  } finally {
    if (tar.exitCode === null) tar.kill('SIGKILL');
  }
}

/**
 * A tar process extracting a dump into `dir` (a level-0 dump into an empty volume, then the level-1 dump
 * over it). Write the dump into `input`, end it, and await `done`; kill() stops it.
 */
export function extractTree(dir: string): { input: Writable; done: Promise<void>; kill(): void } {
  const tar = spawn(
    'tar',
    ['--extract', '--file=-', `--directory=${dir}`, '--listed-incremental=/dev/null', '--same-permissions', ...KEEP],
    { stdio: ['pipe', 'ignore', 'pipe'] },
  );
  const exit = exited(tar, `extracting into ${dir}`);
  // A tar that dies early closes its stdin: the writer's EPIPE is reported by `done`, with tar's reason.
  tar.stdin.on('error', () => undefined);
  const done = exit.then(({ code, stderr }) => {
    if (code !== 0) throw new VolumeTreeError(`tar could not extract into ${dir}: ${stderr || `exit ${code}`}`);
  });
  done.catch(() => undefined); // the caller awaits it; a failure before that must not go unhandled
  return { input: tar.stdin, done, kill: () => tar.kill('SIGKILL') };
}

function exited(tar: ReturnType<typeof spawn>, what: string): Promise<{ code: number; stderr: string }> {
  let stderr = '';
  tar.stderr?.on('data', (bytes: Buffer) => {
    // tar's last lines say why; keep a bounded tail.
    stderr = (stderr + bytes.toString('utf8')).slice(-2000);
  });
  return new Promise((resolve, reject) => {
    tar.once('error', (error) => reject(new VolumeTreeError(`cannot run tar for ${what}: ${error.message}`, { cause: error })));
    tar.once('close', (code, signal) =>
      resolve({ code: code ?? (signal ? 128 : 1), stderr: stderr.trim().split('\n').slice(-3).join('; ') }),
    );
  });
}
