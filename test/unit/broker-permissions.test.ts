import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { resolveBroker } from '../../cli/bus-connection.js';
import { defaultStackDir, stackInfoPath, type StackInfo } from '../../cli/stack-info.js';
import { bridgeConsumers } from '../../bridge/trigger-bridge.js';
import { subjects } from '../../core/event-bus.js';
import {
  agentPrincipal,
  CLI_PRINCIPAL,
  FRONTMAN_PRINCIPAL,
  FUNCTIONS_PRINCIPAL,
  mayState,
  publisherOf,
  publisherOfSubject,
} from '../../core/event-identity.js';
import { makeEvent } from '../../core/events.js';
import {
  authorizationConfig,
  brokerPermissions,
  principalName,
  stackPrincipals,
  type Permissions,
  type Principal,
} from '../../infra/broker-credentials.js';

/** NATS subject matching as the server does it: `*` is one token, `>` the rest (one token or more). */
function matches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length || (p[i] !== '*' && p[i] !== s[i])) return false;
  }
  return p.length === s.length;
}

const may = (permissions: Permissions, action: 'publish' | 'subscribe', subject: string): boolean =>
  permissions[action].allow.some((pattern) => matches(pattern, subject)) &&
  !permissions[action].deny.some((pattern) => matches(pattern, subject));

const A = 'azure-1';
const B = 'gcp-1';
const agentA = brokerPermissions({ kind: 'agent', agentId: A });
const functions = brokerPermissions({ kind: 'functions' });
const cli = brokerPermissions({ kind: 'cli' });
const bridge = brokerPermissions({ kind: 'bridge' });
const frontman = brokerPermissions({ kind: 'frontman' });
const readers: Array<[string, Permissions]> = [
  ['agent', agentA],
  ['functions', functions],
  ['cli', cli],
  ['frontman', frontman],
];

describe('the broker permission sets', () => {
  it('lets an agent state facts as itself only, and consume only its own commands', () => {
    assert.ok(may(agentA, 'publish', subjects.event('m1', agentPrincipal(A), 'checkpoint.chunk')));
    assert.ok(!may(agentA, 'publish', subjects.event('m1', agentPrincipal(B), 'checkpoint.chunk')));
    assert.ok(!may(agentA, 'publish', subjects.event('m1', FUNCTIONS_PRINCIPAL, 'migration.completed')));
    assert.ok(!may(agentA, 'publish', subjects.event('m1', CLI_PRINCIPAL, 'migration.requested')));
    assert.ok(may(agentA, 'publish', `$KV.ums_agents.${A}`));
    assert.ok(!may(agentA, 'publish', `$KV.ums_agents.${B}`));
    assert.ok(!may(agentA, 'publish', '$KV.ums_migrations.m1'));
    assert.ok(!may(agentA, 'publish', '$KV.ums_locks.x'));
    assert.ok(!may(agentA, 'publish', subjects.commandsFor(B)));
    assert.ok(may(agentA, 'publish', `$JS.API.CONSUMER.CREATE.UMS_COMMANDS.agent-${A}.ums.commands.${A}`));
    assert.ok(!may(agentA, 'publish', `$JS.API.CONSUMER.CREATE.UMS_COMMANDS.agent-${A}.ums.commands.${B}`));
    assert.ok(!may(agentA, 'publish', `$JS.API.CONSUMER.CREATE.UMS_COMMANDS.agent-${B}.ums.commands.${B}`));
    assert.ok(!may(agentA, 'publish', `$JS.API.CONSUMER.DURABLE.CREATE.UMS_COMMANDS.agent-${A}`));
    assert.ok(may(agentA, 'publish', `$JS.API.CONSUMER.MSG.NEXT.UMS_COMMANDS.agent-${A}`));
    assert.ok(!may(agentA, 'publish', `$JS.API.CONSUMER.MSG.NEXT.UMS_COMMANDS.agent-${B}`));
    assert.ok(may(agentA, 'publish', `$JS.ACK.UMS_COMMANDS.agent-${A}.1.2.3.4.5`));
    assert.ok(!may(agentA, 'publish', `$JS.ACK.UMS_COMMANDS.agent-${B}.1.2.3.4.5`));
    assert.ok(!may(agentA, 'publish', '$JS.API.STREAM.MSG.GET.UMS_COMMANDS'));
    assert.ok(!may(agentA, 'publish', '$JS.API.DIRECT.GET.UMS_COMMANDS'));
    assert.ok(may(agentA, 'publish', subjects.deadLetter(`agent-${A}`)));
    assert.ok(!may(agentA, 'publish', subjects.deadLetter(`agent-${B}`)));
  });

  it('gives each principal its own inbox and nothing else to subscribe to', () => {
    for (const principal of stackPrincipals([A, B]).filter((p) => p.kind !== 'admin')) {
      const permissions = brokerPermissions(principal);
      assert.deepEqual(permissions.subscribe.allow, [`_INBOX_${principalName(principal)}.>`], principalName(principal));
    }
    assert.ok(!may(agentA, 'subscribe', `_INBOX_${agentPrincipal(B)}.x`));
    assert.ok(!may(agentA, 'subscribe', subjects.commandsFor(A)));
  });

  it('lets the frontman state its own two facts and register, and nothing of the saga', () => {
    assert.ok(may(frontman, 'publish', subjects.event('m1', FRONTMAN_PRINCIPAL, 'frontman.drained')));
    assert.ok(may(frontman, 'publish', subjects.event('m1', FRONTMAN_PRINCIPAL, 'frontman.released')));
    assert.ok(!may(frontman, 'publish', subjects.event('m1', FRONTMAN_PRINCIPAL, 'restore.prepared')));
    assert.ok(!may(frontman, 'publish', subjects.event('m1', agentPrincipal(A), 'restore.completed')));
    assert.ok(may(frontman, 'publish', '$KV.ums_frontmen.edge-1'));
    assert.ok(!may(frontman, 'publish', `$KV.ums_agents.${A}`));
    assert.ok(!may(agentA, 'publish', '$KV.ums_frontmen.edge-1'));
  });

  it('lets only the functions command agents and write the records and locks', () => {
    for (const [who, permissions] of [...readers, ['bridge', bridge] as [string, Permissions]]) {
      const expected = who === 'functions';
      assert.equal(may(permissions, 'publish', subjects.commandsFor(A)), expected, `${who} commands`);
      assert.equal(may(permissions, 'publish', '$KV.ums_migrations.m1'), expected, `${who} records`);
      assert.equal(may(permissions, 'publish', '$KV.ums_locks.a.c'), expected, `${who} locks`);
    }
    assert.ok(may(functions, 'publish', subjects.event('m1', FUNCTIONS_PRINCIPAL, 'migration.planned')));
    assert.ok(!may(functions, 'publish', subjects.event('m1', agentPrincipal(A), 'checkpoint.uploaded')));
    assert.ok(!may(functions, 'publish', `$KV.ums_agents.${A}`));
  });

  it('lets the CLI ask for a migration and read, nothing more', () => {
    assert.ok(may(cli, 'publish', subjects.event('m1', CLI_PRINCIPAL, 'migration.requested')));
    assert.ok(!may(cli, 'publish', subjects.event('m1', CLI_PRINCIPAL, 'migration.failed')));
    assert.ok(may(cli, 'publish', '$JS.API.STREAM.MSG.GET.UMS_DEAD_LETTERS'));
    assert.ok(may(cli, 'publish', '$JS.API.DIRECT.GET.KV_ums_migrations.$KV.ums_migrations.m1'));
    assert.ok(!may(cli, 'publish', '$JS.API.STREAM.MSG.GET.UMS_COMMANDS'));
  });

  it("keeps the bridge's durable consumers the bridge's, and the bridge from publishing facts", () => {
    for (const { durableName, filterSubject } of bridgeConsumers()) {
      assert.ok(may(bridge, 'publish', `$JS.API.CONSUMER.CREATE.UMS_EVENTS.${durableName}.${filterSubject}`));
      assert.ok(may(bridge, 'publish', `$JS.API.CONSUMER.MSG.NEXT.UMS_EVENTS.${durableName}`));
      for (const [who, permissions] of readers) {
        assert.ok(!may(permissions, 'publish', `$JS.API.CONSUMER.MSG.NEXT.UMS_EVENTS.${durableName}`), `${who} pulls ${durableName}`);
        assert.ok(!may(permissions, 'publish', `$JS.API.CONSUMER.DELETE.UMS_EVENTS.${durableName}`), `${who} deletes ${durableName}`);
        assert.ok(
          !may(permissions, 'publish', `$JS.API.CONSUMER.CREATE.UMS_EVENTS.${durableName}.ums.events.>`),
          `${who} takes ${durableName}`,
        );
      }
    }
    assert.ok(!may(bridge, 'publish', subjects.event('m1', 'bridge', 'restore.prepared')));
    assert.ok(!may(bridge, 'publish', subjects.event('m1', agentPrincipal(A), 'restore.prepared')));
  });

  it('lets every reader follow events, and nobody but the admin manage streams', () => {
    for (const [who, permissions] of readers) {
      assert.ok(may(permissions, 'publish', '$JS.API.CONSUMER.CREATE.UMS_EVENTS.abc_1.ums.events.m1.>'), who);
      assert.ok(may(permissions, 'publish', '$JS.API.CONSUMER.MSG.NEXT.UMS_EVENTS.abc_1'), who);
      for (const api of [
        'STREAM.CREATE.UMS_EVENTS',
        'STREAM.DELETE.UMS_EVENTS',
        'STREAM.PURGE.UMS_COMMANDS',
        'STREAM.UPDATE.KV_ums_agents',
      ]) {
        assert.ok(!may(permissions, 'publish', `$JS.API.${api}`), `${who}: ${api}`);
      }
    }
    const admin = brokerPermissions({ kind: 'admin' });
    assert.ok(may(admin, 'publish', '$JS.API.STREAM.CREATE.UMS_EVENTS'));
  });

  it('writes one nkey user per principal into the authorization block', () => {
    const principals: Principal[] = stackPrincipals([A, B]);
    assert.deepEqual(principals.map(principalName), ['admin', 'functions', 'bridge', 'cli', 'frontman', `agent-${A}`, `agent-${B}`]);
    const config = authorizationConfig(principals.map((principal, i) => ({ nkey: `U${i}`, principal })));
    assert.match(config, /^authorization: /);
    const parsed = JSON.parse(config.replace(/^authorization: /, '')) as { users: Array<{ nkey: string; permissions: Permissions }> };
    assert.equal(parsed.users.length, principals.length);
    assert.deepEqual(parsed.users[5]?.permissions, brokerPermissions({ kind: 'agent', agentId: A }));
  });
});

describe('who may state an event', () => {
  const prepared = (agent: string) => makeEvent('restore.prepared', '/x', { migrationId: 'm1', agent, freeDiskBytes: 1 });

  it('reads the publisher from the subject', () => {
    assert.equal(publisherOfSubject(subjects.event('m1', agentPrincipal(A), 'checkpoint.chunk')), agentPrincipal(A));
    assert.equal(publisherOfSubject('ums.commands.x'), undefined);
    assert.equal(publisherOfSubject('ums.events.m1'), undefined);
  });

  it("takes an agent's fact only from that agent, the CLI's request only from the CLI, the saga's events only from the functions", () => {
    assert.equal(publisherOf(prepared(A)), agentPrincipal(A));
    assert.ok(mayState(prepared(A), subjects.event('m1', agentPrincipal(A), 'restore.prepared')));
    assert.ok(!mayState(prepared(B), subjects.event('m1', agentPrincipal(A), 'restore.prepared')), 'A speaking for B');
    assert.ok(!mayState(prepared(A), subjects.event('m1', FUNCTIONS_PRINCIPAL, 'restore.prepared')));
    assert.ok(!mayState(prepared(A), subjects.event('m1', agentPrincipal(A), 'restore.completed')), 'the subject names another event');
    const requested = makeEvent('migration.requested', '/ums/cli', { migrationId: 'm1', container: 'c', destinationAgent: B });
    assert.ok(mayState(requested, subjects.event('m1', CLI_PRINCIPAL, 'migration.requested')));
    assert.ok(!mayState(requested, subjects.event('m1', agentPrincipal(A), 'migration.requested')));
    const failed = makeEvent('migration.failed', '/f', {
      migrationId: 'm1',
      phase: 'p',
      code: 'engine-failed',
      reason: 'r',
      runningOn: null,
    });
    assert.ok(mayState(failed, subjects.event('m1', FUNCTIONS_PRINCIPAL, 'migration.failed')));
    assert.ok(!mayState(failed, subjects.event('m1', CLI_PRINCIPAL, 'migration.failed')));
  });
});

describe("the CLI's broker credential", () => {
  it("connects to the local stack's broker as the stack's CLI principal, with nothing configured", async () => {
    const home = await mkdtemp(join(tmpdir(), 'ums-cli-cred-'));
    const saved = {
      UMS_HOME: process.env.UMS_HOME,
      NATS_URL: process.env.NATS_URL,
      UMS_NATS_CREDENTIALS: process.env.UMS_NATS_CREDENTIALS,
      UMS_NATS_CA: process.env.UMS_NATS_CA,
    };
    try {
      process.env.UMS_HOME = home;
      delete process.env.NATS_URL;
      delete process.env.UMS_NATS_CREDENTIALS;
      delete process.env.UMS_NATS_CA;
      const dir = defaultStackDir();
      await mkdir(dir, { recursive: true });
      const info: StackInfo = {
        name: 'default',
        dir,
        pid: 1,
        natsUrl: 'tls://127.0.0.1:4999',
        natsCa: join(dir, 'ca.pem'),
        cliCredentials: join(dir, 'cli.json'),
        startedAt: new Date().toISOString(),
        image: 'i',
        hosts: [],
        functions: {},
        wan: { netns: 'n', subnet: '10.0.0.0/24', bridgeAddress: '10.0.0.1' },
      };
      await writeFile(stackInfoPath(dir), JSON.stringify(info));
      assert.deepEqual(await resolveBroker(undefined), { servers: info.natsUrl, credentials: info.cliCredentials, ca: info.natsCa });
      // The same broker named explicitly (e.g. NATS_URL copied from `ums stack info`) still gets the stack's credential.
      assert.deepEqual(await resolveBroker(info.natsUrl), { servers: info.natsUrl, credentials: info.cliCredentials, ca: info.natsCa });
      // Another broker: the credential comes from the environment (UMS_NATS_CREDENTIALS), not from the stack.
      assert.deepEqual(await resolveBroker('tls://broker.example:4222'), { servers: 'tls://broker.example:4222' });
    } finally {
      for (const [key, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
      await rm(home, { recursive: true, force: true });
    }
  });
});
