/** Replay backend that calls the drafting core directly (the reference the wire backends match). */
import { DraftEngine, type EngineOptions } from '../core/engine.js';
import type { StepBackend, StepItem } from './simulate.js';

export class InProcessBackend implements StepBackend {
  readonly engine: DraftEngine;
  readonly draftLatenciesUs: number[] = [];
  private scratch = new Int32Array(64);

  constructor(options: Partial<EngineOptions>) {
    this.engine = new DraftEngine(options);
  }

  step(items: StepItem[], finished: string[], k: number): Int32Array[] {
    const engine = this.engine;
    for (const id of finished) engine.release(id);
    for (const item of items) {
      if (item.promptLength !== undefined) engine.open(item.id, item.tokens, item.promptLength);
      else engine.append(item.id, item.tokens);
    }
    // k = 0 only ingests (history preload): no drafts, no latency samples.
    if (k === 0) return items.map(() => new Int32Array(0));
    if (this.scratch.length < k) this.scratch = new Int32Array(k);
    const drafts: Int32Array[] = [];
    for (const item of items) {
      const started = process.hrtime.bigint();
      const length = engine.draft(item.id, k, this.scratch, 0);
      this.draftLatenciesUs.push(Number(process.hrtime.bigint() - started) / 1000);
      drafts.push(this.scratch.slice(0, length));
    }
    return drafts;
  }
}
