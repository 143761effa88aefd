/**
 * Speculative-decoding replay over recorded traces, with the semantics of the shared data README:
 * at each model position a draft of at most K tokens is asked for; the accepted count is the
 * longest draft prefix equal to the real output that does not reach into an environment span;
 * the step emits min(accepted + 1, tokens left) tokens. Environment tokens are appended without
 * a step. AL = emitted model tokens / steps.
 *
 * Requests are driven through a `StepBackend`, batched the way a decode step is: every request in
 * a round sends its new tokens, then all drafts are read. The in-process backend calls the core;
 * wire backends drive a running sidecar with the same calls.
 */
import { DEFAULT_MAX_NUM_SEQS, DEFAULT_TAIL_BATCH, replayRolloutSteps } from './rollout-step.js';
import type { TraceRow } from './traces.js';

export const SIBLING_MODES = ['none', 'finished', 'live'] as const;
export type SiblingMode = (typeof SIBLING_MODES)[number];

export interface StepItem {
  id: string;
  /** Tokens the backend already holds for this request before `tokens`. */
  start: number;
  tokens: number[];
  /** Set on a request's first step: the first `promptLength` tokens are the prompt. */
  promptLength?: number;
}

export interface StepBackend {
  /** Ingests every item, releases `finished`, and returns a draft of at most k tokens per item. */
  step(items: StepItem[], finished: string[], k: number): Promise<Int32Array[]> | Int32Array[];
  /** Draft latencies in microseconds, one per drafted request (for percentiles). */
  readonly draftLatenciesUs: number[];
  close?(): Promise<void> | void;
}

export interface ReplayOptions {
  k: number;
  /**
   * none: no sharing between requests; live: the rollout step (every row queued at once,
   * continuous batching, siblings and corpus filled as they really are); finished: the shared
   * data's reference order (each group's rows one by one, shortest output first).
   */
  siblings: SiblingMode;
  /** vLLM's max_num_seqs (none and live): default 128. */
  maxNumSeqs?: number;
  /** Each model segment between environment spans becomes its own request (none and live). */
  turns?: boolean;
  /** Order of the rows within a step (none and live): file order when undefined. */
  seed?: number;
  /** Engine steps with at most this many requests are the tail: default 32. */
  tailBatch?: number;
  /** Called after each round with the number of rows finished so far. */
  onProgress?: (rowsDone: number, rowsTotal: number) => void;
}

/** Emitted tokens and steps of one slice of a replay (a bucket, an engine, a rollout step). */
export interface Tally {
  steps: number;
  emitted: number;
  proposed: number;
  accepted: number;
}

/** Context-length buckets of the report: [edges[i], edges[i+1]) tokens, the last one open. */
export const CONTEXT_EDGES: readonly number[] = [0, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];

export interface ReplayResult {
  rows: number;
  k: number;
  siblings: SiblingMode;
  engines: number;
  /** Engine steps (decode steps of a whole batch); `steps` counts request steps. */
  engineSteps: number;
  steps: number;
  emitted: number;
  draftedSteps: number;
  emittedOnDraftedSteps: number;
  proposed: number;
  accepted: number;
  /** acceptedPerPos[j]: steps whose draft had its token j accepted. */
  acceptedPerPos: number[];
  /** proposedPerPos[j]: steps whose draft had a token at position j. */
  proposedPerPos: number[];
  /** Request steps taken in engine steps of at most `tailBatch` requests. */
  tail: Tally;
  tailBatch: number;
  perEngine: Tally[];
  /** One entry per rollout step, in order. */
  perStep: Tally[];
  /** By the request's context length when the draft was asked for (CONTEXT_EDGES). */
  byContext: Tally[];
  al: number;
  alDrafted: number;
  alTail: number;
  acceptanceRate: number;
  proposeUsP50: number;
  proposeUsP99: number;
}

/** One row's progress through its output. */
export class RowCursor {
  position = 0;
  held = 0;
  pending: number[];
  stepsTaken = 0;
  constructor(readonly row: TraceRow) {
    this.pending = row.prompt.slice();
  }
  get done(): boolean {
    return this.position >= this.row.output.length;
  }
  /** Moves past environment spans (their tokens join the next delta) and reports if a step is due. */
  skipEnvironment(): void {
    for (const [start, end] of this.row.env) {
      if (this.position >= start && this.position < end) {
        for (let i = this.position; i < end; i++) this.pending.push(this.row.output[i]);
        this.position = end;
      }
    }
  }
  /** What the next step sends for this row: the tokens since the last step (the prompt on the first), taken from `pending`. */
  nextItem(): StepItem {
    const item: StepItem = { id: this.row.id, start: this.held, tokens: this.pending, promptLength: this.stepsTaken === 0 ? this.row.prompt.length : undefined };
    this.held += this.pending.length;
    this.pending = [];
    return item;
  }

  /** End (exclusive) of the model-generated run that starts at the current position. */
  runEnd(): number {
    for (const [start] of this.row.env) if (start > this.position) return start;
    return this.row.output.length;
  }
}

export function percentile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return 0;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[index];
}

const tally = (): Tally => ({ steps: 0, emitted: 0, proposed: 0, accepted: 0 });

export function newResult(rows: number, k: number, siblings: SiblingMode, engines: number, tailBatch: number): ReplayResult {
  return {
    rows,
    k,
    siblings,
    engines,
    engineSteps: 0,
    steps: 0,
    emitted: 0,
    draftedSteps: 0,
    emittedOnDraftedSteps: 0,
    proposed: 0,
    accepted: 0,
    acceptedPerPos: new Array(k).fill(0),
    proposedPerPos: new Array(k).fill(0),
    tail: tally(),
    tailBatch,
    perEngine: Array.from({ length: engines }, tally),
    perStep: [],
    byContext: CONTEXT_EDGES.map(tally),
    al: 0,
    alDrafted: 0,
    alTail: 0,
    acceptanceRate: 0,
    proposeUsP50: 0,
    proposeUsP99: 0,
  };
}

/** The ratios and latency percentiles, once every step is counted. */
export function finishResult(result: ReplayResult, backends: readonly StepBackend[]): ReplayResult {
  result.al = alOf(result);
  result.alDrafted = result.draftedSteps > 0 ? result.emittedOnDraftedSteps / result.draftedSteps : 0;
  result.alTail = alOf(result.tail);
  result.acceptanceRate = result.proposed > 0 ? result.accepted / result.proposed : 0;
  const latencies = Float64Array.from(backends.flatMap((backend) => backend.draftLatenciesUs)).sort();
  result.proposeUsP50 = percentile(latencies, 0.5);
  result.proposeUsP99 = percentile(latencies, 0.99);
  return result;
}

/** Emitted tokens per step (1 when nothing was drafted); 0 for no steps. */
export function alOf(counts: { steps: number; emitted: number }): number {
  return counts.steps > 0 ? counts.emitted / counts.steps : 0;
}

/**
 * Replays every row, scored. `none` and `live` run as one rollout step (rollout-step.ts); see
 * ReplayOptions for the orders.
 */
export async function replay(rows: TraceRow[], backend: StepBackend, options: ReplayOptions): Promise<ReplayResult> {
  if (options.siblings === 'finished') return replayGroupsInOrder(rows, backend, options);
  const result = await replayRolloutSteps([rows], [backend], {
    k: options.k,
    maxNumSeqs: options.maxNumSeqs ?? DEFAULT_MAX_NUM_SEQS,
    turns: options.turns ?? false,
    seed: options.seed,
    tailBatch: options.tailBatch ?? DEFAULT_TAIL_BATCH,
    onProgress: options.onProgress,
  });
  result.siblings = options.siblings;
  return result;
}

/** The shared data's `finished` order: group after group, each row alone, shortest output first. */
async function replayGroupsInOrder(rows: TraceRow[], backend: StepBackend, options: ReplayOptions): Promise<ReplayResult> {
  const { k } = options;
  const result = newResult(rows.length, k, 'finished', 1, options.tailBatch ?? DEFAULT_TAIL_BATCH);
  let rowsDone = 0;
  for (const group of groupRows(rows)) {
    for (const row of group.slice().sort((a, b) => a.output.length - b.output.length)) {
      const cursor = new RowCursor(row);
      let finished: string[] = [];
      for (;;) {
        cursor.skipEnvironment();
        if (cursor.done) break;
        const [draft] = await backend.step([cursor.nextItem()], finished, k);
        finished = [];
        scoreStep(cursor, draft, k, 1, 0, result);
        result.engineSteps++;
      }
      await backend.step([], [row.id], k);
      options.onProgress?.(++rowsDone, rows.length);
    }
  }
  result.perStep.push({ steps: result.steps, emitted: result.emitted, proposed: result.proposed, accepted: result.accepted });
  await backend.close?.();
  return finishResult(result, [backend]);
}

/**
 * One verification step of a row: the longest draft prefix equal to the recorded output that does
 * not reach into an environment span is accepted; min(accepted + 1, tokens left in the run) are
 * emitted and queued as the row's next delta. Advances the cursor.
 */
export function advance(cursor: RowCursor, draft: ArrayLike<number>, k: number): { accepted: number; emitted: number; proposed: number } {
  const output = cursor.row.output;
  const start = cursor.position;
  const left = cursor.runEnd() - start;
  const proposed = Math.min(draft.length, k);
  let accepted = 0;
  while (accepted < proposed && accepted < left && draft[accepted] === output[start + accepted]) accepted++;
  const emitted = Math.min(accepted + 1, left);
  for (let i = start; i < start + emitted; i++) cursor.pending.push(output[i]);
  cursor.position = start + emitted;
  cursor.stepsTaken++;
  return { accepted, emitted, proposed };
}

function add(into: Tally, emitted: number, proposed: number, accepted: number): void {
  into.steps++;
  into.emitted += emitted;
  into.proposed += proposed;
  into.accepted += accepted;
}

/** advance(), counted into the result: overall, by draft position, tail, engine and context length. */
export function scoreStep(cursor: RowCursor, draft: ArrayLike<number>, k: number, batch: number, engine: number, result: ReplayResult): { accepted: number; emitted: number; proposed: number } {
  const contextLength = cursor.row.prompt.length + cursor.position;
  const step = advance(cursor, draft, k);
  const { accepted, emitted, proposed } = step;
  result.steps++;
  result.emitted += emitted;
  result.proposed += proposed;
  result.accepted += accepted;
  for (let j = 0; j < proposed; j++) result.proposedPerPos[j]++;
  for (let j = 0; j < accepted; j++) result.acceptedPerPos[j]++;
  if (proposed > 0) {
    result.draftedSteps++;
    result.emittedOnDraftedSteps += emitted;
  }
  if (batch <= result.tailBatch) add(result.tail, emitted, proposed, accepted);
  add(result.perEngine[engine], emitted, proposed, accepted);
  let bucket = CONTEXT_EDGES.length - 1;
  while (bucket > 0 && contextLength < CONTEXT_EDGES[bucket]) bucket--;
  add(result.byContext[bucket], emitted, proposed, accepted);
  return step;
}

/** Rows grouped by their `group` field, in order of first appearance. */
function groupRows(rows: TraceRow[]): TraceRow[][] {
  const groups = new Map<string, TraceRow[]>();
  for (const row of rows) {
    const list = groups.get(row.group);
    if (list) list.push(row);
    else groups.set(row.group, [row]);
  }
  return [...groups.values()];
}
