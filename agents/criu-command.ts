import { execFile } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** Where infra/host-setup.sh puts its `criu` wrapper (UMS_WRAPPER_DIR there); it comes first in the engine's PATH. */
export const CRIU_WRAPPER_DIR = '/usr/local/sbin';

/**
 * The criu the host's runc runs: infra/host-setup.sh's wrapper (side-loaded CRIU) first, then criu from
 * PATH, in the order runc itself finds it (the wrapper's directory comes first in the engine's PATH).
 */
export const CRIU_CANDIDATES = [`${CRIU_WRAPPER_DIR}/criu`, 'criu'] as const;

/** The first candidate that exists and is executable, as a path; undefined when there is none. */
export async function resolveCriu(candidates: readonly string[] = CRIU_CANDIDATES): Promise<string | undefined> {
  for (const candidate of candidates) {
    const paths = candidate.includes('/') ? [candidate] : (process.env.PATH ?? '').split(delimiter).map((dir) => join(dir, candidate));
    for (const path of paths) {
      if (
        await access(path, constants.X_OK).then(
          () => true,
          () => false,
        )
      )
        return path;
    }
  }
  return undefined;
}

const versions = new Map<string, Promise<string | undefined>>();

/**
 * The version of the criu the host's runc uses, probed once per command with `--version` (neither Podman
 * 4.3 nor Docker 20.10 reports it). `command`: that criu; default: CRIU_CANDIDATES in order; false: none.
 */
export function probeCriuVersion(command?: string | false): Promise<string | undefined> {
  if (command === false) return Promise.resolve(undefined);
  const candidates = command !== undefined ? [command] : CRIU_CANDIDATES;
  const key = candidates.join('\n');
  let version = versions.get(key);
  if (version === undefined) {
    version = (async () => {
      for (const candidate of candidates) {
        try {
          const { stdout } = await execFileAsync(candidate, ['--version'], { timeout: 5000 });
          const match = /Version:\s*(\S+)/.exec(stdout);
          if (match?.[1] !== undefined) return match[1];
        } catch {
          // Try the next candidate.
        }
      }
      return undefined;
    })();
    versions.set(key, version);
  }
  return version;
}
