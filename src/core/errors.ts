/**
 * The one catalogue of coded errors. Callers (and clients across the wire) match on `code`;
 * the message always names the offending field. `status` is what a Step item reports (RESYNC:
 * resend the full context), `http` and `grpc` the status codes of the transports
 * (gRPC: 3 INVALID_ARGUMENT, 5 NOT_FOUND, 8 RESOURCE_EXHAUSTED, 9 FAILED_PRECONDITION, 12 UNIMPLEMENTED,
 * 13 INTERNAL, 14 UNAVAILABLE).
 */
export const ErrorCodes = {
  UNKNOWN_REQUEST: { status: 'RESYNC', http: 409, grpc: 9, text: 'request is not known to the sidecar; send its full context' },
  TOKEN_GAP: { status: 'RESYNC', http: 409, grpc: 9, text: 'delta does not continue the request; send its full context' },
  TOKEN_OUT_OF_RANGE: { status: 'ERROR', http: 400, grpc: 3, text: 'token id out of range' },
  K_OUT_OF_RANGE: { status: 'ERROR', http: 400, grpc: 3, text: 'k out of range' },
  INVALID_ARGUMENT: { status: 'ERROR', http: 400, grpc: 3, text: 'invalid argument' },
  DUPLICATE_REQUEST: { status: 'ERROR', http: 400, grpc: 3, text: 'request appears twice in one step' },
  STALE_STEP: { status: 'ERROR', http: 409, grpc: 9, text: 'step id is older than the engine\u2019s last step' },
  CONFLICTING_STEP: { status: 'ERROR', http: 409, grpc: 9, text: 'a step id already answered, repeated with other requests or tokens' },
  MALFORMED_FRAME: { status: 'ERROR', http: 400, grpc: 3, text: 'malformed frame' },
  MALFORMED_MESSAGE: { status: 'ERROR', http: 400, grpc: 3, text: 'the protobuf message cannot be decoded' },
  MESSAGE_TOO_LARGE: { status: 'ERROR', http: 413, grpc: 8, text: 'message exceeds the configured limit' },
  UNSUPPORTED_VERSION: { status: 'ERROR', http: 400, grpc: 12, text: 'unsupported protocol version' },
  NOT_READY: { status: 'ERROR', http: 503, grpc: 14, text: 'sidecar is shutting down' },
  CONFIG_INVALID: { status: 'ERROR', http: 500, grpc: 3, text: 'invalid configuration' },
  SOCKET_DIR_UNSAFE: { status: 'ERROR', http: 500, grpc: 9, text: 'the socket directory is not safe: owned by another user, or writable by others' },
  LISTEN_FAILED: { status: 'ERROR', http: 500, grpc: 14, text: 'cannot listen: the address is in use by another process, or not permitted' },
  FORBIDDEN: { status: 'ERROR', http: 403, grpc: 7, text: 'this route changes state or shows requests\u2019 text: it needs http.token (Authorization: Bearer ...)' },
  UNSUPPORTED_MEDIA_TYPE: { status: 'ERROR', http: 415, grpc: 3, text: 'the body must be JSON (content-type: application/json)' },
  METHOD_NOT_ALLOWED: { status: 'ERROR', http: 405, grpc: 12, text: 'method not allowed on this route' },
  NOT_FOUND: { status: 'ERROR', http: 404, grpc: 5, text: 'no such route or resource' },
  INTERNAL: { status: 'ERROR', http: 500, grpc: 13, text: 'internal error (a bug: please report it with the log line)' },
  TRACE_INVALID: { status: 'ERROR', http: 400, grpc: 3, text: 'invalid trace input' },
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

  get grpcStatus(): number {
    return ErrorCodes[this.code].grpc;
  }

  /** The JSON shape every transport uses for an error. */
  toJSON(): { code: ErrorCode; field: string | null; message: string } {
    return { code: this.code, field: this.field ?? null, message: this.message };
  }

  /** RESYNC errors are recoverable by resending the full context. */
  get needsResync(): boolean {
    return ErrorCodes[this.code].status === 'RESYNC';
  }
}

export function sidecarError(code: ErrorCode, detail: string, field?: string): SidecarError {
  return new SidecarError(code, detail, field);
}

/** An error received from a sidecar over the wire, as the same coded type (message kept verbatim). */
export function remoteError(json: { code: string; field?: string | null; message: string }): SidecarError {
  const code = (json.code in ErrorCodes ? json.code : 'INTERNAL') as ErrorCode;
  const error = new SidecarError(code, '', json.field ?? undefined);
  error.message = json.message;
  return error;
}
