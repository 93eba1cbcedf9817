import { spawn } from 'node:child_process';
import { InvalidArgumentError } from 'commander';
import { mkdir, open, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { defaultStackDir, readStackInfo, type StackInfo } from './stack-info.js';

const cliEntry = join(dirname(fileURLToPath(import.meta.url)), 'ums.js');

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/**
 * Which of the stack's hosts run Docker (`--docker-hosts`) or are Kubernetes nodes on containerd 2 (`--cri-hosts`)
 * rather than Podman hosts: their clouds or agent ids.
 */
export interface StackHostsOptions {
  dockerHosts: string[];
  criHosts?: string[];
}

/** `--docker-hosts gcp,aws` as a list; an empty item is a typo, not "none". */
export function parseHostList(value: string): string[] {
  const names = value.split(',').map((n) => n.trim());
  if (names.some((n) => n === '')) throw new InvalidArgumentError(`expected clouds or agent ids separated by commas, got "${value}"`);
  return names;
}

/** `ums stack run`: the stack in the foreground until SIGTERM/SIGINT, then a clean teardown. */
export async function runStack(name: string, options: StackHostsOptions = { dockerHosts: [] }): Promise<void> {
  // The development harness (Podman and Docker host simulation, image builders, storage emulators) is loaded only
  // here: the other commands, and a CLI talking to a real broker, never load it (test/unit/cli-module-graph.test.ts).
  const { DEFAULT_HOSTS, startLocalStack, withHostEngine } = await import('../infra/local-stack.js');
  const hosts = withHostEngine(withHostEngine(DEFAULT_HOSTS, options.dockerHosts, 'docker'), options.criHosts ?? [], 'containerd');
  const stack = await startLocalStack({ name, dir: defaultStackDir(name), hosts });
  process.stderr.write(`stack "${name}" ready (NATS ${stack.info.natsUrl})\n`);
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await stack.stop();
}

/** `ums stack up`: starts `stack run` in the background and returns once it is ready. */
export async function stackUp(name: string, json: boolean, options: StackHostsOptions = { dockerHosts: [] }): Promise<void> {
  const dir = defaultStackDir(name);
  const existing = await readStackInfo(dir).catch(() => undefined);
  if (existing && alive(existing.pid)) throw new Error(`stack "${name}" already runs (pid ${existing.pid}); "ums stack down" stops it`);
  await mkdir(dirname(dir), { recursive: true });
  const logPath = `${dir}.log`;
  const logFile = await open(logPath, 'w');
  const engines = [
    ...(options.dockerHosts.length > 0 ? ['--docker-hosts', options.dockerHosts.join(',')] : []),
    ...((options.criHosts ?? []).length > 0 ? ['--cri-hosts', (options.criHosts ?? []).join(',')] : []),
  ];
  const child = spawn(process.execPath, [cliEntry, 'stack', 'run', '--name', name, ...engines], {
    detached: true,
    stdio: ['ignore', logFile.fd, logFile.fd],
  });
  child.unref();
  await logFile.close();
  const deadline = Date.now() + 300_000;
  for (;;) {
    const info = await readStackInfo(dir).catch(() => undefined);
    if (info && info.pid === child.pid) return printStack(info, json);
    if (child.pid === undefined || !alive(child.pid)) {
      const tail = (await readFile(logPath, 'utf8').catch(() => '')).split('\n').slice(-25).join('\n');
      throw new Error(`the stack failed to start; the end of ${logPath}:\n${tail}`);
    }
    if (Date.now() > deadline) throw new Error(`the stack did not become ready in 5 minutes; see ${logPath}`);
    await sleep(250);
  }
}

export async function stackDown(name: string): Promise<void> {
  const info = await readStackInfo(defaultStackDir(name));
  if (!alive(info.pid)) throw new Error(`stack "${name}" is not running (pid ${info.pid} is gone); remove ${info.dir} if it is left over`);
  process.kill(info.pid, 'SIGTERM');
  const deadline = Date.now() + 120_000;
  while (alive(info.pid)) {
    if (Date.now() > deadline) throw new Error(`stack "${name}" (pid ${info.pid}) did not stop in 2 minutes`);
    await sleep(200);
  }
  process.stderr.write(`stack "${name}" stopped and removed\n`);
}

export async function stackInfo(name: string, json: boolean): Promise<void> {
  printStack(await readStackInfo(defaultStackDir(name)), json);
}

function printStack(info: StackInfo, json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
    return;
  }
  const lines = [
    `stack "${info.name}" (pid ${info.pid}) in ${info.dir}`,
    `  NATS_URL=${info.natsUrl}`,
    ...(info.cliCredentials !== undefined ? [`  UMS_NATS_CREDENTIALS=${info.cliCredentials}   (the CLI's credential)`] : []),
    ...(info.natsCa !== undefined ? [`  UMS_NATS_CA=${info.natsCa}`] : []),
    `  image on every host: ${info.image}`,
    `  WAN ${info.wan.subnet} in network namespace ${info.wan.netns}`,
    ...info.hosts.map(
      (h) =>
        `  host ${h.agentId} (${h.cloud} ${h.region}, ${h.engine}) at ${h.wanAddress} (netns ${h.netns ?? '-'}): ${engineCli(h)}   store ${h.storeUrl}`,
    ),
    '',
    'try:',
    `  ${engineCli(info.hosts[0])} run -d --name web ${info.image}`,
    `  npm run ums -- migrate web --to ${info.hosts[1]?.agentId ?? 'AGENT'}`,
    `  ${engineCli(info.hosts[1])} logs --tail 3 web`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

/** The CLI command line that talks to a host's engine. */
function engineCli(host: StackInfo['hosts'][number] | undefined): string {
  if (host === undefined) return 'podman --url unix://...';
  return host.engine === 'docker' ? `docker -H ${host.engineUrl}` : `podman --url ${host.engineUrl}`;
}
