import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { continuity, joinTicks, parseTicks } from '../../infra/images/counter-output.js';

describe('reading the counter workload', () => {
  it('parses ticks and ignores other lines', () => {
    assert.deepEqual(parseTicks('counter started token=x\ncount=1 t=1000\ncount=2 t=1100\ngarbage\n'), [
      { count: 1, t: 1000 },
      { count: 2, t: 1100 },
    ]);
  });

  it('finds the longest pause of a continuous count and the first reset', () => {
    const source = [1, 2, 3].map((count) => ({ count, t: count * 100 }));
    const destination = [2, 3, 4, 5].map((count) => ({ count, t: count === 4 ? 1300 : count * 100 + 1000 }));
    const joined = joinTicks(source, destination);
    assert.deepEqual(
      joined.map((t) => t.count),
      [1, 2, 3, 4, 5],
    );
    const ok = continuity(joined);
    assert.ok(ok.continuous);
    assert.equal(ok.maxGapMs, 1000);
    const reset = continuity([...source, { count: 1, t: 2000 }]);
    assert.ok(!reset.continuous);
    assert.deepEqual(reset.break?.after, { count: 1, t: 2000 });
  });
});
