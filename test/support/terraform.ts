import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createRequire } from 'node:module';

/*
 * What the Terraform tests share: the repository's .tf files parsed to JSON (@cdktf/hcl2json, the HCL parser
 * Terraform's own JSON syntax mirrors), the google and azurerm providers' schemas as the @cdktf provider
 * packages carry them (their .jsii manifests are generated from the providers' schemas), and the terraform
 * CLI run offline against the machine's filesystem mirror of providers.
 */

const execFileAsync = promisify(execFile);

/**
 * @cdktf/hcl2json's parse(), loaded with require() so that its type declarations, which pull in the DOM
 * library (`/// <reference lib="dom" />`, clashing with Node's fetch types in the rest of the build), stay
 * out of the compilation.
 */
const hcl2json = createRequire(import.meta.url)('@cdktf/hcl2json') as {
  parse(filename: string, contents: string): Promise<unknown>;
};

/**
 * The repository's root: the nearest folder above this file with a package.json and terraform/ (this file
 * runs from <outDir>/test/support/, and the outDir may be dist/ or one nested deeper, e.g. .tools/tf-dist/).
 */
export const repoRoot = ((): string => {
  const here = dirname(fileURLToPath(import.meta.url));
  for (let dir = here; dir !== dirname(dir); dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'terraform'))) return dir;
  }
  return resolve(here, '..', '..', '..');
})();
export const terraformRoot = join(repoRoot, 'terraform');

/** A parsed .tf file: hcl2json's JSON form (blocks are arrays of objects, expressions "${...}" strings). */
export type HclBody = { [key: string]: unknown };

export function isBody(value: unknown): value is HclBody {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The blocks a value holds when it is a block list (an array of objects), else undefined. */
export function blocksOf(value: unknown): HclBody[] | undefined {
  return Array.isArray(value) && value.length > 0 && value.every(isBody) ? value : undefined;
}

export async function tfFiles(dir = terraformRoot): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const nested = await Promise.all(
    entries.map(async (e) => {
      const path = join(dir, e.name);
      if (e.isDirectory()) return e.name.startsWith('.') ? [] : tfFiles(path);
      return e.name.endsWith('.tf') ? [path] : [];
    }),
  );
  return nested.flat().sort();
}

export async function parseTf(path: string): Promise<HclBody> {
  const parsed = await hcl2json.parse(relative(repoRoot, path), await readFile(path, 'utf8'));
  if (!isBody(parsed)) throw new Error(`${path}: the parser returned no object`);
  return parsed;
}

/** Every .tf file of a folder (one module or example) merged by block type. */
export async function parseModule(dir: string): Promise<{ files: string[]; blocks: Map<string, HclBody[]> }> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.tf')).map((f) => join(dir, f));
  const blocks = new Map<string, HclBody[]>();
  for (const file of files) {
    for (const [kind, value] of Object.entries(await parseTf(file))) {
      const list = blocks.get(kind) ?? [];
      list.push(...(Array.isArray(value) ? value.filter(isBody) : isBody(value) ? [value] : []));
      blocks.set(kind, list);
    }
  }
  return { files, blocks };
}

/** `resource "type" "name" { body }` as [type, name, body] (also for data sources). */
export function* resourcesOf(parsed: HclBody, kind: 'resource' | 'data' = 'resource'): Generator<[string, string, HclBody]> {
  const section = parsed[kind];
  if (!isBody(section)) return;
  for (const [type, byName] of Object.entries(section)) {
    if (!isBody(byName)) continue;
    for (const [name, bodies] of Object.entries(byName)) {
      for (const body of blocksOf(bodies) ?? []) yield [type, name, body];
    }
  }
}

/** The names a module's variables.tf declares. */
export async function variableNames(moduleDir: string): Promise<Set<string>> {
  const { blocks } = await parseModule(moduleDir);
  return new Set((blocks.get('variable') ?? []).flatMap((b) => Object.keys(b)));
}

/** Names of variables without a default (what every caller must pass). */
export async function requiredVariableNames(moduleDir: string): Promise<Set<string>> {
  const { blocks } = await parseModule(moduleDir);
  const required = new Set<string>();
  for (const block of blocks.get('variable') ?? []) {
    for (const [name, bodies] of Object.entries(block)) {
      const body = blocksOf(bodies)?.[0];
      if (body !== undefined && !('default' in body)) required.add(name);
    }
  }
  return required;
}

// ---- provider schemas from the @cdktf provider packages' .jsii manifests --------------------------------

/** A block's argument and nested block names; nested blocks have their own schema. */
export interface BlockSchema {
  names: Map<string, BlockSchema | undefined>;
  /** Read-only attributes of a resource (its getters): what references may name besides the arguments. */
  computed: Set<string>;
}

export interface ProviderSchema {
  provider: string;
  version: string;
  resources: Map<string, BlockSchema>;
  dataSources: Map<string, BlockSchema>;
}

interface JsiiTypeRef {
  fqn?: string;
  primitive?: string;
  collection?: { elementtype: JsiiTypeRef; kind: string };
  union?: { types: JsiiTypeRef[] };
}
interface JsiiProperty {
  name: string;
  static?: boolean;
  docs?: { remarks?: string; summary?: string };
  type: JsiiTypeRef;
}
interface JsiiType {
  kind: string;
  fqn: string;
  name: string;
  properties?: JsiiProperty[];
  base?: string;
}
interface JsiiManifest {
  types: Record<string, JsiiType>;
}

/** Terraform's name of a property: the anchor of its registry link (…/docs/resources/<type>#<name> …). */
const DOC_LINK = /\/docs\/(resources|data-sources)\/([a-z0-9_]+)#([a-z0-9_]+) /;

const snake = (camel: string): string => camel.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

function structOf(ref: JsiiTypeRef, types: Record<string, JsiiType>): JsiiType | undefined {
  if (ref.fqn !== undefined) {
    const t = types[ref.fqn];
    return t?.kind === 'interface' ? t : undefined;
  }
  if (ref.collection !== undefined) return structOf(ref.collection.elementtype, types);
  for (const member of ref.union?.types ?? []) {
    const found = structOf(member, types);
    if (found !== undefined) return found;
  }
  return undefined;
}

function blockSchema(struct: JsiiType, types: Record<string, JsiiType>, depth = 0): BlockSchema {
  const names = new Map<string, BlockSchema | undefined>();
  const seen = new Set<string>();
  for (let t: JsiiType | undefined = struct; t !== undefined; t = t.base !== undefined ? types[t.base] : undefined) {
    if (seen.has(t.fqn)) break;
    seen.add(t.fqn);
    for (const p of t.properties ?? []) {
      const name = DOC_LINK.exec(`${p.docs?.summary ?? ''} ${p.docs?.remarks ?? ''}`)?.[3];
      if (name === undefined) continue; // cdktf's own (count, dependsOn, provider, ...)
      const nested = depth < 12 ? structOf(p.type, types) : undefined;
      names.set(name, nested !== undefined ? blockSchema(nested, types, depth + 1) : undefined);
    }
  }
  return { names, computed: new Set() };
}

/** The resources and data sources of a @cdktf provider package, with their argument and block names. */
export async function loadProviderSchema(pkg: '@cdktf/provider-google' | '@cdktf/provider-azurerm'): Promise<ProviderSchema> {
  const dir = join(repoRoot, 'node_modules', ...pkg.split('/'));
  const manifest = JSON.parse(await readFile(join(dir, '.jsii'), 'utf8')) as JsiiManifest;
  const pkgJson = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as { cdktf?: { provider?: { version?: string } } };
  const resources = new Map<string, BlockSchema>();
  const dataSources = new Map<string, BlockSchema>();
  const { types } = manifest;
  const prefix = pkg.replace('@cdktf/provider-', '');
  for (const type of Object.values(types)) {
    if (type.kind !== 'interface' || !type.name.endsWith('Config') || type.properties === undefined) continue;
    const link = type.properties.map((p) => DOC_LINK.exec(`${p.docs?.summary ?? ''} ${p.docs?.remarks ?? ''}`)).find((m) => m !== null);
    if (link === undefined || link === null) continue;
    const [, kind, tfType] = link;
    if (tfType === undefined) continue;
    // Only the top-level Config of a resource: its class (same module, name without "Config") has tfResourceType.
    const classFqn = type.fqn.replace(/Config$/, '');
    const cls = types[classFqn];
    if (cls?.kind !== 'class' || !(cls.properties ?? []).some((p) => p.name === 'tfResourceType' && p.static === true)) continue;
    const schema = blockSchema(type, types);
    for (const p of cls.properties ?? []) if (p.static !== true) schema.computed.add(snake(p.name));
    // The registry's page name lacks the provider's prefix (storage_bucket for google_storage_bucket).
    (kind === 'data-sources' ? dataSources : resources).set(`${prefix}_${tfType}`, schema);
  }
  return { provider: pkg, version: pkgJson.cdktf?.provider?.version ?? 'unknown', resources, dataSources };
}

/** Arguments every resource takes in Terraform itself (not in a provider's schema). */
export const META_ARGUMENTS = new Set(['count', 'for_each', 'depends_on', 'lifecycle', 'provider', 'provisioner', 'connection']);

/**
 * The names a resource body uses that its schema lacks, as dotted paths (`lifecycle_rule.condition.agee`).
 * `dynamic "x" { content { ... } }` is checked as block x.
 */
export function unknownNames(body: HclBody, schema: BlockSchema, path: string[] = [], top = true): string[] {
  const problems: string[] = [];
  for (const [name, value] of Object.entries(body)) {
    if (top && META_ARGUMENTS.has(name)) continue;
    if (name === 'dynamic' && isBody(value)) {
      for (const [blockName, dynamics] of Object.entries(value)) {
        const nested = schema.names.get(blockName);
        if (!schema.names.has(blockName)) {
          problems.push([...path, blockName].join('.'));
          continue;
        }
        for (const dynamic of blocksOf(dynamics) ?? []) {
          for (const content of blocksOf(dynamic.content) ?? []) {
            if (nested !== undefined) problems.push(...unknownNames(content, nested, [...path, blockName], false));
          }
        }
      }
      continue;
    }
    if (!schema.names.has(name)) {
      problems.push([...path, name].join('.'));
      continue;
    }
    const nested = schema.names.get(name);
    const blocks = blocksOf(value);
    if (nested !== undefined && blocks !== undefined) {
      for (const block of blocks) problems.push(...unknownNames(block, nested, [...path, name], false));
    }
  }
  return problems;
}

// ---- the terraform CLI, offline -------------------------------------------------------------------------

/** The root of the machine's provider mirror (the folder above registry.terraform.io/hashicorp/aws), if any. */
export function providerMirror(): string | undefined {
  const candidates = [
    process.env.UMS_TF_PLUGIN_MIRROR,
    '/opt/tf-plugins',
    '/usr/share/terraform/plugins',
    join(process.env.HOME ?? '/root', '.terraform.d', 'plugins'),
  ];
  return candidates.find((dir): dir is string => dir !== undefined && existsSync(join(dir, 'registry.terraform.io', 'hashicorp', 'aws')));
}

export async function terraformVersion(): Promise<string | undefined> {
  try {
    const { stdout } = await execFileAsync('terraform', ['version', '-json'], { env: { ...process.env, CHECKPOINT_DISABLE: '1' } });
    return (JSON.parse(stdout) as { terraform_version?: string }).terraform_version;
  } catch {
    return undefined;
  }
}

export interface TerraformCli {
  /** Runs terraform in `cwd` with its own CLI config and data dir; resolves with stdout, rejects with the output. */
  run(cwd: string, args: string[], dataDir: string): Promise<string>;
  workDir: string;
}

/** A CLI config of our own (filesystem mirror only, no registry) in a temp dir: nothing leaves the machine. */
export async function offlineTerraform(): Promise<TerraformCli> {
  const workDir = await mkdtemp(join(tmpdir(), 'terraform-test-'));
  const mirror = providerMirror();
  const config = join(workDir, 'cli.tfrc');
  await writeFile(
    config,
    mirror !== undefined
      ? `provider_installation {\n  filesystem_mirror {\n    path = ${JSON.stringify(mirror)}\n  }\n}\n`
      : // No mirror: modules without providers still initialise; one with a provider fails, and says why.
        'provider_installation {\n  direct {\n    exclude = ["*/*/*"]\n  }\n}\n',
  );
  return {
    workDir,
    run: async (cwd, args, dataDir) => {
      try {
        const { stdout } = await execFileAsync('terraform', args, {
          cwd,
          env: {
            ...process.env,
            TF_CLI_CONFIG_FILE: config,
            TF_DATA_DIR: dataDir,
            CHECKPOINT_DISABLE: '1',
            TF_IN_AUTOMATION: '1',
            TF_INPUT: '0',
            NO_COLOR: '1',
          },
          maxBuffer: 32 * 1024 * 1024,
        });
        return stdout;
      } catch (error) {
        const e = error as { stdout?: string; stderr?: string; message: string };
        throw new Error(
          `terraform ${args.join(' ')} in ${relative(repoRoot, cwd) || cwd} failed:\n${e.stdout ?? ''}${e.stderr ?? e.message}`,
          { cause: error },
        );
      }
    },
  };
}
