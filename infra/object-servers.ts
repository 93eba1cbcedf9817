import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { existsSync, openSync, closeSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';
import { freePort } from '../core/free-port.js';
import { repoRoot } from './repo-paths.js';

/**
 * Local object-storage servers for tests and the local stack: Azurite (Azure Blob), s3rver (S3) and the
 * Cloud Storage emulator of firebase-tools (GCS). Each runs as a child process in its own process group on
 * a free 127.0.0.1 port with the data directory it is given, and comes with a ready bucket/container.
 *
 * Install them first: `npm ci && bash infra/storage-servers-setup.sh`.
 */
export interface ObjectServer {
  name: 'azurite' | 's3rver' | 'gcs-emulator';
  /** A store URL whose bucket/container exists, for openObjectStore(storeUrl, { ...process.env, ...env }). */
  storeUrl: string;
  /** Endpoint and credentials an SDK client needs to reach this server, and nothing else. */
  env: Record<string, string>;
  /** Its origin (http on loopback): what a destination must be told to allow (UMS_ALLOWED_HTTP_ENDPOINTS). */
  endpoint: string;
  /** The server's stdout/stderr, for diagnosing a failing test. */
  logFile: string;
  /** Kills the server's whole process group and waits for it to exit. Safe to call twice. */
  stop(): Promise<void>;
  /** kill -9 (fault injection: the store drops off mid-transfer). */
  crash(): Promise<void>;
  /** Starts it again on the same port and data directory. */
  restart(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------------------
// LOCAL-EMULATOR CREDENTIALS. These are the publicly documented development credentials of Azurite and
// s3rver; they open nothing but a server on 127.0.0.1 started by this module. Never use them anywhere else.
const AZURITE_ACCOUNT = 'devstoreaccount1';
const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';
const S3RVER_ACCESS_KEY = 'S3RVER';
const S3RVER_SECRET_KEY = 'S3RVER';
// ---------------------------------------------------------------------------------------------------------

const BUCKET = 'ums-local';
const GCS_PROJECT = 'demo-ums';
const STARTUP_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 5_000;

const toolsDir = join(repoRoot, '.tools');

/** Azurite's blob service on a free loopback port, its data in `dir`; `extraArgs` after the common ones. */
async function spawnAzurite(name: string, dir: string, extraArgs: string[] = []): Promise<{ server: RunningServer; port: number }> {
  const main = join(repoRoot, 'node_modules', 'azurite', 'dist', 'src', 'blob', 'main.js');
  requireInstalled(main, 'azurite (a devDependency: npm ci)');
  const dataDir = resolve(dir);
  await mkdir(dataDir, { recursive: true });
  const port = await freePort();
  const common = ['--blobHost', '127.0.0.1', '--blobPort', String(port), '-l', dataDir, '--disableTelemetry', '--skipApiVersionCheck'];
  return { server: await spawnServer(name, dataDir, port, [main, ...common, ...extraArgs]), port };
}

export async function startAzurite(dir: string): Promise<ObjectServer> {
  const { server, port } = await spawnAzurite('azurite', dir);
  try {
    const blobEndpoint = `http://127.0.0.1:${port}/${AZURITE_ACCOUNT}`;
    const service = new BlobServiceClient(blobEndpoint, new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY));
    await service.getContainerClient(BUCKET).createIfNotExists();
    return {
      ...server,
      name: 'azurite',
      storeUrl: `azblob://${AZURITE_ACCOUNT}/${BUCKET}`,
      env: {
        AZURE_STORAGE_CONNECTION_STRING: `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};BlobEndpoint=${blobEndpoint};`,
      },
    };
  } catch (error) {
    await server.stop();
    throw error;
  }
}

/** What startAzuriteWithOAuth gives: the server, its HTTPS endpoint and the emulator's account and key. */
export interface AzuriteWithOAuth {
  /** https://127.0.0.1:PORT/devstoreaccount1 */
  blobEndpoint: string;
  account: string;
  /** The emulator's publicly documented key (above): what an agent signing in with the account key uses. */
  accountKey: string;
  logFile: string;
  stop(): Promise<void>;
}

/**
 * Azurite over HTTPS with OAuth (`--oauth basic`: bearer tokens are accepted when their issuer, audience and
 * lifetime look like Entra ID's; their signature is not checked), for the keyless path: bearer-token requests,
 * user delegation keys and the user delegation SAS it verifies. Azurite accepts OAuth over HTTPS only, with
 * the certificate `tls` names (createBrokerTls in infra/broker-credentials.ts makes one for 127.0.0.1). A
 * client must trust tls's CA, which the Azure SDK takes only from NODE_EXTRA_CA_CERTS at process start: so
 * no container is created here; the client (a process started with that variable) makes what it needs.
 */
export async function startAzuriteWithOAuth(dir: string, tls: { certFile: string; keyFile: string }): Promise<AzuriteWithOAuth> {
  const { server, port } = await spawnAzurite('azurite-oauth', dir, ['--cert', tls.certFile, '--key', tls.keyFile, '--oauth', 'basic']);
  return {
    blobEndpoint: `https://127.0.0.1:${port}/${AZURITE_ACCOUNT}`,
    account: AZURITE_ACCOUNT,
    accountKey: AZURITE_KEY,
    logFile: server.logFile,
    stop: () => server.stop(),
  };
}

export async function startS3Server(dir: string): Promise<ObjectServer> {
  const cli = join(toolsDir, 's3rver', 'lib', 'cli.js');
  requireInstalled(cli, 'the patched s3rver');
  const dataDir = resolve(dir);
  await mkdir(dataDir, { recursive: true });
  const port = await freePort();
  // 4.0.4 ships no bin; its cli.js exports the commander program without parsing argv.
  const launcher = `require(${JSON.stringify(cli)}).parseAsync(process.argv.slice(1), { from: 'user' }).catch((e) => { console.error(e); process.exit(1); });`;
  const server = await spawnServer('s3rver', dataDir, port, [
    '-e',
    launcher,
    '--',
    '--directory',
    join(dataDir, 'data'),
    '--address',
    '127.0.0.1',
    '--port',
    String(port),
    '--no-vhost-buckets',
    '--silent',
  ]);
  try {
    const env = {
      AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${port}`,
      AWS_ACCESS_KEY_ID: S3RVER_ACCESS_KEY,
      AWS_SECRET_ACCESS_KEY: S3RVER_SECRET_KEY,
      AWS_REGION: 'us-east-1',
    };
    // Created through the SDK, not --configure-bucket: a signed bucket-level request proves the patch is in.
    const client = new S3Client({
      endpoint: env.AWS_ENDPOINT_URL_S3,
      region: env.AWS_REGION,
      forcePathStyle: true,
      credentials: { accessKeyId: S3RVER_ACCESS_KEY, secretAccessKey: S3RVER_SECRET_KEY },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    try {
      await client.send(new CreateBucketCommand({ Bucket: BUCKET }));
    } finally {
      client.destroy();
    }
    return { ...server, name: 's3rver', storeUrl: `s3://${BUCKET}`, env };
  } catch (error) {
    await server.stop();
    throw error;
  }
}

/**
 * The Cloud Storage emulator of firebase-tools, run without its rules engine (which needs Java) and without
 * the Firebase CLI. Gaps (see test/integration/object-stores.test.ts): objects are held in memory, chunked
 * resumable uploads are truncated, multipart bodies are capped at 130 MB, signatures of signed URLs are
 * never checked. Buckets are created on first use.
 *
 * Signing V4 URLs needs a private key even against the emulator, so a throwaway service-account key is
 * generated into the data directory and named by GOOGLE_APPLICATION_CREDENTIALS.
 */
export async function startGcsEmulator(dir: string): Promise<ObjectServer> {
  const firebaseTools = join(toolsDir, 'gcs-emulator', 'node_modules', 'firebase-tools');
  requireInstalled(join(firebaseTools, 'lib', 'emulator', 'storage', 'index.js'), 'firebase-tools');
  const dataDir = resolve(dir);
  await mkdir(join(dataDir, 'tmp'), { recursive: true });
  const port = await freePort();
  const launcher = [
    `const { StorageEmulator } = require(${JSON.stringify(join(firebaseTools, 'lib/emulator/storage/index.js'))});`,
    `const { createApp } = require(${JSON.stringify(join(firebaseTools, 'lib/emulator/storage/server.js'))});`,
    `const { EmulatorRegistry } = require(${JSON.stringify(join(firebaseTools, 'lib/emulator/registry.js'))});`,
    `const [port] = process.argv.slice(1);`,
    // Skipping start() skips the rules runtime (a Java jar it would download); the GCS JSON API it serves
    // treats every request as an admin's and never consults rules.
    `const emulator = new StorageEmulator({ projectId: ${JSON.stringify(GCS_PROJECT)}, host: '127.0.0.1', port: Number(port), auto_download: false });`,
    // Object metadata builds its download links from the registry's address of the emulator.
    `EmulatorRegistry.set('storage', emulator);`,
    `createApp(${JSON.stringify(GCS_PROJECT)}, emulator).then((app) => app.listen(Number(port), '127.0.0.1'))`,
    `  .catch((e) => { console.error(e); process.exit(1); });`,
  ].join('\n');
  const keyFile = join(dataDir, 'service-account.json');
  await writeFile(keyFile, JSON.stringify(throwawayServiceAccount()), { mode: 0o600 });
  // The emulator keeps upload staging files under os.tmpdir(); point that into the data directory.
  const server = await spawnServer('gcs-emulator', dataDir, port, ['-e', launcher, String(port)], {
    TMPDIR: join(dataDir, 'tmp'),
  });
  return {
    ...server,
    name: 'gcs-emulator',
    storeUrl: `gs://${BUCKET}`,
    env: {
      STORAGE_EMULATOR_HOST: `http://127.0.0.1:${port}`,
      GOOGLE_APPLICATION_CREDENTIALS: keyFile,
      GOOGLE_CLOUD_PROJECT: GCS_PROJECT,
    },
  };
}

/** A service-account key file that signs locally and can reach no token endpoint but a closed local port. */
function throwawayServiceAccount(): Record<string, string> {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    type: 'service_account',
    project_id: GCS_PROJECT,
    private_key_id: randomUUID().replaceAll('-', ''),
    private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    client_email: `ums-local@${GCS_PROJECT}.iam.gserviceaccount.com`,
    client_id: '100000000000000000000',
    token_uri: 'http://127.0.0.1:9/token',
  };
}

interface RunningServer {
  logFile: string;
  endpoint: string;
  stop(): Promise<void>;
  /** kill -9 of the server's whole process group: what a crash of the store looks like to its clients. */
  crash(): Promise<void>;
  /** Starts it again on the same port and data directory (after crash or stop). */
  restart(): Promise<void>;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

async function spawnServer(
  name: string,
  dataDir: string,
  port: number,
  args: string[],
  extraEnv: Record<string, string> = {},
): Promise<RunningServer> {
  const logFile = join(dataDir, `${name}.log`);
  // Only what a Node program needs, so no cloud credentials of the caller leak into an emulator.
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? dataDir, ...extraEnv };
  let current = await launch(name, logFile, dataDir, port, args, env);
  return {
    logFile,
    endpoint: `http://127.0.0.1:${port}`,
    stop: () => current.stop(),
    crash: () => current.crash(),
    restart: async () => {
      await current.stop();
      current = await launch(name, logFile, dataDir, port, args, env);
    },
  };
}

async function launch(
  name: string,
  logFile: string,
  dataDir: string,
  port: number,
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ stop(): Promise<void>; crash(): Promise<void> }> {
  const log = openSync(logFile, 'a');
  const child = spawn(process.execPath, args, { cwd: dataDir, env, stdio: ['ignore', log, log], detached: true });
  closeSync(log);
  // A forgotten server must not keep a test runner alive; the exit hook below still kills it.
  child.unref();
  running.add(child);
  installExitHook();
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  child.once('exit', () => running.delete(child));
  const isDown = () => child.exitCode !== null || child.signalCode !== null;

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (isDown()) return;
      // Referenced again so that the caller's event loop stays alive until the exit is seen.
      child.ref();
      killGroup(child, 'SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<'timeout'>((done) => {
        timer = setTimeout(() => done('timeout'), STOP_GRACE_MS);
      });
      const outcome = await Promise.race([exited.then(() => 'exited' as const), timeout]);
      clearTimeout(timer);
      if (outcome === 'timeout') {
        killGroup(child, 'SIGKILL');
        await exited;
      }
      // The group may hold children that outlived the leader.
      killGroup(child, 'SIGKILL');
    })();
    return stopping;
  };
  const crash = async (): Promise<void> => {
    if (isDown()) return;
    child.ref();
    killGroup(child, 'SIGKILL');
    await exited;
  };

  try {
    await waitForPort(port, exited, name, logFile);
  } catch (error) {
    await stop();
    throw error;
  }
  return { stop, crash };
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // ESRCH: the group is already gone.
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of running) killGroup(child, 'SIGKILL');
  });
}

async function waitForPort(port: number, exited: Promise<void>, name: string, logFile: string): Promise<void> {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  let gone = false;
  void exited.then(() => {
    gone = true;
  });
  while (Date.now() < deadline) {
    if (gone) throw new Error(`${name} exited during startup; its log (${logFile}) ends with:\n${tail(logFile)}`);
    if (await accepts(port)) return;
    await new Promise((done) => setTimeout(done, 100));
  }
  throw new Error(`${name} did not listen on 127.0.0.1:${port} within ${STARTUP_TIMEOUT_MS} ms; its log ends with:\n${tail(logFile)}`);
}

function accepts(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      done(true);
    });
    socket.once('error', () => done(false));
  });
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-30).join('\n');
  } catch {
    return '(no log)';
  }
}

function requireInstalled(path: string, what: string): void {
  if (!existsSync(path)) {
    throw new Error(`${what} is not installed (${path} is missing); run: npm ci && bash infra/storage-servers-setup.sh`);
  }
}
