import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repoRoot, terraformRoot } from './terraform.js';

/*
 * The agent's and the frontman's environments as their code reads them and as terraform/modules/agent-cloud-init
 * sets them (the same module renders both units), for the drift checks of test/unit/terraform-static.test.ts
 * and terraform-cli.test.ts.
 */

const modulesDir = join(terraformRoot, 'modules');

/**
 * The environment variables a process reads, from its source: commander's .env() options of its main file (and
 * which are mandatory), and process.env reads in the files it runs that read the environment themselves.
 */
async function environmentFromCode(main: string, readers: readonly string[]): Promise<{ all: Set<string>; mandatory: Set<string> }> {
  const text = await readFile(join(repoRoot, main), 'utf8');
  const all = new Set<string>();
  const mandatory = new Set<string>();
  // new Option(...).env('UMS_X')[...].makeOptionMandatory(): each option is one `.addOption(` call.
  for (const option of text.split('.addOption(').slice(1)) {
    const name = /\.env\(\s*'([A-Z0-9_]+)',?\s*\)/.exec(option)?.[1];
    if (name === undefined) continue;
    all.add(name);
    if (option.includes('.makeOptionMandatory()')) mandatory.add(name);
  }
  for (const file of [main, ...readers]) {
    const source = await readFile(join(repoRoot, file), 'utf8');
    for (const m of source.matchAll(/\b(?:process\.env|env)\.([A-Z][A-Z0-9_]+)/g)) if (m[1] !== undefined) all.add(m[1]);
  }
  return { all, mandatory };
}

/** The environment variables the agent process reads, from its source: commander's .env() options and process.env reads. */
export async function agentEnvironmentFromCode(): Promise<{ all: Set<string>; mandatory: Set<string> }> {
  // What the modules the agent runs read from the environment themselves.
  return environmentFromCode('agents/main.ts', ['core/nats-event-bus.ts', 'core/log.ts', 'agents/capability-probe.ts']);
}

/** The environment variables the frontman process (frontman/main.ts) reads, derived the same way. */
export async function frontmanEnvironmentFromCode(): Promise<{ all: Set<string>; mandatory: Set<string> }> {
  const frontman = (await readdir(join(repoRoot, 'frontman'))).filter((f) => f.endsWith('.ts')).map((f) => `frontman/${f}`);
  return environmentFromCode('frontman/main.ts', [
    ...frontman.filter((f) => f !== 'frontman/main.ts'),
    'core/nats-event-bus.ts',
    'core/log.ts',
    'core/frontman-registration.ts',
  ]);
}

/**
 * What the deployment leaves unset on purpose, with why; each must still be something the agent reads, so
 * the list cannot go stale silently.
 */
export const AGENT_ENV_NOT_DEPLOYED: Record<string, string> = {
  UMS_HOST_NETNS: "the local stack's simulated hosts only: a real host's agent runs in its containers' network namespace",
  UMS_VOLUMES_DIR: "an agent in another mount namespace than the engine's (the local stack); on a VM it sees Podman's paths",
  UMS_ALLOWED_HTTP_ENDPOINTS: 'plain-http storage emulators only: real stores are https',
  UMS_KUBELET_URL: 'orchestrator level (agents/kubelet/): a VM host has no kubelet',
  UMS_KUBELET_TOKEN_FILE: 'orchestrator level',
  UMS_KUBELET_CA_FILE: 'orchestrator level',
  UMS_KUBELET_NODE_NAME: 'orchestrator level',
  UMS_CRI_SOCKET: 'a Kubernetes node’s agent (UMS_ENGINE=cri, a DaemonSet): Terraform deploys VM hosts, not clusters',
  UMS_CRI_POD_NETWORK: 'a Kubernetes node’s agent (UMS_ENGINE=cri)',
  UMS_CRI_CGROUP_PARENT: 'a Kubernetes node’s agent (UMS_ENGINE=cri)',
  UMS_CRI_POD_LOGS: 'a Kubernetes node’s agent (UMS_ENGINE=cri)',
  NATS_USER: 'a development broker without nkeys; the deployment uses UMS_NATS_CREDENTIALS',
  NATS_PASSWORD: 'a development broker without nkeys; the deployment uses UMS_NATS_CREDENTIALS',
  UMS_MEASURE_UPLINK: 'auto (the default): the agent measures its uplink at start when it watches notices, which the hosts do',
  UMS_METADATA_URL: "a local stand-in for the metadata service (tests, the local stack); a VM reads its own cloud's",
  UMS_AZURE_VM_NAME: 'an Azure VM reads its name from the instance metadata (compute/name)',
  UMS_INSTANCE_ID:
    "a VM reads its own id from the instance metadata with the notices on (an EC2 instance's id is not known before its user data is)",
};

/** What the frontman's deployment leaves unset on purpose, with why (each must still be read by its code). */
export const FRONTMAN_ENV_NOT_DEPLOYED: Record<string, string> = {
  NATS_USER: 'a development broker without nkeys; the deployment uses UMS_NATS_CREDENTIALS',
  NATS_PASSWORD: 'a development broker without nkeys; the deployment uses UMS_NATS_CREDENTIALS',
};

/** The text of `<name> = ... merge(...)` in a module's locals, up to merge's closing parenthesis. */
function mergeSection(main: string, name: string, file = 'agent-cloud-init/main.tf'): string {
  const from = main.indexOf(`  ${name} = `);
  const open = main.indexOf('merge(', from);
  assert.ok(from >= 0 && open > from, `${file} has no "${name} = ... merge("`);
  let depth = 0;
  for (let i = open + 'merge'.length; i < main.length; i++) {
    if (main[i] === '(') depth++;
    else if (main[i] === ')' && --depth === 0) return main.slice(from, i + 1);
  }
  return assert.fail(`${file}: ${name}'s merge( is not closed`);
}

/** The names a section sets (`NAME = ...` and `{ NAME = ... }`), all-capitals only. */
const namesSet = (section: string): Set<string> => new Set([...section.matchAll(/\b([A-Z][A-Z0-9_]+)\s*=/g)].map((m) => m[1] ?? ''));

async function environmentInModule(
  name: 'agent_environment' | 'frontman_environment',
): Promise<{ plain: Set<string>; secret: Set<string> }> {
  const main = await readFile(join(modulesDir, 'agent-cloud-init', 'main.tf'), 'utf8');
  const from = main.indexOf('secret_environment = ');
  assert.ok(from >= 0, 'agent-cloud-init/main.tf has no secret_environment');
  const secret = new Set([...main.slice(from, main.indexOf('\n', from)).matchAll(/"([A-Z][A-Z0-9_]+)"/g)].map((m) => m[1] ?? ''));
  return { plain: namesSet(mergeSection(main, name)), secret };
}

/** The UMS_/NATS_ names of the agent unit's environment in agent-cloud-init/main.tf (locals.agent_environment). */
export async function agentEnvironmentInModule(): Promise<{ plain: Set<string>; secret: Set<string> }> {
  return environmentInModule('agent_environment');
}

/**
 * The names of the frontman unit's environment in agent-cloud-init/main.tf (locals.frontman_environment, the
 * unit gcp-frontman runs); its secrets are the start script's, as the agent's (a frontman has no storage key).
 */
export async function frontmanEnvironmentInModule(): Promise<{ plain: Set<string>; secret: Set<string> }> {
  const { plain, secret } = await environmentInModule('frontman_environment');
  secret.delete('AZURE_STORAGE_KEY');
  return { plain, secret };
}

/**
 * The functions' environment as their code reads it: what functions/ and the core modules they run read
 * (`env.NAME`, `process.env.NAME`), and the keyless settings, which core/cloud-identity/keyless-store-access.ts
 * reads through its schema (KEYLESS_ENV_NAMES).
 */
export async function functionsEnvironmentFromCode(): Promise<Set<string>> {
  const functions = (await readdir(join(repoRoot, 'functions'))).filter((f) => f.endsWith('.ts')).map((f) => `functions/${f}`);
  const stores = (await readdir(join(repoRoot, 'core', 'object-stores')))
    .filter((f) => f.endsWith('.ts'))
    .map((f) => `core/object-stores/${f}`);
  const { all } = await environmentFromCode('functions/index.ts', [
    ...functions,
    ...stores,
    'core/cloud-identity/keyless-store-access.ts',
    'core/function-auth.ts',
    'core/nats-event-bus.ts',
    'core/log.ts',
  ]);
  const { KEYLESS_ENV_NAMES } = await import('../../core/cloud-identity/keyless-store-access.js');
  for (const name of KEYLESS_ENV_NAMES) all.add(name);
  return all;
}

/** The bridge's environment as its code reads it: bridge/main.ts's options, and what bridge/ and the modules it runs read. */
export async function bridgeEnvironmentFromCode(): Promise<{ all: Set<string>; mandatory: Set<string> }> {
  const bridge = (await readdir(join(repoRoot, 'bridge'))).filter((f) => f.endsWith('.ts') && f !== 'main.ts').map((f) => `bridge/${f}`);
  return environmentFromCode('bridge/main.ts', [
    ...bridge,
    'functions/triggers.ts',
    'core/function-auth.ts',
    'core/nats-event-bus.ts',
    'core/log.ts',
  ]);
}

/**
 * What terraform/modules/gcp-functions sets: the functions' environment (locals function_env and
 * function_secret_env, every branch of their merges) and the bridge container's (its env blocks), with values
 * where they are literals.
 */
export async function functionsEnvironmentInModule(): Promise<{ functions: Set<string>; bridge: Map<string, string | undefined> }> {
  const file = 'gcp-functions/main.tf';
  const main = await readFile(join(modulesDir, 'gcp-functions', 'main.tf'), 'utf8');
  const functions = new Set([
    ...namesSet(mergeSection(main, 'function_env', file)),
    ...namesSet(mergeSection(main, 'function_secret_env', file)),
  ]);
  const from = main.indexOf('resource "google_cloud_run_v2_service" "bridge"');
  assert.ok(from >= 0, `${file} has no bridge service`);
  const bridge = new Map<string, string | undefined>();
  for (const m of main.slice(from).matchAll(/\benv \{\s*name\s*=\s*"([A-Z][A-Z0-9_]+)"\s*(?:value\s*=\s*("[^"\n]*"|[^\n]+))?/g)) {
    const value = m[2]?.trim();
    bridge.set(m[1] ?? '', value?.startsWith('"') === true ? value.slice(1, -1) : undefined);
  }
  return { functions, bridge };
}
