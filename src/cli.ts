#!/usr/bin/env node
/**
 * sam-sidecar command line.
 *   serve   run the sidecar (fast lane + gRPC + HTTP) with the embedded defaults, config file and env
 *   replay  simulate speculative decoding over recorded rollouts (token-id JSONL or verl dumps),
 *           in process or through a running sidecar (--via uds|grpc|http)
 *   synth   write deterministic synthetic rollouts as token-id JSONL
 *   demo    end-to-end run: sidecar + Python shim + simulated vLLM runner
 *   rollout compare gate policies over a whole rollout step under continuous batching
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { DEFAULT_ENGINE_OPTIONS, DRAFTERS, type EngineOptions } from './core/engine.js';
import type { ClientAddresses } from './client/clients.js';
import { SidecarError, sidecarError } from './core/errors.js';
import { TRANSPORTS } from './protocol/transports.js';
import { configFileOf, loadConfig } from './server/config.js';
import { WireBackend } from './replay/wire.js';
import { DEMO_USAGE } from './usage.js';
import { InProcessBackend } from './replay/in-process.js';
import { formatTable, renderPlot, round, summarize } from './replay/report.js';
import { compareGates, COST_SHAPES, costModel, type GateComparison } from './replay/rollout.js';
import { DEFAULT_MAX_NUM_SEQS, DEFAULT_TAIL_BATCH, preloadHistory, replayRolloutSteps } from './replay/rollout-step.js';
import { percentile, replay, type ReplayResult, SIBLING_MODES, type StepBackend } from './replay/simulate.js';
import { batchSizesIncrease, DEFAULT_VERIFY_COST, type GateConfig, UNGATED } from './core/gate.js';
import { DEFAULT_SYNTHETIC, syntheticTraces } from './replay/synthetic.js';
import { loadTraceFile, splitSteps, type TraceRow } from './replay/traces.js';
import { loadTokenizer, loadVerlDump } from './replay/verl.js';

const USAGE = `usage:
  sam-sidecar serve   (config: config/sam-sidecar.json or SAM_SIDECAR_CONFIG, env overrides such as
                      SAM_SIDECAR_SOCKET, SAM_SIDECAR_HTTP_PORT, VLLM_SPECULATIVE_BATCH_SIZE_THRE)
  sam-sidecar replay [--traces FILE ... | --verl FILE ... --tokenizer PATH] [options]
      (no input: built-in synthetic GRPO-like rollouts, 8 prompts x 8 samples)
      replays a rollout step as an engine runs it: every row queued at once, first come first
      served up to --max-num-seqs running, a finished request's slot refilled at the next step;
      several files, or a "step" field in the rows, are rollout steps run in sequence
      --k N                 draft length cap (num_speculative_tokens), default 3
      --drafter NAME        sam (default policy) | seed (reference) | ngram (vLLM baseline)
      --siblings MODE       live (default): requests share as they run (siblings, corpus, history)
                            none: each request drafts from its own context only
                            finished: the shared data's reference order (each group's rows one
                            by one, shortest output first; one file, one engine)
      --max-num-seqs N      requests running together on one engine (vLLM max_num_seqs), default 128
      --engines N           engines, each its own sidecar core; trajectories spread as verl's
                            agent loop spreads them (fewest assigned first), default 1
      --turns               each model turn between tool responses is its own request, whose
                            prompt is the conversation so far (verl's tool agent loop)
      --seed N              shuffle the order of the rows within each step
      --history FILE        finished outputs of earlier steps, loaded first (repeatable)
      --min-match N         shortest context the sam policy drafts from, default 1
      --corpus-tokens N     budget of the corpus of every prompt's requests (sam, siblings live
                            or finished), default 4000000; 0: no corpus
      --k-by-batch B:K,...  longest draft by batch size (the sidecar's gate.kByBatch): at most K
                            tokens in steps of at most B requests, the last K beyond; capped by --k
      --limit N             replay only the first N rows of each step
      --via uds|grpc|http   drive a running sidecar instead of the in-process core (its socket and
                            HTTP port from the same config and env as serve); its config decides
                            drafting and gating, so --drafter, --siblings, --min-match,
                            --corpus-tokens and --k-by-batch are refused
      --redis URL           the engines share siblings' text and history only through this Redis
                            (each its own connections, as one sidecar per engine pod)
      --restart-between-steps  every engine's sidecar restarts empty between rollout steps (with
                            --redis it finds the earlier steps' outputs there again)
      --plot FILE.svg       AL and acceptance by context length, with the seed and n-gram baselines
      --json                print one JSON object on the last line of stdout
      --quiet               no progress bar
  sam-sidecar synth --out FILE [--groups N] [--samples N] [--seed N]
  sam-sidecar rollout [--traces FILE] [--k N] [--max-num-seqs N] [--threshold N]
                      [--base-ms X] [--per-seq-ms X] [--verify-cost B:C,B:C,...] [--k-by-batch B:K,...]
                      [--corpus-tokens N] [--json]
      every row queued at once, at most max-num-seqs running; time from a step-cost model
      (plain step: base-ms + per-seq-ms * B; verifying K drafts multiplies it by verify-cost(B));
      compares no speculation, always, the threshold switch and the adaptive gate
${DEMO_USAGE.replace('usage: ', '  ')}`;

const positiveInt = z.coerce.number().int().positive();

/** "B:X,B:X,..." pairs with increasing batch sizes B. */
function batchPairs(what: string, example: string, value: RegExp) {
  const pair = `\\d+:${value.source}`;
  return z
    .string()
    .regex(new RegExp(`^${pair}(,${pair})*$`), `batch:${what} pairs, e.g. ${example}`)
    .transform((text) => text.split(',').map((p) => p.split(':').map(Number) as [number, number]))
    .refine(batchSizesIncrease, 'batch sizes must increase');
}

const VerifyCostArg = batchPairs('cost', '1:1.05,32:1.35,128:2.3', /\d+(\.\d+)?/);
const KByBatchArg = batchPairs('K', '4:8,32:3', /\d+/);
const CorpusTokensArg = z.coerce.number().int().nonnegative().default(DEFAULT_ENGINE_OPTIONS.corpusTokens);

const ReplayArgs = z
  .object({
    traces: z.array(z.string()).optional(),
    verl: z.array(z.string()).optional(),
    tokenizer: z.string().optional(),
    k: positiveInt.max(64).default(3),
    drafter: z.enum(DRAFTERS).default('sam'),
    siblings: z.enum(SIBLING_MODES).default('live'),
    history: z.array(z.string()).default([]),
    'max-num-seqs': positiveInt.max(65_535).default(DEFAULT_MAX_NUM_SEQS),
    engines: positiveInt.max(256).default(1),
    turns: z.boolean().default(false),
    seed: z.coerce.number().int().nonnegative().optional(),
    'min-match': positiveInt.default(1),
    'corpus-tokens': CorpusTokensArg,
    'k-by-batch': KByBatchArg.optional(),
    limit: positiveInt.optional(),
    via: z.enum(TRANSPORTS).optional(),
    redis: z.string().regex(/^rediss?:\/\//, 'a redis:// or rediss:// URL').optional(),
    'restart-between-steps': z.boolean().default(false),
    plot: z.string().optional(),
    json: z.boolean().default(false),
    quiet: z.boolean().default(false),
  })
  .superRefine((args, ctx) => {
    if (args.redis !== undefined && (args.via !== undefined || args.siblings !== 'live')) ctx.addIssue({ code: 'custom', path: ['redis'], message: '--redis shares between in-process engines (siblings live, no --via)' });
    if (args.traces !== undefined && args.verl !== undefined) ctx.addIssue({ code: 'custom', path: ['traces'], message: 'give --traces or --verl, not both' });
    if (args.verl !== undefined && args.tokenizer === undefined) ctx.addIssue({ code: 'custom', path: ['tokenizer'], message: '--verl needs --tokenizer' });
    if (args.history.length > 0 && args.siblings === 'none') ctx.addIssue({ code: 'custom', path: ['history'], message: 'history is only drafted from with siblings (finished or live)' });
    if (args.siblings === 'finished' && (args.engines > 1 || args.turns || args.seed !== undefined || (args.traces?.length ?? 0) > 1)) {
      ctx.addIssue({ code: 'custom', path: ['siblings'], message: 'finished is the reference order of single rows; --engines, --turns, --seed and several --traces need none or live' });
    }
    if (args.via !== undefined && args.engines > 1) ctx.addIssue({ code: 'custom', path: ['engines'], message: 'a sidecar serves one engine pod; --engines > 1 runs in process only' });
  });

type ReplayArgs = z.infer<typeof ReplayArgs>;

/** Flags that set the in-process core's drafting, which a running sidecar takes from its config. */
const VIA_IGNORES = ['drafter', 'siblings', 'min-match', 'corpus-tokens', 'k-by-batch'] as const;

function parseOrExit<T>(schema: z.ZodType<T>, values: unknown): T {
  const parsed = schema.safeParse(values);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => `  --${issue.path.join('.') || '?'}: ${issue.message}`);
  process.stderr.write(`invalid arguments:\n${problems.join('\n')}\n\n${USAGE}\n`);
  process.exit(2);
}

function progressBar(enabled: boolean): ((done: number, total: number) => void) | undefined {
  if (!enabled) return undefined;
  let lastDrawn = 0;
  return (done, total) => {
    const now = Date.now();
    if (now - lastDrawn < 100 && done < total) return;
    lastDrawn = now;
    const width = 30;
    const filled = Math.round((done / Math.max(1, total)) * width);
    process.stderr.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} rows`);
    if (done >= total) process.stderr.write('\n');
  };
}

function loadRows(path: string, args: ReplayArgs): TraceRow[] {
  return args.verl !== undefined ? loadVerlDump(path, loadTokenizer(args.tokenizer!)) : loadTraceFile(path);
}

async function runReplay(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      traces: { type: 'string', multiple: true },
      verl: { type: 'string', multiple: true },
      tokenizer: { type: 'string' },
      k: { type: 'string' },
      drafter: { type: 'string' },
      siblings: { type: 'string' },
      history: { type: 'string', multiple: true },
      'max-num-seqs': { type: 'string' },
      engines: { type: 'string' },
      turns: { type: 'boolean' },
      seed: { type: 'string' },
      'min-match': { type: 'string' },
      'corpus-tokens': { type: 'string' },
      'k-by-batch': { type: 'string' },
      limit: { type: 'string' },
      via: { type: 'string' },
      redis: { type: 'string' },
      'restart-between-steps': { type: 'boolean' },
      plot: { type: 'string' },
      json: { type: 'boolean' },
      quiet: { type: 'boolean' },
    },
    strict: true,
  });
  const args = parseOrExit(ReplayArgs, values);
  // Through a sidecar its own config decides how it drafts: flags that would not apply are refused.
  if (args.via !== undefined) {
    const ignored = VIA_IGNORES.filter((flag) => values[flag] !== undefined);
    if (ignored.length > 0) throw sidecarError('INVALID_ARGUMENT', `--via drives a running sidecar, whose config decides how it drafts: ${ignored.map((f) => `--${f}`).join(', ')} would not apply (set drafting.* and gate.* in its config)`, ignored[0]);
  }
  const files = args.traces ?? args.verl ?? [];
  const source = files.length === 0 ? 'synthetic' : files.map((file) => file.split('/').pop()).join(' + ');
  let steps = files.length === 0 ? [syntheticTraces()] : files.flatMap((file) => splitSteps(loadRows(file, args)));
  if (args.limit !== undefined) steps = steps.map((rows) => rows.slice(0, args.limit));
  const history = args.history.flatMap((file) => loadRows(file, args));
  const engineOptions = { drafter: args.drafter, siblings: args.siblings !== 'none', minMatch: args['min-match'], corpusTokens: args['corpus-tokens'] };
  const inProcess = (options: Partial<EngineOptions>) => Array.from({ length: args.engines }, () => new InProcessBackend({ ...engineOptions, ...options }, args['k-by-batch']));
  const run = async (backends: StepBackend[], progress: boolean, afterRound?: () => Promise<void>, restart?: () => Promise<StepBackend[]>): Promise<ReplayResult> => {
    const onProgress = progressBar(progress && !args.quiet && process.stderr.isTTY === true);
    if (args.siblings === 'finished') {
      await preloadHistory(history, backends, () => 0);
      return replay(steps[0], backends[0], { k: args.k, siblings: 'finished', onProgress });
    }
    return replayRolloutSteps(steps, backends, { k: args.k, maxNumSeqs: args['max-num-seqs'], turns: args.turns, seed: args.seed, tailBatch: DEFAULT_TAIL_BATCH, history, onProgress, afterRound, restart });
  };
  if (args.via !== undefined) process.stderr.write('note: a running sidecar keeps what earlier runs taught it (history, corpus); restart it for a run from a clean state\n');
  const wire = args.via === undefined ? null : new WireBackend(await (await import('./client/clients.js')).connectClient(args.via, clientAddresses(loadConfig())));
  let result: ReplayResult;
  if (args.redis !== undefined) {
    const backends = inProcess({ shareText: true });
    const shared = await (await import('./replay/shared-engines.js')).shareThroughRedis(backends, args.redis);
    const restart = async () => {
      const fresh = inProcess({ shareText: true });
      await shared.restart(fresh);
      return fresh;
    };
    try {
      result = await run(backends, true, () => shared.afterRound(), args['restart-between-steps'] ? restart : undefined);
      if (process.env.SAM_DEBUG_SHARING) process.stderr.write(`${JSON.stringify(shared.sharings.map((s) => s.counters))}\n`);
    } finally {
      await shared.close();
    }
  } else {
    const restart = async () => inProcess({});
    result = await run(wire === null ? inProcess({}) : [wire], true, undefined, args['restart-between-steps'] && wire === null ? restart : undefined);
  }
  result.siblings = args.siblings;
  const label = `${source} drafter=${args.drafter}`;
  process.stdout.write(`${formatTable(label, result)}\n`);
  if (args.plot !== undefined) {
    // The baselines on the same schedule: the seed design and vLLM's n-gram proposer, own context only.
    const baselines = [];
    for (const drafter of ['seed', 'ngram'] as const) baselines.push({ name: drafter, result: await run(inProcess({ drafter, siblings: false }), false) });
    writeFileSync(args.plot, renderPlot(source, [{ name: `${args.drafter}, siblings ${args.siblings}`, result }, ...baselines]));
  }
  if (args.json) {
    const summary = {
      files: files.length === 0 ? ['synthetic'] : files,
      drafter: args.drafter,
      siblings: args.siblings,
      k: args.k,
      maxNumSeqs: args['max-num-seqs'],
      engines: args.engines,
      turns: args.turns,
      seed: args.seed ?? null,
      rows: result.rows,
      rolloutSteps: result.perStep.length,
      ...summarize(result),
      ...(wire === null ? {} : wireSummary(args.via!, wire)),
    };
    process.stdout.write(`${JSON.stringify(summary)}\n`);
  }
}

function clientAddresses(config: ReturnType<typeof loadConfig>): ClientAddresses {
  const host = config.http.host === '0.0.0.0' ? '127.0.0.1' : config.http.host;
  return { socket: config.socket, grpcSocket: config.grpc.socket!, httpUrl: `http://${host}:${config.http.port}`, httpToken: config.http.token };
}

function wireSummary(via: string, backend: WireBackend): Record<string, unknown> {
  const latencies = Float64Array.from(backend.stepLatenciesUs).sort();
  return { via, stepUsP50: round(percentile(latencies, 0.5), 1), stepUsP99: round(percentile(latencies, 0.99), 1), resyncs: backend.resyncs };
}

async function runServe(argv: string[]): Promise<void> {
  if (argv.length > 0) throw sidecarError('INVALID_ARGUMENT', `serve takes no arguments (got ${argv.join(' ')}); configure it with the config file and env`, 'argv');
  const config = loadConfig();
  // Transports load only for the commands that use them (replay and synth need no gRPC or HTTP).
  const { createLogger, startSidecar } = await import('./server/sidecar.js');
  const logger = createLogger(config);
  const sidecar = await startSidecar(config, logger, `${configFileOf() ?? 'embedded defaults'} + environment`);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      logger.info({ signal }, 'shutting down');
      sidecar.close().then(
        () => process.exit(0),
        (error: unknown) => {
          logger.error({ err: error }, 'shutdown failed');
          process.exit(1);
        },
      );
    });
  }
}

async function runRollout(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      traces: { type: 'string' },
      k: { type: 'string' },
      'max-num-seqs': { type: 'string' },
      threshold: { type: 'string' },
      cost: { type: 'string', multiple: true },
      noise: { type: 'string' },
      'base-ms': { type: 'string' },
      'per-seq-ms': { type: 'string' },
      'verify-cost': { type: 'string' },
      'k-by-batch': { type: 'string' },
      'corpus-tokens': { type: 'string' },
      turns: { type: 'boolean' },
      json: { type: 'boolean' },
    },
    strict: true,
  });
  const args = parseOrExit(
    z.object({
      traces: z.string().optional(),
      k: positiveInt.max(64).default(3),
      'max-num-seqs': positiveInt.max(65_535).default(DEFAULT_MAX_NUM_SEQS),
      threshold: z.coerce.number().int().default(32),
      cost: z.array(z.enum(COST_SHAPES)).default(['table']),
      noise: z.coerce.number().min(0).max(1).default(0),
      'base-ms': z.coerce.number().positive().default(25),
      'per-seq-ms': z.coerce.number().nonnegative().default(0.1),
      'verify-cost': VerifyCostArg.optional(),
      'k-by-batch': KByBatchArg.default([]),
      'corpus-tokens': CorpusTokensArg,
      turns: z.boolean().default(false),
      json: z.boolean().default(false),
    }),
    values,
  );
  const rows = args.traces === undefined ? syntheticTraces({ groups: 16, samplesPerGroup: 16 }) : loadTraceFile(args.traces);
  const verifyCost = args['verify-cost'] ?? DEFAULT_VERIFY_COST;
  const shapeOptions = { baseMs: args['base-ms'], perSeqMs: args['per-seq-ms'], verifyCost, k: args.k, noise: args.noise, seed: 1 };
  const gate: GateConfig = { mode: 'threshold', threshold: args.threshold, verifyCost, hysteresis: 0.05, smoothing: 0.01, minObservations: 200, kByBatch: args['k-by-batch'] };
  const options = { k: args.k, maxNumSeqs: args['max-num-seqs'], turns: args.turns, engine: { corpusTokens: args['corpus-tokens'] } };
  const comparisons: GateComparison[] = [];
  for (const shape of args.cost) comparisons.push(await compareGates(rows, () => costModel(shape, shapeOptions), options, gate));
  const lines = [`rollout: ${rows.length} rows, max-num-seqs ${options.maxNumSeqs}, K ${args.k}, plain step ${shapeOptions.baseMs} ms + ${shapeOptions.perSeqMs} ms x B`];
  for (const comparison of comparisons) {
    const baseline = comparison.noSpeculation.timeMs;
    lines.push(`true cost model: ${comparison.cost}; best fixed threshold in hindsight: ${comparison.bestThreshold.policy}`);
    lines.push('  policy                       time (s)  speed-up  engine steps  speculative  AL on spec. steps  tail time');
    for (const r of comparison.results) {
      lines.push(
        [
          `  ${r.policy.padEnd(27)}`,
          (r.timeMs / 1000).toFixed(1).padStart(9),
          `${(baseline / r.timeMs).toFixed(3)}x`.padStart(9),
          String(r.engineSteps).padStart(13),
          `${((100 * r.speculativeSteps) / Math.max(1, r.engineSteps)).toFixed(0)}%`.padStart(12),
          r.alSpeculative.toFixed(3).padStart(18),
          `${(100 * r.tailTimeShare).toFixed(0)}%`.padStart(10),
        ].join(' '),
      );
    }
    const versus = comparison.calibrated.timeMs / comparison.bestThreshold.timeMs - 1;
    lines.push(`  calibrated vs the best fixed threshold: ${(100 * versus).toFixed(2)} % time; vs no speculation: ${(100 * (comparison.calibrated.timeMs / baseline - 1)).toFixed(2)} %`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
  if (args.json) {
    const summary = comparisons.map((c) => ({
      cost: c.cost,
      bestThreshold: c.bestThreshold.policy,
      calibratedVsBestThreshold: round(c.calibrated.timeMs / c.bestThreshold.timeMs, 4),
      calibratedVsNoSpeculation: round(c.calibrated.timeMs / c.noSpeculation.timeMs, 4),
      results: c.results.map((r) => ({ ...r, timeMs: round(r.timeMs, 1), speedUp: round(c.noSpeculation.timeMs / r.timeMs, 4), tailTimeShare: round(r.tailTimeShare, 4), alSpeculative: round(r.alSpeculative, 4) })),
    }));
    process.stdout.write(`${JSON.stringify({ rows: rows.length, k: args.k, maxNumSeqs: options.maxNumSeqs, noise: args.noise, comparisons: summary })}\n`);
  }
}

function runSynth(argv: string[]): void {
  const { values } = parseArgs({
    args: argv,
    options: { out: { type: 'string' }, groups: { type: 'string' }, samples: { type: 'string' }, seed: { type: 'string' } },
    strict: true,
  });
  const args = parseOrExit(
    z.object({
      out: z.string({ message: 'required' }),
      groups: positiveInt.default(DEFAULT_SYNTHETIC.groups),
      samples: positiveInt.default(DEFAULT_SYNTHETIC.samplesPerGroup),
      seed: z.coerce.number().int().default(DEFAULT_SYNTHETIC.seed),
    }),
    values,
  );
  const rows = syntheticTraces({ groups: args.groups, samplesPerGroup: args.samples, seed: args.seed });
  writeFileSync(args.out, rows.map((row) => JSON.stringify(row)).join('\n') + '\n');
  process.stdout.write(`wrote ${rows.length} rows to ${args.out}\n`);
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return runServe(rest);
    case 'replay':
      return runReplay(rest);
    case 'synth':
      return runSynth(rest);
    case 'rollout':
      return runRollout(rest);
    case 'demo':
      process.exitCode = await (await import('./demo.js')).runDemo(rest);
      return;
    default:
      process.stderr.write(`${USAGE}\n`);
      process.exit(command === undefined || command === '--help' || command === 'help' ? 0 : 2);
  }
}

main(process.argv.slice(2)).catch((error: unknown) => {
  if (error instanceof SidecarError) {
    process.stderr.write(`${error.message}\n`);
    process.exit(2);
  }
  if (error instanceof TypeError && (error as NodeJS.ErrnoException).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    process.stderr.write(`${error.message}\n\n${USAGE}\n`);
    process.exit(2);
  }
  throw error;
});
