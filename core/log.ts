import { pino, destination, stdTimeFunctions, type Logger } from 'pino';

export type { Logger };

/**
 * Structured JSON logs on stderr (stdout stays free for CLI output). Level from UMS_LOG_LEVEL.
 * Redaction is a second line of defence: secrets must not be passed to the logger in the first place.
 */
export function createLogger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return pino(
    {
      name: component,
      level: process.env.UMS_LOG_LEVEL ?? 'info',
      base: { component, ...bindings },
      timestamp: stdTimeFunctions.isoTime,
      redact: {
        paths: ['*.url', '*.signedUrl', '*.sas', '*.connectionString', '*.secretAccessKey', '*.accountKey', 'url', 'signedUrl'],
        censor: '[redacted]',
      },
    },
    destination(2),
  );
}
