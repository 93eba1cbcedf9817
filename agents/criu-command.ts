import { access, constants } from 'node:fs/promises';
import { delimiter, join } from 'node:path';

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
