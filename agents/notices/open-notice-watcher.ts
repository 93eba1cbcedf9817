import type { NoticeCloud } from '../../core/host-notice.js';
import type { Logger } from '../../core/log.js';
import { AwsInstanceNotices, AWS_METADATA_URL } from './aws-instance-notices.js';
import { AzureScheduledEvents, AZURE_METADATA_URL } from './azure-scheduled-events.js';
import { GcpMetadataNotices, GCP_METADATA_URL } from './gcp-metadata-notices.js';
import type { NoticeWatcher } from './notice-watcher.js';

export interface NoticeWatcherConfig {
  cloud: NoticeCloud;
  /** The metadata service; by default the cloud's own (UMS_METADATA_URL points it at a local server). */
  metadataUrl?: string;
  /** Azure: this VM's name in Scheduled Events' Resources, if not to be read from the instance metadata. */
  azureVmName?: string;
  log: Logger;
}

/** The watcher of this host's cloud, reading the cloud's own metadata endpoint unless told another. */
export function openNoticeWatcher(config: NoticeWatcherConfig): NoticeWatcher {
  const log = config.log.child({ component: 'notices' });
  switch (config.cloud) {
    case 'azure':
      return new AzureScheduledEvents({
        baseUrl: config.metadataUrl ?? AZURE_METADATA_URL,
        log,
        ...(config.azureVmName === undefined ? {} : { vmName: config.azureVmName }),
      });
    case 'gcp':
      return new GcpMetadataNotices({ baseUrl: config.metadataUrl ?? GCP_METADATA_URL, log });
    case 'aws':
      return new AwsInstanceNotices({ baseUrl: config.metadataUrl ?? AWS_METADATA_URL, log });
  }
}
