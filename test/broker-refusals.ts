import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, nkeyAuthenticator, type NatsConnection } from 'nats';
import { inboxPrefixOf, readBrokerCredential } from '../core/nats-event-bus.js';

/**
 * Trying, as one principal, what its permissions forbid, and telling that the broker refused it. A refused
 * publish or subscribe is read from the server's log (nats-server logs each permission violation with its
 * subject): the client itself only sees a request time out.
 */
export class BrokerRefusals {
  constructor(private readonly serverLogFile: string) {}

  /** A bare connection as the principal of `credentialFile`, to try what no component would. */
  async connectAs(servers: string, credentialFile: string, caFile: string): Promise<NatsConnection> {
    const { principal, seed } = await readBrokerCredential(credentialFile);
    return connect({
      servers,
      tls: { caFile },
      authenticator: nkeyAuthenticator(new TextEncoder().encode(seed)),
      inboxPrefix: inboxPrefixOf(principal),
      reconnect: false,
    });
  }

  async log(): Promise<string> {
    return readFile(this.serverLogFile, 'utf8');
  }

  async violations(subject?: string): Promise<string[]> {
    return (await this.log())
      .split('\n')
      .filter((line) => /Violation/.test(line) && (subject === undefined || line.includes(`"${subject}"`)));
  }

  /** `subject` was refused to publish: the attempt fails and the server logs the violation. */
  async assertPublishRefused(nc: NatsConnection, subject: string, payload = '{}'): Promise<void> {
    await assert.rejects(nc.request(subject, new TextEncoder().encode(payload), { timeout: 1_000 }), `publishing to ${subject} fails`);
    await this.waitForViolation(subject);
  }

  async assertSubscribeRefused(nc: NatsConnection, subject: string): Promise<void> {
    const sub = nc.subscribe(subject);
    await this.waitForViolation(subject);
    sub.unsubscribe();
  }

  private async waitForViolation(subject: string): Promise<void> {
    for (let i = 0; i < 40; i++) {
      if ((await this.violations(subject)).length > 0) return;
      await sleep(50);
    }
    assert.fail(`the server logged no violation for ${subject}`);
  }
}
