import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

/*
 * Production code (agents/, functions/, core/, cli/, bridge/, launcher/, frontman/) never imports the development
 * harness (infra/) or the tests (test/). The one exception is the CLI's `stack` commands, which load the
 * harness with a dynamic import() when they run (cli/stack-command.ts; test/unit/cli-module-graph.test.ts
 * checks that other commands never load it).
 */

const distRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const PRODUCTION = ['agents', 'functions', 'core', 'cli', 'bridge', 'launcher', 'frontman'];
const ALLOWED_DYNAMIC = new Set(['cli/stack-command.js']);

async function jsFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  const nested = await Promise.all(
    entries.map((e) => (e.isDirectory() ? jsFiles(join(dir, e.name)) : Promise.resolve(e.name.endsWith('.js') ? [join(dir, e.name)] : []))),
  );
  return nested.flat();
}

describe('layout', () => {
  it('production code does not import infra/ or test/', async () => {
    const offences: string[] = [];
    for (const folder of PRODUCTION) {
      const files = await jsFiles(join(distRoot, folder));
      assert.ok(files.length > 0, `nothing compiled in ${folder}/`);
      for (const file of files) {
        const source = await readFile(file, 'utf8');
        const name = relative(distRoot, file);
        for (const match of source.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])([^'"]+)\1/g)) {
          const specifier = match[2] ?? '';
          if (!specifier.startsWith('.')) continue;
          const target = relative(distRoot, resolve(dirname(file), specifier));
          if (!/^(infra|test)\//.test(target)) continue;
          const dynamic = match[0].includes('(');
          if (dynamic && ALLOWED_DYNAMIC.has(name)) continue;
          offences.push(`${name} imports ${target}${dynamic ? ' (dynamically)' : ''}`);
        }
      }
    }
    assert.deepEqual(offences, []);
  });
});
