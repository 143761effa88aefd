/**
 * Replay backend that drives a running sidecar through one of its transports, with the same calls
 * as the in-process backend: one Step per round for the whole batch. A RESYNC answer (the sidecar
 * lost the request, e.g. after a restart) is handled as the shim does: the full context is resent.
 */
import { randomUUID } from 'node:crypto';
import type { StepClient } from '../client/clients.js';
import { ItemStatus, NO_PROMPT, type StepBatch, type StepOutcome } from '../core/step-service.js';
import type { StepBackend, StepItem } from './simulate.js';

export class WireBackend implements StepBackend {
  readonly draftLatenciesUs: number[] = [];
  /** Round-trip time of each Step call, microseconds. */
  readonly stepLatenciesUs: number[] = [];
  resyncs = 0;
  private stepId = 0n;
  /** Full token history per live request, for RESYNC. */
  private readonly contexts = new Map<string, { tokens: number[]; promptLength: number }>();

  constructor(
    private readonly client: StepClient,
    readonly engineId = `replay-${randomUUID()}`,
  ) {}

  async step(items: StepItem[], finished: string[], k: number): Promise<Int32Array[]> {
    for (const id of finished) this.contexts.delete(id);
    for (const item of items) {
      if (item.promptLength !== undefined) this.contexts.set(item.id, { tokens: item.tokens.slice(), promptLength: item.promptLength });
      else this.contexts.get(item.id)?.tokens.push(...item.tokens);
    }
    let outcome = await this.send(
      items.map((item) => ({ id: item.id, start: item.start, tokens: item.tokens, promptLength: item.promptLength ?? NO_PROMPT })),
      finished,
      k,
    );
    const resync = items.filter((_, i) => outcome.statuses[i] === ItemStatus.RESYNC);
    if (resync.length > 0) {
      this.resyncs += resync.length;
      // Resend every request of the batch (the resynced ones with their full context) so the
      // drafts stay aligned with one step of the whole batch.
      outcome = await this.send(
        items.map((item, i) => {
          if (outcome.statuses[i] !== ItemStatus.RESYNC) return { id: item.id, start: item.start + item.tokens.length, tokens: [], promptLength: NO_PROMPT };
          const context = this.contexts.get(item.id)!;
          return { id: item.id, start: 0, tokens: context.tokens, promptLength: context.promptLength };
        }),
        [],
        k,
      );
    }
    const drafts: Int32Array[] = [];
    let offset = 0;
    for (let i = 0; i < items.length; i++) {
      const length = outcome.draftLengths[i];
      drafts.push(outcome.statuses[i] === ItemStatus.OK ? outcome.drafts.slice(offset, offset + length) : new Int32Array(0));
      offset += length;
    }
    return drafts;
  }

  async close(): Promise<void> {
    await this.client.close();
  }

  private async send(items: Array<{ id: string; start: number; tokens: number[]; promptLength: number }>, finished: string[], k: number): Promise<StepOutcome> {
    const counts = items.map((item) => item.tokens.length);
    const batch: StepBatch = {
      engineId: this.engineId,
      stepId: ++this.stepId,
      numReqs: items.length,
      prefill: false,
      k,
      reqIds: items.map((item) => item.id),
      starts: items.map((item) => item.start),
      counts,
      promptLengths: items.map((item) => item.promptLength),
      tokens: items.flatMap((item) => item.tokens),
      finished,
    };
    const started = process.hrtime.bigint();
    const outcome = await this.client.step(batch);
    const us = Number(process.hrtime.bigint() - started) / 1000;
    this.stepLatenciesUs.push(us);
    if (items.length > 0) this.draftLatenciesUs.push(us / items.length);
    return outcome;
  }
}
