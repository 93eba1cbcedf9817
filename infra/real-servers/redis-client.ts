import { createHash } from 'node:crypto';
import { INNER_CLIENT_NAME, INNER_COUNT_KEY, REDIS_PORT } from '../images/build-server-images.js';
import { inNetns, waitFor } from './command.js';

/**
 * Debian's redis-cli against the server of a localhost/ums/redis container (infra/images/build-server-images.ts),
 * run from the host in the container's network namespace, on its loopback (where DEBUG is allowed): for the
 * demo, the benchmark and the tests, before a freeze or after a restore. What the clients keep changing (the
 * inner client's counter, the outside writer's list: redis-writer.ts) is left out of a dataset's digest.
 */

/** Every populated key is `<prefix>:<n>`, n = 0..keys-1 (DEBUG POPULATE's naming). */
export const POPULATE_PREFIX = 'ums';
/** Value size of the populated keys: with its sds header it fills jemalloc's 1024-byte class exactly. */
export const POPULATE_VALUE_BYTES = 1000;
/** The list the outside writer (redis-writer.ts) appends to. */
export const OUTSIDE_WRITER_KEY = 'outside:log';
/** Key prefixes of the clients' own keys, which change while the service runs: not part of the dataset. */
export const CLIENT_KEY_PREFIXES: readonly string[] = [INNER_COUNT_KEY, OUTSIDE_WRITER_KEY];
const DIGEST_CHUNK_KEYS = 20_000;
const REDIS_CLI_TIMEOUT_MS = 300_000;

function redisCli(pid: number, args: string[], input?: string): Promise<string> {
  return inNetns(pid, ['redis-cli', '-h', '127.0.0.1', '-p', String(REDIS_PORT), ...args], { input, timeoutMs: REDIS_CLI_TIMEOUT_MS });
}

/** One redis-cli command against the container's server; its reply, trimmed. */
export async function redis(pid: number, ...args: string[]): Promise<string> {
  return (await redisCli(pid, args)).trim();
}

export async function usedMemoryBytes(pid: number): Promise<number> {
  const match = /^used_memory:(\d+)\r?$/m.exec(await redis(pid, 'INFO', 'memory'));
  if (!match?.[1]) throw new Error('INFO memory has no used_memory');
  return Number(match[1]);
}

/**
 * Fills the server with `<prefix>:<n>` strings of POPULATE_VALUE_BYTES (DEBUG POPULATE: "value:<n>" then
 * zero bytes; UMS moves the archive uncompressed, so zeros cost what random bytes cost) until INFO's
 * used_memory reaches `targetMiB`. Returns the number of populated keys.
 */
export async function populateTo(pid: number, targetMiB: number): Promise<number> {
  const target = targetMiB * 2 ** 20;
  let keys = 0;
  for (let round = 0; round < 8; round++) {
    const used = await usedMemoryBytes(pid);
    if (used >= target) return keys;
    // About 1.1 KB per key all told (value, key, dict entry, object); the next round tops up what is missing.
    const perKey = keys > 0 ? Math.max(used / keys, POPULATE_VALUE_BYTES) : POPULATE_VALUE_BYTES + 100;
    keys += Math.max(1, Math.ceil((target - used) / perKey));
    const reply = await redis(pid, 'DEBUG', 'POPULATE', String(keys), POPULATE_PREFIX, String(POPULATE_VALUE_BYTES));
    if (reply !== 'OK') throw new Error(`DEBUG POPULATE answered ${reply}`);
  }
  throw new Error(`used_memory did not reach ${targetMiB} MiB`);
}

export interface DatasetDigest {
  /** DBSIZE: every key, the clients' included */
  keys: number;
  /** the keys digested: all but the excluded prefixes' */
  digested: number;
  /** SHA-1 over the SHA-1s of each chunk of digested keys, sorted, each over "key\nDUMP(key)\n..." */
  digest: string;
}

/** Lua: SHA-1 of every key of KEYS with its DUMP serialisation, in order. */
const CHUNK_DIGEST = [
  'local parts = {}',
  'for _, key in ipairs(KEYS) do',
  '  parts[#parts + 1] = key',
  "  parts[#parts + 1] = redis.call('DUMP', key) or '(missing)'",
  'end',
  "return redis.sha1hex(table.concat(parts, '\\n'))",
].join('\n');

/** A key as one argument on a redis-cli input line. */
const quoted = (key: string) => `"${key.replace(/[\\"]/g, '\\$&')}"`;

/**
 * Digest of every key with its value (DUMP), sorted by key, leaving out keys that start with one of
 * `excludedPrefixes` (DEBUG DIGEST covers the whole dataset, and the clients keep changing their own keys).
 * The keys are listed with SCAN and digested chunk by chunk, so no command holds the server for the whole
 * dataset (a writer's replies would show it as an outage): one redis-cli fed the EVALSHAs on stdin.
 */
export async function datasetDigest(pid: number, excludedPrefixes: readonly string[] = CLIENT_KEY_PREFIXES): Promise<DatasetDigest> {
  const listed = (await redis(pid, '--scan')).split('\n');
  // SCAN may return a key twice (a rehash during the scan).
  const keys = [...new Set(listed)].filter((key) => key !== '' && !excludedPrefixes.some((prefix) => key.startsWith(prefix))).sort();
  const sha = await redis(pid, 'SCRIPT', 'LOAD', CHUNK_DIGEST);
  const commands: string[] = [];
  for (let from = 0; from < keys.length; from += DIGEST_CHUNK_KEYS) {
    const chunk = keys.slice(from, from + DIGEST_CHUNK_KEYS);
    commands.push(`EVALSHA ${sha} ${chunk.length} ${chunk.map(quoted).join(' ')}`);
  }
  const chunks = commands.length === 0 ? [] : (await redisCli(pid, [], `${commands.join('\n')}\n`)).trim().split('\n');
  if (chunks.length !== commands.length || chunks.some((c) => !/^[0-9a-f]{40}$/.test(c)))
    throw new Error(`the digest script answered: ${chunks.slice(0, 3).join(' | ')}`);
  return {
    keys: Number(await redis(pid, 'DBSIZE')),
    digested: keys.length,
    digest: createHash('sha1').update(chunks.join('\n')).digest('hex'),
  };
}

/** An entry of CLIENT LIST. */
export interface RedisClient {
  id: string;
  addr: string;
  name: string;
  /** seconds the connection has existed */
  age: number;
}

/** The server's client connections (CLIENT LIST). */
export async function redisClients(pid: number): Promise<RedisClient[]> {
  return (await redis(pid, 'CLIENT', 'LIST'))
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const fields = new Map(
        line
          .trim()
          .split(' ')
          .map((field) => {
            const eq = field.indexOf('=');
            return [field.slice(0, eq), field.slice(eq + 1)] as const;
          }),
      );
      return { id: fields.get('id') ?? '', addr: fields.get('addr') ?? '', name: fields.get('name') ?? '', age: Number(fields.get('age')) };
    });
}

/** The in-container client (UMS_INNER_CLIENT=1): its connection, and INNER_COUNT_KEY, which it increments. */
export interface InnerClient extends RedisClient {
  count: number;
}

/** The in-container client's one connection (CLIENT LIST name=inner) and its count; throws unless there is exactly one. */
export async function innerRedisClient(pid: number): Promise<InnerClient> {
  const clients = await redisClients(pid);
  const inner = clients.filter((c) => c.name === INNER_CLIENT_NAME);
  if (inner.length !== 1 || inner[0] === undefined)
    throw new Error(`not one client named ${INNER_CLIENT_NAME} but ${inner.length}: ${JSON.stringify(clients)}`);
  return { ...inner[0], count: Number(await redis(pid, 'GET', INNER_COUNT_KEY)) };
}

/** Waits until the inner client has counted `atLeast` (the server is up and the client connected). */
export async function waitForInnerCount(pid: number, atLeast: number, timeoutMs = 60_000): Promise<InnerClient> {
  let inner: InnerClient | undefined;
  await waitFor(
    async () => {
      inner = await innerRedisClient(pid);
      return inner.count >= atLeast;
    },
    `the inner client to count to ${atLeast}`,
    timeoutMs,
  );
  return inner as InnerClient;
}
