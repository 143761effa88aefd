/**
 * Online generalized suffix automaton over token ids, stored in typed arrays.
 *
 * One automaton indexes every substring of one or more token sequences ("cursors"): a request's own
 * context, or the contexts of all requests that share a prompt (siblings). Sequences may be
 * appended to in any interleaving, which is what live sibling drafting needs. Append is amortized
 * O(1) per token (plus a bounded walk that refreshes recency, see RECENCY_DEPTH).
 *
 * Storage is typed arrays of interleaved records: no per-state objects or Maps, so a GC pass never
 * walks the states, and one state's fields share a cache line. A state's record holds one of its
 * transitions, its recent continuation's where it has one (most states have one or two
 * transitions); the others are a singly linked edge list. A state with many transitions (the root,
 * single-token contexts) keeps them all in an open-addressing table of its own, so lookups stay
 * O(1) on large vocabularies.
 */
import { type ArraySupply, type GrowthMemory, grownCapacity, HEAP_ARRAYS, resizedInt32 } from './typed.js';

export const ROOT = 0;
export const NONE = -1;
/**
 * The one empty array every automaton starts its unused arrays with (no positions, no tables yet):
 * each typed array costs a few hundred bytes of heap, which 200k tiny requests multiply.
 */
const NO_ELEMENTS = new Int32Array(0);

/**
 * States whose transition count reaches this keep their transitions in a table of their own (at
 * most MAX_DEGREE). Below it a list of up to 10 edge records costs less memory than a table, and
 * in `npm run bench` 12 stepped and ingested as fast as 6 (docs/results.md).
 */
const HASH_DEGREE = 12;
/**
 * Most transitions per slot of a state's table; past it the table doubles. A state's table is
 * one run of memory, so a probe past its slot stays in the cache line it is in (8 slots), and at
 * this load a table costs 11 to 21 bytes per transition. A shared table of [state, token, edge]
 * entries, beside edge records, cost 36 to 44.
 */
const TABLE_LOAD = 0.75;
/** The first table a state gets, when its transitions reach HASH_DEGREE: the smallest that holds them within TABLE_LOAD. */
const FIRST_TABLE_SLOTS = 2 ** Math.ceil(Math.log2(HASH_DEGREE / TABLE_LOAD));
/** A table's header ahead of its [token, target] slots: its slot count, then its transitions. */
const TABLE_HEADER = 2;
/**
 * How many states up the suffix-link chain get their "recent continuation" refreshed per append.
 * The first ones are the longest (most specific) contexts, which are the ones drafting reads;
 * a bound keeps append O(1) on degenerate, highly repetitive sequences.
 */
export const RECENCY_DEPTH = 4;
/**
 * A context's continuation changes only when the new one has out-voted it: each occurrence
 * followed by the kept token adds a vote (up to VOTE_CAP), each other one takes one away, and
 * at zero the newest token takes over. A continuation several occurrences agreed on survives one
 * odd sample; a cap this low still lets the freshest text win after a few occurrences
 * (docs/results.md).
 */
const VOTE_CAP = 4;

// Interleaved record layouts.
const STATE_STRIDE = 5;
/** States room is made for per expected token: a suffix automaton has at most 2n states. */
const STATES_PER_PLANNED_TOKEN = 2;
/**
 * Edge records room is made for per expected token. Transitions kept in the state records leave
 * about 0.7 per token to the lists on real text (2.2 transitions, 1.5 states per token); more
 * grows the array as usual.
 */
const EDGES_PER_PLANNED_TOKEN = 1;
const LEN = 0; // length in the low LENGTH_BITS; above it the saturating transition count (degree), then the votes
const LENGTH_BITS = 24;
const LENGTH_MASK = (1 << LENGTH_BITS) - 1;
/** The degree tells whether a state has transitions and whether they are hashed (HASH_DEGREE), so 4 bits do. */
const MAX_DEGREE = 15;
const DEGREE_MASK = 0xf;
/**
 * The support of the recent continuation (VOTE_CAP), in the same word: no second cache line per
 * state. Zero until the state has been followed once: then the state has no recent continuation.
 */
const VOTE_SHIFT = 28;
const VOTE_MASK = 0x7;
const LINK = 1;
const HEAD = 2; // first edge of the state's edge list; at HASH_DEGREE and above, its table (tables offset)
/**
 * The transition kept in the record. Below HASH_DEGREE: the recent continuation's (votes > 0) or,
 * before there is one, the first transition; the edge list holds the others. At HASH_DEGREE and
 * above every transition is in the state's table, INLINE_TOKEN is the recent continuation's token
 * (or NONE) and INLINE_TARGET is unused: the recent continuation then changes without moving
 * table entries.
 */
const INLINE_TOKEN = 3;
const INLINE_TARGET = 4;
const EDGE_STRIDE = 3;
const TOKEN = 0;
const TARGET = 1;
const NEXT = 2;

/**
 * A running match of some other text against an automaton (matching statistics): the longest
 * suffix of the text read so far that occurs in the automaton, as its state and length.
 */
export class Match {
  state = ROOT;
  length = 0;

  reset(): void {
    this.state = ROOT;
    this.length = 0;
  }

  copy(from: Match): void {
    this.state = from.state;
    this.length = from.length;
  }
}

export interface AutomatonOptions {
  /** Keep a token log and each state's first end position (needed for position-based drafting). */
  positions?: boolean;
  /** Initial capacity in tokens. */
  initialTokens?: number;
  /** Where large grown states and edges arrays come from (see GrowthMemory). */
  memory?: GrowthMemory | null;
}

export class SuffixAutomaton {
  readonly positions: boolean;
  // States: one interleaved record per state (STATE_STRIDE ints), so the fields a step touches
  // share a cache line; with 128 long contexts per batch, locality decides the step cost.
  private states: Int32Array;
  private firstEnd: Int32Array; // log index where the first occurrence ends (positions only)
  private stateCount = 0;
  private stateCapacity: number;
  // Edges: interleaved [token, target, next] records of the transitions not in state records; a
  // state's form a linked list.
  private edgeData: Int32Array;
  private edgeCount = 0;
  private edgeCapacity: number;
  /** Edge records given up by states that moved to a table, for reuse (linked through NEXT). */
  private freeEdge = NONE;
  // Tables of high-degree states, one block each: [slot count, transitions, then [token, target]
  // slots (token NONE: free)], open addressing. Blocks a table outgrew are reused by size.
  private tables: Int32Array;
  private tablesUsed = 0;
  /** Per log2 of the slot count, the first block free for reuse (linked through its second word); null until one is. */
  private freeTables: Int32Array | null = null;
  private tableTransitions = 0;
  private tableSlots = 0;
  /** Elements of the tables in use (tablesUsed less the blocks free for reuse): what a compaction packs them into. */
  private tableElements = 0;
  // Token log (positions only): every appended token, with the next log index of the same cursor.
  private logToken: Int32Array;
  private logNext: Int32Array | null = null; // null while only one cursor ever existed: next = i + 1
  private logLength = 0;
  // Cursors (sequences).
  private cursorLast: Int32Array;
  private cursorLogTail: Int32Array;
  private cursorLength: Int32Array;
  private cursorOpen: Uint8Array;
  private cursorsEverOpened = 0;
  /** Ids handed out so far, and the closed ones free for reuse (a stack). */
  private cursorIds = 0;
  private freeCursors: Int32Array = new Int32Array(4);
  private freeCursorCount = 0;
  private openCursors = 0;
  private tokensAppended = 0;
  /** Tokens the automaton is expected to hold in all (expect()): growth goes there in one copy. */
  private plannedTokens = 0;
  /** A compaction under way (compactSome): the arrays being filled, and how far. */
  private compaction: {
    from: Int32Array[];
    used: number[];
    to: Int32Array[];
    array: number;
    copied: number;
    tokens: number;
    /** The tables packed without the blocks free for reuse (null until taken), states scanned, elements packed, of the next table copied. */
    tablesTo: Int32Array | null;
    scanned: number;
    packed: number;
    tableCopied: number;
  } | null = null;

  /** Where large grown arrays come from; may be set before the automaton has grown any. */
  memory: GrowthMemory | null;
  /** Element of states / edgeData at which to tell the memory how far the writer is (GrowthMemory.ahead). */
  private statesAhead = Number.POSITIVE_INFINITY;
  private edgesAhead = Number.POSITIVE_INFINITY;

  constructor(options: AutomatonOptions = {}) {
    this.positions = options.positions ?? false;
    this.memory = options.memory ?? null;
    const tokens = Math.max(16, options.initialTokens ?? 256);
    const states = tokens * STATES_PER_PLANNED_TOKEN;
    this.stateCapacity = states;
    this.plannedTokens = tokens;
    this.states = this.memory?.allocate(states * STATE_STRIDE) ?? new Int32Array(states * STATE_STRIDE);
    this.statesAhead = this.aheadFrom(0);
    this.firstEnd = this.positions ? new Int32Array(states) : NO_ELEMENTS;
    this.edgeCapacity = tokens * EDGES_PER_PLANNED_TOKEN;
    this.edgeData = this.memory?.allocate(this.edgeCapacity * EDGE_STRIDE) ?? new Int32Array(this.edgeCapacity * EDGE_STRIDE);
    this.edgesAhead = this.aheadFrom(0);
    this.tables = NO_ELEMENTS;
    this.logToken = this.positions ? new Int32Array(tokens) : NO_ELEMENTS;
    this.cursorLast = new Int32Array(4);
    this.cursorLogTail = new Int32Array(4);
    this.cursorLength = new Int32Array(4);
    this.cursorOpen = new Uint8Array(4);
    this.newState(0, NONE, NONE);
  }

  // ---------------------------------------------------------------- cursors

  /** Starts a new sequence; returns its cursor id. */
  openCursor(): number {
    // A closed cursor's id is reused (last closed first); O(1) however many sequences exist.
    const id = this.freeCursorCount > 0 ? this.freeCursors[--this.freeCursorCount] : this.cursorIds++;
    if (id >= this.cursorOpen.length) {
      const capacity = this.cursorOpen.length * 2;
      this.cursorLast = resizedInt32(this.cursorLast, capacity);
      this.cursorLogTail = resizedInt32(this.cursorLogTail, capacity);
      this.cursorLength = resizedInt32(this.cursorLength, capacity);
      const open = new Uint8Array(capacity);
      open.set(this.cursorOpen);
      this.cursorOpen = open;
    }
    this.cursorOpen[id] = 1;
    this.cursorLast[id] = ROOT;
    this.cursorLogTail[id] = NONE;
    this.cursorLength[id] = 0;
    this.openCursors++;
    this.cursorsEverOpened++;
    if (this.positions && this.cursorsEverOpened === 2 && this.logNext === null) {
      // From now on log entries of different cursors interleave: materialize the next links.
      const next = new Int32Array(this.logToken.length);
      for (let i = 0; i < this.logLength; i++) next[i] = i + 1 < this.logLength ? i + 1 : NONE;
      this.logNext = next;
    }
    return id;
  }

  /** Ends a sequence: its tokens stay indexed (siblings and history draft from them). */
  closeCursor(cursor: number): void {
    if (this.cursorOpen[cursor] !== 1) return;
    this.cursorOpen[cursor] = 0;
    if (this.freeCursorCount >= this.freeCursors.length) this.freeCursors = resizedInt32(this.freeCursors, this.freeCursors.length * 2);
    this.freeCursors[this.freeCursorCount++] = cursor;
    this.openCursors--;
  }

  isOpen(cursor: number): boolean {
    return cursor >= 0 && cursor < this.cursorOpen.length && this.cursorOpen[cursor] === 1;
  }

  /** The state of the whole sequence so far (its longest context). */
  lastState(cursor: number): number {
    return this.cursorLast[cursor];
  }

  /** Tokens appended to this cursor. */
  cursorTokens(cursor: number): number {
    return this.cursorLength[cursor];
  }

  /** Log index of the cursor's last token (positions only). */
  cursorLogEnd(cursor: number): number {
    return this.cursorLogTail[cursor];
  }

  get openCursorCount(): number {
    return this.openCursors;
  }

  // ---------------------------------------------------------------- queries

  get size(): number {
    return this.stateCount;
  }

  get edges(): number {
    return this.edgeCount;
  }

  get tokenCount(): number {
    return this.tokensAppended;
  }

  /** Transitions in the tables of high-degree states, and those tables' slots (their capacity). */
  get hashedTransitions(): number {
    return this.tableTransitions;
  }

  get hashSlotCount(): number {
    return this.tableSlots;
  }

  length(state: number): number {
    return this.states[state * STATE_STRIDE + LEN] & LENGTH_MASK;
  }

  suffixLink(state: number): number {
    return this.states[state * STATE_STRIDE + LINK];
  }

  /** Token that followed this state's contexts in most of their recent occurrences (VOTE_CAP), or NONE. */
  recentToken(state: number): number {
    const base = state * STATE_STRIDE;
    return votesOf(this.states[base + LEN]) === 0 ? NONE : this.states[base + INLINE_TOKEN];
  }

  /** transition(state, recentToken(state)): in the state's record, except for hashed states. */
  recentTarget(state: number): number {
    const base = state * STATE_STRIDE;
    const word = this.states[base + LEN];
    if (votesOf(word) === 0) return NONE;
    if (degreeOf(word) < HASH_DEGREE) return this.states[base + INLINE_TARGET];
    const slot = this.tableSlot(this.states[base + HEAD], this.states[base + INLINE_TOKEN]);
    return slot === NONE ? NONE : this.tables[slot + 1];
  }

  /** Log index at which the first occurrence of this state's contexts ends (positions only). */
  firstEndOf(state: number): number {
    return this.firstEnd[state];
  }

  tokenAt(logIndex: number): number {
    return this.logToken[logIndex];
  }

  /** The log index following `logIndex` in the same sequence, or NONE. */
  nextLogIndex(logIndex: number): number {
    if (this.logNext !== null) return this.logNext[logIndex];
    return logIndex + 1 < this.logLength ? logIndex + 1 : NONE;
  }

  /** Target of the transition on `token`, or NONE. */
  transition(state: number, token: number): number {
    const base = state * STATE_STRIDE;
    const degree = degreeOf(this.states[base + LEN]);
    if (degree === 0) return NONE;
    if (degree >= HASH_DEGREE) {
      const slot = this.tableSlot(this.states[base + HEAD], token);
      return slot === NONE ? NONE : this.tables[slot + 1];
    }
    if (this.states[base + INLINE_TOKEN] === token) return this.states[base + INLINE_TARGET];
    const e = this.listEdge(base, token);
    return e === NONE ? NONE : this.edgeData[e * EDGE_STRIDE + TARGET];
  }

  /** The edge record on `token` in the list of the state whose record is at `base` (below HASH_DEGREE), or NONE. */
  private listEdge(base: number, token: number): number {
    const edges = this.edgeData;
    let e = this.states[base + HEAD];
    while (e !== NONE && edges[e * EDGE_STRIDE + TOKEN] !== token) e = edges[e * EDGE_STRIDE + NEXT];
    return e;
  }

  /**
   * Extends a running match by the text's next token: the longest suffix of the matched text plus
   * `token` that occurs here (the empty context if none). Amortized O(1) per token.
   */
  extendMatch(match: Match, token: number): void {
    this.settle(match);
    let state = match.state;
    let length = match.length;
    let next = this.transition(state, token);
    while (next === NONE && state !== ROOT) {
      state = this.suffixLink(state);
      length = this.length(state);
      next = this.transition(state, token);
    }
    match.state = next === NONE ? ROOT : next;
    match.length = next === NONE ? 0 : length + 1;
  }

  /**
   * Moves a match to the state that now holds its context: sequences appended since it reached
   * its state may have split that state, leaving the shorter contexts to a new state up the
   * suffix chain.
   */
  settle(match: Match): void {
    let state = match.state;
    while (state !== ROOT && match.length <= this.length(this.suffixLink(state))) state = this.suffixLink(state);
    match.state = state;
  }

  /** Calls `visit(token, target)` for each outgoing transition (cold paths: tests, introspection). */
  forEachTransition(state: number, visit: (token: number, target: number) => void): void {
    const base = state * STATE_STRIDE;
    const degree = degreeOf(this.states[base + LEN]);
    if (degree >= HASH_DEGREE) {
      const table = this.states[base + HEAD];
      const end = table + TABLE_HEADER + 2 * this.tables[table];
      for (let slot = table + TABLE_HEADER; slot < end; slot += 2) if (this.tables[slot] !== NONE) visit(this.tables[slot], this.tables[slot + 1]);
      return;
    }
    if (degree > 0) visit(this.states[base + INLINE_TOKEN], this.states[base + INLINE_TARGET]);
    const edges = this.edgeData;
    for (let e = this.states[base + HEAD]; e !== NONE; e = edges[e * EDGE_STRIDE + NEXT]) {
      visit(edges[e * EDGE_STRIDE + TOKEN], edges[e * EDGE_STRIDE + TARGET]);
    }
  }

  /** Bytes held by this automaton's typed arrays (capacity, not just use). */
  byteSize(): number {
    return (
      this.states.byteLength +
      this.firstEnd.byteLength +
      this.edgeData.byteLength +
      this.tables.byteLength +
      (this.freeTables?.byteLength ?? 0) +
      this.logToken.byteLength +
      (this.logNext?.byteLength ?? 0) +
      this.cursorLast.byteLength * 3 +
      this.freeCursors.byteLength +
      this.cursorOpen.byteLength
    );
  }

  /** Shrinks every array to what is in use (a finished group keeps no slack in history), at once. */
  compact(): void {
    while (!this.compactSome(Number.POSITIVE_INFINITY));
  }

  /** Drops a compaction under way and the arrays it was filling (the automaton is in use again). */
  abandonCompaction(): void {
    this.compaction = null;
  }

  /** Array elements compactSome() still has to copy (all that are in use, before it starts). */
  get compactionElementsLeft(): number {
    const compaction = this.compaction;
    if (compaction === null || compaction.tokens !== this.tokensAppended) {
      return this.compactionSources().reduce((sum, [, used]) => sum + used, 0) + this.stateCount + this.tableElements;
    }
    let left = -compaction.copied;
    for (let i = compaction.array; i < compaction.used.length; i++) left += compaction.used[i];
    return left + this.stateCount - compaction.scanned + this.tableElements - compaction.packed - compaction.tableCopied;
  }

  /** The arrays a compaction shrinks, in the order it copies them, each with the elements in use. */
  private compactionSources(): Array<[Int32Array, number]> {
    const positions = this.positions;
    return [
      [this.states, this.stateCount * STATE_STRIDE],
      [this.firstEnd, positions ? this.stateCount : 0],
      [this.edgeData, this.edgeCount * EDGE_STRIDE],
      [this.logToken, positions ? this.logLength : 0],
      [this.logNext ?? this.logToken, positions && this.logNext !== null ? this.logLength : 0],
    ];
  }

  /**
   * compact() in pieces: copies at most `maxElements` array elements into the shrunk arrays per
   * call, and true once they are the automaton's. Reading goes on from the old arrays meanwhile;
   * after an append it starts over (the old arrays changed). Compacting a retired 274k-token
   * group at once took 31 to 50 ms here, which a step arriving then would wait for. The shrunk
   * arrays come from `arrays`, one when the copy reaches it; while it has none ready, nothing is copied.
   */
  compactSome(maxElements: number, arrays: ArraySupply = HEAP_ARRAYS): boolean {
    let compaction = this.compaction;
    // Appended to since it began (every change to the arrays is an append): what it copied is stale.
    if (compaction !== null && compaction.tokens !== this.tokensAppended) compaction = this.compaction = null;
    if (compaction === null) {
      const pairs = this.compactionSources();
      compaction = this.compaction = {
        from: pairs.map(([array]) => array),
        used: pairs.map(([, used]) => used),
        to: [],
        array: 0,
        copied: 0,
        tokens: this.tokensAppended,
        tablesTo: null,
        scanned: 0,
        packed: 0,
        tableCopied: 0,
      };
    }
    let budget = maxElements;
    while (compaction.array < compaction.used.length) {
      const used = compaction.used[compaction.array];
      // Each array when the copy reaches it: allocating a million-token group's all at once took
      // 2 to 7 ms of its first slice.
      if (compaction.to.length === compaction.array) {
        const array = used === 0 ? NO_ELEMENTS : arrays.take(used);
        if (array === null) return false;
        compaction.to.push(array);
      }
      const to = compaction.to[compaction.array];
      const end = Math.min(used, compaction.copied + budget);
      to.set(compaction.from[compaction.array].subarray(compaction.copied, end), compaction.copied);
      budget -= end - compaction.copied;
      compaction.copied = end;
      if (end < used) return false;
      compaction.array++;
      compaction.copied = 0;
    }
    if (!this.packTablesSome(compaction, budget, arrays)) return false;
    const [states, firstEnd, edgeData, logToken, logNext] = compaction.to;
    this.tables = compaction.tablesTo!;
    this.tablesUsed = this.tableElements;
    this.freeTables = null;
    this.compaction = null;
    this.plannedTokens = 0; // nothing announced: the next growth is the usual 1.5x
    this.stateCapacity = this.stateCount;
    this.memory?.release(this.states);
    this.memory?.release(this.edgeData);
    this.states = states;
    this.edgeCapacity = this.edgeCount;
    this.edgeData = edgeData;
    this.statesAhead = this.edgesAhead = Number.POSITIVE_INFINITY; // full: the next append grows them
    if (this.positions) {
      this.firstEnd = firstEnd;
      this.logToken = logToken;
      if (this.logNext !== null) this.logNext = logNext;
    }
    return true;
  }

  /**
   * The tables packed one after another, leaving out the blocks free for reuse, in pieces of at
   * most `budget` elements (a state scanned or a table element copied counts one; a large table
   * takes several pieces): each table state's new offset goes into the states array copied
   * before. True once all are packed.
   */
  private packTablesSome(compaction: NonNullable<SuffixAutomaton['compaction']>, budget: number, arrays: ArraySupply): boolean {
    if (compaction.tablesTo === null) {
      compaction.tablesTo = this.tableElements === 0 ? NO_ELEMENTS : arrays.take(this.tableElements);
      if (compaction.tablesTo === null) return false;
    }
    const to = compaction.tablesTo;
    const from = this.tables;
    const states = compaction.to[0];
    let state = compaction.scanned;
    while (state < this.stateCount && budget > 0) {
      const base = state * STATE_STRIDE;
      budget--;
      if (degreeOf(states[base + LEN]) < HASH_DEGREE) {
        state++;
        continue;
      }
      const table = states[base + HEAD];
      const elements = TABLE_HEADER + 2 * from[table];
      const end = Math.min(elements, compaction.tableCopied + budget);
      to.set(from.subarray(table + compaction.tableCopied, table + end), compaction.packed + compaction.tableCopied);
      budget -= end - compaction.tableCopied;
      if (end < elements) {
        compaction.tableCopied = end;
        break;
      }
      states[base + HEAD] = compaction.packed;
      compaction.packed += elements;
      compaction.tableCopied = 0;
      state++;
    }
    compaction.scanned = state;
    return state === this.stateCount;
  }

  /**
   * Announces `tokens` more tokens to come (a long context joining, indexed over many steps): the
   * next growth makes room for all of them at once. Growing by 1.5x instead would copy the arrays
   * again and again as sixteen 200k-token siblings are indexed, and on a VM every copy's fresh
   * pages cost milliseconds per megabyte. Nothing is allocated here; untouched capacity costs
   * address space only.
   */
  expect(tokens: number): void {
    this.plannedTokens = Math.max(this.plannedTokens, this.tokensAppended) + Math.max(0, tokens);
  }

  // ---------------------------------------------------------------- append

  /** Longest sequence one automaton can index (state lengths share a word with the degree). */
  static readonly MAX_SEQUENCE_TOKENS = LENGTH_MASK;

  /** Appends one token to a sequence. Returns the sequence's new last state. */
  append(cursor: number, token: number): number {
    const previous = this.cursorLast[cursor];
    const last = this.extend(previous, token);
    this.cursorLast[cursor] = last;
    this.cursorLength[cursor]++;
    this.tokensAppended++;
    if (this.positions) this.logAppend(cursor, token, last);
    // Every context that ended the sequence before this token has now been followed by it: the
    // nearest ones (RECENCY_DEPTH up the suffix chain) count it as a vote for their continuation.
    const data = this.states;
    let state = previous;
    for (let depth = 0; depth < RECENCY_DEPTH && state !== NONE; depth++) {
      const base = state * STATE_STRIDE;
      const word = data[base + LEN];
      const support = votesOf(word);
      let next = support;
      if (support > 0 && data[base + INLINE_TOKEN] === token) {
        if (support < VOTE_CAP) next = support + 1;
      } else if (support > 1) {
        next = support - 1;
      } else if (this.makeRecent(state, token)) {
        next = 1;
      }
      if (next !== support) data[base + LEN] = (word & ~(VOTE_MASK << VOTE_SHIFT)) | (next << VOTE_SHIFT);
      state = data[base + LINK];
    }
    return last;
  }

  private logAppend(cursor: number, token: number, last: number): void {
    const index = this.logLength;
    if (index >= this.logToken.length) {
      const capacity = grownCapacity(this.logToken.length, index + 1);
      this.logToken = resizedInt32(this.logToken, capacity);
      if (this.logNext !== null) this.logNext = resizedInt32(this.logNext, capacity, NONE);
    }
    this.logToken[index] = token;
    if (this.logNext !== null) {
      this.logNext[index] = NONE;
      const tail = this.cursorLogTail[cursor];
      if (tail !== NONE) this.logNext[tail] = index;
    }
    this.cursorLogTail[cursor] = index;
    this.logLength = index + 1;
    // A state created by this append ends first here; an existing one keeps its earlier end.
    if (this.firstEnd[last] === NONE) this.firstEnd[last] = index;
  }

  /** Generalized (multi-sequence) online extension from state `p` by `token`. */
  private extend(p: number, token: number): number {
    const existing = this.transition(p, token);
    if (existing !== NONE) {
      // The extended sequence already occurs (e.g. a sibling produced the same prefix).
      if (this.length(existing) === this.length(p) + 1) return existing;
      return this.split(p, token, existing);
    }
    const cur = this.newState(this.length(p) + 1, NONE, NONE);
    while (p !== NONE && this.transition(p, token) === NONE) {
      this.addEdge(p, token, cur);
      p = this.suffixLink(p);
    }
    let suffix = ROOT;
    if (p !== NONE) {
      const q = this.transition(p, token);
      suffix = this.length(p) + 1 === this.length(q) ? q : this.split(p, token, q);
    }
    // Stored after split(): it may have grown (replaced) the state array.
    this.states[cur * STATE_STRIDE + LINK] = suffix;
    return cur;
  }

  /** Clones `q` at length len(p)+1 and redirects p's chain to the clone; returns the clone. */
  private split(p: number, token: number, q: number): number {
    const clone = this.newState(this.length(p) + 1, this.suffixLink(q), this.positions ? this.firstEnd[q] : NONE);
    const qBase = q * STATE_STRIDE;
    const cloneBase = clone * STATE_STRIDE;
    // q's transitions, degree, votes and recent continuation, in the same places as q's.
    const qWord = this.states[qBase + LEN];
    const qDegree = degreeOf(qWord);
    this.states[cloneBase + INLINE_TOKEN] = this.states[qBase + INLINE_TOKEN];
    this.states[cloneBase + INLINE_TARGET] = this.states[qBase + INLINE_TARGET];
    if (qDegree >= HASH_DEGREE) {
      this.states[cloneBase + HEAD] = this.copiedTable(this.states[qBase + HEAD]);
    } else {
      for (let e = this.states[qBase + HEAD]; e !== NONE; e = this.edgeData[e * EDGE_STRIDE + NEXT]) {
        this.pushEdge(clone, this.edgeData[e * EDGE_STRIDE + TOKEN], this.edgeData[e * EDGE_STRIDE + TARGET]);
      }
    }
    this.states[cloneBase + LEN] |= qWord & ((DEGREE_MASK << LENGTH_BITS) | (VOTE_MASK << VOTE_SHIFT));
    this.states[qBase + LINK] = clone;
    while (p !== NONE && this.redirect(p, token, q, clone)) p = this.suffixLink(p);
    return clone;
  }

  /** Points `state`'s transition on `token` at `to` if it points at `from`; false if it does not. */
  private redirect(state: number, token: number, from: number, to: number): boolean {
    const base = state * STATE_STRIDE;
    const degree = degreeOf(this.states[base + LEN]);
    if (degree >= HASH_DEGREE) {
      const slot = this.tableSlot(this.states[base + HEAD], token);
      if (slot === NONE || this.tables[slot + 1] !== from) return false;
      this.tables[slot + 1] = to;
      return true;
    }
    if (degree > 0 && this.states[base + INLINE_TOKEN] === token) {
      if (this.states[base + INLINE_TARGET] !== from) return false;
      this.states[base + INLINE_TARGET] = to;
      return true;
    }
    const e = this.listEdge(base, token);
    if (e === NONE || this.edgeData[e * EDGE_STRIDE + TARGET] !== from) return false;
    this.edgeData[e * EDGE_STRIDE + TARGET] = to;
    return true;
  }

  /**
   * Makes `token` the state's recent continuation (its votes are set by the caller): below
   * HASH_DEGREE its transition trades places with the one in the record. False where the state
   * has no transition on `token` (every context just followed by a token has one).
   */
  private makeRecent(state: number, token: number): boolean {
    const base = state * STATE_STRIDE;
    const states = this.states;
    const degree = degreeOf(states[base + LEN]);
    if (degree >= HASH_DEGREE) {
      states[base + INLINE_TOKEN] = token;
      return true;
    }
    if (degree === 0) return false;
    if (states[base + INLINE_TOKEN] === token) return true;
    const e = this.listEdge(base, token);
    if (e === NONE) return false;
    const edges = this.edgeData;
    const at = e * EDGE_STRIDE;
    const target = edges[at + TARGET];
    edges[at + TOKEN] = states[base + INLINE_TOKEN];
    edges[at + TARGET] = states[base + INLINE_TARGET];
    states[base + INLINE_TOKEN] = token;
    states[base + INLINE_TARGET] = target;
    return true;
  }

  private newState(length: number, suffixLink: number, firstEnd: number): number {
    const id = this.stateCount;
    if (id >= this.stateCapacity) this.growStates(id + 1);
    const base = id * STATE_STRIDE;
    if (base >= this.statesAhead) this.statesAhead = this.memory!.ahead(this.states, base);
    this.states[base + LEN] = length; // degree 0 in the top bits
    this.states[base + LINK] = suffixLink;
    this.states[base + HEAD] = NONE;
    this.states[base + INLINE_TOKEN] = NONE;
    this.states[base + INLINE_TARGET] = NONE;
    if (this.positions) this.firstEnd[id] = firstEnd;
    this.stateCount = id + 1;
    return id;
  }

  private growStates(needed: number): void {
    const capacity = Math.max(grownCapacity(this.stateCapacity, needed), this.plannedTokens * STATES_PER_PLANNED_TOKEN);
    this.states = this.grown(this.states, capacity * STATE_STRIDE);
    this.statesAhead = this.aheadFrom(this.stateCount * STATE_STRIDE);
    if (this.positions) this.firstEnd = resizedInt32(this.firstEnd, capacity);
    this.stateCapacity = capacity;
  }

  /** `current` grown to `length` elements, in memory from `this.memory` where it gives some. */
  private grown(current: Int32Array, length: number): Int32Array {
    const next = this.memory?.allocate(length) ?? null;
    this.memory?.release(current);
    if (next === null) return resizedInt32(current, length);
    next.set(current);
    return next;
  }

  /** Where the next GrowthMemory.ahead() call is due for an array written from `written` on. */
  private aheadFrom(written: number): number {
    return this.memory === null ? Number.POSITIVE_INFINITY : written;
  }

  // ---------------------------------------------------------------- edges

  private addEdge(state: number, token: number, target: number): void {
    const base = state * STATE_STRIDE;
    const degree = degreeOf(this.states[base + LEN]);
    if (degree < MAX_DEGREE) this.states[base + LEN] += 1 << LENGTH_BITS;
    if (degree === 0) {
      this.states[base + INLINE_TOKEN] = token;
      this.states[base + INLINE_TARGET] = target;
    } else if (degree + 1 < HASH_DEGREE) {
      this.pushEdge(state, token, target);
    } else if (degree + 1 === HASH_DEGREE) {
      this.moveToTable(state, token, target);
    } else {
      this.tableInsert(state, token, target);
    }
  }

  /** A new edge record at the head of the state's list (a given-up one where there is one). */
  private pushEdge(state: number, token: number, target: number): void {
    let e = this.freeEdge;
    if (e !== NONE) {
      this.freeEdge = this.edgeData[e * EDGE_STRIDE + NEXT];
    } else {
      e = this.edgeCount;
      if (e >= this.edgeCapacity) {
        this.edgeCapacity = Math.max(grownCapacity(this.edgeCapacity, e + 1), this.plannedTokens * EDGES_PER_PLANNED_TOKEN);
        this.edgeData = this.grown(this.edgeData, this.edgeCapacity * EDGE_STRIDE);
        this.edgesAhead = this.aheadFrom(e * EDGE_STRIDE);
      }
      if (e * EDGE_STRIDE >= this.edgesAhead) this.edgesAhead = this.memory!.ahead(this.edgeData, e * EDGE_STRIDE);
      this.edgeCount = e + 1;
    }
    const at = e * EDGE_STRIDE;
    const headIndex = state * STATE_STRIDE + HEAD;
    this.edgeData[at + TOKEN] = token;
    this.edgeData[at + TARGET] = target;
    this.edgeData[at + NEXT] = this.states[headIndex];
    this.states[headIndex] = e;
  }

  /**
   * The state's transitions (in its record and its list) and a new one move into a table of its
   * own; its edge records are given up for reuse. Its degree is already counted.
   */
  private moveToTable(state: number, token: number, target: number): void {
    const base = state * STATE_STRIDE;
    const table = this.newTable(FIRST_TABLE_SLOTS);
    this.placeInTable(table, token, target);
    this.placeInTable(table, this.states[base + INLINE_TOKEN], this.states[base + INLINE_TARGET]);
    const edges = this.edgeData;
    let e = this.states[base + HEAD];
    while (e !== NONE) {
      const next = edges[e * EDGE_STRIDE + NEXT];
      this.placeInTable(table, edges[e * EDGE_STRIDE + TOKEN], edges[e * EDGE_STRIDE + TARGET]);
      edges[e * EDGE_STRIDE + NEXT] = this.freeEdge;
      this.freeEdge = e;
      e = next;
    }
    this.states[base + HEAD] = table;
    if (votesOf(this.states[base + LEN]) === 0) this.states[base + INLINE_TOKEN] = NONE;
    this.states[base + INLINE_TARGET] = NONE;
  }

  /** Adds a transition to the state's table, doubling the table past TABLE_LOAD. */
  private tableInsert(state: number, token: number, target: number): void {
    const headIndex = state * STATE_STRIDE + HEAD;
    let table = this.states[headIndex];
    const slots = this.tables[table];
    if (this.tables[table + 1] + 1 > slots * TABLE_LOAD) {
      const grown = this.newTable(slots * 2);
      const tables = this.tables;
      const end = table + TABLE_HEADER + 2 * slots;
      for (let slot = table + TABLE_HEADER; slot < end; slot += 2) if (tables[slot] !== NONE) this.placeInTable(grown, tables[slot], tables[slot + 1]);
      this.freeTable(table);
      this.states[headIndex] = table = grown;
    }
    this.placeInTable(table, token, target);
  }

  /** Index in `tables` of the slot holding `token` in the table at `table`, or NONE. */
  private tableSlot(table: number, token: number): number {
    const tables = this.tables;
    const slots = tables[table];
    const mask = slots - 1;
    let slot = slotOf(token, slots);
    for (;;) {
      const at = table + TABLE_HEADER + 2 * slot;
      const held = tables[at];
      if (held === token) return at;
      if (held === NONE) return NONE;
      slot = (slot + 1) & mask;
    }
  }

  /** Puts [token, target] in the first free slot from the token's (linear probing), and counts it. */
  private placeInTable(table: number, token: number, target: number): void {
    const tables = this.tables;
    const mask = tables[table] - 1;
    let slot = slotOf(token, tables[table]);
    while (tables[table + TABLE_HEADER + 2 * slot] !== NONE) slot = (slot + 1) & mask;
    tables[table + TABLE_HEADER + 2 * slot] = token;
    tables[table + TABLE_HEADER + 2 * slot + 1] = target;
    tables[table + 1]++;
    this.tableTransitions++;
  }

  /** A copy of the table at `table` (a clone's transitions are its original's); returns its offset. */
  private copiedTable(table: number): number {
    const slots = this.tables[table];
    const copy = this.newTable(slots);
    this.tables.copyWithin(copy, table, table + TABLE_HEADER + 2 * slots);
    this.tableTransitions += this.tables[copy + 1];
    return copy;
  }

  /** An empty table of `slots` slots (a power of two): a block given up at that size, or a new one. */
  private newTable(slots: number): number {
    const size = 31 - Math.clz32(slots);
    let table = this.freeTables?.[size] ?? NONE;
    if (table !== NONE) {
      this.freeTables![size] = this.tables[table + 1];
    } else {
      table = this.tablesUsed;
      const end = table + TABLE_HEADER + 2 * slots;
      if (end > this.tables.length) this.tables = resizedInt32(this.tables, grownCapacity(this.tables.length, end));
      this.tablesUsed = end;
    }
    this.tables[table] = slots;
    this.tables[table + 1] = 0;
    this.tables.fill(NONE, table + TABLE_HEADER, table + TABLE_HEADER + 2 * slots);
    this.tableSlots += slots;
    this.tableElements += TABLE_HEADER + 2 * slots;
    return table;
  }

  private freeTable(table: number): void {
    const slots = this.tables[table];
    const size = 31 - Math.clz32(slots);
    this.tableTransitions -= this.tables[table + 1];
    this.tableSlots -= slots;
    this.tableElements -= TABLE_HEADER + 2 * slots;
    this.freeTables ??= new Int32Array(32).fill(NONE);
    this.tables[table + 1] = this.freeTables[size];
    this.freeTables[size] = table;
  }
}

/** A token's home slot in a table of `slots` slots (a power of two): the top bits of a Fibonacci hash. */
function slotOf(token: number, slots: number): number {
  return Math.imul(token, 0x9e3779b1) >>> (Math.clz32(slots) + 1);
}

/** The saturating transition count in a state's length word. */
function degreeOf(word: number): number {
  return (word >>> LENGTH_BITS) & DEGREE_MASK;
}

/** The support of the recent continuation in a state's length word (0: none yet). */
function votesOf(word: number): number {
  return (word >>> VOTE_SHIFT) & VOTE_MASK;
}
