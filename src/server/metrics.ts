/**
 * Prometheus metrics. The hot path only adds to the core's plain counters (StepCounters); this
 * module copies them into prom-client metrics when Prometheus scrapes. Names line up with vLLM's
 * spec-decode counters (vllm:spec_decode_num_drafts, ..._num_draft_tokens,
 * ..._num_accepted_tokens, ..._num_accepted_tokens_per_pos), prefixed sam_sidecar_.
 */
import client from 'prom-client';
import { decision, GATE_REASON_NAMES, type GateReason } from '../core/gate.js';
import type { StepService } from '../core/step-service.js';

type EngineCounts = ReturnType<StepService['engineCounters']>[number];
import { packageVersion } from '../package-root.js';
import type { Transport } from '../protocol/transports.js';
import type { MemoryWatch } from './memory-watch.js';
import type { PrefaultedArrays } from './prefaulted-arrays.js';
import type { RedisSharing } from '../sharing/redis-sharing.js';


const STEP_BUCKETS_SECONDS = [5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 50e-3, 0.25];

/** A counter whose value is read at scrape time. */
function readCounter(registry: client.Registry, name: string, help: string, read: () => number): void {
  new client.Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

/** A gauge whose value is read at scrape time. */
function readGauge(registry: client.Registry, name: string, help: string, read: () => number): void {
  new client.Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      this.set(read());
    },
  });
}

export class SidecarMetrics {
  readonly registry = new client.Registry();
  private readonly stepDuration: Record<Transport, client.Histogram.Internal<string>>;
  private readonly idleSliceDuration: client.Histogram;

  constructor(service: StepService, sharing: RedisSharing | null = null) {
    const registry = this.registry;
    const counters = service.counters;
    const counter = (name: string, help: string, read: () => number): void => readCounter(registry, name, help, read);
    const gauge = (name: string, help: string, read: () => number): void => readGauge(registry, name, help, read);
    counter('sam_sidecar_evicted_engines_total', 'Engines evicted to admit a new one beyond limits.maxEngines (their requests resync if they return).', () => counters.evictedEngines);
    counter('sam_sidecar_steps_total', 'Step calls computed (tensor-parallel duplicates excluded).', () => counters.steps);
    counter('sam_sidecar_duplicate_steps_total', 'Step calls answered from the per-engine cache (tensor-parallel ranks).', () => counters.duplicateSteps);
    counter('sam_sidecar_step_requests_total', 'Requests carried by computed steps.', () => counters.items);
    counter('sam_sidecar_tokens_ingested_total', 'Tokens ingested into the automata.', () => counters.tokensIngested);
    counter('sam_sidecar_spec_decode_num_drafts_total', 'Drafts served (non-empty), as vllm:spec_decode_num_drafts.', () => counters.drafts);
    counter('sam_sidecar_spec_decode_num_draft_tokens_total', 'Draft tokens served, as vllm:spec_decode_num_draft_tokens.', () => counters.draftTokens);
    counter(
      'sam_sidecar_spec_decode_num_accepted_tokens_total',
      'Served draft tokens that matched the tokens the engine emitted next, as vllm:spec_decode_num_accepted_tokens.',
      () => counters.acceptedTokens,
    );
    counter('sam_sidecar_shadow_drafts_total', 'Drafts computed while the gate was off (adaptive mode), never served.', () => counters.shadowDrafts);
    counter('sam_sidecar_shadow_accepted_tokens_total', 'Tokens shadow drafts would have had accepted.', () => counters.shadowAcceptedTokens);
    counter('sam_sidecar_evicted_idle_requests_total', 'Requests evicted after the idle timeout.', () => counters.evictedIdle);
    counter('sam_sidecar_evicted_memory_requests_total', 'Live requests evicted to keep within the token budget.', () => counters.evictedForMemory);
    new client.Counter({
      name: 'sam_sidecar_spec_decode_num_accepted_tokens_per_pos_total',
      help: 'Accepted draft tokens by position in the draft, as vllm:spec_decode_num_accepted_tokens_per_pos.',
      labelNames: ['position'],
      registers: [registry],
      collect() {
        this.reset();
        counters.acceptedPerPos.forEach((value, position) => {
          if (value > 0) this.labels(String(position)).inc(value);
        });
      },
    });
    new client.Counter({
      name: 'sam_sidecar_gate_decisions_total',
      help: 'Gate decisions by outcome and reason.',
      labelNames: ['speculate', 'reason'],
      registers: [registry],
      collect() {
        this.reset();
        counters.decisions.forEach((value, reason) => {
          if (value > 0) this.labels(String(decision(reason as GateReason).speculate), GATE_REASON_NAMES[reason]).inc(value);
        });
      },
    });
    // Per engine, for the 16 most recently seen (one sidecar serves every engine of its pod; the
    // bound keeps the series few when engine ids churn).
    for (const [name, help, read] of [
      ['sam_sidecar_engine_steps_total', 'Step calls computed, per engine.', (e: EngineCounts) => e.steps],
      ['sam_sidecar_engine_draft_tokens_total', 'Draft tokens served, per engine.', (e: EngineCounts) => e.draftTokens],
      ['sam_sidecar_engine_accepted_tokens_total', 'Draft tokens accepted, per engine.', (e: EngineCounts) => e.acceptedTokens],
    ] as const) {
      new client.Counter({
        name,
        help,
        labelNames: ['engine'],
        registers: [registry],
        collect() {
          this.reset();
          for (const engine of service.engineCounters(16)) if (read(engine) > 0) this.labels(engine.engine).inc(read(engine));
        },
      });
    }
    // Calibrated gates: what each engine learnt (the 16 most recently seen engines: bounded series).
    new client.Gauge({
      name: 'sam_sidecar_gate_break_even_batch',
      help: 'Smallest batch size at which the calibrated gate finds that drafting stops paying (0: none it knows).',
      labelNames: ['engine'],
      registers: [registry],
      collect() {
        this.reset();
        for (const gate of service.gates(16)) if (gate.mode === 'calibrated') this.labels(gate.engine).set(gate.breakEvenBatch);
      },
    });
    new client.Gauge({
      name: 'sam_sidecar_gate_step_cost_us',
      help: 'Learnt step cost of batches of up to `batch` requests: a plain decode step (kind="plain") and each verified draft token (kind="per_slot"), microseconds.',
      labelNames: ['engine', 'batch', 'kind'],
      registers: [registry],
      collect() {
        this.reset();
        for (const gate of service.gates(16)) {
          for (const point of gate.curve) {
            const batch = String(point.upTo);
            this.labels(gate.engine, batch, 'plain').set(point.plainUs);
            this.labels(gate.engine, batch, 'per_slot').set(point.perSlotUs);
          }
        }
      },
    });
    new client.Counter({
      name: 'sam_sidecar_errors_total',
      help: 'Coded errors, per request (scope="request") or per call (scope="call").',
      labelNames: ['scope', 'code'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [code, value] of counters.itemErrors) this.labels('request', code).inc(value);
        for (const [code, value] of counters.callErrors) this.labels('call', code).inc(value);
      },
    });
    let stats = service.stats();
    let statsAt = 0;
    // One stats() walk per scrape, shared by the gauges below.
    const fresh = () => {
      const now = Date.now();
      if (now - statsAt > 100) {
        stats = service.stats();
        statsAt = now;
      }
      return stats;
    };
    gauge('sam_sidecar_requests', 'Live requests held.', () => fresh().requests);
    gauge('sam_sidecar_groups', 'Prompt groups held (live and history).', () => fresh().groups);
    gauge('sam_sidecar_history_groups', 'Finished prompt groups kept as history.', () => fresh().historyGroups);
    gauge('sam_sidecar_history_tokens', 'Tokens held in history groups.', () => fresh().historyTokens);
    gauge('sam_sidecar_backlog_tokens', 'Tokens received and waiting to be indexed (long contexts; limits.ingestTokensPerStep per step).', () => fresh().backlogTokens);
    gauge('sam_sidecar_corpus_tokens', 'Tokens in the corpus of every prompt\'s requests, running and finished.', () => fresh().corpusTokens);
    gauge('sam_sidecar_tokens', 'Tokens held in all automata.', () => fresh().tokensIndexed);
    gauge('sam_sidecar_memory_bytes', 'Bytes of automaton storage.', () => fresh().bytes);
    gauge('sam_sidecar_memory_accounted_bytes', 'Bytes the sidecar accounts for against memory.maxBytes: storage plus the objects of every request, group and engine, and backlogs.', () => fresh().accountedBytes);
    gauge('sam_sidecar_memory_max_bytes', 'memory.maxBytes: past it history, then the least recently seen requests, are evicted (0: no bound).', () => fresh().maxBytes);
    gauge('sam_sidecar_engines', 'Engines (vLLM instances) seen within the idle timeout.', () => fresh().engines);
    gauge('sam_sidecar_max_tokens', 'Configured token budget.', () => fresh().maxTokens);
    const histogram = new client.Histogram({
      name: 'sam_sidecar_step_duration_seconds',
      help: 'Server-side time of a Step call, decode to encode, in microsecond-scale buckets.',
      labelNames: ['transport'],
      buckets: STEP_BUCKETS_SECONDS,
      registers: [registry],
    });
    this.stepDuration = { uds: histogram.labels('uds'), grpc: histogram.labels('grpc'), http: histogram.labels('http') };
    this.idleSliceDuration = new client.Histogram({
      name: 'sam_sidecar_idle_slice_duration_seconds',
      help: 'Time of one slice of idle work (indexing backlogs and the corpus, compacting retired groups): the longest a call arriving during it waits.',
      buckets: STEP_BUCKETS_SECONDS,
      registers: [registry],
    });
    // Standard names (process_cpu_seconds_total, nodejs_heap_size_used_bytes, ...), as Node
    // dashboards expect them; the scrape's job and pod labels tell this process from others.
    client.collectDefaultMetrics({ register: registry });
    const buildInfo = new client.Gauge({
      name: 'sam_sidecar_build_info',
      help: 'Always 1; the labels name the running build.',
      labelNames: ['version', 'node'],
      registers: [registry],
    });
    buildInfo.labels(packageVersion(), process.version).set(1);
    if (sharing !== null) {
      const shared = sharing.counters;
      gauge('sam_sidecar_sharing_connected', '1 while the Redis of shared text answers, else 0 (drafting goes on from local state).', () => (shared.connected ? 1 : 0));
      counter('sam_sidecar_sharing_published_tokens_total', 'Tokens of this engine\'s requests written to Redis.', () => shared.publishedTokens);
      counter('sam_sidecar_sharing_published_bytes_total', 'Bytes written to Redis.', () => shared.publishedBytes);
      counter('sam_sidecar_sharing_publish_dropped_total', 'Deltas not written: beyond sharing.redis.maxPublishBytes (per flush, or held while Redis does not answer), or while Redis is slow to answer.', () => shared.publishDropped);
      counter('sam_sidecar_sharing_received_tokens_total', 'Tokens of other engines\' requests read from Redis.', () => shared.receivedTokens);
      counter('sam_sidecar_sharing_received_bytes_total', 'Bytes read from Redis.', () => shared.receivedBytes);
      counter('sam_sidecar_sharing_inbox_dropped_total', 'Deltas read but dropped: the inbox held sharing.redis.maxInboxTokens.', () => shared.inboxDropped);
      counter('sam_sidecar_sharing_history_hits_total', 'Prompts opened here whose history Redis held.', () => shared.historyHits);
      counter('sam_sidecar_sharing_history_misses_total', 'Prompts opened here with no history in Redis.', () => shared.historyMisses);
      counter('sam_sidecar_sharing_history_evicted_total', 'Prompts\' history lists this sidecar removed from Redis to keep the job within sharing.redis.historyMaxTokens.', () => shared.historyEvicted);
      counter('sam_sidecar_sharing_errors_total', 'Redis commands that failed.', () => shared.errors);
      gauge('sam_sidecar_sharing_lag_seconds', 'Age of the newest entry read from another engine, when read.', () => shared.lagMs / 1000);
      counter('sam_sidecar_sharing_remote_rejected_total', 'Deltas from other engines refused: a token outside this sidecar\'s vocabulary (the job\'s sidecars differ in drafting.vocabSize, or the entry was damaged).', () => service.counters.remoteRejected);
      counter('sam_sidecar_sharing_remote_ignored_total', 'Deltas for groups this engine no longer holds, or beyond a group\'s bound of remote sequences.', () => service.draftEngine.remoteDeltasIgnored);
    }
  }

  /** The memory watch's collections (see memory-watch.ts). */
  watchMemory(watch: MemoryWatch): void {
    readCounter(this.registry, 'sam_sidecar_memory_collections_total', 'Garbage collections the sidecar started because its RSS was above the runtime\'s own plus memory.maxBytes plus the frames being received.', () => watch.collections);
  }

  /** The worker that makes compaction's and grown arrays resident (see prefaulted-arrays.ts). */
  watchPrefaultedArrays(arrays: PrefaultedArrays): void {
    readCounter(this.registry, 'sam_sidecar_compaction_prepared_arrays_total', 'Arrays a worker thread allocated and touched that compacting retired groups copied into.', () => arrays.handedOver);
    readCounter(this.registry, 'sam_sidecar_prefaulted_ahead_bytes_total', 'Bytes of groups\' and the corpus\'s large arrays the worker thread made resident ahead of the automaton writing them.', () => arrays.aheadBytes);
    readGauge(this.registry, 'sam_sidecar_prefault_worker_up', '1 while a worker thread makes compaction\'s and grown arrays resident; 0 after it failed (the event loop then faults them in itself; the log says why).', () => (arrays.problem === null ? 1 : 0));
  }

  observeStep(transport: Transport, startedNs: bigint): void {
    this.stepDuration[transport].observe(Number(process.hrtime.bigint() - startedNs) / 1e9);
  }

  observeIdleSlice(startedNs: bigint): void {
    this.idleSliceDuration.observe(Number(process.hrtime.bigint() - startedNs) / 1e9);
  }
}
