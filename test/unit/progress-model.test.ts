import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeProgress, TransferProgress } from '../../cli/progress-model.js';

const MiB = 1024 * 1024;

describe('the progress of `ums migrate`', () => {
  it('never moves back: out-of-order and repeated facts keep the maximum', () => {
    const progress = new TransferProgress();
    progress.exactTotal(512 * MiB);
    const seen: number[] = [];
    // As the bus delivered them in a run: chunk progress overtaken, then redelivered.
    for (const [bytes, at] of [
      [8, 0],
      [24, 300],
      [16, 310],
      [24, 320],
      [8, 330],
      [40, 600],
      [32, 610],
    ] as const) {
      progress.observe(bytes * MiB, at);
      seen.push(progress.view().done);
    }
    assert.deepEqual(
      seen.map((b) => b / MiB),
      [8, 24, 24, 24, 24, 40, 40],
    );
    for (let i = 1; i < seen.length; i++) assert.ok((seen[i] ?? 0) >= (seen[i - 1] ?? 0));
    const view = progress.view();
    assert.equal(view.percent, 7);
    // 32 MiB over 600 ms
    assert.ok(view.bytesPerSecond !== undefined && Math.abs(view.bytesPerSecond - (32 * MiB) / 0.6) < 1);
    assert.ok(view.remainingSeconds !== undefined && Math.abs(view.remainingSeconds - (472 * MiB) / view.bytesPerSecond) < 1e-6);
  });

  it('shows an unknown total honestly: no percentage, no time left, a question mark', () => {
    const progress = new TransferProgress();
    progress.observe(512 * MiB, 0);
    progress.observe(520 * MiB, 1_000);
    const view = progress.view();
    assert.equal(view.total, undefined);
    assert.equal(view.totalKind, 'unknown');
    assert.equal(view.percent, undefined);
    assert.equal(view.remainingSeconds, undefined);
    const words = describeProgress(view);
    assert.equal(words.percent, '?%');
    assert.equal(words.size, '520.0 MiB/? (size not known yet)');
    assert.equal(words.rate, '8.0 MiB/s');
    assert.equal(words.eta, '');
  });

  it('uses the plan estimate until the real size is known, marked as such, and never shows 100% on an estimate', () => {
    const progress = new TransferProgress();
    progress.expect(768 * MiB);
    progress.observe(384 * MiB, 0);
    let view = progress.view();
    assert.equal(view.totalKind, 'estimate');
    assert.equal(view.percent, 50);
    assert.equal(describeProgress(view).size, '384.0 MiB/~768.0 MiB');
    // The service grew past its estimate: the count goes on, the bar waits at 99%.
    progress.observe(800 * MiB, 1_000);
    view = progress.view();
    assert.equal(view.total, 800 * MiB);
    assert.equal(view.percent, 99);
    assert.match(describeProgress(view).eta, /^about 0 s left$/);
    // checkpoint.uploaded: the real size replaces the estimate.
    progress.exactTotal(900 * MiB);
    view = progress.view();
    assert.equal(view.totalKind, 'exact');
    assert.equal(view.total, 900 * MiB);
    assert.equal(describeProgress(view).size, '800.0 MiB/900.0 MiB');
    // An unknown size reported later (the destination's 0) does not erase what is known.
    progress.exactTotal(0);
    progress.expect(undefined);
    assert.equal(progress.view().total, 900 * MiB);
    progress.observe(900 * MiB, 1_500);
    assert.equal(progress.view().percent, 100);
    assert.equal(progress.view().remainingSeconds, 0);
  });

  it('gives no rate from facts a moment apart', () => {
    const progress = new TransferProgress();
    progress.exactTotal(100 * MiB);
    progress.observe(8 * MiB, 0);
    progress.observe(16 * MiB, 10);
    assert.equal(progress.view().bytesPerSecond, undefined);
    assert.equal(describeProgress(progress.view()).rate, '');
  });
});
