/**
 * Draft policies over a suffix automaton. Each writes up to k tokens into out[offset...] and
 * returns how many; none allocates.
 */
import { NONE, ROOT, type SuffixAutomaton } from './automaton.js';

/** Reads up to k tokens that follow log index `end` in its sequence. */
export function readContinuation(sam: SuffixAutomaton, end: number, k: number, out: Int32Array, offset: number): number {
  let count = 0;
  for (let i = sam.nextLogIndex(end); i !== NONE && count < k; i = sam.nextLogIndex(i)) out[offset + count++] = sam.tokenAt(i);
  return count;
}

/**
 * The seed design, exactly: the K tokens after the EARLIEST occurrence of the longest suffix seen
 * before; while fewer than K follow it, a shorter match (suffix link) unless that link is the root.
 * Needs an automaton with positions over the request's own context only.
 */
export function seedDraft(sam: SuffixAutomaton, cursor: number, k: number, out: Int32Array, offset: number): number {
  let state = sam.suffixLink(sam.lastState(cursor));
  if (state === NONE || state === ROOT) return 0;
  let count = readContinuation(sam, sam.firstEndOf(state), k, out, offset);
  while (count < k && sam.suffixLink(state) !== ROOT) {
    state = sam.suffixLink(state);
    count = readContinuation(sam, sam.firstEndOf(state), k, out, offset);
  }
  return count;
}

export interface WalkOptions {
  /** Contexts shorter than this are not trusted to draft. */
  minMatch: number;
}

/**
 * Recency walk: from the longest context of the sequence, propose the token that followed the
 * most recent occurrence of the longest context that has a continuation, then extend the
 * context by that token and repeat. Contexts come from every sequence in the automaton (own
 * context, live and finished siblings, history), so the freshest evidence wins.
 */
export function recencyWalkDraft(
  sam: SuffixAutomaton,
  cursor: number,
  k: number,
  out: Int32Array,
  offset: number,
  options: WalkOptions,
): number {
  let state = sam.lastState(cursor);
  let matched = sam.length(state);
  let count = 0;
  while (count < k) {
    while (state !== ROOT && sam.recentToken(state) === NONE) {
      state = sam.suffixLink(state);
      matched = sam.length(state);
    }
    if (state === ROOT || matched < options.minMatch) break;
    const token = sam.recentToken(state);
    out[offset + count++] = token;
    state = sam.recentTarget(state);
    matched++;
  }
  return count;
}

