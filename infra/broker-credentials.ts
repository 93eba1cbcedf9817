import { execFile } from 'node:child_process';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { nkeys } from 'nats';
import { subjects } from '../core/event-bus.js';
import { HOST_SCOPE } from '../core/events.js';
import { agentPrincipal, CLI_PRINCIPAL, FRONTMAN_PRINCIPAL, FUNCTIONS_PRINCIPAL } from '../core/event-identity.js';
import { buckets, inboxPrefixOf, type BrokerCredential } from '../core/nats-event-bus.js';
import { bridgeConsumers } from '../bridge/trigger-bridge.js';
import { httpIngresses, triggers, type FunctionName } from '../functions/triggers.js';

/*
 * The broker's identities and what each may do. Every component connects with its own nkey (a principal),
 * over TLS, and the server's authorization block gives each principal only the subjects its job needs
 * (least privilege); an anonymous client is refused. The stack creates all of it (createBrokerCredentials):
 * a CA and the server's certificate, one nkey per principal (seed files of mode 0600), and the server's
 * authorization config. The permission sets are pure functions of the principal (brokerPermissions), so
 * they are unit-tested as data; test/integration/broker-permissions.test.ts checks them against nats-server.
 */

const execFileAsync = promisify(execFile);

/** The part of nats.js's nkeys we use (it re-exports nkeys.js, whose types it does not carry). */
interface UserKeyPair {
  getSeed(): Uint8Array;
  getPublicKey(): string;
}
const createUserKey = (): UserKeyPair => (nkeys as { createUser(): UserKeyPair }).createUser();

export const BRIDGE_PRINCIPAL = 'bridge';
/** The set-up principal: provisions streams and buckets; the test harness reads and writes as it. */
export const ADMIN_PRINCIPAL = 'admin';

export type Principal =
  | { kind: 'agent'; agentId: string }
  | { kind: 'functions' }
  | { kind: 'bridge' }
  | { kind: 'cli' }
  | { kind: 'frontman' }
  | { kind: 'admin' };

export function principalName(principal: Principal): string {
  switch (principal.kind) {
    case 'agent':
      return agentPrincipal(principal.agentId);
    case 'functions':
      return FUNCTIONS_PRINCIPAL;
    case 'cli':
      return CLI_PRINCIPAL;
    case 'bridge':
      return BRIDGE_PRINCIPAL;
    case 'frontman':
      return FRONTMAN_PRINCIPAL;
    case 'admin':
      return ADMIN_PRINCIPAL;
  }
}

export interface Permissions {
  publish: { allow: string[]; deny: string[] };
  subscribe: { allow: string[]; deny: string[] };
}

const API = '$JS.API';
const kvStream = (bucket: string): string => `KV_${bucket}`;

/**
 * Reading a stream through ephemeral (ordered) consumers and single-message gets: what nats.js 2.29 asks of
 * server 2.9 for `js.consumers.get(stream, {filterSubjects})` (pull, named, filter in the subject), KV
 * `keys()`/`watch()` (push, flow control answered on `$JS.FC`) and `jsm.streams.getMessage()`/KV `get()`
 * (direct get with the subject in the request subject). Consumer names are random, hence the wildcards;
 * the bridge's durables are denied to everyone but the bridge (readerDenials).
 */
function streamReader(stream: string): string[] {
  return [
    `${API}.STREAM.MSG.GET.${stream}`,
    `${API}.DIRECT.GET.${stream}`,
    `${API}.DIRECT.GET.${stream}.>`,
    `${API}.CONSUMER.CREATE.${stream}`,
    `${API}.CONSUMER.CREATE.${stream}.>`,
    `${API}.CONSUMER.INFO.${stream}.*`,
    `${API}.CONSUMER.MSG.NEXT.${stream}.*`,
    `${API}.CONSUMER.DELETE.${stream}.*`,
    `$JS.FC.${stream}.>`,
  ];
}

/** What every principal may do to take part at all: its own inbox, account and stream info (binding). */
function basics(name: string): Permissions {
  return {
    publish: { allow: [`${API}.INFO`, `${API}.STREAM.INFO.*`], deny: [] },
    subscribe: { allow: [`${inboxPrefixOf(name)}.>`], deny: [] },
  };
}

/**
 * The bridge's durable consumers on the events stream are the bridge's alone: a reader that could pull
 * from one would steal events from a function, one that could delete it would stop a trigger.
 */
function readerDenials(): string[] {
  return bridgeConsumers().flatMap(({ durableName }) => [
    `${API}.CONSUMER.CREATE.${subjects.eventsStream}.${durableName}`,
    `${API}.CONSUMER.CREATE.${subjects.eventsStream}.${durableName}.>`,
    `${API}.CONSUMER.INFO.${subjects.eventsStream}.${durableName}`,
    `${API}.CONSUMER.MSG.NEXT.${subjects.eventsStream}.${durableName}`,
    `${API}.CONSUMER.DELETE.${subjects.eventsStream}.${durableName}`,
  ]);
}

const functionNames = Object.keys(triggers) as FunctionName[];

/** The exact permissions of one principal (allow lists: whatever is not listed is refused by the broker). */
export function brokerPermissions(principal: Principal): Permissions {
  const name = principalName(principal);
  const own = basics(name);
  const with_ = (publish: string[], publishDeny: string[] = []): Permissions => ({
    publish: { allow: [...own.publish.allow, ...publish], deny: publishDeny },
    subscribe: own.subscribe,
  });
  const readEvents = streamReader(subjects.eventsStream);
  const readKv = (...names: string[]) => names.flatMap((bucket) => streamReader(kvStream(bucket)));
  switch (principal.kind) {
    case 'agent': {
      const { agentId } = principal;
      const durable = `agent-${agentId}`;
      const commands = subjects.commandsStream;
      return with_(
        [
          // Its facts, as itself only.
          subjects.eventsBy(name),
          // Its registration only.
          `$KV.${buckets.agents}.${agentId}`,
          // Its own command consumer, created only with its own filter (the filter is part of the API subject,
          // and the server checks it against the request), read and acknowledged; nothing else of the queue.
          `${API}.CONSUMER.CREATE.${commands}.${durable}.${subjects.commandsFor(agentId)}`,
          `${API}.CONSUMER.INFO.${commands}.${durable}`,
          `${API}.CONSUMER.MSG.NEXT.${commands}.${durable}`,
          `$JS.ACK.${commands}.${durable}.>`,
          subjects.deadLetter(`agent-${agentId}`),
          ...readEvents,
          ...readKv(buckets.migrations, buckets.agents),
        ],
        readerDenials(),
      );
    }
    case 'functions':
      return with_(
        [
          subjects.eventsBy(name),
          // Only the functions command agents and write the saga's records and locks.
          'ums.commands.>',
          `$KV.${buckets.migrations}.>`,
          `$KV.${buckets.locks}.>`,
          `$KV.${buckets.evacuations}.>`,
          ...functionNames.map((fn) => subjects.deadLetter(`function-${fn}`)),
          // The notice ingress's refused deliveries; the notices it states are its own events, allowed above.
          ...httpIngresses.map((fn) => subjects.deadLetter(`function-${fn}`)),
          ...readEvents,
          ...readKv(buckets.migrations, buckets.agents, buckets.locks, buckets.frontmen, buckets.evacuations),
        ],
        readerDenials(),
      );
    case 'bridge':
      return with_([
        ...bridgeConsumers().flatMap(({ durableName, filterSubject }) => [
          `${API}.CONSUMER.CREATE.${subjects.eventsStream}.${durableName}.${filterSubject}`,
          `${API}.CONSUMER.INFO.${subjects.eventsStream}.${durableName}`,
          `${API}.CONSUMER.MSG.NEXT.${subjects.eventsStream}.${durableName}`,
          `$JS.ACK.${subjects.eventsStream}.${durableName}.>`,
        ]),
        ...functionNames.map((fn) => subjects.deadLetter(`bridge-${fn}`)),
      ]);
    case 'cli':
      return with_(
        [
          // `ums migrate` and `ums drain` ask; `plan`, `status`, `agents`, `evacuations` only read.
          subjects.event('*', name, 'migration.requested'),
          subjects.event(HOST_SCOPE, name, 'host.drain-requested'),
          subjects.event(HOST_SCOPE, name, 'host.drain-cancelled'),
          ...readEvents,
          ...readKv(buckets.migrations, buckets.agents, buckets.evacuations),
          `${API}.STREAM.MSG.GET.${subjects.deadLetterStream}`,
        ],
        readerDenials(),
      );
    case 'frontman':
      return with_(
        [
          // Its drained and released facts, and nothing else; its registration (the services it fronts).
          subjects.event('*', name, 'frontman.drained'),
          subjects.event('*', name, 'frontman.released'),
          `$KV.${buckets.frontmen}.*`,
          // It follows the migrations of its services, and finds their hosts.
          ...readEvents,
          ...readKv(buckets.migrations, buckets.agents, buckets.frontmen),
        ],
        readerDenials(),
      );
    case 'admin':
      return { publish: { allow: ['>'], deny: [] }, subscribe: { allow: ['>'], deny: [] } };
  }
}

/** The principals of a stack with these agents. */
export function stackPrincipals(agentIds: readonly string[]): Principal[] {
  return [
    { kind: 'admin' },
    { kind: 'functions' },
    { kind: 'bridge' },
    { kind: 'cli' },
    { kind: 'frontman' },
    ...agentIds.map((agentId): Principal => ({ kind: 'agent', agentId })),
  ];
}

/** The server's `authorization` block: one nkey user per principal with its permissions (JSON is valid NATS config). */
export function authorizationConfig(users: ReadonlyArray<{ nkey: string; principal: Principal }>): string {
  const entries = users.map(({ nkey, principal }) => ({ nkey, permissions: brokerPermissions(principal) }));
  return `authorization: ${JSON.stringify({ users: entries }, null, 2)}\n`;
}

export interface BrokerTls {
  /** The CA's certificate: what clients verify the server with (UMS_NATS_CA). */
  caFile: string;
  certFile: string;
  keyFile: string;
}

/** A CA of the stack's own and a server certificate for 127.0.0.1 (and localhost) signed by it (openssl; EC P-256 keys). */
export async function createBrokerTls(dir: string): Promise<BrokerTls> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = (file: string) => join(dir, file);
  const openssl = async (args: string[]) => {
    try {
      await execFileAsync('openssl', args);
    } catch (cause) {
      throw new Error(`openssl ${args[0]} failed while creating the broker's TLS material: ${(cause as Error).message}`, { cause });
    }
  };
  await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', path('ca.key')]);
  await openssl(['req', '-x509', '-new', '-key', path('ca.key'), '-days', '30', '-subj', '/CN=UMS local stack CA', '-out', path('ca.pem')]);
  await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', path('server.key')]);
  await openssl(['req', '-new', '-key', path('server.key'), '-subj', '/CN=127.0.0.1', '-out', path('server.csr')]);
  // nats.js (on Node) verifies a server reached by IP address under the name "localhost": both are named.
  // clientAuth too: the servers of a cluster present this certificate to each other on their routes, which
  // verify it as a client's (nats.conf `verify: true`); a serverAuth-only one fails the route handshake
  // ("incompatible key usage"), as terraform/README.md says of the broker's certificate.
  await writeFile(path('server.ext'), 'subjectAltName = IP:127.0.0.1, DNS:localhost\nextendedKeyUsage = serverAuth, clientAuth\n');
  await openssl([
    'x509',
    '-req',
    '-in',
    path('server.csr'),
    '-CA',
    path('ca.pem'),
    '-CAkey',
    path('ca.key'),
    '-CAcreateserial',
    '-days',
    '30',
    '-extfile',
    path('server.ext'),
    '-out',
    path('server.pem'),
  ]);
  await Promise.all([chmod(path('ca.key'), 0o600), chmod(path('server.key'), 0o600)]);
  return { caFile: path('ca.pem'), certFile: path('server.pem'), keyFile: path('server.key') };
}

/** What connectNatsBus() reads to connect as a principal: file paths, never the seed itself. */
export interface PrincipalEnv {
  UMS_NATS_CREDENTIALS: string;
  UMS_NATS_CA: string;
}

export interface BrokerCredentials {
  tls: BrokerTls;
  /** Credential file path by principal name (admin, functions, bridge, cli, frontman, agent-<id>). */
  files: Map<string, string>;
  /** The server's authorization block. */
  authorization: string;
  /** Environment that makes connectNatsBus() connect as `principal` (paths only, never the seed). */
  envFor(principal: string): PrincipalEnv;
}

/**
 * One nkey per principal of a deployment with these agents: a credential file of mode 0600 each under `dir`
 * (mode 0700), named <principal>.json, and the server's authorization block (public keys only). The local
 * stack and a cloud deployment (infra/deploy-credentials.ts) both create them here.
 */
export async function writePrincipalCredentials(
  dir: string,
  agentIds: readonly string[],
): Promise<{ files: Map<string, string>; authorization: string }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const files = new Map<string, string>();
  const users: Array<{ nkey: string; principal: Principal }> = [];
  for (const principal of stackPrincipals(agentIds)) {
    const name = principalName(principal);
    const pair = createUserKey();
    const credential: BrokerCredential = { principal: name, seed: new TextDecoder().decode(pair.getSeed()) };
    const file = join(dir, `${name}.json`);
    await writeFile(file, JSON.stringify(credential), { mode: 0o600 });
    files.set(name, file);
    users.push({ nkey: pair.getPublicKey(), principal });
  }
  return { files, authorization: authorizationConfig(users) };
}

/**
 * Everything the broker's security needs, under `dir`: TLS material, one nkey per principal (a credential
 * file of mode 0600 each) and the authorization block giving each principal its permissions.
 */
export async function createBrokerCredentials(dir: string, agentIds: readonly string[]): Promise<BrokerCredentials> {
  const tls = await createBrokerTls(join(dir, 'tls'));
  const { files, authorization } = await writePrincipalCredentials(join(dir, 'credentials'), agentIds);
  return {
    tls,
    files,
    authorization,
    envFor: (principal) => {
      const file = files.get(principal);
      if (file === undefined) throw new Error(`no broker credential for principal "${principal}"`);
      return { UMS_NATS_CREDENTIALS: file, UMS_NATS_CA: tls.caFile };
    },
  };
}
