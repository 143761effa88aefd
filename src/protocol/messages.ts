/**
 * The Step message as structured data: the shape of proto/sam_sidecar.proto (snake_case field
 * names), shared by gRPC (protobufjs objects) and HTTP (JSON). One mapping to and from the core's
 * columnar StepBatch / StepOutcome serves both transports and their Node clients.
 */
import { z } from 'zod';
import { sidecarError, type ErrorCode } from '../core/errors.js';
import { GATE_REASON_NAMES, type GateReason } from '../core/gate.js';
import { type GateView, ItemStatus, NO_PROMPT, type ServiceStats, type StepBatch, type StepCounters, type StepOutcome } from '../core/step-service.js';

/** A uint64 as protobufjs hands it over (Long), as JSON carries it (number or string), or a bigint. */
export type Uint64Like = bigint | number | string | { toString(): string };

export interface RequestDeltaMessage {
  req_id: string;
  start?: number;
  tokens?: ArrayLike<number>;
  prompt_len?: number | null;
  remaining?: number;
}

export interface StepRequestMessage {
  engine_id: string;
  step_id: Uint64Like;
  num_reqs?: number;
  prefill?: boolean;
  k?: number;
  requests?: RequestDeltaMessage[];
  finished_req_ids?: string[];
  timing?: StepTimingMessage | null;
}

export interface StepTimingMessage {
  step_us?: number;
  step_reqs?: number;
  verified_slots?: number;
  had_prefill?: boolean;
}

export interface DraftMessage {
  status: number;
  tokens: number[];
  error_code: string;
  error_message: string;
}

export interface StepResponseMessage {
  step_id: string;
  speculate: boolean;
  reason: number;
  reason_name: string;
  off_above: number;
  drafts: DraftMessage[];
}

/** JSON Step bodies (HTTP) are checked here; token ranges and semantics are the core's to check. */
export const StepRequestJson = z.object({
  engine_id: z.string().min(1),
  step_id: z.union([z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER, 'past 2^53-1: give it as a decimal string'), z.string().regex(/^\d+$/, 'a decimal uint64')]),
  num_reqs: z.number().int().nonnegative(),
  prefill: z.boolean().default(false),
  k: z.number().int().nonnegative(),
  requests: z
    .array(
      z.object({
        req_id: z.string().min(1),
        // uint32 on the wire (proto), so larger values would wrap; 2^32-1 is the "no prompt" marker.
        start: z.number().int().nonnegative().max(0xffffffff).default(0),
        tokens: z.array(z.number()),
        prompt_len: z.number().int().nonnegative().max(NO_PROMPT - 1).nullish(),
        remaining: z.number().int().nonnegative().max(0xffffffff).default(0),
      }),
    )
    .default([]),
  finished_req_ids: z.array(z.string()).default([]),
  timing: z
    .object({
      step_us: z.number().int().nonnegative().max(0xffffffff).default(0),
      step_reqs: z.number().int().nonnegative().max(0xffffffff).default(0),
      verified_slots: z.number().int().nonnegative().max(0xffffffff).default(0),
      had_prefill: z.boolean().default(false),
    })
    .optional(),
});

/**
 * A JSON Step body, in proto3's JSON mapping: lowerCamelCase field names (the proto's own
 * snake_case names are accepted too, as proto3 parsers do), uint64 as a string (or a number up to
 * 2^53). Problems name the field as the JSON API spells it (`requests[0].promptLen`).
 */
export function parseStepJson(body: unknown): StepRequestMessage {
  const parsed = StepRequestJson.safeParse(snakeKeys(body, 3));
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues;
  const name = (path: ReadonlyArray<PropertyKey>) =>
    path.map((part, i) => (typeof part === 'number' ? `[${part}]` : `${i > 0 ? '.' : ''}${camel(String(part))}`)).join('') || 'body';
  throw sidecarError('INVALID_ARGUMENT', issues.map((issue) => `${name(issue.path)}: ${issue.message}`).join('; '), name(issues[0].path));
}

const camel = (name: string) => name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
const snake = (name: string) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** An object's keys (and its objects' and arrays' elements', `depth` levels down) from lowerCamelCase to snake_case. */
function snakeKeys(value: unknown, depth: number): unknown {
  if (depth < 0 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((item) => snakeKeys(item, depth - 1));
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) out[snake(key)] = key === 'tokens' ? item : snakeKeys(item, depth - 1);
  return out;
}

/** Draft status names in wire order (ItemStatus, the proto's DraftStatus). */
const DRAFT_STATUS_NAMES = Object.keys(ItemStatus) as Array<keyof typeof ItemStatus>;
const GATE_REASON_ENUM = GATE_REASON_NAMES.map((name) => name.toUpperCase());

/** A Step's answer in proto3's JSON mapping: lowerCamelCase, uint64 as a string, enums by name, defaults omitted. */
export function jsonFromOutcome(outcome: StepOutcome): Record<string, unknown> {
  const message = messageFromOutcome(outcome);
  return {
    stepId: message.step_id,
    speculate: message.speculate,
    reason: GATE_REASON_ENUM[message.reason],
    offAbove: message.off_above,
    drafts: message.drafts.map((draft) => ({
      status: DRAFT_STATUS_NAMES[draft.status],
      tokens: draft.tokens,
      ...(draft.error_code ? { errorCode: draft.error_code, errorMessage: draft.error_message } : {}),
    })),
  };
}

/** The Node HTTP client's side: a StepBatch as a JSON Step body (proto3 JSON mapping). */
export function jsonFromBatch(batch: StepBatch): Record<string, unknown> {
  const message = messageFromBatch(batch);
  const json: Record<string, unknown> = {
    engineId: message.engine_id,
    stepId: message.step_id,
    numReqs: message.num_reqs,
    prefill: message.prefill,
    k: message.k,
    requests: (message.requests ?? []).map((r) => ({
      reqId: r.req_id,
      start: r.start,
      tokens: r.tokens,
      ...(r.prompt_len === undefined ? {} : { promptLen: r.prompt_len }),
      ...(r.remaining ? { remaining: r.remaining } : {}),
    })),
    finishedReqIds: message.finished_req_ids,
  };
  const timing = message.timing;
  if (timing) json.timing = { stepUs: timing.step_us, stepReqs: timing.step_reqs, verifiedSlots: timing.verified_slots, hadPrefill: timing.had_prefill };
  return json;
}

/** The Node HTTP client's side: a JSON answer back to a StepOutcome. */
export function outcomeFromJson(json: Record<string, unknown>): StepOutcome {
  const drafts = ((json.drafts as Array<Record<string, unknown>> | undefined) ?? []).map((draft) => ({
    status: Math.max(0, DRAFT_STATUS_NAMES.indexOf(String(draft.status ?? 'OK') as keyof typeof ItemStatus)),
    tokens: (draft.tokens as number[] | undefined) ?? [],
    error_code: String(draft.errorCode ?? ''),
    error_message: String(draft.errorMessage ?? ''),
  }));
  const reason = GATE_REASON_ENUM.indexOf(String(json.reason ?? 'BELOW_THRESHOLD'));
  return outcomeFromMessage({ step_id: json.stepId as Uint64Like, speculate: json.speculate === true, reason: Math.max(0, reason), off_above: Number(json.offAbove ?? 0), drafts });
}

export function toUint64(value: Uint64Like, field: string): bigint {
  try {
    const id = BigInt(typeof value === 'object' ? value.toString() : value);
    if (id < 0n || id >= 1n << 64n) throw new RangeError('out of range');
    return id;
  } catch {
    throw sidecarError('INVALID_ARGUMENT', `${String(value)} is not a uint64`, field);
  }
}

export function batchFromMessage(message: StepRequestMessage): StepBatch {
  const requests = message.requests ?? [];
  const n = requests.length;
  const reqIds = new Array<string>(n);
  const starts = new Uint32Array(n);
  const counts = new Uint32Array(n);
  const promptLengths = new Uint32Array(n);
  let remaining: Uint32Array | undefined;
  let total = 0;
  for (let i = 0; i < n; i++) total += requests[i].tokens?.length ?? 0;
  const tokens = new Float64Array(total); // holds out-of-range ids too, so the core can name them
  let offset = 0;
  for (let i = 0; i < n; i++) {
    const request = requests[i];
    reqIds[i] = request.req_id;
    starts[i] = request.start ?? 0;
    const own = request.tokens ?? [];
    counts[i] = own.length;
    for (let j = 0; j < own.length; j++) tokens[offset++] = own[j];
    if (request.prompt_len === NO_PROMPT) throw sidecarError('INVALID_ARGUMENT', `prompt_len ${NO_PROMPT} is reserved (it marks a delta)`, `requests[${i}].prompt_len`);
    promptLengths[i] = request.prompt_len === undefined || request.prompt_len === null ? NO_PROMPT : request.prompt_len;
    if (request.remaining) (remaining ??= new Uint32Array(n))[i] = request.remaining;
  }
  const batch: StepBatch = {
    engineId: message.engine_id,
    stepId: toUint64(message.step_id, 'step_id'),
    numReqs: message.num_reqs ?? 0,
    prefill: message.prefill ?? false,
    k: message.k ?? 0,
    reqIds,
    starts,
    counts,
    promptLengths,
    tokens,
    finished: message.finished_req_ids ?? [],
  };
  if (remaining !== undefined) batch.remaining = remaining;
  const timing = message.timing;
  if (timing !== undefined && timing !== null) {
    batch.timing = { stepUs: timing.step_us ?? 0, stepReqs: timing.step_reqs ?? 0, verifiedSlots: timing.verified_slots ?? 0, hadPrefill: timing.had_prefill ?? false };
  }
  return batch;
}

export function messageFromOutcome(outcome: StepOutcome): StepResponseMessage {
  const n = outcome.statuses.length;
  const drafts: DraftMessage[] = new Array(n);
  let offset = 0;
  for (let i = 0; i < n; i++) {
    const length = outcome.draftLengths[i];
    drafts[i] = { status: outcome.statuses[i], tokens: Array.from(outcome.drafts.subarray(offset, offset + length)), error_code: '', error_message: '' };
    offset += length;
  }
  for (const error of outcome.errors) {
    drafts[error.index].error_code = error.code;
    drafts[error.index].error_message = error.message;
  }
  return { step_id: outcome.stepId.toString(), speculate: outcome.speculate, reason: outcome.reason, reason_name: GATE_REASON_NAMES[outcome.reason], off_above: outcome.offAbove, drafts };
}

/** The client side of the mapping (Node clients over gRPC and HTTP). */
export function messageFromBatch(batch: StepBatch): StepRequestMessage {
  const requests: RequestDeltaMessage[] = [];
  let offset = 0;
  for (let i = 0; i < batch.reqIds.length; i++) {
    const count = batch.counts[i];
    const tokens = Array.prototype.slice.call(batch.tokens, offset, offset + count) as number[];
    offset += count;
    const delta: RequestDeltaMessage = { req_id: batch.reqIds[i], start: batch.starts[i], tokens };
    if (batch.promptLengths[i] !== NO_PROMPT) delta.prompt_len = batch.promptLengths[i];
    const remaining = batch.remaining?.[i] ?? 0;
    if (remaining > 0) delta.remaining = remaining;
    requests.push(delta);
  }
  const message: StepRequestMessage = {
    engine_id: batch.engineId,
    step_id: batch.stepId.toString(),
    num_reqs: batch.numReqs,
    prefill: batch.prefill,
    k: batch.k,
    requests,
    finished_req_ids: [...batch.finished],
  };
  const timing = batch.timing;
  if (timing !== undefined) message.timing = { step_us: timing.stepUs, step_reqs: timing.stepReqs, verified_slots: timing.verifiedSlots, had_prefill: timing.hadPrefill };
  return message;
}

export function outcomeFromMessage(message: { step_id: Uint64Like; speculate?: boolean; reason?: number; off_above?: number; drafts?: Array<Partial<DraftMessage>> }): StepOutcome {
  const drafts = message.drafts ?? [];
  const statuses = new Uint8Array(drafts.length);
  const draftLengths = new Uint8Array(drafts.length);
  const flat: number[] = [];
  const errors: Array<{ index: number; code: ErrorCode; message: string }> = [];
  drafts.forEach((draft, i) => {
    statuses[i] = draft.status ?? ItemStatus.OK;
    const tokens = draft.tokens ?? [];
    draftLengths[i] = tokens.length;
    for (const t of tokens) flat.push(t);
    if (draft.error_code) errors.push({ index: i, code: draft.error_code as ErrorCode, message: draft.error_message ?? '' });
  });
  return {
    stepId: toUint64(message.step_id, 'step_id'),
    speculate: message.speculate ?? false,
    reason: (message.reason ?? 0) as GateReason,
    offAbove: message.off_above ?? 0,
    statuses,
    draftLengths,
    drafts: Int32Array.from(flat),
    errors,
  };
}

/** What the sidecar holds and has done: the JSON of /v1/stats, and the gRPC Stats reply mapped below. */
export interface SidecarStats extends ServiceStats {
  steps: number;
  duplicateSteps: number;
  drafts: number;
  draftTokens: number;
  acceptedTokens: number;
  acceptedPerPos: number[];
  evictedIdle: number;
  evictedForMemory: number;
  /** Gate decisions by reason name (the reasons that occurred). */
  decisions: Record<string, number>;
  /** Each engine's gate, the most recently seen first. */
  gates: GateView[];
}

export function sidecarStats(stats: ServiceStats, counters: StepCounters, gates: GateView[]): SidecarStats {
  const decisions: Record<string, number> = {};
  counters.decisions.forEach((count, reason) => {
    if (count > 0) decisions[GATE_REASON_NAMES[reason]] = count;
  });
  return {
    ...stats,
    steps: counters.steps,
    duplicateSteps: counters.duplicateSteps,
    drafts: counters.drafts,
    draftTokens: counters.draftTokens,
    acceptedTokens: counters.acceptedTokens,
    acceptedPerPos: Array.from(counters.acceptedPerPos),
    evictedIdle: counters.evictedIdle,
    evictedForMemory: counters.evictedForMemory,
    decisions,
    gates,
  };
}

/** SidecarStats field -> StatsResponse field (proto/sam_sidecar.proto). */
const STATS_FIELDS = [
  ['engines', 'engines'],
  ['requests', 'requests'],
  ['groups', 'groups'],
  ['historyGroups', 'history_groups'],
  ['historyTokens', 'history_tokens'],
  ['historyEvictions', 'history_evictions'],
  ['corpusTokens', 'corpus_tokens'],
  ['corpusBytes', 'corpus_memory_bytes'],
  ['tokensIndexed', 'tokens'],
  ['bytes', 'memory_bytes'],
  ['maxTokens', 'max_tokens'],
  ['steps', 'steps'],
  ['duplicateSteps', 'duplicate_steps'],
  ['drafts', 'drafts'],
  ['draftTokens', 'draft_tokens'],
  ['acceptedTokens', 'accepted_tokens'],
  ['evictedIdle', 'evicted_idle'],
  ['evictedForMemory', 'evicted_for_memory'],
  ['backlogTokens', 'backlog_tokens'],
  ['backlogRequests', 'backlog_requests'],
  ['accountedBytes', 'accounted_bytes'],
  ['maxBytes', 'max_bytes'],
] as const satisfies ReadonlyArray<readonly [Exclude<keyof SidecarStats, 'acceptedPerPos' | 'decisions' | 'gates'>, string]>;

export function statsToMessage(stats: SidecarStats): Record<string, unknown> {
  const message: Record<string, unknown> = {
    accepted_per_pos: stats.acceptedPerPos,
    decisions: stats.decisions,
    gates: stats.gates.map((gate) => ({
      engine: gate.engine,
      mode: gate.mode,
      mean_accepted: gate.meanAccepted,
      observations: gate.observations,
      break_even_batch: gate.breakEvenBatch,
      curve: gate.curve.map((p) => ({ up_to: p.upTo, batch: p.batch, plain_us: p.plainUs, per_slot_us: p.perSlotUs, plain_samples: p.plainSamples, draft_samples: p.draftSamples })),
    })),
  };
  for (const [field, wire] of STATS_FIELDS) message[wire] = stats[field];
  return message;
}

/** The reply of the gRPC Stats call as SidecarStats (uint64s arrive as Long objects). */
export function statsFromMessage(message: Record<string, unknown>): SidecarStats {
  const number = (value: unknown) => Number((value as Uint64Like | undefined)?.toString() ?? 0);
  const decisions: Record<string, number> = {};
  for (const [reason, count] of Object.entries((message.decisions as Record<string, Uint64Like> | undefined) ?? {})) decisions[reason] = number(count);
  const gates = ((message.gates as Array<Record<string, unknown>> | undefined) ?? []).map((gate) => ({
    engine: String(gate.engine ?? ''),
    mode: String(gate.mode ?? ''),
    meanAccepted: Number(gate.mean_accepted ?? 0),
    observations: number(gate.observations),
    breakEvenBatch: number(gate.break_even_batch),
    curve: ((gate.curve as Array<Record<string, unknown>> | undefined) ?? []).map((p) => ({
      upTo: number(p.up_to),
      batch: Number(p.batch ?? 0),
      plainUs: Number(p.plain_us ?? 0),
      perSlotUs: Number(p.per_slot_us ?? 0),
      plainSamples: number(p.plain_samples),
      draftSamples: number(p.draft_samples),
    })),
  }));
  const stats = { acceptedPerPos: ((message.accepted_per_pos as Uint64Like[] | undefined) ?? []).map((v) => Number(v.toString())), decisions, gates } as SidecarStats;
  for (const [field, wire] of STATS_FIELDS) stats[field] = number(message[wire]);
  return stats;
}
