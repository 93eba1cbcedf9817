import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { continuity, followTicks, joinTicks, readTicks } from './images/counter-output.js';
import { COUNTER_MARKER_PATH } from './images/build-counter-image.js';
import { startLocalStack } from './local-stack.js';

/**
 * The live-migration demo: the whole stack on this machine, a stateful counter started on the "azure"
 * host, migrated with `ums migrate` to the "gcp" host while we watch its count go on; then the bare
 * Podman checkpoint + restore of the same container on one host, as the floor to compare against.
 */
const cli = join(dirname(fileURLToPath(import.meta.url)), '..', 'cli', 'ums.js');
const say = (line = '') => process.stdout.write(`${line}\n`);
const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

async function main(): Promise<number> {
  const name = `demo-${process.pid}`;
  say('starting the local stack (NATS JetStream, Azurite, GCS emulator, functions, bridge, two hosts)...');
  const started = Date.now();
  const stack = await startLocalStack({ name, dir: join(tmpdir(), `ums-${name}`) });
  try {
    const [azure, gcp] = stack.info.hosts;
    const source = azure && stack.hosts.get(azure.agentId);
    const destination = gcp && stack.hosts.get(gcp.agentId);
    if (!azure || !gcp || !source || !destination) throw new Error('the stack has fewer than two hosts');
    say(`stack ready in ${seconds(Date.now() - started)}: ${azure.agentId} (store ${azure.storeUrl}), ${gcp.agentId} (store ${gcp.storeUrl})`);

    const container = 'counter';
    const token = randomBytes(8).toString('hex');
    await source.podman(['run', '-d', '--name', container, '-e', `COUNTER_TOKEN=${token}`, stack.info.image]);
    say(`\nstarted "${container}" on ${azure.agentId}: it keeps a count in memory and prints it every 100 ms`);
    await sleep(2_500);
    const follower = followTicks(source.url, container);
    await sleep(500);
    say(`  last count seen on ${azure.agentId}: ${follower.ticks.at(-1)?.count ?? '?'}\n`);

    say(`$ ums migrate ${container} --to ${gcp.agentId}`);
    const exitCode = await new Promise<number>((resolve) => {
      const child = spawn(process.execPath, [cli, 'migrate', container, '--to', gcp.agentId], {
        env: { ...process.env, NATS_URL: stack.info.natsUrl },
        stdio: ['ignore', 'inherit', 'inherit'],
      });
      child.once('close', (code) => resolve(code ?? 1));
    });
    await Promise.race([follower.ended, sleep(5_000)]);
    follower.stop();
    if (exitCode !== 0) throw new Error(`ums migrate exited with ${exitCode}`);

    await sleep(1_500);
    const after = await readTicks(destination.url, container);
    const ticks = joinTicks(follower.ticks, after);
    const check = continuity(ticks);
    const lastBefore = follower.ticks.at(-1);
    const firstAfter = after.find((tick) => tick.count > (lastBefore?.count ?? 0));
    say(`\non ${gcp.agentId}: count ${firstAfter?.count ?? '?'} follows ${lastBefore?.count ?? '?'} from ${azure.agentId}; now at ${after.at(-1)?.count ?? '?'}`);
    say(`  count continuous across the move: ${check.continuous ? 'yes' : `NO (break after ${check.break?.before.count})`}`);
    say(`  longest pause between two ticks (the service's downtime): ${seconds(check.maxGapMs)}`);
    const marker = (await destination.podman(['exec', container, 'cat', COUNTER_MARKER_PATH])).stdout;
    say(`  rootfs file written before the move is there: ${marker.includes(token) ? 'yes' : 'NO'}`);
    const left = (await source.podman(['ps', '-a', '--format', '{{.Names}}'])).stdout.trim();
    say(`  containers left on ${azure.agentId}: ${left || 'none'}`);

    say(`\nthe floor, on ${gcp.agentId} alone: bare podman checkpoint --export + restore --import of the same container`);
    const archive = join(stack.info.dir, 'bare-checkpoint.tar');
    let t0 = Date.now();
    await destination.podman(['container', 'checkpoint', '--export', archive, '--compress', 'none', container], { timeoutMs: 300_000 });
    const checkpointMs = Date.now() - t0;
    await destination.podman(['rm', '-f', container]);
    t0 = Date.now();
    await destination.podman(['container', 'restore', '--import', archive], { timeoutMs: 300_000 });
    const restoreMs = Date.now() - t0;
    await rm(archive, { force: true });
    say(`  checkpoint ${seconds(checkpointMs)}, restore ${seconds(restoreMs)}, together ${seconds(checkpointMs + restoreMs)}`);
    return check.continuous && marker.includes(token) ? 0 : 1;
  } finally {
    say('\nstopping the stack...');
    await stack.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`demo failed: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
