import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/**
 * Ends the connections of a container whose peers are outside it, just before its freeze (see
 * core/container-network.ts for why they cannot follow the service to another cloud):
 *
 * 1. a guard in the container's network namespace answers every new TCP connection from outside with a
 *    reset, so no client gets in between the cut and the freeze (it would be dumped with a connection its
 *    peer can never reach again, and hang until its own timeout);
 * 2. every established connection whose peer is not one of the container's own addresses is destroyed with
 *    SOCK_DESTROY (`ss -K`): the kernel sends the peer a reset, and the server sees the connection aborted
 *    and drops its client, as it would on any network error.
 *
 * Connections with both ends in the container are untouched: CRIU keeps them (tcp-established). The guard
 * lives in the namespace, which the freeze tears down with the container; a checkpoint that fails and leaves
 * the container running calls `lift` to let clients in again.
 */
export interface OutsideConnectionCut {
  /** Connections reset. */
  reset: number;
  /** Removes the guard (the freeze failed and the service runs on here). Idempotent. */
  lift(): Promise<void>;
}

const GUARD_COMMENT = 'ums: migrating, new outside connections refused';
const GUARD_RULE = [
  'INPUT',
  '!',
  '-i',
  'lo',
  '-p',
  'tcp',
  '--syn',
  '-m',
  'comment',
  '--comment',
  GUARD_COMMENT,
  '-j',
  'REJECT',
  '--reject-with',
  'tcp-reset',
];

export class ConnectionCutError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ConnectionCutError';
  }
}

/** `pid`: any process of the container (its init), whose network namespace is the container's. */
export async function cutOutsideConnections(pid: number, ownAddresses: string[]): Promise<OutsideConnectionCut> {
  const inNetns = (command: string, args: string[]) =>
    execFileAsync('nsenter', ['-t', String(pid), '-n', '--', command, ...args], { timeout: 10_000 });
  const guards: Array<'iptables' | 'ip6tables'> = [];
  const lift = async () => {
    for (const tool of guards.splice(0)) await inNetns(tool, ['-w', '-D', ...GUARD_RULE]).catch(() => undefined);
  };
  try {
    for (const tool of ['iptables', 'ip6tables'] as const) {
      try {
        await inNetns(tool, ['-w', '-I', ...GUARD_RULE]);
        guards.push(tool);
      } catch (error) {
        // A namespace without IPv6 has nothing to guard there; without IPv4 filtering nothing can be promised.
        if (tool === 'iptables') throw error;
      }
    }
    const inside = [
      '127.0.0.0/8',
      '[::1]',
      '::ffff:127.0.0.0/104',
      ...ownAddresses.flatMap((a) => (a.includes(':') ? [`[${a}]`] : [a, `[::ffff:${a}]`])),
    ];
    const filter = ['state', 'connected', `! ( ${inside.map((a) => `dst ${a}`).join(' or ')} )`];
    const { stdout } = await inNetns('ss', ['-K', '-H', '-tn', ...filter]);
    return { reset: stdout.split('\n').filter((line) => line.trim() !== '').length, lift };
  } catch (error) {
    await lift();
    const e = error as Error & { stderr?: string };
    throw new ConnectionCutError(
      `could not end the container's outside connections before the freeze: ${(e.stderr ?? '').trim() || e.message}`,
      { cause: error },
    );
  }
}
