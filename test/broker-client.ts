import { connect, nkeyAuthenticator, type JetStreamClient, type JetStreamManager, type NatsConnection } from 'nats';
import { inboxPrefixOf, readBrokerCredential, type NatsBusOptions } from '../core/nats-event-bus.js';

/**
 * A second client of the broker, for tests: its own connection, apart from the bus under test, doing what
 * no component does and the bus therefore does not offer: publishing bytes the bus would refuse to send (a
 * misbehaving publisher elsewhere on the network), reading what waits in a stream, emptying a stream.
 */
export class BrokerClient {
  private constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
  ) {}

  /** A broker URL (an open development broker), or the stack's admin options (LocalStack.admin). */
  static async connect(broker: string | Omit<NatsBusOptions, 'name'>): Promise<BrokerClient> {
    const { servers, credentials, ca } = typeof broker === 'string' ? { servers: broker, credentials: undefined, ca: undefined } : broker;
    const credential = credentials !== undefined ? await readBrokerCredential(credentials) : undefined;
    const nc = await connect({
      servers,
      name: 'ums-test-broker-client',
      ...(ca !== undefined ? { tls: { caFile: ca } } : {}),
      ...(credential !== undefined
        ? { authenticator: nkeyAuthenticator(new TextEncoder().encode(credential.seed)), inboxPrefix: inboxPrefixOf(credential.principal) }
        : {}),
    });
    return new BrokerClient(nc, nc.jetstream(), await nc.jetstreamManager());
  }

  /** Publishes as is, unvalidated. */
  async publishRaw(subject: string, payload: Uint8Array | string): Promise<void> {
    await this.js.publish(subject, typeof payload === 'string' ? new TextEncoder().encode(payload) : payload);
  }

  /** What is stored in `stream` now, oldest first, optionally only on one subject. */
  async stored(stream: string, subject?: string): Promise<Array<{ subject: string; data: Uint8Array }>> {
    const info = await this.jsm.streams.info(stream);
    const out: Array<{ subject: string; data: Uint8Array }> = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      // A work queue has gaps where acknowledged messages were.
      const message = await this.jsm.streams.getMessage(stream, { seq }).catch(() => undefined);
      if (message && (subject === undefined || message.subject === subject)) out.push({ subject: message.subject, data: message.data });
    }
    return out;
  }

  /** A listener's copy of every message published on `subject` from now on (not the stream's). */
  tap(subject: string, each: (data: Uint8Array) => void): { stop(): Promise<void> } {
    const sub = this.nc.subscribe(subject, { callback: (error, message) => error === null && each(message.data) });
    return {
      stop: async () => {
        await this.nc.flush();
        sub.unsubscribe();
      },
    };
  }

  async purge(stream: string): Promise<void> {
    await this.jsm.streams.purge(stream);
  }

  async close(): Promise<void> {
    await this.nc.drain().catch(() => this.nc.close());
  }
}
