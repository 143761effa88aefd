/**
 * A whole rollout step, scheduled as rollout-step.ts schedules every replay, to compare gate
 * policies: each engine step goes through the real Step service (ingest, score, gate, draft). Time comes from a
 * step-cost model: a plain decode step of B requests costs baseMs + perSeqMs * B, and verifying
 * drafts multiplies it by up to verifyCost(B) (in proportion to the draft slots actually used).
 * The model's numbers are assumptions to be replaced by measurements on the target hardware; the
 * comparison shows where each gate policy wins under them.
 */
import type { EngineOptions } from '../core/engine.js';
import { type GateConfig, UNGATED, verifyCostAt } from '../core/gate.js';
import { StepService } from '../core/step-service.js';
import { batchOf, draftsOf } from './batch.js';
import { DEFAULT_TAIL_BATCH, replayRolloutSteps } from './rollout-step.js';
import type { StepBackend, StepItem } from './simulate.js';
import type { TraceRow } from './traces.js';

export interface CostModel {
  baseMs: number;
  perSeqMs: number;
  /** Step cost with K drafts per request relative to without, by batch size. */
  verifyCost: ReadonlyArray<readonly [number, number]>;
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

/** The Step service under a gate policy: drafts only on the steps the gate lets speculate. */
class GatedBackend implements StepBackend {
  readonly draftLatenciesUs: number[] = [];
  lastSpeculated = false;
  private readonly service: StepService;
  private stepId = 0n;
  constructor(
    private readonly policy: GatePolicy,
    engine: Partial<EngineOptions> | undefined,
    maxK: number,
  ) {
    this.service = new StepService(
      { maxK, requestTtlMs: Number.POSITIVE_INFINITY, maxTokens: Number.MAX_SAFE_INTEGER, stepCacheSize: 1 },
      policy.speculate ? policy.gate : UNGATED,
      engine,
    );
  }
  step(items: StepItem[], finished: string[], k: number): Int32Array[] {
    const outcome = this.service.step(batchOf('rollout', ++this.stepId, items, finished, this.policy.speculate ? k : 0), 0);
    this.lastSpeculated = outcome.speculate && this.policy.speculate;
    return this.lastSpeculated ? draftsOf(outcome) : items.map(() => NO_DRAFT);
  }
}

const NO_DRAFT = new Int32Array(0);

export async function simulateRollout(rows: TraceRow[], policy: GatePolicy, options: RolloutOptions): Promise<RolloutResult> {
  const { k, cost } = options;
  const tailBatch = options.tailBatch ?? DEFAULT_TAIL_BATCH;
  const backend = new GatedBackend(policy, options.engine, Math.max(k, 1));
  const result: RolloutResult = { policy: policy.name, engineSteps: 0, speculativeSteps: 0, emitted: 0, proposed: 0, accepted: 0, timeMs: 0, tailTimeShare: 0, alSpeculative: 0 };
  let tailMs = 0;
  let emittedOnSpeculative = 0;
  let requestStepsOnSpeculative = 0;
  await replayRolloutSteps([rows], [backend], {
    k,
    maxNumSeqs: options.maxNumSeqs,
    turns: options.turns ?? false,
    tailBatch,
    onEngineStep: ({ batch, proposed, accepted, emitted }) => {
      const plain = cost.baseMs + cost.perSeqMs * batch;
      const used = k > 0 ? proposed / (batch * k) : 0;
      const speculated = backend.lastSpeculated;
      const stepMs = speculated ? plain * (1 + (verifyCostAt(cost.verifyCost, batch) - 1) * used) : plain;
      result.engineSteps++;
      result.timeMs += stepMs;
      result.emitted += emitted;
      result.proposed += proposed;
      result.accepted += accepted;
      if (batch <= tailBatch) tailMs += stepMs;
      if (speculated) {
        result.speculativeSteps++;
        emittedOnSpeculative += emitted;
        requestStepsOnSpeculative += batch;
      }
    },
  });
  result.tailTimeShare = result.timeMs > 0 ? tailMs / result.timeMs : 0;
  result.alSpeculative = requestStepsOnSpeculative > 0 ? emittedOnSpeculative / requestStepsOnSpeculative : 0;
  return result;
}
