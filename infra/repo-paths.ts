import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The repository root, found from wherever this module runs (infra/ under tsx, dist/infra/ compiled),
 * so that non-TypeScript assets (containers.conf, counter.c, .tools/) resolve the same from both.
 */
function findRepoRoot(start: string): string {
  for (let dir = start; ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      const parsed: unknown = JSON.parse(readFileSync(manifest, 'utf8'));
      if (typeof parsed === 'object' && parsed !== null && 'name' in parsed && parsed.name === 'ums') return dir;
    }
    if (dirname(dir) === dir) throw new Error(`cannot find the UMS repository above ${start}`);
  }
}

export const repoRoot = findRepoRoot(dirname(fileURLToPath(import.meta.url)));
export const repoPath = (...parts: string[]): string => join(repoRoot, ...parts);
