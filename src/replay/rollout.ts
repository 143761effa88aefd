/**
 * A whole rollout step, scheduled as rollout-step.ts schedules every replay, to compare gate
 * policies: each engine step goes through the real Step service (ingest, score, gate, draft), and
 * its time comes from a *true* step-cost model the gate never sees. The calibrated gate learns
 * only from the step times that model produces, reported with the next step as a runner reports
 * them. The models' numbers are assumptions in the shape of real hardware, not measurements: the
 * comparison shows how each policy copes with a cost it does not know.
 */
import type { EngineOptions } from '../core/engine.js';
import { type GateConfig, UNGATED, verifyCostAt } from '../core/gate.js';
import { InProcessBackend } from './in-process.js';
import { DEFAULT_TAIL_BATCH, type EngineStep, replayRolloutSteps } from './rollout-step.js';
import type { StepItem } from './simulate.js';
import { prng } from './synthetic.js';
import type { TraceRow } from './traces.js';

/** A decode step's time in ms, from what it ran: requests, verified draft tokens, context held. */
export interface CostModel {
  readonly name: string;
  stepMs(step: Readonly<EngineStep>, verifiedSlots: number): number;
}

export const COST_SHAPES = ['table', 'flat', 'steep', 'context'] as const;
export type CostShape = (typeof COST_SHAPES)[number];

export interface CostShapeOptions {
  /** Plain decode step: baseMs + perSeqMs * B. */
  baseMs: number;
  perSeqMs: number;
  /** `table`: verifying K drafts per request multiplies the plain step by verifyCost(B). */
  verifyCost: ReadonlyArray<readonly [number, number]>;
  k: number;
  /** Multiplicative noise (standard deviation, e.g. 0.1), and 1 % of steps 3x slower (GC, preemption). */
  noise: number;
  seed: number;
}

/**
 * The true cost models of the simulator:
 * - table: verifying drafts multiplies the plain step by up to verifyCost(B), in proportion to
 *   the draft slots used (the adaptive gate's own assumption, so it knows this one exactly);
 * - flat: a verified draft token costs almost nothing (2 us), at any batch size;
 * - steep: a verified draft token costs 2 us per request in the batch (compute-bound verification),
 *   so drafting pays in the tail and stops paying at moderate batches;
 * - context: 910C-like, attention grows with the context every token attends to: 4 ns per
 *   context token per request in a plain step, and each verified draft token attends to its
 *   request's context as well (plus 20 us of compute).
 */
export function costModel(shape: CostShape, options: CostShapeOptions): CostModel {
  const { baseMs, perSeqMs, k } = options;
  const random = prng(options.seed);
  const gaussian = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const noisy = (ms: number) => {
    if (options.noise <= 0) return ms;
    const outlier = random() < 0.01 ? 3 : 1;
    return ms * outlier * Math.max(0.3, 1 + options.noise * gaussian());
  };
  const plain = (batch: number) => baseMs + perSeqMs * batch;
  const name = options.noise > 0 ? `${shape}, noise ${options.noise}` : shape;
  switch (shape) {
    case 'table':
      return { name, stepMs: (step, slots) => noisy(plain(step.batch) * (1 + (verifyCostAt(options.verifyCost, step.batch) - 1) * (k > 0 ? slots / (step.batch * k) : 0))) };
    case 'flat':
      return { name, stepMs: (step, slots) => noisy(plain(step.batch) + 0.002 * slots) };
    case 'steep':
      return { name, stepMs: (step, slots) => noisy(plain(step.batch) + 0.002 * step.batch * slots) };
    case 'context': {
      const attention = 4e-6;
      return {
        name,
        stepMs: (step, slots) => {
          const meanContext = step.batch > 0 ? step.contextTokens / step.batch : 0;
          return noisy(plain(step.batch) + attention * step.contextTokens + slots * (0.02 + attention * meanContext));
        },
      };
    }
  }
}

export type GatePolicy = { name: string; speculate: false } | { name: string; speculate: true; gate: Readonly<GateConfig> };

export interface RolloutResult {
  policy: string;
  engineSteps: number;
  speculativeSteps: number;
  emitted: number;
  proposed: number;
  accepted: number;
  timeMs: number;
  /** Share of the time spent in steps with at most `tailBatch` requests. */
  tailTimeShare: number;
  /** Mean tokens per request per step on speculative steps. */
  alSpeculative: number;
}

export interface RolloutOptions {
  k: number;
  maxNumSeqs: number;
  cost: CostModel;
  tailBatch?: number;
  /** Drafting options of the Step service (default: the sidecar's). */
  engine?: Partial<EngineOptions>;
  /** Each turn of a multi-turn row is its own request. */
  turns?: boolean;
}

/** The Step service under a gate policy; "no speculation" asks for no drafts at all (k = 0). */
class GatedBackend extends InProcessBackend {
  constructor(
    private readonly speculates: boolean,
    gate: Readonly<GateConfig>,
    engine: Partial<EngineOptions> | undefined,
  ) {
    super(engine ?? {}, [], gate);
  }

  override step(items: StepItem[], finished: string[], k: number): Int32Array[] {
    return super.step(items, finished, this.speculates ? k : 0);
  }
}

export async function simulateRollout(rows: TraceRow[], policy: GatePolicy, options: RolloutOptions): Promise<RolloutResult> {
  const { k, cost } = options;
  const tailBatch = options.tailBatch ?? DEFAULT_TAIL_BATCH;
  const backend = new GatedBackend(policy.speculate, policy.speculate ? policy.gate : UNGATED, options.engine);
  const result: RolloutResult = { policy: policy.name, engineSteps: 0, speculativeSteps: 0, emitted: 0, proposed: 0, accepted: 0, timeMs: 0, tailTimeShare: 0, alSpeculative: 0 };
  let tailMs = 0;
  let emittedOnSpeculative = 0;
  let requestStepsOnSpeculative = 0;
  await replayRolloutSteps([rows], [backend], {
    k,
    maxNumSeqs: options.maxNumSeqs,
    turns: options.turns ?? false,
    tailBatch,
    onEngineStep: (step) => {
      const speculated = backend.lastSpeculated;
      const slots = speculated ? step.proposed : 0;
      const stepMs = cost.stepMs(step, slots);
      // What the runner reports with its next call: this step's time, batch and verified drafts.
      backend.timing = { stepUs: Math.round(stepMs * 1000), stepReqs: step.batch, verifiedSlots: slots, hadPrefill: false };
      result.engineSteps++;
      result.timeMs += stepMs;
      result.emitted += step.emitted;
      result.proposed += slots;
      result.accepted += step.accepted;
      if (step.batch <= tailBatch) tailMs += stepMs;
      if (speculated) {
        result.speculativeSteps++;
        emittedOnSpeculative += step.emitted;
        requestStepsOnSpeculative += step.batch;
      }
    },
  });
  result.tailTimeShare = result.timeMs > 0 ? tailMs / result.timeMs : 0;
  result.alSpeculative = requestStepsOnSpeculative > 0 ? emittedOnSpeculative / requestStepsOnSpeculative : 0;
  return result;
}

export interface GateComparison {
  cost: string;
  results: RolloutResult[];
  /** The fixed threshold with the least time, chosen in hindsight among those tried. */
  bestThreshold: RolloutResult;
  calibrated: RolloutResult;
  noSpeculation: RolloutResult;
}

export const DEFAULT_THRESHOLDS: readonly number[] = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128];

/**
 * Every policy over the same rows under one true cost model (a fresh, identically seeded model
 * per run): no speculation, always, each fixed threshold, the adaptive gate with its configured
 * table, and the calibrated gate, which learns the cost from the step times alone.
 */
export async function compareGates(
  rows: TraceRow[],
  cost: () => CostModel,
  options: Omit<RolloutOptions, 'cost'>,
  gate: Readonly<GateConfig>,
  thresholds: readonly number[] = DEFAULT_THRESHOLDS,
): Promise<GateComparison> {
  const run = (policy: GatePolicy) => simulateRollout(rows, policy, { ...options, cost: cost() });
  const noSpeculation = await run({ name: 'no speculation', speculate: false });
  const results = [noSpeculation, await run({ name: 'always', speculate: true, gate: { ...UNGATED, kByBatch: gate.kByBatch } })];
  const fixed: RolloutResult[] = [];
  for (const threshold of thresholds) fixed.push(await run({ name: `threshold ${threshold}`, speculate: true, gate: { ...gate, mode: 'threshold', threshold } }));
  results.push(...fixed);
  results.push(await run({ name: 'adaptive (configured table)', speculate: true, gate: { ...gate, mode: 'adaptive' } }));
  const calibrated = await run({ name: 'calibrated', speculate: true, gate: { ...gate, mode: 'calibrated' } });
  results.push(calibrated);
  const bestThreshold = fixed.reduce((best, r) => (r.timeMs < best.timeMs ? r : best));
  return { cost: cost().name, results, bestThreshold, calibrated, noSpeculation };
}
