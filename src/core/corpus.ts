/**
 * The corpus: finished outputs of every prompt, indexed for drafting by requests of any prompt.
 *
 * Outputs of one policy model share phrasing across problems ("Let's break down", "so the total
 * is", formulas, the answer format), so where a request's own group has no useful context, the
 * longest match in what other requests produced predicts its next tokens well (docs/results.md).
 *
 * One suffix automaton cannot forget a sequence, so the corpus keeps two generations: finished
 * sequences go into the newer one, and when it holds half the token budget the older one is
 * dropped and a new generation starts. Memory stays within the budget, and the newest half of
 * what was added is always there.
 *
 * Each request keeps a running match in both generations (`CorpusMatch`), updated in amortized
 * O(1) per ingested token.
 */
import { Match, SuffixAutomaton } from './automaton.js';

/** A request's running matches in the corpus's generations. */
export class CorpusMatch {
  /** The corpus epoch the matches belong to; a rotation since then moves or resets them. */
  epoch = 0;
  older = new Match();
  newer = new Match();
}

export class Corpus {
  private older: SuffixAutomaton | null = null;
  private newer = new SuffixAutomaton();
  private epoch = 0;

  constructor(readonly budgetTokens: number) {}

  /** A match for a new request, current with this corpus. */
  newMatch(): CorpusMatch {
    const match = new CorpusMatch();
    match.epoch = this.epoch;
    return match;
  }

  /** Increases at every rotation: what was added at epoch e is held while epoch <= e + 1. */
  get currentEpoch(): number {
    return this.epoch;
  }

  /** Indexes one finished request: its prompt, then the first `outputLength` tokens of `output`. */
  add(prompt: ArrayLike<number>, output: ArrayLike<number>, outputLength: number): void {
    const length = prompt.length + outputLength;
    if (this.newer.tokenCount > 0 && this.newer.tokenCount + length > this.budgetTokens / 2) {
      this.newer.compact();
      this.older = this.newer;
      this.newer = new SuffixAutomaton();
      this.epoch++;
    }
    const cursor = this.newer.openCursor();
    for (let i = 0; i < prompt.length; i++) this.newer.append(cursor, prompt[i]);
    for (let i = 0; i < outputLength; i++) this.newer.append(cursor, output[i]);
    this.newer.closeCursor(cursor);
  }

  /** Forgets a request's matches (it starts over on its latest tokens). */
  resetMatch(match: CorpusMatch): void {
    match.epoch = this.epoch;
    match.older.reset();
    match.newer.reset();
  }

  /** Extends a request's matches by its next token. */
  advance(match: CorpusMatch, token: number): void {
    this.sync(match);
    if (this.older !== null) this.older.extendMatch(match.older, token);
    this.newer.extendMatch(match.newer, token);
  }

  /**
   * The generation to draft from, the one with the longer match (the newer on a tie), with its
   * match settled and copied into `into`; null when neither matches.
   */
  draftSource(match: CorpusMatch, into: Match): SuffixAutomaton | null {
    this.sync(match);
    const useOlder = this.older !== null && match.older.length > match.newer.length;
    const best = useOlder ? match.older : match.newer;
    if (best.length === 0) return null;
    const sam = useOlder ? this.older! : this.newer;
    sam.settle(best);
    into.copy(best);
    return sam;
  }

  get tokenCount(): number {
    return (this.older?.tokenCount ?? 0) + this.newer.tokenCount;
  }

  byteSize(): number {
    return (this.older?.byteSize() ?? 0) + this.newer.byteSize();
  }

  /** Brings a match made before rotations up to date: the newer generation became the older. */
  private sync(match: CorpusMatch): void {
    const behind = this.epoch - match.epoch;
    if (behind === 0) return;
    const newer = match.newer;
    if (behind === 1) {
      match.newer = match.older;
      match.older = newer;
    } else {
      match.older.reset();
    }
    match.newer.reset();
    match.epoch = this.epoch;
  }
}
