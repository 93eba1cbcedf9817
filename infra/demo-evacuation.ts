import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { HostSpec } from '../cli/stack-info.js';
import { formatFrontman } from '../cli/format.js';
import type { EvacuationItem, EvacuationRecord } from '../core/evacuation.js';
import { timelineOf } from '../core/migration.js';
import { connectNatsBus, type NatsEventBus } from '../core/nats-event-bus.js';
import { POLICY_LABELS } from '../core/service-policy.js';
import { listMigrations, runDemo, say, seconds, ums } from './demo-console.js';
import { DEFAULT_WEBDIS_IMAGE, WEBDIS_PORT } from './images/build-server-images.js';
import { continuity, followTicks, joinTicks, readTicks, type LogFollower, type Tick } from './images/counter-output.js';
import { exactlyOnce, readAppliedPosts, startOpenLoopLoad, waitForWebdis } from './load/open-loop.js';
import { DEFAULT_HOSTS, startLocalStack } from './local-stack.js';
import type { AzureMetadataServer } from './metadata-servers/azure-metadata-server.js';
import type { PodmanHost } from './podman-host.js';
import { waitFor } from './real-servers/command.js';

/**
 * The evacuation demo (`npm run demo:evacuation`): a spot eviction on "azure" empties the host to "gcp"
 * while a client keeps talking to a service there. The azure host runs Debian's webdis behind the frontman
 * (its clients send POSTs on a fixed schedule through it) and three counters of different sizes and
 * priorities, one of which may stay only in azure; its uploads are capped at 4 MiB/s (the agent's
 * --max-upload-rate), so that the 30 s of an Azure Preempt notice cannot carry everything. The stand-in for
 * Azure's instance metadata (infra/metadata-servers/) first announces a Freeze, which keeps the VM's memory
 * and moves nothing, then the Preempt: `ums evacuations` shows what the policy decided and why, the demo
 * follows each service until nothing that moves is left on the host, destroys the host at the deadline as
 * Azure would, and shows what the clients saw and where each service runs.
 */
const [AZURE, GCP] = DEFAULT_HOSTS as [HostSpec, HostSpec];
/** The evicted host's uplink cap (MiB/s): the services below are sized against it and the 30 s notice. */
const UPLINK_MIB_S = 4;
const WEB = 'web';
const WEB_PRIORITY = 100;
const FRONT_PORT = 80;
/** Counters (localhost/ums/counter:1, random memory of this size): one fits, one does not, one may not leave azure. */
const COUNTERS = [
  { name: 'ledger', memoryMiB: 4, priority: 80, labels: { [POLICY_LABELS.allowedClouds]: 'azure' }, note: 'its data must stay in azure' },
  { name: 'orders', memoryMiB: 8, priority: 50, labels: {}, note: '' },
  { name: 'batch', memoryMiB: 96, priority: 0, labels: {}, note: 'a batch job that can start over' },
] as const;
/** What the policy should decide: these move, the others are left (ledger by its policy, batch by the deadline). */
const MOVES = [WEB, 'orders'];
const RPS = 50;
/** Load before the notice, and in all: it runs past the deadline, so the clients also see the host go. */
const LEAD_MS = 3_000;
const LOAD_MS = 42_000;
/**
 * The clients' patience: the frontman's own hold limit (UMS_FRONTMAN_HOLD_SECONDS, 30 s), past which it answers
 * 503 itself. On this 2-core machine webdis stayed frozen 7-13 s here (infra/demo.ts's single migration: about
 * 5 s) and its clients were held 9-18 s with the drain and the saga's hops around the freeze: a 15 s client
 * gave up, on a loaded day, on requests that the frontman still held and then delivered.
 */
const CLIENT_TIMEOUT_MS = 30_000;

async function main(): Promise<number> {
  const name = `demo-evac-${process.pid}`;
  say(
    `starting the local stack: two hosts on a WAN, each with a stand-in for its cloud's instance metadata, ` +
      `${AZURE.agentId}'s uploads capped at ${UPLINK_MIB_S} MiB/s, webdis behind a frontman...`,
  );
  const started = Date.now();
  const stack = await startLocalStack({
    name,
    dir: join(tmpdir(), `ums-${name}`),
    hosts: [AZURE, GCP],
    serverImages: ['webdis'],
    notices: true,
    hostAgentEnv: { [AZURE.agentId]: { UMS_MAX_UPLOAD_RATE: String(UPLINK_MIB_S) } },
    // One at a time rather than the default two: two uploads on a 4 MiB/s link only share it, so webdis, which
    // goes first, would stay frozen (its clients held) while the next service's bytes take half the link.
    functionEnv: { UMS_EVACUATION_CONCURRENCY: '1' },
    frontman: { services: [{ container: WEB, protocol: 'http', port: WEBDIS_PORT, listenPort: FRONT_PORT }] },
  });
  const followers: Array<LogFollower<Tick>> = [];
  let bus: NatsEventBus | undefined;
  try {
    const azure = stack.hosts.get(AZURE.agentId);
    const gcp = stack.hosts.get(GCP.agentId);
    const metadata = stack.metadata.get(AZURE.agentId) as AzureMetadataServer | undefined;
    const frontman = stack.info.frontman;
    if (!azure || !gcp || !metadata || !frontman) throw new Error('the stack lacks a host, its metadata stand-in or the frontman');
    bus = await connectNatsBus({ ...stack.admin, name: 'demo-evacuation' });
    const { agents, evacuations } = bus;
    say(`stack ready in ${seconds(Date.now() - started)}`);

    await azure.podman([
      'run',
      '-d',
      '--name',
      WEB,
      '-p',
      `${WEBDIS_PORT}:${WEBDIS_PORT}`,
      '--label',
      `${POLICY_LABELS.priority}=${WEB_PRIORITY}`,
      DEFAULT_WEBDIS_IMAGE,
    ]);
    for (const c of COUNTERS) {
      const labels = { [POLICY_LABELS.priority]: String(c.priority), ...c.labels };
      await azure.podman([
        'run',
        '-d',
        '--name',
        c.name,
        ...Object.entries(labels).flatMap(([key, value]) => ['--label', `${key}=${value}`]),
        '-e',
        'COUNTER_TICK_MS=100',
        '-e',
        `COUNTER_MEM_MIB=${c.memoryMiB}`,
        stack.info.image,
      ]);
      followers.push(followTicks(azure.url, c.name));
    }
    const users = await stack.wan.addClient('users');
    const base = `http://${frontman.address}:${FRONT_PORT}/`;
    // The frontman finds the service's host in the agents' registrations (a heartbeat, about 2 s).
    await waitForWebdis(users, base, 60_000);
    // The policy reads each service's labels and measured memory from the registration, and the link from
    // the agent's measure at start: wait for all three, as a notice could come at any time after.
    const all = [WEB, ...COUNTERS.map((c) => c.name)];
    await waitFor(
      async () => {
        const registration = (await agents.get(AZURE.agentId))?.value;
        return (
          registration?.transfer !== undefined &&
          all.every((n) =>
            registration.containers.some((c) => c.name === n && c.state === 'running' && c.traits?.memoryBytes !== undefined),
          )
        );
      },
      `${all.join(', ')} listed by ${AZURE.agentId} with their memory, and its uplink measured`,
      60_000,
    );
    const registration = (await agents.get(AZURE.agentId))?.value;
    say(`\non ${AZURE.agentId}:`);
    say(
      `  ${WEB}: Debian's webdis (${DEFAULT_WEBDIS_IMAGE}), its clients at the frontman ${base}; ${POLICY_LABELS.priority}=${WEB_PRIORITY}`,
    );
    for (const c of COUNTERS) {
      const labels = Object.entries({ [POLICY_LABELS.priority]: String(c.priority), ...c.labels })
        .map(([k, v]) => `${k}=${v}`)
        .join(' ');
      say(`  ${c.name}: a counter holding ${c.memoryMiB} MiB of random memory; ${labels}${c.note ? ` (${c.note})` : ''}`);
    }
    const measured = registration?.transfer?.uploadBytesPerSecond ?? 0;
    say(
      `  its uplink, measured by its agent at start (16 MiB of random bytes to its store): ${mib(measured)}/s, under the --max-upload-rate ${UPLINK_MIB_S} MiB/s`,
    );

    // A notice that does not end the host: memory is kept, so evacuating would freeze every service for nothing.
    const freeze = metadata.schedule({ EventType: 'Freeze' });
    say(`\nAzure's Scheduled Events: a Freeze (${freeze.slice(0, 8)}..., a pause of a few seconds with memory kept, in 15 min)`);
    const fnLog = join(stack.info.dir, 'logs', 'function-evacuateHost.log');
    await waitFor(
      async () => (await readFile(fnLog, 'utf8').catch(() => '')).includes('not evacuating: the notice does not end the host'),
      'the evacuation function to read the Freeze notice',
      30_000,
    );
    say(`$ ums evacuations ${AZURE.agentId}`);
    await ums(stack.info, ['evacuations', AZURE.agentId]);
    metadata.withdraw(freeze);

    say(
      `\nclients: loadtest from ${users.address}, ${RPS} POSTs/s to ${base} on a fixed schedule, ${CLIENT_TIMEOUT_MS / 1000} s timeout, no retries`,
    );
    const load = startOpenLoopLoad(users, {
      url: base,
      rps: RPS,
      durationMs: LOAD_MS,
      timeoutMs: CLIENT_TIMEOUT_MS,
      list: 'posts',
      runId: 'evac',
    });
    const loadStartedAt = await load.started;
    await sleep(LEAD_MS);

    const eventId = metadata.schedule({ EventType: 'Preempt' });
    const noticeAt = Date.now();
    const at = (time: number | string | undefined): string => {
      const t = typeof time === 'string' ? Date.parse(time) : time;
      if (t === undefined || !Number.isFinite(t)) return '?';
      const s = (t - noticeAt) / 1000;
      return `${s >= 0 ? '+' : ''}${s.toFixed(1)} s`;
    };
    say(
      `\nAzure's Scheduled Events: Preempt ${eventId.slice(0, 8)}... for ${AZURE.agentId}: the spot VM is evicted in 30 s (Azure's minimum notice)`,
    );
    let record: EvacuationRecord | undefined;
    await waitFor(
      async () => {
        const current = (await evacuations.get(AZURE.agentId))?.value;
        if (current?.trigger.kind === 'notice' && current.trigger.noticeId === eventId) record = current;
        return record !== undefined;
      },
      'the evacuation decided',
      30_000,
    );
    const decided = record as EvacuationRecord;
    const deadline = Date.parse(decided.deadline ?? '');
    if (!Number.isFinite(deadline)) throw new Error('the evacuation of a Preempt notice has no deadline');
    say(`${at(decided.startedAt)}: the evacuation function decided (the deadline is ${at(deadline)}, Azure's NotBefore)`);
    say(`$ ums evacuations ${AZURE.agentId}`);
    await ums(stack.info, ['evacuations', AZURE.agentId]);

    say(`\nfollowing it (times from the notice):`);
    const told = new Map<string, string>();
    const follow = async (): Promise<EvacuationRecord> => {
      const current = (await evacuations.get(AZURE.agentId))?.value ?? decided;
      for (const item of current.items) {
        const line = progressLine(item, current, at);
        if (line !== undefined && told.get(item.container) !== line) {
          told.set(item.container, line);
          say(`  ${line}`);
        }
      }
      return current;
    };
    let emptiedAt: number | undefined;
    while (Date.now() < deadline) {
      const current = await follow();
      if (emptiedAt === undefined && current.items.every((i) => i.state !== 'pending' && i.state !== 'moving')) {
        emptiedAt = Math.max(...current.items.map((i) => Date.parse(i.sentAt ?? '') || 0));
        const staying = current.items.filter((i) => i.state === 'left').map((i) => i.container);
        const spare = (deadline - emptiedAt) / 1000;
        say(
          `  ${at(emptiedAt)}: nothing that moves is left on ${AZURE.agentId}, ${spare > 0 ? `${spare.toFixed(1)} s before the deadline` : 'AFTER the deadline'}` +
            (staying.length > 0 ? `; still running there, as decided: ${staying.join(', ')}` : ''),
        );
      }
      await sleep(250);
    }
    const approvals = metadata.approvals.filter((a) => a.eventId === eventId);
    say(
      approvals.length > 0
        ? `  the agent approved the event at ${at(approvals[0]?.at)} (the host was empty): Azure may take the VM at once`
        : `  the agent did not approve the event early: services still run on the host (those left), so Azure waits for NotBefore`,
    );

    say(
      `\n${at(Date.now())}: the deadline: Azure takes the VM back. Destroying ${AZURE.agentId}: its agent, its Podman and everything on it`,
    );
    await stack.services.get(`agent-${AZURE.agentId}`)?.kill();
    await azure.destroy();
    for (const follower of followers) follower.stop();
    await waitFor(async () => (await follow()).state !== 'evacuating', 'the evacuation to end', 90_000);
    const run = await load.done;
    const final = (await evacuations.get(AZURE.agentId))?.value ?? decided;

    say(`\n$ ums evacuations ${AZURE.agentId}`);
    await ums(stack.info, ['evacuations', AZURE.agentId]);

    say(
      `\nwhat the HTTP clients saw, through the frontman (their load ran from ${at(loadStartedAt)} to ${at(loadStartedAt + LOAD_MS)}, across the eviction):`,
    );
    const report = exactlyOnce(run, await readAppliedPosts(users, base, 'posts'));
    const { summary } = run;
    say(
      `  ${summary.sent} of ${summary.scheduled} requests sent on schedule, ${summary.failed} failed, ${summary.non2xx} not 2xx; latency from the scheduled send: ` +
        `p50 ${summary.latencyMs.p50.toFixed(0)} ms, p99 ${summary.latencyMs.p99.toFixed(0)} ms, max ${summary.latencyMs.max.toFixed(0)} ms`,
    );
    say(
      `  POSTs applied exactly once: ${report.appliedOnce} of ${report.acknowledged} acknowledged; applied twice: ${report.duplicates.length}; acknowledged but missing: ${report.missing.length}`,
    );
    const webItem = final.items.find((i) => i.container === WEB);
    const webMigration = (await listMigrations(stack.info)).find((m) => m.migrationId === webItem?.migrationId);
    if (webMigration) {
      const timeline = timelineOf(webMigration);
      const written = run.records.filter((r) => r.scheduledAt < Date.parse(webMigration.times.checkpointStartedAt ?? '')).length;
      say(
        `  ${WEB} was frozen ${seconds(timeline.frozenMs)} (checkpoint on ${AZURE.agentId} to restore on ${GCP.agentId}); ${written} of the POSTs came before the freeze, to ${AZURE.agentId}`,
      );
      say(`  its migration: ${timeline.phases.map((p) => `${p.name} ${seconds(p.ms)}`).join(', ')}; archive ${mib(timeline.archiveBytes)}`);
      if (webMigration.frontman) say(`  frontman ${formatFrontman(webMigration.frontman)}`);
    }

    say(`\nwhere each service runs now (${AZURE.agentId} is gone):`);
    let ok = summary.failed === 0 && summary.non2xx === 0 && report.ok;
    for (const item of final.items) {
      const shouldMove = MOVES.includes(item.container);
      const where = (await runsOn(gcp, item.container)) ? [GCP.agentId] : [];
      const sentInTime = item.sentAt !== undefined && Date.parse(item.sentAt) < deadline;
      if (!shouldMove) {
        ok &&= item.state === 'left' && where.length === 0;
        say(`  ${item.container}: left on ${AZURE.agentId} as decided, and gone with it (${item.state})`);
        continue;
      }
      let counts = '';
      const follower = followers[COUNTERS.findIndex((c) => c.name === item.container)];
      if (follower !== undefined) {
        const ticks = joinTicks(follower.ticks, await readTicks(gcp.url, item.container));
        const flow = continuity(ticks);
        ok &&= flow.continuous && ticks.length > follower.ticks.length;
        counts =
          `; count ${ticks[0]?.count ?? '?'} -> ${ticks.at(-1)?.count ?? '?'}: ${flow.continuous ? 'no value lost or repeated' : `BROKEN at ${JSON.stringify(flow.break)}`}` +
          `, longest pause ${seconds(flow.maxGapMs)}`;
      }
      ok &&= item.state === 'moved' && where.length === 1 && sentInTime;
      say(
        `  ${item.container}: ${item.state}, runs once, on ${where.join(', ') || 'NOTHING'}; its last byte left ${AZURE.agentId} at ${at(item.sentAt)}` +
          `${sentInTime ? '' : ' (AFTER the deadline)'}${counts}`,
      );
    }
    return ok ? 0 : 1;
  } finally {
    for (const follower of followers) follower.stop();
    await bus?.close();
    say('\nstopping the stack...');
    await stack.stop();
  }
}

/** One line for a change in an item, from the notice; undefined for states the decision already showed. */
function progressLine(
  item: EvacuationItem,
  record: EvacuationRecord,
  at: (time: number | string | undefined) => string,
): string | undefined {
  const predicted = item.predictedMs === undefined ? '' : `, predicted ${seconds(item.predictedMs)} from the decision`;
  switch (item.state) {
    case 'moving':
      return `${at(item.startedAt)}: ${item.container} -> ${item.destination ?? '?'}: moving (${item.migrationId ?? ''}, frozen and sent)`;
    case 'sent':
      return `${at(item.sentAt)}: ${item.container}: sent, its last byte has left the host (${seconds(Date.parse(item.sentAt ?? '') - Date.parse(record.startedAt))} from the decision${predicted})`;
    case 'moved':
      return `${at(item.endedAt)}: ${item.container}: moved, runs on ${item.destination ?? '?'}`;
    case 'failed':
      return `${at(item.endedAt)}: ${item.container}: FAILED: ${item.failure?.reason ?? item.reason}`;
    case 'left':
      // Left at the decision: `ums evacuations` said why. Left later: its turn came too late.
      return item.endedAt === undefined ? undefined : `${at(item.endedAt)}: ${item.container}: left: ${item.reason}`;
    default:
      return undefined;
  }
}

async function runsOn(host: PodmanHost, container: string): Promise<boolean> {
  const { stdout } = await host.podman(['ps', '--filter', `name=^${container}$`, '--format', '{{.Names}}']);
  return stdout.trim() === container;
}

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

runDemo(main);
