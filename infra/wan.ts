import { type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createLogger } from '../core/log.js';
import {
  deleteNetns,
  ensureNetns,
  execInNetns,
  ip,
  killProcessesInNetns,
  listNetns,
  netnsExists,
  spawnInNetns,
  type CommandOutput,
  type NetnsCommandOptions,
} from './network-namespace.js';

/**
 * A stack's "WAN": a network namespace of its own holding a Linux bridge, which every simulated host's
 * network namespace and every client namespace joins with a veth pair. Both ends of each pair are created
 * directly in the namespaces that hold them, so the machine's own network namespace never sees an interface
 * of ours. The subnet is from the benchmarking range (RFC 2544) and exists only on this bridge: every stack
 * has its own bridge, so stacks running side by side may use the same addresses without meeting.
 */
const log = createLogger('wan');

export const WAN_SUBNET = '198.18.0.0/24';
const WAN_PREFIX = '198.18.0.';
const PREFIX_LENGTH = 24;
/** The bridge's own address: lets someone inside the WAN namespace look at the traffic (ping, ss). */
export const WAN_BRIDGE_ADDRESS = `${WAN_PREFIX}1`;
/** Hosts get .10, .11, ... in the order they join (a stack joins them in its hosts' order: stable). */
const HOST_OCTETS = { first: 10, last: 99 };
const CLIENT_OCTETS = { first: 100, last: 254 };
export const WAN_BRIDGE = 'wan-br';
/** The interface name inside a host's or client's namespace; each namespace has its own name space. */
export const WAN_INTERFACE = 'wan0';

export interface WanOptions {
  /** The stack's name: the WAN's namespace is named from it, for people reading `ip netns list`. */
  stackName: string;
  /** The stack's directory: hashed into the namespace's name, so two stacks never share a WAN. */
  stackDir: string;
}

/** A namespace on the WAN (a simulated host's or a client's), with its address there. */
export interface WanEndpoint {
  name: string;
  netns: string;
  address: string;
  /** Runs a program in the endpoint's namespace; rejects with its stderr on a non-zero exit. */
  exec(command: string, args: string[], options?: NetnsCommandOptions): Promise<CommandOutput>;
  /** Starts a program in the endpoint's namespace; the WAN kills it, if still running, on destroy. */
  spawn(command: string, args: string[], options?: SpawnOptions): ChildProcess;
}

export interface Wan {
  /** The namespace holding the bridge. */
  netns: string;
  subnet: string;
  bridgeAddress: string;
  hosts: ReadonlyMap<string, WanEndpoint>;
  clients: ReadonlyMap<string, WanEndpoint>;
  /**
   * Joins a simulated host's namespace (PodmanHost.netns) to the WAN and turns on IPv4 forwarding in it, so
   * netavark's DNAT can forward a published port from the WAN to a container on the host's podman0 bridge.
   */
  attachHost(name: string, netns: string): Promise<WanEndpoint>;
  /** Creates a namespace of its own on the WAN, for client programs. */
  addClient(name: string): Promise<WanEndpoint>;
  /** Kills the client's processes, removes its veth and its namespace. */
  removeClient(name: string): Promise<void>;
  /**
   * Kills what was spawned through the endpoints, removes every client namespace, every veth and the WAN's
   * namespace. Hosts' namespaces stay (their PodmanHost owns them) but lose their WAN interface. Safe to
   * call more than once.
   */
  destroy(): Promise<void>;
}

/** The WAN namespace's name; client namespaces are named `<it>-<client>`. */
export function wanNetnsName(stackName: string, stackDir: string): string {
  const safe = stackName.replace(/[^a-zA-Z0-9_.-]/g, '-').slice(0, 20);
  const hash = createHash('sha256').update(stackDir).digest('hex').slice(0, 8);
  return `ums-wan-${safe}-${hash}`;
}

/**
 * Creates the WAN of a stack, first removing what a previous run with the same stack left behind (a crash
 * skips teardown; the names are stable per stack dir, so the leftovers are found by name).
 */
export async function createWan(options: WanOptions): Promise<Wan> {
  const wanNetns = wanNetnsName(options.stackName, options.stackDir);
  await removeWanNamespaces(wanNetns);
  try {
    await ensureNetns(wanNetns);
    await ip(['-n', wanNetns, 'link', 'add', WAN_BRIDGE, 'type', 'bridge', 'forward_delay', '0']);
    await ip(['-n', wanNetns, 'addr', 'add', `${WAN_BRIDGE_ADDRESS}/${PREFIX_LENGTH}`, 'dev', WAN_BRIDGE]);
    await ip(['-n', wanNetns, 'link', 'set', WAN_BRIDGE, 'up']);
  } catch (error) {
    await removeWanNamespaces(wanNetns);
    throw new Error(`could not create the WAN ${wanNetns}`, { cause: error });
  }

  const hosts = new Map<string, WanEndpoint>();
  const clients = new Map<string, WanEndpoint>();
  const usedOctets = new Set<number>();
  const children = new Set<ChildProcess>();
  let destroyed = false;

  const allocate = (range: { first: number; last: number }, what: string): number => {
    for (let octet = range.first; octet <= range.last; octet++) {
      if (!usedOctets.has(octet)) {
        usedOctets.add(octet);
        return octet;
      }
    }
    throw new Error(`the WAN ${wanNetns} has no ${what} address left (${WAN_PREFIX}${range.first}-${range.last} in use)`);
  };

  const endpoint = (name: string, netns: string, address: string): WanEndpoint => ({
    name,
    netns,
    address,
    exec: (command, args, execOptions) => execInNetns(netns, command, args, execOptions),
    spawn: (command, args, spawnOptions) => {
      const child = spawnInNetns(netns, command, args, spawnOptions);
      children.add(child);
      child.once('exit', () => children.delete(child));
      child.once('error', () => children.delete(child));
      return child;
    },
  });

  /** Joins `netns` with a veth pair: `v<octet>` on the bridge, WAN_INTERFACE holding `address` inside. */
  const join = async (netns: string, octet: number): Promise<string> => {
    const address = `${WAN_PREFIX}${octet}`;
    const outer = vethName(octet);
    // A host namespace kept across a crash may still hold its old interface.
    await deleteLinkIfPresent(netns, WAN_INTERFACE);
    await ip(['-n', wanNetns, 'link', 'add', outer, 'type', 'veth', 'peer', 'name', WAN_INTERFACE, 'netns', netns]);
    await ip(['-n', wanNetns, 'link', 'set', outer, 'master', WAN_BRIDGE, 'up']);
    await ip(['-n', netns, 'addr', 'add', `${address}/${PREFIX_LENGTH}`, 'dev', WAN_INTERFACE]);
    await ip(['-n', netns, 'link', 'set', WAN_INTERFACE, 'up']);
    return address;
  };

  const checkOpen = (): void => {
    if (destroyed) throw new Error(`the WAN ${wanNetns} has been destroyed`);
  };

  const wan: Wan = {
    netns: wanNetns,
    subnet: WAN_SUBNET,
    bridgeAddress: WAN_BRIDGE_ADDRESS,
    hosts,
    clients,
    attachHost: async (name, netns) => {
      checkOpen();
      if (hosts.has(name)) throw new Error(`host ${name} is already on the WAN ${wanNetns}`);
      if (!(await netnsExists(netns))) throw new Error(`host ${name}: no network namespace ${netns} to join to the WAN`);
      const octet = allocate(HOST_OCTETS, 'host');
      try {
        const address = await join(netns, octet);
        // Per namespace: forwarding from wan0 to podman0 is what a published port needs on this host.
        await execInNetns(netns, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
        const host = endpoint(name, netns, address);
        hosts.set(name, host);
        log.info({ wan: wanNetns, host: name, netns, address }, 'host joined the WAN');
        return host;
      } catch (error) {
        usedOctets.delete(octet);
        await deleteLinkIfPresent(wanNetns, vethName(octet));
        throw new Error(`could not join host ${name} (${netns}) to the WAN ${wanNetns}`, { cause: error });
      }
    },
    addClient: async (name) => {
      checkOpen();
      if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,31}$/.test(name)) {
        throw new Error(`client name ${JSON.stringify(name)} must be 1-32 letters, digits, '_', '.', '-'`);
      }
      if (clients.has(name)) throw new Error(`client ${name} is already on the WAN ${wanNetns}`);
      const netns = `${wanNetns}-${name}`;
      const octet = allocate(CLIENT_OCTETS, 'client');
      try {
        await ensureNetns(netns);
        const client = endpoint(name, netns, await join(netns, octet));
        clients.set(name, client);
        log.info({ wan: wanNetns, client: name, netns, address: client.address }, 'client joined the WAN');
        return client;
      } catch (error) {
        usedOctets.delete(octet);
        await removeNamespace(netns);
        await deleteLinkIfPresent(wanNetns, vethName(octet));
        throw new Error(`could not add client ${name} to the WAN ${wanNetns}`, { cause: error });
      }
    },
    removeClient: async (name) => {
      const client = clients.get(name);
      if (client === undefined) return;
      clients.delete(name);
      await removeNamespace(client.netns);
      const octet = Number(client.address.slice(WAN_PREFIX.length));
      await deleteLinkIfPresent(wanNetns, vethName(octet));
      usedOctets.delete(octet);
    },
    destroy: async () => {
      if (destroyed) return;
      destroyed = true;
      for (const child of children) child.kill('SIGKILL');
      for (const name of [...clients.keys()]) await wan.removeClient(name);
      // Deleting our end of each pair removes the host's end now; the kernel would free it only later.
      await removeWanNamespaces(wanNetns);
      hosts.clear();
      log.info({ wan: wanNetns }, 'WAN destroyed');
    },
  };
  log.info({ wan: wanNetns, subnet: WAN_SUBNET }, 'WAN created');
  return wan;
}

/**
 * Removes what a stack's WAN left behind without a Wan object at hand (a crashed run): its client
 * namespaces with their processes, its veths and its namespace. createWan does this itself first.
 */
export async function removeWan(options: WanOptions): Promise<void> {
  await removeWanNamespaces(wanNetnsName(options.stackName, options.stackDir));
}

function vethName(octet: number): string {
  return `v${octet}`;
}

/** Everything named for this WAN: its client namespaces (processes, veth, namespace), then the WAN itself. */
async function removeWanNamespaces(wanNetns: string): Promise<void> {
  const found = await listNetns({ exact: wanNetns, prefix: `${wanNetns}-` });
  // Clients first: the WAN's name is a prefix of theirs and sorts first.
  for (const netns of found.reverse()) await removeNamespace(netns);
}

/** Only for namespaces this module made: every process in them is a client program we started. */
async function removeNamespace(netns: string): Promise<void> {
  await killProcessesInNetns(netns);
  for (const veth of await vethsIn(netns)) await deleteLinkIfPresent(netns, veth);
  await deleteNetns(netns);
}

async function vethsIn(netns: string): Promise<string[]> {
  if (!(await netnsExists(netns))) return [];
  const out = await ip(['-n', netns, '-o', 'link', 'show', 'type', 'veth']).catch(() => '');
  // "7: v10@if2: <BROADCAST,..." -> "v10"
  return out
    .split('\n')
    .map((line) => /^\d+:\s+([^@:\s]+)/.exec(line)?.[1])
    .filter((name): name is string => name !== undefined);
}

async function deleteLinkIfPresent(netns: string, link: string): Promise<void> {
  if (!(await netnsExists(netns))) return;
  await ip(['-n', netns, 'link', 'del', link]).catch((error: Error) => {
    // Teardown goes on past a link it cannot delete; a join that needed it gone fails on the next step.
    if (!/Cannot find device|does not exist/.test(error.message)) log.warn({ netns, link, err: error.message }, 'could not delete link');
  });
}
