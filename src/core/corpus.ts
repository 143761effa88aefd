/**
 * The corpus: the outputs of every prompt, live and finished, indexed for drafting by requests of
 * any prompt. A running request's text streams in as it is generated (one sequence per request,
 * appended to at each step), so requests that run together draft from each other across prompts,
 * not only from those that finished before them.
 *
 * Outputs of one policy model share phrasing across problems ("Let's break down", "so the total
 * is", formulas, the answer format), so where a request's own group has no useful context, the
 * longest match in what other requests produced predicts its next tokens well (docs/results.md).
 *
 * One suffix automaton cannot forget a sequence, so the corpus keeps two generations: sequences
 * go into the newer one, and when it holds half the token budget the older one is dropped and a
 * new generation starts. Memory stays within the budget, and the newest half of what was added is
 * always there. A stream whose generation has aged restarts in the newer one from its last tokens.
 *
 * Each request keeps a running match in both generations (`CorpusMatch`), updated in amortized
 * O(1) per ingested token.
 */
import { Match, SuffixAutomaton } from './automaton.js';
import { type ArraySupply, type GrowthMemory, HEAP_ARRAYS } from './typed.js';

/** A request's running matches in the corpus's generations. */
export class CorpusMatch {
  /** The corpus epoch the matches belong to; a rotation since then moves or resets them. */
  epoch = 0;
  older = new Match();
  newer = new Match();
}

/** A running request's sequence in the corpus: the generation it is in and its cursor there. */
export class CorpusStream {
  epoch = -1;
  cursor = -1;
}

/**
 * Past a quarter of its tokens, a generation is planned at its full share (expect()): its last
 * growths, 1.5x copies of tens of megabytes each on the event loop (48 ms at 1.3M tokens on a
 * 2-core VM, more at every later one), become one earlier, smaller copy. Below that a small corpus
 * stays small: the capacity counted in the byte budget is what a filled generation's is anyway.
 */
const PLAN_GENERATION_FROM = 1 / 4;

export class Corpus {
  private older: SuffixAutomaton | null = null;
  private newer = new SuffixAutomaton();
  private epoch = 0;
  private olderCompacted = true;
  /** Whether the newer generation is planned at its full share (PLAN_GENERATION_FROM). */
  private newerPlanned = false;

  constructor(readonly budgetTokens: number) {}

  private growthMemory: GrowthMemory | null = null;
  /** Where each generation's large arrays come from (SuffixAutomaton.memory). */
  set memory(memory: GrowthMemory | null) {
    this.growthMemory = memory;
    this.newer.memory = memory;
  }

  /** Whether the older generation still has growth slack to shed (compactOlder). */
  get compactionPending(): boolean {
    return !this.olderCompacted;
  }

  /** One slice of the older generation's compaction: copies at most `maxElements`; returns how many it did. */
  compactOlder(maxElements: number, arrays: ArraySupply = HEAP_ARRAYS): number {
    const older = this.older;
    if (older === null || this.olderCompacted) return 0;
    const left = older.compactionElementsLeft;
    this.olderCompacted = older.compactSome(maxElements, arrays);
    return this.olderCompacted ? left : left - older.compactionElementsLeft;
  }

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

  /** Indexes one whole sequence: `prompt`, then the first `outputLength` tokens of `output`. */
  add(prompt: ArrayLike<number>, output: ArrayLike<number>, outputLength: number): void {
    const stream = new CorpusStream();
    this.reserve(stream, prompt.length + outputLength);
    this.start(stream);
    this.append(stream, prompt, 0, prompt.length);
    this.append(stream, output, 0, outputLength);
    this.end(stream);
  }

  /**
   * Makes room for `tokens` more in the newer generation (rotating when it would pass half the
   * budget) and tells whether `stream` can append there: false when it must restart (new, or its
   * generation has aged), after which the caller starts it and feeds it context first.
   */
  reserve(stream: CorpusStream, tokens: number): boolean {
    if (this.newer.tokenCount > 0 && this.newer.tokenCount + tokens > this.budgetTokens / 2) {
      // Read-only from now on: shrunk in idle slices (compactOlder), not here inside a step.
      this.older = this.newer;
      this.olderCompacted = false;
      this.newer = new SuffixAutomaton({ memory: this.growthMemory });
      this.newerPlanned = false;
      this.epoch++;
    }
    const generationTokens = this.budgetTokens / 2;
    const needed = this.newer.tokenCount + tokens;
    if (!this.newerPlanned && needed >= generationTokens * PLAN_GENERATION_FROM) {
      this.newer.expect(Math.max(0, generationTokens - this.newer.tokenCount));
      this.newerPlanned = true;
    }
    return stream.epoch === this.epoch;
  }

  /** Opens `stream` in the newer generation (after reserve() said it must). */
  start(stream: CorpusStream): void {
    this.end(stream);
    stream.cursor = this.newer.openCursor();
    stream.epoch = this.epoch;
  }

  /** Appends text[from..to) to a stream that reserve() admitted (or start() opened). */
  append(stream: CorpusStream, text: ArrayLike<number>, from: number, to: number): void {
    const sam = this.newer;
    for (let i = from; i < to; i++) sam.append(stream.cursor, text[i]);
  }

  /** Ends a stream: its tokens stay indexed. */
  end(stream: CorpusStream): void {
    if (stream.cursor >= 0 && stream.epoch === this.epoch) this.newer.closeCursor(stream.cursor);
    else if (stream.cursor >= 0 && stream.epoch === this.epoch - 1) this.older?.closeCursor(stream.cursor);
    stream.cursor = -1;
    stream.epoch = -1;
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
