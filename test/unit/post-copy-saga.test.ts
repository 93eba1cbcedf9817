import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { generateSealingKeyPair, SealingError } from '../../core/checkpoint-sealing.js';
import { makeEvent, type CommandOf, type EventData, type EventName, type EventOf } from '../../core/events.js';
import { MigrationRecord } from '../../core/migration.js';
import { decideMode, type ModeInput } from '../../core/migration-mode.js';
import { grantPageStream, newPageStream, openPageStream } from '../../core/page-stream.js';
import { destinationAborted, pagesArrived, pagesLost, restoreCompleted, runStep } from '../../functions/migration-saga.js';
import { sagaContext } from '../support/saga-context.js';

const at = (ms: number) => new Date(Date.UTC(2026, 11, 1, 12) + ms).toISOString();
const event = <N extends EventName>(name: N, data: EventData<N>): EventOf<N> => makeEvent(name, '/ums/agents/test', data);

describe('the page stream key reaches only the two agents', () => {
  it('each agent opens its own grant; another key, another migration or another stream cannot', () => {
    const [source, destination, stranger] = [generateSealingKeyPair(), generateSealingKeyPair(), generateSealingKeyPair()];
    const stream = newPageStream();
    const forSource = grantPageStream(stream, source.publicKey, 'm1');
    const forDestination = grantPageStream(stream, destination.publicKey, 'm1');
    assert.deepEqual(openPageStream(forSource, source.privateKey, 'm1').psk, stream.psk);
    assert.deepEqual(openPageStream(forDestination, destination.privateKey, 'm1').psk, stream.psk);
    assert.throws(() => openPageStream(forSource, stranger.privateKey, 'm1'), SealingError);
    assert.throws(() => openPageStream(forSource, source.privateKey, 'm2'), SealingError);
    assert.throws(() => openPageStream({ ...forSource, streamId: newPageStream().streamId }, source.privateKey, 'm1'), SealingError);
    assert.ok(!JSON.stringify(forSource).includes(stream.psk.toString('base64')), 'the key is not in the grant in clear');
  });
});

describe('the mode: stop-and-copy unless a budget asks for post-copy and both hosts can', () => {
  const base: ModeInput = {
    approach: 'container',
    stopAndCopyMs: 8_000,
    memoryBytes: 512 << 20,
    rootfsChangesBytes: 0,
    source: { available: true },
    destination: { available: true },
  };
  const chosen = (input: Partial<ModeInput>) => {
    const decision = decideMode({ ...base, ...input });
    return decision.kind === 'chosen' ? decision.mode : `refused: ${decision.reason}`;
  };

  it('no budget: stop-and-copy, the mode that can always roll back', () => assert.equal(chosen({}), 'stop-and-copy'));
  it('a budget the stop-and-copy freeze fits in: stop-and-copy', () => assert.equal(chosen({ frozenBudgetMs: 10_000 }), 'stop-and-copy'));
  it('a budget it exceeds: post-copy', () => assert.equal(chosen({ frozenBudgetMs: 2_000 }), 'post-copy'));
  it('a budget it exceeds, a destination that cannot: stop-and-copy, saying why', () => {
    const decision = decideMode({ ...base, frozenBudgetMs: 2_000, destination: { available: false, reason: 'no shim' } });
    assert.equal(decision.kind === 'chosen' && decision.mode, 'stop-and-copy');
    assert.match(decision.reason, /destination host cannot: no shim/);
  });
  it('post-copy requested at service level: refused with the reason, never a silent fallback', () => {
    assert.match(String(chosen({ requested: 'post-copy', approach: 'service' })), /^refused: .*only container level/);
  });
  it('predicts both modes: post-copy frozen independent of memory, pages by memory', () => {
    const small = decideMode({ ...base, memoryBytes: 64 << 20 }).predictions.find((p) => p.mode === 'post-copy');
    const large = decideMode({ ...base, memoryBytes: 4096 * 1024 * 1024 }).predictions.find((p) => p.mode === 'post-copy');
    assert.ok(small?.feasible && large?.feasible);
    assert.equal(small.frozenMs, large.frozenMs);
    assert.ok((large.pagesMs ?? 0) > 10 * (small.pagesMs ?? 0));
  });
});

describe("the saga's pages-moving window", () => {
  const grant = grantPageStream(newPageStream(), generateSealingKeyPair().publicKey, 'm7');
  async function restoringPostCopy(bus: ReturnType<typeof sagaContext>['bus']) {
    await bus.migrations.create(
      'm7',
      MigrationRecord.parse({
        migrationId: 'm7',
        epoch: 1,
        state: 'restoring',
        container: 'svc',
        destinationAgent: 'gcp',
        sourceAgent: 'azure',
        image: 'localhost/svc:1',
        imageId: 'c'.repeat(64),
        approach: 'container',
        mode: 'post-copy',
        pageStream: { source: grant, destination: grant },
        artifactLocation: { storeUrl: 'file:///tmp/store', prefix: 'migrations/m7/' },
        times: { requestedAt: at(0), checkpointStartedAt: at(1_000), downloadedAt: at(1_400) },
        updatedAt: at(1_400),
      }),
    );
  }
  const completed = event('restore.completed', {
    migrationId: 'm7',
    agent: 'gcp',
    container: 'svc',
    containerId: 'd'.repeat(64),
    downloadedAt: at(1_400),
    restoredAt: at(1_900),
  });
  const state = async (bus: ReturnType<typeof sagaContext>['bus']) => (await bus.migrations.get('m7'))?.value;

  it('restored post-copy: the source is not told to discard until every page arrived', async () => {
    const { ctx, bus, commands } = sagaContext();
    await restoringPostCopy(bus);
    await runStep(completed, ctx, restoreCompleted);
    assert.equal((await state(bus))?.state, 'pages-moving');
    assert.deepEqual(
      commands.map((c) => c.name),
      [],
    );
    await runStep(
      event('restore.pages-arrived', { migrationId: 'm7', agent: 'gcp', bytes: 1 << 30, arrivedAt: at(9_000) }),
      ctx,
      pagesArrived,
    );
    const record = await state(bus);
    assert.equal(record?.state, 'finalizing');
    assert.equal(record?.times.pagesArrivedAt, at(9_000));
    assert.deepEqual(
      commands.map((c) => c.name),
      ['discard'],
    );
  });

  it('pages arriving before the restore was recorded are delivered again, not dropped', async () => {
    const { ctx, bus } = sagaContext();
    await restoringPostCopy(bus);
    const early = event('restore.pages-arrived', { migrationId: 'm7', agent: 'gcp', bytes: 1, arrivedAt: at(2_000) });
    await assert.rejects(runStep(early, ctx, pagesArrived), /delivered again/);
  });

  it('a lost stream turns back: the destination is aborted first, then the source restarts cold (resume in post-copy mode)', async () => {
    const { ctx, bus, commands, published } = sagaContext();
    await restoringPostCopy(bus);
    await runStep(completed, ctx, restoreCompleted);
    await runStep(
      event('restore.pages-lost', { migrationId: 'm7', agent: 'gcp', reason: 'the source could not be reached again within 30000 ms' }),
      ctx,
      pagesLost,
    );
    const rolling = await state(bus);
    assert.equal(rolling?.state, 'rolling-back');
    assert.equal(rolling?.failure?.code, 'pages-lost');
    assert.match(rolling?.failure?.reason ?? '', /memory state is lost/);
    assert.deepEqual(
      commands.map((c) => c.name),
      ['abort'],
    );
    await runStep(
      event('restore.aborted', { migrationId: 'm7', agent: 'gcp', container: 'svc', removedRestoredCopy: true }),
      ctx,
      destinationAborted,
    );
    const resume = commands.at(-1) as CommandOf<'resume'>;
    assert.equal(resume.name, 'resume');
    assert.equal(resume.data.mode, 'post-copy');
    assert.equal(published.filter((e) => e.name === 'migration.failed').length, 0, 'not failed until the source confirms');
  });

  it('pages-lost from an agent that is not the destination is ignored', async () => {
    const { ctx, bus } = sagaContext();
    await restoringPostCopy(bus);
    await runStep(completed, ctx, restoreCompleted);
    await runStep(event('restore.pages-lost', { migrationId: 'm7', agent: 'azure', reason: 'forged' }), ctx, pagesLost);
    assert.equal((await state(bus))?.state, 'pages-moving');
  });
});
