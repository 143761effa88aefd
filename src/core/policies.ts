/**
 * Draft policies over a suffix automaton. Each writes up to k tokens into out[offset...] and
 * returns how many; none allocates.
 */
import { type Match, NONE, ROOT, type SuffixAutomaton } from './automaton.js';

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
 * Where the corpus (finished outputs of other prompts) drafts instead of the request's group: its
 * context must be longer than the group's, and the group's short (under GROUP_CONTEXT_TRUSTED
 * tokens) or the corpus's clearly longer (CORPUS_LENGTH_RATIO x + CORPUS_LENGTH_MARGIN). The group
 * is the better predictor at equal length: same problem, same samples (docs/results.md).
 */
const GROUP_CONTEXT_TRUSTED = 2;
const CORPUS_LENGTH_RATIO = 1.5;
const CORPUS_LENGTH_MARGIN = 4;

/**
 * Recency walk: from the longest context of the sequence, propose the token that followed the
 * most recent occurrence of the longest context that has a continuation, then extend the
 * context by that token and repeat. Contexts come from every sequence in the automaton (own
 * context, live and finished siblings, history), so the freshest evidence wins.
 *
 * With a corpus (`corpus` and the request's match in it, which the walk moves along), the walk
 * follows the request's context in both automata and draws each token from the group unless the
 * corpus's context is the better one (see GROUP_CONTEXT_TRUSTED). `groupMatch` is scratch.
 */
export function recencyWalkDraft(
  sam: SuffixAutomaton,
  cursor: number,
  k: number,
  out: Int32Array,
  offset: number,
  options: WalkOptions,
  corpus: SuffixAutomaton | null = null,
  corpusMatch: Match | null = null,
  groupMatch: Match | null = null,
): number {
  let state = sam.lastState(cursor);
  let matched = sam.length(state);
  let count = 0;
  while (count < k) {
    while (state !== ROOT && sam.recentToken(state) === NONE) {
      state = sam.suffixLink(state);
      matched = sam.length(state);
    }
    if (corpus !== null && corpusMatch !== null && groupMatch !== null) {
      let corpusState = corpusMatch.state;
      while (corpusState !== ROOT && corpus.recentToken(corpusState) === NONE) corpusState = corpus.suffixLink(corpusState);
      if (corpusState !== corpusMatch.state) {
        corpusMatch.state = corpusState;
        corpusMatch.length = corpus.length(corpusState);
      }
      const groupLength = state === ROOT ? 0 : matched;
      const corpusLength = corpusMatch.length;
      if (
        corpusState !== ROOT &&
        corpusLength >= options.minMatch &&
        ((groupLength < GROUP_CONTEXT_TRUSTED && corpusLength > groupLength) || corpusLength >= CORPUS_LENGTH_RATIO * groupLength + CORPUS_LENGTH_MARGIN)
      ) {
        const token = corpus.recentToken(corpusState);
        out[offset + count++] = token;
        if (count === k) break; // the last token needs no context after it
        corpusMatch.state = corpus.recentTarget(corpusState);
        corpusMatch.length++;
        groupMatch.state = state;
        groupMatch.length = groupLength;
        sam.extendMatch(groupMatch, token);
        state = groupMatch.state;
        matched = groupMatch.length;
        continue;
      }
    }
    if (state === ROOT || matched < options.minMatch) break;
    const token = sam.recentToken(state);
    out[offset + count++] = token;
    state = sam.recentTarget(state);
    matched++;
    if (corpus !== null && corpusMatch !== null && count < k) corpus.extendMatch(corpusMatch, token);
  }
  return count;
}

/**
 * Length of the context the recency walk drafts from: the longest suffix of the cursor's sequence
 * that has a continuation in the automaton (0 when only the empty context has one).
 */
export function draftingContextLength(sam: SuffixAutomaton, cursor: number): number {
  let state = sam.lastState(cursor);
  let length = sam.cursorTokens(cursor);
  while (state !== ROOT && sam.recentToken(state) === NONE) {
    state = sam.suffixLink(state);
    length = sam.length(state);
  }
  return state === ROOT ? 0 : length;
}

/**
 * Own repetition: where the request itself produced its current context of `contextLength` tokens
 * within its last `window` tokens, the tokens that followed it then. A request that has just
 * repeated itself (a list, a loop, a formula written twice) is likelier to go on as it did than
 * as a sibling did, though the sibling's occurrence is more recent. Where what followed reaches
 * the current end, the repetition goes on with its period. Reads the request's text as
 * prompt[0..promptLength) then output[0..length - promptLength); returns how many tokens it wrote
 * into out[offset...]: k, or 0 when there is no such repetition.
 */
export function ownRepeatDraft(
  prompt: ArrayLike<number>,
  promptLength: number,
  output: Int32Array,
  length: number,
  contextLength: number,
  window: number,
  k: number,
  out: Int32Array,
  offset: number,
): number {
  if (contextLength < 1 || contextLength >= window || contextLength >= length) return 0;
  const earliestEnd = Math.max(contextLength - 1, length - 1 - window);
  const first = earliestEnd - contextLength + 1; // the first position the scan reads
  if (first >= promptLength) return repeatedContinuation(output, first - promptLength, length - 1 - promptLength, contextLength, k, out, offset);
  // The window reaches into the prompt (early in the output): scan a copy of the text's tail.
  const span = length - first;
  if (textTail.length < span) textTail = new Int32Array(span * 2);
  for (let i = 0; i < span; i++) textTail[i] = first + i < promptLength ? prompt[first + i] : output[first + i - promptLength];
  return repeatedContinuation(textTail, 0, span - 1, contextLength, k, out, offset);
}

/** Scratch for ownRepeatDraft (at most twice its window). */
let textTail = new Int32Array(128);

/**
 * In text[lowest..last]: the latest end before `last` whose `contextLength` tokens equal those
 * ending at `last`; writes k tokens of what followed it, periodic past `last`. Returns k, or 0.
 */
function repeatedContinuation(text: Int32Array, lowest: number, last: number, contextLength: number, k: number, out: Int32Array, offset: number): number {
  const token = text[last];
  for (let end = last - 1; end >= lowest + contextLength - 1; end--) {
    if (text[end] !== token) continue;
    let matched = 1;
    while (matched < contextLength && text[end - matched] === text[last - matched]) matched++;
    if (matched < contextLength) continue;
    const period = last - end;
    for (let c = 0; c < k; c++) out[offset + c] = text[end + 1 + (c % period)];
    return k;
  }
  return 0;
}
