import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { getTestServer } from '@google-cloud/functions-framework/testing';
import type { AgentRegistration } from '../../core/agent-registration.js';
import { subjects } from '../../core/event-bus.js';
import { agentPrincipal, FUNCTIONS_PRINCIPAL, mayState } from '../../core/event-identity.js';
import { HOST_SCOPE, makeEvent, parseEvent, toWire, type EventOf, type UmsEvent } from '../../core/events.js';
import { connectNatsBus, provisionBus, type NatsBusOptions, type NatsEventBus } from '../../core/nats-event-bus.js';
import { eventBridgeNotices } from '../../functions/cloud-notices/aws-eventbridge.js';
import { CLOUD_NOTICE_INGRESS, DEAD_LETTER_ORIGIN, fact, NOTICE_KEY_HEADER } from '../../functions/cloud-notice-ingress.js';
import { closeFunctionContext } from '../../functions/function-context.js';
import { createBrokerCredentials, type BrokerCredentials } from '../../infra/broker-credentials.js';
import { startNatsServer, type NatsServer } from '../../infra/nats-server.js';
import { repoPath } from '../../infra/repo-paths.js';
import { BrokerClient } from '../broker-client.js';
import { BrokerRefusals } from '../broker-refusals.js';

/**
 * The notice ingress as the clouds call it: functions/index.ts's registration served by the functions-framework's
 * own test server, as the functions principal, against a real nats-server with TLS and the principals' nkeys and
 * permissions (infra/broker-credentials.ts). The deliveries are the documented examples of test/fixtures/cloud-notices/.
 *
 * What cannot run here: the platform's own checks of a delivery. On Cloud Run, Eventarc's Google OIDC ID token is
 * verified by Cloud Run's IAM before the function runs (UMS_CLOUD_NOTICE_AUTH=cloud-run-iam), and Event Grid could
 * send a Microsoft Entra token; neither Google's nor Microsoft's token service is reachable, and no platform stands
 * in front of the test server. The shared notice key (X-UMS-Notice-Key) is what is checked here, for every route;
 * the cloud-run-iam case checks only that the function then leaves Eventarc's deliveries to the platform and refuses
 * the other routes.
 */

const AZURE_AGENT = 'azure-eastus-1';
const GCP_AGENT = 'gcp-us-central1-1';
const AWS_AGENT = 'aws-us-east-1-1';
const INSTANCES: Record<string, string> = {
  // Registered in another case than Event Grid names it: Azure's resource ids are not case-sensitive.
  [AZURE_AGENT]:
    '/subscriptions/6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f/resourcegroups/UMS-EASTUS/providers/Microsoft.Compute/virtualMachines/ums-azure-eastus-1',
  [GCP_AGENT]: '4633012345678901234',
  [AWS_AGENT]: 'i-0abcdef1234567890',
};
const KEY = 'test-notice-key-0123456789abcdefghijklmnop';

let dir: string;
let nats: NatsServer;
let creds: BrokerCredentials;
let admin: NatsEventBus;
let broker: BrokerClient;
let refusals: BrokerRefusals;
let server: Server;
let url: string;

const busOptions = (principal: string): NatsBusOptions => ({
  servers: nats.url,
  name: `test-${principal}`,
  credentials: creds.files.get(principal) ?? assert.fail(`no credential for ${principal}`),
  ca: creds.tls.caFile,
});

async function fixture(name: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(repoPath('test', 'fixtures', 'cloud-notices', `${name}.json`), 'utf8')) as Record<string, unknown>;
}

function registration(agentId: string, cloud: AgentRegistration['cloud']): AgentRegistration {
  const now = new Date().toISOString();
  return {
    agentId,
    cloud,
    region: 'r',
    instanceId: INSTANCES[agentId] ?? assert.fail(agentId),
    storeUrl: 'file:///tmp/none',
    approaches: ['container'],
    capabilities: {
      containerLevel: { available: true, engine: 'podman 4.3.1', criuVersion: '4.1.1' },
      orchestratorLevel: { available: false, reason: 'UMS_KUBELET_URL is not set' },
      plainContainers: { available: true },
    },
    engine: { engine: 'podman', version: '4.3.1', apiVersion: '4.3.1', ociRuntime: 'runc', criuVersion: '4.1.1', kernel: '6.18' },
    freeMemoryBytes: 1e10,
    freeDiskBytes: 1e11,
    images: [],
    imageIds: [],
    containers: [],
    startedAt: now,
    heartbeatAt: now,
  };
}

interface Answer {
  status: number;
  text: string;
  headers: Headers;
}

async function deliver(
  path: string,
  body: unknown,
  options: { key?: string | null; contentType?: string; headers?: Record<string, string>; method?: string } = {},
): Promise<Answer> {
  const response = await fetch(new URL(path, url), {
    method: options.method ?? 'POST',
    headers: {
      'content-type': options.contentType ?? 'application/json',
      ...(options.key === null ? {} : { [NOTICE_KEY_HEADER]: options.key ?? KEY }),
      ...options.headers,
    },
    ...(options.method === 'OPTIONS' ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  return { status: response.status, text: await response.text(), headers: response.headers };
}

/** Eventarc's binary content mode: the attributes as ce-* headers, the data as the body. */
async function deliverBinary(path: string, event: Record<string, unknown>): Promise<Answer> {
  const { data, datacontenttype: _type, ...attributes } = event;
  const headers = Object.fromEntries(Object.entries(attributes).map(([name, value]) => [`ce-${name}`, String(value)]));
  return deliver(path, data, { headers });
}

type NoticeFact = EventOf<'host.notice'> | EventOf<'host.notice-withdrawn'>;
const isNoticeFact = (event: UmsEvent): event is NoticeFact => event.name === 'host.notice' || event.name === 'host.notice-withdrawn';

/** The notice facts on the bus that their publisher may state (as every reader keeps them), oldest first. */
async function hostFacts(): Promise<NoticeFact[]> {
  const stored = await broker.stored(subjects.eventsStream);
  return stored
    .filter((message) => message.subject.startsWith(`ums.events.${HOST_SCOPE}.`))
    .map((message) => ({ event: parseEvent(message.data), subject: message.subject }))
    .filter(({ event, subject }) => mayState(event, subject))
    .map(({ event }) => event)
    .filter(isNoticeFact);
}

async function deadLetters(): Promise<Array<{ origin: string; reason: string }>> {
  return (await admin.listDeadLetters(100)).filter((letter) => letter.origin === DEAD_LETTER_ORIGIN);
}

describe('the cloud notice ingress over HTTP, against a real broker with its permissions', { timeout: 60_000 }, () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ums-notice-ingress-'));
    creds = await createBrokerCredentials(join(dir, 'security'), [AZURE_AGENT, GCP_AGENT, AWS_AGENT]);
    nats = await startNatsServer(join(dir, 'nats'), 'ums-ingress', { credentials: creds });
    refusals = new BrokerRefusals(join(dir, 'nats', 'nats.log'));
    await provisionBus(busOptions('admin'));
    admin = await connectNatsBus(busOptions('admin'));
    broker = await BrokerClient.connect(busOptions('admin'));
    await admin.agents.put(AZURE_AGENT, registration(AZURE_AGENT, 'azure'));
    await admin.agents.put(GCP_AGENT, registration(GCP_AGENT, 'gcp'));
    await admin.agents.put(AWS_AGENT, registration(AWS_AGENT, 'aws'));

    // The function connects as the functions principal, from the environment a deployment gives it.
    Object.assign(process.env, {
      NATS_URL: nats.url,
      ...creds.envFor(FUNCTIONS_PRINCIPAL),
      UMS_CLOUD_NOTICE_KEY: KEY,
      UMS_LOG_LEVEL: process.env.UMS_LOG_LEVEL ?? 'warn',
    });
    delete process.env.UMS_CLOUD_NOTICE_AUTH;
    await import('../../functions/index.js');
    server = getTestServer(CLOUD_NOTICE_INGRESS);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });

  after(async () => {
    server?.close();
    server?.closeAllConnections();
    await closeFunctionContext();
    await broker?.close();
    await admin?.close();
    await nats?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a delivery without the key, or with a wrong one (401), and publishes nothing', async () => {
    const event = await fixture('azure-preempted');
    for (const [what, key] of [
      ['no key', null],
      ['a wrong key', `${KEY.slice(0, -1)}X`],
      ['a shorter key', KEY.slice(0, 10)],
    ] as const) {
      const answer = await deliver('/eventgrid', event, { key, contentType: 'application/cloudevents+json; charset=utf-8' });
      assert.equal(answer.status, 401, what);
      assert.doesNotMatch(answer.text, new RegExp(KEY), 'the answer never carries the key');
    }
    // Even a garbled body is refused as unauthenticated, before anything of it is read: no dead letter either.
    assert.equal((await deliver('/eventbridge', 'garbage', { key: null, contentType: 'text/plain' })).status, 401);
    assert.deepEqual(await hostFacts(), []);
    assert.deepEqual(await deadLetters(), []);
  });

  it('answers 503 while no key is configured, rather than taking deliveries unauthenticated', async () => {
    process.env.UMS_CLOUD_NOTICE_KEY = '';
    try {
      assert.equal((await deliver('/eventbridge', await fixture('aws-spot-interruption'), { key: '' })).status, 503);
    } finally {
      process.env.UMS_CLOUD_NOTICE_KEY = KEY;
    }
    assert.deepEqual(await hostFacts(), []);
  });

  it("answers Event Grid's webhook handshake, and nothing else's", async () => {
    const handshake = await deliver('/eventgrid', undefined, {
      method: 'OPTIONS',
      key: null,
      headers: { 'WebHook-Request-Origin': 'eventgrid.azure.net' },
    });
    assert.equal(handshake.status, 200);
    assert.equal(handshake.headers.get('webhook-allowed-origin'), 'eventgrid.azure.net');
    assert.equal(
      (await deliver('/eventgrid', undefined, { method: 'OPTIONS', key: null, headers: { 'WebHook-Request-Origin': 'evil.example' } }))
        .status,
      400,
    );
    assert.equal(
      (
        await deliver('/eventbridge', undefined, {
          method: 'OPTIONS',
          key: null,
          headers: { 'WebHook-Request-Origin': 'eventgrid.azure.net' },
        })
      ).status,
      400,
    );
    assert.equal((await deliver('/eventgrid', undefined, { method: 'GET' })).status, 405);
  });

  it('refuses a garbled or forged delivery with the reason (400), keeps it as a dead letter, publishes nothing', async () => {
    const spot = await fixture('aws-spot-interruption');
    const cases: Array<[string, string, unknown, string, RegExp]> = [
      ['not JSON', '/eventbridge', 'this is no event', 'text/plain', /the body is not JSON/],
      [
        'a garbled detail',
        '/eventbridge',
        { ...spot, detail: { 'instance-id': 'web-1' } },
        'application/json',
        /detail: instance-id: an EC2 instance id/,
      ],
      [
        'another detail-type',
        '/eventbridge',
        { ...spot, 'detail-type': 'EC2 Instance State-change Notification' },
        'application/json',
        /is not an event the ingress takes/,
      ],
      [
        'an Event Grid event of another type',
        '/eventgrid',
        { ...(await fixture('azure-preempted')), type: 'Microsoft.Storage.BlobCreated' },
        'application/cloudevents+json',
        /^the event-grid delivery was refused: type: /,
      ],
      ['an EventBridge event sent as Event Grid', '/eventgrid', spot, 'application/json', /specversion/],
    ];
    for (const [what, path, body, contentType, reason] of cases) {
      const answer = await deliver(path, body, { contentType });
      assert.equal(answer.status, 400, what);
      assert.match(answer.text, reason, what);
    }
    const letters = await deadLetters();
    assert.equal(letters.length, cases.length);
    assert.match(letters[0]?.reason ?? '', /the body is not JSON/);
    assert.deepEqual(await hostFacts(), []);
    assert.equal((await deliver('/elsewhere', spot)).status, 404);
  });

  it("states each cloud's notice as a host.notice of the VM's agent, reported by the event service, as the functions' word", async () => {
    const azure = await deliver('/eventgrid', await fixture('azure-preempted'), {
      contentType: 'application/cloudevents+json; charset=utf-8',
    });
    assert.equal(azure.status, 200, azure.text);
    // Eventarc's binary content mode, as it calls Cloud Run.
    const gcp = await deliverBinary('/eventarc', await fixture('gcp-preempted'));
    assert.equal(gcp.status, 200, gcp.text);
    const aws = await deliver('/eventbridge', await fixture('aws-spot-interruption'));
    assert.equal(aws.status, 200, aws.text);

    const facts = (await hostFacts()).filter((event): event is EventOf<'host.notice'> => event.name === 'host.notice');
    const byAgent = new Map(facts.map((event) => [event.data.agent, event.data]));
    assert.deepEqual([...byAgent.keys()].sort(), [AWS_AGENT, AZURE_AGENT, GCP_AGENT]);
    assert.deepEqual(
      Object.fromEntries(
        [...byAgent].map(([agent, data]) => [agent, [data.cloud, data.kind, data.evicts, data.deadline, data.reportedBy?.service]]),
      ),
      {
        [AZURE_AGENT]: ['azure', 'preemption', true, '2026-03-02T10:15:07.4312245Z', 'event-grid'],
        [GCP_AGENT]: ['gcp', 'preemption', true, '2026-03-02T10:15:37.325Z', 'eventarc'],
        [AWS_AGENT]: ['aws', 'preemption', true, '2026-03-02T10:17:07.000Z', 'eventbridge'],
      },
    );
    assert.equal(byAgent.get(AWS_AGENT)?.reportedBy?.eventId, '2f9d6a1e-4b3c-4d2e-8f7a-6b5c4d3e2f1a');
    // Filed under the functions, and found by a reader as their word (an agent could not have stated it).
    const stated = await admin.lastEvent(HOST_SCOPE, 'host.notice', FUNCTIONS_PRINCIPAL);
    assert.equal(stated?.data.agent, AWS_AGENT);
    assert.equal(await admin.lastEvent(HOST_SCOPE, 'host.notice', agentPrincipal(AWS_AGENT)), undefined);
    assert.deepEqual(JSON.parse(aws.text), { published: [stated?.id], unmatched: [], ignored: [] });
  });

  it('a redelivery is one fact; the notice withdrawn is a host.notice-withdrawn; a batch and a Pub/Sub-borne entry are taken', async () => {
    const before = (await hostFacts()).length;
    const retirement = await fixture('aws-health-retirement-scheduled');
    const first = await deliver('/eventbridge', retirement);
    const again = await deliver('/eventbridge', retirement);
    assert.equal(first.status, 200);
    assert.deepEqual(JSON.parse(again.text), JSON.parse(first.text), 'the same fact, by the same id');
    const closed = await deliver('/eventbridge', await fixture('aws-health-retirement-closed'));
    assert.equal(closed.status, 200);
    // A batch of Event Grid's (a freeze and its end): not parsed by the framework, read by the function.
    const batch = [await fixture('azure-freeze-started'), await fixture('azure-freeze-succeeded')];
    assert.equal((await deliver('/eventgrid', batch, { contentType: 'application/cloudevents-batch+json; charset=utf-8' })).status, 200);
    // The GCE entry through a Logging sink and Pub/Sub, in structured mode.
    const entry = (await fixture('gcp-live-migrate-started')).data;
    const pubsub = {
      specversion: '1.0',
      id: '9876543210123',
      source: '//pubsub.googleapis.com/projects/ums-example/topics/ums-cloud-notices',
      type: 'google.cloud.pubsub.topic.v1.messagePublished',
      time: '2026-03-02T11:00:01.000Z',
      data: { message: { data: Buffer.from(JSON.stringify(entry)).toString('base64'), messageId: '9876543210123' } },
    };
    assert.equal((await deliver('/eventarc', pubsub, { contentType: 'application/cloudevents+json' })).status, 200);

    const added = (await hostFacts()).slice(before);
    assert.deepEqual(
      added.map((event) => [event.name, event.data.agent, event.data.kind, event.data.evicts]),
      [
        ['host.notice', AWS_AGENT, 'retirement', true],
        ['host.notice-withdrawn', AWS_AGENT, 'retirement', true],
        ['host.notice', AZURE_AGENT, 'freeze', false],
        ['host.notice-withdrawn', AZURE_AGENT, 'freeze', false],
        ['host.notice', GCP_AGENT, 'maintenance-live-migrate', false],
      ],
    );
    const [notice, withdrawn] = added;
    assert.equal(notice?.name === 'host.notice' && notice.data.deadline, '2026-03-16T09:00:00.000Z');
    assert.equal(withdrawn?.data.noticeId, notice?.data.noticeId);
  });

  it('acknowledges a notice for a VM no agent runs on, and an event that announces nothing, publishing nothing', async () => {
    const before = (await hostFacts()).length;
    const stranger = {
      ...(await fixture('aws-spot-interruption')),
      id: 'a-stranger-1',
      detail: { 'instance-id': 'i-0fedcba9876543210', 'instance-action': 'stop' },
    };
    const answer = await deliver('/eventbridge', stranger);
    assert.equal(answer.status, 200);
    assert.deepEqual((JSON.parse(answer.text) as { unmatched: unknown }).unmatched, [
      { instance: 'i-0fedcba9876543210', noticeId: 'eventbridge:a-stranger-1' },
    ]);
    const availability = await deliver('/eventgrid', await fixture('azure-availability-changed'), {
      contentType: 'application/cloudevents+json',
    });
    assert.equal(availability.status, 200);
    const { ignored } = JSON.parse(availability.text) as { ignored: Array<{ reason: string }> };
    assert.match(ignored[0]?.reason ?? '', /announces nothing/);
    assert.equal((await hostFacts()).length, before);
  });

  it("keeps the functions' word and an agent's apart: an agent cannot state the event service's notice, the functions not an agent's", async () => {
    const notice = eventBridgeNotices(await fixture('aws-spot-interruption')).notices[0] ?? assert.fail('a notice');
    const claimed = fact({ ...notice, reportedBy: { ...notice.reportedBy, eventId: 'forged-by-the-agent' } }, AWS_AGENT);
    const payload = JSON.stringify(toWire(claimed));
    // The agent's credential may not publish under the functions' name: the broker refuses.
    const agent = await refusals.connectAs(nats.url, creds.files.get(agentPrincipal(AWS_AGENT)) ?? '', creds.tls.caFile);
    const functions = await refusals.connectAs(nats.url, creds.files.get(FUNCTIONS_PRINCIPAL) ?? '', creds.tls.caFile);
    try {
      await refusals.assertPublishRefused(agent, subjects.event(HOST_SCOPE, FUNCTIONS_PRINCIPAL, 'host.notice'), payload);
      // On its own subject the broker takes it, and every reader drops it: it claims to be the functions' word.
      await agent
        .jetstream()
        .publish(subjects.event(HOST_SCOPE, agentPrincipal(AWS_AGENT), 'host.notice'), new TextEncoder().encode(payload));
      assert.equal(await admin.lastEvent(HOST_SCOPE, 'host.notice', agentPrincipal(AWS_AGENT)), undefined);
      assert.equal(await admin.findEvent(HOST_SCOPE, 'host.notice', claimed.id, FUNCTIONS_PRINCIPAL), undefined);
      assert.ok(!(await hostFacts()).some((event) => event.id === claimed.id));
      // Nor may the functions state an agent's own notice (no reporter) under the agent's name.
      const { reportedBy: _reportedBy, ...own } = claimed.data as Record<string, unknown>;
      const agentsOwn = makeEvent('host.notice', '/ums/agents/x', own as EventOf<'host.notice'>['data']);
      await refusals.assertPublishRefused(
        functions,
        subjects.event(HOST_SCOPE, agentPrincipal(AWS_AGENT), 'host.notice'),
        JSON.stringify(toWire(agentsOwn)),
      );
    } finally {
      await agent.close();
      await functions.close();
    }
  });

  it('with cloud-run-iam the platform authenticates Eventarc (not checkable here): only /eventarc is served', async () => {
    process.env.UMS_CLOUD_NOTICE_AUTH = 'cloud-run-iam';
    try {
      // What Cloud Run's IAM would have admitted (Eventarc's OIDC token for run.invoker); no token is checked here.
      const gcp = await deliverBinary('/eventarc', await fixture('gcp-live-migrate-ended'));
      assert.equal(gcp.status, 200, gcp.text);
      assert.equal((await deliver('/eventbridge', await fixture('aws-spot-interruption'), { key: null })).status, 403);
      assert.equal((await deliver('/eventgrid', await fixture('azure-preempted'), { key: null })).status, 403);
    } finally {
      delete process.env.UMS_CLOUD_NOTICE_AUTH;
    }
    const last = (await hostFacts()).at(-1);
    assert.equal(last?.name, 'host.notice-withdrawn');
    assert.equal(last?.data.agent, GCP_AGENT);
  });
});
