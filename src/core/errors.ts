/**
 * The one catalogue of coded errors. Callers (and clients across the wire) match on `code`;
 * the message always names the offending field.
 */
export const ErrorCodes = {
  UNKNOWN_REQUEST: { status: 'RESYNC', http: 409, text: 'request is not known to the sidecar; send its full context' },
  TOKEN_GAP: { status: 'RESYNC', http: 409, text: 'delta does not continue the request; send its full context' },
  TOKEN_OUT_OF_RANGE: { status: 'ERROR', http: 400, text: 'token id out of range' },
  K_OUT_OF_RANGE: { status: 'ERROR', http: 400, text: 'k out of range' },
  INVALID_ARGUMENT: { status: 'ERROR', http: 400, text: 'invalid argument' },
  DUPLICATE_REQUEST: { status: 'ERROR', http: 400, text: 'request appears twice in one step' },
  STALE_STEP: { status: 'ERROR', http: 409, text: 'step id is older than the engine\u2019s last step' },
  MALFORMED_FRAME: { status: 'ERROR', http: 400, text: 'malformed frame' },
  MESSAGE_TOO_LARGE: { status: 'ERROR', http: 413, text: 'message exceeds the configured limit' },
  UNSUPPORTED_VERSION: { status: 'ERROR', http: 400, text: 'unsupported protocol version' },
  NOT_READY: { status: 'ERROR', http: 503, text: 'sidecar is shutting down' },
  CONFIG_INVALID: { status: 'ERROR', http: 500, text: 'invalid configuration' },
  TRACE_INVALID: { status: 'ERROR', http: 400, text: 'invalid trace input' },
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export class SidecarError extends Error {
  readonly code: ErrorCode;
  readonly field: string | undefined;

  constructor(code: ErrorCode, detail: string, field?: string) {
    super(`${code}: ${ErrorCodes[code].text}${field ? ` (${field})` : ''}: ${detail}`);
    this.name = 'SidecarError';
    this.code = code;
    this.field = field;
  }

  get httpStatus(): number {
    return ErrorCodes[this.code].http;
  }

  /** RESYNC errors are recoverable by resending the full context. */
  get needsResync(): boolean {
    return ErrorCodes[this.code].status === 'RESYNC';
  }
}

export function sidecarError(code: ErrorCode, detail: string, field?: string): SidecarError {
  return new SidecarError(code, detail, field);
}
