import { readFile } from 'node:fs/promises';
import { request, type RequestOptions } from 'node:https';
import { z } from 'zod';
import { parseCheckpointArchiveName } from './checkpoint-archive.js';
import { describe, interpretFailure, KubeletCheckpointError, type ContainerRef } from './kubelet-errors.js';

/**
 * The kubelet's checkpoint API (KEP-2008, feature gate ContainerCheckpoint, beta and on by default since
 * Kubernetes 1.30): what orchestrator level checkpoints through. A thin HTTP layer over one CRI call.
 *
 * What runs for real, and where:
 *   - The CRI path underneath, against a real runtime: agents/cri/ (cri-client.ts, a CRI client written from
 *     the vendored k8s.io/cri-api definition; cri-checkpoint.ts, checkpoint and restore as the kubelet drives
 *     them) against two containerd 2.1.9 nodes on one machine (infra/containerd-host.ts), in
 *     test/integration/cri-containerd.test.ts: a counter checkpointed on one node counts on in a new pod on the
 *     other.
 *   - This HTTP adapter: in production only `probe()` runs (agents/capability-probe.ts: is the API there and
 *     does it let us in). The orchestrator-level driver (agents/orchestrator-level.ts) drives the CRI itself,
 *     from an agent that reaches the runtime's socket (a DaemonSet); `checkpoint()` is for a node where only
 *     the kubelet is reachable, not wired into an agent, and tested only against transcribed kubelet answers (test/integration/kubelet-checkpoint.test.ts): no
 *     kubelet runs here.
 *
 * What the kubelet adds on top of the CRI call: POST /checkpoint/{ns}/{pod}/{ctr} is authenticated and
 * authorised (nodes/checkpoint), the pod and container are looked up by name, and the kubelet calls the
 * runtime's CheckpointContainer(container id, location = /var/lib/kubelet/checkpoints/checkpoint-<pod>_<namespace>-
 * <container>-<RFC3339 time>.tar, timeout) and answers with that location. Everything else, restore included,
 * is the runtime's (cri-checkpoint.ts says how containerd 2.x and CRI-O restore).
 *
 * How the pieces of agents/kubelet/ fit a migration:
 *   1. `KubeletCheckpointClient.checkpoint()` asks the source node's kubelet, which has the runtime dump the
 *      container into that archive ON THE NODE'S DISK. The container keeps running (the API was made for
 *      forensics): the migration must stop the source Pod right after, and whatever the service does in
 *      between is lost (the containerd test measures it: the source logs a tick or two the restored one redoes).
 *   2. The archive is only reachable on that node, so a node-local agent (a DaemonSet with
 *      /var/lib/kubelet/checkpoints mounted read-only) reads it with `openArchive()` (checkpoint-archive.ts)
 *      and streams it on, then removes it (`removeArchive()`: it holds the container's memory).
 *   3. Restore depends on the destination's runtime:
 *      - CRI-O: `buildCheckpointImageArchive()` (checkpoint-image.ts) wraps the archive into the OCI image CRI-O
 *        restores from, loaded into CRI-O's storage or pushed to a registry, and `restorePodManifest()`
 *        (restore-pod.ts) gives the Pod that names it.
 *      - containerd 2.1-2.3: CreateContainer restores when the image is the archive's path on the node, or an
 *        image whose manifest carries org.criu.checkpoint.container.name (CONTAINERD_CHECKPOINT_ANNOTATION in
 *        agents/cri/cri-checkpoint.ts). A Pod can name only the image: `buildCheckpointImageArchive()` with
 *        that annotation added builds one, and `restoreContainer()` restores from either; both verified here
 *        through CRI. containerd 2.3 deprecated restore in CreateContainer and 2.4 removed it (its
 *        RELEASES.md: the replacement is KEP-5823's RestorePod).
 *      containerd before 2.0 answers the checkpoint call with "method CheckpointContainer not implemented".
 */

export type { ContainerRef } from './kubelet-errors.js';

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

export class KubeletCheckpointClient {
  private readonly base: URL;
  private readonly where: string;

  constructor(private readonly options: KubeletCheckpointClientOptions) {
    const base = new URL(options.url);
    if (base.protocol !== 'https:')
      throw new Error(`kubelet URL must be https (the kubelet serves its API over TLS on 10250): ${options.url}`);
    if (base.username !== '' || base.password !== '')
      throw new Error('kubelet URL must not carry credentials; pass a token or a client certificate');
    this.base = base;
    this.where = `kubelet ${options.nodeName ?? base.host}`;
  }

  /**
   * POST /checkpoint/{namespace}/{pod}/{container}[?timeout=seconds]. Resolves with the archive's path on the
   * node; rejects with a KubeletCheckpointError whose code and message say what failed and what to do.
   * Not called in production yet: agents/orchestrator-level.ts drives the CRI directly.
   */
  async checkpoint(ref: ContainerRef, options: { timeoutSeconds?: number } = {}): Promise<KubeletCheckpoint> {
    const parsed = ContainerRefSchema.safeParse(ref);
    if (!parsed.success) {
      throw new KubeletCheckpointError(
        'invalid-request',
        0,
        `invalid container reference: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
      );
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
    } catch (cause) {
      throw new KubeletCheckpointError(
        'bad-response',
        res.status,
        `${this.where} answered 200 without the expected {"items":[path]}: ${res.body.slice(0, 300)}`,
        res.body,
        { cause },
      );
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
        res.once('error', (error) =>
          reject(
            new KubeletCheckpointError('unreachable', 0, `${this.where}: the answer broke off: ${error.message}`, '', { cause: error }),
          ),
        );
      });
      req.setTimeout(timeoutMs, () =>
        req.destroy(
          new KubeletCheckpointError(
            'timeout',
            0,
            `no answer from ${this.where} within ${timeoutMs} ms for ${describe(ref)}. The checkpoint may still finish on the node: ` +
              "an archive may appear in its /var/lib/kubelet/checkpoints and must be removed (it holds the container's memory); " +
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
              '',
              { cause: error },
            ),
          );
        }
        reject(
          new KubeletCheckpointError('unreachable', 0, `cannot reach ${this.where} at ${this.base.origin}: ${error.message}`, '', {
            cause: error,
          }),
        );
      });
      req.end();
    });
  }
}

function checkpointPath(ref: ContainerRef): string {
  return `/checkpoint/${encodeURIComponent(ref.namespace)}/${encodeURIComponent(ref.pod)}/${encodeURIComponent(ref.container)}`;
}

function isTlsError(error: NodeJS.ErrnoException): boolean {
  const code = error.code ?? '';
  return /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL/.test(code);
}

/** Reads a bearer token from a file per call (projected service-account tokens are rotated in place). */
export function tokenFromFile(path: string): () => Promise<string> {
  return async () => (await readFile(path, 'utf8')).trim();
}
