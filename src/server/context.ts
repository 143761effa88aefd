/**
 * What every transport shares: the core service, metrics, logger, config, and readiness. Transports
 * decode, call `step`/`release`, and encode; errors become coded SidecarErrors here.
 */
import type { Logger } from 'pino';
import { SidecarError, sidecarError } from '../core/errors.js';
import type { StepBatch, StepOutcome, StepService } from '../core/step-service.js';
import { type SidecarStats, sidecarStats } from '../protocol/messages.js';
import { BusyPoll } from './busy-poll.js';
import type { SidecarConfig } from './config.js';
import type { SidecarMetrics } from './metrics.js';

const CODED_LOG_INTERVAL_MS = 1000;
/** Idle work waits at most this long for a step that is announced (a PING) or arriving in pieces. */
const IDLE_YIELD_MS = 5;

export class SidecarContext {
  /** False while starting and once draining: steps get NOT_READY, /readyz fails. */
  ready = false;
  readonly busyPoll: BusyPoll;

  constructor(
    readonly config: Readonly<SidecarConfig>,
    readonly service: StepService,
    readonly metrics: SidecarMetrics,
    readonly logger: Logger,
  ) {
    this.busyPoll = new BusyPoll();
  }

  /** A PING: the shim sends one as it starts building a step, so the step finds the loop awake. */
  expectStep(): void {
    if (this.ready) this.busyPoll.extend(this.config.wakePollUs);
  }

  step(batch: StepBatch): StepOutcome {
    if (!this.ready) throw sidecarError('NOT_READY', 'not accepting steps', 'step');
    let outcome: StepOutcome;
    try {
      outcome = this.service.step(batch, Date.now());
    } catch (error) {
      if (error instanceof SidecarError) {
        this.logCoded(error.code, { engine: batch.engineId, field: error.field, message: error.message }, 'step refused');
        this.loggedErrors.add(error);
      }
      throw error;
    }
    // Items the step could not serve (RESYNC, bad tokens), one line per code and interval.
    for (const item of outcome.errors) this.logCoded(item.code, { engine: batch.engineId, request: batch.reqIds[item.index], message: item.message }, 'request not drafted');
    // Ends a PING's window (the step it announced is here) unless configured to poll on.
    this.busyPoll.restart(this.config.busyPollUs);
    // After the transport has written this reply, not before: indexing requests' new tokens and
    // compacting retired groups are off the step's critical path (a step that arrives first
    // indexes the corpus itself).
    this.scheduleIdleWork();
    return outcome;
  }

  /** Runs idle work in slices, one per turn of the event loop, while there is some (call when some may have appeared). */
  scheduleIdleWork(): void {
    if (this.idleWorkScheduled || !this.service.idleWorkPending) return;
    this.idleWorkScheduled = true;
    setImmediate(this.doIdleWork);
  }

  /** Fast-lane connections with part of a frame received (the rest of a step is on its way). */
  framesArriving = 0;
  private idleWorkScheduled = false;
  private yieldingSince: number | null = null;
  private readonly doIdleWork = (): void => {
    this.idleWorkScheduled = false;
    // A step announced or half received goes first: a slice now would delay it (a big frame comes
    // in several reads, and a slice would run between each). Bounded, so a stalled client cannot
    // hold idle work off.
    if (this.busyPoll.active || this.framesArriving > 0) {
      const now = performance.now();
      this.yieldingSince ??= now;
      if (now - this.yieldingSince < IDLE_YIELD_MS) {
        this.idleWorkScheduled = true;
        setImmediate(this.doIdleWork);
        return;
      }
    }
    this.yieldingSince = null;
    const started = process.hrtime.bigint();
    try {
      this.service.doIdleWork();
      this.metrics.observeIdleSlice(started);
    } catch (error) {
      // Outside any call: nobody to answer, so logged; drafting goes on without those tokens.
      this.logger.error({ err: error }, 'idle work (corpus indexing, group compaction, backlog) failed');
      return;
    }
    // One bounded slice per turn of the event loop: calls and probes are served in between.
    this.scheduleIdleWork();
  };

  stats(): SidecarStats {
    return sidecarStats(this.service.stats(), this.service.counters, this.service.gates());
  }

  release(engineId: string, reqIds: readonly string[]): number {
    return this.service.release(engineId, reqIds);
  }

  /** Any failure of a call as a coded error (counted); an uncoded one is a bug: logged, INTERNAL. */
  asCallError(error: unknown): SidecarError {
    const coded = error instanceof SidecarError ? error : sidecarError('INTERNAL', (error as Error)?.message ?? String(error));
    if (!(error instanceof SidecarError)) this.logger.error({ err: error }, 'internal error while serving a call');
    this.countCallError(coded);
    return coded;
  }

  countCallError(error: SidecarError): void {
    this.service.counters.countError('call', error.code);
    if (!this.loggedErrors.has(error)) this.logCoded(error.code, { field: error.field, message: error.message }, 'call refused');
  }

  /** Coded errors at debug level: at most one line per code per second, saying how many it stands for. */
  private logCoded(code: string, fields: Record<string, unknown>, message: string): void {
    if (!this.logger.isLevelEnabled('debug')) return;
    const now = Date.now();
    const seen = this.codedLog.get(code);
    if (seen !== undefined && now - seen.at < CODED_LOG_INTERVAL_MS) {
      seen.suppressed++;
      return;
    }
    this.codedLog.set(code, { at: now, suppressed: 0 });
    this.logger.debug({ code, ...fields, ...(seen?.suppressed ? { alsoSince: seen.suppressed } : {}) }, message);
  }

  private readonly codedLog = new Map<string, { at: number; suppressed: number }>();
  /** Errors already logged with their engine (a step's), not logged again as the transport counts them. */
  private readonly loggedErrors = new WeakSet<SidecarError>();
}
