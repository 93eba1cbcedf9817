import { ContainerRefSchema } from './kubelet-client.js';

/**
 * The Pod that restores a checkpoint image on a CRI-O node.
 *
 * NOT USED IN PRODUCTION YET: the orchestrator-level driver (agents/orchestrator-level.ts) speaks the CRI to
 * the node's runtime; this is for a node where only the kubelet's API is reachable, and is exercised only by
 * test/integration/kubelet-checkpoint.test.ts.
 */

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
    metadata: {
      name: options.podName,
      namespace: options.namespace ?? 'default',
      ...(options.labels !== undefined ? { labels: options.labels } : {}),
    },
    spec: {
      ...(options.nodeName !== undefined ? { nodeName: options.nodeName } : {}),
      restartPolicy: 'Never',
      containers: [{ name: options.containerName, image: options.image, imagePullPolicy: options.imagePullPolicy ?? 'IfNotPresent' }],
    },
  };
}
