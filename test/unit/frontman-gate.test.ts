/**
 * The frontman's gate and fronts over real sockets on loopback: node:http and node:net servers stand in
 * for the service on its old and new host, plain clients stand in for its clients. What is checked is
 * what a client and a service see: answers, status codes, and how often each request reaches a service.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, request, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import * as net from 'node:net';
import { after, describe, it } from 'node:test';
import { freePort } from '../../core/free-port.js';
import { createLogger } from '../../core/log.js';
import { startHttpFront, type Front } from '../../frontman/http-front.js';
import { ServiceGate, type HoldLimits, type Upstream } from '../../frontman/service-gate.js';
import { startTcpFront } from '../../frontman/tcp-front.js';

const log = createLogger('frontman-test');
const HOST = '127.0.0.1';
const RETRY_AFTER = 7;

/** Everything a test opens, closed at the end whatever failed. */
const closers: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

interface Hit {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** The order in which its connection was accepted. */
  connection: number;
}

interface Service {
  upstream: Upstream;
  hits: Hit[];
  server: Server;
}

/** An HTTP service on loopback that records what reaches it and answers `<method> <url> <body>`, or as `answer` says. */
async function service(agentId: string, answer?: (hit: Hit, res: ServerResponse) => void, port = 0): Promise<Service> {
  const hits: Hit[] = [];
  const sockets: net.Socket[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const hit = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString(),
        connection: sockets.indexOf(req.socket),
      };
      hits.push(hit);
      if (answer) answer(hit, res);
      else res.end(`${hit.method} ${hit.url} ${hit.body}`);
    });
  });
  server.on('connection', (socket) => sockets.push(socket));
  server.listen(port, HOST);
  await once(server, 'listening');
  closers.push(() => {
    server.closeAllConnections();
    server.close();
  });
  return { upstream: { agentId, host: HOST, port: (server.address() as net.AddressInfo).port }, hits, server };
}

function gate(limits: Partial<HoldLimits> = {}): ServiceGate {
  const g = new ServiceGate('web', { maxMs: 5_000, maxCount: 100, maxBytes: 1 << 20, ...limits }, log);
  closers.push(() => g.close('test over'));
  return g;
}

async function httpFront(g: ServiceGate, connectTimeoutMs = 500): Promise<Front> {
  const front = await startHttpFront(
    g,
    { host: HOST, port: 0, maxBodyBytes: 1 << 16, connectTimeoutMs, retryAfterSeconds: RETRY_AFTER },
    log,
  );
  closers.push(() => front.close());
  return front;
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  ms: number;
}

/** One request on its own connection, given up after `timeoutMs` (a hang fails the test, it does not stall it). */
function send(
  front: Front,
  method: string,
  path: string,
  body?: string,
  headers: Record<string, string> = {},
  timeoutMs = 4_000,
): Promise<Answer> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const req = request(
      { host: HOST, port: front.address.port, method, path, headers, agent: false, signal: AbortSignal.timeout(timeoutMs) },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString(), ms: Date.now() - started }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function until(what: string, condition: () => boolean, timeoutMs = 3_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Warnings such as MaxListenersExceededWarning: a leak per try of a held request shows up here. */
const warnings: string[] = [];
process.on('warning', (warning) => warnings.push(`${warning.name}: ${warning.message}`));

describe('the frontman: HTTP through a gate', () => {
  it('forwards while open, with the body and the client in X-Forwarded-For', async () => {
    const svc = await service('a');
    const g = gate();
    const front = await httpFront(g);
    g.release(svc.upstream);
    assert.deepEqual(await send(front, 'GET', '/x?y=1').then((a) => [a.status, a.body]), [200, 'GET /x?y=1 ']);
    assert.deepEqual(await send(front, 'POST', '/p', 'hello').then((a) => [a.status, a.body]), [200, 'POST /p hello']);
    assert.equal(svc.hits.length, 2);
    assert.equal(svc.hits[1]?.headers['x-forwarded-for'], '127.0.0.1');
  });

  it('drain holds new requests and waits for the one in flight, then release sends them on', async () => {
    let finish = () => {};
    const svc = await service('a', (hit, res) => {
      if (hit.url === '/slow') finish = () => res.end('slow done');
      else res.end(`fast ${hit.url}`);
    });
    const g = gate();
    const front = await httpFront(g);
    g.release(svc.upstream);
    const slow = send(front, 'GET', '/slow');
    await until('the slow request reached the service', () => svc.hits.length === 1);

    let drained: { finished: number; unfinished: number } | undefined;
    const draining = g.drain(3_000).then((outcome) => (drained = outcome));
    const held = send(front, 'GET', '/after');
    await until('the new request is held', () => g.waiting === 1);
    await pause(100);
    assert.equal(drained, undefined, 'the drain waits for the request in flight');
    assert.equal(svc.hits.length, 1, 'nothing new reaches the service');

    finish();
    assert.deepEqual(await draining, { finished: 1, unfinished: 0 });
    assert.equal((await slow).body, 'slow done');
    assert.deepEqual(g.release(svc.upstream), { held: 1, expired: 0 });
    assert.deepEqual(await held.then((a) => [a.status, a.body]), [200, 'fast /after']);
  });

  it('drain reports a request still running at its deadline as unfinished', async () => {
    const svc = await service('a', (hit, res) => {
      if (hit.url !== '/hang') res.end('ok');
    });
    const g = gate();
    const front = await httpFront(g);
    g.release(svc.upstream);
    const hanging = send(front, 'GET', '/hang').catch((error: Error) => error);
    await until('the request reached the service', () => svc.hits.length === 1);
    const started = Date.now();
    assert.deepEqual(await g.drain(200), { finished: 0, unfinished: 1 });
    assert.ok(Date.now() - started < 1_000, 'the drain ends at its deadline');
    await front.close();
    assert.ok((await hanging) instanceof Error);
  });

  it('release sends what it held, in arrival order, to the new upstream, each body exactly once', async () => {
    const old = await service('old');
    const moved = await service('new');
    const g = gate();
    const front = await httpFront(g);
    g.release(old.upstream);
    await g.drain(1_000);
    const answers: Array<Promise<Answer>> = [];
    for (let i = 1; i <= 5; i += 1) {
      answers.push(send(front, 'POST', `/${i}`, `body-${i}`));
      await until(`request ${i} is held`, () => g.waiting === i);
    }
    assert.deepEqual(g.release(moved.upstream), { held: 5, expired: 0 });
    const bodies = (await Promise.all(answers)).map((a) => [a.status, a.body]);
    assert.deepEqual(
      bodies,
      [1, 2, 3, 4, 5].map((i) => [200, `POST /${i} body-${i}`]),
    );
    assert.deepEqual(old.hits, [], 'nothing went to the old host');
    const byConnection = [...moved.hits].sort((a, b) => a.connection - b.connection);
    assert.deepEqual(
      byConnection.map((h) => h.body),
      ['body-1', 'body-2', 'body-3', 'body-4', 'body-5'],
      'sent in arrival order, each once',
    );
  });

  it('release(null) answers what it held with 503 and Retry-After', async () => {
    const g = gate();
    const front = await httpFront(g);
    const held = send(front, 'POST', '/p', 'x');
    await until('the request is held', () => g.waiting === 1);
    assert.deepEqual(g.release(null, 'the migration failed and the service runs nowhere'), { held: 1, expired: 1 });
    const answer = await held;
    assert.equal(answer.status, 503);
    assert.equal(answer.headers['retry-after'], String(RETRY_AFTER));
    assert.match(answer.body, /runs nowhere/);
  });

  it('answers a request held past its deadline with 503 and Retry-After, not a hang', async () => {
    const g = gate({ maxMs: 300 });
    const front = await httpFront(g);
    const answer = await send(front, 'GET', '/', undefined, {}, 3_000);
    assert.equal(answer.status, 503);
    assert.equal(answer.headers['retry-after'], String(RETRY_AFTER));
    assert.ok(answer.ms >= 250 && answer.ms < 2_000, `answered after ${answer.ms} ms`);
    assert.equal(g.waiting, 0);
  });

  it('expires what is over its count or bytes limit with 503, and holds the rest', async () => {
    const svc = await service('a');
    const byCount = gate({ maxCount: 2 });
    const countFront = await httpFront(byCount);
    const first = [send(countFront, 'GET', '/1'), send(countFront, 'GET', '/2')];
    await until('two are held', () => byCount.waiting === 2);
    const third = await send(countFront, 'GET', '/3');
    assert.equal(third.status, 503);
    assert.equal(third.headers['retry-after'], String(RETRY_AFTER));
    assert.deepEqual(byCount.release(svc.upstream), { held: 2, expired: 1 });
    assert.deepEqual(
      (await Promise.all(first)).map((a) => a.status),
      [200, 200],
    );

    const byBytes = gate({ maxBytes: 10 });
    const bytesFront = await httpFront(byBytes);
    const fits = send(bytesFront, 'POST', '/a', '12345678');
    await until('the first is held', () => byBytes.waiting === 1);
    assert.equal((await send(bytesFront, 'POST', '/b', '12345')).status, 503, '8 + 5 bytes are over the limit');
    byBytes.release(svc.upstream);
    assert.equal((await fits).body, 'POST /a 12345678');
    assert.equal(svc.hits.filter((h) => h.url === '/b').length, 0);
  });

  it('holds a request the upstream refused and sends it, once, when the upstream listens', async () => {
    const port = await freePort();
    const g = gate();
    const front = await httpFront(g);
    g.release({ agentId: 'a', host: HOST, port });
    const answer = send(front, 'POST', '/p', 'once');
    // over a dozen tries: each must leave nothing behind on the client's response
    await pause(1_300);
    const svc = await service('a', undefined, port);
    assert.deepEqual(await answer.then((a) => [a.status, a.body]), [200, 'POST /p once']);
    await pause(200);
    assert.equal(svc.hits.length, 1, 'a request that never reached the service is sent, and only once');
    assert.deepEqual(warnings, []);
  });

  it('forwards nothing for a client that left while its request was held', async () => {
    const svc = await service('a');
    const g = gate();
    const front = await httpFront(g);
    const req = request({ host: HOST, port: front.address.port, method: 'POST', path: '/', agent: false });
    req.on('error', () => undefined);
    req.end('gone');
    await until('the request is held', () => g.waiting === 1);
    req.destroy();
    await pause(100);
    g.release(svc.upstream);
    await pause(200);
    assert.deepEqual(svc.hits, []);
  });

  describe('a connection reset after the request was sent', () => {
    /** A raw service that reads a whole request, resets the connection the first `resets` times, then answers. */
    async function resetting(resets: number): Promise<{ upstream: Upstream; received: string[] }> {
      const received: string[] = [];
      const server = net.createServer((socket) => {
        let data = '';
        socket.on('error', () => undefined);
        socket.on('data', (chunk: Buffer) => {
          data += chunk.toString();
          const end = data.indexOf('\r\n\r\n');
          const length = Number(/content-length: (\d+)/i.exec(data)?.[1] ?? 0);
          if (end < 0 || data.length < end + 4 + length) return;
          received.push(data.slice(end + 4));
          if (received.length <= resets) socket.resetAndDestroy();
          else socket.end('HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\napplied');
        });
      });
      server.listen(0, HOST);
      await once(server, 'listening');
      closers.push(() => void server.close());
      return { upstream: { agentId: 'a', host: HOST, port: (server.address() as net.AddressInfo).port }, received };
    }

    it('a POST gets 502 and is not sent twice', async () => {
      const svc = await resetting(1);
      const g = gate();
      const front = await httpFront(g);
      g.release(svc.upstream);
      const answer = await send(front, 'POST', '/pay', 'charge');
      assert.equal(answer.status, 502);
      assert.match(answer.body, /not sent twice/);
      await pause(300);
      assert.deepEqual(svc.received, ['charge']);
    });

    for (const [what, method, headers] of [
      ['a PUT', 'PUT', {}],
      ['a POST with an Idempotency-Key', 'POST', { 'idempotency-key': 'k-1' }],
    ] as const) {
      it(`${what} is sent again`, async () => {
        const svc = await resetting(1);
        const g = gate();
        const front = await httpFront(g);
        g.release(svc.upstream);
        const answer = await send(front, method, '/item', 'value', headers);
        assert.deepEqual([answer.status, answer.body], [200, 'applied']);
        assert.deepEqual(svc.received, ['value', 'value']);
      });
    }
  });

  it('forwards no hop-by-hop header either way', async () => {
    const svc = await service('a', (_hit, res) => {
      res.setHeader('proxy-authenticate', 'Basic');
      res.setHeader('x-private', 'hop');
      res.setHeader('connection', 'close, x-private');
      res.setHeader('x-upstream', 'yes');
      res.end('ok');
    });
    const g = gate();
    const front = await httpFront(g);
    g.release(svc.upstream);
    const answer = await send(front, 'GET', '/', undefined, {
      connection: 'keep-alive, x-drop-me',
      'x-drop-me': '1',
      'keep-alive': 'timeout=5',
      te: 'trailers',
      'proxy-authorization': 'Basic eDp5',
      'x-keep': 'yes',
    });
    assert.equal(answer.status, 200);
    const seen = svc.hits[0]?.headers ?? {};
    for (const name of ['x-drop-me', 'keep-alive', 'te', 'proxy-authorization']) assert.equal(seen[name], undefined, name);
    assert.doesNotMatch(String(seen.connection), /x-drop-me/);
    assert.equal(seen['x-keep'], 'yes');
    assert.equal(answer.headers['x-upstream'], 'yes');
    assert.equal(answer.headers['proxy-authenticate'], undefined);
    assert.equal(answer.headers['x-private'], undefined);
  });
});

describe('the frontman: TCP through a gate', () => {
  /** A TCP service that records what it receives and answers each chunk with `<agent>:<chunk>`. */
  async function tcpService(agentId: string): Promise<{ upstream: Upstream; received: string[]; sockets: net.Socket[] }> {
    const received: string[] = [];
    const sockets: net.Socket[] = [];
    const server = net.createServer((socket) => {
      sockets.push(socket);
      socket.on('error', () => undefined);
      socket.on('data', (chunk: Buffer) => {
        received.push(chunk.toString());
        socket.write(`${agentId}:${chunk.toString()}`);
      });
    });
    server.listen(0, HOST);
    await once(server, 'listening');
    closers.push(() => {
      for (const socket of sockets) socket.destroy();
      server.close();
    });
    return { upstream: { agentId, host: HOST, port: (server.address() as net.AddressInfo).port }, received, sockets };
  }

  it("a held connection's bytes reach the new upstream after release; its close ends the client cleanly", async () => {
    const old = await tcpService('old');
    const moved = await tcpService('new');
    const g = gate();
    const front = await startTcpFront(g, { host: HOST, port: 0, connectTimeoutMs: 500 }, log);
    closers.push(() => front.close());
    g.release(old.upstream);
    await g.drain(1_000);

    const client = net.connect(front.address.port, HOST);
    closers.push(() => void client.destroy());
    const errors: Error[] = [];
    client.on('error', (error) => errors.push(error));
    let echoed = '';
    client.on('data', (chunk: Buffer) => (echoed += chunk.toString()));
    await once(client, 'connect');
    client.write('hello');
    await until('the connection is held', () => g.waiting === 1);
    await pause(100);
    assert.deepEqual(old.received, []);
    assert.equal(echoed, '');

    g.release(moved.upstream);
    await until('the bytes reach the new upstream', () => moved.received.join('') === 'hello');
    await until('the answer comes back', () => echoed === 'new:hello');

    const ended = once(client, 'end');
    moved.sockets[0]?.end();
    await ended;
    await once(client, 'close');
    assert.deepEqual(errors, [], 'a clean close, not a reset');
  });

  it('holds a connection the upstream refused and joins it once the upstream listens', async () => {
    const port = await freePort();
    const g = gate();
    const front = await startTcpFront(g, { host: HOST, port: 0, connectTimeoutMs: 500 }, log);
    closers.push(() => front.close());
    g.release({ agentId: 'a', host: HOST, port });
    const client = net.connect(front.address.port, HOST);
    closers.push(() => void client.destroy());
    let echoed = '';
    client.on('data', (chunk: Buffer) => (echoed += chunk.toString()));
    client.write('early');
    await pause(1_300);
    const server = net.createServer((socket) => socket.on('data', (chunk: Buffer) => socket.write(`late:${chunk.toString()}`)));
    server.listen(port, HOST);
    closers.push(() => void server.close());
    await until('the bytes sent before reach the service', () => echoed === 'late:early');
    assert.deepEqual(warnings, []);
  });

  it('ends a connection held past its deadline', async () => {
    const g = gate({ maxMs: 200 });
    const front = await startTcpFront(g, { host: HOST, port: 0, connectTimeoutMs: 500 }, log);
    closers.push(() => front.close());
    const client = net.connect(front.address.port, HOST);
    client.on('error', () => undefined);
    closers.push(() => void client.destroy());
    const started = Date.now();
    await once(client, 'end');
    assert.ok(Date.now() - started < 2_000);
  });
});
