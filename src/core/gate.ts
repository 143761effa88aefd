/**
 * The speculation gate: speculate in this step or not, and why. Pure: the caller feeds it the
 * acceptance it observed.
 *
 * - `threshold` (the seed's switch, vLLM-Ascend's VLLM_SPECULATIVE_BATCH_SIZE_THRE): off when more
 *   than `threshold` requests run (strictly), `threshold <= 0` disables the gate. Prefill steps are
 *   never gated.
 * - `adaptive`: speculate when the tokens a request gains per step with drafts,
 *   1 + E[accepted], outweigh the configured cost of a verification step at this batch size
 *   (relative to a plain decode step), with hysteresis so it does not flap at the boundary. Until
 *   `minObservations` drafts were scored it behaves like `threshold`.
 * - `calibrated`: the same comparison, with the cost of a step learnt from the step times the
 *   runner reports (step-cost.ts) instead of a configured table: speculate when the tokens per
 *   unit of time with drafts, (1 + E[accepted]) / time(B, slots), beat those without, 1 / time(B, 0).
 *   Where the model has no data at a batch size yet it behaves like `threshold`, and explores:
 *   every `explorePeriod`-th step of that size goes the other way until both kinds of step were
 *   timed; once it knows a size, one step in `refreshPeriod` still goes the other way so the model
 *   follows drift. Counters, not randomness: the same steps give the same decisions.
 */
import { bucketOf, COARSE_BUCKETS, coarseBucketOf, COST_BUCKETS, StepCostModel } from './step-cost.js';

export const GATE_MODES = ['threshold', 'adaptive', 'calibrated'] as const;
export type GateMode = (typeof GATE_MODES)[number];

/** Why the gate decided as it did; numbered for the wire (the order is part of the protocol). */
export const GateReason = {
  BELOW_THRESHOLD: 0,
  ABOVE_THRESHOLD: 1,
  PREFILL: 2,
  GATE_DISABLED: 3,
  ADAPTIVE_GAIN: 4,
  ADAPTIVE_NO_GAIN: 5,
  K_ZERO: 6,
  CALIBRATED_GAIN: 7,
  CALIBRATED_NO_GAIN: 8,
  EXPLORE_DRAFTS: 9,
  EXPLORE_PLAIN: 10,
} as const;
export type GateReason = (typeof GateReason)[keyof typeof GateReason];
export const GATE_REASON_NAMES = Object.freeze(Object.keys(GateReason).map((name) => name.toLowerCase())) as readonly string[];

export interface GateConfig {
  mode: GateMode;
  /** Speculation off when num_reqs > threshold; <= 0 disables the gate. */
  threshold: number;
  /**
   * Cost of a verification step with K drafts relative to a plain decode step, by batch size:
   * [batchSize, ratio] points, linearly interpolated, flat beyond the ends. Measure it on the
   * deployment's hardware and K (adaptive mode only).
   */
  verifyCost: ReadonlyArray<readonly [number, number]>;
  /** Switch on above gain 1 + hysteresis, off below 1 - hysteresis. */
  hysteresis: number;
  /** Weight of a new observation in the running mean of accepted tokens per draft. */
  smoothing: number;
  /** Scored drafts needed before the adaptive rule replaces the threshold rule. */
  minObservations: number;
  /**
   * Longest draft by batch size: [B, K] pairs, B increasing; a step of n requests drafts at most
   * the K of the first pair with n <= B (the last pair's beyond them), never more than the
   * runner's k. In the long tail a step verifies 8 tokens for about the cost of 3, at larger
   * batches it does not. Absent or empty: the runner's k at every size.
   */
  kByBatch?: ReadonlyArray<readonly [number, number]>;
  /** Calibrated mode (absent: CALIBRATION_DEFAULTS). */
  calibration?: Readonly<CalibrationConfig>;
}

export interface CalibrationConfig {
  /** Timed steps of each kind (plain, drafting) a batch-size bucket needs before the model decides there. */
  minSamples: number;
  /** While a bucket lacks samples, every explorePeriod-th step of it goes against the threshold rule. */
  explorePeriod: number;
  /** Once known, every refreshPeriod-th step of a bucket goes against the model's choice. */
  refreshPeriod: number;
}

export const CALIBRATION_DEFAULTS: Readonly<CalibrationConfig> = Object.freeze({ minSamples: 4, explorePeriod: 2, refreshPeriod: 128 });

/**
 * A decode step the runner timed (calibrated mode): the step that ran just before the call that
 * reports it, from the runner's clock.
 */
export interface StepTiming {
  /** Its wall time, in microseconds (0: unknown). */
  stepUs: number;
  /** Requests it ran. */
  stepReqs: number;
  /** Draft tokens it verified (0: a plain decode step). */
  verifiedSlots: number;
  /** It also ran prefill tokens (new prompts): not a decode step's cost, left out. */
  hadPrefill: boolean;
}

export interface GateDecision {
  speculate: boolean;
  reason: GateReason;
}

/** Decisions are shared, frozen constants: deciding allocates nothing. */
const DECISIONS: readonly GateDecision[] = Object.freeze(
  Object.values(GateReason).map((reason) =>
    Object.freeze({
      reason,
      speculate:
        reason === GateReason.BELOW_THRESHOLD ||
        reason === GateReason.PREFILL ||
        reason === GateReason.GATE_DISABLED ||
        reason === GateReason.ADAPTIVE_GAIN ||
        reason === GateReason.CALIBRATED_GAIN ||
        reason === GateReason.EXPLORE_DRAFTS,
    }),
  ),
);

export function decision(reason: GateReason): GateDecision {
  return DECISIONS[reason];
}

export class BatchGate {
  private meanAccepted = 0;
  private observations = 0;
  private on = true;
  /** Calibrated mode: the step-cost model, drafting statistics, and per-bucket state. */
  readonly cost: StepCostModel | null;
  private draftedShare = 1;
  private slotsPerRequest = 0;
  private draftSteps = 0;
  private readonly bucketOn = new Uint8Array(COST_BUCKETS).fill(1);
  /** Steps seen per coarse bucket: the clock of exploration (the tail passes each size briefly). */
  private readonly bucketSteps = new Float64Array(COARSE_BUCKETS);

  constructor(readonly config: Readonly<GateConfig>) {
    this.cost = config.mode === 'calibrated' ? new StepCostModel() : null;
  }

  /**
   * Decode steps with more requests than this never speculate, whatever the gate observes; 0 when
   * there is no such bound (gate disabled, or adaptive). Replies carry it, so a client knows ahead
   * which steps will get no drafts and need not wait for their replies.
   */
  get offAbove(): number {
    return this.config.mode === 'threshold' && this.config.threshold > 0 ? this.config.threshold : 0;
  }

  /** Whether this gate drafts in the shadow while off (it learns acceptance from it). */
  get learnsWhileOff(): boolean {
    return this.config.mode !== 'threshold';
  }

  decide(numReqs: number, prefill: boolean, k: number): GateDecision {
    if (k === 0) return DECISIONS[GateReason.K_ZERO];
    if (prefill) return DECISIONS[GateReason.PREFILL];
    const { mode, threshold } = this.config;
    if (mode === 'calibrated') return this.decideCalibrated(numReqs);
    if (mode === 'adaptive' && this.observations >= this.config.minObservations) {
      const gain = (1 + this.meanAccepted) / verifyCostAt(this.config.verifyCost, numReqs);
      const bound = this.on ? 1 - this.config.hysteresis : 1 + this.config.hysteresis;
      this.on = gain > bound;
      return DECISIONS[this.on ? GateReason.ADAPTIVE_GAIN : GateReason.ADAPTIVE_NO_GAIN];
    }
    if (threshold <= 0) return DECISIONS[GateReason.GATE_DISABLED];
    return DECISIONS[numReqs > threshold ? GateReason.ABOVE_THRESHOLD : GateReason.BELOW_THRESHOLD];
  }

  /** A decode step the runner timed (calibrated mode; ignored by the other modes). */
  observeStep(timing: Readonly<StepTiming>): void {
    if (this.cost === null || timing.hadPrefill || timing.stepUs <= 0 || timing.stepReqs <= 0) return;
    this.cost.observe(timing.stepReqs, timing.verifiedSlots, timing.stepUs);
  }

  /** The drafts of one step (served or shadow): how many requests had one, and their tokens. */
  observeDrafts(items: number, drafted: number, tokens: number): void {
    if (items === 0) return;
    this.draftSteps++;
    const weight = Math.max(this.config.smoothing, 1 / this.draftSteps);
    this.draftedShare += weight * (drafted / items - this.draftedShare);
    this.slotsPerRequest += weight * (tokens / items - this.slotsPerRequest);
  }

  /**
   * The smallest batch size at which the calibrated model says drafting no longer pays (0: it pays
   * at every size it knows, or it knows none).
   */
  get breakEvenBatch(): number {
    if (this.cost === null) return 0;
    for (const point of this.cost.curve()) {
      if (point.plainSamples === 0 || point.draftSamples === 0) continue;
      if (this.gainAt(Math.round(point.batch)) < 1) return Math.max(1, Math.round(point.batch));
    }
    return 0;
  }

  /** Tokens per unit of time with drafts over without, at `batch` requests (calibrated model). */
  private gainAt(batch: number): number {
    const cost = this.cost!;
    const min = (this.config.calibration ?? CALIBRATION_DEFAULTS).minSamples;
    const plain = cost.predictUs(batch, 0, min);
    const drafting = cost.predictUs(batch, batch * this.slotsPerRequest, min);
    if (!(plain > 0 && drafting > 0)) return 1;
    return ((1 + this.draftedShare * this.meanAccepted) * plain) / drafting;
  }

  private decideCalibrated(numReqs: number): GateDecision {
    const cost = this.cost!;
    const calibration = this.config.calibration ?? CALIBRATION_DEFAULTS;
    const bucket = bucketOf(numReqs);
    const seen = ++this.bucketSteps[coarseBucketOf(numReqs)];
    if (cost.knows(numReqs, calibration.minSamples) && this.observations >= this.config.minObservations) {
      const bound = this.bucketOn[bucket] === 1 ? 1 - this.config.hysteresis : 1 + this.config.hysteresis;
      const on = this.gainAt(numReqs) > bound;
      this.bucketOn[bucket] = on ? 1 : 0;
      if (seen % calibration.refreshPeriod === 0) return DECISIONS[on ? GateReason.EXPLORE_PLAIN : GateReason.EXPLORE_DRAFTS];
      return DECISIONS[on ? GateReason.CALIBRATED_GAIN : GateReason.CALIBRATED_NO_GAIN];
    }
    // Cold at this size: the threshold rule, and every explorePeriod-th step the kind still untimed.
    const threshold = this.config.threshold;
    const below = threshold <= 0 || numReqs <= threshold;
    if (seen % calibration.explorePeriod === 0) {
      if (below && cost.plainSamplesAt(numReqs) < calibration.minSamples) return DECISIONS[GateReason.EXPLORE_PLAIN];
      if (!below && cost.draftSamplesAt(numReqs) < calibration.minSamples) return DECISIONS[GateReason.EXPLORE_DRAFTS];
    }
    if (threshold <= 0) return DECISIONS[GateReason.GATE_DISABLED];
    return DECISIONS[below ? GateReason.BELOW_THRESHOLD : GateReason.ABOVE_THRESHOLD];
  }

  /** The longest draft for a step of `numReqs` requests when the runner allows `k` (kByBatch). */
  draftLength(numReqs: number, k: number): number {
    const caps = this.config.kByBatch;
    if (caps === undefined || caps.length === 0) return k;
    let i = 0;
    while (i < caps.length - 1 && numReqs > caps[i][0]) i++;
    return Math.min(k, caps[i][1]);
  }

  /** Feeds the tokens accepted from one scored draft (served or shadow). */
  observe(accepted: number): void {
    this.observations++;
    // A plain mean until the window fills, an exponential one after: fast start, then tracking.
    const weight = Math.max(this.config.smoothing, 1 / this.observations);
    this.meanAccepted += weight * (accepted - this.meanAccepted);
  }

  /** Expected accepted tokens per draft (running mean), and how many drafts it is based on. */
  get acceptance(): { meanAccepted: number; observations: number } {
    return { meanAccepted: this.meanAccepted, observations: this.observations };
  }
}

/** Whether [batch size, value] pairs list their batch sizes in increasing order (verifyCost, kByBatch). */
export function batchSizesIncrease(pairs: ReadonlyArray<readonly [number, number]>): boolean {
  return pairs.every((pair, i) => i === 0 || pair[0] > pairs[i - 1][0]);
}

export function verifyCostAt(points: ReadonlyArray<readonly [number, number]>, batch: number): number {
  if (points.length === 0) return 1;
  if (batch <= points[0][0]) return points[0][1];
  for (let i = 1; i < points.length; i++) {
    const [b1, c1] = points[i];
    if (batch <= b1) {
      const [b0, c0] = points[i - 1];
      return c0 + ((c1 - c0) * (batch - b0)) / (b1 - b0);
    }
  }
  return points[points.length - 1][1];
}

/**
 * Default verification cost by batch size (K = 3): a placeholder shaped like decode on an
 * accelerator (nearly free at small batch, memory-bound; about 2x at 128, compute-bound).
 * Measure it on the deployment's hardware.
 */
export const DEFAULT_VERIFY_COST: ReadonlyArray<readonly [number, number]> = Object.freeze([
  [1, 1.05],
  [16, 1.15],
  [32, 1.35],
  [64, 1.7],
  [128, 2.3],
] as const);

/** No gate: always speculate (replays that measure drafting alone). */
export const UNGATED: Readonly<GateConfig> = Object.freeze({
  mode: 'threshold',
  threshold: 0,
  verifyCost: Object.freeze([Object.freeze([1, 1] as const)]),
  hysteresis: 0,
  smoothing: 0.01,
  minObservations: 0,
});
