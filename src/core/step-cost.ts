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

/**
 * Two levels of batch-size buckets. Fine: sizes 1 to 16 each have their own; above, four per
 * doubling (sizes within 19 % of each other share one), up to 65,536 requests: a step's cost
 * changes with the batch size within a bucket too. Coarse: one per doubling, which fills about
 * ten times faster; a size whose fine bucket has too few samples is estimated from its coarse one
 * (the tail of a rollout passes each small size in a few steps).
 */
const EXACT_SIZES = 16;
const PER_DOUBLING = 4;
export const COST_BUCKETS = EXACT_SIZES + PER_DOUBLING * 12;

export function bucketOf(batch: number): number {
  if (batch <= EXACT_SIZES) return Math.max(0, batch - 1);
  return Math.min(COST_BUCKETS - 1, EXACT_SIZES + Math.floor(PER_DOUBLING * Math.log2((batch - 1) / EXACT_SIZES)));
}

/** The coarse bucket of a batch size: (2^(c-1), 2^c], 1 in bucket 0. */
export const COARSE_BUCKETS = 17;
export function coarseBucketOf(batch: number): number {
  if (batch <= 1) return 0;
  return Math.min(COARSE_BUCKETS - 1, 32 - Math.clz32(batch - 1));
}

/** The largest batch size of bucket `b`. */
export function bucketUpTo(b: number): number {
  if (b < EXACT_SIZES) return b + 1;
  return Math.ceil(EXACT_SIZES * 2 ** ((b - EXACT_SIZES + 1) / PER_DOUBLING) - 1e-9);
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
  /** The bucket's largest batch size. */
  upTo: number;
  /** Mean batch size of the bucket's samples. */
  batch: number;
  plainUs: number;
  perSlotUs: number;
  plainSamples: number;
  draftSamples: number;
}

export class StepCostModel {
  private readonly buckets = Array.from({ length: COST_BUCKETS }, () => new Bucket());
  private readonly coarse = Array.from({ length: COARSE_BUCKETS }, () => new Bucket());

  constructor(readonly options: Readonly<StepCostOptions> = DEFAULT_STEP_COST_OPTIONS) {}

  /** One step: `batch` requests, `slots` draft tokens verified, `us` from the runner's clock. */
  observe(batch: number, slots: number, us: number): void {
    if (!(batch >= 1 && us > 0 && slots >= 0) || !Number.isFinite(us)) return;
    this.add(this.buckets[bucketOf(batch)], batch, slots, us);
    this.add(this.coarse[coarseBucketOf(batch)], batch, slots, us);
  }

  private add(b: Bucket, batch: number, slots: number, us: number): void {
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

  /** Whether either level has seen both plain and drafting steps of `batch`'s size, `min` of each. */
  knows(batch: number, min: number): boolean {
    return this.bucketFor(batch, min) !== null;
  }

  /** Timed plain steps around this size (its coarse bucket). */
  plainSamplesAt(batch: number): number {
    return this.coarse[coarseBucketOf(batch)].plainSamples;
  }

  /** Timed drafting steps around this size (its coarse bucket). */
  draftSamplesAt(batch: number): number {
    return this.coarse[coarseBucketOf(batch)].draftSamples;
  }

  /**
   * The model's step time at `batch` requests and `slots` verified draft tokens, in us: from the
   * fine bucket once it has `min` samples of each kind, else the coarse one.
   */
  predictUs(batch: number, slots: number, min = 1): number {
    const b = this.bucketFor(batch, min) ?? this.coarse[coarseBucketOf(batch)];
    return b.plainUs + b.perSlotUs * slots;
  }

  private bucketFor(batch: number, min: number): Bucket | null {
    const fine = this.buckets[bucketOf(batch)];
    if (fine.plainSamples >= min && fine.draftSamples >= min) return fine;
    const coarse = this.coarse[coarseBucketOf(batch)];
    return coarse.plainSamples >= min && coarse.draftSamples >= min ? coarse : null;
  }

  /** The learnt curve: one point per bucket that has samples. */
  curve(): CostPoint[] {
    const points: CostPoint[] = [];
    this.buckets.forEach((b, i) => {
      if (b.w > 0) points.push({ upTo: bucketUpTo(i), batch: b.batch / b.w, plainUs: b.plainUs, perSlotUs: b.perSlotUs, plainSamples: b.plainSamples, draftSamples: b.draftSamples });
    });
    return points;
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
