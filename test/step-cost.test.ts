/**
 * The calibrated gate: a step-cost model learnt from the runner's step times, a safe cold start,
 * bounded exploration, and decisions that depend only on the sequence of steps.
 */
import { describe, expect, it } from 'vitest';
import { BatchGate, CALIBRATION_DEFAULTS, type GateConfig, GateReason } from '../src/core/gate.js';
import { bucketOf, StepCostModel } from '../src/core/step-cost.js';
import { prng } from '../src/replay/synthetic.js';

/** A 910C-like true cost, in us: plain 20 ms + 0.1 ms per request; each draft token 8 us per request in the batch. */
const truePlain = (batch: number) => 20_000 + 100 * batch;
const truePerSlot = (batch: number) => 8 * batch;

function noisy(seed: number) {
  const random = prng(seed);
  return (us: number) => {
    const outlier = random() < 0.01 ? 4 : 1; // GC pauses, preemption
    return us * outlier * (0.9 + 0.2 * random());
  };
}

const calibrated: GateConfig = { mode: 'calibrated', threshold: 32, verifyCost: [[1, 1]], hysteresis: 0.05, smoothing: 0.01, minObservations: 20 };

describe('step-cost model', () => {
  it('gives small batch sizes a bucket each and larger ones four per doubling', () => {
    expect([1, 2, 16, 17, 20, 21, 32, 33, 128, 129].map(bucketOf)).toEqual([0, 1, 15, 16, 16, 17, 19, 20, 27, 28]);
  });

  it('converges to the true cost within 10 % at the batch sizes visited, through 10 % noise and outliers', () => {
    const model = new StepCostModel();
    const noise = noisy(3);
    const random = prng(7);
    const sizes = [1, 3, 8, 16, 24, 32, 64, 100, 128];
    for (let i = 0; i < 20_000; i++) {
      const batch = sizes[i % sizes.length];
      // Drafting steps verify a varying number of draft tokens; one step in four is plain.
      const slots = i % 4 === 0 ? 0 : Math.round(batch * 3 * random());
      model.observe(batch, slots, noise(truePlain(batch) + truePerSlot(batch) * slots));
    }
    for (const batch of sizes) {
      const slots = 3 * batch;
      const truth = truePlain(batch) + truePerSlot(batch) * slots;
      expect(Math.abs(model.predictUs(batch, slots) / truth - 1), `batch ${batch}`).toBeLessThan(0.1);
      expect(Math.abs(model.predictUs(batch, 0) / truePlain(batch) - 1), `plain, batch ${batch}`).toBeLessThan(0.1);
    }
  });

  it('follows drift: the cost of a batch size changes and the model goes with it', () => {
    const model = new StepCostModel();
    const step = (factor: number, i: number) => model.observe(64, i % 2 === 0 ? 0 : 192, factor * (truePlain(64) + (i % 2 === 0 ? 0 : truePerSlot(64) * 192)));
    for (let i = 0; i < 2000; i++) step(1, i);
    for (let i = 0; i < 4000; i++) step(1.5, i);
    expect(model.predictUs(64, 0) / (1.5 * truePlain(64))).toBeCloseTo(1, 1);
  });

  it('ignores nonsense samples (zero or negative times, no requests)', () => {
    const model = new StepCostModel();
    model.observe(0, 0, 100);
    model.observe(8, 0, 0);
    model.observe(8, 0, -5);
    model.observe(8, 0, Number.NaN);
    expect(model.curve()).toEqual([]);
  });
});

/** Drives a gate through steps at one batch size, timing each with the true cost; returns the decisions. */
function drive(gate: BatchGate, batches: readonly number[], noise = (us: number) => us, acceptedPerDraft = 1.2) {
  const reasons: number[] = [];
  for (const batch of batches) {
    const decision = gate.decide(batch, false, 3);
    reasons.push(decision.reason);
    const slots = decision.speculate ? 3 * batch : 0;
    gate.observeDrafts(batch, batch, 3 * batch);
    for (let i = 0; i < batch; i++) gate.observe(acceptedPerDraft);
    gate.observeStep({ stepUs: noise(truePlain(batch) + truePerSlot(batch) * slots), stepReqs: batch, verifiedSlots: slots, hadPrefill: false });
  }
  return reasons;
}

describe('calibrated gate', () => {
  it('starts as the threshold switch, exploring the untimed kind of step at most every explorePeriod-th step of a size', () => {
    const gate = new BatchGate(calibrated);
    const reasons = drive(gate, new Array(8).fill(128));
    const explored = reasons.filter((r) => r === GateReason.EXPLORE_DRAFTS).length;
    expect(explored).toBeLessThanOrEqual(Math.ceil(8 / CALIBRATION_DEFAULTS.explorePeriod));
    expect(reasons[0]).toBe(GateReason.ABOVE_THRESHOLD);
    expect(drive(new BatchGate(calibrated), [4])[0]).toBe(GateReason.BELOW_THRESHOLD);
  });

  it('learns where drafting pays: on at small batches, off at large ones, and a break-even size between', () => {
    // Gain (1 + 1.2) x plain / (plain + 24 us x B^2): pays up to about B = 33 requests.
    const gate = new BatchGate(calibrated);
    const sizes = Array.from({ length: 3000 }, (_, i) => [4, 16, 48, 128, 256][i % 5]);
    drive(gate, sizes, noisy(5));
    const after = drive(gate, [4, 16, 48, 128, 256]);
    expect(after.slice(0, 2)).toEqual([GateReason.CALIBRATED_GAIN, GateReason.CALIBRATED_GAIN]);
    expect(after.slice(2)).toEqual([GateReason.CALIBRATED_NO_GAIN, GateReason.CALIBRATED_NO_GAIN, GateReason.CALIBRATED_NO_GAIN]);
    expect(gate.breakEvenBatch).toBeGreaterThan(16);
    expect(gate.breakEvenBatch).toBeLessThanOrEqual(48);
  });

  it('keeps exploring a known size only one step in refreshPeriod', () => {
    const gate = new BatchGate(calibrated);
    drive(gate, new Array(400).fill(16));
    const reasons = drive(gate, new Array(1280).fill(16));
    const explored = reasons.filter((r) => r === GateReason.EXPLORE_PLAIN || r === GateReason.EXPLORE_DRAFTS).length;
    expect(explored).toBe(1280 / CALIBRATION_DEFAULTS.refreshPeriod);
  });

  it('leaves prefill steps and untimed steps out of the model', () => {
    const gate = new BatchGate(calibrated);
    gate.observeStep({ stepUs: 1_000_000, stepReqs: 8, verifiedSlots: 0, hadPrefill: true });
    gate.observeStep({ stepUs: 0, stepReqs: 8, verifiedSlots: 0, hadPrefill: false });
    expect(gate.cost!.curve()).toEqual([]);
  });

  it('decides the same for the same sequence of steps (tensor-parallel ranks, transports)', () => {
    const sizes = Array.from({ length: 2000 }, (_, i) => 1 + ((i * 37) % 200));
    const first = drive(new BatchGate(calibrated), sizes, noisy(11));
    const second = drive(new BatchGate(calibrated), sizes, noisy(11));
    expect(second).toEqual(first);
  });
});
