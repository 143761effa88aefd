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
 */

export const GATE_MODES = ['threshold', 'adaptive'] as const;
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
      speculate: reason === GateReason.BELOW_THRESHOLD || reason === GateReason.PREFILL || reason === GateReason.GATE_DISABLED || reason === GateReason.ADAPTIVE_GAIN,
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

  constructor(readonly config: Readonly<GateConfig>) {}

  /**
   * Decode steps with more requests than this never speculate, whatever the gate observes; 0 when
   * there is no such bound (gate disabled, or adaptive). Replies carry it, so a client knows ahead
   * which steps will get no drafts and need not wait for their replies.
   */
  get offAbove(): number {
    return this.config.mode === 'threshold' && this.config.threshold > 0 ? this.config.threshold : 0;
  }

  decide(numReqs: number, prefill: boolean, k: number): GateDecision {
    if (k === 0) return DECISIONS[GateReason.K_ZERO];
    if (prefill) return DECISIONS[GateReason.PREFILL];
    const { mode, threshold } = this.config;
    if (mode === 'adaptive' && this.observations >= this.config.minObservations) {
      const gain = (1 + this.meanAccepted) / verifyCostAt(this.config.verifyCost, numReqs);
      const bound = this.on ? 1 - this.config.hysteresis : 1 + this.config.hysteresis;
      this.on = gain > bound;
      return DECISIONS[this.on ? GateReason.ADAPTIVE_GAIN : GateReason.ADAPTIVE_NO_GAIN];
    }
    if (threshold <= 0) return DECISIONS[GateReason.GATE_DISABLED];
    return DECISIONS[numReqs > threshold ? GateReason.ABOVE_THRESHOLD : GateReason.BELOW_THRESHOLD];
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
