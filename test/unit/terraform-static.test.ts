import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { artifactPrefix } from '../../core/checkpoint-artifact.js';
import { httpIngresses, triggers } from '../../functions/triggers.js';
import { HEALTH_EVENT_TYPE_CODES, REBALANCE_RECOMMENDATION, SPOT_INTERRUPTION } from '../../functions/cloud-notices/aws-eventbridge.js';
import { ANNOTATED, AVAILABILITY_CHANGED } from '../../functions/cloud-notices/azure-event-grid.js';
import { NOTICE_METHODS } from '../../functions/cloud-notices/gcp-eventarc.js';
import { NOTICE_KEY_HEADER } from '../../functions/cloud-notice-ingress.js';
import {
  blocksOf,
  type HclBody,
  isBody,
  parseModule,
  parseTf,
  repoRoot,
  requiredVariableNames,
  resourcesOf,
  tfFiles,
  terraformRoot,
  variableNames,
} from '../support/terraform.js';
import {
  AGENT_ENV_NOT_DEPLOYED,
  agentEnvironmentFromCode,
  agentEnvironmentInModule,
  bridgeEnvironmentFromCode,
  FRONTMAN_ENV_NOT_DEPLOYED,
  frontmanEnvironmentFromCode,
  frontmanEnvironmentInModule,
  functionsEnvironmentFromCode,
  functionsEnvironmentInModule,
} from '../support/terraform-drift.js';

/*
 * terraform/ against the code, without any CLI: every .tf parses; each module has its files; the bucket
 * lifecycle rules expire the prefix the code writes checkpoints under; the agent's environment in the
 * cloud-init is what agents/main.ts reads (the list derived from the code); the functions deployed are the
 * functions the code registers; every input a caller (example or module) passes exists, and every required
 * input is passed.
 */

const execFileAsync = promisify(execFile);
const modulesDir = join(terraformRoot, 'modules');
const examplesDir = join(terraformRoot, 'examples');

async function dirs(parent: string): Promise<string[]> {
  if (!existsSync(parent)) return [];
  return (await readdir(parent, { withFileTypes: true }))
    .filter((e) => e.isDirectory())
    .map((e) => join(parent, e.name))
    .sort();
}

/** Every file under a folder (the modules' READMEs and templates too), dot-folders left out. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const nested = await Promise.all(
    entries
      .filter((e) => !e.name.startsWith('.'))
      .map((e) => (e.isDirectory() ? filesUnder(join(dir, e.name)) : Promise.resolve([join(dir, e.name)]))),
  );
  return nested.flat();
}

/** A variable's block as hcl2json parses it. */
function variableBody(blocks: Map<string, HclBody[]>, name: string): HclBody | undefined {
  return blocksOf((blocks.get('variable') ?? []).find((v) => name in v)?.[name])?.[0];
}

const variableDefault = (blocks: Map<string, HclBody[]>, name: string): unknown => variableBody(blocks, name)?.default;

/** Every resource of a module, "type.name" -> its body. */
async function resourceBodies(dir: string): Promise<Map<string, HclBody>> {
  const bodies = new Map<string, HclBody>();
  for (const file of (await parseModule(dir)).files) {
    for (const [type, name, body] of resourcesOf(await parseTf(file))) bodies.set(`${type}.${name}`, body);
  }
  return bodies;
}

describe('terraform: files and module layout', () => {
  it('every .tf file parses', async () => {
    const files = await tfFiles();
    assert.ok(files.length >= 30, `${files.length} .tf files found`);
    for (const file of files) {
      const parsed = await parseTf(file).catch((error: unknown) => assert.fail(`${relative(repoRoot, file)}: ${(error as Error).message}`));
      assert.ok(Object.keys(parsed).length > 0, `${relative(repoRoot, file)} is empty`);
    }
  });

  it('every module has main.tf, variables.tf, outputs.tf, versions.tf and a README, and every variable a description', async () => {
    const modules = await dirs(modulesDir);
    assert.ok(modules.length >= 13, `${modules.length} modules`);
    for (const dir of modules) {
      for (const file of ['main.tf', 'variables.tf', 'outputs.tf', 'versions.tf', 'README.md']) {
        assert.ok(existsSync(join(dir, file)), `${relative(repoRoot, dir)} lacks ${file}`);
      }
      const { blocks } = await parseModule(dir);
      for (const [kind, key] of [
        ['variable', 'description'],
        ['output', 'description'],
      ] as const) {
        for (const block of blocks.get(kind) ?? []) {
          for (const [name, bodies] of Object.entries(block)) {
            const body = blocksOf(bodies)?.[0];
            assert.ok(typeof body?.[key] === 'string' && body[key] !== '', `${relative(repoRoot, dir)}: ${kind} ${name} has no ${key}`);
          }
        }
      }
    }
  });
});

describe('terraform: scripts', () => {
  it('the scripts under terraform/ pass bash -n and shellcheck', async (t) => {
    const scripts = (await readdir(join(terraformRoot, 'scripts')))
      .filter((f) => f.endsWith('.sh'))
      .map((f) => join(terraformRoot, 'scripts', f));
    assert.ok(scripts.length > 0);
    for (const script of scripts) await execFileAsync('bash', ['-n', script]);
    const shellcheck = await execFileAsync('shellcheck', ['--version']).then(
      () => true,
      () => false,
    );
    if (!shellcheck) return t.skip('shellcheck is not installed (infra/setup.sh installs it): bash -n only');
    await execFileAsync('shellcheck', ['-s', 'bash', '-S', 'warning', ...scripts]);
  });
});

describe('terraform: drift against the code', () => {
  it("every bucket module's lifecycle rule expires the prefix the code writes checkpoints under", async () => {
    // core/checkpoint-artifact.ts: artifactPrefix(id) = <root>/<id>/; the root is what abandoned migrations leave.
    const root = artifactPrefix('x').slice(0, -'x/'.length);
    assert.equal(root, 'migrations/');
    for (const name of ['aws-bucket', 'gcp-bucket', 'azure-storage']) {
      const { blocks } = await parseModule(join(modulesDir, name));
      const locals = (blocks.get('locals') ?? []).find((l) => 'migrations_prefix' in l);
      const expression = locals?.migrations_prefix;
      assert.equal(typeof expression, 'string', `${name} defines local.migrations_prefix`);
      // Both branches: at the store's root, and below its prefix.
      assert.ok(String(expression).includes(`"${root}"`), `${name}: ${String(expression)} at the root`);
      assert.ok(String(expression).includes(`\${var.prefix}/${root}"`), `${name}: ${String(expression)} below the prefix`);
      const main = await readFile(join(modulesDir, name, 'main.tf'), 'utf8');
      assert.match(
        main,
        /prefix(_match)?\s*=\s*\[?"?\$?\{?[^\n]*local\.migrations_prefix/,
        `${name}: the lifecycle rule uses local.migrations_prefix`,
      );
    }
  });

  it("the agent unit's environment is what the agent reads, and has every mandatory option", async () => {
    const code = await agentEnvironmentFromCode();
    // The derivation itself: it must find what main.ts is known to read, or it checks nothing.
    for (const known of ['UMS_AGENT_ID', 'UMS_STORE_URL', 'NATS_URL', 'UMS_NATS_CREDENTIALS', 'UMS_NATS_CA', 'UMS_PAGE_RELAY_ADDRESS']) {
      assert.ok(code.all.has(known), `derived from the code: ${known}`);
    }
    assert.deepEqual([...code.mandatory].sort(), ['UMS_AGENT_ID', 'UMS_CLOUD', 'UMS_REGION', 'UMS_STORE_URL']);
    const deployed = await agentEnvironmentInModule();
    const set = new Set([...deployed.plain, ...deployed.secret, 'AZURE_STORAGE_KEY']);
    // Everything the unit sets, the agent reads (AZURE_STORAGE_KEY: core/object-stores, the Azure store).
    const unread = [...deployed.plain, ...deployed.secret].filter((name) => !code.all.has(name) && name !== 'AZURE_STORAGE_KEY');
    assert.deepEqual(unread, [], 'set in the cloud-init but read by no code');
    // Everything the agent reads is set, or left out for a reason that still names something it reads.
    const unset = [...code.all].filter((name) => !set.has(name) && !(name in AGENT_ENV_NOT_DEPLOYED)).sort();
    assert.deepEqual(unset, [], 'read by the agent but neither set by the cloud-init nor listed in AGENT_ENV_NOT_DEPLOYED');
    const stale = Object.keys(AGENT_ENV_NOT_DEPLOYED).filter((name) => !code.all.has(name));
    assert.deepEqual(stale, [], 'AGENT_ENV_NOT_DEPLOYED names what the agent no longer reads');
    for (const name of code.mandatory) assert.ok(deployed.plain.has(name), `mandatory ${name} is set`);
  });

  it("the frontman unit's environment is what frontman/main.ts reads, and has every mandatory option", async () => {
    const code = await frontmanEnvironmentFromCode();
    // The derivation itself: it must find what the frontman is known to read, or it checks nothing.
    for (const known of [
      'UMS_FRONTMAN_ID',
      'UMS_FRONTMAN_SERVICES',
      'NATS_URL',
      'UMS_NATS_CREDENTIALS',
      'UMS_NATS_CA',
      'UMS_FRONTMAN_HOLD_SECONDS',
    ]) {
      assert.ok(code.all.has(known), `derived from the code: ${known}`);
    }
    assert.deepEqual([...code.mandatory].sort(), ['UMS_FRONTMAN_ID', 'UMS_FRONTMAN_SERVICES']);
    const deployed = await frontmanEnvironmentInModule();
    assert.ok(deployed.plain.has('UMS_FRONTMAN_MAX_BODY_KIB'), 'derived from the module: the optional limits too');
    const unread = [...deployed.plain, ...deployed.secret].filter((name) => !code.all.has(name));
    assert.deepEqual(unread, [], 'set in the frontman unit but read by no code');
    const set = new Set([...deployed.plain, ...deployed.secret]);
    const unset = [...code.all].filter((name) => !set.has(name) && !(name in FRONTMAN_ENV_NOT_DEPLOYED)).sort();
    assert.deepEqual(unset, [], 'read by the frontman but neither set by its unit nor listed in FRONTMAN_ENV_NOT_DEPLOYED');
    const stale = Object.keys(FRONTMAN_ENV_NOT_DEPLOYED).filter((name) => !code.all.has(name));
    assert.deepEqual(stale, [], 'FRONTMAN_ENV_NOT_DEPLOYED names what the frontman no longer reads');
    for (const name of code.mandatory) assert.ok(deployed.plain.has(name), `mandatory ${name} is set`);
  });

  it('every host module feeds its public address to the agent as its service address (UMS_SERVICE_ADDRESS)', async () => {
    for (const name of ['gcp-host', 'aws-host', 'azure-host']) {
      const { blocks } = await parseModule(join(modulesDir, name));
      const call = blocksOf((blocks.get('module') ?? []).find((m) => 'cloud_init' in m)?.cloud_init)?.[0];
      assert.ok(call !== undefined, `${name} calls agent-cloud-init`);
      assert.match(String(call.service_address), /public_ip|address/, `${name}: service_address`);
    }
  });

  it("every host module opens exactly the page relay's fixed ports, to its peers, and only where the agent takes part in post-copy", async () => {
    // The relay listens on fixed ports (agents/post-copy/page-relay.ts, UMS_PAGE_RELAY_PORTS): nothing opens
    // the kernel's ephemeral range any more, in any module, example or README.
    for (const file of await filesUnder(terraformRoot)) {
      assert.doesNotMatch(await readFile(file, 'utf8'), /32768|60999/, `${relative(repoRoot, file)} opens the ephemeral range`);
    }
    const cloudInit = await parseModule(join(modulesDir, 'agent-cloud-init'));
    const defaultPorts = variableDefault(cloudInit.blocks, 'page_relay_ports');
    assert.deepEqual(defaultPorts, { from: 7700, to: 7715 });
    const rules: Record<string, [string, string]> = {
      'aws-host': ['aws_vpc_security_group_ingress_rule', 'page_relay'],
      'gcp-host': ['google_compute_firewall', 'page_relay'],
      'azure-host': ['azurerm_network_security_group', 'this'],
    };
    for (const [name, [type, resource]] of Object.entries(rules)) {
      const dir = join(modulesDir, name);
      const { blocks } = await parseModule(dir);
      assert.deepEqual(variableDefault(blocks, 'page_relay_ports'), defaultPorts, `${name}: the same ports as agent-cloud-init`);
      const call = blocksOf((blocks.get('module') ?? []).find((m) => 'cloud_init' in m)?.cloud_init)?.[0];
      assert.equal(call?.page_relay_ports, '${var.page_relay_ports}', `${name}: the agent listens on the ports the firewall opens`);
      assert.equal(call?.engine, '${var.engine}', `${name}: the engine reaches the agent`);
      // A Docker host (stop-and-copy only) neither announces a relay nor opens one.
      const locals = Object.assign({}, ...(blocks.get('locals') ?? [])) as Record<string, unknown>;
      assert.equal(locals.page_relay, '${var.post_copy && var.engine == "podman"}', name);
      assert.match(
        String(call?.page_relay_address),
        /^\$\{local\.page_relay \?/,
        `${name}: the relay is announced only with local.page_relay`,
      );
      const rule = JSON.stringify((await resourceBodies(dir)).get(`${type}.${resource}`));
      assert.match(rule, /local\.page_relay/, `${name}: the rule exists only with local.page_relay`);
      assert.match(rule, /var\.page_relay_ports\.from|local\.relay_ports/, `${name}: the rule opens the relay's ports`);
      assert.match(rule, /var\.peer_cidrs/, `${name}: to the peers`);
    }
  });

  it('the frontman modules (gcp, azure, aws) take the same inputs, require their clients, and boot agent-cloud-init as a frontman', async () => {
    const shared = ['frontman_id', 'services', 'client_cidrs', 'host_cidrs', 'broker_cidrs', 'broker_port', 'nats_url', 'nats_ca_pem'];
    const limits = ['hold_seconds', 'drain_seconds', 'max_held', 'max_held_mib', 'max_body_kib'];
    const gcp = await parseModule(join(modulesDir, 'gcp-frontman'));
    const servicesType = variableBody(gcp.blocks, 'services')?.type;
    for (const name of ['gcp-frontman', 'azure-frontman', 'aws-frontman']) {
      const { blocks } = await parseModule(join(modulesDir, name));
      const declared = await variableNames(join(modulesDir, name));
      for (const input of [...shared, ...limits, 'log_level', 'release_url', 'release_sha256'])
        assert.ok(declared.has(input), `${name}: ${input}`);
      assert.equal(variableBody(blocks, 'services')?.type, servicesType, `${name}: services as gcp-frontman takes them`);
      // No open default: who may connect is always the caller's explicit choice.
      const required = await requiredVariableNames(join(modulesDir, name));
      for (const input of ['client_cidrs', 'host_cidrs', 'broker_cidrs', 'services'])
        assert.ok(required.has(input), `${name}: ${input} is required`);
      const clientCheck = JSON.stringify(variableBody(blocks, 'client_cidrs')?.validation);
      assert.match(clientCheck, /length\(var\.client_cidrs\) > 0/, `${name}: an empty client_cidrs is refused`);
      const call = blocksOf((blocks.get('module') ?? []).find((m) => 'cloud_init' in m)?.cloud_init)?.[0];
      assert.equal(call?.source, '../agent-cloud-init', name);
      const frontman = call?.frontman;
      assert.ok(isBody(frontman), `${name}: renders a frontman`);
      for (const limit of limits) assert.equal(frontman[limit], `\${var.${limit}}`, `${name}: ${limit} reaches the frontman`);
      assert.equal(frontman.id, '${var.frontman_id}', name);
      assert.ok(!('agent_id' in (call ?? {})) && !('store_url' in (call ?? {})), `${name}: nothing of an agent's`);
    }
    // The three-clouds example: each is optional, at most one exists (frontman_cloud), none by default.
    const example = await parseModule(join(examplesDir, 'three-clouds'));
    for (const module of ['frontman', 'azure_frontman', 'aws_frontman']) {
      const call = blocksOf((example.blocks.get('module') ?? []).find((m) => module in m)?.[module])?.[0];
      assert.match(String(call?.count), /^\$\{local\.frontman && var\.frontman_cloud == "(gcp|azure|aws)" \? 1 : 0\}$/, module);
    }
    assert.deepEqual(variableDefault(example.blocks, 'frontman_services'), []);
  });

  it("the broker's cluster routes go by name, and its replica count reaches the step that creates the streams", async () => {
    const { blocks } = await parseModule(join(modulesDir, 'gcp-nats-broker'));
    const locals = Object.assign({}, ...(blocks.get('locals') ?? [])) as Record<string, unknown>;
    // The certificate names *.<dns_name>, not the internal addresses (unknown before the first apply).
    assert.doesNotMatch(String(locals.routes) + String(locals.route_hosts), /google_compute_address/);
    assert.match(String(locals.route_hosts), /var\.dns_name/);
    const output = blocksOf((blocks.get('output') ?? []).find((o) => 'stream_replicas' in o)?.stream_replicas)?.[0];
    assert.equal(output?.value, '${length(var.zones)}');
    for (const example of ['azure-to-gcp', 'three-clouds']) {
      const outputs = (await parseModule(join(examplesDir, example))).blocks.get('output') ?? [];
      const value = blocksOf(outputs.find((o) => 'stream_replicas' in o)?.stream_replicas)?.[0]?.value;
      assert.equal(value, '${module.broker.stream_replicas}', example);
    }
    const readme = await readFile(join(terraformRoot, 'README.md'), 'utf8');
    assert.match(readme, /deploy-credentials\.js provision [^\n]*\n?[^\n]*--replicas "\$\(terraform output -raw stream_replicas\)"/);
  });

  it("the functions' and the bridge's environments in gcp-functions are what their code reads, keyless settings included", async () => {
    const code = await functionsEnvironmentFromCode();
    // The derivation itself: it must find what the functions are known to read, or it checks nothing.
    for (const known of ['NATS_URL', 'UMS_FUNCTION_AUTH_KEY', 'UMS_COMMAND_SIGNING_KEY_FILE', 'AZURE_STORAGE_KEY', 'UMS_AWS_ROLE_ARN']) {
      assert.ok(code.has(known), `derived from the code: ${known}`);
    }
    const deployed = await functionsEnvironmentInModule();
    assert.deepEqual(
      [...deployed.functions].filter((name) => !code.has(name)),
      [],
      'set for the functions by gcp-functions but read by no code',
    );
    // The keyless settings the code reads (core/cloud-identity/keyless-store-access.ts) that Terraform has
    // values for: the role and audience, the federated identity, its tenant and audience.
    for (const name of [
      'UMS_AWS_ROLE_ARN',
      'UMS_AWS_TOKEN_AUDIENCE',
      'UMS_AZURE_CLIENT_ID',
      'UMS_AZURE_TENANT_ID',
      'UMS_AZURE_TOKEN_AUDIENCE',
    ]) {
      assert.ok(deployed.functions.has(name), `gcp-functions sets ${name} when the keyless identity is configured`);
    }

    const bridge = await bridgeEnvironmentFromCode();
    for (const known of ['UMS_FUNCTION_ENDPOINTS', 'UMS_FUNCTION_ID_TOKEN', 'UMS_FUNCTION_AUTH_KEY', 'GCE_METADATA_HOST']) {
      assert.ok(bridge.all.has(known), `derived from the bridge's code: ${known}`);
    }
    assert.deepEqual(
      [...deployed.bridge.keys()].filter((name) => !bridge.all.has(name)),
      [],
      'set for the bridge by gcp-functions but read by no code',
    );
    for (const name of bridge.mandatory) assert.ok(deployed.bridge.has(name), `the bridge's mandatory ${name} is set`);
    // On Cloud Run the bridge sends ID tokens and its HMAC token both.
    assert.equal(deployed.bridge.get('UMS_FUNCTION_ID_TOKEN'), 'metadata');
    assert.equal(deployed.bridge.get('UMS_FUNCTION_AUTH'), 'bridge-hmac');
  });

  it("only the bridge's service account may invoke the functions, whose ingress stays internal", async () => {
    const parsed = await parseTf(join(modulesDir, 'gcp-functions', 'main.tf'));
    const grants = new Map(
      [...resourcesOf(parsed)].filter(([type]) => type === 'google_cloud_run_v2_service_iam_member').map(([, name, body]) => [name, body]),
    );
    assert.deepEqual([...grants.keys()].sort(), ['invoker', 'notice_ingress_eventarc', 'notice_ingress_public']);
    const invoker = grants.get('invoker');
    assert.equal(invoker?.role, 'roles/run.invoker');
    assert.equal(invoker?.member, 'serviceAccount:${google_service_account.bridge.email}');
    assert.equal(invoker?.for_each, '${google_cloudfunctions2_function.this}', "the bridge's grant covers the bus's functions");
    const functions = (await resourceBodies(join(modulesDir, 'gcp-functions'))).get('google_cloudfunctions2_function.this');
    assert.equal(blocksOf(functions?.service_config)?.[0]?.ingress_settings, 'ALLOW_INTERNAL_ONLY');
    // The one public invoker: the notice ingress that Event Grid and EventBridge call (no Google identity to
    // present), which checks the notice key before it reads anything; Eventarc's ingress admits the trigger only.
    const main = (await readFile(join(modulesDir, 'gcp-functions', 'main.tf'), 'utf8')).replace(/^\s*#.*$/gm, '');
    assert.equal([...main.matchAll(/allUsers|allAuthenticatedUsers/g)].length, 1, 'one public invoker in the module');
    assert.equal(grants.get('notice_ingress_public')?.member, 'allUsers');
    assert.match(String(grants.get('notice_ingress_public')?.name), /notice_ingress\["public"\]/);
    assert.equal(grants.get('notice_ingress_eventarc')?.member, 'serviceAccount:${google_service_account.notice_trigger[0].email}');
    assert.match(String(grants.get('notice_ingress_eventarc')?.name), /notice_ingress\["eventarc"\]/);
  });

  it('the notice ingress: deployed as the code registers it, authenticated, fed exactly what its translations read', async () => {
    const dir = join(modulesDir, 'gcp-functions');
    const bodies = await resourceBodies(dir);
    const ingress = bodies.get('google_cloudfunctions2_function.notice_ingress');
    assert.deepEqual(httpIngresses, ['cloudNoticeIngress']);
    assert.equal(blocksOf(ingress?.build_config)?.[0]?.entry_point, 'cloudNoticeIngress');
    await import('../../functions/index.js');
    const { getTestServer } = await import('@google-cloud/functions-framework/testing');
    assert.doesNotThrow(() => getTestServer('cloudNoticeIngress'), 'functions/index.ts registers it');
    const { blocks } = await parseModule(dir);
    const locals = Object.assign({}, ...(blocks.get('locals') ?? [])) as Record<string, unknown>;
    // Its identity reads the broker's CA, the functions' broker credential and the key: no signing key, no store.
    const env = locals.notice_ingress_env as Record<string, unknown>;
    const code = await functionsEnvironmentFromCode();
    for (const name of [...Object.keys(env), 'UMS_CLOUD_NOTICE_AUTH', 'UMS_CLOUD_NOTICE_KEY'])
      assert.ok(code.has(name), `${name} is read by the code`);
    assert.ok(!('UMS_COMMAND_SIGNING_KEY_FILE' in env), 'the ingress signs no command');
    assert.equal(blocksOf(ingress?.service_config)?.[0]?.service_account_email, '${google_service_account.notice_ingress[0].email}');
    const ingresses = String(locals.notice_ingresses);
    assert.match(ingresses, /public = \{ auth = "notice-key", ingress = "ALLOW_ALL" \}/);
    assert.match(ingresses, /eventarc = \{ auth = "cloud-run-iam", ingress = "ALLOW_INTERNAL_ONLY" \}/);

    // GCP: the sink lets through exactly the methods the translation reads, from the system-event log.
    assert.deepEqual([...(locals.notice_methods as string[])].sort(), [...NOTICE_METHODS].sort());
    const sink = bodies.get('google_logging_project_sink.cloud_notices');
    assert.match(String(sink?.filter), /cloudaudit\.googleapis\.com%2Fsystem_event/);
    const trigger = bodies.get('google_eventarc_trigger.cloud_notices');
    const destination = blocksOf(blocksOf(trigger?.destination)?.[0]?.cloud_run_service)?.[0];
    assert.equal(destination?.path, '/eventarc');
    assert.match(String(destination?.service), /notice_ingress\["eventarc"\]/);

    // Azure: Event Grid sends the types the translation reads, CloudEvents 1.0, the key in the header the ingress checks.
    const azure = (await resourceBodies(join(modulesDir, 'azure-notice-events'))).get(
      'azurerm_eventgrid_system_topic_event_subscription.ingress',
    );
    assert.deepEqual(azure?.included_event_types, [ANNOTATED, AVAILABILITY_CHANGED]);
    assert.equal(azure?.event_delivery_schema, 'CloudEventSchemaV1_0');
    const property = blocksOf(azure?.delivery_property)?.[0];
    assert.equal(String(property?.header_name).toLowerCase(), NOTICE_KEY_HEADER);
    assert.equal(property?.secret, true);
    assert.match(String(blocksOf(azure?.webhook_endpoint)?.[0]?.url), /\/eventgrid"?\}?$/);

    // AWS: the rules take the detail-types and AWS Health types the translation reads; the connection sends the key.
    const aws = await parseModule(join(modulesDir, 'aws-notice-events'));
    const awsLocals = Object.assign({}, ...(aws.blocks.get('locals') ?? [])) as Record<string, unknown>;
    assert.deepEqual(awsLocals.ec2_detail_types, [SPOT_INTERRUPTION, REBALANCE_RECOMMENDATION]);
    assert.deepEqual([...(awsLocals.health_event_types as string[])].sort(), [...HEALTH_EVENT_TYPE_CODES].sort());
    const connection = (await resourceBodies(join(modulesDir, 'aws-notice-events'))).get('aws_cloudwatch_event_connection.ingress');
    const apiKey = blocksOf(blocksOf(connection?.auth_parameters)?.[0]?.api_key)?.[0];
    assert.equal(String(apiKey?.key).toLowerCase(), NOTICE_KEY_HEADER);

    // The key never has a default, and is sensitive wherever Terraform takes it.
    for (const name of ['azure-notice-events', 'aws-notice-events']) {
      const variable = variableBody((await parseModule(join(modulesDir, name))).blocks, 'notice_key');
      assert.equal(variable?.sensitive, true, `${name}: notice_key is sensitive`);
      assert.ok(!('default' in (variable ?? {})), `${name}: notice_key has no default`);
    }
  });

  it('the functions deployed are exactly the functions the code registers, with their entry points', async () => {
    const { blocks } = await parseModule(join(modulesDir, 'gcp-functions'));
    const variable = (blocks.get('variable') ?? []).find((v) => 'functions' in v)?.functions;
    const deflt = blocksOf(variable)?.[0]?.default;
    assert.ok(isBody(deflt), 'gcp-functions declares the functions map with a default');
    assert.deepEqual(Object.keys(deflt).sort(), Object.keys(triggers).sort());
    for (const [name, entry] of Object.entries(deflt)) assert.equal(entry, name, `${name}'s entry point`);
    // And functions/index.ts registers each under that name with the functions-framework (what Cloud Run runs).
    await import('../../functions/index.js');
    const { getTestServer } = await import('@google-cloud/functions-framework/testing');
    for (const entry of Object.values(deflt)) assert.doesNotThrow(() => getTestServer(String(entry)), `${String(entry)} is registered`);
    assert.throws(() => getTestServer('notAFunction'), 'the framework refuses an unknown name (the check can fail)');
  });

  it('every input a caller passes to a local module exists, and every required input is passed', async () => {
    const callers = [...(await dirs(examplesDir)), ...(await dirs(modulesDir))];
    let calls = 0;
    for (const dir of callers) {
      const { blocks } = await parseModule(dir);
      for (const block of blocks.get('module') ?? []) {
        for (const [name, bodies] of Object.entries(block)) {
          const body = blocksOf(bodies)?.[0];
          const source = body?.source;
          if (typeof source !== 'string' || !source.startsWith('.')) continue;
          calls++;
          const target = resolve(dir, source);
          const declared = await variableNames(target);
          const passed = Object.keys(body ?? {}).filter(
            (k) => !['source', 'version', 'count', 'for_each', 'depends_on', 'providers'].includes(k),
          );
          const where = `${relative(repoRoot, dir)}: module "${name}" (${source})`;
          assert.deepEqual(
            passed.filter((k) => !declared.has(k)),
            [],
            `${where} passes inputs the module does not declare`,
          );
          const required = [...(await requiredVariableNames(target))].filter((k) => !passed.includes(k));
          assert.deepEqual(required, [], `${where} leaves required inputs out`);
        }
      }
    }
    assert.ok(calls >= 8, `${calls} module calls checked`);
  });

  it('every var. and local. a module or example reads is declared (what validate would say where the provider is missing)', async () => {
    let reads = 0;
    for (const dir of [...(await dirs(examplesDir)), ...(await dirs(modulesDir))]) {
      const { files, blocks } = await parseModule(dir);
      const variables = await variableNames(dir);
      const locals = new Set((blocks.get('locals') ?? []).flatMap((l) => Object.keys(l)));
      for (const file of files) {
        const text = await readFile(file, 'utf8');
        for (const [, kind, name = ''] of text.matchAll(/\b(var|local)\.([a-z0-9_]+)/g)) {
          assert.ok((kind === 'var' ? variables : locals).has(name), `${relative(repoRoot, file)}: ${kind}.${name} is not declared`);
          reads++;
        }
      }
    }
    assert.ok(reads >= 200, `${reads} references checked`);
  });

  it('every resource and data source a module or example references is declared there', async () => {
    let reads = 0;
    for (const dir of [...(await dirs(examplesDir)), ...(await dirs(modulesDir))]) {
      const { files } = await parseModule(dir);
      const declared = new Set<string>();
      for (const file of files) {
        const parsed = await parseTf(file);
        for (const [type, name] of resourcesOf(parsed, 'resource')) declared.add(`${type}.${name}`);
        for (const [type, name] of resourcesOf(parsed, 'data')) declared.add(`data.${type}.${name}`);
      }
      for (const file of files) {
        const text = (await readFile(file, 'utf8')).replace(/^\s*#.*$/gm, '');
        for (const [, data = '', type = '', name = ''] of text.matchAll(
          /(?<![.\w])(data\.)?((?:aws|google|azurerm)_[a-z0-9_]+)\.([a-z0-9_]+)\b(?!")/g,
        )) {
          assert.ok(declared.has(`${data}${type}.${name}`), `${relative(repoRoot, file)}: ${data}${type}.${name} is not declared`);
          reads++;
        }
      }
    }
    assert.ok(reads >= 100, `${reads} references checked`);
  });

  it('every output a caller reads from a local module exists', async () => {
    let reads = 0;
    for (const dir of [...(await dirs(examplesDir)), ...(await dirs(modulesDir))]) {
      const { files, blocks } = await parseModule(dir);
      const targets = new Map<string, string>();
      for (const block of blocks.get('module') ?? []) {
        for (const [name, bodies] of Object.entries(block)) {
          const source = blocksOf(bodies)?.[0]?.source;
          if (typeof source === 'string' && source.startsWith('.')) targets.set(name, resolve(dir, source));
        }
      }
      for (const file of files) {
        const text = await readFile(file, 'utf8');
        for (const [, name = '', output = ''] of text.matchAll(/\bmodule\.([a-z0-9_]+)(?:\[[^\]]*\])?\.([a-z0-9_]+)/g)) {
          const target = targets.get(name);
          assert.ok(target !== undefined, `${relative(repoRoot, file)}: module.${name} is not a module called there`);
          const outputs = (await parseModule(target)).blocks.get('output') ?? [];
          assert.ok(
            outputs.some((o) => output in o),
            `${relative(repoRoot, file)}: module.${name}.${output} is not an output of ${relative(repoRoot, target)}`,
          );
          reads++;
        }
      }
    }
    assert.ok(reads >= 40, `${reads} module outputs read`);
  });
});
