import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { redactSignedUrls } from '../../core/nats-event-bus.js';

describe('dead letters keep no signed URL', () => {
  it('drops the query (where every store puts the signature) of each URL, and keeps the rest for diagnosis', () => {
    const command = JSON.stringify({
      type: 'dev.ums.command.chunk-urls.v1',
      data: {
        manifestUrl: 'https://acct.blob.core.windows.net/c/migrations/m/manifest.json?sv=2024&sig=AbC%2B',
        chunks: [{ index: 0, url: 'http://127.0.0.1:9000/b/migrations/m/chunks/000000?X-Amz-Signature=deadbeef&X-Amz-Credential=k' }],
      },
    });
    const kept = redactSignedUrls(command);
    assert.ok(!/sig=|Signature|Credential|deadbeef/.test(kept), kept);
    assert.match(kept, /manifest\.json\?<redacted>/);
    assert.match(kept, /chunks\/000000\?<redacted>/);
    assert.equal(JSON.parse(kept).type, 'dev.ums.command.chunk-urls.v1', 'still JSON');
  });
});
