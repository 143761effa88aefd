/** The replay's step items as the core's columnar StepBatch, and its drafts back per item: one
 * mapping for the in-process and the wire backends. */
import { ItemStatus, NO_PROMPT, type StepBatch, type StepOutcome } from '../core/step-service.js';
import type { StepItem } from './simulate.js';

export function batchOf(engineId: string, stepId: bigint, items: readonly StepItem[], finished: readonly string[], k: number): StepBatch {
  const counts = items.map((item) => item.tokens.length);
  const tokens: number[] = [];
  for (const item of items) for (const t of item.tokens) tokens.push(t);
  return {
    engineId,
    stepId,
    numReqs: items.length,
    prefill: false,
    k,
    reqIds: items.map((item) => item.id),
    starts: items.map((item) => item.start),
    counts,
    promptLengths: items.map((item) => item.promptLength ?? NO_PROMPT),
    tokens,
    finished,
  };
}

/** Each item's draft (empty where the item did not get OK). */
export function draftsOf(outcome: StepOutcome): Int32Array[] {
  const drafts: Int32Array[] = [];
  let offset = 0;
  for (let i = 0; i < outcome.statuses.length; i++) {
    const length = outcome.draftLengths[i];
    drafts.push(outcome.statuses[i] === ItemStatus.OK ? outcome.drafts.slice(offset, offset + length) : new Int32Array(0));
    offset += length;
  }
  return drafts;
}
