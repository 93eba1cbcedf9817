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
  UMS_DOCKER_SOCKET: 'the hosts Terraform deploys run Podman (UMS_ENGINE=podman); a Docker host sets it with UMS_ENGINE=docker',
  UMS_KUBELET_URL: 'orchestrator level (agents/kubelet/): a VM host has no kubelet',
  UMS_KUBELET_TOKEN_FILE: 'orchestrator level',
  UMS_KUBELET_CA_FILE: 'orchestrator level',
  UMS_KUBELET_NODE_NAME: 'orchestrator level',
  NATS_USER: 'a development broker without nkeys; the deployment uses UMS_NATS_CREDENTIALS',
  NATS_PASSWORD: 'a development broker without nkeys; the deployment uses UMS_NATS_CREDENTIALS',
  UMS_NOTICES: 'off (the default) until the evacuation that acts on host.notice lands (issue order 8); then the hosts turn it on',
  UMS_METADATA_URL: "a local stand-in for the metadata service (tests, the local stack); a VM reads its own cloud's",
  UMS_AZURE_VM_NAME: 'an Azure VM reads its name from the instance metadata (compute/name)',
};

/** What the frontman's deployment leaves unset on purpose, with why (each must still be read by its code). */
export const FRONTMAN_ENV_NOT_DEPLOYED: Record<string, string> = {
  NATS_USER: 'a development broker without nkeys; the deployment uses UMS_NATS_CREDENTIALS',
  NATS_PASSWORD: 'a development broker without nkeys; the deployment uses UMS_NATS_CREDENTIALS',
};

/** The text of `<name> = ... merge(...)` in agent-cloud-init/main.tf's locals, up to merge's closing parenthesis. */
function mergeSection(main: string, name: string): string {
  const from = main.indexOf(`  ${name} = `);
  const open = main.indexOf('merge(', from);
  assert.ok(from >= 0 && open > from, `agent-cloud-init/main.tf has no "${name} = ... merge("`);
  let depth = 0;
  for (let i = open + 'merge'.length; i < main.length; i++) {
    if (main[i] === '(') depth++;
    else if (main[i] === ')' && --depth === 0) return main.slice(from, i + 1);
  }
  return assert.fail(`agent-cloud-init/main.tf: ${name}'s merge( is not closed`);
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
