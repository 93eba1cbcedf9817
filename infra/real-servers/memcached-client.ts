import { createHash } from 'node:crypto';
import { INNER_COUNT_KEY, MEMCACHED_INNER_CLIENT_ADDRESS, MEMCACHED_PORT } from '../images/build-server-images.js';
import { inNetns } from './command.js';

/**
 * memcached's text commands to the server of a localhost/ums/memcached container (infra/images/
 * build-server-images.ts), sent through busybox nc from the host in the container's network namespace.
 */

/** Sends memcached text-protocol commands over a fresh connection (busybox nc) and returns the replies. */
export function memcached(pid: number, commands: string): Promise<string> {
  return inNetns(pid, ['busybox', 'nc', '127.0.0.1', String(MEMCACHED_PORT)], { input: `${commands}quit\r\n` });
}

/** What the in-container client has counted (its INNER_COUNT_KEY); -1 when the key is not there. */
export async function memcachedCount(pid: number): Promise<number> {
  return Number(parseGet(await memcached(pid, `get ${INNER_COUNT_KEY}\r\n`)).get(INNER_COUNT_KEY) ?? -1);
}

/** A number from a `stats` reply. */
export function memcachedStat(stats: string, stat: string): number {
  const match = new RegExp(`^STAT ${stat} (\\d+)\\r?$`, 'm').exec(stats);
  if (match?.[1] === undefined) throw new Error(`no ${stat} in:\n${stats}`);
  return Number(match[1]);
}

/** From `stats conns`: the connection made to MEMCACHED_INNER_CLIENT_ADDRESS, which only the inner client uses. */
export function innerMemcachedConnection(statsConns: string): { fd: string; addr: string } {
  const byFd = new Map<string, Map<string, string>>();
  for (const m of statsConns.matchAll(/^STAT (\d+):(\S+) (.*?)\r?$/gm)) {
    const [, fd = '', field = '', value = ''] = m;
    if (!byFd.has(fd)) byFd.set(fd, new Map());
    byFd.get(fd)?.set(field, value);
  }
  const inner = [...byFd].filter(([, f]) => f.get('listen_addr') === `tcp:${MEMCACHED_INNER_CLIENT_ADDRESS}:${MEMCACHED_PORT}`);
  const [[fd, fields] = ['', new Map<string, string>()]] = inner;
  if (inner.length !== 1) throw new Error(`not one connection to ${MEMCACHED_INNER_CLIENT_ADDRESS} but ${inner.length}:\n${statsConns}`);
  return { fd, addr: fields.get('addr') ?? '' };
}

/** key -> value from the VALUE blocks of a get reply. */
export function parseGet(reply: string): Map<string, string> {
  const values = new Map<string, string>();
  const re = /VALUE (\S+) \d+ (\d+)\r\n/g;
  for (let m = re.exec(reply); m !== null; m = re.exec(reply)) {
    const start = m.index + m[0].length;
    values.set(m[1] ?? '', reply.slice(start, start + Number(m[2])));
    re.lastIndex = start + Number(m[2]);
  }
  return values;
}

/** A value of 100 to 900 bytes that depends on i, so a swapped or stale item shows. */
export function valueFor(i: number): string {
  const seed = createHash('sha256').update(String(i)).digest('hex');
  return seed.repeat(15).slice(0, 100 + (i % 9) * 100);
}
