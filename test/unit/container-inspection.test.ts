import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { classify, localIpv4Addresses, localIpv6Addresses, parseInetTable } from '../../agents/container-inspection.js';
import { reasonFromLog } from '../../agents/criu-log.js';

// Captured from a redis container on this stack (Podman, netavark): redis listening on 0.0.0.0 and [::],
// the in-container redis-cli connected over 127.0.0.1, one client from the WAN (198.18.0.100), and a
// TIME_WAIT left by an earlier probe (inode 0: no process holds it).
const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 178772 1 0000000000000000 100 0 0 10 0
   1: 0100007F:18EB 0100007F:D2F0 01 00000000:00000000 02:000A7D9C 00000000     0        0 178790 2 0000000000000000 20 4 30 10 -1
   2: 0100007F:D2F0 0100007F:18EB 01 00000000:00000000 02:000A7D9C 00000000     0        0 178789 2 0000000000000000 20 4 30 10 -1
   3: 0500580A:18EB 640012C6:9C40 01 00000000:00000000 02:000A7D9C 00000000     0        0 178801 2 0000000000000000 20 4 30 10 -1
   4: 0100007F:E9BA 0100007F:2328 06 00000000:00000000 03:0000130B 00000000     0        0 0 3 0000000000000000
`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:18EB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 178773 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000500580A:18EB 0000000000000000FFFF0000650012C6:9C41 01 00000000:00000000 00:00000000 00000000     0        0 178802 1 0000000000000000 100 0 0 10 0
`;
const UDP = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 178900 2 0000000000000000 0
`;
const FIB_TRIE = `Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.88.0.0/16 2 0 2
        |-- 10.88.0.0
           /16 link UNICAST
        |-- 10.88.0.5
           /32 host LOCAL
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
        |-- 10.88.0.5
           /32 host LOCAL
`;
const IF_INET6 = `00000000000000000000000000000001 01 80 10 80       lo
fe800000000000004c3d1bfffe2a9e11 02 40 20 80     eth0
`;

describe('container inspection: what a container holds on the network, read from /proc', () => {
  it('parses the kernel tables, IPv4, IPv6 and IPv4-mapped peers, and leaves out sockets no process holds', () => {
    const v4 = parseInetTable(TCP, 'tcp', 4);
    assert.equal(v4.length, 4, 'the TIME_WAIT socket (inode 0) is not one CRIU dumps');
    assert.deepEqual(v4[0]?.local, { address: '0.0.0.0', port: 6379 });
    assert.deepEqual(v4[3]?.peer, { address: '198.18.0.100', port: 40000 });
    const v6 = parseInetTable(TCP6, 'tcp', 6);
    assert.deepEqual(v6[0]?.local, { address: '::', port: 6379 });
    assert.deepEqual(v6[1]?.peer, { address: '198.18.0.101', port: 40001 }, "a dual-stack socket's IPv4 peer reads as IPv4");
    assert.deepEqual(localIpv4Addresses(FIB_TRIE), ['10.88.0.5']);
    assert.deepEqual(localIpv6Addresses(IF_INET6), ['fe80::4c3d:1bff:fe2a:9e11']);
  });

  it('keeps connections with both ends inside, lists those with outside peers, and counts listeners', () => {
    const sockets = [...parseInetTable(TCP, 'tcp', 4), ...parseInetTable(TCP6, 'tcp', 6), ...parseInetTable(UDP, 'udp', 4)];
    const network = classify(sockets, ['10.88.0.5'], [{ hostPort: 6379, containerPort: 6379, protocol: 'tcp' }], 3);
    assert.equal(network.insideConnections, 1, 'two sockets, one connection');
    assert.equal(network.insideOverOwnAddress, 0, 'over loopback');
    const overOwn = classify(parseInetTable(TCP.replace(/0100007F:(18EB|D2F0)/g, '0500580A:$1'), 'tcp', 4), ['10.88.0.5'], [], 0);
    assert.equal(overOwn.insideOverOwnAddress, 1, "the same pair over the container's own address");
    assert.equal(network.outsideConnectionCount, 2);
    assert.deepEqual(
      network.outsideConnections.map((c) => c.peer.address),
      ['198.18.0.100', '198.18.0.101'],
    );
    assert.deepEqual(
      network.listening.map((l) => `${l.protocol}${l.family} ${l.address}:${l.port}`),
      ['tcp4 0.0.0.0:6379', 'tcp6 :::6379', 'udp4 0.0.0.0:53'],
    );
    assert.equal(network.unixSockets, 3);
  });
});

describe("CRIU's own reason, from its log", () => {
  it("names the cause in the user's terms and leaves out the bookkeeping lines", () => {
    const log = `(00.001) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.120) Error (criu/sk-inet.c:199): inet: Connected TCP socket, consider using --tcp-established option.
(00.121) Error (criu/cr-dump.c:1681): Dump files (pid: 3260) failed with -1
(00.130) Error (criu/cr-dump.c:2111): Dumping FAILED.
`;
    assert.equal(
      reasonFromLog(log),
      'the service has an established TCP connection and the checkpoint was taken without tcp-established: inet: Connected TCP socket, consider using --tcp-established option. (criu/sk-inet.c:199)',
    );
    assert.equal(reasonFromLog('(00.1) Info: nothing wrong\n'), undefined);
  });
});
