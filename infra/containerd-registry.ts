import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger } from '../core/log.js';

/*
 * The registry a simulated containerd host's base images "come from": a read-only subset of the OCI
 * distribution API (GET/HEAD of /v2/, manifests by digest, blobs) that serves what is already in that
 * host's own content store.
 *
 * Why it exists: containerd 2.1's CRI restore (CRImportCheckpoint in internal/cri/server/
 * container_checkpoint_linux.go) pulls the checkpoint's base image by the NAME@DIGEST recorded in the archive
 * (config.dump's rootfsImageRef) with a plain client.Pull, which always resolves the reference at the
 * registry, even when every blob is already local. No registry is reachable here, and the test images are
 * named localhost/ums/...: containerd's default resolver speaks plain HTTP to "localhost" (port 80), so this
 * server, listening on port 80 inside the host's own network namespace, is that registry. The pull then finds
 * every blob present and fetches nothing but the manifest's HEAD. A real node pulls from the real registry.
 *
 * Run as `node containerd-registry.js <content dir>` inside the host's network namespace (containerd-host.ts).
 */

const log = createLogger('containerd-registry');

const DIGEST = /^sha256:([a-f0-9]{64})$/;
const ROUTE = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/;
const DEFAULT_MANIFEST_TYPE = 'application/vnd.oci.image.manifest.v1+json';

/** Serves `contentDir` (containerd's <root>/io.containerd.content.v1.content) on port `port` of `host`. */
export async function serveContentStore(contentDir: string, port: number, host = '::'): Promise<Server> {
  const server = createServer((req, res) => {
    handle(contentDir, req, res).catch((error: Error) => {
      log.warn({ url: req.url, err: error.message }, 'registry request failed');
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  // '::' takes 127.0.0.1 and ::1 both: Go's resolver tries either for "localhost".
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen({ port, host, ipv6Only: false }, () => resolveListen());
  });
  return server;
}

async function handle(contentDir: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://localhost');
  const head = req.method === 'HEAD';
  res.setHeader('Docker-Distribution-API-Version', 'registry/2.0');
  if (req.method !== 'GET' && !head) return error(res, 405, 'UNSUPPORTED', 'this registry is read-only');
  if (url.pathname === '/v2/' || url.pathname === '/v2') return void res.writeHead(200, { 'Content-Type': 'application/json' }).end('{}');
  const route = ROUTE.exec(url.pathname);
  if (route === null) return error(res, 404, 'NAME_UNKNOWN', 'unknown route');
  const [, name, kind, reference] = route as unknown as [string, string, string, string];
  const digest = DIGEST.exec(decodeURIComponent(reference));
  // Only digests: the content store knows no tags, and a restore asks by digest.
  if (digest === null) return error(res, 404, kind === 'manifests' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN', 'only digests are served');
  const path = join(contentDir, 'blobs', 'sha256', digest[1] as string);
  const info = await stat(path).catch(() => undefined);
  if (info === undefined) return error(res, 404, kind === 'manifests' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN', `${digest[0]} is not here`);
  let contentType = 'application/octet-stream';
  if (kind === 'manifests') {
    const parsed: unknown = JSON.parse(await readFile(path, 'utf8'));
    const mediaType = typeof parsed === 'object' && parsed !== null && 'mediaType' in parsed ? parsed.mediaType : undefined;
    contentType = typeof mediaType === 'string' ? mediaType : DEFAULT_MANIFEST_TYPE;
  }
  log.debug({ method: req.method, name, kind, digest: digest[0] }, 'served');
  res.writeHead(200, { 'Content-Type': contentType, 'Content-Length': info.size, 'Docker-Content-Digest': digest[0] });
  if (head) return void res.end();
  createReadStream(path).pipe(res);
}

function error(res: ServerResponse, status: number, code: string, message: string): void {
  res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify({ errors: [{ code, message }] }));
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const contentDir = process.argv[2];
  if (contentDir === undefined) throw new Error('usage: containerd-registry.js <content dir> [port]');
  const port = Number(process.argv[3] ?? '80');
  serveContentStore(resolve(contentDir), port).then(
    () => log.info({ contentDir, port }, 'base-image registry listening'),
    (error: Error) => {
      log.error({ contentDir, port, err: error.message }, 'base-image registry cannot listen');
      process.exit(1);
    },
  );
}
