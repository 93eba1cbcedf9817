import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { backoffMs, FunctionEndpoints } from '../../bridge/trigger-bridge.js';

describe('the trigger bridge configuration and backoff', () => {
  it('backs off exponentially from the second delivery and caps the delay', () => {
    assert.deepEqual([1, 2, 3, 4].map(backoffMs), [250, 500, 1000, 2000]);
    assert.equal(backoffMs(40), 15_000);
  });

  it('accepts only known functions with URLs', () => {
    assert.ok(FunctionEndpoints.safeParse({ planMigration: 'http://127.0.0.1:8080/' }).success);
    assert.ok(!FunctionEndpoints.safeParse({ deleteEverything: 'http://127.0.0.1:8080/' }).success);
    assert.ok(!FunctionEndpoints.safeParse({ finalize: 'not a url' }).success);
  });
});
