/**
 * Replay backend that calls the core's Step service directly, ungated unless given a gate: the
 * reference the wire backends must match (the server runs the same service behind its transports).
 */
import type { EngineOptions } from '../core/engine.js';
import { type GateConfig, type StepTiming, UNGATED } from '../core/gate.js';
import { StepService } from '../core/step-service.js';
import { batchOf, draftsOf } from './batch.js';
import type { StepBackend, StepItem } from './simulate.js';

export class InProcessBackend implements StepBackend {
  readonly service: StepService;
  /** Per-request share of each step's time (step time / requests), microseconds. */
  readonly draftLatenciesUs: number[] = [];
  /** Whether the last step's gate let drafts through. */
  lastSpeculated = false;
  /** The runner's timing of the step before the next call, sent with it (the rollout simulator sets it). */
  timing: StepTiming | undefined;
  private stepId = 0n;

  /**
   * kByBatch: the longest draft by batch size (GateConfig.kByBatch); none by default.
   * gate: the gate the Step service decides with (default: none, drafting at every step).
   */
  constructor(options: Partial<EngineOptions>, kByBatch: ReadonlyArray<readonly [number, number]> = [], gate: Readonly<GateConfig> = { ...UNGATED, kByBatch }) {
    this.service = new StepService({ maxK: 64, requestTtlMs: Number.POSITIVE_INFINITY, maxTokens: Number.MAX_SAFE_INTEGER, stepCacheSize: 1 }, gate, options);
  }

  step(items: StepItem[], finished: string[], k: number): Int32Array[] {
    const batch = batchOf('replay', ++this.stepId, items, finished, k);
    if (this.timing !== undefined) batch.timing = this.timing;
    this.timing = undefined;
    const started = process.hrtime.bigint();
    const outcome = this.service.step(batch, 0);
    this.lastSpeculated = outcome.speculate;
    // k = 0 only ingests (history preload): no latency samples.
    if (k > 0 && items.length > 0) this.draftLatenciesUs.push(Number(process.hrtime.bigint() - started) / 1000 / items.length);
    // What the server does after each reply (corpus indexing, compacting retired groups, slice by
    // slice while no step comes), so memory is what a sidecar holds; drafts do not depend on it.
    while (this.service.idleWorkPending) this.service.doIdleWork();
    return draftsOf(outcome);
  }
}
