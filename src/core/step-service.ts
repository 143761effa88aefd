/**
 * The one operation the sidecar serves: Step. Once per decode step an engine (one vLLM instance)
 * sends the new tokens of every request in its batch; the service ingests them (always, also when
 * the gate says no, so the automata never have gaps), scores the drafts it served last step against
 * what came next, decides whether to speculate, and drafts.
 *
 * Pure: no I/O and no clock (callers pass `nowMs`). Transports decode into a columnar `StepBatch`,
 * call `step`, and encode the `StepOutcome`; the outcome is immutable and cached per
 * (engine, step id), so every tensor-parallel rank that repeats a step gets the same answer and
 * nothing is applied twice.
 */
import { SuffixAutomaton } from './automaton.js';
import { DraftEngine, type EngineOptions, type EngineStats, type RequestEntry } from './engine.js';
import { type ErrorCode, SidecarError, sidecarError } from './errors.js';
import { BatchGate, type GateConfig, GateReason, type StepTiming } from './gate.js';
import type { SharedTextSource, TextDelta } from './shared-text.js';
import type { CostPoint } from './step-cost.js';
import { TokenQueue } from './token-queue.js';
import { grownCapacity } from './typed.js';

/** `promptLengths[i]` of an item that carries a delta, not a full context. */
export const NO_PROMPT = 0xffffffff;

/** Per-item status on the wire. */
export const ItemStatus = { OK: 0, RESYNC: 1, ERROR: 2 } as const;
export type ItemStatus = (typeof ItemStatus)[keyof typeof ItemStatus];

/** One step of one engine, columnar so every transport decodes into it without per-item objects. */
export interface StepBatch {
  engineId: string;
  stepId: bigint;
  /** Requests scheduled in this step: the batch size the gate compares. */
  numReqs: number;
  prefill: boolean;
  k: number;
  reqIds: readonly string[];
  /** Tokens the client believes the sidecar holds before this item's tokens (its old length). */
  starts: ArrayLike<number>;
  /** Tokens of each item in `tokens`, in batch order. */
  counts: ArrayLike<number>;
  /** Prompt length when the item carries its full context, NO_PROMPT for a delta. */
  promptLengths: ArrayLike<number>;
  /**
   * Tokens of each request the client still holds beyond this item, to come in later steps (a
   * long context sent in chunks); such a request gets no draft. Absent: 0 for every item.
   */
  remaining?: ArrayLike<number>;
  tokens: ArrayLike<number>;
  /** Requests finished or aborted since the engine's last step. */
  finished: readonly string[];
  /** The runner's timing of the step before this call (the calibrated gate learns from it). */
  timing?: Readonly<StepTiming>;
}

export interface ItemError {
  index: number;
  code: ErrorCode;
  message: string;
}

export interface StepOutcome {
  readonly stepId: bigint;
  readonly speculate: boolean;
  readonly reason: GateReason;
  /** The gate's bound (BatchGate.offAbove): steps above it never speculate; 0 for none. */
  readonly offAbove: number;
  readonly statuses: Uint8Array;
  /** Draft length per item (0..k). */
  readonly draftLengths: Uint8Array;
  /** Every item's draft, concatenated in batch order. */
  readonly drafts: Int32Array;
  readonly errors: readonly ItemError[];
}

export interface ServiceLimits {
  /** Largest k a caller may ask for. */
  maxK: number;
  /** Requests not seen for this long are evicted (their client gets RESYNC if it comes back). */
  requestTtlMs: number;
  /** Tokens held by live requests and history (the corpus has its own budget); history is evicted first, LRU. */
  maxTokens: number;
  /** Responses kept per engine for tensor-parallel duplicates of a step. */
  stepCacheSize: number;
  /** Requests one step may carry (default: the wire's bound, 65,535). */
  maxRequestsPerStep?: number;
  /** Engines held at once (default: no bound); a new one beyond it evicts the least recently seen. */
  maxEngines?: number;
  /**
   * Tokens one step call indexes (default: no bound): of those it brings, and of the backlogs of
   * its requests. The rest wait in their request's backlog, indexed oldest first between steps
   * (`doIdleWork`, a quarter of this per slice; left out of the corpus), so a long context never
   * holds a step, or the event loop, for long. A request gets no draft while tokens of it wait.
   * Items of at most ALWAYS_INDEXED tokens (decode deltas) of requests with no backlog are always
   * indexed at once.
   */
  ingestTokensPerStep?: number;
  /**
   * Bytes of everything the service holds (default: no bound): automata, outputs, the corpus,
   * backlogs, and the objects of every request, group and engine (MemoryCost); history is evicted
   * first, LRU, then the least recently seen live requests. Checked at each maintain() and every
   * MAINTAIN_EVERY_NEW_REQUESTS new requests.
   */
  maxBytes?: number;
}

/**
 * What the typed arrays do not show: the objects, maps and keys of each request, group and
 * engine, measured on V8 (Node 20) as RSS per object beyond the arrays' bytes: 200k tiny requests
 * sharing 4 to a prompt took 2.1 KB each, with a prompt each 4.4 KB (docs/results.md, "Memory under
 * hostile inputs").
 */
export const MemoryCost = Object.freeze({ requestBytes: 2200, groupBytes: 2300, engineBytes: 16384, backlogTokenBytes: 4 });

/** New requests between two checks of the memory budgets (many tiny ones add bytes, not tokens). */
const MAINTAIN_EVERY_NEW_REQUESTS = 4096;
/** Deltas this short (a decode step's new tokens) are indexed in the step that brings them, whatever the budget. */
const ALWAYS_INDEXED = 64;
/** What applying another engine's delta costs an idle slice beyond its tokens, in tokens' worth (most hold a few). */
const REMOTE_DELTA_COST_TOKENS = 16;

/** Counters read by the metrics layer at scrape time (the hot path only adds to numbers). */
export class StepCounters {
  steps = 0;
  duplicateSteps = 0;
  items = 0;
  tokensIngested = 0;
  drafts = 0;
  draftTokens = 0;
  acceptedTokens = 0;
  acceptedPerPos: Float64Array;
  shadowDrafts = 0;
  shadowAcceptedTokens = 0;
  readonly decisions = new Float64Array(Object.keys(GateReason).length);
  readonly itemErrors = new Map<ErrorCode, number>();
  /** Call-level errors, counted by the transports' shared context. */
  readonly callErrors = new Map<ErrorCode, number>();
  evictedIdle = 0;
  evictedForMemory = 0;
  /** Shared-text deltas refused by validation (token ids out of range). */
  remoteRejected = 0;
  /** Engines evicted to admit a new one beyond limits.maxEngines. */
  evictedEngines = 0;
  constructor(maxK: number) {
    this.acceptedPerPos = new Float64Array(maxK);
  }

  /** Counts one coded error, of a request in a step or of a whole call. */
  countError(scope: 'item' | 'call', code: ErrorCode): void {
    const errors = scope === 'item' ? this.itemErrors : this.callErrors;
    errors.set(code, (errors.get(code) ?? 0) + 1);
  }
}

class RequestState {
  lastSeenMs = 0;
  /** Order of first appearance: the canonical ingestion order within a step. */
  serial = 0;
  /** In the engine; undefined while its prompt is still arriving (a long context sent in chunks). */
  entry: RequestEntry | undefined = undefined;
  promptLength = 0;
  /** Tokens received and not yet indexed, which follow the entry's; `queued` while in the service's backlog queue. */
  readonly backlog = new TokenQueue();
  queued = false;
  /** Tokens the client said it still has to send: no draft while above 0. */
  remaining = 0;
  stamp = -1;
  /** The last draft (served or shadow) and how much of it the tokens since have matched. */
  predictionLength = 0;
  predictionMatched = 0;
  predictionServed = false;
  readonly prediction: Int32Array;
  constructor(
    readonly key: string,
    readonly reqId: string,
    maxK: number,
  ) {
    this.prediction = new Int32Array(maxK);
  }

  get waiting(): number {
    return this.backlog.length;
  }

  /** Tokens the sidecar holds for the request, indexed or waiting. */
  get held(): number {
    return (this.entry?.length ?? 0) + this.waiting;
  }

  /** Drafts only from a context that is all indexed and complete. */
  get draftable(): boolean {
    return this.entry !== undefined && this.backlog.length === 0 && this.remaining === 0;
  }
}

class EngineState {
  lastStepId = -1n;
  lastSeenMs = 0;
  /** This engine's share of the service's counters (metrics with an engine label). */
  steps = 0;
  draftTokens = 0;
  acceptedTokens = 0;
  readonly recent = new Map<bigint, StepOutcome | SidecarError>();
  /** What each cached step asked for, so a repeat that asks for something else is refused. */
  readonly shapes = new Map<bigint, StepShape>();
  readonly requests = new Map<string, RequestState>();
  readonly gate: BatchGate;
  constructor(
    readonly id: string,
    gateConfig: Readonly<GateConfig>,
  ) {
    this.gate = new BatchGate(gateConfig);
  }
}

export interface RequestView {
  engineId: string;
  reqId: string;
  length: number;
  promptLength: number;
  lastSeenMs: number;
  pendingDraft: number[];
}

export interface GateView {
  engine: string;
  mode: string;
  meanAccepted: number;
  observations: number;
  breakEvenBatch: number;
  curve: CostPoint[];
}

export interface ServiceStats extends EngineStats {
  engines: number;
  maxTokens: number;
  /** Every byte the service accounts for (MemoryCost: bytes plus object overheads), and its bound (0: none). */
  accountedBytes: number;
  maxBytes: number;
  /** Tokens received and waiting to be indexed, and the requests they belong to. */
  backlogTokens: number;
  backlogRequests: number;
}

export class StepService {
  readonly draftEngine: DraftEngine;
  readonly counters: StepCounters;
  private readonly engines = new Map<string, EngineState>();
  private stamp = 0;
  private nextSerial = 0;
  private order = new Float64Array(256);
  private offsets = new Float64Array(257);
  private scratch: Int32Array;
  // Filled with undefined (never holes), here and when it grows, so the array keeps one elements
  // kind: the sidecar's warm-up compiles this code against another instance, and an array of
  // another kind would throw that code away at the first real step.
  private ingested: Array<RequestState | undefined> = new Array(256).fill(undefined);
  private tokensSinceMaintenance = 0;
  private requestsSinceMaintenance = 0;
  /** Requests with tokens waiting to be indexed, oldest first, and those tokens. */
  private backlogQueue: RequestState[] = [];
  private backlogTokens = 0;
  /** Tokens the current step (or idle slice) may still index. */
  private ingestLeft = Number.POSITIVE_INFINITY;
  /** Text from other engines (shared text), when a sharing adapter is attached. */
  sharedText: SharedTextSource | null = null;
  private applyRemote(delta: TextDelta): void {
    try {
      this.draftEngine.applyRemote(delta);
    } catch (error) {
      if (!(error instanceof SidecarError)) throw error;
      this.counters.remoteRejected++;
    }
  }
  /** Every delta waiting (a step's start). */
  private readonly takeEveryRemote = (delta: TextDelta): boolean => {
    this.applyRemote(delta);
    return true;
  };
  /** Deltas while the slice's budget (ingestLeft) lasts, each costing its tokens and REMOTE_DELTA_COST_TOKENS. */
  private readonly takeRemoteInSlice = (delta: TextDelta): boolean => {
    this.applyRemote(delta);
    this.ingestLeft -= delta.tokens.length + REMOTE_DELTA_COST_TOKENS;
    return this.ingestLeft > 0;
  };

  constructor(
    readonly limits: Readonly<ServiceLimits>,
    readonly gateConfig: Readonly<GateConfig>,
    engineOptions: Partial<EngineOptions> = {},
  ) {
    this.draftEngine = new DraftEngine(engineOptions);
    this.counters = new StepCounters(limits.maxK);
    this.scratch = new Int32Array(256 * limits.maxK);
  }

  /**
   * Serves one step. Throws a SidecarError for a call-level problem (nothing applied); per-item
   * problems become that item's status and leave every other item and request untouched.
   */
  step(batch: StepBatch, nowMs: number): StepOutcome {
    // Checked before anything is looked up or created: a malformed call leaves no engine behind.
    validateBatch(batch, this.limits.maxK, this.limits.maxRequestsPerStep ?? ORDER_SPAN - 1);
    const engine = this.engineFor(batch.engineId, nowMs);
    const cached = engine.recent.get(batch.stepId);
    if (cached !== undefined) {
      // A tensor-parallel rank repeating the step: the same requests ending at the same tokens
      // (a rank may send a full context where another sends a delta). Anything else would get
      // an answer to another batch.
      const shape = engine.shapes.get(batch.stepId);
      if (shape !== undefined && !sameShape(shape, batch)) {
        throw sidecarError('CONFLICTING_STEP', `step ${batch.stepId} of engine ${JSON.stringify(batch.engineId)} was answered for other requests or tokens`, 'step_id');
      }
      this.counters.duplicateSteps++;
      if (cached instanceof SidecarError) throw cached;
      return cached;
    }
    if (batch.stepId <= engine.lastStepId) {
      throw sidecarError('STALE_STEP', `step ${batch.stepId} after step ${engine.lastStepId} of engine ${JSON.stringify(batch.engineId)}`, 'step_id');
    }
    let outcome: StepOutcome | SidecarError;
    try {
      outcome = this.apply(engine, batch, nowMs);
    } catch (error) {
      if (!(error instanceof SidecarError)) throw error;
      outcome = error;
    }
    engine.lastStepId = batch.stepId;
    engine.recent.set(batch.stepId, outcome);
    engine.shapes.set(batch.stepId, shapeOf(batch));
    if (engine.recent.size > this.limits.stepCacheSize) {
      const oldest = engine.recent.keys().next().value!;
      engine.recent.delete(oldest);
      engine.shapes.delete(oldest);
    }
    if (this.tokensSinceMaintenance > this.limits.maxTokens / 16) this.maintain(nowMs);
    else if (this.requestsSinceMaintenance > MAINTAIN_EVERY_NEW_REQUESTS) this.enforceMemoryBudget();
    if (outcome instanceof SidecarError) throw outcome;
    return outcome;
  }

  /** Releases requests of an engine (finished or aborted outside a step). Returns how many were held. */
  /**
   * Work that waits for an idle moment: requests' latest tokens into the corpus (each step also
   * starts with that, so drafts never depend on when it ran), other engines' text (likewise) and
   * compacting retired groups.
   */
  get idleWorkPending(): boolean {
    return this.draftEngine.idleWorkPending || this.backlogQueue.length > 0 || this.sharedText?.inboundWaiting === true;
  }

  /** One slice of idle work; call again while idleWorkPending (each slice indexes a bounded part of the backlog). */
  doIdleWork(): void {
    // Slices of a quarter of a step's budget: a step that arrives meanwhile waits for one at most.
    this.ingestLeft = Math.max(256, (this.limits.ingestTokensPerStep ?? Number.POSITIVE_INFINITY) / 4);
    // Other engines' text first, from the same budget, so a step applies only what arrived just before it.
    this.sharedText?.drain(this.takeRemoteInSlice);
    this.drainBacklog();
    // After the backlog slice, so what it indexed reaches the corpus in the same slice, not in the next step.
    this.draftEngine.flushCorpus();
    this.draftEngine.compactRetired();
  }

  release(engineId: string, reqIds: readonly string[]): number {
    const engine = this.engines.get(engineId);
    if (engine === undefined) return 0;
    let released = 0;
    for (const reqId of reqIds) if (this.releaseRequest(engine, reqId)) released++;
    return released;
  }

  /** Evicts idle requests and engines, then enforces the token budget. Call it periodically. */
  maintain(nowMs: number): void {
    this.tokensSinceMaintenance = 0;
    const horizon = nowMs - this.limits.requestTtlMs;
    for (const engine of this.engines.values()) {
      for (const state of engine.requests.values()) {
        if (state.lastSeenMs < horizon && this.releaseRequest(engine, state.reqId)) this.counters.evictedIdle++;
      }
      if (engine.requests.size === 0 && engine.lastSeenMs < horizon) this.engines.delete(engine.id);
    }
    this.enforceMemoryBudget();
  }

  stats(): ServiceStats {
    const stats = this.draftEngine.stats();
    return {
      ...stats,
      engines: this.engines.size,
      maxTokens: this.limits.maxTokens,
      accountedBytes: this.accountedBytes(stats),
      maxBytes: Number.isFinite(this.limits.maxBytes ?? Number.POSITIVE_INFINITY) ? this.limits.maxBytes! : 0,
      backlogTokens: this.backlogTokens,
      backlogRequests: this.backlogQueue.length,
    };
  }

  private accountedBytes(stats: EngineStats): number {
    return (
      stats.bytes +
      stats.requests * MemoryCost.requestBytes +
      stats.groups * MemoryCost.groupBytes +
      this.engines.size * MemoryCost.engineBytes +
      this.backlogTokens * MemoryCost.backlogTokenBytes
    );
  }

  describe(engineId: string, reqId: string): RequestView | undefined {
    const state = this.engines.get(engineId)?.requests.get(reqId);
    if (state === undefined) return undefined;
    return {
      engineId,
      reqId,
      length: state.held,
      promptLength: state.promptLength,
      lastSeenMs: state.lastSeenMs,
      pendingDraft: Array.from(state.prediction.subarray(state.predictionMatched, state.predictionLength)),
    };
  }

  /**
   * Each engine's gate (at most `limit`, the most recently seen first): its mode, the acceptance
   * it observed and, in calibrated mode, the step cost it learnt and the smallest batch size at
   * which drafting stops paying (0: at none it knows).
   */
  gates(limit = 64): GateView[] {
    return this.recentEngines(limit).map((engine) => {
      const gate = engine.gate;
      return {
        engine: engine.id,
        mode: gate.config.mode,
        ...gate.acceptance,
        breakEvenBatch: gate.breakEvenBatch,
        curve: gate.cost?.curve() ?? [],
      };
    });
  }

  /** Steps, served draft tokens and accepted ones per engine (at most `limit`, the most recently seen first). */
  engineCounters(limit = 16): Array<{ engine: string; steps: number; draftTokens: number; acceptedTokens: number }> {
    return this.recentEngines(limit).map((e) => ({ engine: e.id, steps: e.steps, draftTokens: e.draftTokens, acceptedTokens: e.acceptedTokens }));
  }

  /** At most `limit` engines, the most recently seen first (ties by id: the same order every time). */
  private recentEngines(limit: number): EngineState[] {
    return [...this.engines.values()].sort((a, b) => b.lastSeenMs - a.lastSeenMs || (a.id < b.id ? -1 : 1)).slice(0, limit);
  }

  gateAcceptance(engineId: string): { meanAccepted: number; observations: number } | undefined {
    return this.engines.get(engineId)?.gate.acceptance;
  }

  // ------------------------------------------------------------------ internals

  private apply(engine: EngineState, batch: StepBatch, nowMs: number): StepOutcome {
    const n = batch.reqIds.length; // validated by step()
    this.draftEngine.flushCorpus();
    // Other engines' text not yet applied by idle work: all of it, so a step sees whatever arrived
    // before it. Ranks of an engine share this step's answer (the step cache), whatever lands after.
    this.sharedText?.drain(this.takeEveryRemote);
    // A step indexes its own requests' tokens within the budget; the backlog as a whole is idle
    // work (doIdleWork), so a step's time does not grow with it.
    this.ingestLeft = this.limits.ingestTokensPerStep ?? Number.POSITIVE_INFINITY;
    const counters = this.counters;
    const k = engine.gate.draftLength(batch.numReqs, batch.k);
    for (const reqId of batch.finished) this.releaseRequest(engine, reqId);
    if (batch.timing !== undefined) engine.gate.observeStep(batch.timing);
    const decision = engine.gate.decide(batch.numReqs, batch.prefill, k);
    counters.steps++;
    engine.steps++;
    counters.items += n;
    counters.decisions[decision.reason]++;
    const shadow = !decision.speculate && engine.gate.learnsWhileOff && k > 0;
    const stamp = ++this.stamp;
    // One backing store for both columns: typed-array allocations dominate a small step's overhead.
    const columns = new Uint8Array(2 * n);
    const statuses = columns.subarray(0, n);
    const draftLengths = columns.subarray(n);
    const errors: ItemError[] = [];
    if (this.scratch.length < n * k) this.scratch = new Int32Array(n * k);
    const scratch = this.scratch;
    // Pass 1 ingests every item, pass 2 drafts: a request drafts from all its siblings' tokens of
    // this step. Items are ingested in a canonical order (first appearance, then request id), not in
    // batch order: which sibling's continuation is the most recent must not depend on the rows the
    // engine happened to put requests in, which move between steps.
    if (this.ingested.length < n) this.ingested = new Array(grownCapacity(this.ingested.length, n)).fill(undefined);
    const ingested = this.ingested;
    const order = this.canonicalOrder(engine, batch, n);
    for (let j = 0; j < n; j++) {
      const key = order[j];
      const serial = Math.floor(key / ORDER_SPAN); // not %: a double's modulo is a slow fmod
      const i = key - serial * ORDER_SPAN;
      const from = this.offsets[i];
      const known = ingested[i]; // looked up by canonicalOrder
      ingested[i] = undefined;
      try {
        ingested[i] = this.ingestItem(engine, batch, i, from, from + batch.counts[i], stamp, nowMs, serial, known);
      } catch (error) {
        if (!(error instanceof SidecarError)) throw error;
        statuses[i] = error.needsResync ? ItemStatus.RESYNC : ItemStatus.ERROR;
        errors.push({ index: i, code: error.code, message: error.message });
        counters.countError('item', error.code);
      }
    }
    if (errors.length > 1) errors.sort((a, b) => a.index - b.index);
    let written = 0;
    let drafted = 0;
    let shadowTokens = 0;
    for (let i = 0; i < n; i++) {
      const state = ingested[i];
      if (state === undefined) continue;
      ingested[i] = undefined;
      if (!state.draftable) {
        state.predictionLength = 0; // the context is not all here: no draft, nothing to score
        continue;
      }
      const entry = state.entry!;
      if (decision.speculate) {
        const length = this.draftEngine.draftFrom(entry, k, scratch, written);
        draftLengths[i] = length;
        const prediction = state.prediction;
        for (let j = 0; j < length; j++) prediction[j] = scratch[written + j]; // no subarray object per item
        state.predictionLength = length;
        state.predictionMatched = 0;
        state.predictionServed = true;
        written += length;
        if (length > 0) {
          drafted++;
          counters.drafts++;
          counters.draftTokens += length;
          engine.draftTokens += length;
        }
      } else if (shadow && state.predictionLength === 0) {
        state.predictionLength = this.draftEngine.draftFrom(entry, k, state.prediction, 0);
        state.predictionMatched = 0;
        state.predictionServed = false;
        if (state.predictionLength > 0) counters.shadowDrafts++;
      } else if (!shadow) {
        state.predictionLength = 0;
      }
      if (shadow && state.predictionLength > 0) {
        // A shadow draft (new, or still pending from an earlier step) stands for the one it would serve.
        drafted++;
        shadowTokens += state.predictionLength;
      }
    }
    if (decision.speculate || shadow) engine.gate.observeDrafts(n, drafted, written + shadowTokens);
    return Object.freeze({
      stepId: batch.stepId,
      speculate: decision.speculate,
      reason: decision.reason,
      offAbove: engine.gate.offAbove,
      statuses,
      draftLengths,
      drafts: scratch.slice(0, written),
      errors: Object.freeze(errors),
    });
  }

  /** Ingests item i (tokens[from..to)); returns its state, or throws the item's error. */
  private ingestItem(
    engine: EngineState,
    batch: StepBatch,
    i: number,
    from: number,
    to: number,
    stamp: number,
    nowMs: number,
    serial: number,
    known: RequestState | undefined,
  ): RequestState {
    const reqId = batch.reqIds[i];
    // A duplicate id in the batch may have been created by its first occurrence in this step.
    let state = known ?? engine.requests.get(reqId);
    if (state !== undefined && state.stamp === stamp) {
      throw sidecarError('DUPLICATE_REQUEST', `request ${JSON.stringify(reqId)} at requests[${i}] and an earlier one`, `requests[${i}].req_id`);
    }
    const promptLength = batch.promptLengths[i];
    const start = batch.starts[i];
    const remaining = batch.remaining?.[i] ?? 0;
    if (!(Number.isInteger(remaining) && remaining >= 0)) throw sidecarError('INVALID_ARGUMENT', `remaining = ${remaining}`, `requests[${i}].remaining`);
    if (promptLength !== NO_PROMPT) {
      if (start !== 0) throw sidecarError('INVALID_ARGUMENT', `an item with its full context must start at 0, got ${start}`, `requests[${i}].start`);
      const count = to - from;
      if (promptLength > count + remaining) {
        throw sidecarError('INVALID_ARGUMENT', `prompt length ${promptLength} beyond the ${count} tokens sent and the ${remaining} still to come`, `requests[${i}].prompt_len`);
      }
      if (state !== undefined && this.resendsHeldContext(state, promptLength, count)) {
        // The full context of a request the sidecar already holds (its client lost the reply that
        // confirmed it, e.g. a call that timed out while a large context was ingested): tokens are
        // append-only, so only the part beyond what is held is new. Re-ingesting all of it would
        // time out again, step after step.
        this.take(engine, state, batch.tokens, from + state.held, to, i);
      } else {
        this.checkLength(count, 0, i);
        const key = state?.key ?? requestKey(engine.id, reqId);
        const context = tokenView(batch.tokens, from, to);
        // Opened now, or once its prompt is here and the budget allows. Either way checked before
        // the request it replaces is let go (open checks, and releases it, itself): a bad full
        // context leaves it as it was.
        const opensNow = count >= promptLength && this.ingestLeft > 0;
        const indexed = opensNow ? Math.min(count, this.ingestLeft) : 0;
        if (!opensNow) this.draftEngine.validateTokens(context, 0, count, 'context');
        const entry = opensNow ? this.draftEngine.open(key, context, promptLength, indexed, count + remaining) : undefined;
        if (state === undefined) {
          state = new RequestState(key, reqId, this.limits.maxK);
          state.serial = serial;
          engine.requests.set(reqId, state);
          this.requestsSinceMaintenance++;
        } else {
          this.dropBacklog(state);
          if (entry === undefined) this.draftEngine.release(key);
        }
        state.entry = entry;
        // Its group makes room for it now, though it opens when the backlog reaches it.
        if (entry === undefined && count >= promptLength) this.draftEngine.announce(key, context, promptLength, count + remaining);
        state.promptLength = promptLength;
        state.predictionLength = 0;
        this.ingestLeft -= indexed;
        this.defer(state, batch.tokens, from + indexed, to);
      }
    } else {
      if (state === undefined) throw sidecarError('UNKNOWN_REQUEST', `request ${JSON.stringify(reqId)} of engine ${JSON.stringify(engine.id)}`, `requests[${i}].req_id`);
      const held = state.held;
      if (start > held) throw sidecarError('TOKEN_GAP', `request ${JSON.stringify(reqId)} starts at ${start} but the sidecar holds ${held} tokens`, `requests[${i}].start`);
      // A resent overlap (start < held) is skipped: deltas are idempotent.
      this.take(engine, state, batch.tokens, Math.min(to, from + (held - start)), to, i);
    }
    state.remaining = remaining;
    state.stamp = stamp;
    state.lastSeenMs = nowMs;
    this.counters.tokensIngested += to - from;
    this.tokensSinceMaintenance += to - from;
    return state;
  }

  /** A full context that extends what the sidecar holds for the request (same prompt length). */
  private resendsHeldContext(state: RequestState, promptLength: number, contextLength: number): boolean {
    return state.promptLength === promptLength && state.held <= contextLength;
  }

  /** A request of `held` tokens may not grow by `count` past what one automaton sequence holds. */
  private checkLength(count: number, held: number, i: number): void {
    if (held + count > SuffixAutomaton.MAX_SEQUENCE_TOKENS) {
      throw sidecarError('INVALID_ARGUMENT', `request of ${held} tokens would exceed ${SuffixAutomaton.MAX_SEQUENCE_TOKENS} with ${count} more`, `requests[${i}].tokens`);
    }
  }

  /**
   * A request's next tokens, tokens[from..to): indexed now while the step's budget lasts (a short
   * delta always), the rest deferred to its backlog. Checked first, so a bad item changes nothing.
   */
  private take(engine: EngineState, state: RequestState, tokens: ArrayLike<number>, from: number, to: number, i: number): void {
    if (from >= to) return;
    this.checkLength(to - from, state.held, i);
    const entry = state.entry;
    // Tokens indexed now: none behind a backlog, a short delta whole, else what the budget allows.
    let now = 0;
    if (entry !== undefined && state.waiting === 0) now = to - from <= ALWAYS_INDEXED ? to - from : Math.max(0, Math.min(to - from, this.ingestLeft));
    // appendTo checks what it indexes; where some will wait, all of it is checked here first.
    if (now < to - from) this.draftEngine.validateTokens(tokens, from, to, 'tokens');
    if (now > 0) {
      this.draftEngine.appendTo(entry!, tokens, from, from + now);
      this.score(engine, state, tokens, from, from + now);
      this.ingestLeft -= now;
      from += now;
    }
    if (from < to) state.predictionLength = 0; // its draft is scored no further: the text has moved on
    this.defer(state, tokens, from, to);
    // A context that came in chunks: its backlog (this request's only) uses what is left of the budget.
    if (state.waiting > 0 && this.ingestLeft > 0) this.indexBacklog(state, false);
  }

  /** Appends tokens[from..to) (checked) to a request's backlog and queues it. */
  private defer(state: RequestState, tokens: ArrayLike<number>, from: number, to: number): void {
    if (to <= from) return;
    state.backlog.push(tokens, from, to);
    this.backlogTokens += to - from;
    if (!state.queued) {
      state.queued = true;
      this.backlogQueue.push(state);
    }
  }

  private dropBacklog(state: RequestState): void {
    this.backlogTokens -= state.waiting;
    state.backlog.clear();
  }

  /**
   * Indexes waiting tokens, oldest request first, while this.ingestLeft lasts. A request whose
   * prompt has not all arrived leaves the queue until more of it does.
   */
  private drainBacklog(): void {
    const queue = this.backlogQueue;
    let head = 0;
    while (head < queue.length && this.ingestLeft > 0) {
      const state = queue[head];
      if (state.waiting > 0 && this.indexBacklog(state, true) && state.waiting > 0) break; // the budget ran out inside it
      state.queued = false;
      head++;
    }
    if (head > 0) this.backlogQueue = head === queue.length ? [] : queue.slice(head);
  }

  /**
   * Indexes as much of one request's backlog as the budget allows; false if it cannot start yet.
   * Text indexed `late` (between steps) is left out of the corpus.
   */
  private indexBacklog(state: RequestState, late: boolean): boolean {
    const backlog = state.backlog;
    const n = Math.min(backlog.length, this.ingestLeft);
    try {
      if (state.entry === undefined) {
        if (backlog.length < state.promptLength) return false;
        const expected = backlog.length + state.remaining;
        state.entry = this.draftEngine.open(state.key, backlog.peek(Math.max(state.promptLength, n)), state.promptLength, n, expected);
        backlog.shift(n);
      } else {
        const entry = state.entry;
        backlog.shift(n, (span, from, to) => this.draftEngine.appendTo(entry, span, from, to));
      }
    } catch (error) {
      // Checked when they arrived, so not expected; the request starts over (RESYNC) rather than stall.
      if (!(error instanceof SidecarError)) throw error;
      this.counters.countError('item', error.code);
      this.dropBacklog(state);
      this.draftEngine.release(state.key);
      state.entry = undefined;
      state.promptLength = NO_PROMPT;
      return true;
    }
    if (late) this.draftEngine.skipCorpus(state.entry);
    this.ingestLeft -= n;
    this.backlogTokens -= n;
    return true;
  }

  /** Compares newly arrived tokens with the pending draft; a mismatch or a full match scores it. */
  private score(engine: EngineState, state: RequestState, tokens: ArrayLike<number>, from: number, to: number): void {
    if (state.predictionLength === 0) return;
    let matched = state.predictionMatched;
    let i = from;
    while (i < to && matched < state.predictionLength && tokens[i] === state.prediction[matched]) {
      matched++;
      i++;
    }
    state.predictionMatched = matched;
    if (i === to && matched < state.predictionLength) return; // all new tokens matched; wait for more
    engine.gate.observe(matched);
    const counters = this.counters;
    if (state.predictionServed) {
      counters.acceptedTokens += matched;
      engine.acceptedTokens += matched;
      for (let j = 0; j < matched; j++) counters.acceptedPerPos[j]++;
    } else {
      counters.shadowAcceptedTokens += matched;
    }
    state.predictionLength = 0;
  }

  /**
   * Item indices in ingestion order, packed as serial * ORDER_SPAN + index and sorted: known
   * requests by first appearance, new ones after them by request id (they get serials in that
   * order). Also fills this.offsets with each item's first token, and this.ingested with the
   * state of each known request (saving ingestItem the lookup).
   */
  private canonicalOrder(engine: EngineState, batch: StepBatch, n: number): Float64Array {
    if (this.order.length < n) this.order = new Float64Array(grownCapacity(this.order.length, n));
    if (this.offsets.length < n + 1) this.offsets = new Float64Array(grownCapacity(this.offsets.length, n + 1));
    const offsets = this.offsets;
    const keys = this.order.subarray(0, n);
    let fresh: number[] | undefined;
    offsets[0] = 0;
    for (let i = 0; i < n; i++) {
      offsets[i + 1] = offsets[i] + batch.counts[i];
      const state = engine.requests.get(batch.reqIds[i]);
      this.ingested[i] = state;
      if (state !== undefined) keys[i] = state.serial * ORDER_SPAN + i;
      else (fresh ??= []).push(i);
    }
    if (fresh !== undefined) {
      const ids = batch.reqIds;
      fresh.sort((a, b) => (ids[a] < ids[b] ? -1 : ids[a] > ids[b] ? 1 : a - b));
      for (const i of fresh) keys[i] = ++this.nextSerial * ORDER_SPAN + i;
    }
    // Rows that keep their order from step to step are already sorted: skip the sort then.
    for (let i = 1; i < n; i++) if (keys[i] < keys[i - 1]) return keys.sort();
    return keys;
  }

  private releaseRequest(engine: EngineState, reqId: string): boolean {
    const state = engine.requests.get(reqId);
    if (state === undefined) return false;
    engine.requests.delete(reqId);
    this.dropBacklog(state); // with nothing waiting, it leaves the backlog queue at its next drain
    this.draftEngine.release(state.key);
    return true;
  }

  private engineFor(engineId: string, nowMs: number): EngineState {
    let engine = this.engines.get(engineId);
    if (engine === undefined) {
      // Bounded: beyond maxEngines the least recently seen engine goes (its requests resync if it returns).
      if (this.engines.size >= (this.limits.maxEngines ?? Number.POSITIVE_INFINITY)) this.evictLeastRecentEngine();
      engine = new EngineState(engineId, this.gateConfig);
      this.engines.set(engineId, engine);
    }
    engine.lastSeenMs = nowMs;
    return engine;
  }

  private evictLeastRecentEngine(): void {
    let oldest: EngineState | undefined;
    for (const engine of this.engines.values()) if (oldest === undefined || engine.lastSeenMs < oldest.lastSeenMs) oldest = engine;
    if (oldest === undefined) return;
    for (const state of [...oldest.requests.values()]) this.releaseRequest(oldest, state.reqId);
    this.engines.delete(oldest.id);
    this.counters.evictedEngines++;
  }

  /**
   * Both budgets, tokens and bytes: history first (LRU), then the least recently seen live
   * requests. Live requests go in batches sized by how far over the budget the service is, so
   * evicting many costs a few passes, not one per request.
   */
  private enforceMemoryBudget(): void {
    this.requestsSinceMaintenance = 0;
    const maxTokens = this.limits.maxTokens;
    const maxBytes = this.limits.maxBytes ?? Number.POSITIVE_INFINITY;
    const draftEngine = this.draftEngine;
    // The corpus keeps itself within its own token budget; the token budget covers the rest.
    const tokens = (stats: EngineStats) => stats.tokensIndexed - stats.corpusTokens + this.backlogTokens;
    /** How far over the tighter budget the service is, as a share of what it holds (0: within both). */
    const excess = (stats: EngineStats) => Math.max(0, 1 - maxTokens / Math.max(1, tokens(stats)), 1 - maxBytes / Math.max(1, this.accountedBytes(stats)));
    let stats = draftEngine.stats();
    if (excess(stats) === 0) return;
    // History: by tokens as before, then by bytes (bytes per history token as measured now).
    draftEngine.enforceHistoryBudget(Math.max(0, stats.historyTokens - (tokens(stats) - maxTokens)));
    stats = draftEngine.stats();
    if (excess(stats) > 0 && Number.isFinite(maxBytes) && stats.historyTokens > 0) {
      const over = this.accountedBytes(stats) - maxBytes;
      const historyBytes = (stats.bytes - stats.corpusBytes) * (stats.historyTokens / Math.max(1, tokens(stats))) + stats.historyGroups * MemoryCost.groupBytes;
      draftEngine.enforceHistoryBudget(Math.max(0, Math.floor(stats.historyTokens * (1 - over / Math.max(1, historyBytes)))));
      stats = draftEngine.stats();
    }
    if (excess(stats) === 0) return;
    const live: Array<[EngineState, RequestState]> = [];
    for (const engine of this.engines.values()) for (const state of engine.requests.values()) live.push([engine, state]);
    live.sort((a, b) => a[1].lastSeenMs - b[1].lastSeenMs);
    let next = 0;
    for (let pass = 0; pass < 16 && next < live.length; pass++) {
      const batch = Math.max(1, Math.ceil(excess(stats) * (live.length - next) * 1.1));
      for (const end = Math.min(live.length, next + batch); next < end; next++) {
        const [engine, state] = live[next];
        this.releaseRequest(engine, state.reqId);
        this.counters.evictedForMemory++;
      }
      draftEngine.enforceHistoryBudget(0);
      stats = draftEngine.stats();
      if (excess(stats) === 0) return;
    }
  }
}

/** A step's requests, where each ends and its last token (-1 for an item with no tokens). */
interface StepShape {
  numReqs: number;
  k: number;
  reqIds: readonly string[];
  ends: Float64Array;
  last: Float64Array;
}

function shapeOf(batch: StepBatch): StepShape {
  const n = batch.reqIds.length;
  const ends = new Float64Array(n);
  const last = new Float64Array(n);
  let offset = 0;
  for (let i = 0; i < n; i++) {
    const count = batch.counts[i];
    offset += count;
    ends[i] = batch.starts[i] + count;
    last[i] = count > 0 ? batch.tokens[offset - 1] : -1;
  }
  return { numReqs: batch.numReqs, k: batch.k, reqIds: batch.reqIds, ends, last };
}

function sameShape(shape: StepShape, batch: StepBatch): boolean {
  if (shape.numReqs !== batch.numReqs || shape.k !== batch.k || shape.reqIds.length !== batch.reqIds.length) return false;
  const other = shapeOf(batch);
  for (let i = 0; i < other.ends.length; i++) {
    if (shape.reqIds[i] !== batch.reqIds[i] || shape.ends[i] !== other.ends[i]) return false;
    if (shape.last[i] >= 0 && other.last[i] >= 0 && shape.last[i] !== other.last[i]) return false;
  }
  return true;
}

/** Items per step are below this (checked), so serial * ORDER_SPAN + index packs both exactly. */
const ORDER_SPAN = 65536;

function requestKey(engineId: string, reqId: string): string {
  return `${engineId}\u0000${reqId}`;
}

function tokenView(tokens: ArrayLike<number>, from: number, to: number): ArrayLike<number> {
  if (ArrayBuffer.isView(tokens)) return (tokens as unknown as Uint32Array).subarray(from, to);
  return Array.prototype.slice.call(tokens, from, to) as number[];
}

/** Call-level validation: shapes and ranges, before anything is applied. Returns the item count. */
function validateBatch(batch: StepBatch, maxK: number, maxRequests: number): number {
  const n = batch.reqIds.length;
  const most = Math.min(ORDER_SPAN - 1, maxRequests);
  // A bound on one call's work: a step of this many new requests is served in a bounded time.
  if (n > most) throw sidecarError('INVALID_ARGUMENT', `${n} requests in one step, at most ${most} (limits.maxRequestsPerStep)`, 'requests');
  if (!(Number.isInteger(batch.k) && batch.k >= 0 && batch.k <= maxK)) throw sidecarError('K_OUT_OF_RANGE', `k = ${batch.k}, allowed 0..${maxK}`, 'k');
  if (!(Number.isInteger(batch.numReqs) && batch.numReqs >= 0)) throw sidecarError('INVALID_ARGUMENT', `num_reqs = ${batch.numReqs}`, 'num_reqs');
  if (batch.engineId.length === 0) throw sidecarError('INVALID_ARGUMENT', 'engine id is empty', 'engine_id');
  const columns = [['starts', batch.starts], ['counts', batch.counts], ['prompt_lens', batch.promptLengths], ['remaining', batch.remaining ?? batch.starts]] as const;
  for (const [field, column] of columns) {
    if (column.length !== n) throw sidecarError('INVALID_ARGUMENT', `${column.length} entries for ${n} requests`, field);
  }
  let total = 0;
  for (let i = 0; i < n; i++) {
    const count = batch.counts[i];
    if (!(Number.isInteger(count) && count >= 0)) throw sidecarError('INVALID_ARGUMENT', `counts[${i}] = ${count}`, `requests[${i}].tokens`);
    const start = batch.starts[i];
    if (!(Number.isInteger(start) && start >= 0)) throw sidecarError('INVALID_ARGUMENT', `starts[${i}] = ${start}`, `requests[${i}].start`);
    if (batch.reqIds[i].length === 0) throw sidecarError('INVALID_ARGUMENT', `request id at item ${i} is empty`, `requests[${i}].req_id`);
    total += count;
  }
  if (total !== batch.tokens.length) throw sidecarError('INVALID_ARGUMENT', `item token counts sum to ${total}, ${batch.tokens.length} tokens sent`, 'tokens');
  return n;
}
