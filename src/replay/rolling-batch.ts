/**
 * A batch of running requests stepping through rollout rows, as an engine steps them: the first
 * step of a request carries its prompt, each later one 1-4 new output tokens, and a request whose
 * output is used up finishes (its id goes with the next step) while the next row takes its place.
 * The workload of the sidecar's warm-up and of the wire benchmark.
 */
import type { StepBatch } from '../core/step-service.js';
import { batchOf } from './batch.js';
import type { StepItem } from './simulate.js';
import { prng } from './synthetic.js';
import type { TraceRow } from './traces.js';

interface Slot {
  id: string;
  row: TraceRow;
  held: number;
  /** Output tokens sent so far; -1 before the first step. */
  at: number;
}

export class RollingBatch {
  private nextRow = 0;
  private finished: string[] = [];
  private readonly slots: Slot[];
  private readonly random: () => number;

  constructor(
    private readonly rows: readonly TraceRow[],
    size: number,
    private readonly idPrefix: string,
    seed = 1,
  ) {
    this.random = prng(seed);
    this.slots = Array.from({ length: size }, () => this.start());
  }

  /** The next step of engine `engineId`: every running request's new tokens and the finished ids. */
  next(engineId: string, stepId: number, k: number): StepBatch {
    const finished = this.finished;
    this.finished = [];
    const items: StepItem[] = this.slots.map((slot, i) => {
      const first = slot.at < 0;
      const fresh = first ? slot.row.prompt : slot.row.output.slice(slot.at, slot.at + 1 + Math.floor(this.random() * 4));
      const item: StepItem = { id: slot.id, start: slot.held, tokens: fresh, promptLength: first ? fresh.length : undefined };
      slot.held += fresh.length;
      slot.at = first ? 0 : slot.at + fresh.length;
      if (slot.at >= slot.row.output.length) {
        this.finished.push(slot.id);
        this.slots[i] = this.start();
      }
      return item;
    });
    return batchOf(engineId, BigInt(stepId), items, finished, k);
  }

  private start(): Slot {
    const serial = this.nextRow++;
    return { id: `${this.idPrefix}${serial}`, row: this.rows[serial % this.rows.length], held: 0, at: -1 };
  }
}
