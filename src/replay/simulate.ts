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
  siblings: SiblingMode;
  /** Called after each round with the number of rows finished so far. */
  onProgress?: (rowsDone: number, rowsTotal: number) => void;
}

export interface PositionStats {
  /** Steps at output positions in [bucket*size, (bucket+1)*size). */
  steps: number[];
  emitted: number[];
}

export interface ReplayResult {
  rows: number;
  k: number;
  siblings: SiblingMode;
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
  byOutputPosition: PositionStats;
  positionBucket: number;
  al: number;
  alDrafted: number;
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
  /** End (exclusive) of the model-generated run that starts at the current position. */
  runEnd(): number {
    for (const [start] of this.row.env) if (start > this.position) return start;
    return this.row.output.length;
  }
}

const POSITION_BUCKET = 256;

export function percentile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return 0;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[index];
}

export async function replay(rows: TraceRow[], backend: StepBackend, options: ReplayOptions): Promise<ReplayResult> {
  const { k, siblings } = options;
  const result: ReplayResult = {
    rows: rows.length,
    k,
    siblings,
    steps: 0,
    emitted: 0,
    draftedSteps: 0,
    emittedOnDraftedSteps: 0,
    proposed: 0,
    accepted: 0,
    acceptedPerPos: new Array(k).fill(0),
    proposedPerPos: new Array(k).fill(0),
    byOutputPosition: { steps: [], emitted: [] },
    positionBucket: POSITION_BUCKET,
    al: 0,
    alDrafted: 0,
    acceptanceRate: 0,
    proposeUsP50: 0,
    proposeUsP99: 0,
  };
  let rowsDone = 0;
  const runBatch = async (cursors: RowCursor[]): Promise<void> => {
    let active = cursors.slice();
    let finished: string[] = [];
    while (active.length > 0) {
      const items: StepItem[] = [];
      const stepping: RowCursor[] = [];
      for (const cursor of active) {
        cursor.skipEnvironment();
        if (cursor.done) continue;
        items.push({
          id: cursor.row.id,
          start: cursor.held,
          tokens: cursor.pending,
          promptLength: cursor.stepsTaken === 0 ? cursor.row.prompt.length : undefined,
        });
        cursor.held += cursor.pending.length;
        cursor.pending = [];
        stepping.push(cursor);
      }
      for (const cursor of active) if (cursor.done) finished.push(cursor.row.id);
      rowsDone += active.length - stepping.length;
      if (items.length === 0) break;
      const drafts = await backend.step(items, finished, k);
      finished = [];
      for (let r = 0; r < stepping.length; r++) score(stepping[r], drafts[r], k, result);
      active = stepping;
      options.onProgress?.(rowsDone, rows.length);
    }
    if (finished.length > 0) await backend.step([], finished, k);
  };

  for (const group of groupRows(rows)) {
    if (siblings === 'live') {
      await runBatch(group.map((row) => new RowCursor(row)));
    } else {
      const ordered = siblings === 'finished' ? group.slice().sort((a, b) => a.output.length - b.output.length) : group;
      for (const row of ordered) await runBatch([new RowCursor(row)]);
    }
  }
  await backend.close?.();

  result.al = result.steps > 0 ? result.emitted / result.steps : 0;
  result.alDrafted = result.draftedSteps > 0 ? result.emittedOnDraftedSteps / result.draftedSteps : 0;
  result.acceptanceRate = result.proposed > 0 ? result.accepted / result.proposed : 0;
  const latencies = Float64Array.from(backend.draftLatenciesUs).sort();
  result.proposeUsP50 = percentile(latencies, 0.5);
  result.proposeUsP99 = percentile(latencies, 0.99);
  return result;
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

function score(cursor: RowCursor, draft: Int32Array, k: number, result: ReplayResult): void {
  const start = cursor.position;
  const { accepted, emitted, proposed: length } = advance(cursor, draft, k);
  result.steps++;
  result.emitted += emitted;
  result.proposed += length;
  result.accepted += accepted;
  for (let j = 0; j < length; j++) result.proposedPerPos[j]++;
  for (let j = 0; j < accepted; j++) result.acceptedPerPos[j]++;
  if (length > 0) {
    result.draftedSteps++;
    result.emittedOnDraftedSteps += emitted;
  }
  const bucket = Math.floor(start / POSITION_BUCKET);
  const positions = result.byOutputPosition;
  while (positions.steps.length <= bucket) {
    positions.steps.push(0);
    positions.emitted.push(0);
  }
  positions.steps[bucket]++;
  positions.emitted[bucket] += emitted;
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
