/**
 * JIT warm-up at start: a few hundred batch-128 steps of synthetic rollouts through the real decode,
 * Step and encode paths, on a throwaway service, before the sidecar reports ready. Without it the
 * first few hundred steps after every (re)start run on unoptimized code at two to three times the
 * cost (measured by replaying recorded frames into a fresh process).
 */
import type { StepService } from '../core/step-service.js';
import { decodeStep, encodeStep, encodeStepReply } from '../protocol/fast-lane.js';
import { batchOf } from '../replay/batch.js';
import type { StepItem } from '../replay/simulate.js';
import { syntheticTraces } from '../replay/synthetic.js';

export function warmUp(service: StepService, steps: number, batch = 128): void {
  if (steps <= 0) return;
  const rows = syntheticTraces({ groups: Math.max(1, batch >> 4), samplesPerGroup: 16 }).slice(0, batch);
  const held = rows.map(() => 0);
  const at = rows.map(() => 0);
  for (let step = 0; step < steps; step++) {
    const items: StepItem[] = rows.map((row, i) => {
      const fresh = step === 0 ? row.prompt : row.output.slice(at[i], at[i] + 1 + ((step + i) % 4));
      if (step > 0) at[i] = (at[i] + fresh.length) % Math.max(1, row.output.length - 4);
      const item: StepItem = { id: `warm-up-${row.id}`, start: held[i], tokens: fresh, promptLength: step === 0 ? row.prompt.length : undefined };
      held[i] += fresh.length;
      return item;
    });
    const frame = encodeStep(batchOf('warm-up', BigInt(step + 1), items, [], 3), step);
    encodeStepReply(service.step(decodeStep(frame), 0), step);
  }
}
