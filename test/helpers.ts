/** Builders shared by the Step and core tests. */
import { NO_PROMPT, type StepBatch, type StepOutcome } from '../src/core/step-service.js';
import type { GrowthMemory } from '../src/core/typed.js';

export interface TestItem {
  id: string;
  start?: number;
  tokens: number[];
  /** Set when the item carries its full context. */
  prompt?: number;
  /** Tokens of the request still to come in later steps (a context sent in chunks). */
  remaining?: number;
}

let nextStepId = 1n;

/** A StepBatch of engine-1 (or extra.engineId) with a fresh, increasing step id. */
export function stepBatch(items: TestItem[], extra: Partial<StepBatch> = {}): StepBatch {
  return {
    engineId: 'engine-1',
    stepId: nextStepId++,
    numReqs: items.length,
    prefill: false,
    k: 3,
    reqIds: items.map((item) => item.id),
    starts: items.map((item) => item.start ?? 0),
    counts: items.map((item) => item.tokens.length),
    promptLengths: items.map((item) => item.prompt ?? NO_PROMPT),
    ...(items.some((item) => item.remaining) ? { remaining: items.map((item) => item.remaining ?? 0) } : {}),
    tokens: items.flatMap((item) => item.tokens),
    finished: [],
    ...extra,
  };
}

/** Reserves n consecutive step ids and returns the first. */
export function reserveStepIds(n: number): bigint {
  const first = nextStepId;
  nextStepId += BigInt(n);
  return first;
}

export function draftLists(outcome: StepOutcome): number[][] {
  const out: number[][] = [];
  let offset = 0;
  for (const length of outcome.draftLengths) {
    out.push(Array.from(outcome.drafts.subarray(offset, offset + length)));
    offset += length;
  }
  return out;
}

export const PROMPT = [100, 101, 102, 103];

/**
 * A GrowthMemory that allocates nothing itself (the automaton then allocates as it would) and
 * records the length of every array an automaton asked it for: each construction and growth.
 */
export function recordingGrowthMemory(): { memory: GrowthMemory; lengths: number[] } {
  const lengths: number[] = [];
  return {
    lengths,
    memory: {
      allocate: (length: number) => (lengths.push(length), null),
      ahead: () => Number.POSITIVE_INFINITY,
      release: () => {},
    },
  };
}
