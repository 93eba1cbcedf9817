import { readdir, readFile, readlink } from 'node:fs/promises';
import {
  LISTED_CONNECTIONS,
  type Connection,
  type ContainerNetwork,
  type Endpoint,
  type ListeningSocket,
  type PublishedPort,
} from '../core/container-network.js';

/**
 * Reads, from the host's /proc and without entering the container, what decides whether and how CRIU can
 * checkpoint a running container: its sockets and connections (the tables of its network namespace, seen
 * through its init process) and its processes (users, file descriptors CRIU cannot dump). CRIU 4.2 has no
 * check-only dump, so this is how the source refuses, before the freeze, what would fail after it.
 */

export interface ContainerInspection {
  network: ContainerNetwork;
  /** Processes in the container and their resident memory: what the checkpoint will hold. */
  processCount: number;
  residentBytes: number;
  /** Why CRIU cannot dump the container as it is now; empty when nothing known stands in the way. */
  blockers: string[];
}

export interface InspectionOptions {
  /** /proc of the host (tests may point elsewhere). */
  proc?: string;
  /** Whether this agent has CAP_SYS_RESOURCE; default: read from its own status. */
  hasCapSysResource?: boolean;
}

export async function inspectContainer(
  initPid: number,
  published: PublishedPort[],
  options: InspectionOptions = {},
): Promise<ContainerInspection> {
  const proc = options.proc ?? '/proc';
  const read = (name: string) => readFile(`${proc}/${initPid}/net/${name}`, 'utf8').catch(() => '');
  const [tcp, tcp6, udp, udp6, unix] = (await Promise.all(['tcp', 'tcp6', 'udp', 'udp6', 'unix'].map(read))) as [
    string,
    string,
    string,
    string,
    string,
  ];
  const addresses = await ownAddresses(initPid, proc);
  const sockets = [
    ...parseInetTable(tcp, 'tcp', 4),
    ...parseInetTable(tcp6, 'tcp', 6),
    ...parseInetTable(udp, 'udp', 4),
    ...parseInetTable(udp6, 'udp', 6),
  ];
  const network = classify(sockets, addresses, published, countUnixSockets(unix));
  const { processCount, residentBytes, blockers } = await readProcesses(
    proc,
    initPid,
    options.hasCapSysResource ?? (await hasCapability(proc, CAP_SYS_RESOURCE)),
  );
  if (network.insideOverOwnAddress > 0) {
    blockers.push(
      `${network.insideOverOwnAddress} connection(s) between the container's own processes go over its address ${network.addresses[0] ?? ''} rather than loopback: the destination gives the container a fresh address, so CRIU could not restore them there (connect over 127.0.0.1 / ::1 inside the container)`,
    );
  }
  return { network, processCount, residentBytes, blockers };
}

/** The addresses of the container's network namespace, loopback left out. */
export async function ownAddresses(initPid: number, proc = '/proc'): Promise<string[]> {
  const read = (name: string) => readFile(`${proc}/${initPid}/net/${name}`, 'utf8').catch(() => '');
  const [fibTrie, ifInet6] = await Promise.all([read('fib_trie'), read('if_inet6')]);
  return [...localIpv4Addresses(fibTrie), ...localIpv6Addresses(ifInet6)];
}

// ---- sockets ------------------------------------------------------------------------------------

export interface InetSocket {
  protocol: 'tcp' | 'udp';
  family: 4 | 6;
  local: Endpoint;
  peer: Endpoint;
  state: number;
}

const TCP_TIME_WAIT = 0x06;
const TCP_CLOSE = 0x07;
const TCP_LISTEN = 0x0a;

/** One of /proc/<pid>/net/{tcp,tcp6,udp,udp6}. Sockets no process holds (inode 0, e.g. TIME_WAIT) are left out. */
export function parseInetTable(text: string, protocol: 'tcp' | 'udp', family: 4 | 6): InetSocket[] {
  const sockets: InetSocket[] = [];
  for (const line of text.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 10) continue;
    const [, local, peer, state, , , , , , inode] = fields as [
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
    ];
    if (inode === '0') continue;
    sockets.push({
      protocol,
      family,
      local: parseEndpoint(local, family),
      peer: parseEndpoint(peer, family),
      state: Number.parseInt(state, 16),
    });
  }
  return sockets;
}

/** "0100007F:18EB" (IPv4) or 32 hex digits:port (IPv6); each 32-bit word is in host (little-endian) order. */
function parseEndpoint(text: string, family: 4 | 6): Endpoint {
  const [hex = '', portHex = '0'] = text.split(':');
  const words = hex.match(/.{8}/g) ?? [];
  const bytes = words.flatMap((w) => [6, 4, 2, 0].map((i) => Number.parseInt(w.slice(i, i + 2), 16)));
  const port = Number.parseInt(portHex, 16);
  if (family === 4) return { address: bytes.join('.'), port };
  return { address: ipv6Text(bytes), port };
}

function ipv6Text(bytes: number[]): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  // IPv4-mapped addresses (a dual-stack socket's IPv4 peers) are the IPv4 address they carry.
  if (groups.slice(0, 5).every((g) => g === '0') && groups[5] === 'ffff') return bytes.slice(12).join('.');
  // The WHATWG URL parser writes IPv6 in its canonical compressed form.
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
}

/** The addresses a namespace calls its own: the "/32 host LOCAL" leaves of /proc/<pid>/net/fib_trie. */
export function localIpv4Addresses(fibTrie: string): string[] {
  const found = new Set<string>();
  let last: string | undefined;
  for (const line of fibTrie.split('\n')) {
    const leaf = /^[\s|`+-]*-- (\d+\.\d+\.\d+\.\d+)$/.exec(line);
    if (leaf) last = leaf[1];
    else if (last !== undefined && /\/32 host LOCAL/.test(line) && !last.startsWith('127.')) found.add(last);
  }
  return [...found];
}

/** /proc/<pid>/net/if_inet6: "<32 hex digits> <ifindex> <prefix> <scope> <flags> <name>", loopback left out. */
export function localIpv6Addresses(ifInet6: string): string[] {
  return ifInet6
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f.length >= 6 && f[5] !== 'lo')
    .map((f) => ipv6Text((f[0]?.match(/.{2}/g) ?? []).map((b) => Number.parseInt(b, 16))));
}

function countUnixSockets(unix: string): number {
  return unix
    .split('\n')
    .slice(1)
    .filter((line) => line.trim() !== '').length;
}

function isLoopback(address: string): boolean {
  return address.startsWith('127.') || address === '::1';
}

export function classify(sockets: InetSocket[], addresses: string[], published: PublishedPort[], unixSockets: number): ContainerNetwork {
  const own = new Set(addresses);
  const inside = (endpoint: Endpoint) => isLoopback(endpoint.address) || own.has(endpoint.address);
  const listening: ListeningSocket[] = [];
  let insideEnds = 0;
  let ownAddressEnds = 0;
  const outside: Connection[] = [];
  for (const s of sockets) {
    if (s.protocol === 'udp') {
      if (s.local.port !== 0) listening.push({ protocol: 'udp', family: s.family, ...s.local });
      continue;
    }
    if (s.state === TCP_LISTEN) {
      listening.push({ protocol: 'tcp', family: s.family, ...s.local });
      continue;
    }
    if (s.state === TCP_CLOSE || s.state === TCP_TIME_WAIT || s.peer.port === 0) continue;
    if (!inside(s.peer)) outside.push({ local: s.local, peer: s.peer });
    else {
      insideEnds++;
      if (!isLoopback(s.peer.address)) ownAddressEnds++;
    }
  }
  return {
    addresses: [...own],
    published,
    listening,
    // Both ends of an inside connection are in the table: two sockets, one connection.
    insideConnections: Math.ceil(insideEnds / 2),
    insideOverOwnAddress: Math.ceil(ownAddressEnds / 2),
    outsideConnections: outside.slice(0, LISTED_CONNECTIONS),
    outsideConnectionCount: outside.length,
    unixSockets,
  };
}

// ---- processes ----------------------------------------------------------------------------------

const CAP_SYS_RESOURCE = 24;

async function hasCapability(proc: string, bit: number): Promise<boolean> {
  const status = await readFile(`${proc}/self/status`, 'utf8').catch(() => '');
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  return hex !== undefined && ((BigInt(`0x${hex}`) >> BigInt(bit)) & 1n) === 1n;
}

/** The processes in the container's PID namespace (found through its init process). */
async function containerPids(proc: string, initPid: number): Promise<number[]> {
  const ns = await readlink(`${proc}/${initPid}/ns/pid`).catch(() => undefined);
  if (ns === undefined) return [];
  const pids = (await readdir(proc)).filter((name) => /^\d+$/.test(name)).map(Number);
  const inNs = await Promise.all(
    pids.map(async (pid) => ((await readlink(`${proc}/${pid}/ns/pid`).catch(() => '')) === ns ? pid : undefined)),
  );
  return inNs.filter((pid): pid is number => pid !== undefined);
}

/**
 * Whether the container shares its parent's (the engine's conmon, so the host's) network namespace
 * (`--network host`): its sockets are then the host's, and neither resetting "outside" connections nor
 * moving them to another host means anything.
 */
async function sharesHostNetwork(proc: string, initPid: number): Promise<boolean> {
  const status = await readFile(`${proc}/${initPid}/status`, 'utf8').catch(() => '');
  const parent = /^PPid:\s*(\d+)$/m.exec(status)?.[1];
  if (parent === undefined || parent === '0') return false;
  const [own, parents] = await Promise.all([
    readlink(`${proc}/${initPid}/ns/net`).catch(() => 'own'),
    readlink(`${proc}/${parent}/ns/net`).catch(() => 'parent'),
  ]);
  return own === parents;
}

/** The container's processes: how many, their resident memory, and what CRIU 4.2 is known to refuse in them. */
async function readProcesses(
  proc: string,
  initPid: number,
  hasCapSysResource: boolean,
): Promise<{ processCount: number; residentBytes: number; blockers: string[] }> {
  const blockers: string[] = [];
  let processCount = 0;
  let residentBytes = 0;
  if (await sharesHostNetwork(proc, initPid)) {
    blockers.push(
      "it runs in its host's network namespace (--network host): its sockets are the host's and cannot move to another host; run it with a network of its own and published ports",
    );
  }
  for (const pid of await containerPids(proc, initPid)) {
    const status = await readFile(`${proc}/${pid}/status`, 'utf8').catch(() => undefined);
    if (status === undefined) continue; // exited meanwhile
    processCount++;
    residentBytes += Number(/^VmRSS:\s*(\d+) kB$/m.exec(status)?.[1] ?? 0) * 1024;
    const name = /^Name:\s*(.*)$/m.exec(status)?.[1] ?? '?';
    const uids = (/^Uid:\s*(.*)$/m.exec(status)?.[1] ?? '').trim().split(/\s+/).map(Number);
    const nonRoot = uids.find((uid) => uid !== 0);
    if (nonRoot !== undefined && !hasCapSysResource) {
      blockers.push(
        `process ${pid} (${name}) runs as uid ${nonRoot}: CRIU reads each task's rlimits with prlimit(), which for another user's process needs CAP_SYS_RESOURCE, and this host's root lacks it (run the service as root in its container, or give the agent's host that capability)`,
      );
    }
    const fds = await readdir(`${proc}/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const target = await readlink(`${proc}/${pid}/fd/${fd}`).catch(() => '');
      if (target === 'anon_inode:[io_uring]') {
        blockers.push(`process ${pid} (${name}) uses io_uring (fd ${fd}), which CRIU cannot checkpoint`);
        break;
      }
    }
  }
  return { processCount, residentBytes, blockers: [...new Set(blockers)].slice(0, 5) };
}
