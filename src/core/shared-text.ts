/**
 * Text shared between engines: what the sidecars of other engines saw of the prompt groups this
 * one holds (their live requests' new tokens, their finished outputs, earlier steps' outputs), and
 * what this one publishes for them. The core only defines the shapes and applies what arrives,
 * between steps in idle slices and at the start of a step; moving it is an adapter's job
 * (src/sharing/). Pure: no I/O.
 */

/** A run of one request's output tokens, on any engine. */
export interface TextDelta {
  /** The prompt group's key: the same prompt hashes to the same key on every sidecar. */
  readonly group: string;
  /** The request, qualified by the sidecar that saw it (unique across engines and restarts). */
  readonly source: string;
  /** Offset of tokens[0] in the request's output (tokens after the group's prompt). */
  readonly at: number;
  readonly tokens: Int32Array;
  /** The request has finished: no more tokens will follow. */
  readonly finished: boolean;
  /** With `finished` on outbound deltas: the request's whole output (for later steps' history). */
  readonly output?: Int32Array;
}

/** What this engine produced since the last call, for other engines. */
export interface OutboundText {
  /** Groups that became active here (new, or back from history): their shared history is wanted. */
  readonly opened: readonly string[];
  readonly deltas: readonly TextDelta[];
}

/**
 * Where text from other engines comes from. Drained in bounded slices between steps (idle work)
 * and to the end at the start of every step, so each step sees a fixed set: what arrived before it.
 */
export interface SharedTextSource {
  /** Deltas are waiting to be drained. */
  readonly inboundWaiting: boolean;
  /**
   * Hands deltas over in arrival order, each whole, while `take` returns true (the Step service's
   * budget decides how many a slice takes).
   */
  drain(take: (delta: TextDelta) => boolean): void;
}
