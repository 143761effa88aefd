/**
 * The drafting engine: one entry per live request (keyed by request id), sibling groups found by
 * prompt hash, and a token-budgeted LRU history of finished groups. Pure: no I/O, no clocks.
 *
 * Sources by drafter:
 * - `sam`: one generalized suffix automaton per prompt group holds the prompt, every sibling's
 *   output (live, as it is generated, and after it finishes) and earlier rollouts of the same
 *   prompt (history). A request drafts from the freshest occurrence of its longest context. With
 *   siblings on, finished requests of every prompt also go into the corpus (corpus.ts), which
 *   drafts where the group's context is short, and a request that has just repeated itself
 *   drafts its own continuation before a sibling's (ownRepeatDraft).
 * - `seed`: the seed design, own context only (reference policy).
 * - `ngram`: vLLM's n-gram proposer, own context only (baseline).
 */
import { Match, SuffixAutomaton } from './automaton.js';
import { Corpus, type CorpusMatch, CorpusStream } from './corpus.js';
import { sidecarError } from './errors.js';
import { NgramIndex } from './ngram.js';
import { draftingContextLength, ownRepeatDraft, recencyWalkDraft, seedDraft } from './policies.js';
import { PrefixHash, promptKey, samePrefix } from './prompt-hash.js';
import type { OutboundText, TextDelta } from './shared-text.js';
import { type ArraySupply, type GrowthMemory, grownCapacity, HEAP_ARRAYS, resizedInt32 } from './typed.js';

export const DRAFTERS = ['sam', 'seed', 'ngram'] as const;
export type DrafterKind = (typeof DRAFTERS)[number];

export interface EngineOptions {
  drafter: DrafterKind;
  /** Requests with identical prompts draft from each other and from history (sam only). */
  siblings: boolean;
  /** Token budget for finished groups kept for later rollout steps (sam with siblings). */
  historyTokens: number;
  /** Token budget of the corpus of finished requests of every prompt (sam with siblings); 0: none. */
  corpusTokens: number;
  /** Token ids must be below this (vocabulary size). */
  vocabSize: number;
  ngramMin: number;
  ngramMax: number;
  /** Shortest context the sam policy drafts from. */
  minMatch: number;
  /** Collect this engine's text for other engines (takeOutbound) and accept theirs (applyRemote). */
  shareText: boolean;
}

export const DEFAULT_ENGINE_OPTIONS: Readonly<EngineOptions> = Object.freeze({
  drafter: 'sam',
  siblings: true,
  historyTokens: 8_000_000,
  corpusTokens: 4_000_000,
  vocabSize: 1 << 20,
  ngramMin: 2,
  ngramMax: 5,
  minMatch: 1,
  shareText: false,
});

/** Sequences from other engines one group keeps open at once (more are ignored until some finish). */
const REMOTE_SEQUENCES_PER_GROUP = 256;

/**
 * Tokens of context a request's corpus stream restarts with in a new generation (or after its
 * prompt was indexed by a sibling), so matches run across the restart.
 */
const CORPUS_RESTART_CONTEXT = 32;

/** Longest corpus context a draft looks for after a pause; longer ones add nothing to the choice. */
const CORPUS_MATCH_WINDOW = 64;

/**
 * Array elements one idle slice copies when compacting (128 KiB): about half a millisecond even where
 * fresh pages are slow (3.5 ms per MB on the test VM without huge pages), far less elsewhere.
 */
const COMPACTION_ELEMENTS_PER_SLICE = 1 << 15;

/** Candidate groups (longest prompts first) a prompt is compared with, token by token, when it extends no exact prompt. */
const PREFIX_CANDIDATES_VERIFIED = 4;

/**
 * How far back a request's own repetition counts (ownRepeatDraft). Chosen on the GRPO trace:
 * windows of 48 to 96 tokens all help; much longer ones hurt, as old own text is a worse guide
 * than a sibling's fresh text (docs/results.md).
 */
const OWN_REPEAT_WINDOW = 64;

/** A request of another engine whose text this group indexes. */
interface RemoteSequence {
  cursor: number;
  /** Output tokens applied so far. */
  length: number;
  /** Its text in the corpus too, as a local request's streams there. */
  corpusStream: CorpusStream | null;
}

class Group {
  readonly automaton: SuffixAutomaton;
  activeMembers = 0;
  /** Other engines' requests of this prompt, by source (shared text). */
  remote: Map<string, RemoteSequence> | null = null;
  /** Corpus epoch at which the prompt was last indexed there (siblings share it: indexed once). */
  promptInCorpusEpoch = Number.NEGATIVE_INFINITY;
  constructor(
    readonly key: string,
    readonly prompt: Int32Array,
    /** Tokens the first member brings (its whole context): the automaton starts that big, not bigger. */
    contextLength: number,
    memory: GrowthMemory | null = null,
  ) {
    this.automaton = new SuffixAutomaton({ initialTokens: Math.max(16, contextLength + 8), memory });
  }
}

/** A live request inside the engine; callers that step it often keep it to skip the id lookup. */
export class RequestEntry {
  length = 0;
  released = false;
  /**
   * Tokens of the context that are its group's prompt: the request's own prompt length, or less
   * where the request continues a group whose prompt its own extends (a later turn); what follows
   * them is the request's text (`output`).
   */
  sharedPromptLength: number;
  /**
   * The request's tokens after its prompt (the group holds the prompt), for the corpus when it
   * finishes; and its running match in the corpus.
   */
  output: Int32Array | null = null;
  corpusMatch: CorpusMatch | null = null;
  /** Tokens the corpus match has read. */
  corpusMatched = 0;
  /** The request's text in the corpus, and how many of its tokens are there. */
  corpusStream: CorpusStream | null = null;
  corpusFed = 0;
  /** Waiting in the corpus queue. */
  corpusQueued = false;
  /** Output tokens handed to other engines (shared text), and whether it waits in that queue. */
  published = 0;
  publishQueued = false;
  constructor(
    readonly id: string,
    readonly promptLength: number,
    readonly group: Group | null,
    readonly cursor: number,
    readonly own: SuffixAutomaton | null,
    readonly ngram: NgramIndex | null,
  ) {
    this.sharedPromptLength = group === null ? promptLength : group.prompt.length;
  }
}

export interface EngineStats {
  requests: number;
  groups: number;
  historyGroups: number;
  historyTokens: number;
  tokensIndexed: number;
  bytes: number;
  historyEvictions: number;
  /** Tokens in the corpus (also counted in tokensIndexed), and its bytes (also counted in bytes). */
  corpusTokens: number;
  corpusBytes: number;
}

export class DraftEngine {
  readonly options: Readonly<EngineOptions>;
  private readonly requests = new Map<string, RequestEntry>();
  private readonly groups = new Map<string, Group>();
  /** How many groups have a prompt of each length: the lengths a new prompt's prefixes are looked up at. */
  private readonly promptLengthCounts = new Map<number, number>();
  /** Groups with no active member, least recently used first (Map keeps insertion order). */
  private readonly history = new Map<string, Group>();
  /** Requests announced before they open (announce()): the group key planned for and the tokens it brings beyond the prompt (0: already planned in a live group). */
  private readonly announced = new Map<string, { groupKey: string; tokens: number }>();
  /** Tokens announced per group key whose group is not there yet. */
  private readonly announcedByGroup = new Map<string, number>();
  private historyTokenCount = 0;
  private historyEvictionCount = 0;
  private readonly corpus: Corpus | null;
  /** Requests keep their output tokens: for their own repetitions and for the corpus. */
  private readonly keepsOutputs: boolean;
  /** Groups whose last member left, to be shrunk to what they use (see compactRetired). */
  private readonly compactQueue: Group[] = [];
  /** Requests whose latest tokens wait to enter the corpus (see flushCorpus). */
  private readonly corpusQueue: RequestEntry[] = [];
  /** Shared text: requests with tokens not yet handed out, and groups opened since (takeOutbound). */
  private readonly publishQueue: RequestEntry[] = [];
  private opened: string[] = [];
  private remoteIgnored = 0;
  // Scratch for the draft walk over group and corpus (no allocation per draft).
  private readonly corpusScratch = new Match();
  private readonly groupScratch = new Match();

  constructor(options: Partial<EngineOptions> = {}) {
    this.options = Object.freeze({ ...DEFAULT_ENGINE_OPTIONS, ...options });
    const { drafter, siblings, corpusTokens } = this.options;
    this.corpus = drafter === 'sam' && siblings && corpusTokens > 0 ? new Corpus(corpusTokens) : null;
    this.keepsOutputs = drafter === 'sam' && siblings;
  }

  has(id: string): boolean {
    return this.requests.has(id);
  }

  /** Tokens the engine holds for this request (its context length), or -1 if unknown. */
  lengthOf(id: string): number {
    return this.requests.get(id)?.length ?? -1;
  }

  promptLengthOf(id: string): number {
    return this.requests.get(id)?.promptLength ?? -1;
  }

  get requestCount(): number {
    return this.requests.size;
  }

  /**
   * A request whose context will be indexed later (its backlog waits for the budget): its group
   * makes room for it now. Sixteen long siblings arrive in one step but open one at a time as the
   * backlog reaches them; planned one by one at open, the group's arrays would grow (and be
   * copied whole) as later siblings join, a copy of tens of megabytes on the event loop each time.
   * Announced, the group is made, or grows once, for all of them. `context` holds at least the
   * prompt. open() or release() of the request ends the announcement.
   */
  announce(id: string, context: ArrayLike<number>, promptLength: number, expectedLength: number): void {
    this.endAnnouncement(id);
    const tokens = expectedLength - promptLength;
    if (this.options.drafter !== 'sam' || !this.options.siblings || tokens <= 0 || context.length < promptLength) return;
    const groupKey = promptKey(context, promptLength);
    const group = this.groups.get(groupKey);
    if (group !== undefined && group.activeMembers === 0) return; // in history: planned when it rejoins, at open
    if (group === undefined) {
      this.announced.set(id, { groupKey, tokens });
      this.announcedByGroup.set(groupKey, (this.announcedByGroup.get(groupKey) ?? 0) + tokens);
    } else if (group.prompt.length === promptLength && samePrefix(group.prompt, context, promptLength)) {
      group.automaton.expect(tokens);
      this.announced.set(id, { groupKey, tokens: 0 });
    } // else a key collision: planned at open, as unannounced requests are
  }

  /** The request's announcement, taken back (it opens or goes). */
  private endAnnouncement(id: string): { groupKey: string; tokens: number } | undefined {
    const announcement = this.announced.get(id);
    if (announcement === undefined) return undefined;
    this.announced.delete(id);
    if (announcement.tokens > 0) {
      const left = (this.announcedByGroup.get(announcement.groupKey) ?? 0) - announcement.tokens;
      if (left > 0) this.announcedByGroup.set(announcement.groupKey, left);
      else this.announcedByGroup.delete(announcement.groupKey);
    }
    return announcement;
  }

  /**
   * Starts (or restarts) a request from its full context; the first `promptLength` tokens are
   * the prompt, which decides its sibling group. Indexes the first `indexed` tokens of the
   * context (all by default); the caller appends the rest later (a long context indexed over
   * several steps), up to `expectedLength` in all, which sizes the storage. Validates before
   * touching any state.
   */
  open(id: string, context: ArrayLike<number>, promptLength: number, indexed = context.length, expectedLength = context.length): RequestEntry {
    if (!(promptLength >= 0 && promptLength <= context.length)) {
      throw sidecarError('INVALID_ARGUMENT', `prompt length ${promptLength} not within context length ${context.length}`, 'prompt_len');
    }
    if (context.length > SuffixAutomaton.MAX_SEQUENCE_TOKENS) {
      throw sidecarError('INVALID_ARGUMENT', `context of ${context.length} tokens exceeds ${SuffixAutomaton.MAX_SEQUENCE_TOKENS}`, 'context');
    }
    if (!(Number.isInteger(indexed) && indexed >= 0 && indexed <= context.length)) {
      throw sidecarError('INVALID_ARGUMENT', `${indexed} tokens to index of a ${context.length}-token context`, 'context');
    }
    this.validateTokens(context, 0, context.length, 'context');
    const plannedIn = this.endAnnouncement(id)?.groupKey;
    if (this.requests.has(id)) this.release(id);
    const { drafter } = this.options;
    const length = Math.max(context.length, expectedLength);
    let group: Group | null = null;
    let cursor = -1;
    let own: SuffixAutomaton | null = null;
    let ngram: NgramIndex | null = null;
    if (drafter === 'sam') {
      group = this.joinGroup(id, context, promptLength, length, indexed, plannedIn);
      cursor = group.automaton.openCursor();
    } else if (drafter === 'seed') {
      own = new SuffixAutomaton({ positions: true, initialTokens: Math.max(256, context.length * 2) });
      cursor = own.openCursor();
    } else {
      ngram = new NgramIndex(this.options.ngramMin, this.options.ngramMax, Math.max(256, context.length * 2));
    }
    const entry = new RequestEntry(id, promptLength, group, cursor, own, ngram);
    if (this.keepsOutputs) entry.output = new Int32Array(Math.max(16, length - entry.sharedPromptLength + 8));
    if (this.corpus !== null) {
      entry.corpusMatch = this.corpus.newMatch();
      entry.corpusStream = new CorpusStream();
      // A later turn: the earlier turns' text reached the corpus with their own requests.
      entry.corpusFed = promptLength - entry.sharedPromptLength;
    }
    this.requests.set(id, entry);
    this.ingest(entry, context, 0, indexed);
    return entry;
  }

  /** Appends tokens[from..to) to a known request. */
  append(id: string, tokens: ArrayLike<number>, from = 0, to = tokens.length): void {
    this.appendTo(this.entryOf(id), tokens, from, to);
  }

  /** Writes a draft of at most k tokens into out[offset...]; returns its length. */
  draft(id: string, k: number, out: Int32Array, offset = 0): number {
    return this.draftFrom(this.entryOf(id), k, out, offset);
  }

  /** append() for a held entry (no id lookup). */
  appendTo(entry: RequestEntry, tokens: ArrayLike<number>, from = 0, to = tokens.length): void {
    if (entry.released) throw sidecarError('UNKNOWN_REQUEST', `request ${JSON.stringify(entry.id)} was released`, 'req_id');
    this.validateTokens(tokens, from, to, 'tokens');
    this.ingest(entry, tokens, from, to);
  }

  /** draft() for a held entry (no id lookup). */
  draftFrom(entry: RequestEntry, k: number, out: Int32Array, offset = 0): number {
    if (entry.released) throw sidecarError('UNKNOWN_REQUEST', `request ${JSON.stringify(entry.id)} was released`, 'req_id');
    return this.draftEntry(entry, k, out, offset);
  }

  private entryOf(id: string): RequestEntry {
    const entry = this.requests.get(id);
    if (entry === undefined) throw sidecarError('UNKNOWN_REQUEST', `request ${JSON.stringify(id)}`, 'req_id');
    return entry;
  }

  /** Releases a finished or aborted request; its output stays with its group. */
  release(id: string): boolean {
    this.endAnnouncement(id);
    const entry = this.requests.get(id);
    if (entry === undefined) return false;
    this.requests.delete(id);
    entry.released = true;
    entry.corpusMatch = null;
    if (this.options.shareText && entry.group !== null) this.queueForPublish(entry); // its last tokens, and that it ended
    if (entry.corpusStream !== null) this.queueForCorpus(entry); // its last tokens, then the stream ends
    this.dropOutputWhenDone(entry);
    const group = entry.group;
    if (group !== null) {
      group.automaton.closeCursor(entry.cursor);
      group.activeMembers--;
      if (group.activeMembers === 0) this.retire(group);
    }
    return true;
  }

  /**
   * Where compaction gets its shrunk arrays (an adapter may prepare them off the event loop).
   * While it is making one ready, compaction is not idle work: nothing could be done.
   */
  arraySupply: ArraySupply = HEAP_ARRAYS;

  private memory: GrowthMemory | null = null;
  /** Where groups' and the corpus's large grown arrays come from (SuffixAutomaton.memory). */
  set growthMemory(memory: GrowthMemory | null) {
    this.memory = memory;
    if (this.corpus !== null) this.corpus.memory = memory;
  }

  /** Whether requests' latest tokens wait to enter the corpus, or automata to be compacted. */
  get idleWorkPending(): boolean {
    if (this.corpusQueue.length > 0) return true;
    return (this.compactQueue.length > 0 || (this.corpus?.compactionPending ?? false)) && !this.arraySupply.awaiting;
  }

  /**
   * Shrinks the automata of groups retired since the last call to what they use (history keeps
   * no growth slack), and the corpus's older generation once it stops growing. Idle work, in
   * slices of at most `maxElements` array elements copied: a step that arrives meanwhile waits for
   * one slice, not for a long group's whole copy. Drafts do not depend on it.
   */
  compactRetired(maxElements = COMPACTION_ELEMENTS_PER_SLICE): void {
    let budget = maxElements;
    const corpus = this.corpus;
    if (corpus?.compactionPending) {
      budget -= corpus.compactOlder(budget, this.arraySupply);
      // Not done: out of budget, or waiting for an array (a group asking for another would cancel it).
      if (corpus.compactionPending) return;
    }
    const queue = this.compactQueue;
    let head = 0;
    for (; head < queue.length && budget > 0; head++) {
      const group = queue[head];
      // Rejoined since (it grows again) or evicted: nothing to shrink.
      if (group.activeMembers !== 0 || this.groups.get(group.key) !== group) continue;
      const automaton = group.automaton;
      const left = automaton.compactionElementsLeft;
      if (!automaton.compactSome(budget, this.arraySupply)) break; // the rest next slice
      budget -= left;
    }
    queue.splice(0, head);
  }

  /**
   * Streams the tokens requests produced since the last flush into the corpus, and ends the
   * streams of released requests. Indexing costs about as much as the step's other work, so the
   * server calls this after it has sent a step's reply; the Step service also calls it before
   * each step, so drafts never depend on when the server found the time (the in-process replay
   * and every transport draft the same).
   */
  flushCorpus(): void {
    const corpus = this.corpus;
    if (corpus === null) return;
    try {
      for (const entry of this.corpusQueue) this.feedCorpus(corpus, entry);
    } finally {
      for (const entry of this.corpusQueue) {
        entry.corpusQueued = false;
        if (entry.released) corpus.end(entry.corpusStream!);
        this.dropOutputWhenDone(entry);
      }
      this.corpusQueue.length = 0; // whatever happens, a bad entry is not retried at every step
    }
  }

  /**
   * Leaves the request's text so far out of the corpus; what it produces from here streams in as
   * usual. For text indexed late, from a backlog: it is old, and streaming it would cost as much
   * again as indexing it.
   */
  skipCorpus(entry: RequestEntry): void {
    entry.corpusFed = Math.max(entry.corpusFed, entry.length - entry.sharedPromptLength);
  }

  /** A released request's output is kept until neither the corpus nor shared text still needs it. */
  private dropOutputWhenDone(entry: RequestEntry): void {
    if (entry.released && !entry.corpusQueued && !entry.publishQueued) entry.output = null;
  }

  private queueForCorpus(entry: RequestEntry): void {
    if (entry.corpusQueued) return;
    entry.corpusQueued = true;
    this.corpusQueue.push(entry);
  }

  /** One request's new output tokens into its corpus stream. */
  private feedCorpus(corpus: Corpus, entry: RequestEntry): void {
    const output = entry.output;
    const group = entry.group;
    if (output === null || group === null) return;
    const produced = Math.max(0, entry.length - entry.sharedPromptLength);
    if (produced <= entry.corpusFed) return;
    this.streamIntoCorpus(corpus, entry.corpusStream!, group, output, entry.corpusFed, produced, entry.corpusFed, output);
    entry.corpusFed = produced;
  }

  /**
   * Appends text[from..to), output tokens from `offset` on, to a corpus stream of a request of
   * `group`, (re)starting the stream first where the corpus needs it: with the group's prompt the
   * first time the corpus sees that prompt, else with the CORPUS_RESTART_CONTEXT tokens before
   * `offset` (the prompt's tail, then `earlier`, the request's output so far), so matches run
   * across the restart. Without `earlier`, only a stream that starts at offset 0 gets context.
   */
  private streamIntoCorpus(corpus: Corpus, stream: CorpusStream, group: Group, text: ArrayLike<number>, from: number, to: number, offset: number, earlier: Int32Array | null): void {
    const prompt = group.prompt;
    if (!corpus.reserve(stream, to - from + Math.max(CORPUS_RESTART_CONTEXT, prompt.length))) {
      corpus.start(stream);
      // A prompt the corpus still holds is not indexed again for every sibling (half the work):
      // the stream starts with the prompt's last tokens instead.
      const promptHeld = corpus.currentEpoch - group.promptInCorpusEpoch <= 1;
      if (offset === 0 && !promptHeld) {
        corpus.append(stream, prompt, 0, prompt.length);
        group.promptInCorpusEpoch = corpus.currentEpoch;
      } else if (offset === 0 || earlier !== null) {
        const back = offset - CORPUS_RESTART_CONTEXT;
        if (back < 0) corpus.append(stream, prompt, Math.max(0, prompt.length + back), prompt.length);
        if (earlier !== null) corpus.append(stream, earlier, Math.max(0, back), offset);
      }
    }
    corpus.append(stream, text, from, to);
  }

  private queueForPublish(entry: RequestEntry): void {
    if (entry.publishQueued) return;
    entry.publishQueued = true;
    this.publishQueue.push(entry);
  }

  /**
   * This engine's text since the last call, for other engines (shareText): each request's new
   * output tokens (a released one's last, marked finished), and the groups opened meanwhile.
   */
  takeOutbound(): OutboundText {
    const deltas: TextDelta[] = [];
    for (const entry of this.publishQueue) {
      entry.publishQueued = false;
      const output = entry.output;
      const produced = Math.max(0, entry.length - entry.sharedPromptLength);
      if (output !== null && (produced > entry.published || entry.released)) {
        const tokens = output.slice(entry.published, produced);
        deltas.push({ group: entry.group!.key, source: entry.id, at: entry.published, tokens, finished: entry.released, output: entry.released ? output.slice(0, produced) : undefined });
        entry.published = produced;
      }
      this.dropOutputWhenDone(entry);
    }
    this.publishQueue.length = 0;
    const opened = this.opened;
    this.opened = [];
    return { opened, deltas };
  }

  /**
   * Text another engine produced for one of this engine's groups: indexed in the group as that
   * request's sequence (after the group's prompt, so contexts run across), continued by its later
   * deltas, closed when it finishes. A delta for a group this engine does not hold is ignored; an
   * overlap is trimmed; after a gap (lost messages) the sequence starts over from the delta.
   */
  applyRemote(delta: TextDelta): void {
    const group = this.groups.get(delta.group);
    if (group === undefined) {
      this.remoteIgnored++;
      return;
    }
    if (delta.tokens.length === 0 && !delta.finished) return;
    this.validateTokens(delta.tokens, 0, delta.tokens.length, 'remote');
    const automaton = group.automaton;
    const remote = (group.remote ??= new Map());
    let sequence = remote.get(delta.source);
    if (sequence !== undefined && delta.at > sequence.length) {
      automaton.closeCursor(sequence.cursor);
      remote.delete(delta.source);
      sequence = undefined;
    }
    if (sequence === undefined) {
      if (remote.size >= REMOTE_SEQUENCES_PER_GROUP) {
        this.remoteIgnored++;
        return;
      }
      sequence = { cursor: automaton.openCursor(), length: delta.at, corpusStream: this.corpus === null ? null : new CorpusStream() };
      if (delta.at === 0) for (let i = 0; i < group.prompt.length; i++) automaton.append(sequence.cursor, group.prompt[i]);
      remote.set(delta.source, sequence);
    }
    const tokens = delta.tokens;
    const from = Math.max(0, sequence.length - delta.at); // an overlap with what was applied
    const before = automaton.tokenCount;
    for (let i = from; i < tokens.length; i++) automaton.append(sequence.cursor, tokens[i]);
    if (sequence.corpusStream !== null && from < tokens.length) this.streamIntoCorpus(this.corpus!, sequence.corpusStream, group, tokens, from, tokens.length, delta.at + from, null);
    sequence.length = Math.max(sequence.length, delta.at + tokens.length);
    if (group.activeMembers === 0) this.historyTokenCount += automaton.tokenCount - before;
    if (delta.finished) {
      automaton.closeCursor(sequence.cursor);
      if (sequence.corpusStream !== null) this.corpus!.end(sequence.corpusStream);
      remote.delete(delta.source);
    }
  }

  /** Deltas of shared text dropped: for groups this engine does not hold, or beyond a group's bound. */
  get remoteDeltasIgnored(): number {
    return this.remoteIgnored;
  }

  stats(): EngineStats {
    let bytes = 0;
    let tokens = 0;
    for (const group of this.groups.values()) {
      bytes += group.automaton.byteSize() + group.prompt.byteLength;
      tokens += group.automaton.tokenCount;
    }
    for (const entry of this.requests.values()) {
      if (entry.own !== null) {
        bytes += entry.own.byteSize();
        tokens += entry.own.tokenCount;
      }
      if (entry.ngram !== null) {
        bytes += entry.ngram.byteSize();
        tokens += entry.ngram.size;
      }
      if (entry.output !== null) bytes += entry.output.byteLength;
    }
    const corpusTokens = this.corpus?.tokenCount ?? 0;
    const corpusBytes = this.corpus?.byteSize() ?? 0;
    bytes += corpusBytes;
    tokens += corpusTokens;
    return {
      requests: this.requests.size,
      groups: this.groups.size,
      historyGroups: this.history.size,
      historyTokens: this.historyTokenCount,
      tokensIndexed: tokens,
      bytes,
      historyEvictions: this.historyEvictionCount,
      corpusTokens,
      corpusBytes,
    };
  }

  // ------------------------------------------------------------------ internals

  private draftEntry(entry: RequestEntry, k: number, out: Int32Array, offset: number): number {
    if (entry.group !== null) {
      const automaton = entry.group.automaton;
      // Own repetition before a sibling's fresher occurrence; only where the group holds other text.
      if (entry.output !== null && automaton.tokenCount > entry.length) {
        const contextLength = draftingContextLength(automaton, entry.cursor);
        const length = ownRepeatDraft(entry.group.prompt, entry.sharedPromptLength, entry.output, entry.length, contextLength, OWN_REPEAT_WINDOW, k, out, offset);
        if (length > 0) return length;
      }
      const corpus = entry.corpusMatch === null ? null : this.corpusSource(entry);
      return recencyWalkDraft(entry.group.automaton, entry.cursor, k, out, offset, this.options, corpus, this.corpusScratch, this.groupScratch);
    }
    if (entry.own !== null) return seedDraft(entry.own, entry.cursor, k, out, offset);
    return entry.ngram!.draft(k, out, offset);
  }

  private ingest(entry: RequestEntry, tokens: ArrayLike<number>, from: number, to: number): void {
    if (entry.length + (to - from) > SuffixAutomaton.MAX_SEQUENCE_TOKENS) {
      throw sidecarError('INVALID_ARGUMENT', `request ${JSON.stringify(entry.id)} would exceed ${SuffixAutomaton.MAX_SEQUENCE_TOKENS} tokens`, 'tokens');
    }
    if (entry.group !== null) {
      const automaton = entry.group.automaton;
      for (let i = from; i < to; i++) automaton.append(entry.cursor, tokens[i]);
      if (entry.output !== null) {
        this.keepOutput(entry, tokens, from, to);
        if (entry.corpusStream !== null) this.queueForCorpus(entry);
        if (this.options.shareText) this.queueForPublish(entry);
      }
    } else if (entry.own !== null) {
      for (let i = from; i < to; i++) entry.own.append(entry.cursor, tokens[i]);
    } else {
      for (let i = from; i < to; i++) entry.ngram!.append(tokens[i]);
    }
    entry.length += to - from;
  }

  /** Keeps the request's tokens after its prompt, for the corpus when it finishes and for its match there. */
  private keepOutput(entry: RequestEntry, tokens: ArrayLike<number>, from: number, to: number): void {
    const skip = Math.max(0, entry.sharedPromptLength - entry.length); // tokens of the prompt in this delta
    const at = Math.max(0, entry.length - entry.sharedPromptLength);
    const count = to - from - skip;
    if (count <= 0) return;
    let output = entry.output!;
    if (at + count > output.length) entry.output = output = resizedInt32(output, grownCapacity(output.length, at + count));
    for (let i = 0; i < count; i++) output[at + i] = tokens[from + skip + i];
  }

  /**
   * The corpus generation to draft from, with the request's match in it (in corpusScratch). The
   * match reads the tokens that arrived since the last draft; after a long pause (the gate was off)
   * it restarts on the last CORPUS_MATCH_WINDOW tokens, so it never costs more than that per draft.
   */
  private corpusSource(entry: RequestEntry): SuffixAutomaton | null {
    const corpus = this.corpus!;
    const match = entry.corpusMatch!;
    const prompt = entry.group!.prompt;
    const output = entry.output!;
    const promptLength = entry.sharedPromptLength;
    let from = entry.corpusMatched;
    if (entry.length - from > CORPUS_MATCH_WINDOW) {
      corpus.resetMatch(match);
      from = entry.length - CORPUS_MATCH_WINDOW;
    }
    for (let i = from; i < entry.length; i++) corpus.advance(match, i < promptLength ? prompt[i] : output[i - promptLength]);
    entry.corpusMatched = entry.length;
    return corpus.draftSource(match, this.corpusScratch);
  }

  /** Throws TOKEN_OUT_OF_RANGE naming `field` unless tokens[from..to) are all token ids of the vocabulary. */
  validateTokens(tokens: ArrayLike<number>, from: number, to: number, field: string): void {
    const vocab = this.options.vocabSize;
    let bad = -1;
    if (tokens instanceof Uint32Array) {
      // The fast lane's tokens: integers >= 0 by type, so one comparison each (long contexts).
      for (let i = from; i < to; i++) {
        if (tokens[i] >= vocab) {
          bad = i;
          break;
        }
      }
    } else {
      for (let i = from; i < to; i++) {
        const t = tokens[i];
        if (!(Number.isInteger(t) && t >= 0 && t < vocab)) {
          bad = i;
          break;
        }
      }
    }
    if (bad >= 0) throw sidecarError('TOKEN_OUT_OF_RANGE', `${field}[${bad}] = ${tokens[bad]}, vocabulary size ${vocab}`, field);
  }

  /** `indexed`: tokens of the context indexed now; `plannedIn`: the group key the request was announced for (its tokens are planned there). */
  private joinGroup(id: string, context: ArrayLike<number>, promptLength: number, expectedLength: number, indexed: number, plannedIn?: string): Group {
    // Without sibling sharing every request is a group of its own.
    let key = this.options.siblings ? promptKey(context, promptLength) : `req:${id}`;
    let group = this.groups.get(key);
    // A hash collision with a different prompt: keep them apart under a disambiguated key.
    while (group !== undefined && !(group.prompt.length === promptLength && samePrefix(group.prompt, context, promptLength))) {
      key += '+';
      group = this.groups.get(key);
    }
    if (group === undefined && this.options.siblings) group = this.groupExtendedBy(context, promptLength);
    if (group === undefined) {
      const prompt = new Int32Array(promptLength); // a plain loop: Int32Array.from with a mapper is slow on long prompts
      for (let i = 0; i < promptLength; i++) prompt[i] = context[i];
      // Room for the siblings announced and still to open as well: the arrays grow once, not per sibling.
      group = new Group(key, prompt, expectedLength + (this.announcedByGroup.get(key) ?? 0), this.memory);
      this.groups.set(key, group);
      this.promptLengthCounts.set(promptLength, (this.promptLengthCounts.get(promptLength) ?? 0) + 1);
      if (this.options.shareText) this.opened.push(key);
    } else {
      // A member whose text is still to come (a backlog): room for all of it at the next growth,
      // not 1.5x at a time as it is indexed.
      if (expectedLength > indexed && plannedIn !== key) group.automaton.expect(expectedLength - group.prompt.length);
      if (group.activeMembers === 0) {
        group.automaton.abandonCompaction();
        this.history.delete(group.key);
        this.historyTokenCount -= group.automaton.tokenCount;
        if (this.options.shareText) this.opened.push(group.key);
      }
    }
    group.activeMembers++;
    return group;
  }

  /**
   * The group with the longest prompt that this prompt extends (live or in history), if any: a
   * later turn of a conversation, whose prompt is an earlier turn's whole context. One pass over
   * the prompt, probing only at lengths some group's prompt has, so the cost is that of reading
   * the prompt, whatever the number of groups; the longest candidates are verified token by token.
   */
  private groupExtendedBy(context: ArrayLike<number>, promptLength: number): Group | undefined {
    const hash = new PrefixHash();
    const candidates: Group[] = [];
    for (let i = 0; i < promptLength - 1; i++) {
      hash.push(context[i]);
      if (!this.promptLengthCounts.has(i + 1)) continue;
      const group = this.groups.get(hash.key(i + 1));
      if (group !== undefined) candidates.push(group);
    }
    for (let c = candidates.length - 1; c >= Math.max(0, candidates.length - PREFIX_CANDIDATES_VERIFIED); c--) {
      const group = candidates[c];
      if (samePrefix(group.prompt, context, group.prompt.length)) return group;
    }
    return undefined;
  }

  /** Forgets a group (no member, not kept as history). */
  private dropGroup(group: Group): void {
    this.groups.delete(group.key);
    const length = group.prompt.length;
    const count = (this.promptLengthCounts.get(length) ?? 1) - 1;
    if (count > 0) this.promptLengthCounts.set(length, count);
    else this.promptLengthCounts.delete(length);
  }

  /** A group whose last member left: kept as history under the token budget, else dropped. */
  private retire(group: Group): void {
    if (!this.options.siblings || this.options.historyTokens <= 0) {
      this.dropGroup(group);
      return;
    }
    this.compactQueue.push(group);
    this.history.set(group.key, group);
    this.historyTokenCount += group.automaton.tokenCount;
    this.enforceHistoryBudget(this.options.historyTokens);
  }

  /** Evicts least recently used history groups until at most `budget` tokens remain. */
  enforceHistoryBudget(budget: number): number {
    let evicted = 0;
    for (const [key, group] of this.history) {
      if (this.historyTokenCount <= budget) break;
      this.history.delete(key);
      this.dropGroup(group);
      this.historyTokenCount -= group.automaton.tokenCount;
      this.historyEvictionCount++;
      evicted++;
    }
    return evicted;
  }
}
