/**
 * JIT warm-up at start: a few hundred batch-128 steps of synthetic rollouts through the real decode,
 * Step and encode paths, on a throwaway service, before the sidecar reports ready. Without it the
 * first few hundred steps after every (re)start run on unoptimized code at two to three times the
 * cost (measured by replaying recorded frames into a fresh process).
 */
import type { StepService } from '../core/step-service.js';
import { decodeStep, encodeStep, encodeStepReply, IdBlockCache } from '../protocol/fast-lane.js';
import { batchOf } from '../replay/batch.js';
import type { StepItem } from '../replay/simulate.js';
import { syntheticTraces } from '../replay/synthetic.js';

export function warmUp(service: StepService, steps: number, batch = 128): void {
  if (steps <= 0) return;
  const rows = syntheticTraces({ groups: Math.max(2, batch >> 3), samplesPerGroup: 16, outputTokens: 120 });
  const ids = new IdBlockCache();
  // Requests finish and new ones take their rows, so release, history and new-group paths are
  // compiled too, not only the steady delta path.
  let started = 0;
  const slots = Array.from({ length: batch }, () => ({ row: rows[started % rows.length], id: `warm-up-${started++}`, held: 0, at: -1 }));
  let finished: string[] = [];
  for (let step = 0; step < steps; step++) {
    const ended: string[] = [];
    const items: StepItem[] = slots.map((slot, i) => {
      if (slot.at >= slot.row.output.length) {
        ended.push(slot.id);
        Object.assign(slot, { row: rows[started % rows.length], id: `warm-up-${started++}`, held: 0, at: -1 });
      }
      const fresh = slot.at < 0 ? slot.row.prompt : slot.row.output.slice(slot.at, slot.at + 1 + ((step + i) % 4));
      const item: StepItem = { id: slot.id, start: slot.held, tokens: fresh, promptLength: slot.at < 0 ? fresh.length : undefined };
      slot.at = slot.at < 0 ? 0 : slot.at + fresh.length;
      slot.held += fresh.length;
      return item;
    });
    const frame = encodeStep(batchOf('warm-up', BigInt(step + 1), items, finished, 3), step);
    encodeStepReply(service.step(decodeStep(frame, ids), 0), step);
    finished = ended;
  }
}
