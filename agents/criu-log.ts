import { readFile } from 'node:fs/promises';

/**
 * CRIU's own reason for a failed dump or restore, read from its log. The engine reports only the runtime's
 * command line and "exit status 1"; the reason ("Connected TCP socket, consider using --tcp-established
 * option", "Can't get rlimit 0: Operation not permitted") is in dump.log / restore.log in the container's
 * directory. Returns undefined when there is no log or it names no error.
 */
export async function criuReason(logPath: string): Promise<string | undefined> {
  const text = await readFile(logPath, 'utf8').catch(() => undefined);
  return text === undefined ? undefined : reasonFromLog(text);
}

/** Lines that are CRIU's bookkeeping of a failure, not its cause, or errors it survives. */
const NOT_THE_CAUSE = [
  /Dumping FAILED/,
  /Restoring FAILED/,
  /Dump files \(pid: \d+\) failed/,
  /Can't setup RLIMIT_NOFILE for self/,
  /Unable to (?:open|restore) fd=/,
];

/** What to do about the causes we know, in the user's terms. */
const ADVICE: Array<[RegExp, string]> = [
  [/Connected TCP socket/, 'the service has an established TCP connection and the checkpoint was taken without tcp-established'],
  [/Can't get rlimit/, 'a process runs as another user, and CRIU needs CAP_SYS_RESOURCE to read its rlimits'],
  [
    /Can't get 1:(?:16|34) opt/,
    'this CRIU asks inet sockets for SO_PASSCRED/SO_PASSSEC, which Linux >= 6.16 refuses: CRIU >= 4.2 is needed',
  ],
  [/External socket|unix socket.*external/i, 'a unix socket is connected to a process outside the container'],
  [/Address already in use/, 'an address or port the service holds is taken on this host'],
];

export function reasonFromLog(text: string): string | undefined {
  const errors = text
    .split('\n')
    .map((line) => /Error \(([^)]+)\): (.*)$/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => `${m[2]?.trim() ?? ''} (${m[1] ?? ''})`)
    .filter((line) => !NOT_THE_CAUSE.some((re) => re.test(line)));
  if (errors.length === 0) return undefined;
  const unique = [...new Set(errors)].slice(0, 3);
  const advice = ADVICE.find(([re]) => unique.some((line) => re.test(line)))?.[1];
  return `${advice !== undefined ? `${advice}: ` : ''}${unique.join('; ')}`;
}
