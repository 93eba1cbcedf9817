/**
 * How the kubelet's checkpoint API fails, as codes and sentences that say what to do: its plain-text
 * errors (pkg/kubelet/server/server.go: the auth filter, the checkpoint handler, Go's mux for an
 * unregistered route) and, for 500, the CRI runtime's gRPC error.
 */

export interface ContainerRef {
  namespace: string;
  pod: string;
  container: string;
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
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'KubeletCheckpointError';
  }
}

/** What RBAC a caller of the checkpoint endpoint needs; quoted in 403 errors and in the docs. */
export const CHECKPOINT_RBAC_RULE = 'apiGroups: [""], resources: ["nodes/checkpoint"], verbs: ["create"]';

export function describe(ref: ContainerRef): string {
  return `${ref.namespace}/${ref.pod}/${ref.container}`;
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
        return new KubeletCheckpointError(
          'pod-not-found',
          status,
          `${where} runs no pod ${ref.namespace}/${ref.pod} (${body}): is it scheduled on this node?`,
          body,
        );
      }
      if (/^container .* does not exist/.test(body)) {
        return new KubeletCheckpointError(
          'container-not-found',
          status,
          `pod ${ref.namespace}/${ref.pod} on ${where} has no container "${ref.container}" (${body})`,
          body,
        );
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
        return new KubeletCheckpointError(
          'runtime-timeout',
          status,
          `the runtime on ${where} did not finish the checkpoint of ${what} in time (${body}): pass a larger timeoutSeconds`,
          body,
        );
      }
      if (/^Authorization error/.test(body)) {
        return new KubeletCheckpointError(
          'forbidden',
          status,
          `${where} could not ask the API server whether we may checkpoint (${body}): check the kubelet's authorization webhook`,
          body,
        );
      }
      return new KubeletCheckpointError(
        'runtime-failed',
        status,
        `the runtime on ${where} failed to checkpoint ${what}: ${body || 'no detail'}; the CRIU log is in the runtime's container directory on the node`,
        body,
      );
    default:
      return new KubeletCheckpointError(
        'bad-response',
        status,
        `${where} answered HTTP ${status} for ${what}: ${body.slice(0, 300) || 'no detail'}`,
        body,
      );
  }
}
