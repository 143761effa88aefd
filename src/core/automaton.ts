/**
 * Online generalized suffix automaton over token ids, stored in typed arrays.
 *
 * One automaton indexes every substring of one or more token sequences ("cursors"): a request's own
 * context, or the contexts of all requests that share a prompt (siblings). Sequences may be
 * appended to in any interleaving, which is what live sibling drafting needs. Append is amortized
 * O(1) per token (plus a bounded walk that refreshes recency, see RECENCY_DEPTH).
 *
 * Storage is struct-of-arrays: no per-state objects or Maps, so a GC pass never walks the states.
 * Transitions are singly linked edge lists; states with many edges (the root, single-token
 * contexts) are also indexed in an open-addressing hash so lookups stay O(1) on large vocabularies.
 */
import { grownCapacity, resizedInt32 } from './typed.js';

export const ROOT = 0;
export const NONE = -1;

/** States whose edge count reaches this are indexed in the hash table. */
const HASH_DEGREE = 6;
/**
 * How many states up the suffix-link chain get their "recent continuation" refreshed per append.
 * The first ones are the longest (most specific) contexts, which are the ones drafting reads;
 * a bound keeps append O(1) on degenerate, highly repetitive sequences.
 */
export const RECENCY_DEPTH = 8;

export interface AutomatonOptions {
  /** Keep a token log and each state's first end position (needed for position-based drafting). */
  positions?: boolean;
  /** Initial capacity in tokens. */
  initialTokens?: number;
}

export class SuffixAutomaton {
  readonly positions: boolean;
  // States.
  private len: Int32Array;
  private link: Int32Array;
  private head: Int32Array; // first edge of the state's edge list
  private recent: Int32Array; // token that followed this context's most recent occurrence
  private degree: Uint8Array; // saturating edge count
  private firstEnd: Int32Array; // log index where the first occurrence ends (positions only)
  private stateCount = 0;
  // Edges.
  private edgeToken: Int32Array;
  private edgeTarget: Int32Array;
  private edgeNext: Int32Array;
  private edgeCount = 0;
  // Hash index of edges of high-degree states: slot -> edge index (or NONE).
  private hashSlots: Int32Array;
  private hashSource: Int32Array; // source state of each edge, only meaningful for hashed edges
  private hashUsed = 0;
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
  private openCursors = 0;
  private tokensAppended = 0;

  constructor(options: AutomatonOptions = {}) {
    this.positions = options.positions ?? false;
    const tokens = Math.max(16, options.initialTokens ?? 256);
    const states = tokens * 2;
    this.len = new Int32Array(states);
    this.link = new Int32Array(states);
    this.head = new Int32Array(states);
    this.recent = new Int32Array(states);
    this.degree = new Uint8Array(states);
    this.firstEnd = new Int32Array(this.positions ? states : 0);
    this.edgeToken = new Int32Array(states);
    this.edgeTarget = new Int32Array(states);
    this.edgeNext = new Int32Array(states);
    this.hashSlots = new Int32Array(0);
    this.hashSource = new Int32Array(0);
    this.logToken = new Int32Array(this.positions ? tokens : 0);
    this.cursorLast = new Int32Array(4);
    this.cursorLogTail = new Int32Array(4);
    this.cursorLength = new Int32Array(4);
    this.cursorOpen = new Uint8Array(4);
    this.newState(0, NONE, NONE);
  }

  // ---------------------------------------------------------------- cursors

  /** Starts a new sequence; returns its cursor id. */
  openCursor(): number {
    let id = 0;
    while (id < this.cursorOpen.length && this.cursorOpen[id] === 1) id++;
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

  length(state: number): number {
    return this.len[state];
  }

  suffixLink(state: number): number {
    return this.link[state];
  }

  /** Token that followed the most recent occurrence of this state's contexts, or NONE. */
  recentToken(state: number): number {
    return this.recent[state];
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
    const edge = this.findEdge(state, token);
    return edge === NONE ? NONE : this.edgeTarget[edge];
  }

  /** Calls `visit(token, target)` for each outgoing transition (cold paths: tests, introspection). */
  forEachTransition(state: number, visit: (token: number, target: number) => void): void {
    for (let e = this.head[state]; e !== NONE; e = this.edgeNext[e]) visit(this.edgeToken[e], this.edgeTarget[e]);
  }

  /** Bytes held by this automaton's typed arrays (capacity, not just use). */
  byteSize(): number {
    return (
      this.len.byteLength +
      this.link.byteLength +
      this.head.byteLength +
      this.recent.byteLength +
      this.degree.byteLength +
      this.firstEnd.byteLength +
      this.edgeToken.byteLength +
      this.edgeTarget.byteLength +
      this.edgeNext.byteLength +
      this.hashSlots.byteLength +
      this.hashSource.byteLength +
      this.logToken.byteLength +
      (this.logNext?.byteLength ?? 0) +
      this.cursorLast.byteLength * 3 +
      this.cursorOpen.byteLength
    );
  }

  /** Shrinks every array to what is in use (a finished group keeps no slack in history). */
  compact(): void {
    const states = this.stateCount;
    this.len = this.len.slice(0, states);
    this.link = this.link.slice(0, states);
    this.head = this.head.slice(0, states);
    this.recent = this.recent.slice(0, states);
    this.degree = this.degree.slice(0, states);
    if (this.positions) this.firstEnd = this.firstEnd.slice(0, states);
    this.edgeToken = this.edgeToken.slice(0, this.edgeCount);
    this.edgeTarget = this.edgeTarget.slice(0, this.edgeCount);
    this.edgeNext = this.edgeNext.slice(0, this.edgeCount);
    if (this.hashSource.length > 0) this.hashSource = this.hashSource.slice(0, this.edgeCount);
    if (this.positions) {
      this.logToken = this.logToken.slice(0, this.logLength);
      if (this.logNext !== null) this.logNext = this.logNext.slice(0, this.logLength);
    }
  }

  // ---------------------------------------------------------------- append

  /** Appends one token to a sequence. Returns the sequence's new last state. */
  append(cursor: number, token: number): number {
    const previous = this.cursorLast[cursor];
    const last = this.extend(previous, token);
    this.cursorLast[cursor] = last;
    this.cursorLength[cursor]++;
    this.tokensAppended++;
    if (this.positions) this.logAppend(cursor, token, last);
    // Every context that ended the sequence before this token has now been followed by it.
    let state = previous;
    for (let depth = 0; depth < RECENCY_DEPTH && state !== NONE; depth++) {
      this.recent[state] = token;
      state = this.link[state];
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
      if (this.len[existing] === this.len[p] + 1) return existing;
      return this.split(p, token, existing);
    }
    const cur = this.newState(this.len[p] + 1, NONE, NONE);
    while (p !== NONE && this.findEdge(p, token) === NONE) {
      this.addEdge(p, token, cur);
      p = this.link[p];
    }
    if (p === NONE) {
      this.link[cur] = ROOT;
    } else {
      const q = this.transition(p, token);
      // Computed before the store: split() may grow (replace) the state arrays.
      const suffix = this.len[p] + 1 === this.len[q] ? q : this.split(p, token, q);
      this.link[cur] = suffix;
    }
    return cur;
  }

  /** Clones `q` at length len(p)+1 and redirects p's chain to the clone; returns the clone. */
  private split(p: number, token: number, q: number): number {
    const clone = this.newState(this.len[p] + 1, this.link[q], this.positions ? this.firstEnd[q] : NONE);
    this.recent[clone] = this.recent[q];
    for (let e = this.head[q]; e !== NONE; e = this.edgeNext[e]) this.addEdge(clone, this.edgeToken[e], this.edgeTarget[e]);
    this.link[q] = clone;
    while (p !== NONE) {
      const edge = this.findEdge(p, token);
      if (edge === NONE || this.edgeTarget[edge] !== q) break;
      this.edgeTarget[edge] = clone;
      p = this.link[p];
    }
    return clone;
  }

  private newState(length: number, suffixLink: number, firstEnd: number): number {
    const id = this.stateCount;
    if (id >= this.len.length) this.growStates(id + 1);
    this.len[id] = length;
    this.link[id] = suffixLink;
    this.head[id] = NONE;
    this.recent[id] = NONE;
    this.degree[id] = 0;
    if (this.positions) this.firstEnd[id] = firstEnd;
    this.stateCount = id + 1;
    return id;
  }

  private growStates(needed: number): void {
    const capacity = grownCapacity(this.len.length, needed);
    this.len = resizedInt32(this.len, capacity);
    this.link = resizedInt32(this.link, capacity);
    this.head = resizedInt32(this.head, capacity);
    this.recent = resizedInt32(this.recent, capacity);
    const degree = new Uint8Array(capacity);
    degree.set(this.degree);
    this.degree = degree;
    if (this.positions) this.firstEnd = resizedInt32(this.firstEnd, capacity);
  }

  // ---------------------------------------------------------------- edges

  private findEdge(state: number, token: number): number {
    if (this.degree[state] >= HASH_DEGREE) return this.hashFind(state, token);
    for (let e = this.head[state]; e !== NONE; e = this.edgeNext[e]) {
      if (this.edgeToken[e] === token) return e;
    }
    return NONE;
  }

  private addEdge(state: number, token: number, target: number): void {
    const e = this.edgeCount;
    if (e >= this.edgeToken.length) {
      const capacity = grownCapacity(this.edgeToken.length, e + 1);
      this.edgeToken = resizedInt32(this.edgeToken, capacity);
      this.edgeTarget = resizedInt32(this.edgeTarget, capacity);
      this.edgeNext = resizedInt32(this.edgeNext, capacity);
      if (this.hashSource.length > 0) this.hashSource = resizedInt32(this.hashSource, capacity);
    }
    this.edgeToken[e] = token;
    this.edgeTarget[e] = target;
    this.edgeNext[e] = this.head[state];
    this.head[state] = e;
    this.edgeCount = e + 1;
    const degree = this.degree[state];
    if (degree < 255) this.degree[state] = degree + 1;
    if (degree + 1 === HASH_DEGREE) {
      for (let x = this.head[state]; x !== NONE; x = this.edgeNext[x]) this.hashInsert(state, x);
    } else if (degree + 1 > HASH_DEGREE) {
      this.hashInsert(state, e);
    }
  }

  private hashFind(state: number, token: number): number {
    const slots = this.hashSlots;
    const mask = slots.length - 1;
    let slot = hashOf(state, token) & mask;
    for (;;) {
      const e = slots[slot];
      if (e === NONE) return NONE;
      if (this.edgeToken[e] === token && this.hashSource[e] === state) return e;
      slot = (slot + 1) & mask;
    }
  }

  private hashInsert(state: number, edge: number): void {
    if (this.hashSource.length < this.edgeToken.length) this.hashSource = resizedInt32(this.hashSource, this.edgeToken.length);
    this.hashSource[edge] = state;
    if ((this.hashUsed + 1) * 2 > this.hashSlots.length) this.rehash(grownCapacity(this.hashSlots.length, (this.hashUsed + 1) * 2));
    this.hashPlace(edge);
    this.hashUsed++;
  }

  private hashPlace(edge: number): void {
    const slots = this.hashSlots;
    const mask = slots.length - 1;
    let slot = hashOf(this.hashSource[edge], this.edgeToken[edge]) & mask;
    while (slots[slot] !== NONE) slot = (slot + 1) & mask;
    slots[slot] = edge;
  }

  private rehash(capacity: number): void {
    const old = this.hashSlots;
    this.hashSlots = new Int32Array(capacity).fill(NONE);
    for (let i = 0; i < old.length; i++) if (old[i] !== NONE) this.hashPlace(old[i]);
  }
}

function hashOf(state: number, token: number): number {
  const h = Math.imul(state, 0x9e3779b1) ^ Math.imul(token + 0x7f4a7c15, 0x85ebca77);
  return (h ^ (h >>> 15)) >>> 0;
}
