import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, open, readFile, realpath, rm } from 'node:fs/promises';
import { request, type RequestOptions } from 'node:https';
import { basename, resolve, sep } from 'node:path';
import { Readable } from 'node:stream';
import { z } from 'zod';

/**
 * The orchestrator-level adapter: checkpoints a container through the kubelet's checkpoint API (KEP-2008,
 * feature gate ContainerCheckpoint, beta and on by default since Kubernetes 1.30) and turns the archive into
 * the OCI "checkpoint image" CRI-O restores from.
 *
 * How it fits a migration:
 *   1. `KubeletCheckpointClient.checkpoint()` asks the source node's kubelet (POST /checkpoint/{ns}/{pod}/{ctr}).
 *      The kubelet has the CRI runtime (CRI-O + CRIU) dump the container into
 *      /var/lib/kubelet/checkpoints/checkpoint-<pod>_<namespace>-<container>-<RFC3339 time>.tar ON THE NODE'S
 *      DISK and answers with that path. The container keeps running (the API was made for forensics): the
 *      migration must stop the source Pod right after, and whatever the service does in between is lost.
 *   2. The archive is only reachable on that node, so a node-local agent (a DaemonSet with
 *      /var/lib/kubelet/checkpoints mounted read-only) reads it with `openArchive()` and streams it on, then
 *      removes it (`removeArchive()`: it holds the container's memory).
 *   3. `buildCheckpointImageArchive()` wraps the archive into an OCI image archive (one layer = the archive's
 *      contents, manifest annotation io.kubernetes.cri-o.annotations.checkpoint.name = the container's name),
 *      streamed; the destination loads it into CRI-O's storage (`podman load`, which shares
 *      /var/lib/containers/storage with CRI-O) or it is pushed to a registry (`skopeo copy oci-archive:...`).
 *   4. `restorePodManifest()` gives the Pod that names the checkpoint image; CRI-O sees the annotation and
 *      restores instead of starting the image's entrypoint.
 *
 * Only CRI-O restores from such an image. containerd answers the checkpoint call with "method
 * CheckpointContainer not implemented" before 2.0 and uses another image format for restore (see
 * docs/migration-approaches.md).
 */

// ---- the kubelet API ----------------------------------------------------------------------------

export interface ContainerRef {
  namespace: string;
  pod: string;
  container: string;
}

const dnsLabel = z.string().regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'a DNS-1123 label (lowercase letters, digits, "-"; at most 63)');
const dnsSubdomain = z
  .string()
  .max(253)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, 'a DNS-1123 subdomain');
export const ContainerRefSchema = z.object({ namespace: dnsLabel, pod: dnsSubdomain, container: dnsLabel });

/** The kubelet's success body: `{"items":["<archive path>"]}` (writeJSONResponse in pkg/kubelet/server/server.go). */
const CheckpointResponse = z.object({ items: z.array(z.string().min(1)).min(1) });

/** The kubelet's own default when no `timeout` is given is the CRI runtime request timeout (2 minutes). */
export const KUBELET_DEFAULT_CHECKPOINT_TIMEOUT_SECONDS = 120;

export interface KubeletCheckpointClientOptions {
  /**
   * https://<node>:10250, or an API server's node proxy (https://<apiserver>/api/v1/nodes/<node>/proxy),
   * which then needs nodes/proxy as well.
   */
  url: string;
  /** Bearer token, or a function read per request (service-account tokens are rotated on disk). */
  token?: string | (() => Promise<string>);
  /** PEM of the CA that signed the kubelet's serving certificate (self-signed unless serverTLSBootstrap). */
  ca?: string | Buffer;
  /** Client certificate and key, the other way the kubelet authenticates (e.g. apiserver-kubelet-client). */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** How this kubelet is named in errors. Default: the URL's host. */
  nodeName?: string;
  /**
   * How long to wait for an answer. Default: the checkpoint timeout plus 15 s, since the kubelet answers only
   * when the runtime is done. The probe uses 10 s.
   */
  requestTimeoutMs?: number;
}

export interface KubeletCheckpoint {
  /** The archive's path on the node's disk (the first of `items`). */
  archivePath: string;
  /** Everything the kubelet listed (one archive today). */
  items: string[];
  /** The time the kubelet put into the archive's name, when it parses. */
  checkpointedAt: string | undefined;
  /** How long the kubelet took to answer. */
  durationMs: number;
}

export type KubeletCheckpointErrorCode =
  | 'unauthorized'
  | 'forbidden'
  | 'feature-disabled'
  | 'pod-not-found'
  | 'container-not-found'
  | 'invalid-request'
  | 'runtime-unsupported'
  | 'runtime-criu-disabled'
  | 'runtime-timeout'
  | 'runtime-failed'
  | 'timeout'
  | 'unreachable'
  | 'tls'
  | 'bad-response';

export class KubeletCheckpointError extends Error {
  constructor(
    readonly code: KubeletCheckpointErrorCode,
    /** HTTP status, 0 when there was no answer. */
    readonly status: number,
    message: string,
    /** The kubelet's own words, when it answered. */
    readonly detail: string = '',
  ) {
    super(message);
    this.name = 'KubeletCheckpointError';
  }
}

/** What RBAC a caller of the checkpoint endpoint needs; quoted in 403 errors and in the docs. */
export const CHECKPOINT_RBAC_RULE = 'apiGroups: [""], resources: ["nodes/checkpoint"], verbs: ["create"]';

export class KubeletCheckpointClient {
  private readonly base: URL;
  private readonly where: string;

  constructor(private readonly options: KubeletCheckpointClientOptions) {
    const base = new URL(options.url);
    if (base.protocol !== 'https:') throw new Error(`kubelet URL must be https (the kubelet serves its API over TLS on 10250): ${options.url}`);
    if (base.username !== '' || base.password !== '') throw new Error('kubelet URL must not carry credentials; pass a token or a client certificate');
    this.base = base;
    this.where = `kubelet ${options.nodeName ?? base.host}`;
  }

  /**
   * POST /checkpoint/{namespace}/{pod}/{container}[?timeout=seconds]. Resolves with the archive's path on the
   * node; rejects with a KubeletCheckpointError whose code and message say what failed and what to do.
   */
  async checkpoint(ref: ContainerRef, options: { timeoutSeconds?: number } = {}): Promise<KubeletCheckpoint> {
    const parsed = ContainerRefSchema.safeParse(ref);
    if (!parsed.success) {
      throw new KubeletCheckpointError('invalid-request', 0, `invalid container reference: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    }
    const timeoutSeconds = options.timeoutSeconds;
    if (timeoutSeconds !== undefined && (!Number.isInteger(timeoutSeconds) || timeoutSeconds <= 0)) {
      throw new KubeletCheckpointError('invalid-request', 0, `timeoutSeconds must be a positive integer, got ${timeoutSeconds}`);
    }
    const query = timeoutSeconds !== undefined ? `?timeout=${timeoutSeconds}` : '';
    const requestTimeoutMs = this.options.requestTimeoutMs ?? ((timeoutSeconds ?? KUBELET_DEFAULT_CHECKPOINT_TIMEOUT_SECONDS) + 15) * 1000;
    const started = Date.now();
    const res = await this.post(checkpointPath(ref) + query, requestTimeoutMs, ref);
    const durationMs = Date.now() - started;
    if (res.status !== 200) throw interpretFailure(res.status, res.body, ref, this.where);
    let items: string[];
    try {
      items = CheckpointResponse.parse(JSON.parse(res.body)).items;
    } catch {
      throw new KubeletCheckpointError('bad-response', res.status, `${this.where} answered 200 without the expected {"items":[path]}: ${res.body.slice(0, 300)}`, res.body);
    }
    const archivePath = items[0] as string;
    return { archivePath, items, checkpointedAt: parseCheckpointArchiveName(archivePath)?.checkpointedAt, durationMs };
  }

  /**
   * Whether the checkpoint API is there and lets us in, without checkpointing anything: a POST for a pod that
   * cannot exist is answered 404 "pod does not exist" only after authentication and authorisation passed and
   * only when the feature gate registered the route ("404 page not found" otherwise). It cannot tell whether
   * the runtime supports checkpointing: that shows on the first real checkpoint (a 500).
   */
  async probe(): Promise<{ available: true } | { available: false; error: KubeletCheckpointError }> {
    const ref = { namespace: 'ums-probe', pod: 'ums-capability-probe-nonexistent', container: 'probe' };
    try {
      const res = await this.post(checkpointPath(ref), this.options.requestTimeoutMs ?? 10_000, ref);
      const error = interpretFailure(res.status, res.body, ref, this.where);
      if (error.code === 'pod-not-found') return { available: true };
      return { available: false, error };
    } catch (error) {
      if (error instanceof KubeletCheckpointError) return { available: false, error };
      throw error;
    }
  }

  private async post(path: string, timeoutMs: number, ref: ContainerRef): Promise<{ status: number; body: string }> {
    const token = typeof this.options.token === 'function' ? await this.options.token() : this.options.token;
    const basePath = this.base.pathname.replace(/\/+$/, '');
    const requestOptions: RequestOptions = {
      method: 'POST',
      host: this.base.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: this.base.port === '' ? 443 : Number(this.base.port),
      path: `${basePath}${path}`,
      headers: { Accept: 'application/json', ...(token !== undefined && token !== '' ? { Authorization: `Bearer ${token.trim()}` } : {}) },
      ...(this.options.ca !== undefined ? { ca: this.options.ca } : {}),
      ...(this.options.cert !== undefined ? { cert: this.options.cert } : {}),
      ...(this.options.key !== undefined ? { key: this.options.key } : {}),
      // A migration runs many calls to one node; a fresh connection each keeps a dead one from lingering.
      agent: false,
    };
    return new Promise((resolvePromise, reject) => {
      const req = request(requestOptions, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          // The kubelet's answers are a path or a sentence; anything bigger is not the kubelet.
          if (size <= 1024 * 1024) chunks.push(chunk);
        });
        res.once('end', () => resolvePromise({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.once('error', (error) => reject(new KubeletCheckpointError('unreachable', 0, `${this.where}: the answer broke off: ${error.message}`)));
      });
      req.setTimeout(timeoutMs, () =>
        req.destroy(
          new KubeletCheckpointError(
            'timeout',
            0,
            `no answer from ${this.where} within ${timeoutMs} ms for ${describe(ref)}. The checkpoint may still finish on the node: ` +
              'an archive may appear in its /var/lib/kubelet/checkpoints and must be removed (it holds the container\'s memory); ' +
              'for a container with much memory, pass a larger timeoutSeconds',
          ),
        ),
      );
      req.once('error', (error: NodeJS.ErrnoException) => {
        if (error instanceof KubeletCheckpointError) return reject(error);
        if (isTlsError(error)) {
          return reject(
            new KubeletCheckpointError(
              'tls',
              0,
              `cannot verify ${this.where}'s certificate (${error.code ?? error.message}): pass the CA that signed the kubelet's serving ` +
                'certificate (UMS_KUBELET_CA_FILE); kubelets sign their own unless serverTLSBootstrap is on, and the name in the URL must be in the certificate',
            ),
          );
        }
        reject(new KubeletCheckpointError('unreachable', 0, `cannot reach ${this.where} at ${this.base.origin}: ${error.message}`));
      });
      req.end();
    });
  }
}

function checkpointPath(ref: ContainerRef): string {
  return `/checkpoint/${encodeURIComponent(ref.namespace)}/${encodeURIComponent(ref.pod)}/${encodeURIComponent(ref.container)}`;
}

function describe(ref: ContainerRef): string {
  return `${ref.namespace}/${ref.pod}/${ref.container}`;
}

function isTlsError(error: NodeJS.ErrnoException): boolean {
  const code = error.code ?? '';
  return /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL/.test(code);
}

/**
 * Maps a kubelet failure to a code and a sentence. The bodies are the kubelet's plain-text errors
 * (pkg/kubelet/server/server.go: the auth filter, the checkpoint handler, Go's mux for an unregistered route)
 * and, for 500, the CRI runtime's gRPC error wrapped as "checkpointing of ns/pod/ctr failed (...)".
 */
export function interpretFailure(status: number, rawBody: string, ref: ContainerRef, where: string): KubeletCheckpointError {
  const body = rawBody.trim();
  const what = describe(ref);
  switch (status) {
    case 401:
      return new KubeletCheckpointError(
        'unauthorized',
        status,
        `${where} did not accept our credentials for ${what} (401 ${body || 'Unauthorized'}): the token is missing, expired or unknown ` +
          'to the cluster, or the kubelet does not delegate authentication (it needs --authentication-token-webhook for bearer tokens)',
        body,
      );
    case 403: {
      const user = /user=([^,)]+)/.exec(body)?.[1];
      return new KubeletCheckpointError(
        'forbidden',
        status,
        `${where} refused ${what} (403 ${body}): ${user !== undefined ? `bind "${user}"` : 'bind the caller'} to a ClusterRole with ` +
          `${CHECKPOINT_RBAC_RULE} (the kubelet asks the API server for verb create on nodes/checkpoint)`,
        body,
      );
    }
    case 404:
      if (body === '404 page not found') {
        return new KubeletCheckpointError(
          'feature-disabled',
          status,
          `${where} has no checkpoint API (404 page not found): the ContainerCheckpoint feature gate is off on this kubelet ` +
            '(beta and on by default since Kubernetes 1.30; before that, --feature-gates=ContainerCheckpoint=true)',
          body,
        );
      }
      if (/^pod .*does not exist/.test(body)) {
        return new KubeletCheckpointError('pod-not-found', status, `${where} runs no pod ${ref.namespace}/${ref.pod} (${body}): is it scheduled on this node?`, body);
      }
      if (/^container .* does not exist/.test(body)) {
        return new KubeletCheckpointError('container-not-found', status, `pod ${ref.namespace}/${ref.pod} on ${where} has no container "${ref.container}" (${body})`, body);
      }
      if (/cannot parse value of timeout parameter/.test(body)) {
        return new KubeletCheckpointError('invalid-request', status, `${where} refused the timeout parameter (${body})`, body);
      }
      return new KubeletCheckpointError(
        'feature-disabled',
        status,
        `${where} answered 404 for ${what} with an unknown body (${body.slice(0, 300)}): either the ContainerCheckpoint feature gate is off or the pod is not there`,
        body,
      );
    case 500:
      if (/checkpoint\/restore support not available/.test(body)) {
        return new KubeletCheckpointError(
          'runtime-criu-disabled',
          status,
          `the container runtime on ${where} has checkpoint/restore switched off (${body}): CRI-O needs enable_criu_support = true ` +
            '(crio.conf [crio.runtime]; the default since CRI-O 1.30) and a criu binary on its PATH at start',
          body,
        );
      }
      if (/(unknown method CheckpointContainer|method CheckpointContainer not implemented|code = Unimplemented)/.test(body)) {
        return new KubeletCheckpointError(
          'runtime-unsupported',
          status,
          `the container runtime on ${where} does not implement CheckpointContainer (${body}): orchestrator level needs CRI-O ` +
            '(containerd before 2.0 has no CRI checkpoint); use container level on this node',
          body,
        );
      }
      if (/(DeadlineExceeded|context deadline exceeded)/.test(body)) {
        return new KubeletCheckpointError('runtime-timeout', status, `the runtime on ${where} did not finish the checkpoint of ${what} in time (${body}): pass a larger timeoutSeconds`, body);
      }
      if (/^Authorization error/.test(body)) {
        return new KubeletCheckpointError('forbidden', status, `${where} could not ask the API server whether we may checkpoint (${body}): check the kubelet's authorization webhook`, body);
      }
      return new KubeletCheckpointError('runtime-failed', status, `the runtime on ${where} failed to checkpoint ${what}: ${body || 'no detail'}; the CRIU log is in the runtime's container directory on the node`, body);
    default:
      return new KubeletCheckpointError('bad-response', status, `${where} answered HTTP ${status} for ${what}: ${body.slice(0, 300) || 'no detail'}`, body);
  }
}

// ---- the archive on the node --------------------------------------------------------------------

/** The kubelet's default checkpoint directory: <--root-dir>/checkpoints. */
export const KUBELET_CHECKPOINT_DIR = '/var/lib/kubelet/checkpoints';

/**
 * Splits checkpoint-<pod>_<namespace>-<container>-<RFC3339>.tar. The pod full name is "<pod>_<namespace>";
 * namespace and container may contain "-", so only the pod ref passed in (or the time) anchors it: this
 * returns the time and the "<pod>_<namespace>-<container>" part as is.
 */
export function parseCheckpointArchiveName(path: string): { podAndContainer: string; checkpointedAt: string } | undefined {
  const match = /^checkpoint-(.+)-(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2}))\.tar$/.exec(basename(path));
  if (match === null) return undefined;
  const [, podAndContainer, time] = match as unknown as [string, string, string];
  return Number.isNaN(Date.parse(time)) ? undefined : { podAndContainer, checkpointedAt: time };
}

export interface OpenedArchive {
  path: string;
  sizeBytes: number;
  stream: Readable;
}

/**
 * Opens a checkpoint archive the kubelet reported, for a node-local agent (DaemonSet with the checkpoint
 * directory mounted read-only) to stream on. Refuses anything that is not a regular file inside `root`
 * (default /var/lib/kubelet/checkpoints): the path comes over the network, and the archive holds memory.
 */
export async function openArchive(path: string, options: { root?: string } = {}): Promise<OpenedArchive> {
  const resolvedPath = await insideRoot(path, options.root ?? KUBELET_CHECKPOINT_DIR);
  const info = await lstat(resolvedPath);
  if (!info.isFile()) throw new Error(`checkpoint archive ${path} is not a regular file`);
  return { path: resolvedPath, sizeBytes: info.size, stream: createReadStream(resolvedPath, { highWaterMark: 1024 * 1024 }) };
}

/** Deletes an archive once it is safely elsewhere: the kubelet never removes them, and they hold memory. */
export async function removeArchive(path: string, options: { root?: string } = {}): Promise<void> {
  const resolvedPath = await insideRoot(path, options.root ?? KUBELET_CHECKPOINT_DIR).catch((error: unknown) => {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  });
  if (resolvedPath !== undefined) await rm(resolvedPath, { force: true });
}

async function insideRoot(path: string, root: string): Promise<string> {
  const realRoot = await realpath(root);
  const candidate = resolve(realRoot, path);
  const real = await realpath(candidate);
  if (!real.startsWith(realRoot + sep)) throw new Error(`refusing ${path}: checkpoint archives are read only from ${root}`);
  return real;
}

// ---- the checkpoint image (restore through CRI-O) -----------------------------------------------

/** CRI-O restores instead of starting when the image's manifest carries this annotation (value: container name). */
export const CRIO_CHECKPOINT_ANNOTATION = 'io.kubernetes.cri-o.annotations.checkpoint.name';

export interface CheckpointImageOptions {
  /** The kubelet's archive: a path, or a stream of it (then sizeBytes and sha256 are required). */
  archive: string | Readable;
  /** The archive's size; read from the file when a path is given. */
  sizeBytes?: number;
  /** The archive's sha256 (hex). With a path and without it, the file is read twice (hash, then stream). */
  sha256?: string;
  /** The checkpointed container's name: the annotation's value. */
  containerName: string;
  /** Reference name the image gets when loaded, e.g. localhost/ums/checkpoint-web:<migrationId>. */
  imageName?: string;
  /** More manifest annotations, e.g. io.kubernetes.cri-o.annotations.checkpoint.rootfsImageName. */
  annotations?: Record<string, string>;
  /** Default: now. */
  created?: Date;
  /** Default: this machine's (amd64, arm64, ...). Must match the nodes': CRIU restores only there. */
  architecture?: string;
}

export interface CheckpointImageArchive {
  /** An OCI image layout as a tar (what `podman load`, `skopeo copy oci-archive:` read). */
  stream: Readable;
  /** sha256:<hex> of the image manifest: the image's digest. */
  manifestDigest: string;
  /** sha256:<hex> of the image config: the image id once loaded. */
  configDigest: string;
  layerDigest: string;
  annotations: Record<string, string>;
}

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const OCI_LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';

/**
 * Builds the checkpoint image as an OCI image layout tar, the same image `buildah from scratch; buildah add
 * $c <archive> /; buildah config --annotation=io.kubernetes.cri-o.annotations.checkpoint.name=<ctr> $c;
 * buildah commit $c` produces, without buildah or storage: one uncompressed layer whose contents are the
 * archive's entries (an uncompressed tar is a valid layer as it stands, so the archive IS the layer blob), a
 * config naming it, and a manifest with the annotation (CRI-O reads the manifest's annotations; the index
 * entry carries them too, which is where containerd looks).
 *
 * Streamed: the archive passes through once (twice when its digest must be computed first), never held in
 * memory. Its sha256 and size are checked as it passes; a mismatch errors the stream (nothing valid comes
 * out). Refuses a gzip-compressed archive (Podman's default export): CRI-O's archives are plain tar.
 */
export async function buildCheckpointImageArchive(options: CheckpointImageOptions): Promise<CheckpointImageArchive> {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(options.containerName)) throw new Error(`invalid container name for the checkpoint annotation: "${options.containerName}"`);
  let sizeBytes = options.sizeBytes;
  let sha256 = options.sha256?.toLowerCase();
  if (sha256 !== undefined && !/^[a-f0-9]{64}$/.test(sha256)) throw new Error('sha256 must be 64 hex digits');
  if (typeof options.archive === 'string') {
    const path = options.archive;
    const info = await lstat(path);
    if (!info.isFile()) throw new Error(`checkpoint archive ${path} is not a regular file`);
    if (sizeBytes !== undefined && sizeBytes !== info.size) throw new Error(`checkpoint archive ${path} has ${info.size} bytes, not the ${sizeBytes} announced`);
    sizeBytes = info.size;
    await checkTarStart(path);
    sha256 ??= await sha256OfFile(path);
  } else if (sizeBytes === undefined || sha256 === undefined) {
    throw new Error('a streamed checkpoint archive needs its sizeBytes and sha256 up front (the image names its layer by digest before the layer)');
  }

  const created = (options.created ?? new Date()).toISOString();
  const layerDigest = `sha256:${sha256}`;
  const annotations: Record<string, string> = { ...options.annotations, [CRIO_CHECKPOINT_ANNOTATION]: options.containerName };
  const config = jsonBlob({
    created,
    architecture: options.architecture ?? ociArchitecture(process.arch),
    os: 'linux',
    config: {},
    rootfs: { type: 'layers', diff_ids: [layerDigest] },
    history: [{ created, created_by: `ums: kubelet checkpoint of container ${options.containerName}` }],
  });
  const manifest = jsonBlob({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: config.digest, size: config.bytes.length },
    layers: [{ mediaType: OCI_LAYER_TAR, digest: layerDigest, size: sizeBytes }],
    annotations,
  });
  const index = jsonBlob({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [
      {
        mediaType: OCI_MANIFEST,
        digest: manifest.digest,
        size: manifest.bytes.length,
        annotations: { ...annotations, ...(options.imageName !== undefined ? { 'org.opencontainers.image.ref.name': options.imageName } : {}) },
      },
    ],
  });

  const mtime = Math.floor(Date.parse(created) / 1000);
  const archive = options.archive;
  const expectedSize = sizeBytes;
  const expectedSha = sha256;
  async function* entries(): AsyncGenerator<Buffer> {
    const layout = Buffer.from('{"imageLayoutVersion":"1.0.0"}');
    yield tarHeader('oci-layout', layout.length, 'file', mtime);
    yield* fileBody(layout);
    yield tarHeader('blobs/', 0, 'directory', mtime);
    yield tarHeader('blobs/sha256/', 0, 'directory', mtime);
    yield tarHeader(`blobs/sha256/${expectedSha}`, expectedSize, 'file', mtime);
    const source = typeof archive === 'string' ? createReadStream(archive, { highWaterMark: 1024 * 1024 }) : archive;
    const hash = createHash('sha256');
    const check = new TarStartCheck();
    let seen = 0;
    for await (const chunk of source as AsyncIterable<Buffer>) {
      check.feed(chunk);
      seen += chunk.length;
      if (seen > expectedSize) throw new Error(`checkpoint archive is longer than the ${expectedSize} bytes announced`);
      hash.update(chunk);
      yield chunk;
    }
    check.end();
    if (seen !== expectedSize) throw new Error(`checkpoint archive ended after ${seen} of ${expectedSize} bytes`);
    const actual = hash.digest('hex');
    if (actual !== expectedSha) throw new Error(`checkpoint archive changed or is corrupt: sha256 ${actual}, expected ${expectedSha}`);
    yield padding(expectedSize);
    for (const blob of [config, manifest]) {
      yield tarHeader(`blobs/sha256/${blob.digest.slice('sha256:'.length)}`, blob.bytes.length, 'file', mtime);
      yield* fileBody(blob.bytes);
    }
    yield tarHeader('index.json', index.bytes.length, 'file', mtime);
    yield* fileBody(index.bytes);
    yield Buffer.alloc(1024); // end of archive: two zero blocks
  }
  return {
    stream: Readable.from(entries(), { objectMode: false }),
    manifestDigest: manifest.digest,
    configDigest: config.digest,
    layerDigest,
    annotations,
  };
}

export interface RestorePodOptions {
  podName: string;
  namespace?: string;
  /** The checkpointed container's name (the annotation's value); the Pod's container keeps it. */
  containerName: string;
  /** The checkpoint image's reference, as loaded on the node or pushed to a registry. */
  image: string;
  /** Pin the Pod to the destination node (CRI-O with CRIU there); else the scheduler picks one. */
  nodeName?: string;
  labels?: Record<string, string>;
  /** IfNotPresent for an image loaded into the node's storage; Always for one pushed to a registry. */
  imagePullPolicy?: 'IfNotPresent' | 'Never' | 'Always';
}

export interface RestorePodManifest {
  apiVersion: 'v1';
  kind: 'Pod';
  metadata: { name: string; namespace: string; labels?: Record<string, string> };
  spec: {
    nodeName?: string;
    restartPolicy: 'Never';
    containers: Array<{ name: string; image: string; imagePullPolicy: string }>;
  };
}

/**
 * The Pod that restores the checkpoint (kubectl apply -f accepts this JSON). CRI-O takes the command,
 * environment and root-filesystem changes from the archive (config.dump, spec.dump, rootfs-diff.tar), so the
 * container needs only its name and the checkpoint image. restartPolicy Never: a restored process that dies
 * must not be restarted from the image's entrypoint as if nothing had been restored.
 */
export function restorePodManifest(options: RestorePodOptions): RestorePodManifest {
  ContainerRefSchema.parse({ namespace: options.namespace ?? 'default', pod: options.podName, container: options.containerName });
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: options.podName, namespace: options.namespace ?? 'default', ...(options.labels !== undefined ? { labels: options.labels } : {}) },
    spec: {
      ...(options.nodeName !== undefined ? { nodeName: options.nodeName } : {}),
      restartPolicy: 'Never',
      containers: [{ name: options.containerName, image: options.image, imagePullPolicy: options.imagePullPolicy ?? 'IfNotPresent' }],
    },
  };
}

// ---- small helpers: a ustar writer and digests ---------------------------------------------------

function jsonBlob(value: unknown): { bytes: Buffer; digest: string } {
  const bytes = Buffer.from(JSON.stringify(value));
  return { bytes, digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}` };
}

function* fileBody(bytes: Buffer): Generator<Buffer> {
  yield bytes;
  const pad = padding(bytes.length);
  if (pad.length > 0) yield pad;
}

function padding(size: number): Buffer {
  const rest = size % 512;
  return Buffer.alloc(rest === 0 ? 0 : 512 - rest);
}

/** One POSIX ustar header. Sizes past 8 GiB - 1 use the base-256 form GNU tar and Go's archive/tar read. */
function tarHeader(name: string, size: number, type: 'file' | 'directory', mtime: number): Buffer {
  const header = Buffer.alloc(512);
  const bytes = Buffer.from(name, 'utf8');
  if (bytes.length > 100) throw new Error(`tar entry name too long: ${name}`);
  bytes.copy(header, 0);
  const isDir = type === 'directory';
  const length = size;
  writeOctal(header, 100, 8, isDir ? 0o755 : 0o644);
  writeOctal(header, 108, 8, 0);
  writeOctal(header, 116, 8, 0);
  if (length < 0o77777777777) {
    writeOctal(header, 124, 12, length);
  } else {
    header[124] = 0x80;
    let rest = BigInt(length);
    for (let i = 135; i > 124; i--) {
      header[i] = Number(rest & 0xffn);
      rest >>= 8n;
    }
  }
  writeOctal(header, 136, 12, mtime);
  header.fill(0x20, 148, 156);
  header[156] = isDir ? 0x35 : 0x30;
  header.write('ustar\u000000', 257, 'latin1');
  header.write('root', 265, 'latin1');
  header.write('root', 297, 'latin1');
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 'latin1');
  return header;
}

function writeOctal(header: Buffer, offset: number, length: number, value: number): void {
  header.write(`${value.toString(8).padStart(length - 1, '0')}\u0000`, offset, 'latin1');
}

/** Refuses what is not a plain tar as it passes (gzip is the usual mistake: Podman exports gzip by default). */
class TarStartCheck {
  private head: Buffer = Buffer.alloc(0);
  private done = false;

  feed(chunk: Buffer): void {
    if (this.done) return;
    this.head = Buffer.concat([this.head, chunk.subarray(0, 512 - this.head.length)]);
    if (this.head.length >= 2 && this.head[0] === 0x1f && this.head[1] === 0x8b) {
      throw new Error('checkpoint archive is gzip-compressed; CRI-O restores from a plain tar layer: decompress it first');
    }
    if (this.head.length >= 512) {
      this.done = true;
      if (this.head.toString('latin1', 257, 262) !== 'ustar') throw new Error('checkpoint archive is not a tar (no ustar magic in its first header)');
    }
  }

  end(): void {
    if (!this.done) throw new Error('checkpoint archive is shorter than one tar header');
  }
}

async function checkTarStart(path: string): Promise<void> {
  const file = await open(path, 'r');
  try {
    const head = Buffer.alloc(512);
    const { bytesRead } = await file.read(head, 0, 512, 0);
    const check = new TarStartCheck();
    check.feed(head.subarray(0, bytesRead));
    check.end();
  } finally {
    await file.close();
  }
}

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function ociArchitecture(arch: string): string {
  switch (arch) {
    case 'x64':
      return 'amd64';
    case 'ia32':
      return '386';
    case 'ppc64':
      return 'ppc64le'; // Node calls Linux's little-endian POWER ppc64
    default:
      return arch; // arm64, arm, s390x, riscv64 are OCI's names too
  }
}

/** Reads a bearer token from a file per call (projected service-account tokens are rotated in place). */
export function tokenFromFile(path: string): () => Promise<string> {
  return async () => (await readFile(path, 'utf8')).trim();
}
