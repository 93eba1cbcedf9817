/**
 * The agents' watchers of their cloud's eviction and maintenance notices (agents/notices/), each against a local
 * stand-in for its cloud's metadata service (infra/metadata-servers/).
 *
 * No cloud is reachable from this machine, and the real metadata services answer only inside a VM of their
 * cloud: these tests check the watchers against the documented formats and request rules as the stand-ins
 * serve them (Azure Scheduled Events 2020-07-01, the GCE metadata server's preempted and maintenance-event
 * keys with wait_for_change, EC2's IMDSv2 with spot/instance-action, events/maintenance/scheduled and
 * events/recommendations/rebalance), not against the clouds themselves. What the stand-ins leave out is
 * written at the top of each of them (for instance: Azure's slow first call, GCE's rule that the 60 s
 * maintenance warning goes only to a VM that asked since the last maintenance, IMDS throttling).
 *
 * Run: npx tsc -p tsconfig.json && node --test dist/test/integration/host-notices.test.js (no root, a few seconds).
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { parseEvent, toWire, type UmsEvent } from '../../core/events.js';
import type { HostNotice } from '../../core/host-notice.js';
import type { Logger } from '../../core/log.js';
import { AwsInstanceNotices } from '../../agents/notices/aws-instance-notices.js';
import { AzureScheduledEvents } from '../../agents/notices/azure-scheduled-events.js';
import { GcpMetadataNotices } from '../../agents/notices/gcp-metadata-notices.js';
import { NoticePublisher } from '../../agents/notices/notice-publisher.js';
import {
  MetadataAnswerError,
  MetadataUnreachableError,
  type NoticeReadError,
  type NoticeWatcher,
  type NoticeWatcherEvents,
} from '../../agents/notices/notice-watcher.js';
import { AwsMetadataServer, awsDate } from '../../infra/metadata-servers/aws-metadata-server.js';
import { AzureMetadataServer } from '../../infra/metadata-servers/azure-metadata-server.js';
import { GcpMetadataServer } from '../../infra/metadata-servers/gcp-metadata-server.js';
import type { MetadataServer } from '../../infra/metadata-servers/metadata-server.js';

/** Fast loops for tests; the defaults are the clouds' recommendations (1 s Azure, 5 s AWS, 60 s long-polls). */
const FAST = { pollMs: 40, backoffMs: 40, maxBackoffMs: 150, requestTimeoutMs: 2_000 };
const VM = 'ums-azure-eastus-1';

type LogLine = Record<string, unknown> & { msg?: string; err?: { message?: string } };

function capturingLogger(): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) lines.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  return { log: pino({ level: 'debug' }, sink), lines };
}

/** The next `name` event of the watcher that satisfies `accept`, or a failure naming what was awaited. */
function next<E extends keyof NoticeWatcherEvents>(
  watcher: NoticeWatcher,
  name: E,
  accept: (value: NoticeWatcherEvents[E][0]) => boolean = () => true,
  timeoutMs = 4_000,
): Promise<NoticeWatcherEvents[E][0]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      watcher.off(name, listener as never);
      reject(new Error(`no matching '${name}' within ${timeoutMs} ms`));
    }, timeoutMs);
    const listener = (value: NoticeWatcherEvents[E][0]) => {
      if (!accept(value)) return;
      clearTimeout(timer);
      watcher.off(name, listener as never);
      resolve(value);
    };
    watcher.on(name, listener as never);
  });
}

async function until(what: string, condition: () => boolean, timeoutMs = 4_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function started<S extends MetadataServer>(server: S): Promise<S> {
  await server.start();
  cleanups.push(() => server.stop());
  return server;
}

function watching<W extends NoticeWatcher>(watcher: W): W {
  watcher.start();
  cleanups.push(() => watcher.stop());
  return watcher;
}

const seconds = (iso: string | undefined): number => Math.floor(Date.parse(iso ?? 'x') / 1000);

describe('Azure Scheduled Events', () => {
  it("reads the VM's name, reports its Preempt as an eviction with NotBefore as the deadline, its Freeze as none, and ignores other VMs' events", async () => {
    const server = await started(new AzureMetadataServer({ vmName: VM }));
    const { log } = capturingLogger();
    const watcher = watching(new AzureScheduledEvents({ baseUrl: server.url, log, ...FAST }));

    const preempt = server.schedule({ EventType: 'Preempt' });
    const notice = await next(watcher, 'notice', (n) => n.noticeId === preempt);
    assert.equal(notice.cloud, 'azure');
    assert.equal(notice.kind, 'preemption');
    assert.equal(notice.evicts, true);
    const listed = (server.state() as { events: Array<{ EventId: string; NotBefore: string }> }).events.find((e) => e.EventId === preempt);
    assert.equal(seconds(notice.deadline), seconds(listed?.NotBefore), 'the deadline is the event NotBefore');
    assert.ok(Date.parse(notice.deadline ?? '') - Date.now() <= 30_000, 'a Preempt gives 30 s');
    assert.match(notice.summary, /Preempt Scheduled; not before .* GMT; source Platform/);

    const freeze = server.schedule({ EventType: 'Freeze' });
    const paused = await next(watcher, 'notice', (n) => n.noticeId === freeze);
    assert.equal(paused.kind, 'freeze');
    assert.equal(paused.evicts, false, 'a Freeze keeps memory: not an eviction');

    server.schedule({ EventType: 'Reboot', Resources: ['another-vm'] });
    await sleep(200);
    assert.deepEqual(
      watcher
        .current()
        .map((n) => n.noticeId)
        .sort(),
      [freeze, preempt].sort(),
      "another VM's reboot is not this host's notice",
    );

    const reads = server.requests.filter((r) => r.path.startsWith('/metadata/'));
    assert.ok(
      reads.some((r) => r.path.startsWith('/metadata/instance/compute/name')),
      'the VM name came from compute/name',
    );
    assert.ok(
      reads.every((r) => r.headers.metadata === 'true' && r.path.includes('api-version=')),
      'Metadata: true and api-version on every request',
    );
  });

  it('reports an event that starts as a change with its deadline kept, and one that leaves the list as withdrawn', async () => {
    const server = await started(new AzureMetadataServer({ vmName: VM }));
    const { log } = capturingLogger();
    const watcher = watching(new AzureScheduledEvents({ baseUrl: server.url, log, vmName: VM, ...FAST }));

    const id = server.schedule({ EventType: 'Redeploy' });
    const scheduled = await next(watcher, 'notice', (n) => n.noticeId === id);
    assert.equal(scheduled.kind, 'redeploy');
    assert.equal(scheduled.evicts, true);

    server.startEvent(id);
    const begun = await next(watcher, 'notice', (n) => n.noticeId === id);
    assert.match(begun.summary, /^Redeploy Started/);
    assert.equal(begun.deadline, scheduled.deadline, 'NotBefore empties when the event starts; the deadline stays');
    assert.equal(begun.observedAt, scheduled.observedAt);

    server.withdraw(id);
    const gone = await next(watcher, 'withdrawn', (n) => n.noticeId === id);
    assert.ok(gone.withdrawnAt);
    assert.deepEqual(watcher.current(), []);
  });

  it('approves an event with StartRequests naming its EventId, and leaves an event shared with other VMs to its deadline', async () => {
    const server = await started(new AzureMetadataServer({ vmName: VM }));
    const { log } = capturingLogger();
    const watcher = watching(new AzureScheduledEvents({ baseUrl: server.url, log, vmName: VM, ...FAST }));

    const id = server.schedule({ EventType: 'Terminate' });
    await next(watcher, 'notice', (n) => n.noticeId === id);
    assert.deepEqual(await watcher.acknowledge(id), { acknowledged: true });
    assert.deepEqual(
      server.approvals.map((a) => a.eventId),
      [id],
    );
    const post = server.requests.find((r) => r.method === 'POST');
    assert.equal(post?.headers.metadata, 'true');
    // Azure starts an approved event: the watcher sees it go Started.
    await next(watcher, 'notice', (n) => n.noticeId === id && n.summary.startsWith('Terminate Started'));

    const shared = server.schedule({ EventType: 'Reboot', Resources: [VM, 'ums-azure-eastus-2'] });
    await next(watcher, 'notice', (n) => n.noticeId === shared);
    const outcome = await watcher.acknowledge(shared);
    assert.equal(outcome.acknowledged, false);
    assert.match(outcome.acknowledged ? '' : outcome.reason, /also covers ums-azure-eastus-2/);
    assert.equal(server.approvals.length, 1, 'nothing was approved for the other VM');
    assert.equal((await watcher.acknowledge('no-such-event')).acknowledged, false);
  });

  it('says what is wrong with a garbled answer or event and keeps going; recovers when the service comes back', async () => {
    const server = await started(new AzureMetadataServer({ vmName: VM }));
    const { log, lines } = capturingLogger();
    const watcher = watching(new AzureScheduledEvents({ baseUrl: server.url, log, vmName: VM, ...FAST }));
    await until('a first read', () => server.requests.length > 0);

    server.mode = 'garbage';
    const garbled = await next(watcher, 'read-failed');
    assert.ok(garbled instanceof MetadataAnswerError);
    assert.match(garbled.message, /azure scheduledevents answered in an undocumented format: not JSON: "<html>/);
    assert.ok(lines.some((l) => l.msg === 'could not read the notices; retrying' && typeof l.retryInMs === 'number'));

    server.mode = 'documented';
    server.injectMalformed({ EventId: 'BAD-1', EventType: 'Hibernate', Resources: [VM], EventStatus: 'Scheduled', NotBefore: 'tomorrow' });
    const good = server.schedule({ EventType: 'Preempt' });
    // Both come from the same read: listen for both before it.
    const [problem] = await Promise.all([
      next(watcher, 'read-failed', (e) => e.message.includes('BAD-1')),
      next(watcher, 'notice', (n) => n.noticeId === good),
    ]);
    assert.match(problem.message, /event BAD-1: .*EventType/);
    assert.match(problem.message, /NotBefore: an RFC 1123 date/);
    // The bad event is reported once, not on every read.
    await sleep(200);
    assert.equal(lines.filter((l) => l.msg === 'ignored an item of the metadata answer').length, 1);

    await server.stop();
    const down = await next(watcher, 'read-failed');
    assert.ok(down instanceof MetadataUnreachableError);
    assert.match(
      down.message,
      /cannot reach azure scheduledevents at http:\/\/127\.0\.0\.1:\d+: (ECONNREFUSED|ECONNRESET|UND_ERR_SOCKET)\b/,
    );
    assert.ok(down.cause, 'the network error is kept as the cause');
    assert.equal(watcher.current().length, 1, 'an unreachable service withdraws nothing');

    await server.start();
    const later = server.schedule({ EventType: 'Reboot' });
    await next(watcher, 'notice', (n) => n.noticeId === later);
    assert.ok(lines.some((l) => l.msg === 'the metadata service answers again'));
  });

  it("the agent's publisher states each notice as a host.notice fact, retries the bus, and approves the eviction once the host is empty", async () => {
    const server = await started(new AzureMetadataServer({ vmName: VM }));
    const { log } = capturingLogger();
    const watcher = new AzureScheduledEvents({ baseUrl: server.url, log, vmName: VM, ...FAST });
    const published: UmsEvent[] = [];
    let busDown = true;
    let empty = false;
    const publisher = new NoticePublisher({
      agentId: 'azure-eastus-1',
      watcher,
      bus: {
        publishEvent: async (event) => {
          if (busDown) throw new Error('the broker is unreachable');
          published.push(event);
        },
      },
      log,
      hostIsEmpty: async () => empty,
      checkEveryMs: 50,
    });
    publisher.start();
    cleanups.push(() => publisher.stop());

    const id = server.schedule({ EventType: 'Preempt' });
    await sleep(300);
    assert.equal(published.length, 0, 'the bus is down');
    busDown = false;
    await until('the host.notice fact', () => published.length > 0);
    const fact = parseEvent(JSON.parse(JSON.stringify(toWire(published[0] as UmsEvent))));
    assert.equal(fact.name, 'host.notice');
    assert.equal(fact.type, 'dev.ums.host.notice.v1');
    assert.equal(fact.subject, 'azure-eastus-1');
    if (fact.name !== 'host.notice') return;
    assert.equal(fact.data.agent, 'azure-eastus-1');
    assert.equal(fact.data.noticeId, id);
    assert.equal(fact.data.kind, 'preemption');
    assert.equal(fact.data.evicts, true);
    assert.ok(fact.data.deadline);

    await sleep(200);
    assert.equal(server.approvals.length, 0, 'not approved while the host still holds something');
    empty = true;
    await until('the approval', () => server.approvals.length === 1);
    assert.equal(server.approvals[0]?.eventId, id);

    server.withdraw(id);
    await until('the withdrawal fact', () => published.some((e) => e.name === 'host.notice-withdrawn'));
    const withdrawn = published.find((e) => e.name === 'host.notice-withdrawn');
    assert.equal(withdrawn?.name === 'host.notice-withdrawn' && withdrawn.data.noticeId, id);
  });
});

describe('GCE metadata server', () => {
  it('long-polls preempted with its ETag and reports TRUE as an eviction due 30 s after it was seen', async () => {
    const server = await started(new GcpMetadataServer());
    const { log } = capturingLogger();
    const watcher = watching(new GcpMetadataNotices({ baseUrl: server.url, log, ...FAST, waitSeconds: 5 }));
    await until('both keys long-polled', () => (server.state() as { waiting: number }).waiting === 2);

    const asked = Date.now();
    server.preempt();
    const notice = await next(watcher, 'notice', (n) => n.noticeId === 'preempted');
    assert.ok(Date.now() - asked < 2_000, 'the waiting request was answered at the change, not after its 5 s timeout');
    assert.equal(notice.cloud, 'gcp');
    assert.equal(notice.kind, 'preemption');
    assert.equal(notice.evicts, true);
    assert.equal(Date.parse(notice.deadline ?? '') - Date.parse(notice.observedAt), 30_000);

    const polls = server.requests.filter((r) => r.path.includes('wait_for_change=true'));
    assert.ok(polls.length >= 2);
    assert.ok(polls.every((r) => /last_etag=[0-9a-f]{16}/.test(r.path) && r.path.includes('timeout_sec=5')));
    assert.ok(
      server.requests.every((r) => r.headers['metadata-flavor'] === 'Google'),
      'Metadata-Flavor: Google on every request',
    );
    // The stand-in keeps the documented rule the watcher relies on.
    const bare = await fetch(`${server.url}/computeMetadata/v1/instance/preempted`);
    assert.equal(bare.status, 403);
    assert.match(await bare.text(), /Missing Metadata-Flavor:Google header/);
  });

  it('reports MIGRATE_ON_HOST_MAINTENANCE as no eviction, NONE as withdrawn, TERMINATE_ON_HOST_MAINTENANCE as an eviction in 60 s', async () => {
    const server = await started(new GcpMetadataServer());
    const { log } = capturingLogger();
    const watcher = watching(new GcpMetadataNotices({ baseUrl: server.url, log, ...FAST, waitSeconds: 5 }));
    await until('both keys long-polled', () => (server.state() as { waiting: number }).waiting === 2);

    server.maintenance('MIGRATE_ON_HOST_MAINTENANCE');
    const migrate = await next(watcher, 'notice', (n) => n.noticeId === 'maintenance-event');
    assert.equal(migrate.kind, 'maintenance-live-migrate');
    assert.equal(migrate.evicts, false, 'Google live-migrates the VM: its containers keep running');

    server.maintenance('NONE');
    await next(watcher, 'withdrawn', (n) => n.noticeId === 'maintenance-event');

    server.maintenance('TERMINATE_ON_HOST_MAINTENANCE');
    const terminate = await next(watcher, 'notice', (n) => n.noticeId === 'maintenance-event');
    assert.equal(terminate.kind, 'maintenance-terminate');
    assert.equal(terminate.evicts, true);
    assert.equal(Date.parse(terminate.deadline ?? '') - Date.parse(terminate.observedAt), 60_000);
  });

  it('says what is wrong with an undocumented value and keeps going; recovers when the server comes back', async () => {
    const server = await started(new GcpMetadataServer());
    const { log } = capturingLogger();
    const watcher = watching(new GcpMetadataNotices({ baseUrl: server.url, log, ...FAST, waitSeconds: 1 }));
    await until('a first read', () => server.requests.length >= 2);

    server.mode = 'garbage';
    const garbled = await next(watcher, 'read-failed');
    assert.ok(garbled instanceof MetadataAnswerError);
    assert.match(
      garbled.message,
      /gcp metadata instance\/(preempted|maintenance-event) answered in an undocumented format: "<html>.*" is not a documented value/,
    );
    server.mode = 'documented';

    await server.stop();
    const down = await next(watcher, 'read-failed', (e) => e instanceof MetadataUnreachableError);
    assert.match(down.message, /(ECONNREFUSED|ECONNRESET|UND_ERR_SOCKET)\b/);
    await server.start();
    server.preempt();
    const notice = await next(watcher, 'notice', (n) => n.noticeId === 'preempted');
    assert.equal(notice.evicts, true);
  });
});

describe('EC2 instance metadata (IMDSv2)', () => {
  it('reports a spot interruption as an eviction at its time, and its end as withdrawn, every read with a session token', async () => {
    const server = await started(new AwsMetadataServer());
    const { log } = capturingLogger();
    const watcher = watching(new AwsInstanceNotices({ baseUrl: server.url, log, ...FAST }));

    const at = new Date(Date.now() + 120_000);
    server.interrupt('terminate', at);
    const notice = await next(watcher, 'notice', (n) => n.noticeId === 'spot-instance-action');
    assert.equal(notice.cloud, 'aws');
    assert.equal(notice.kind, 'preemption');
    assert.equal(notice.evicts, true);
    assert.equal(seconds(notice.deadline), seconds(at.toISOString()));
    assert.match(notice.summary, /spot interruption: terminate at/);

    server.withdraw('spot-instance-action');
    await next(watcher, 'withdrawn', (n) => n.noticeId === 'spot-instance-action');

    assert.equal(server.tokens.refused, 0);
    const gets = server.requests.filter((r) => r.method === 'GET');
    assert.ok(gets.length > 0 && gets.every((r) => typeof r.headers['x-aws-ec2-metadata-token'] === 'string'));
    const puts = server.requests.filter((r) => r.method === 'PUT');
    assert.ok(puts.every((r) => r.path === '/latest/api/token' && r.headers['x-aws-ec2-metadata-token-ttl-seconds'] === '21600'));
    // The stand-in keeps the documented rules the watcher relies on.
    assert.equal((await fetch(`${server.url}/latest/meta-data/spot/instance-action`)).status, 401);
    assert.equal((await fetch(`${server.url}/latest/api/token`, { method: 'PUT' })).status, 400);
  });

  it('reports scheduled reboots and stops as evictions from NotBefore, system-maintenance and rebalance advice as none', async () => {
    const server = await started(new AwsMetadataServer());
    const { log } = capturingLogger();
    const watcher = watching(new AwsInstanceNotices({ baseUrl: server.url, log, ...FAST }));

    const notBefore = new Date(Date.now() + 3 * 24 * 3_600_000);
    const reboot = server.scheduleEvent({ Code: 'system-reboot', NotBefore: awsDate(notBefore), Description: 'scheduled reboot' });
    const rebooting = await next(watcher, 'notice', (n) => n.noticeId === reboot);
    assert.equal(rebooting.kind, 'reboot');
    assert.equal(rebooting.evicts, true);
    assert.equal(seconds(rebooting.deadline), seconds(notBefore.toISOString()));

    const maintenance = server.scheduleEvent({ Code: 'system-maintenance' });
    assert.equal((await next(watcher, 'notice', (n) => n.noticeId === maintenance)).evicts, false);
    const stop = server.scheduleEvent({ Code: 'instance-stop' });
    assert.equal((await next(watcher, 'notice', (n) => n.noticeId === stop)).kind, 'stop');
    server.scheduleEvent({ Code: 'instance-retirement', State: 'completed' });

    server.recommendRebalance();
    const advice = await next(watcher, 'notice', (n) => n.noticeId === 'rebalance-recommendation');
    assert.equal(advice.kind, 'rebalance-advisory');
    assert.equal(advice.evicts, false);
    assert.equal(advice.deadline, undefined);

    assert.deepEqual(
      watcher
        .current()
        .map((n) => n.kind)
        .sort(),
      ['maintenance', 'rebalance-advisory', 'reboot', 'stop'],
      'a completed event is not a notice',
    );
  });

  it('renews its session token before it expires, and at once when the service refuses it', async () => {
    const server = await started(new AwsMetadataServer());
    const { log } = capturingLogger();
    const failures: NoticeReadError[] = [];
    const watcher = new AwsInstanceNotices({ baseUrl: server.url, log, ...FAST, tokenTtlSeconds: 1 });
    watcher.on('read-failed', (e) => failures.push(e));
    watching(watcher);

    await until('a second token', () => server.tokens.issued >= 2, 3_000);
    assert.equal(server.tokens.refused, 0, 'renewed before expiry: no read was refused');

    await until('a few reads with it', () => server.requests.filter((r) => r.method === 'GET').length > 6);
    const issued = server.tokens.issued;
    server.expireTokens();
    server.interrupt('stop');
    const notice = await next(watcher, 'notice', (n) => n.noticeId === 'spot-instance-action');
    assert.match(notice.summary, /stop/);
    assert.ok(server.tokens.refused >= 1, 'the forgotten token was refused');
    assert.ok(server.tokens.issued > issued, 'and a new one asked for');
    assert.deepEqual(
      failures.map((f) => f.message),
      [],
      'no read failed for it',
    );
  });

  it('says what is wrong with a garbled answer and keeps going; recovers when the service comes back', async () => {
    const server = await started(new AwsMetadataServer());
    const { log } = capturingLogger();
    const watcher = watching(new AwsInstanceNotices({ baseUrl: server.url, log, ...FAST }));
    await until('a first read', () => server.requests.some((r) => r.method === 'GET'));

    server.mode = 'garbage';
    const garbled = await next(watcher, 'read-failed', (e) => e.source === 'aws events/maintenance/scheduled');
    assert.ok(garbled instanceof MetadataAnswerError);
    assert.match(garbled.problem, /^not JSON: "<html>/);

    server.mode = 'documented';
    await server.stop();
    const down = await next(watcher, 'read-failed', (e) => e instanceof MetadataUnreachableError);
    assert.match(down.message, /(ECONNREFUSED|ECONNRESET|UND_ERR_SOCKET)\b/);
    await server.start();
    server.interrupt('hibernate');
    const notice: HostNotice = await next(watcher, 'notice', (n) => n.noticeId === 'spot-instance-action');
    assert.equal(notice.evicts, true);
  });
});

describe("the VM's own id, by which the clouds' event services' notices find the agent", () => {
  it('each watcher reads it from its metadata service as the event services name the VM', async () => {
    const { log } = capturingLogger();
    const signal = AbortSignal.timeout(4_000);
    const azure = await started(new AzureMetadataServer({ vmName: VM }));
    assert.equal(
      await new AzureScheduledEvents({ baseUrl: azure.url, log, ...FAST }).readInstanceId(signal),
      `/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ums/providers/Microsoft.Compute/virtualMachines/${VM}`,
    );
    const gcp = await started(new GcpMetadataServer({ instanceId: '4633012345678901234' }));
    assert.equal(await new GcpMetadataNotices({ baseUrl: gcp.url, log, ...FAST }).readInstanceId(signal), '4633012345678901234');
    const aws = await started(new AwsMetadataServer({ instanceId: 'i-0abcdef1234567890' }));
    assert.equal(await new AwsInstanceNotices({ baseUrl: aws.url, log, ...FAST }).readInstanceId(signal), 'i-0abcdef1234567890');
    // A garbled answer is said to be one, not registered.
    gcp.mode = 'garbage';
    await assert.rejects(new GcpMetadataNotices({ baseUrl: gcp.url, log, ...FAST }).readInstanceId(signal), MetadataAnswerError);
  });
});
