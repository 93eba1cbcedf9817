/**
 * The command fence (agents/command-fence.ts) beyond the epoch: a command naming another container, delivered
 * to an agent that is not the record's source or destination for it, or carrying another plan (approach,
 * source, image, requirements, artifact location) is refused as misaddressed; the record's own is accepted.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkFence, commandMismatch } from '../../agents/command-fence.js';
import type { EventBus } from '../../core/event-bus.js';
import { makeCommand, type CommandData, type UmsCommand } from '../../core/events.js';
import { MigrationRecord } from '../../core/migration.js';

const migrationId = 'm-1';
const now = new Date().toISOString();
const artifact = { storeUrl: 'file:///srv/store', prefix: 'migrations/m-1/' };
const requirements = { published: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' as const }] };
const record = MigrationRecord.parse({
  migrationId,
  epoch: 2,
  state: 'checkpointing',
  container: 'web',
  destinationAgent: 'gcp-1',
  sourceAgent: 'azure-1',
  image: 'localhost/web:1',
  imageId: 'a'.repeat(64),
  approach: 'container',
  artifactLocation: artifact,
  requirements,
  times: { requestedAt: now },
  updatedAt: now,
});

const prepare: CommandData<'prepare'> = {
  migrationId,
  epoch: 2,
  approach: 'container',
  container: 'web',
  image: 'localhost/web:1',
  imageId: 'a'.repeat(64),
  sourceAgent: 'azure-1',
  artifact,
  requirements,
};
const checkpoint: CommandData<'checkpoint'> = {
  migrationId,
  epoch: 2,
  approach: 'container',
  container: 'web',
  artifact,
  sealFor: { algorithm: 'X25519', publicKey: Buffer.alloc(32, 7).toString('base64') },
};

function bus(): EventBus {
  return { migrations: { get: async () => ({ value: record, revision: 1 }) } } as unknown as EventBus;
}

describe('command fence: the record container, agents and plan', () => {
  it("accepts the record's own commands at the right agents", async () => {
    assert.equal(commandMismatch(record, makeCommand('prepare', '/t', prepare), 'gcp-1'), undefined);
    assert.equal(commandMismatch(record, makeCommand('checkpoint', '/t', checkpoint), 'azure-1'), undefined);
    assert.ok((await checkFence(bus(), makeCommand('checkpoint', '/t', checkpoint), 'azure-1')).accepted);
  });

  const refused: Array<[string, UmsCommand, string, RegExp]> = [
    [
      'another container',
      makeCommand('checkpoint', '/t', { ...checkpoint, container: 'db' }),
      'azure-1',
      /names container "db", the record's is "web"/,
    ],
    [
      'a checkpoint delivered to the destination',
      makeCommand('checkpoint', '/t', checkpoint),
      'gcp-1',
      /delivered to gcp-1, but the record's source is azure-1/,
    ],
    [
      'a prepare delivered to the source',
      makeCommand('prepare', '/t', prepare),
      'azure-1',
      /delivered to azure-1, but the record's destination is gcp-1/,
    ],
    ['another source in prepare', makeCommand('prepare', '/t', { ...prepare, sourceAgent: 'evil-1' }), 'gcp-1', /names source evil-1/],
    ['another image', makeCommand('prepare', '/t', { ...prepare, imageId: 'b'.repeat(64) }), 'gcp-1', /names image/],
    ['laxer requirements', makeCommand('prepare', '/t', { ...prepare, requirements: {} }), 'gcp-1', /requirements other than the record's/],
    ['another approach', makeCommand('checkpoint', '/t', { ...checkpoint, approach: 'service' }), 'azure-1', /asks for service level/],
    [
      'another upload place',
      makeCommand('checkpoint', '/t', { ...checkpoint, artifact: { storeUrl: 's3://evil/x', prefix: 'p/' } }),
      'azure-1',
      /uploads to s3:\/\/evil\/x/,
    ],
  ];
  for (const [what, command, agent, reason] of refused) {
    it(`refuses ${what}`, async () => {
      const verdict = await checkFence(bus(), command, agent);
      assert.ok(!verdict.accepted);
      assert.match(verdict.reason, /^misaddressed command: /);
      assert.match(verdict.reason, reason);
    });
  }

  it('still refuses a stale epoch first', async () => {
    const verdict = await checkFence(bus(), makeCommand('checkpoint', '/t', { ...checkpoint, epoch: 1, container: 'db' }), 'azure-1');
    assert.ok(!verdict.accepted && /^stale command: .*epoch 1/.test(verdict.reason));
  });
});
