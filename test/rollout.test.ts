import { describe, expect, it } from 'vitest';
import { DEFAULT_VERIFY_COST, UNGATED } from '../src/core/gate.js';
import { compareGates, costModel, simulateRollout } from '../src/replay/rollout.js';
import { syntheticTraces } from '../src/replay/synthetic.js';

const rows = syntheticTraces({ groups: 4, samplesPerGroup: 8 });
const modelTokens = rows.reduce((sum, row) => sum + row.output.length - row.env.reduce((s, [a, b]) => s + (b - a), 0), 0);
const shape = { baseMs: 20, perSeqMs: 0.1, verifyCost: DEFAULT_VERIFY_COST, k: 3, noise: 0, seed: 1 };
const cost = costModel('table', shape);
const options = { k: 3, maxNumSeqs: 16, cost };
const gate = (mode: 'threshold' | 'adaptive', threshold: number) => ({ mode, threshold, verifyCost: DEFAULT_VERIFY_COST, hysteresis: 0.05, smoothing: 0.01, minObservations: 50 });

describe('rollout simulation (continuous batching, gate policies)', async () => {
  it('emits every model token exactly once whatever the policy; speculation only changes the steps', async () => {
    const never = await simulateRollout(rows, { name: 'never', speculate: false }, options);
    const always = await simulateRollout(rows, { name: 'always', speculate: true, gate: UNGATED }, options);
    expect(never.emitted).toBe(modelTokens);
    expect(always.emitted).toBe(modelTokens);
    expect(never.speculativeSteps).toBe(0);
    expect(always.speculativeSteps).toBe(always.engineSteps);
    expect(always.engineSteps).toBeLessThan(never.engineSteps);
    expect(always.alSpeculative).toBeGreaterThan(1);
  });

  it('charges a plain step base + perSeq * B, and a verification step up to verifyCost(B) times that', async () => {
    const one = [rows[0]];
    const never = await simulateRollout(one, { name: 'never', speculate: false }, options);
    expect(never.timeMs).toBeCloseTo(never.engineSteps * (20 + 0.1), 6);
    const always = await simulateRollout(one, { name: 'always', speculate: true, gate: UNGATED }, options);
    expect(always.timeMs).toBeGreaterThan(always.engineSteps * 20.1);
    expect(always.timeMs).toBeLessThanOrEqual(always.engineSteps * 20.1 * 1.05 + 1e-9);
  });

  it('with the switch, large batches decode plainly and the tail speculates', async () => {
    const switched = await simulateRollout(rows, { name: 'threshold 8', speculate: true, gate: gate('threshold', 8) }, options);
    expect(switched.speculativeSteps).toBeGreaterThan(0);
    expect(switched.speculativeSteps).toBeLessThan(switched.engineSteps);
    expect(switched.emitted).toBe(modelTokens);
  });

  it('the adaptive gate speculates at large batch when acceptance pays for verification', async () => {
    const adaptive = await simulateRollout(rows, { name: 'adaptive', speculate: true, gate: gate('adaptive', 8) }, options);
    const switched = await simulateRollout(rows, { name: 'threshold 8', speculate: true, gate: gate('threshold', 8) }, options);
    // Synthetic rollouts are repetitive (AL well above the verification cost at 16): adaptive
    // keeps speculating where the fixed switch turns off, and is faster.
    expect(adaptive.speculativeSteps / adaptive.engineSteps).toBeGreaterThan(switched.speculativeSteps / switched.engineSteps);
    expect(adaptive.timeMs).toBeLessThan(switched.timeMs);
  });

  it('feeds the calibrated gate only the true cost model\'s step times: it learns to draft where verification is nearly free and to stop where it is costly', async () => {
    const many = syntheticTraces({ groups: 8, samplesPerGroup: 16 });
    const base = { k: 3, maxNumSeqs: 64 };
    const gateConfig = { mode: 'threshold' as const, threshold: 8, verifyCost: DEFAULT_VERIFY_COST, hysteresis: 0.05, smoothing: 0.01, minObservations: 50 };
    const flat = await compareGates(many, () => costModel('flat', { ...shape, noise: 0.1 }), base, gateConfig, [8, 64]);
    // Verification nearly free: the best fixed threshold is "always"-like, and the calibrated gate gets close to it.
    expect(flat.bestThreshold.policy).toBe('threshold 64');
    expect(flat.calibrated.timeMs).toBeLessThan(flat.results.find((r) => r.policy === 'threshold 8')!.timeMs);
    expect(flat.calibrated.timeMs / flat.bestThreshold.timeMs).toBeLessThan(1.05);
    // Verification that costs more than drafting gains at every size: close to no speculation.
    const hostile = await compareGates(many, () => costModel('table', { ...shape, verifyCost: [[1, 6], [64, 8]] }), base, gateConfig, [8, 64]);
    expect(hostile.calibrated.timeMs / hostile.noSpeculation.timeMs).toBeLessThan(1.1);
    expect(hostile.calibrated.speculativeSteps).toBeLessThan(hostile.calibrated.engineSteps / 4);
  });
});
