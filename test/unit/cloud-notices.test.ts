import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { agentPrincipal, FUNCTIONS_PRINCIPAL, mayState, publisherOf } from '../../core/event-identity.js';
import { subjects } from '../../core/event-bus.js';
import { HOST_SCOPE, makeEvent, parseEvent, toWire, type EventOf } from '../../core/events.js';
import { eventBridgeNotices } from '../../functions/cloud-notices/aws-eventbridge.js';
import { allowedWebhookOrigin, eventGridNotices } from '../../functions/cloud-notices/azure-event-grid.js';
import { CloudEventFormatError, noticeIdFrom, type CloudNotice, type Translation } from '../../functions/cloud-notices/cloud-notice.js';
import { eventarcNotices } from '../../functions/cloud-notices/gcp-eventarc.js';
import { fact, ingressAuth, IngressConfigError, verifyNoticeKey } from '../../functions/cloud-notice-ingress.js';
import { repoPath } from '../../infra/repo-paths.js';

/*
 * The translations of the clouds' event services' notices (functions/cloud-notices/) against fixtures written from
 * each service's documented examples (test/fixtures/cloud-notices/README.md says which): per cloud an evicting
 * notice, one that keeps the host (a freeze, a live migration, an advisory), and the end of one; garbled and forged
 * deliveries refused with the reason; the facts they become are the functions' word, not an agent's.
 */

const AZURE_VM =
  '/subscriptions/6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f/resourceGroups/ums-eastus/providers/Microsoft.Compute/virtualMachines/ums-azure-eastus-1';
const GCE_INSTANCE = '4633012345678901234';
const EC2_INSTANCE = 'i-0abcdef1234567890';

async function fixture(name: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(repoPath('test', 'fixtures', 'cloud-notices', `${name}.json`), 'utf8')) as Record<string, unknown>;
}

function only(translation: Translation): CloudNotice {
  assert.equal(translation.notices.length, 1, JSON.stringify(translation));
  return translation.notices[0] as CloudNotice;
}

/** Every notice must make a valid fact (the evicts rule, the id grammar, the reporter). */
function assertStatable(notice: CloudNotice): void {
  const event = fact(notice, 'some-agent');
  assert.deepEqual(parseEvent(JSON.parse(JSON.stringify(toWire(event)))).data, event.data);
}

const refusal = (service: string, pattern: RegExp) => (error: unknown) =>
  error instanceof CloudEventFormatError && error.service === service && pattern.test(error.problem);

describe('Azure: Event Grid health resources events (CloudEvents 1.0)', () => {
  it('a Spot VM preempted: an evicting notice for the VM, due when it occurred, reported by Event Grid', async () => {
    const delivered = await fixture('azure-preempted');
    const notice = only(eventGridNotices(delivered));
    assert.equal(notice.instance, AZURE_VM);
    assert.equal(notice.cloud, 'azure');
    assert.equal(notice.kind, 'preemption');
    assert.equal(notice.evicts, true);
    assert.equal(notice.withdrawn, false);
    assert.equal(notice.deadline, '2026-03-02T10:15:07.4312245Z');
    assert.equal(notice.noticeId, 'event-grid:2b8c5e1a-7f3d-4c2e-9a6b-1d0e8f7c6b5a');
    assert.deepEqual(notice.reportedBy, {
      service: 'event-grid',
      eventId: '2b8c5e1a-7f3d-4c2e-9a6b-1d0e8f7c6b5a',
      eventSource: '/subscriptions/6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f',
    });
    assert.match(notice.summary, /^VirtualMachinePreempted; Preempted; Platform Initiated, Unplanned; If you're running a Spot/);
    assertStatable(notice);
  });

  it('a planned freeze: a notice that keeps the host, withdrawn by the annotation that ends it (one notice id for both)', async () => {
    const started = only(eventGridNotices(await fixture('azure-freeze-started')));
    assert.equal(started.kind, 'freeze');
    assert.equal(started.evicts, false);
    assert.equal(started.withdrawn, false);
    const ended = only(eventGridNotices(await fixture('azure-freeze-succeeded')));
    assert.equal(ended.withdrawn, true);
    assert.equal(ended.kind, 'freeze');
    assert.equal(ended.deadline, undefined);
    assert.equal(ended.noticeId, started.noticeId);
    for (const notice of [started, ended]) assertStatable(notice);
  });

  it("the documentation's two examples: a deallocation stops the VM; an availability change announces nothing", async () => {
    const stop = only(eventGridNotices(await fixture('azure-deallocation-initiated')));
    assert.equal(stop.kind, 'stop');
    assert.equal(stop.evicts, true);
    const availability = eventGridNotices(await fixture('azure-availability-changed'));
    assert.deepEqual(availability.notices, []);
    assert.match(availability.ignored[0]?.reason ?? '', /availability change \(Available\) announces nothing/);
  });

  it('an annotation of the past (a live migration that succeeded) is taken and announces nothing', async () => {
    const event = await fixture('azure-preempted');
    const data = event.data as { resourceInfo: { properties: Record<string, unknown> } };
    data.resourceInfo.properties.annotationName = 'LiveMigrationSucceeded';
    const translation = eventGridNotices(event);
    assert.deepEqual(translation.notices, []);
    assert.match(translation.ignored[0]?.reason ?? '', /LiveMigrationSucceeded announces nothing/);
  });

  it('a batch is taken whole: two notices, or, with one garbled event, none and the reason naming it', async () => {
    const batch = [await fixture('azure-preempted'), await fixture('azure-freeze-started')];
    assert.deepEqual(
      eventGridNotices(batch).notices.map((n) => n.kind),
      ['preemption', 'freeze'],
    );
    const garbled = [batch[0], { ...batch[1], data: { resourceInfo: { name: 'x' } } }];
    assert.throws(() => eventGridNotices(garbled), refusal('event-grid', /^event #1: data\.resourceInfo\./));
    assert.throws(() => eventGridNotices([]), refusal('event-grid', /empty batch/));
  });

  it('refuses what Event Grid does not send: another event type, another schema, a resource that is no VM', async () => {
    const event = await fixture('azure-preempted');
    assert.throws(() => eventGridNotices({ ...event, type: 'Microsoft.Storage.BlobCreated' }), refusal('event-grid', /^type: /));
    const { specversion: _specversion, ...eventGridSchema } = event;
    assert.throws(() => eventGridNotices({ ...eventGridSchema, eventType: event.type }), refusal('event-grid', /specversion/));
    const data = structuredClone(event.data) as { resourceInfo: { properties: Record<string, unknown> } };
    data.resourceInfo.properties.targetResourceId = '/subscriptions/x/resourceGroups/y/providers/Microsoft.Storage/storageAccounts/z';
    assert.throws(() => eventGridNotices({ ...event, data }), refusal('event-grid', /targetResourceId: an Azure compute resource id/));
  });

  it('answers the webhook handshake for Event Grid only', () => {
    assert.equal(allowedWebhookOrigin('eventgrid.azure.net'), 'eventgrid.azure.net');
    assert.equal(allowedWebhookOrigin('EventGrid.Azure.Net '), 'eventgrid.azure.net');
    assert.equal(allowedWebhookOrigin('evil.example'), undefined);
    assert.equal(allowedWebhookOrigin(undefined), undefined);
  });
});

describe('GCP: Eventarc, Compute Engine system-event audit logs', () => {
  it('a preemption: evicting, due 30 s after the entry (the documented shutdown period), by the instance id', async () => {
    const notice = only(eventarcNotices(await fixture('gcp-preempted')));
    assert.equal(notice.instance, GCE_INSTANCE);
    assert.equal(notice.cloud, 'gcp');
    assert.equal(notice.kind, 'preemption');
    assert.equal(notice.evicts, true);
    assert.equal(notice.deadline, '2026-03-02T10:15:37.325Z');
    assert.equal(notice.noticeId, 'eventarc:systemevent-1772446507116-64c1d2e3f4a5b-6c7d8e9f-0a1b2c3d');
    assert.equal(notice.reportedBy.service, 'eventarc');
    assert.equal(notice.reportedBy.eventSource, '//cloudaudit.googleapis.com/projects/ums-example/logs/system_event');
    assert.match(
      notice.summary,
      /^compute\.instances\.preempted; Instance was preempted\.; projects\/ums-example\/zones\/us-central1-a\/instances\//,
    );
    assertStatable(notice);
  });

  it('a live migration keeps the host; its last entry (same operation) withdraws it', async () => {
    const started = only(eventarcNotices(await fixture('gcp-live-migrate-started')));
    assert.equal(started.kind, 'maintenance-live-migrate');
    assert.equal(started.evicts, false);
    assert.equal(started.withdrawn, false);
    const ended = only(eventarcNotices(await fixture('gcp-live-migrate-ended')));
    assert.equal(ended.withdrawn, true);
    assert.equal(ended.noticeId, started.noticeId);
    assert.equal(ended.at, '2026-03-02T11:01:03.540000Z');
    for (const notice of [started, ended]) assertStatable(notice);
  });

  it("the same entry through a Logging sink's Pub/Sub topic is the same notice", async () => {
    const audit = await fixture('gcp-preempted');
    const viaPubsub = {
      specversion: '1.0',
      id: '9876543210123',
      source: '//pubsub.googleapis.com/projects/ums-example/topics/ums-cloud-notices',
      type: 'google.cloud.pubsub.topic.v1.messagePublished',
      time: '2026-03-02T10:15:08.100Z',
      data: {
        message: {
          data: Buffer.from(JSON.stringify(audit.data)).toString('base64'),
          messageId: '9876543210123',
          publishTime: '2026-03-02T10:15:08.100Z',
        },
        subscription: 'projects/ums-example/subscriptions/eventarc-us-central1-ums-cloud-notices-sub-1',
      },
    };
    const { reportedBy, ...notice } = only(eventarcNotices(viaPubsub));
    const { reportedBy: _audit, ...fromAudit } = only(eventarcNotices(audit));
    assert.deepEqual(notice, fromAudit);
    assert.equal(reportedBy.eventId, '9876543210123');
    assert.throws(
      () => eventarcNotices({ ...viaPubsub, data: { message: { data: Buffer.from('not json').toString('base64') } } }),
      refusal('eventarc', /not a JSON log entry/),
    );
  });

  it('another method, or another service, is taken and announces nothing', async () => {
    const event = await fixture('gcp-preempted');
    const entry = structuredClone(event.data) as { protoPayload: Record<string, unknown>; resource: Record<string, unknown> };
    entry.protoPayload.methodName = 'compute.instances.guestTerminate';
    assert.match(eventarcNotices({ ...event, data: entry }).ignored[0]?.reason ?? '', /guestTerminate announces nothing/);
    entry.protoPayload.serviceName = 'storage.googleapis.com';
    assert.match(eventarcNotices({ ...event, data: entry }).ignored[0]?.reason ?? '', /storage\.googleapis\.com entry/);
  });

  it('refuses a garbled entry, an instance id that is not one, another event type', async () => {
    const event = await fixture('gcp-preempted');
    assert.throws(() => eventarcNotices({ ...event, data: { protoPayload: {} } }), refusal('eventarc', /^the log entry: /));
    const entry = structuredClone(event.data) as { resource: { labels: Record<string, string> } };
    entry.resource.labels.instance_id = 'ums-gcp-1';
    assert.throws(() => eventarcNotices({ ...event, data: entry }), refusal('eventarc', /instance_id: not a GCE instance id/));
    assert.throws(() => eventarcNotices({ ...event, type: 'google.cloud.storage.object.v1.finalized' }), refusal('eventarc', /^type: /));
  });
});

describe('AWS: EventBridge (its own JSON)', () => {
  it('a spot interruption warning: evicting, due two minutes after it was sent', async () => {
    const notice = only(eventBridgeNotices(await fixture('aws-spot-interruption')));
    assert.equal(notice.instance, EC2_INSTANCE);
    assert.equal(notice.cloud, 'aws');
    assert.equal(notice.kind, 'preemption');
    assert.equal(notice.evicts, true);
    assert.equal(notice.deadline, '2026-03-02T10:17:07.000Z');
    assert.deepEqual(notice.reportedBy, {
      service: 'eventbridge',
      eventId: '2f9d6a1e-4b3c-4d2e-8f7a-6b5c4d3e2f1a',
      eventSource: 'aws.ec2/123456789012/us-east-1',
    });
    assert.match(notice.summary, /spot interruption: terminate \(EC2 Spot Instance Interruption Warning, us-east-1\)/);
    assertStatable(notice);
  });

  it('a rebalance recommendation: an advisory, no deadline, the host kept', async () => {
    const notice = only(eventBridgeNotices(await fixture('aws-rebalance-recommendation')));
    assert.equal(notice.kind, 'rebalance-advisory');
    assert.equal(notice.evicts, false);
    assert.equal(notice.deadline, undefined);
    assertStatable(notice);
  });

  it('an AWS Health retirement: due at its start time; closed, it is withdrawn (one notice id: the event ARN)', async () => {
    const scheduled = only(eventBridgeNotices(await fixture('aws-health-retirement-scheduled')));
    assert.equal(scheduled.kind, 'retirement');
    assert.equal(scheduled.evicts, true);
    assert.equal(scheduled.deadline, '2026-03-16T09:00:00.000Z');
    assert.equal(
      scheduled.noticeId,
      'eventbridge:arn:aws:health:us-east-1::event_EC2_AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED_AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED_5c2e8b1a9d704f3e',
    );
    assert.match(
      scheduled.summary,
      /^AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED upcoming; starts Mon, 16 Mar 2026 09:00:00 GMT; EC2 has detected/,
    );
    const closed = only(eventBridgeNotices(await fixture('aws-health-retirement-closed')));
    assert.equal(closed.withdrawn, true);
    assert.equal(closed.noticeId, scheduled.noticeId);
    for (const notice of [scheduled, closed]) assertStatable(notice);
  });

  it('an input transformer that wraps the event in a CloudEvent changes nothing', async () => {
    const event = await fixture('aws-spot-interruption');
    const wrapped = { specversion: '1.0', id: event.id, source: 'aws.ec2', type: 'aws.ec2.spot-interruption', data: event };
    assert.deepEqual(eventBridgeNotices(wrapped), eventBridgeNotices(event));
  });

  it('another AWS Health event is taken and announces nothing; another detail-type, or a garbled detail, is refused', async () => {
    const health = await fixture('aws-health-retirement-scheduled');
    const detail = structuredClone(health.detail) as Record<string, unknown>;
    detail.eventTypeCode = 'AWS_EC2_OPERATIONAL_ISSUE';
    assert.match(eventBridgeNotices({ ...health, detail }).ignored[0]?.reason ?? '', /AWS_EC2_OPERATIONAL_ISSUE announces nothing/);
    const spot = await fixture('aws-spot-interruption');
    assert.throws(
      () => eventBridgeNotices({ ...spot, 'detail-type': 'EC2 Instance State-change Notification' }),
      refusal('eventbridge', /is not an event the ingress takes/),
    );
    assert.throws(
      () => eventBridgeNotices({ ...spot, detail: { 'instance-id': 'web-1' } }),
      refusal('eventbridge', /^detail: instance-id: an EC2 instance id/),
    );
    assert.throws(() => eventBridgeNotices({ ...spot, account: 'x' }), refusal('eventbridge', /^account: a 12-digit/));
  });
});

describe('the facts the ingress states', () => {
  it("are the functions' word: the broker files them under the functions, and an agent stating one is not believed", async () => {
    const notice = only(eventBridgeNotices(await fixture('aws-spot-interruption')));
    const reported = fact(notice, 'aws-us-east-1-1');
    assert.equal(reported.name, 'host.notice');
    assert.equal(publisherOf(reported), FUNCTIONS_PRINCIPAL);
    assert.ok(mayState(reported, subjects.event(HOST_SCOPE, FUNCTIONS_PRINCIPAL, 'host.notice')));
    assert.ok(!mayState(reported, subjects.event(HOST_SCOPE, agentPrincipal('aws-us-east-1-1'), 'host.notice')), 'not as the agent');
    // The agent's own reading of its metadata stays its own word, which the functions cannot state.
    const { reportedBy: _reportedBy, ...own } = reported.data as Record<string, unknown>;
    const agents = makeEvent('host.notice', '/ums/agents/aws-us-east-1-1', own as EventOf<'host.notice'>['data']);
    assert.equal(publisherOf(agents), agentPrincipal('aws-us-east-1-1'));
    assert.ok(!mayState(agents, subjects.event(HOST_SCOPE, FUNCTIONS_PRINCIPAL, 'host.notice')));
    const withdrawn = fact({ ...notice, withdrawn: true }, 'aws-us-east-1-1');
    assert.equal(withdrawn.name, 'host.notice-withdrawn');
    assert.equal(publisherOf(withdrawn), FUNCTIONS_PRINCIPAL);
  });

  it('have ids derived from the cloud event: the same delivery is the same fact; another agent or event, another', async () => {
    const notice = only(eventBridgeNotices(await fixture('aws-spot-interruption')));
    assert.equal(fact(notice, 'a').id, fact(structuredClone(notice), 'a').id);
    assert.notEqual(fact(notice, 'a').id, fact(notice, 'b').id);
    assert.notEqual(fact(notice, 'a').id, fact({ ...notice, reportedBy: { ...notice.reportedBy, eventId: 'other' } }, 'a').id);
    assert.match(fact(notice, 'a').id, /^cloud-notice\.eventbridge\.[0-9a-f]{32}$/);
  });

  it('notice ids keep to the grammar, and stay unique when cut', () => {
    assert.equal(noticeIdFrom('eventarc', 'op/1 2'), 'eventarc:op_1_2');
    const long = (tail: string) => noticeIdFrom('eventbridge', `${'x'.repeat(300)}${tail}`);
    assert.ok(long('a').length <= 200);
    assert.notEqual(long('a'), long('b'));
  });
});

describe('the ingress key', () => {
  const key = 'k'.repeat(40);

  it('is compared whole, in constant time, against each key while rotating', () => {
    assert.ok(verifyNoticeKey([Buffer.from(key)], key));
    assert.ok(!verifyNoticeKey([Buffer.from(key)], `${key.slice(0, -1)}j`), 'one character off');
    assert.ok(!verifyNoticeKey([Buffer.from(key)], key.slice(0, -1)), 'shorter');
    assert.ok(!verifyNoticeKey([Buffer.from(key)], undefined));
    assert.ok(!verifyNoticeKey([Buffer.from(key)], ''));
    const next = 'n'.repeat(40);
    assert.ok(verifyNoticeKey([Buffer.from(key), Buffer.from(next)], next));
  });

  it('comes from the environment, refused (without being echoed) when missing or short', () => {
    assert.deepEqual(ingressAuth({ UMS_CLOUD_NOTICE_KEY: `${key},${'n'.repeat(32)}` }), {
      mode: 'notice-key',
      keys: [Buffer.from(key), Buffer.from('n'.repeat(32))],
    });
    assert.throws(() => ingressAuth({}), IngressConfigError);
    assert.throws(
      () => ingressAuth({ UMS_CLOUD_NOTICE_KEY: 'short-secret-value' }),
      (error: unknown) => error instanceof IngressConfigError && !error.message.includes('short-secret-value'),
    );
    assert.throws(() => ingressAuth({ UMS_CLOUD_NOTICE_KEY: `${key} with spaces` }), IngressConfigError);
    assert.throws(() => ingressAuth({ UMS_CLOUD_NOTICE_AUTH: 'none' }), /"notice-key" or "cloud-run-iam"/);
    // Cloud Run's IAM check: the platform's, which cannot run outside Cloud Run (see the integration test).
    assert.deepEqual(ingressAuth({ UMS_CLOUD_NOTICE_AUTH: 'cloud-run-iam' }), { mode: 'cloud-run-iam' });
  });
});
