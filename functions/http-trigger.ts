import type { HttpFunction, Request, Response } from '@google-cloud/functions-framework';
import { AUTH_HEADER, FunctionAuthConfigError, functionAuthKey, functionAuthMode, verifyDelivery } from '../core/function-auth.js';
import { createLogger } from '../core/log.js';

const log = createLogger('function-http');

/**
 * A CloudEvent function behind the request check (core/function-auth.ts), as an HTTP function of the
 * functions-framework: its cloudevent signature hands the handler the event only, never the request's
 * headers, so the token could not be checked there. This does what the framework's cloudevent wrapper
 * does (structured or binary content mode; 2xx once the handler resolved, 500 if it threw, so that the
 * caller delivers again), after refusing with 401/403 any request without a valid token from the bridge.
 * A refused request reaches no handler and changes nothing.
 */
export function authenticatedCloudEvent(functionName: string, handle: (incoming: Record<string, unknown>) => Promise<void>): HttpFunction {
  return async (req: Request, res: Response): Promise<void> => {
    const incoming = readCloudEvent(req);
    if (incoming === undefined) {
      res.status(400).send('expected a CloudEvent (structured or binary content mode)');
      return;
    }
    let mode;
    try {
      mode = functionAuthMode();
      if (mode === 'bridge-hmac') {
        const verdict = verifyDelivery(functionAuthKey(), req.header(AUTH_HEADER), {
          functionName,
          id: stringField(incoming.id),
          type: stringField(incoming.type),
          time: stringField(incoming.time),
          body: req.rawBody ?? Buffer.alloc(0),
        });
        if (!verdict.ok) {
          // Who asked and why it was refused; never the token or the body.
          log.warn(
            { function: functionName, status: verdict.status, reason: verdict.reason, from: req.ip },
            'refused an unauthenticated request',
          );
          res.status(verdict.status).send(verdict.reason);
          return;
        }
      }
      // cloud-run-iam: the platform admitted the caller's ID token (IAM invoker) before this runs.
    } catch (error) {
      if (!(error instanceof FunctionAuthConfigError)) throw error;
      log.error({ function: functionName, reason: error.message }, 'cannot authenticate requests; refusing them all');
      res.status(503).send('request authentication is not configured');
      return;
    }
    try {
      await handle(incoming);
      res.status(204).end();
    } catch (error) {
      log.error({ function: functionName, err: error, id: incoming.id }, 'function failed; the event will be delivered again');
      res.status(500).send('function failed');
    }
  };
}

function stringField(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

/** The CloudEvent of a request: the parsed JSON body (structured mode) or ce-* headers plus the body as data. */
export function readCloudEvent(req: Request): Record<string, unknown> | undefined {
  const body: unknown = req.body;
  const contentType = req.header('content-type') ?? '';
  if (contentType.startsWith('application/cloudevents+json')) {
    return typeof body === 'object' && body !== null && !Array.isArray(body) && !Buffer.isBuffer(body)
      ? (body as Record<string, unknown>)
      : undefined;
  }
  const specversion = req.header('ce-specversion');
  if (specversion === undefined) return undefined;
  const event: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (name.startsWith('ce-') && typeof value === 'string') event[name.slice(3)] = value;
  }
  if (contentType !== '') event.datacontenttype = contentType.split(';')[0];
  event.data = body;
  return event;
}
