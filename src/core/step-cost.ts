/**
 * What one decode step costs an engine, learnt from the step times its runner reports: for each
 * batch-size bucket (powers of two), a line `time = plain + perSlot * slots`, where `slots` is the
 * number of draft tokens the step verified. Pure and deterministic: the same sequence of samples
 * gives the same model, so tensor-parallel ranks and transports see the same decisions.
 *
 * The fit is an exponentially weighted least squares (old samples fade, so the model follows
 * drift: longer contexts late in a rollout, another model after a weight sync) with Huber weights
 * (a step far off the line counts less: GC pauses, preemption, a prefill the runner did not flag),
 * and samples far beyond the bucket's plain time are dropped outright (a pause between rollout
 * steps, a weight update).
 */

/** Bucket b holds batch sizes in (2^(b-1), 2^b]; bucket 0 holds 1. Up to 65,536 requests. */
export const COST_BUCKETS = 17;

export function bucketOf(batch: number): number {
  if (batch <= 1) return 0;
  return Math.min(COST_BUCKETS - 1, 32 - Math.clz32(batch - 1));
}

export interface StepCostOptions {
  /** Weight kept by the older samples at each new one (1: never forget). */
  forgetting: number;
  /** Residuals beyond this many robust scales are down-weighted (Huber). */
  huber: number;
  /** Samples above this multiple of the bucket's plain time are ignored once the bucket is known. */
  outlierFactor: number;
}

export const DEFAULT_STEP_COST_OPTIONS: Readonly<StepCostOptions> = Object.freeze({ forgetting: 0.995, huber: 3, outlierFactor: 8 });

/** One bucket's weighted sums for the fit, and its sample counts by kind. */
class Bucket {
  w = 0;
  x = 0;
  y = 0;
  xx = 0;
  xy = 0;
  batch = 0; // weighted sum of batch sizes (for interpolation between buckets)
  /** Mean absolute residual (the robust scale), in microseconds. */
  scale = 0;
  plainSamples = 0;
  draftSamples = 0;
  plainUs = 0;
  perSlotUs = 0;
}

export interface CostPoint {
  /** Mean batch size of the bucket's samples. */
  batch: number;
  plainUs: number;
  perSlotUs: number;
  plainSamples: number;
  draftSamples: number;
}

export class StepCostModel {
  private readonly buckets = Array.from({ length: COST_BUCKETS }, () => new Bucket());

  constructor(readonly options: Readonly<StepCostOptions> = DEFAULT_STEP_COST_OPTIONS) {}

  /** One step: `batch` requests, `slots` draft tokens verified, `us` from the runner's clock. */
  observe(batch: number, slots: number, us: number): void {
    if (!(batch >= 1 && us > 0 && slots >= 0) || !Number.isFinite(us)) return;
    const b = this.buckets[bucketOf(batch)];
    const known = b.plainSamples > 0 && b.draftSamples > 0;
    if (known && us > this.options.outlierFactor * (b.plainUs + b.perSlotUs * slots)) return;
    let weight = 1;
    if (known && b.scale > 0) {
      const residual = Math.abs(us - (b.plainUs + b.perSlotUs * slots));
      const limit = this.options.huber * b.scale;
      if (residual > limit) weight = limit / residual;
      b.scale += 0.05 * (Math.min(residual, 2 * limit) - b.scale);
    }
    const keep = this.options.forgetting;
    b.w = keep * b.w + weight;
    b.x = keep * b.x + weight * slots;
    b.y = keep * b.y + weight * us;
    b.xx = keep * b.xx + weight * slots * slots;
    b.xy = keep * b.xy + weight * slots * us;
    b.batch = keep * b.batch + weight * batch;
    if (slots > 0) b.draftSamples++;
    else b.plainSamples++;
    this.fit(b);
    if (!known && b.scale === 0 && b.plainSamples > 0 && b.draftSamples > 0) b.scale = 0.05 * b.plainUs;
  }

  /** Whether the bucket of `batch` has seen both plain and drafting steps, `min` of each. */
  knows(batch: number, min: number): boolean {
    const b = this.buckets[bucketOf(batch)];
    return b.plainSamples >= min && b.draftSamples >= min;
  }

  plainSamplesAt(batch: number): number {
    return this.buckets[bucketOf(batch)].plainSamples;
  }

  draftSamplesAt(batch: number): number {
    return this.buckets[bucketOf(batch)].draftSamples;
  }

  /** The model's step time at `batch` requests and `slots` verified draft tokens, in us. */
  predictUs(batch: number, slots: number): number {
    const b = this.buckets[bucketOf(batch)];
    return b.plainUs + b.perSlotUs * slots;
  }

  /** The learnt curve: one point per bucket that has samples. */
  curve(): CostPoint[] {
    return this.buckets
      .filter((b) => b.w > 0)
      .map((b) => ({ batch: b.batch / b.w, plainUs: b.plainUs, perSlotUs: b.perSlotUs, plainSamples: b.plainSamples, draftSamples: b.draftSamples }));
  }

  private fit(b: Bucket): void {
    const meanX = b.x / b.w;
    const meanY = b.y / b.w;
    const varX = b.xx / b.w - meanX * meanX;
    // Without spread in the slots (one kind of step so far) the slope is unknown: keep the mean.
    if (varX <= 1e-9 * Math.max(1, meanX * meanX)) {
      if (b.draftSamples === 0) b.plainUs = meanY;
      return;
    }
    const slope = (b.xy / b.w - meanX * meanY) / varX;
    b.perSlotUs = Math.max(0, slope);
    b.plainUs = Math.max(0, meanY - b.perSlotUs * meanX);
  }
}
