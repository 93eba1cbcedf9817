import { createHash, timingSafeEqual } from 'node:crypto';
import type { HttpFunction, Request, Response } from '@google-cloud/functions-framework';
import type { EventBus } from '../core/event-bus.js';
import { makeEvent, type EventOf } from '../core/events.js';
import type { EventService } from '../core/host-notice.js';
import type { Logger } from '../core/log.js';
import { eventBridgeNotices } from './cloud-notices/aws-eventbridge.js';
import { allowedWebhookOrigin, eventGridNotices } from './cloud-notices/azure-event-grid.js';
import { CloudEventFormatError, type CloudNotice, type Translation } from './cloud-notices/cloud-notice.js';
import { eventarcNotices } from './cloud-notices/gcp-eventarc.js';
import { readCloudEvent } from './http-trigger.js';
import type { httpIngresses } from './triggers.js';

/**
 * The notices of the clouds' event services, as facts on the bus: an HTTP function the clouds call (Event Grid,
 * Eventarc, EventBridge), not the trigger bridge. Each delivery is authenticated before anything of it is read,
 * translated from its service's documented format (functions/cloud-notices/), matched to the agent that runs on the
 * VM it names (the agents' registered instanceId), and stated as host.notice / host.notice-withdrawn with
 * `reportedBy`: the functions' word, published under their principal (core/event-identity.ts), never an agent's.
 *
 * One path per service: POST /eventgrid (CloudEvents 1.0, one event or a batch; OPTIONS for Event Grid's webhook
 * handshake), POST /eventarc (CloudEvents 1.0, binary or structured mode), POST /eventbridge (EventBridge's JSON).
 *
 * How a delivery is authenticated (UMS_CLOUD_NOTICE_AUTH):
 *  - `notice-key` (the default): the request carries the shared key in X-UMS-Notice-Key, set as a secret delivery
 *    property of the Event Grid subscription and as the API key of the EventBridge connection (terraform/modules/
 *    azure-notice-events, aws-notice-events). UMS_CLOUD_NOTICE_KEY holds it (32+ characters; comma-separated while
 *    rotating), from the secret manager, never logged. Compared in constant time.
 *  - `cloud-run-iam`: Eventarc cannot add a header; it sends a Google OIDC ID token of the trigger's service account,
 *    which Cloud Run's IAM check verifies before this code runs (run.invoker granted to that account alone:
 *    terraform/modules/gcp-functions). This code cannot check that token itself, and no platform check runs outside
 *    Cloud Run (the local stack, the tests): there the key stands in for it. In this mode only /eventarc is served.
 *    Event Grid's own alternative, a Microsoft Entra bearer token, would likewise be the platform's to check; the
 *    key is used instead.
 *
 * Answers: 2xx once every fact is on the bus, or when the event announces nothing or names a VM no agent runs on
 * (logged, never retried: the VM is not ours); 400 with the reason, and a dead letter, for a delivery not in its
 * documented format (never retried: it will never parse); 401 without a valid key; 500 when the bus failed, so that
 * the service delivers again (the facts' ids are derived from the cloud event's id: a redelivery is one fact).
 */

export const CLOUD_NOTICE_INGRESS = 'cloudNoticeIngress' satisfies (typeof httpIngresses)[number];
export const NOTICE_KEY_HEADER = 'x-ums-notice-key';
export const DEAD_LETTER_ORIGIN = `function-${CLOUD_NOTICE_INGRESS}`;
const MIN_KEY_LENGTH = 32;
/** Notices are small; a larger body is no event of these services (Event Grid's own limit is 1 MB). */
const MAX_BODY_BYTES = 1024 * 1024;

const ROUTES: Readonly<Record<string, EventService>> = {
  '/eventgrid': 'event-grid',
  '/eventarc': 'eventarc',
  '/eventbridge': 'eventbridge',
};

const TRANSLATIONS: Readonly<Record<EventService, (delivery: unknown) => Translation>> = {
  'event-grid': eventGridNotices,
  eventarc: eventarcNotices,
  eventbridge: eventBridgeNotices,
};

export type IngressAuth = { mode: 'notice-key'; keys: Buffer[] } | { mode: 'cloud-run-iam' };

export class IngressConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'IngressConfigError';
  }
}

/** How deliveries are authenticated, from the environment; throws (without echoing a key) when it is unusable. */
export function ingressAuth(env: NodeJS.ProcessEnv = process.env): IngressAuth {
  const mode = env.UMS_CLOUD_NOTICE_AUTH ?? 'notice-key';
  if (mode === 'cloud-run-iam') return { mode };
  if (mode !== 'notice-key') {
    throw new IngressConfigError(`UMS_CLOUD_NOTICE_AUTH must be "notice-key" or "cloud-run-iam", not ${JSON.stringify(mode)}`);
  }
  const keys = (env.UMS_CLOUD_NOTICE_KEY ?? '').split(',').map((key) => key.trim());
  if (keys.some((key) => key.length < MIN_KEY_LENGTH || !/^[\x21-\x7e]+$/.test(key))) {
    throw new IngressConfigError(
      `UMS_CLOUD_NOTICE_KEY must hold the notice key (at least ${MIN_KEY_LENGTH} printable characters, no spaces; comma-separated while rotating)`,
    );
  }
  return { mode, keys: keys.map((key) => Buffer.from(key)) };
}

/**
 * Whether `presented` is one of the keys. Digests of equal length are compared with timingSafeEqual, every key
 * each time, so that neither the time taken nor an early return tells how much of a guess was right, or its length.
 */
export function verifyNoticeKey(keys: readonly Buffer[], presented: string | undefined): boolean {
  if (presented === undefined || presented === '') return false;
  const given = createHash('sha256').update(presented).digest();
  let match = false;
  for (const key of keys) match = timingSafeEqual(createHash('sha256').update(key).digest(), given) || match;
  return match;
}

/** What the ingress does on the bus: state facts, keep dead letters, read the agents' registrations. */
export type IngressBus = Pick<EventBus, 'publishEvent' | 'deadLetter' | 'agents'>;

/** What one delivery came to, as the answer's body says it (no secret, nothing of the event but ids). */
interface Outcome {
  published: string[];
  /** Notices for VMs no registered agent runs on. */
  unmatched: Array<{ instance: string; noticeId: string }>;
  ignored: Translation['ignored'];
}

/** The function, with its broker connection (opened on first use) and its log. */
export function cloudNoticeIngress(connect: () => Promise<IngressBus>, log: Logger): HttpFunction {
  return async (req: Request, res: Response): Promise<void> => {
    const service = ROUTES[req.path];
    if (req.method === 'OPTIONS') return handshake(req, res, service);
    if (req.method !== 'POST') {
      res.set('Allow', 'POST, OPTIONS').status(405).send('POST a cloud event');
      return;
    }
    let auth: IngressAuth;
    try {
      auth = ingressAuth();
    } catch (error) {
      if (!(error instanceof IngressConfigError)) throw error;
      log.error({ reason: error.message }, 'cannot authenticate deliveries; refusing them all');
      res.status(503).send('delivery authentication is not configured');
      return;
    }
    if (auth.mode === 'notice-key' && !verifyNoticeKey(auth.keys, req.header(NOTICE_KEY_HEADER))) {
      // Who asked and why it was refused; never the key, never the body.
      const reason = req.header(NOTICE_KEY_HEADER) === undefined ? `no ${NOTICE_KEY_HEADER} header` : 'a wrong key';
      log.warn({ path: req.path, from: req.ip, reason }, 'refused an unauthenticated delivery');
      res.status(401).send(`a delivery needs the notice key in ${NOTICE_KEY_HEADER}`);
      return;
    }
    if (service === undefined) {
      res.status(404).send(`no such route: POST ${Object.keys(ROUTES).join(', ')}`);
      return;
    }
    // The platform admitted Eventarc's identity, which has no business on the other routes.
    if (auth.mode === 'cloud-run-iam' && service !== 'eventarc') {
      res.status(403).send('this deployment takes Eventarc deliveries only');
      return;
    }
    const body = req.rawBody ?? Buffer.alloc(0);
    if (body.length > MAX_BODY_BYTES) {
      res.status(413).send(`a delivery is at most ${MAX_BODY_BYTES} bytes`);
      return;
    }
    try {
      const bus = await connect();
      let translation: Translation;
      try {
        translation = TRANSLATIONS[service](delivery(req, service));
      } catch (error) {
        if (!(error instanceof CloudEventFormatError)) throw error;
        // It will never parse: kept with its reason where `ums status` shows it, and not asked for again.
        log.warn({ service, reason: error.problem }, 'rejected a delivery not in its documented format; kept as a dead letter');
        await bus.deadLetter(DEAD_LETTER_ORIGIN, body, error.message);
        res.status(400).send(error.message);
        return;
      }
      const outcome = await stateFacts(translation, bus, log);
      res.status(200).json(outcome);
    } catch (error) {
      log.error({ service, err: error }, 'could not state the notices; the service will deliver again');
      res.status(500).send('the notices could not be stated; deliver again');
    }
  };
}

/**
 * Event Grid's CloudEvents webhook handshake, answered without the key: it reads no event and grants nothing but
 * the right to send, and each send is authenticated. Whether Event Grid sends its delivery properties (the key) with
 * it is not documented, so requiring them could leave the subscription unvalidated.
 */
function handshake(req: Request, res: Response, service: EventService | undefined): void {
  const origin = service === 'event-grid' ? allowedWebhookOrigin(req.header('webhook-request-origin')) : undefined;
  if (origin === undefined) {
    res.status(400).send('OPTIONS is the webhook handshake of Event Grid (WebHook-Request-Origin: eventgrid.azure.net) on /eventgrid');
    return;
  }
  res.set({ 'WebHook-Allowed-Origin': origin, 'WebHook-Allowed-Rate': '*', Allow: 'POST, OPTIONS' }).status(200).end();
}

/** The delivery as its service sends it: Eventarc's CloudEvent in either content mode; the others' JSON bodies. */
function delivery(req: Request, service: EventService): unknown {
  if (service === 'eventarc') {
    const event = readCloudEvent(req);
    if (event === undefined) throw new CloudEventFormatError(service, 'not a CloudEvent (structured or binary content mode)');
    return event;
  }
  const body: unknown = req.body;
  // A JSON content type is parsed by the framework; a batch (application/cloudevents-batch+json) or a text type is not.
  if (typeof body === 'object' && body !== null && !Buffer.isBuffer(body)) return body;
  const text = Buffer.isBuffer(body) ? body.toString('utf8') : typeof body === 'string' ? body : '';
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new CloudEventFormatError(service, 'the body is not JSON', { cause: error });
  }
}

async function stateFacts(translation: Translation, bus: IngressBus, log: Logger): Promise<Outcome> {
  const outcome: Outcome = { published: [], unmatched: [], ignored: translation.ignored };
  for (const ignored of translation.ignored) log.info(ignored, 'the event announces nothing for a host');
  if (translation.notices.length === 0) return outcome;
  const agentsOn = await agentsByInstance(bus);
  for (const notice of translation.notices) {
    const agents = agentsOn.get(notice.instance.toLowerCase()) ?? [];
    if (agents.length === 0) {
      // Not ours (or its agent has not registered its instance id): acknowledged, so that it is not sent again.
      log.info(
        { instance: notice.instance, noticeId: notice.noticeId, kind: notice.kind, reportedBy: notice.reportedBy },
        'a notice for a VM no registered agent runs on; acknowledged',
      );
      outcome.unmatched.push({ instance: notice.instance, noticeId: notice.noticeId });
      continue;
    }
    for (const agent of agents) {
      const event = fact(notice, agent);
      await bus.publishEvent(event);
      outcome.published.push(event.id);
      log[notice.evicts && !notice.withdrawn ? 'warn' : 'info'](
        {
          agent,
          event: event.name,
          id: event.id,
          noticeId: notice.noticeId,
          kind: notice.kind,
          evicts: notice.evicts,
          deadline: notice.deadline,
          reportedBy: notice.reportedBy,
        },
        notice.withdrawn ? "the cloud's event service withdrew a notice" : "the cloud's event service announced a notice for an agent's VM",
      );
    }
  }
  return outcome;
}

/** The registered agents by the instance id of their VM (lowercase: Azure's resource ids are not case-sensitive). */
async function agentsByInstance(bus: IngressBus): Promise<Map<string, string[]>> {
  const byInstance = new Map<string, string[]>();
  for (const { value } of await bus.agents.list()) {
    if (value.instanceId === undefined) continue;
    const key = value.instanceId.toLowerCase();
    byInstance.set(key, [...(byInstance.get(key) ?? []), value.agentId]);
  }
  return byInstance;
}

const SOURCE = `/ums/functions/${CLOUD_NOTICE_INGRESS}`;

/**
 * The fact, with an id derived from the cloud event (and the agent and notice it became), so that a redelivery of
 * the event is the same fact, which the bus keeps once.
 */
export function fact(notice: CloudNotice, agent: string): EventOf<'host.notice'> | EventOf<'host.notice-withdrawn'> {
  const digest = createHash('sha256')
    .update(
      JSON.stringify([
        notice.reportedBy.service,
        notice.reportedBy.eventSource,
        notice.reportedBy.eventId,
        agent,
        notice.noticeId,
        notice.withdrawn,
      ]),
    )
    .digest('hex')
    .slice(0, 32);
  const id = `cloud-notice.${notice.reportedBy.service}.${digest}`;
  const common = {
    agent,
    cloud: notice.cloud,
    noticeId: notice.noticeId,
    kind: notice.kind,
    evicts: notice.evicts,
    reportedBy: notice.reportedBy,
  };
  if (notice.withdrawn) return makeEvent('host.notice-withdrawn', SOURCE, { ...common, withdrawnAt: notice.at }, id);
  return makeEvent(
    'host.notice',
    SOURCE,
    { ...common, ...(notice.deadline === undefined ? {} : { deadline: notice.deadline }), summary: notice.summary, observedAt: notice.at },
    id,
  );
}
