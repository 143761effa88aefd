/**
 * Configuration: embedded defaults, then a JSON file (config/sam-sidecar.json, or the path in
 * SAM_SIDECAR_CONFIG), then environment variables. Validated once at start with zod, every problem
 * reported at once, and frozen.
 */
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { DRAFTERS } from '../core/engine.js';
import { sidecarError } from '../core/errors.js';
import { batchSizesIncrease, CALIBRATION_DEFAULTS, DEFAULT_VERIFY_COST, GATE_MODES } from '../core/gate.js';
import { CaFilePath, REDIS_SHARING_DEFAULTS } from '../sharing/redis-config.js';
import { packageRoot } from '../package-root.js';

const positiveInt = z.number().int().positive();
const nonNegativeInt = z.number().int().nonnegative();

// Strict at every depth: a misspelt key anywhere ({"gate": {"treshold": 4}}) is an error naming its path.
export const ConfigSchema = z
  .strictObject({
    /** Fast-lane Unix socket (the Python shim's default transport). */
    socket: z.string().min(1).default(join(tmpdir(), 'sam-sidecar', 'sidecar.sock')),
    /** Permissions of the socket files: group-writable so the vLLM user in the pod can connect. */
    socketMode: z.string().regex(/^0?[0-7]{3}$/, 'an octal mode such as "660"').default('660'),
    grpc: z
      .strictObject({
        /** gRPC over a Unix socket; default: the fast-lane path with ".grpc" appended. "" disables it. */
        socket: z.string().optional(),
        /** Optional gRPC over TCP, "host:port" (off by default). */
        tcp: z.string().regex(/^[^:]+:\d+$/, 'host:port').optional(),
      })
      .prefault({}),
    http: z
      .strictObject({
        host: z.string().min(1).default('127.0.0.1'),
        /** 0 picks a free port (tests). */
        port: z.number().int().min(0).max(65535).default(8479),
        /** POST /v1/step and /v1/release (debugging, replay --via http). Off where the port is reachable by others. */
        jsonStep: z.boolean().default(true),
        /**
         * Bearer token for the routes that change state or show a request's text (POST /v1/step,
         * /v1/release, GET /v1/engines/..., /v1/config). Without one those routes answer only on a
         * loopback host; probes, /metrics and the aggregate /v1/stats stay open.
         */
        token: z.string().min(16, 'at least 16 characters').optional(),
      })
      .prefault({}),
    drafting: z
      .strictObject({
        drafter: z.enum(DRAFTERS).default('sam'),
        siblings: z.boolean().default(true),
        minMatch: positiveInt.default(1),
        vocabSize: positiveInt.max(2 ** 31).default(1 << 20),
        ngramMin: positiveInt.default(2),
        ngramMax: positiveInt.default(5),
      })
      .prefault({}),
    gate: z
      .strictObject({
        mode: z.enum(GATE_MODES).default('threshold'),
        /** VLLM_SPECULATIVE_BATCH_SIZE_THRE: off when num_reqs > threshold; <= 0 disables the gate. */
        threshold: z.number().int().default(32),
        verifyCost: z
          .array(z.tuple([positiveInt, z.number().positive()]))
          .min(1)
          .refine(batchSizesIncrease, 'batch sizes must increase')
          .default(DEFAULT_VERIFY_COST.map(([batch, cost]) => [batch, cost] as [number, number])),
        hysteresis: z.number().min(0).max(0.5).default(0.05),
        smoothing: z.number().gt(0).max(1).default(0.01),
        minObservations: nonNegativeInt.default(200),
        /** Longest draft by batch size, [B, K] pairs (see GateConfig.kByBatch); [] for none. */
        kByBatch: z
          .array(z.tuple([positiveInt, nonNegativeInt.max(255)]))
          .refine(batchSizesIncrease, 'batch sizes must increase')
          .default([]),
        /** mode "calibrated": how the step-cost model gathers its samples (see CalibrationConfig). */
        calibration: z
          .strictObject({
            minSamples: positiveInt.max(10_000).default(CALIBRATION_DEFAULTS.minSamples),
            explorePeriod: positiveInt.max(1_000_000).default(CALIBRATION_DEFAULTS.explorePeriod),
            refreshPeriod: positiveInt.max(1_000_000).default(CALIBRATION_DEFAULTS.refreshPeriod),
          })
          .prefault({}),
      })
      .prefault({}),
    limits: z
      .strictObject({
        maxK: positiveInt.max(255).default(16),
        maxMessageBytes: positiveInt.default(256 * 1024 * 1024),
        requestTtlSeconds: z.number().positive().default(900),
        stepCacheSize: positiveInt.default(8),
        /** Requests one step may carry: bounds one call's work (vLLM's max_num_seqs is far below). */
        maxRequestsPerStep: positiveInt.max(65_535).default(4096),
        /** Engines held at once; a new engine id beyond it evicts the least recently seen engine. */
        maxEngines: positiveInt.default(1024),
        /** Tokens one step indexes; more wait in a backlog indexed by later steps and between steps. */
        ingestTokensPerStep: positiveInt.min(256).default(2048),
        /** Fast-lane connections at once (the shim of each engine and TP rank keeps one). */
        maxConnections: positiveInt.default(256),
        /** A frame still incomplete after this long closes its connection (a stalled or hostile client). */
        partialFrameSeconds: z.number().positive().max(3600).default(30),
        /** Bytes of incomplete frames buffered across all fast-lane connections. */
        maxBufferedBytes: positiveInt.default(1024 * 1024 * 1024),
      })
      .prefault({}),
    memory: z
      .strictObject({
        /** Tokens held by live requests and history (about 29 to 41 bytes each); the corpus has its own. */
        maxTokens: positiveInt.default(64_000_000),
        /** Bytes of everything held, object overheads and the corpus included (the chart: 75 % of its memory limit, less the frame buffers). */
        maxBytes: positiveInt.default(3 * 1024 ** 3),
        /** Finished groups kept for later rollout steps with the same prompt. */
        historyTokens: nonNegativeInt.default(16_000_000),
        /**
         * Finished requests of every prompt, drafted from where a request's own group has little
         * context (its own budget, outside maxTokens; 0 turns it off).
         */
        corpusTokens: nonNegativeInt.default(4_000_000),
        maintenanceIntervalMs: positiveInt.default(1000),
      })
      .prefault({}),
    /**
     * Share siblings' text, the corpus's and history across engines (and restarts) through an
     * existing Redis. Off (url null) by default: a single sidecar needs nothing.
     */
    sharing: z
      .strictObject({
        redis: z
          .strictObject({
            url: z.string().regex(/^rediss?:\/\//, 'a redis:// or rediss:// URL (rediss: TLS)').nullable().default(null),
            /** Better from SAM_SIDECAR_REDIS_PASSWORD (a Secret) than in the file. */
            password: z.string().optional(),
            /** PEM file of the CA(s) a rediss:// server's certificate is checked against, instead of the system's (a private CA). */
            tlsCaFile: CaFilePath.optional(),
            /** One per training job: jobs never read each other's text. */
            keyPrefix: z.string().min(1).max(200).regex(/^[\w.:-]+$/, 'letters, digits and _ . : -').default(REDIS_SHARING_DEFAULTS.keyPrefix),
            historyOutputsPerPrompt: positiveInt.max(100_000).default(REDIS_SHARING_DEFAULTS.historyOutputsPerPrompt),
            historyTtlSeconds: positiveInt.default(REDIS_SHARING_DEFAULTS.historyTtlSeconds),
            historyMaxTokens: positiveInt.max(2 ** 40).default(REDIS_SHARING_DEFAULTS.historyMaxTokens),
            liveMaxEntries: positiveInt.default(REDIS_SHARING_DEFAULTS.liveMaxEntries),
            liveTtlSeconds: positiveInt.default(REDIS_SHARING_DEFAULTS.liveTtlSeconds),
            liveWindowSeconds: nonNegativeInt.default(REDIS_SHARING_DEFAULTS.liveWindowSeconds),
            maxPublishBytes: positiveInt.default(REDIS_SHARING_DEFAULTS.maxPublishBytes),
            maxWatchedGroups: positiveInt.max(1_000_000).default(REDIS_SHARING_DEFAULTS.maxWatchedGroups),
            maxInboxTokens: positiveInt.default(REDIS_SHARING_DEFAULTS.maxInboxTokens),
            readIntervalMs: positiveInt.max(10_000).default(REDIS_SHARING_DEFAULTS.readIntervalMs),
            publishIntervalMs: positiveInt.max(10_000).default(REDIS_SHARING_DEFAULTS.publishIntervalMs),
          })
          .prefault({}),
      })
      .prefault({}),
    /** Synthetic steps run at start so the hot path is compiled before the first real step. */
    warmUpSteps: nonNegativeInt.default(1000),
    /**
     * Microseconds the event loop keeps polling after each step instead of sleeping (src/server/
     * busy-poll.ts): faster steps for one busy core. 0 (default) never polls.
     */
    busyPollUs: nonNegativeInt.max(1_000_000).default(0),
    /**
     * Microseconds the event loop polls after a PING, or until the next step is answered: the
     * shim pings as it starts building a step, so waking the sidecar overlaps that work. 0: a
     * PING only answers.
     */
    wakePollUs: nonNegativeInt.max(1_000_000).default(1000),
    log: z.strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') }).prefault({}),
    shutdown: z.strictObject({ drainMs: nonNegativeInt.default(500) }).prefault({}),
  })
  .superRefine(
    (config, ctx) => {
      // Runs even when other settings failed, so every problem is reported in one go.
      const { drafting, memory, sharing } = config ?? {};
      if (typeof drafting?.ngramMin === 'number' && typeof drafting?.ngramMax === 'number' && drafting.ngramMin > drafting.ngramMax) {
        ctx.addIssue({ code: 'custom', path: ['drafting', 'ngramMin'], message: 'must not exceed ngramMax' });
      }
      if (typeof memory?.historyTokens === 'number' && typeof memory?.maxTokens === 'number' && memory.historyTokens > memory.maxTokens) {
        ctx.addIssue({ code: 'custom', path: ['memory', 'historyTokens'], message: 'must not exceed maxTokens' });
      }
      const redis = sharing?.redis;
      if (redis?.tlsCaFile !== undefined && !(typeof redis.url === 'string' && redis.url.startsWith('rediss://'))) {
        ctx.addIssue({ code: 'custom', path: ['sharing', 'redis', 'tlsCaFile'], message: 'needs a rediss:// url (TLS)' });
      }
    },
    { when: () => true },
  );

export type SidecarConfig = z.infer<typeof ConfigSchema>;

/** Environment variables and the config path they override. */
const ENV_OVERRIDES: ReadonlyArray<readonly [string, readonly string[], 'string' | 'int' | 'bool']> = [
  ['SAM_SIDECAR_SOCKET', ['socket'], 'string'],
  ['SAM_SIDECAR_GRPC_SOCKET', ['grpc', 'socket'], 'string'],
  ['SAM_SIDECAR_GRPC_TCP', ['grpc', 'tcp'], 'string'],
  ['SAM_SIDECAR_HTTP_HOST', ['http', 'host'], 'string'],
  ['SAM_SIDECAR_HTTP_PORT', ['http', 'port'], 'int'],
  ['SAM_SIDECAR_HTTP_JSON_STEP', ['http', 'jsonStep'], 'bool'],
  ['SAM_SIDECAR_HTTP_TOKEN', ['http', 'token'], 'string'],
  ['VLLM_SPECULATIVE_BATCH_SIZE_THRE', ['gate', 'threshold'], 'int'],
  ['SAM_SIDECAR_GATE_MODE', ['gate', 'mode'], 'string'],
  ['SAM_SIDECAR_DRAFTER', ['drafting', 'drafter'], 'string'],
  ['SAM_SIDECAR_SIBLINGS', ['drafting', 'siblings'], 'bool'],
  ['SAM_SIDECAR_VOCAB_SIZE', ['drafting', 'vocabSize'], 'int'],
  ['SAM_SIDECAR_MAX_TOKENS', ['memory', 'maxTokens'], 'int'],
  ['SAM_SIDECAR_MAX_BYTES', ['memory', 'maxBytes'], 'int'],
  ['SAM_SIDECAR_HISTORY_TOKENS', ['memory', 'historyTokens'], 'int'],
  ['SAM_SIDECAR_CORPUS_TOKENS', ['memory', 'corpusTokens'], 'int'],
  ['SAM_SIDECAR_INGEST_TOKENS_PER_STEP', ['limits', 'ingestTokensPerStep'], 'int'],
  ['SAM_SIDECAR_LOG_LEVEL', ['log', 'level'], 'string'],
  ['SAM_SIDECAR_BUSY_POLL_US', ['busyPollUs'], 'int'],
  ['SAM_SIDECAR_WAKE_POLL_US', ['wakePollUs'], 'int'],
  ['SAM_SIDECAR_REDIS_URL', ['sharing', 'redis', 'url'], 'string'],
  ['SAM_SIDECAR_REDIS_PASSWORD', ['sharing', 'redis', 'password'], 'string'],
  ['SAM_SIDECAR_REDIS_KEY_PREFIX', ['sharing', 'redis', 'keyPrefix'], 'string'],
  ['SAM_SIDECAR_REDIS_TLS_CA_FILE', ['sharing', 'redis', 'tlsCaFile'], 'string'],
];

/** config/sam-sidecar.json of the installed package. */
export function defaultConfigFile(): string {
  return join(packageRoot(), 'config', 'sam-sidecar.json');
}

export interface ConfigSources {
  env?: NodeJS.ProcessEnv;
  /** Explicit file (null: none); default: SAM_SIDECAR_CONFIG, else config/sam-sidecar.json when present. */
  file?: string | null;
  /** Applied last (tests, embedding). */
  overrides?: Record<string, unknown>;
}

/** The config file these sources read: SAM_SIDECAR_CONFIG, else config/sam-sidecar.json if present; null for none. */
export function configFileOf(sources: ConfigSources = {}): string | null {
  const env = sources.env ?? process.env;
  return sources.file === undefined ? env.SAM_SIDECAR_CONFIG || (existsSync(defaultConfigFile()) ? defaultConfigFile() : null) : sources.file;
}

export function loadConfig(sources: ConfigSources = {}): Readonly<SidecarConfig> {
  const env = sources.env ?? process.env;
  const problems: string[] = [];
  let raw: Record<string, unknown> = {};
  const file = configFileOf(sources);
  if (file !== null) {
    try {
      raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    } catch (error) {
      problems.push(`${file}: ${(error as Error).message}`);
    }
  }
  for (const [name, path, type] of ENV_OVERRIDES) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    let parsed: unknown = value;
    if (type === 'int') {
      if (!/^-?\d+$/.test(value.trim())) {
        problems.push(`${name}: expected an integer, got ${JSON.stringify(value)}`);
        continue;
      }
      parsed = Number(value);
    } else if (type === 'bool') {
      parsed = ['1', 'true', 'yes', 'on'].includes(value.toLowerCase());
    }
    setPath(raw, path, parsed);
  }
  if (sources.overrides) raw = deepMerge(raw, sources.overrides);
  const result = ConfigSchema.safeParse(raw);
  if (!result.success) for (const issue of result.error.issues) problems.push(`${issue.path.join('.') || '(root)'}: ${issue.message}`);
  if (problems.length > 0) throw sidecarError('CONFIG_INVALID', `\n  ${problems.join('\n  ')}`, problems.length === 1 ? undefined : `${problems.length} problems`);
  const config = result.data!;
  if (config.grpc.socket === undefined) config.grpc.socket = `${config.socket}.grpc`;
  return deepFreeze(config);
}

function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    if (typeof node[key] !== 'object' || node[key] === null) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1]] = value;
}

function deepMerge(base: Record<string, unknown>, extra: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(extra)) {
    const existing = out[key];
    out[key] =
      value !== null && typeof value === 'object' && !Array.isArray(value) && existing !== null && typeof existing === 'object' && !Array.isArray(existing)
        ? deepMerge(existing as Record<string, unknown>, value as Record<string, unknown>)
        : value;
  }
  return out;
}

function deepFreeze<T>(value: T): Readonly<T> {
  if (value !== null && typeof value === 'object') {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
