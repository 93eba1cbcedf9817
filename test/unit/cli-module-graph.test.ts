import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

/*
 * The product CLI must not load the development harness: `ums status` (and migrate, plan, agents) against a
 * real broker reads stack.json at most (cli/stack-info.ts); only the `stack` commands import
 * infra/local-stack.js, dynamically. This runs the real compiled CLI under a module hook that records every
 * module it resolves, so a static import of the harness anywhere in the CLI's graph fails here.
 */

const distRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = join(distRoot, 'cli', 'ums.js');
const hooks = pathToFileURL(join(distRoot, 'test', 'support', 'record-modules.js')).href;

/** Runs the CLI with `args` and returns the URLs of every module it resolved, and how it ended. */
async function modulesLoadedBy(
  args: string[],
  recordFile: string,
  env: NodeJS.ProcessEnv,
): Promise<{ urls: string[]; code: number; stderr: string }> {
  const register = `import { register } from "node:module"; register(${JSON.stringify(hooks)}, { data: ${JSON.stringify(recordFile)} });`;
  const { code, stderr } = await new Promise<{ code: number; stderr: string }>((done) => {
    execFile(
      process.execPath,
      ['--import', `data:text/javascript,${encodeURIComponent(register)}`, cli, ...args],
      { env, timeout: 30_000 },
      (error, _stdout, stderr) => {
        done({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stderr });
      },
    );
  });
  const urls = (await readFile(recordFile, 'utf8').catch(() => '')).split('\n').filter((line) => line !== '');
  return { urls, code, stderr };
}

describe('the product CLI does not load the development harness', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ums-cli-graph-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const harness = ['/infra/local-stack.js', '/infra/podman-host.js', '/infra/object-servers.js'];
  const inDist = (urls: string[]) =>
    urls.filter((url) => url.startsWith(pathToFileURL(distRoot).href)).map((url) => url.slice(pathToFileURL(distRoot).href.length));

  it('`ums status` with a broker given loads no module of infra/ or test/', async () => {
    // A closed port: the command fails to connect, after its whole static module graph has been loaded.
    const { urls, code, stderr } = await modulesLoadedBy(['status', '--nats', 'nats://127.0.0.1:1'], join(dir, 'status-nats.txt'), {
      ...process.env,
      NATS_URL: '',
    });
    const ours = inDist(urls);
    assert.ok(
      ours.includes('/cli/ums.js') && ours.includes('/core/nats-event-bus.js'),
      `the recorder saw the CLI's modules: ${ours.join(' ')}`,
    );
    assert.notEqual(code, 0, 'nothing listens on port 1');
    assert.match(stderr, /cannot reach the broker/);
    for (const module of harness) assert.ok(!ours.includes(module), `ums status loaded ${module}`);
    assert.deepEqual(
      ours.filter((url) => url.startsWith('/infra/') || url.startsWith('/test/')),
      [],
      'ums status loaded the harness or the tests',
    );
    assert.deepEqual(
      urls.filter((url) => /\/node_modules\/(azurite|@20minutes\/s3rver|firebase-tools)\//.test(url)),
      [],
      'ums status loaded a storage emulator',
    );
  });

  it('`ums status` finding the local stack reads its stack.json without loading the harness', async () => {
    // No broker given, no stack running under UMS_HOME: it looks for stack.json (cli/stack-info.ts) and says so.
    const { urls, code, stderr } = await modulesLoadedBy(['status'], join(dir, 'status-stack.txt'), {
      ...process.env,
      NATS_URL: '',
      UMS_HOME: join(dir, 'home'),
    });
    const ours = inDist(urls);
    assert.notEqual(code, 0);
    assert.match(stderr, /no broker given/);
    assert.ok(ours.includes('/cli/stack-info.js'));
    assert.deepEqual(
      ours.filter((url) => url.startsWith('/infra/') || url.startsWith('/test/')),
      [],
    );
  });
});
