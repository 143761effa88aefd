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
import { Command, CommanderError } from 'commander';
import { z } from 'zod';
import { DEFAULT_ENGINE_OPTIONS, DRAFTERS, type EngineOptions } from './core/engine.js';
import type { ClientAddresses } from './client/clients.js';
import { SidecarError, sidecarError } from './core/errors.js';
import { TRANSPORTS } from './protocol/transports.js';
import { configFileOf, loadConfig } from './server/config.js';
import { CaFilePath } from './sharing/redis-config.js';
import { WireBackend } from './replay/wire.js';
import { packageVersion } from './package-root.js';
import { InProcessBackend } from './replay/in-process.js';
import { formatTable, renderPlot, round, summarize } from './replay/report.js';
import { compareGates, COST_SHAPES, costModel, type GateComparison } from './replay/rollout.js';
import { DEFAULT_MAX_NUM_SEQS, DEFAULT_TAIL_BATCH, preloadHistory, replayRolloutSteps } from './replay/rollout-step.js';
import { percentile, replay, type ReplayResult, SIBLING_MODES, type StepBackend } from './replay/simulate.js';
import { batchSizesIncrease, DEFAULT_VERIFY_COST, type GateConfig } from './core/gate.js';
import { DEFAULT_SYNTHETIC, syntheticTraces } from './replay/synthetic.js';
import { loadTraceFile, splitSteps, type TraceRow } from './replay/traces.js';
import { loadTokenizer, loadVerlDump } from './replay/verl.js';

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
    'redis-tls-ca': CaFilePath.optional(),
    'restart-between-steps': z.boolean().default(false),
    'exchange-every': positiveInt.max(1000).optional(),
    plot: z.string().optional(),
    json: z.boolean().default(false),
    quiet: z.boolean().default(false),
  })
  .superRefine((args, ctx) => {
    if (args.redis !== undefined && (args.via !== undefined || args.siblings !== 'live')) ctx.addIssue({ code: 'custom', path: ['redis'], message: '--redis shares between in-process engines (siblings live, no --via)' });
    if (args['redis-tls-ca'] !== undefined && !(args.redis?.startsWith('rediss://') ?? false)) ctx.addIssue({ code: 'custom', path: ['redis-tls-ca'], message: 'needs --redis with a rediss:// URL (TLS)' });
    if (args['exchange-every'] !== undefined && args.redis === undefined) ctx.addIssue({ code: 'custom', path: ['exchange-every'], message: 'engines exchange text only through --redis' });
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

/** The values of a command's options, checked all at once: every problem named by its flag, exit 2. */
function parseOrExit<T>(schema: z.ZodType<T>, values: unknown, command: string): T {
  const parsed = schema.safeParse(values);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => `  --${issue.path.join('.') || '?'}: ${issue.message}`);
  process.stderr.write(`sam-sidecar ${command}: invalid arguments:\n${problems.join('\n')}\n(sam-sidecar ${command} --help lists the options)\n`);
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

async function runReplay(values: Record<string, unknown>): Promise<void> {
  const args = parseOrExit(ReplayArgs, values, 'replay');
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
  const schedule = { k: args.k, maxNumSeqs: args['max-num-seqs'], turns: args.turns, seed: args.seed, tailBatch: DEFAULT_TAIL_BATCH, history };
  const run = async (backends: StepBackend[], progress: boolean, restart?: () => Promise<StepBackend[]>): Promise<ReplayResult> => {
    const onProgress = progressBar(progress && !args.quiet && process.stderr.isTTY === true);
    if (args.siblings === 'finished') {
      await preloadHistory(history, backends, () => 0);
      return replay(steps[0], backends[0], { k: args.k, siblings: 'finished', onProgress });
    }
    return replayRolloutSteps(steps, backends, { ...schedule, onProgress, restart });
  };
  if (args.via !== undefined) process.stderr.write('note: a running sidecar keeps what earlier runs taught it (history, corpus); restart it for a run from a clean state\n');
  const wire = args.via === undefined ? null : new WireBackend(await (await import('./client/clients.js')).connectClient(args.via, clientAddresses(loadConfig())));
  let result: ReplayResult;
  if (args.redis !== undefined) {
    const { replayThroughRedis } = await import('./replay/shared-engines.js');
    const onProgress = progressBar(!args.quiet && process.stderr.isTTY === true);
    const shared = await replayThroughRedis(steps, () => inProcess({ shareText: true }), { url: args.redis, tlsCaFile: args['redis-tls-ca'] }, { ...schedule, onProgress, restartBetweenSteps: args['restart-between-steps'], exchangeEvery: args['exchange-every'] });
    if (process.env.SAM_DEBUG_SHARING) process.stderr.write(`${JSON.stringify(shared.counters)}\n`);
    result = shared.result;
  } else {
    const restart = async () => inProcess({});
    result = await run(wire === null ? inProcess({}) : [wire], true, args['restart-between-steps'] && wire === null ? restart : undefined);
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

async function runServe(): Promise<void> {
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

async function runRollout(values: Record<string, unknown>): Promise<void> {
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
    'rollout',
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

function runSynth(values: Record<string, unknown>): void {
  const args = parseOrExit(
    z.object({
      out: z.string({ message: 'required' }),
      groups: positiveInt.default(DEFAULT_SYNTHETIC.groups),
      samples: positiveInt.default(DEFAULT_SYNTHETIC.samplesPerGroup),
      seed: z.coerce.number().int().default(DEFAULT_SYNTHETIC.seed),
    }),
    values,
    'synth',
  );
  const rows = syntheticTraces({ groups: args.groups, samplesPerGroup: args.samples, seed: args.seed });
  writeFileSync(args.out, rows.map((row) => JSON.stringify(row)).join('\n') + '\n');
  process.stdout.write(`wrote ${rows.length} rows to ${args.out}\n`);
}

/** Repeatable options collect into an array. */
const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

/** commander's camelCase option names back to the flags the value schemas name. */
function flags(options: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(options).map(([key, value]) => [key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), value]));
}

function program(): Command {
  const cli = new Command('sam-sidecar')
    .description('Model-free, lossless speculative decoding drafts for LLM RL rollouts: a suffix-automaton sidecar for vLLM / vLLM-Ascend')
    .version(packageVersion(), '-V, --version')
    .exitOverride() // inherited by the commands below: usage errors exit 2, help and version 0
    .showSuggestionAfterError()
    .configureOutput({ outputError: (text, write) => write(`${text.trim()} (sam-sidecar --help lists the commands, sam-sidecar COMMAND --help the options)\n`) });
  cli
    .command('serve')
    .description('run the sidecar: fast lane, gRPC and HTTP, on the embedded defaults, the config file (SAM_SIDECAR_CONFIG, else config/sam-sidecar.json) and env overrides (SAM_SIDECAR_SOCKET, SAM_SIDECAR_HTTP_PORT, VLLM_SPECULATIVE_BATCH_SIZE_THRE, ...; see the README)')
    .action(() => runServe());
  cli
    .command('replay')
    .description('replay a rollout step as an engine runs it (every row queued at once, first come first served up to --max-num-seqs, a freed slot refilled at the next step) and report acceptance; several files, or a "step" field, are steps in sequence. No input: built-in synthetic GRPO-like rollouts')
    .option('--traces <file>', 'token-id JSONL rows {id, group, prompt, output, env, step?} (repeatable: steps in sequence)', collect)
    .option('--verl <file>', 'verl rollout dump (trainer.rollout_data_dir JSONL), with --tokenizer (repeatable)', collect)
    .option('--tokenizer <path>', "the model's tokenizer.json, or its folder")
    .option('--k <n>', 'draft length cap (num_speculative_tokens), default 3')
    .option('--drafter <name>', 'sam (default policy) | seed (reference) | ngram (vLLM baseline)')
    .option('--siblings <mode>', 'live (default): requests share as they run; none: own context only; finished: the shared data\'s reference order')
    .option('--max-num-seqs <n>', 'requests running together on one engine (vLLM max_num_seqs), default 128')
    .option('--engines <n>', 'engines, each its own sidecar; trajectories spread as verl spreads them, default 1')
    .option('--turns', 'each model turn between tool responses is its own request, its prompt the conversation so far')
    .option('--seed <n>', 'shuffle the rows of each step')
    .option('--history <file>', 'finished outputs of earlier steps, loaded first (repeatable)', collect)
    .option('--min-match <n>', 'shortest context the sam policy drafts from, default 1')
    .option('--corpus-tokens <n>', 'budget of the corpus of every prompt\'s requests, default 4000000; 0: none')
    .option('--k-by-batch <pairs>', 'longest draft by batch size, B:K,... (the sidecar\'s gate.kByBatch)')
    .option('--limit <n>', 'only the first N rows of each step')
    .option('--via <transport>', 'uds | grpc | http: drive a running sidecar (its config decides drafting and gating)')
    .option('--redis <url>', 'the engines share only through this Redis (one connection set per engine)')
    .option('--restart-between-steps', 'every engine\'s sidecar restarts empty between rollout steps')
    .option('--redis-tls-ca <file.pem>', 'with a rediss:// --redis: the CA its certificate chains to (a private CA), as sharing.redis.tlsCaFile')
    .option('--exchange-every <rounds>', 'with --redis: engines publish and read every N engine steps (text up to N steps stale), default 1')
    .option('--plot <file.svg>', 'AL and acceptance by context length, with the seed and n-gram baselines')
    .option('--json', 'one JSON object on the last line of stdout')
    .option('--quiet', 'no progress bar')
    .action((options: Record<string, unknown>) => runReplay(flags(options)));
  cli
    .command('rollout')
    .description('compare gate policies over a whole rollout step under a true step-cost model the gates never see: no speculation, always, every fixed threshold (the best in hindsight named), adaptive and calibrated')
    .option('--traces <file>', 'token-id JSONL rows (default: synthetic, 16 prompts x 16 samples)')
    .option('--k <n>', 'draft length, default 3')
    .option('--max-num-seqs <n>', 'requests running together, default 128')
    .option('--threshold <n>', "the threshold and adaptive gates' switch, default 32")
    .option('--cost <shape>', 'true cost model: table (default) | flat | steep | context (repeatable)', collect)
    .option('--noise <x>', 'multiplicative noise of step times (standard deviation, e.g. 0.1), default 0')
    .option('--base-ms <x>', 'plain decode step: base ms, default 25')
    .option('--per-seq-ms <x>', 'plain decode step: ms per request, default 0.1')
    .option('--verify-cost <pairs>', 'table model and adaptive gate: B:C,... verification cost relative to a plain step')
    .option('--k-by-batch <pairs>', 'longest draft by batch size, B:K,...')
    .option('--corpus-tokens <n>', 'corpus budget, default 4000000')
    .option('--turns', 'each model turn its own request')
    .option('--json', 'one JSON object on the last line of stdout')
    .action((options: Record<string, unknown>) => runRollout(flags(options)));
  cli
    .command('synth')
    .description('write deterministic synthetic GRPO-like rollouts as token-id JSONL')
    .requiredOption('--out <file>', 'where to write them')
    .option('--groups <n>', `prompts, default ${DEFAULT_SYNTHETIC.groups}`)
    .option('--samples <n>', `samples per prompt, default ${DEFAULT_SYNTHETIC.samplesPerGroup}`)
    .option('--seed <n>', `default ${DEFAULT_SYNTHETIC.seed}`)
    .action((options: Record<string, unknown>) => runSynth(flags(options)));
  cli
    .command('demo')
    .description('end-to-end run on embedded defaults: a sidecar, the Python shim and a simulated vLLM runner on one rollout step; a summary a newcomer can read')
    .allowUnknownOption(false)
    .option('--traces <file>', 'token-id JSONL rows (default: synthetic, 8 prompts x 8 samples)')
    .option('--siblings <mode>', 'none | finished | live (default)')
    .option('--k <n>', 'draft length, default 3')
    .option('--tp <n>', 'tensor-parallel ranks (processes in a gloo group)')
    .option('--max-num-seqs <n>', 'requests running together, default 128')
    .option('--preempt-every <n>', 'preempt a running request every N steps')
    .option('--limit <n>', 'only the first N rows')
    .option('--deadline-ms <x>', "the shim's per-step deadline")
    .option('--json', 'one JSON object instead of the summary')
    .action(async (options: Record<string, unknown>) => {
      const { traces, json, ...simulator } = flags(options);
      const simulatorArgs = Object.entries(simulator).flatMap(([flag, value]) => [`--${flag}`, String(value)]);
      process.exitCode = await (await import('./demo.js')).runDemo({
        traces: traces as string | undefined,
        json: json === true,
        k: Number(simulator.k ?? 3),
        limit: Number(simulator.limit ?? 0),
        simulatorArgs,
      });
    });
  return cli;
}

program()
  .parseAsync(process.argv)
  .catch((error: unknown) => {
    if (error instanceof CommanderError) process.exit(['commander.helpDisplayed', 'commander.version', 'commander.help'].includes(error.code) ? 0 : 2);
    if (error instanceof SidecarError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(2);
    }
    throw error;
  });
