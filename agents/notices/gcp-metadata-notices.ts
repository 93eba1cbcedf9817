import {
  MetadataAnswerError,
  MetadataUnreachableError,
  NoticeWatcher,
  quote,
  type FoundNotice,
  type NoticeWatcherSettings,
  type ReadLoop,
} from './notice-watcher.js';

/**
 * Compute Engine's notices, read from the metadata server as Google documents them:
 *
 *   GET http://metadata.google.internal/computeMetadata/v1/instance/preempted          (header Metadata-Flavor: Google)
 *       TRUE once a Spot or preemptible VM is being preempted, else FALSE
 *       (cloud.google.com/compute/docs/instances/create-use-spot#detect-preemption);
 *   GET .../instance/maintenance-event
 *       NONE, or 60 s before host maintenance MIGRATE_ON_HOST_MAINTENANCE (Google live-migrates the VM, its
 *       memory kept) or TERMINATE_ON_HOST_MAINTENANCE (the VM is stopped)
 *       (cloud.google.com/compute/docs/metadata/getting-live-migration-notice).
 *
 * Both are long-polled (cloud.google.com/compute/docs/metadata/querying-metadata, "wait for change"):
 * `?wait_for_change=true&last_etag=<ETag of the last answer>&timeout_sec=<n>` answers at once if the value
 * has changed since that ETag, else when it changes or the timeout passes. Passing last_etag means no change
 * between two requests is missed. Google gives the 60 s maintenance warning only to a VM that queried
 * maintenance-event since its last maintenance: the watcher's long-poll keeps it asked.
 *
 * Notice periods (the deadline, counted from when the agent first saw the value): 30 s for a preemption
 * (a Spot VM may be given up to 120 s with preemptionNoticeDuration; the shorter is assumed) and 60 s for
 * maintenance (GPU VMs get an hour before TERMINATE; again the shorter is assumed).
 */

export const GCP_METADATA_URL = 'http://metadata.google.internal';
const PREEMPTION_NOTICE_MS = 30_000;
const MAINTENANCE_NOTICE_MS = 60_000;

/** A key, and what its value says: the notices (one at most: its noticeId is the key's name), or undefined if undocumented. */
interface Key {
  path: string;
  interpret(value: string): FoundNotice[] | undefined;
}

const KEYS: readonly Key[] = [
  {
    path: 'instance/preempted',
    interpret: (value) => {
      if (value === 'FALSE') return [];
      if (value !== 'TRUE') return undefined;
      return [{ noticeId: 'preempted', kind: 'preemption', noticePeriodMs: PREEMPTION_NOTICE_MS, summary: 'preempted: TRUE' }];
    },
  },
  {
    path: 'instance/maintenance-event',
    interpret: (value) => {
      if (value === 'NONE') return [];
      if (value === 'MIGRATE_ON_HOST_MAINTENANCE' || value === 'TERMINATE_ON_HOST_MAINTENANCE') {
        return [
          {
            noticeId: 'maintenance-event',
            kind: value === 'MIGRATE_ON_HOST_MAINTENANCE' ? 'maintenance-live-migrate' : 'maintenance-terminate',
            noticePeriodMs: MAINTENANCE_NOTICE_MS,
            summary: `maintenance-event: ${value}`,
          },
        ];
      }
      return undefined;
    },
  },
];

export interface GcpMetadataNoticesSettings extends NoticeWatcherSettings {
  /** How long one long-poll waits for a change before the server answers with the value unchanged. */
  waitSeconds?: number;
}

export class GcpMetadataNotices extends NoticeWatcher {
  readonly cloud = 'gcp';
  private readonly waitSeconds: number;

  constructor(settings: GcpMetadataNoticesSettings) {
    // Between two long-polls only a short pause: it keeps a server that answers at once from being hammered.
    super(settings, 250);
    this.waitSeconds = settings.waitSeconds ?? 60;
  }

  async readInstanceId(signal: AbortSignal): Promise<string> {
    const source = 'gcp metadata instance/id';
    const answer = await this.request(source, '/computeMetadata/v1/instance/id', { headers: { 'Metadata-Flavor': 'Google' }, signal });
    if (answer.status !== 200)
      throw new MetadataUnreachableError(source, `${source} answered HTTP ${answer.status}: ${quote(answer.body)}`);
    if (answer.headers.get('metadata-flavor') !== 'Google')
      throw new MetadataAnswerError(source, 'no "Metadata-Flavor: Google" header in the answer');
    const id = answer.body.trim();
    if (!/^\d{1,20}$/.test(id)) throw new MetadataAnswerError(source, `${quote(id)} is not a numeric instance id`);
    return id;
  }

  protected loops(): ReadLoop[] {
    return KEYS.map((key) => {
      let etag: string | undefined;
      const source = `gcp metadata ${key.path}`;
      return {
        source,
        read: async (signal: AbortSignal) => {
          // The first read answers at once with the value and its ETag; the next ones wait for a change from it.
          const query =
            etag === undefined ? '' : `?wait_for_change=true&last_etag=${encodeURIComponent(etag)}&timeout_sec=${this.waitSeconds}`;
          const answer = await this.request(source, `/computeMetadata/v1/${key.path}${query}`, {
            headers: { 'Metadata-Flavor': 'Google' },
            signal,
            waitMs: etag === undefined ? 0 : this.waitSeconds * 1000,
          });
          if (answer.status !== 200) {
            throw new MetadataUnreachableError(source, `${source} answered HTTP ${answer.status}: ${quote(answer.body)}`);
          }
          // The metadata server marks its answers; one without the mark comes from something else on the way.
          if (answer.headers.get('metadata-flavor') !== 'Google') {
            throw new MetadataAnswerError(source, 'no "Metadata-Flavor: Google" header in the answer');
          }
          const nextEtag = answer.headers.get('etag');
          if (!nextEtag) throw new MetadataAnswerError(source, 'no ETag header (needed to wait for the next change)');
          const value = answer.body.trim();
          const found = key.interpret(value);
          if (found === undefined) throw new MetadataAnswerError(source, `${quote(value)} is not a documented value of ${key.path}`);
          this.report(source, found);
          etag = nextEtag;
        },
      };
    });
  }
}
