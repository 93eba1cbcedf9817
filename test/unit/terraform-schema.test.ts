import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { relative } from 'node:path';
import { before, describe, it } from 'node:test';
import {
  loadProviderSchema,
  parseTf,
  repoRoot,
  resourcesOf,
  tfFiles,
  unknownNames,
  type HclBody,
  type ProviderSchema,
} from '../support/terraform.js';

/*
 * The google and azurerm providers are not available offline, so `terraform validate` cannot check the
 * modules that use them. What can be checked is checked here against the providers' schemas as the pinned
 * @cdktf/provider-google and @cdktf/provider-azurerm packages carry them (generated from those schemas):
 * every resource and data source type exists; every argument and nested block name exists where it is used
 * (dynamic blocks included); every attribute a reference reads (google_x.name.attr) exists. Not checked
 * here: value types, required arguments, conflicting arguments, enum values (terraform validate and plan do
 * that where the provider is present), and the names of a nested block's attributes in references.
 */

interface Use {
  file: string;
  type: string;
  name: string;
  body: HclBody;
  kind: 'resource' | 'data';
}

const PROVIDERS = { google: '@cdktf/provider-google', azurerm: '@cdktf/provider-azurerm' } as const;
type Prefix = keyof typeof PROVIDERS;
const prefixOf = (type: string): Prefix | undefined =>
  type.startsWith('google_') ? 'google' : type.startsWith('azurerm_') ? 'azurerm' : undefined;

describe('terraform: google and azurerm names against the providers schemas', () => {
  const schemas = new Map<Prefix, ProviderSchema>();
  const uses: Use[] = [];
  const sources = new Map<string, string>();

  before(async () => {
    for (const file of await tfFiles()) {
      const parsed = await parseTf(file);
      sources.set(file, await readFile(file, 'utf8'));
      for (const kind of ['resource', 'data'] as const) {
        for (const [type, name, body] of resourcesOf(parsed, kind)) {
          if (prefixOf(type) !== undefined) uses.push({ file: relative(repoRoot, file), type, name, body, kind });
        }
      }
    }
    // One manifest at a time: each is ~100 MB of JSON.
    for (const [prefix, pkg] of Object.entries(PROVIDERS) as Array<[Prefix, (typeof PROVIDERS)[Prefix]]>) {
      if (uses.some((u) => prefixOf(u.type) === prefix)) schemas.set(prefix, await loadProviderSchema(pkg));
    }
  });

  it('the modules use google and azurerm resources (the check has something to check)', () => {
    assert.ok(
      uses.some((u) => u.type === 'google_cloudfunctions2_function'),
      'the functions module is checked',
    );
    assert.ok(
      uses.some((u) => u.type === 'azurerm_linux_virtual_machine'),
      'the azure host module is checked',
    );
    for (const schema of schemas.values())
      assert.ok(schema.resources.size > 500, `${schema.provider}: ${schema.resources.size} resources read`);
  });

  it('the schema reader knows a misspelt name when it sees one', () => {
    const google = schemas.get('google');
    assert.ok(google !== undefined);
    const bucket = google.resources.get('google_storage_bucket');
    assert.ok(bucket !== undefined);
    assert.deepEqual(unknownNames({ name: 'x', lifecycle_rule: [{ condition: [{ agee: 1 }], action: [{ type: 'Delete' }] }] }, bucket), [
      'lifecycle_rule.condition.agee',
    ]);
    assert.deepEqual(unknownNames({ dynamic: { encryptio: [{ content: [{}] }] } }, bucket), ['encryptio']);
  });

  it('every resource and data source type exists', () => {
    const missing = uses
      .filter((u) => {
        const schema = schemas.get(prefixOf(u.type) as Prefix);
        return !(u.kind === 'data' ? schema?.dataSources : schema?.resources)?.has(u.type);
      })
      .map((u) => `${u.file}: ${u.kind} ${u.type}`);
    assert.deepEqual(missing, []);
  });

  it('every argument and nested block name exists', () => {
    const problems = uses.flatMap((u) => {
      const schema = schemas.get(prefixOf(u.type) as Prefix);
      const block = (u.kind === 'data' ? schema?.dataSources : schema?.resources)?.get(u.type);
      return block === undefined ? [] : unknownNames(u.body, block).map((n) => `${u.file}: ${u.type}.${u.name}: ${n}`);
    });
    assert.deepEqual(problems, []);
  });

  it('every attribute a reference reads exists', () => {
    const problems: string[] = [];
    const reference = /\b((?:data\.)?)((?:google|azurerm)_[a-z0-9_]+)\.([a-z0-9_]+)(?:\[[^\]]*\])?\.([a-z0-9_]+)/g;
    for (const [file, text] of sources) {
      for (const match of text.matchAll(reference)) {
        const [, data, type = '', , attr = ''] = match;
        const schema = schemas.get(prefixOf(type) as Prefix);
        const block = (data ? schema?.dataSources : schema?.resources)?.get(type);
        if (block === undefined) continue; // reported by the type check
        if (!block.names.has(attr) && !block.computed.has(attr)) problems.push(`${relative(repoRoot, file)}: ${match[0]}`);
      }
    }
    assert.deepEqual(problems, []);
  });
});
