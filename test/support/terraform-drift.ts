import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repoRoot, terraformRoot } from './terraform.js';

/*
 * The agent's environment as its code reads it and as terraform/modules/agent-cloud-init sets it, for the
 * drift checks of test/unit/terraform-static.test.ts and terraform-cli.test.ts.
 */

const modulesDir = join(terraformRoot, 'modules');

/** The environment variables the agent process reads, from its source: commander's .env() options and process.env reads. */
export async function agentEnvironmentFromCode(): Promise<{ all: Set<string>; mandatory: Set<string> }> {
  const main = await readFile(join(repoRoot, 'agents', 'main.ts'), 'utf8');
  const all = new Set<string>();
  const mandatory = new Set<string>();
  // new Option(...).env('UMS_X')[...].makeOptionMandatory(): each option is one `.addOption(` call.
  for (const option of main.split('.addOption(').slice(1)) {
    const name = /\.env\(\s*'([A-Z0-9_]+)',?\s*\)/.exec(option)?.[1];
    if (name === undefined) continue;
    all.add(name);
    if (option.includes('.makeOptionMandatory()')) mandatory.add(name);
  }
  // What the modules the agent runs read from the environment themselves.
  const readers = ['agents/main.ts', 'core/nats-event-bus.ts', 'core/log.ts', 'agents/capability-probe.ts'];
  for (const file of readers) {
    const text = await readFile(join(repoRoot, file), 'utf8');
    for (const m of text.matchAll(/\b(?:process\.env|env)\.([A-Z][A-Z0-9_]+)/g)) if (m[1] !== undefined) all.add(m[1]);
  }
  return { all, mandatory };
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
  NATS_USER: 'a development broker without nkeys; the deployment uses UMS_NATS_CREDENTIALS',
  NATS_PASSWORD: 'a development broker without nkeys; the deployment uses UMS_NATS_CREDENTIALS',
};

/** The UMS_/NATS_ names of the agent unit's environment in agent-cloud-init/main.tf (locals.environment). */
export async function agentEnvironmentInModule(): Promise<{ plain: Set<string>; secret: Set<string> }> {
  const main = await readFile(join(modulesDir, 'agent-cloud-init', 'main.tf'), 'utf8');
  const section = (start: string, end: string): string => {
    const from = main.indexOf(start);
    const to = main.indexOf(end, from);
    assert.ok(from >= 0 && to > from, `agent-cloud-init/main.tf has no "${start}" ... "${end}"`);
    return main.slice(from, to);
  };
  const plain = new Set(
    [...section('environment = merge(', '# Set by the start script').matchAll(/\b([A-Z][A-Z0-9_]+)\s*=/g)].map((m) => m[1] ?? ''),
  );
  const secret = new Set([...section('secret_environment = ', '\n').matchAll(/"([A-Z][A-Z0-9_]+)"/g)].map((m) => m[1] ?? ''));
  return { plain, secret };
}
