/**
 * Deterministic synthetic rollouts for tests and demos on a fresh clone (no shared data needed).
 * Each group is one prompt with several samples. A sample is built from phrases: some copied from
 * the prompt, some from a per-group pool its siblings also use, some fresh, with occasional
 * environment (tool) spans, so own-context, sibling and history drafting all have signal, as in
 * real GRPO rollouts.
 */
import type { TraceRow } from './traces.js';

export interface SyntheticOptions {
  groups: number;
  samplesPerGroup: number;
  promptTokens: number;
  /** Mean output length in tokens. */
  outputTokens: number;
  vocabSize: number;
  seed: number;
  /** Probability that a sample inserts a tool response (environment span). */
  envProbability: number;
  /**
   * Share of phrases drawn from a pool common to every prompt (the model's own phrasing across
   * problems), taken from the per-group pool's share. 0 by default: groups share nothing.
   */
  sharedPhrases: number;
}

export const DEFAULT_SYNTHETIC: Readonly<SyntheticOptions> = Object.freeze({
  groups: 8,
  samplesPerGroup: 8,
  promptTokens: 120,
  outputTokens: 400,
  vocabSize: 32_000,
  seed: 1,
  envProbability: 0.5,
  sharedPhrases: 0,
});

/** Small, fast, seedable PRNG (mulberry32). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function syntheticTraces(options: Partial<SyntheticOptions> = {}): TraceRow[] {
  const o = { ...DEFAULT_SYNTHETIC, ...options };
  const random = prng(o.seed);
  const int = (n: number) => Math.floor(random() * n);
  const fresh = (length: number) => Array.from({ length }, () => int(o.vocabSize));
  const rows: TraceRow[] = [];
  // Drawn only when used, so the default rollouts stay what they were.
  const shared = o.sharedPhrases > 0 ? Array.from({ length: 16 }, () => fresh(4 + int(12))) : [];
  for (let g = 0; g < o.groups; g++) {
    const prompt = fresh(o.promptTokens);
    const pool = Array.from({ length: 12 }, () => fresh(4 + int(12)));
    const toolCall = fresh(6);
    for (let s = 0; s < o.samplesPerGroup; s++) {
      const output: number[] = [];
      const env: Array<[number, number]> = [];
      const target = Math.max(8, Math.round(o.outputTokens * (0.4 + 1.2 * random())));
      let toolDone = false;
      while (output.length < target) {
        const choice = random();
        if (choice < 0.25) {
          const start = int(Math.max(1, prompt.length - 8));
          output.push(...prompt.slice(start, start + 3 + int(8)));
        } else if (choice < 0.25 + 0.45 * o.sharedPhrases) {
          output.push(...shared[int(shared.length)]);
        } else if (choice < 0.7) {
          output.push(...pool[int(pool.length)]);
        } else if (choice < 0.8 && output.length > 16) {
          const start = int(output.length - 8);
          output.push(...output.slice(start, start + 2 + int(6)));
        } else {
          output.push(...fresh(1 + int(5)));
        }
        if (!toolDone && output.length > target / 2 && random() < o.envProbability) {
          output.push(...toolCall);
          const start = output.length;
          output.push(...fresh(5 + int(20)));
          env.push([start, output.length]);
          toolDone = true;
        }
      }
      rows.push({ id: `g${g}-s${s}`, group: `g${g}`, prompt, output, env });
    }
  }
  return rows;
}
