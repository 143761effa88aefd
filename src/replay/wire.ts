/**
 * Replay backend that drives a running sidecar through one of its transports, with the same calls
 * as the in-process backend: one Step per round for the whole batch. A RESYNC answer (the sidecar
 * lost the request, e.g. after a restart) is handled as the shim does: the full context is resent.
 * Per-request draft latency is reported as the round trip's share per request.
 */
import { randomUUID } from 'node:crypto';
import type { StepClient } from '../client/clients.js';
import { ItemStatus, type StepOutcome } from '../core/step-service.js';
import { batchOf, draftsOf } from './batch.js';
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
    let outcome = await this.send(items, finished, k);
    const resync = items.filter((_, i) => outcome.statuses[i] === ItemStatus.RESYNC);
    if (resync.length > 0) {
      this.resyncs += resync.length;
      // Resend every request of the batch (the resynced ones with their full context) so the
      // drafts stay aligned with one step of the whole batch.
      outcome = await this.send(
        items.map((item, i) => {
          if (outcome.statuses[i] !== ItemStatus.RESYNC) return { id: item.id, start: item.start + item.tokens.length, tokens: [] };
          const context = this.contexts.get(item.id)!;
          return { id: item.id, start: 0, tokens: context.tokens, promptLength: context.promptLength };
        }),
        [],
        k,
      );
    }
    return draftsOf(outcome);
  }

  async close(): Promise<void> {
    await this.client.close();
  }

  private async send(items: StepItem[], finished: string[], k: number): Promise<StepOutcome> {
    const started = process.hrtime.bigint();
    const outcome = await this.client.step(batchOf(this.engineId, ++this.stepId, items, finished, k));
    const us = Number(process.hrtime.bigint() - started) / 1000;
    this.stepLatenciesUs.push(us);
    if (items.length > 0) this.draftLatenciesUs.push(us / items.length);
    return outcome;
  }
}
