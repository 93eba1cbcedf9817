import { z } from 'zod';

/**
 * What a container holds on the network, as its source agent reads it from the kernel (agents/
 * container-inspection.ts), and what a migration does with each piece. The rules follow from where the
 * service's peers are:
 *
 * - Listening TCP and bound UDP sockets (IPv4 and IPv6) are restored listening on the destination; the
 *   container's published ports are published there again by its engine.
 * - A TCP connection whose both ends are inside the container (a client in the container's own process
 *   tree) over loopback is kept: CRIU checkpoints it with --tcp-established at both ends, so neither end
 *   notices. Over the container's own address it cannot be: the destination's network gives the container
 *   a fresh address, so such a container is refused before the freeze.
 * - A TCP connection with a peer outside the container cannot follow: the peer reached the service through
 *   the source host's address, which does not move to another cloud. It is reset at the freeze (the peer
 *   sees a prompt close, never a hang until its own timeout), new outside connections are refused from
 *   then on, and the client reconnects to the service's new place. CRIU's --tcp-close at the restore is not
 *   used: it would close the connections inside the container too, and the outside peer would still hear
 *   nothing from the source.
 */

export const Endpoint = z.object({
  address: z.string().min(1).max(64),
  port: z.number().int().min(0).max(65535),
});
export type Endpoint = z.infer<typeof Endpoint>;

export const ListeningSocket = Endpoint.extend({ protocol: z.enum(['tcp', 'udp']), family: z.union([z.literal(4), z.literal(6)]) });
export type ListeningSocket = z.infer<typeof ListeningSocket>;

export const Connection = z.object({ local: Endpoint, peer: Endpoint });
export type Connection = z.infer<typeof Connection>;

export const PublishedPort = z.object({
  hostPort: z.number().int().min(1).max(65535),
  containerPort: z.number().int().min(1).max(65535),
  protocol: z.enum(['tcp', 'udp', 'sctp']),
  hostIp: z.string().max(64).optional(),
});
export type PublishedPort = z.infer<typeof PublishedPort>;

/** At most this many outside connections are listed one by one; the rest are counted. */
export const LISTED_CONNECTIONS = 20;

export const ContainerNetwork = z.object({
  /** The container's own addresses (loopback excluded). */
  addresses: z.array(z.string().max(64)).max(64),
  published: z.array(PublishedPort).max(256),
  listening: z.array(ListeningSocket).max(256),
  /** Established TCP connections with both ends inside the container: kept. */
  insideConnections: z.number().int().nonnegative(),
  /**
   * Of those, the ones over the container's own non-loopback address rather than loopback: the destination
   * gives the container a fresh address (its network's, not the source's), so CRIU could not bind them there.
   */
  insideOverOwnAddress: z.number().int().nonnegative(),
  /** Established TCP connections with a peer outside: reset at the freeze (the first LISTED_CONNECTIONS). */
  outsideConnections: z.array(Connection).max(LISTED_CONNECTIONS),
  outsideConnectionCount: z.number().int().nonnegative(),
  unixSockets: z.number().int().nonnegative(),
});
export type ContainerNetwork = z.infer<typeof ContainerNetwork>;

/** What a migration does with the container's network state, in words a user reads in `ums plan`. */
export interface ConnectionPlan {
  restoredListening: string[];
  kept: string;
  closed: string;
  republished: string[];
}

export function endpointText(endpoint: Endpoint): string {
  return endpoint.address.includes(':') ? `[${endpoint.address}]:${endpoint.port}` : `${endpoint.address}:${endpoint.port}`;
}

export function planConnections(network: ContainerNetwork): ConnectionPlan {
  const outside = network.outsideConnectionCount;
  const listed = network.outsideConnections.map((c) => endpointText(c.peer)).join(', ');
  const more = outside > network.outsideConnections.length ? ` and ${outside - network.outsideConnections.length} more` : '';
  return {
    restoredListening: network.listening.map((s) => `${s.protocol}${s.family === 6 ? '6' : ''} ${endpointText(s)}`),
    kept:
      network.insideConnections === 0
        ? 'no connection with both ends inside the container'
        : `${network.insideConnections} connection(s) with both ends inside the container: kept, they go on after the restore (CRIU tcp-established; over loopback, which is the same on every host)`,
    closed:
      outside === 0
        ? 'no connection with an outside peer now; any opened before the freeze is reset then'
        : `${outside} connection(s) with outside peers (${listed}${more}): reset at the freeze so that each client sees a prompt close, then reconnects to the destination; new outside connections are refused until the service runs there`,
    republished: network.published.map(
      (p) => `${p.hostIp !== undefined && p.hostIp !== '' ? `${p.hostIp}:` : ''}${p.hostPort} -> ${p.containerPort}/${p.protocol}`,
    ),
  };
}

/** Published host ports of `wanted` that `taken` already publishes (same port and protocol). */
export function conflictingPorts(wanted: PublishedPort[], taken: PublishedPort[]): PublishedPort[] {
  return wanted.filter((w) => taken.some((t) => t.hostPort === w.hostPort && t.protocol === w.protocol && sameHostIp(t.hostIp, w.hostIp)));
}

function sameHostIp(a: string | undefined, b: string | undefined): boolean {
  const any = (ip: string | undefined) => ip === undefined || ip === '' || ip === '0.0.0.0' || ip === '::';
  return any(a) || any(b) || a === b;
}
