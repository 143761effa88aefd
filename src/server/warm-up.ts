/**
 * JIT warm-up at start: a few hundred batch-128 steps of synthetic rollouts through the real decode,
 * Step and encode paths, on a throwaway service, before the sidecar reports ready. Without it the
 * first few hundred steps after every (re)start run on unoptimized code at two to three times the
 * cost (measured by replaying recorded frames into a fresh process).
 */
import { NO_PROMPT, type StepService } from '../core/step-service.js';
import { decodeStep, encodeStep, encodeStepReply } from '../protocol/fast-lane.js';
import { syntheticTraces } from '../replay/synthetic.js';

export function warmUp(service: StepService, steps: number, batch = 128): void {
  if (steps <= 0) return;
  const rows = syntheticTraces({ groups: Math.max(1, batch >> 4), samplesPerGroup: 16 }).slice(0, batch);
  const held = rows.map(() => 0);
  const at = rows.map(() => 0);
  for (let step = 0; step < steps; step++) {
    const starts: number[] = [];
    const counts: number[] = [];
    const promptLengths: number[] = [];
    const tokens: number[] = [];
    rows.forEach((row, i) => {
      const fresh = step === 0 ? row.prompt : row.output.slice(at[i], at[i] + 1 + ((step + i) % 4));
      if (step > 0) at[i] = (at[i] + fresh.length) % Math.max(1, row.output.length - 4);
      starts.push(held[i]);
      counts.push(fresh.length);
      promptLengths.push(step === 0 ? row.prompt.length : NO_PROMPT);
      for (const t of fresh) tokens.push(t);
      held[i] += fresh.length;
    });
    const frame = encodeStep(
      { engineId: 'warm-up', stepId: BigInt(step + 1), numReqs: rows.length, prefill: false, k: 3, reqIds: rows.map((row) => `warm-up-${row.id}`), starts, counts, promptLengths, tokens, finished: [] },
      step,
    );
    encodeStepReply(service.step(decodeStep(frame), 0), step);
  }
}
