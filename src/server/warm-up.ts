/**
 * JIT warm-up at start: batch-128 steps of synthetic rollouts through the real decode, Step and
 * encode paths, on a throwaway service, before the sidecar reports ready. Without it the first
 * few hundred steps after every (re)start run on unoptimized code at two to three times the cost
 * (measured by replaying recorded frames into a fresh process). Functions called once per step
 * reach V8's optimizing tier only after several hundred calls, hence the default of 1000 steps
 * (about half a second). The clock is real (Date.now()), as in the server: a field that held
 * small integers in the warm-up and then a timestamp would change its objects' hidden class and
 * throw the compiled code away at the first real step.
 */
import type { StepService } from '../core/step-service.js';
import { decodeStep, encodeStep, encodeStepReply, IdBlockCache } from '../protocol/fast-lane.js';
import { RollingBatch } from '../replay/rolling-batch.js';
import { syntheticTraces } from '../replay/synthetic.js';

export function warmUp(service: StepService, steps: number, batch = 128): void {
  if (steps <= 0) return;
  // Requests finish and new ones take their rows, so release, history and new-group paths are
  // compiled too, not only the steady delta path; through the id cache the fast lane uses.
  const rows = syntheticTraces({ groups: Math.max(2, batch >> 3), samplesPerGroup: 16, outputTokens: 120 });
  const work = new RollingBatch(rows, batch, 'warm-up-');
  const ids = new IdBlockCache();
  for (let step = 1; step <= steps; step++) {
    const frame = encodeStep(work.next('warm-up', step, 3), step);
    encodeStepReply(service.step(decodeStep(frame, ids), Date.now()), step);
  }
}
