/**
 * A failure to get a credential from a cloud's token service: which service, what was asked, what it
 * answered. Never the token or credential itself: a service that echoes a JWT back (some error
 * descriptions quote the assertion they refused) has it replaced before the text reaches the message,
 * since these messages end up in logs and in dead letters.
 */
export class CloudIdentityError extends Error {
  /** The token service, e.g. "GCE metadata server", "AWS STS", "Microsoft Entra ID". */
  readonly service: string;
  /** A transient failure (network, 5xx, throttling): asking again may work. */
  readonly retryable: boolean;

  constructor(service: string, message: string, options: { cause?: unknown; retryable?: boolean } = {}) {
    super(`${service}: ${withoutTokens(message)}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CloudIdentityError';
    this.service = service;
    this.retryable = options.retryable ?? false;
  }
}

/** The configuration names a variable that is missing or malformed (its value is never echoed: it may be a secret). */
export class CloudIdentityConfigError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'CloudIdentityConfigError';
  }
}

// A JWT (header.payload.signature, base64url; the header always starts with {" = eyJ) and the long opaque
// strings STS session tokens and Entra access tokens are.
const JWT = /eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*/g;
const MAX_ECHO = 300;

/** `text` with anything JWT-shaped cut out. */
export function withoutTokens(text: string): string {
  return text.replace(JWT, '[token redacted]');
}

/** What a token service sent back, fit for an error message: tokens cut out, then the length bounded. */
export function echoed(text: string): string {
  const cut = withoutTokens(text.trim());
  return cut.length > MAX_ECHO ? `${cut.slice(0, MAX_ECHO)}...` : cut;
}

/** https, or http only to a loopback address (a local stand-in): tokens never cross a network in clear. */
export function checkedTokenEndpoint(variable: string, value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch (error) {
    throw new CloudIdentityConfigError(`${variable} is not an absolute URL`, { cause: error });
  }
  const loopback = ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) {
    throw new CloudIdentityConfigError(`${variable} must be an https URL (plain http only to a loopback address)`);
  }
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    throw new CloudIdentityConfigError(`${variable} must not carry credentials, a query or a fragment`);
  }
  return url;
}
