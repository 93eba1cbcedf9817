/**
 * The command fence (agents/command-fence.ts) beyond the epoch: a command naming another container, delivered
 * to an agent that is not the record's source or destination for it, or carrying another plan (approach,
 * source, image, requirements, artifact location) is refused as misaddressed; the record's own is accepted.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { admitCommand, checkFence, commandMismatch } from '../../agents/command-fence.js';
import type { EventBus } from '../../core/event-bus.js';
import { makeCommand, type CommandData, type UmsCommand } from '../../core/events.js';
import { commandLifetimeMs, MigrationRecord } from '../../core/migration.js';
import { generateSigningKeyPair } from '../../core/signed-envelope.js';
import { CommandSigner, CommandVerifier } from '../../core/command-signature.js';

const migrationId = 'm-1';
const now = new Date().toISOString();
const artifact = { storeUrl: 'file:///srv/store', prefix: 'migrations/m-1/' };
const requirements = { published: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' as const }] };
const sourceManifestKey = generateSigningKeyPair().publicKey;
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
  sourceManifestKey,
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
  sourceManifestKey,
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
    [
      "another source's manifest key",
      makeCommand('prepare', '/t', { ...prepare, sourceManifestKey: generateSigningKeyPair().publicKey }),
      'gcp-1',
      /manifest-signing key other than the source's/,
    ],
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

  it('takes a discard of a done migration only while its cleanup is pending (else it is a replay)', async () => {
    const discard = makeCommand('discard', '/t', { migrationId, epoch: 2, approach: 'container', container: 'web' });
    const done = (pendingCleanup?: string): EventBus =>
      ({
        migrations: {
          get: async () => ({
            value: MigrationRecord.parse({ ...record, state: 'done', ...(pendingCleanup ? { pendingCleanup } : {}) }),
            revision: 3,
          }),
        },
      }) as unknown as EventBus;
    assert.ok((await checkFence(done('source was away'), discard, 'azure-1')).accepted);
    const replay = await checkFence(done(), discard, 'azure-1');
    assert.ok(!replay.accepted && /^stale command: discard .* done and wants no cleanup/.test(replay.reason));
  });

  it('still refuses a stale epoch first', async () => {
    const verdict = await checkFence(bus(), makeCommand('checkpoint', '/t', { ...checkpoint, epoch: 1, container: 'db' }), 'azure-1');
    assert.ok(!verdict.accepted && /^stale command: .*epoch 1/.test(verdict.reason));
  });
});

describe('command fence: signed commands (the signature first, then the record)', () => {
  const functions = generateSigningKeyPair();
  const signer = new CommandSigner(functions, (name) => commandLifetimeMs(name));
  const verifier = new CommandVerifier([functions.publicKey]);
  const at = (command: UmsCommand, agent: string) => admitCommand(bus(), verifier, command, agent);
  const refusedWith = async (command: UmsCommand, agent: string, reason: RegExp) => {
    const verdict = await at(command, agent);
    assert.ok(!verdict.accepted, 'refused');
    assert.match(verdict.reason, reason);
  };

  it("accepts the record's command signed by the functions for the agent it is delivered to", async () => {
    assert.ok((await at(signer.sign(makeCommand('checkpoint', '/t', checkpoint), 'azure-1'), 'azure-1')).accepted);
    assert.ok((await at(signer.sign(makeCommand('prepare', '/t', prepare), 'gcp-1'), 'gcp-1')).accepted);
  });

  it('refuses an unsigned command', () =>
    refusedWith(makeCommand('checkpoint', '/t', checkpoint), 'azure-1', /^unverified command \(signature-invalid\): .*not signed/));

  it('refuses a forged command: signed by another key', async () => {
    const forger = new CommandSigner(generateSigningKeyPair(), (name) => commandLifetimeMs(name));
    await refusedWith(forger.sign(makeCommand('checkpoint', '/t', checkpoint), 'azure-1'), 'azure-1', /\(signer-unknown\)/);
  });

  it('refuses a forged command: a signed one altered (data, epoch, target, expiry)', async () => {
    const signed = signer.sign(makeCommand('checkpoint', '/t', checkpoint), 'azure-1');
    await refusedWith({ ...signed, data: { ...signed.data, container: 'db' } }, 'azure-1', /\(signature-invalid\): .*altered/);
    await refusedWith({ ...signed, data: { ...signed.data, epoch: 3 } }, 'azure-1', /\(signature-invalid\)/);
    await refusedWith({ ...signed, umsexpires: new Date(Date.now() + 86_400_000).toISOString() }, 'azure-1', /\(signature-invalid\)/);
    const readdressed = signer.sign(makeCommand('checkpoint', '/t', checkpoint), 'gcp-1');
    await refusedWith({ ...readdressed, umstarget: 'azure-1' }, 'azure-1', /\(signature-invalid\)/);
  });

  it('refuses a validly signed command delivered to another agent than it was signed for', () =>
    refusedWith(signer.sign(makeCommand('checkpoint', '/t', checkpoint), 'gcp-1'), 'azure-1', /signed for agent gcp-1, not for azure-1/));

  it('refuses an expired command even though its signature is valid', async () => {
    const old = signer.sign(makeCommand('checkpoint', '/t', checkpoint), 'azure-1', Date.now() - commandLifetimeMs('checkpoint') - 1000);
    await refusedWith(old, 'azure-1', /^unverified command \(signature-expired\)/);
  });

  it('refuses a replay: validly signed and unexpired, but of an earlier epoch or another migration', async () => {
    await refusedWith(
      signer.sign(makeCommand('checkpoint', '/t', { ...checkpoint, epoch: 1 }), 'azure-1'),
      'azure-1',
      /^stale command: .*epoch 1/,
    );
    const unknown: EventBus = { migrations: { get: async () => undefined } } as unknown as EventBus;
    const verdict = await admitCommand(unknown, verifier, signer.sign(makeCommand('checkpoint', '/t', checkpoint), 'azure-1'), 'azure-1');
    assert.ok(!verdict.accepted && /migration m-1 is unknown/.test(verdict.reason));
  });
});
