import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { formatImageShipping } from '../cli/format.js';
import { launcherControlDir, launcherRunArgs } from '../launcher/convention.js';
import { listMigrations, runDemo, say, seconds, ums } from './demo-console.js';
import { continuity, followTicks, joinTicks, readTicks, type Tick } from './images/counter-output.js';
import { DEFAULT_LAUNCHED_COUNTER_IMAGE } from './images/build-service-image.js';
import { DEFAULT_HOSTS, startLocalStack } from './local-stack.js';

/**
 * The second demo (`npm run demo:engines`): a service moves between hosts that run different engines, Podman
 * on "azure" and Docker on "gcp". The service's image carries the UMS launcher, so it moves at service level,
 * which any engine can host; container level between engines is refused, and `ums plan` says why. The gcp
 * host does not have the image: it is shipped through the object store before the freeze, saved by Podman
 * and loaded by Docker. Then the service comes back, Docker to Podman. Its counter goes on through both.
 */
const SERVICE = 'svc';

async function main(): Promise<number> {
  const name = `demo-engines-${process.pid}`;
  say('starting the local stack: an azure host on Podman, a gcp host on Docker (its own dockerd), on one WAN...');
  const started = Date.now();
  const [azureSpec, gcpSpec] = DEFAULT_HOSTS;
  if (azureSpec === undefined || gcpSpec === undefined) throw new Error('the stack has fewer than two hosts');
  const stack = await startLocalStack({
    name,
    dir: join(tmpdir(), `ums-${name}`),
    hosts: [azureSpec, { ...gcpSpec, engine: 'docker' }],
  });
  try {
    const azure = stack.hosts.get(azureSpec.agentId);
    const gcp = stack.dockerHosts.get(gcpSpec.agentId);
    const launcherDir = stack.info.hosts.find((h) => h.agentId === azureSpec.agentId)?.launcherDir;
    if (azure === undefined || gcp === undefined || launcherDir === undefined) throw new Error('the stack lacks a host');
    say(`stack ready in ${seconds(Date.now() - started)}`);

    const control = launcherControlDir(SERVICE, launcherDir);
    await mkdir(control, { recursive: true, mode: 0o700 });
    await azure.podman([
      'run',
      '-d',
      '--name',
      SERVICE,
      ...launcherRunArgs(control),
      '-e',
      'COUNTER_TICK_MS=100',
      DEFAULT_LAUNCHED_COUNTER_IMAGE,
    ]);
    await gcp.docker(['rmi', DEFAULT_LAUNCHED_COUNTER_IMAGE]);
    say(`\nstarted "${SERVICE}" (${DEFAULT_LAUNCHED_COUNTER_IMAGE}: a counter under the UMS launcher) with Podman on ${azureSpec.agentId}`);
    say(`removed that image from ${gcpSpec.agentId}'s Docker: it has to travel too`);
    // The planner reads the source's registration (its launcher probed), which a heartbeat refreshes about every 2 s.
    await sleep(4_000);

    say(`\n$ ums plan ${SERVICE} --to ${gcpSpec.agentId} --approach container`);
    await ums(stack.info, ['plan', SERVICE, '--to', gcpSpec.agentId, '--approach', 'container']);
    say(`\n$ ums plan ${SERVICE} --to ${gcpSpec.agentId}`);
    await ums(stack.info, ['plan', SERVICE, '--to', gcpSpec.agentId]);

    const there = await move(stack.info, azure.url, gcpSpec.agentId);
    const back = await move(stack.info, { docker: gcp.url }, azureSpec.agentId);
    const ticks = joinTicks(joinTicks(there.ticks, back.ticks), await readTicks(azure.url, SERVICE));
    const flow = continuity(ticks);
    say(`\nwhat the service saw:`);
    say(
      `  count ${ticks[0]?.count ?? '?'} -> ${ticks.at(-1)?.count ?? '?'} over Podman, Docker and Podman again: ${flow.continuous ? 'no value lost or repeated' : `BROKEN at ${JSON.stringify(flow.break)}`}; longest gap between ticks ${seconds(flow.maxGapMs)}`,
    );
    const shipped = (await listMigrations(stack.info)).filter((m) => m.container === SERVICE && m.imageShipping !== undefined);
    for (const record of shipped) say(`  image to ${record.destinationAgent}: ${formatImageShipping(record) ?? 'not recorded'}`);
    return there.code === 0 && back.code === 0 && flow.continuous ? 0 : 1;
  } finally {
    say('\nstopping the stack...');
    await stack.stop();
  }
}

/** `ums migrate` while following the source's log until its container stops; the ticks seen there. */
async function move(
  stack: Parameters<typeof ums>[0],
  from: Parameters<typeof followTicks>[0],
  to: string,
): Promise<{ code: number; ticks: Tick[] }> {
  const follower = followTicks(from, SERVICE);
  await sleep(1_000);
  say(`\n$ ums migrate ${SERVICE} --to ${to}`);
  const code = await ums(stack, ['migrate', SERVICE, '--to', to]);
  await Promise.race([follower.ended, sleep(5_000)]);
  follower.stop();
  await sleep(1_500);
  return { code, ticks: follower.ticks };
}

runDemo(main);
