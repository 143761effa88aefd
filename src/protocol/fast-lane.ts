/**
 * Fast-lane frames: length-prefixed binary messages over a Unix domain socket, little-endian.
 * The layout is specified in proto/fast-lane.md; this module is its one implementation in
 * TypeScript (server and Node client), python/src/sam_sidecar/wire.py the one in Python.
 *
 * Every frame: u32 length of what follows, then the 8-byte header
 *   u16 magic 0x5341 ("SA" little-endian), u8 version, u8 kind, u32 call id (echoed in the reply)
 * then the body of its kind. Arrays of u32 come first and the token array starts 4-aligned, so
 * both ends copy whole arrays instead of walking fields.
 */
import { sidecarError, SidecarError } from '../core/errors.js';
import { NO_PROMPT, type StepBatch, type StepOutcome } from '../core/step-service.js';
import type { GateReason, StepTiming } from '../core/gate.js';

export const MAGIC = 0x5341;
export const VERSION = 1;
export const FRAME_PREFIX = 4;
export const HEADER_BYTES = 8;

export const FrameKind = {
  STEP: 1,
  STEP_REPLY: 2,
  RELEASE: 3,
  RELEASE_REPLY: 4,
  ERROR_REPLY: 5,
  PING: 6,
  PONG: 7,
} as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];

const STEP_FIXED = 32;
/** STEP flags: bit 0 prefill step; bit 1 a STEP_TIMING block follows the fixed part. */
const STEP_FLAG_PREFILL = 1;
const STEP_FLAG_TIMING = 2;
/** A `u32 remaining[n]` column follows prompt_lens (a long context sent in chunks). */
const STEP_FLAG_REMAINING = 4;
const STEP_FLAGS_KNOWN = STEP_FLAG_PREFILL | STEP_FLAG_TIMING | STEP_FLAG_REMAINING;
/** u32 step_us, u32 step_reqs, u32 verified_slots, u32 flags (bit 0: the step had prefill). */
const STEP_TIMING = 16;
const REPLY_FIXED = 28;

export interface FrameHeader {
  kind: number;
  callId: number;
}

export interface ErrorReply {
  code: string;
  field: string | null;
  message: string;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Reads and checks the header of a complete frame (frame starts with its length prefix). */
export function readHeader(frame: Buffer): FrameHeader {
  if (frame.length < FRAME_PREFIX + HEADER_BYTES) throw sidecarError('MALFORMED_FRAME', `frame of ${frame.length} bytes is shorter than its header`, 'header');
  const callId = frame.readUInt32LE(8);
  if (frame.readUInt16LE(4) !== MAGIC) throw sidecarError('MALFORMED_FRAME', `bad magic 0x${frame.readUInt16LE(4).toString(16)}`, 'magic');
  const version = frame.readUInt8(6);
  if (version !== VERSION) throw sidecarError('UNSUPPORTED_VERSION', `version ${version}, this sidecar speaks ${VERSION}`, 'version');
  return { kind: frame.readUInt8(7), callId };
}

function writeHeader(frame: Buffer, kind: FrameKind, callId: number): void {
  frame.writeUInt32LE(frame.length - FRAME_PREFIX, 0);
  frame.writeUInt16LE(MAGIC, 4);
  frame.writeUInt8(VERSION, 6);
  frame.writeUInt8(kind, 7);
  frame.writeUInt32LE(callId >>> 0, 8);
}

/** Bounds-checked reader over one frame; every overrun is a MALFORMED_FRAME naming the field. */
class FrameReader {
  offset = FRAME_PREFIX + HEADER_BYTES;
  constructor(readonly frame: Buffer) {}
  need(bytes: number, field: string): void {
    if (this.offset + bytes > this.frame.length) {
      throw sidecarError('MALFORMED_FRAME', `frame ends at byte ${this.frame.length}, ${field} needs ${bytes} bytes from ${this.offset}`, field);
    }
  }
  u8(field: string): number {
    this.need(1, field);
    return this.frame.readUInt8(this.offset++);
  }
  u16(field: string): number {
    this.need(2, field);
    const v = this.frame.readUInt16LE(this.offset);
    this.offset += 2;
    return v;
  }
  u32(field: string): number {
    this.need(4, field);
    const v = this.frame.readUInt32LE(this.offset);
    this.offset += 4;
    return v;
  }
  u64(field: string): bigint {
    this.need(8, field);
    const v = this.frame.readBigUInt64LE(this.offset);
    this.offset += 8;
    return v;
  }
  /** count u32 values: a view of the frame where it is 4-aligned in memory, else an aligned copy. */
  u32s(count: number, field: string): Uint32Array {
    this.need(count * 4, field);
    const at = this.frame.byteOffset + this.offset;
    let out: Uint32Array;
    if (at % 4 === 0) {
      out = new Uint32Array(this.frame.buffer, at, count);
    } else {
      out = new Uint32Array(count);
      new Uint8Array(out.buffer).set(this.frame.subarray(this.offset, this.offset + count * 4));
    }
    this.offset += count * 4;
    return out;
  }
  /** Skips `bytes` bytes (a column read later in place); returns where they start. */
  skip(bytes: number, field: string): number {
    this.need(bytes, field);
    const at = this.offset;
    this.offset += bytes;
    return at;
  }
  bytes(count: number, field: string): Buffer {
    this.need(count, field);
    const out = this.frame.subarray(this.offset, this.offset + count);
    this.offset += count;
    return out;
  }
  /**
   * `count` consecutive strings whose u16 byte lengths are at `lengthsAt` (request ids). The usual
   * all-ASCII block is decoded with one native call and sliced in JS: a native call per id costs
   * more than the ids' bytes. With a cache, a block equal to the last one reuses its strings.
   */
  strings(lengthsAt: number, count: number, field: string, cache?: IdBlockCache): string[] {
    const frame = this.frame;
    let total = 0;
    for (let i = 0; i < count; i++) total += frame.readUInt16LE(lengthsAt + 2 * i);
    this.need(total, field);
    const start = this.offset;
    const cached = cache?.find(frame, lengthsAt, start, start + total);
    if (cached !== undefined) {
      this.offset += total;
      return cached;
    }
    const out = new Array<string>(count);
    if (isAscii(frame, start, start + total)) {
      const block = frame.toString('latin1', start, start + total);
      let at = 0;
      for (let i = 0; i < count; i++) {
        const length = frame.readUInt16LE(lengthsAt + 2 * i);
        out[i] = block.substring(at, at + length);
        at += length;
      }
      this.offset += total;
    } else {
      for (let i = 0; i < count; i++) out[i] = this.text(frame.readUInt16LE(lengthsAt + 2 * i), `${field}[${i}]`);
    }
    cache?.store(frame, lengthsAt, start, start + total, out);
    return out;
  }
  text(count: number, field: string): string {
    this.need(count, field);
    const start = this.offset;
    this.offset += count;
    // Request ids are ASCII in practice: latin1 is the fast path, and equals UTF-8 for ASCII.
    if (isAscii(this.frame, start, start + count)) return this.frame.toString('latin1', start, start + count);
    try {
      return utf8.decode(this.frame.subarray(start, start + count));
    } catch {
      throw sidecarError('MALFORMED_FRAME', 'not valid UTF-8', field);
    }
  }
  align4(): void {
    this.offset = (this.offset + 3) & ~3;
  }
  end(): void {
    if (this.offset !== this.frame.length) throw sidecarError('MALFORMED_FRAME', `${this.frame.length - this.offset} bytes after the body`, 'length');
  }
}

// ------------------------------------------------------------------ STEP

/**
 * The request ids of a connection's last step. Decode steps usually repeat the batch row for row;
 * then the ids' bytes are identical and their strings are reused, hashes already computed for the
 * lookups every step makes. The returned array is shared: callers must not modify it.
 */
export class IdBlockCache {
  private lengths: Buffer | null = null;
  private text: Buffer | null = null;
  private ids: string[] = [];

  find(frame: Buffer, lengthsAt: number, from: number, to: number): string[] | undefined {
    const { lengths, text } = this;
    if (lengths === null || text === null) return undefined;
    if (to - from !== text.length || 2 * this.ids.length !== lengths.length) return undefined;
    if (frame.compare(lengths, 0, lengths.length, lengthsAt, lengthsAt + lengths.length) !== 0) return undefined;
    if (frame.compare(text, 0, text.length, from, to) !== 0) return undefined;
    return this.ids;
  }

  store(frame: Buffer, lengthsAt: number, from: number, to: number, ids: string[]): void {
    this.lengths = Buffer.from(frame.subarray(lengthsAt, lengthsAt + 2 * ids.length));
    this.text = Buffer.from(frame.subarray(from, to));
    this.ids = ids;
  }
}

export function decodeStep(frame: Buffer, idCache?: IdBlockCache): StepBatch {
  const r = new FrameReader(frame);
  const stepId = r.u64('step_id');
  const numReqs = r.u32('num_reqs');
  const k = r.u16('k');
  const flags = r.u8('flags');
  r.u8('reserved');
  const n = r.u32('n_items');
  const nFinished = r.u32('n_finished');
  const totalTokens = r.u32('n_tokens');
  const engineBytes = r.u16('engine_id_bytes');
  r.u16('reserved');
  // An unknown bit could announce a block this build would misread: refused, not guessed at.
  if ((flags & ~STEP_FLAGS_KNOWN) !== 0) throw sidecarError('MALFORMED_FRAME', `unknown flag bits 0x${(flags & ~STEP_FLAGS_KNOWN).toString(16)}`, 'flags');
  let timing: StepTiming | undefined;
  if ((flags & STEP_FLAG_TIMING) !== 0) {
    timing = { stepUs: r.u32('timing.step_us'), stepReqs: r.u32('timing.step_reqs'), verifiedSlots: r.u32('timing.verified_slots'), hadPrefill: (r.u32('timing.flags') & 1) !== 0 };
  }
  // Sizes are checked against the frame before any array is allocated.
  const withRemaining = (flags & STEP_FLAG_REMAINING) !== 0;
  r.need(n * (withRemaining ? 18 : 14) + nFinished * 2 + engineBytes + totalTokens * 4, 'items');
  const starts = r.u32s(n, 'starts');
  const counts = r.u32s(n, 'counts');
  const promptLengths = r.u32s(n, 'prompt_lens');
  const remaining = withRemaining ? r.u32s(n, 'remaining') : undefined;
  const idLengthsAt = r.skip(2 * n, 'req_id_bytes');
  const finishedLengthsAt = r.skip(2 * nFinished, 'finished_id_bytes');
  const engineId = r.text(engineBytes, 'engine_id');
  const reqIds = r.strings(idLengthsAt, n, 'req_ids', idCache);
  const finished = r.strings(finishedLengthsAt, nFinished, 'finished_ids');
  r.align4();
  const tokens = r.u32s(totalTokens, 'tokens');
  r.end();
  const batch: StepBatch = { engineId, stepId, numReqs, prefill: (flags & STEP_FLAG_PREFILL) !== 0, k, reqIds, starts, counts, promptLengths, tokens, finished };
  if (timing !== undefined) batch.timing = timing;
  if (remaining !== undefined) batch.remaining = remaining;
  return batch;
}

/** Encodes a step (the Node client's side; the Python shim builds the same bytes). */
export function encodeStep(batch: StepBatch, callId: number): Buffer {
  const n = batch.reqIds.length;
  const engine = Buffer.from(batch.engineId, 'utf8');
  const ids = batch.reqIds.map((id) => Buffer.from(id, 'utf8'));
  const finished = batch.finished.map((id) => Buffer.from(id, 'utf8'));
  const textBytes = engine.length + sum(ids) + sum(finished);
  const timing = batch.timing;
  const remaining = batch.remaining !== undefined && Array.prototype.some.call(batch.remaining, (count: number) => count > 0) ? batch.remaining : undefined;
  const columns = remaining === undefined ? [batch.starts, batch.counts, batch.promptLengths] : [batch.starts, batch.counts, batch.promptLengths, remaining];
  const beforeTokens = FRAME_PREFIX + HEADER_BYTES + STEP_FIXED + (timing === undefined ? 0 : STEP_TIMING) + n * (columns.length * 4 + 2) + finished.length * 2 + textBytes;
  const tokensAt = (beforeTokens + 3) & ~3;
  const frame = Buffer.alloc(tokensAt + batch.tokens.length * 4);
  writeHeader(frame, FrameKind.STEP, callId);
  let o = FRAME_PREFIX + HEADER_BYTES;
  o = frame.writeBigUInt64LE(batch.stepId, o);
  o = frame.writeUInt32LE(batch.numReqs, o);
  o = frame.writeUInt16LE(batch.k, o);
  o = frame.writeUInt8((batch.prefill ? STEP_FLAG_PREFILL : 0) | (timing === undefined ? 0 : STEP_FLAG_TIMING) | (remaining === undefined ? 0 : STEP_FLAG_REMAINING), o);
  o = frame.writeUInt8(0, o);
  o = frame.writeUInt32LE(n, o);
  o = frame.writeUInt32LE(finished.length, o);
  o = frame.writeUInt32LE(batch.tokens.length, o);
  o = frame.writeUInt16LE(engine.length, o);
  o = frame.writeUInt16LE(0, o);
  if (timing !== undefined) {
    o = frame.writeUInt32LE(timing.stepUs >>> 0, o);
    o = frame.writeUInt32LE(timing.stepReqs >>> 0, o);
    o = frame.writeUInt32LE(timing.verifiedSlots >>> 0, o);
    o = frame.writeUInt32LE(timing.hadPrefill ? 1 : 0, o);
  }
  for (const column of columns) for (let i = 0; i < n; i++) o = frame.writeUInt32LE(column[i] >>> 0, o);
  for (const id of ids) o = frame.writeUInt16LE(id.length, o);
  for (const id of finished) o = frame.writeUInt16LE(id.length, o);
  for (const text of [engine, ...ids, ...finished]) o += text.copy(frame, o);
  o = tokensAt;
  for (let i = 0; i < batch.tokens.length; i++) o = frame.writeUInt32LE(batch.tokens[i] >>> 0, o);
  return frame;
}

// ------------------------------------------------------------------ STEP_REPLY

export function encodeStepReply(outcome: StepOutcome, callId: number): Buffer {
  const n = outcome.statuses.length;
  const errors = outcome.errors.length > 0 ? Buffer.from(JSON.stringify(outcome.errors), 'utf8') : Buffer.alloc(0);
  const draftsAt = (FRAME_PREFIX + HEADER_BYTES + REPLY_FIXED + 2 * n + 3) & ~3;
  const frame = Buffer.allocUnsafe(draftsAt + outcome.drafts.length * 4 + errors.length);
  writeHeader(frame, FrameKind.STEP_REPLY, callId);
  let o = FRAME_PREFIX + HEADER_BYTES;
  o = frame.writeBigUInt64LE(outcome.stepId, o);
  o = frame.writeUInt8(outcome.speculate ? 1 : 0, o);
  o = frame.writeUInt8(outcome.reason, o);
  o = frame.writeUInt16LE(0, o);
  o = frame.writeUInt32LE(n, o);
  o = frame.writeUInt32LE(outcome.drafts.length, o);
  o = frame.writeUInt32LE(errors.length, o);
  o = frame.writeUInt32LE(outcome.offAbove, o);
  frame.set(outcome.statuses, o);
  frame.set(outcome.draftLengths, o + n);
  frame.fill(0, o + 2 * n, draftsAt);
  frame.set(new Uint8Array(outcome.drafts.buffer, outcome.drafts.byteOffset, outcome.drafts.byteLength), draftsAt);
  errors.copy(frame, draftsAt + outcome.drafts.byteLength);
  return frame;
}

export function decodeStepReply(frame: Buffer): StepOutcome {
  const r = new FrameReader(frame);
  const stepId = r.u64('step_id');
  const speculate = r.u8('speculate') === 1;
  const reason = r.u8('reason') as GateReason;
  r.u16('reserved');
  const n = r.u32('n_items');
  const totalDrafts = r.u32('n_draft_tokens');
  const errorBytes = r.u32('error_bytes');
  const offAbove = r.u32('off_above');
  const statuses = Uint8Array.from(r.bytes(n, 'statuses'));
  const draftLengths = Uint8Array.from(r.bytes(n, 'draft_lengths'));
  r.align4();
  const raw = r.u32s(totalDrafts, 'drafts');
  const drafts = new Int32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength)); // owned, not a view of the frame
  const errors = errorBytes > 0 ? JSON.parse(r.text(errorBytes, 'errors')) : [];
  r.end();
  return { stepId, speculate, reason, offAbove, statuses, draftLengths, drafts, errors };
}

// ------------------------------------------------------------------ RELEASE, PING, ERROR_REPLY

export function decodeRelease(frame: Buffer): { engineId: string; reqIds: string[] } {
  const r = new FrameReader(frame);
  const n = r.u32('n_items');
  const engineBytes = r.u16('engine_id_bytes');
  r.need(n * 2 + engineBytes, 'req_ids');
  const lengthsAt = r.skip(2 * n, 'req_id_bytes');
  const engineId = r.text(engineBytes, 'engine_id');
  const reqIds = r.strings(lengthsAt, n, 'req_ids');
  r.end();
  return { engineId, reqIds };
}

export function encodeRelease(engineId: string, reqIds: readonly string[], callId: number): Buffer {
  const engine = Buffer.from(engineId, 'utf8');
  const ids = reqIds.map((id) => Buffer.from(id, 'utf8'));
  const frame = Buffer.alloc(FRAME_PREFIX + HEADER_BYTES + 6 + 2 * ids.length + engine.length + sum(ids));
  writeHeader(frame, FrameKind.RELEASE, callId);
  let o = frame.writeUInt32LE(ids.length, FRAME_PREFIX + HEADER_BYTES);
  o = frame.writeUInt16LE(engine.length, o);
  for (const id of ids) o = frame.writeUInt16LE(id.length, o);
  for (const text of [engine, ...ids]) o += text.copy(frame, o);
  return frame;
}

export function encodeCount(kind: FrameKind, count: number, callId: number): Buffer {
  const frame = Buffer.alloc(FRAME_PREFIX + HEADER_BYTES + 4);
  writeHeader(frame, kind, callId);
  frame.writeUInt32LE(count, FRAME_PREFIX + HEADER_BYTES);
  return frame;
}

export function decodeCount(frame: Buffer): number {
  const r = new FrameReader(frame);
  const count = r.u32('count');
  r.end();
  return count;
}

export function encodeEmpty(kind: FrameKind, callId: number): Buffer {
  const frame = Buffer.alloc(FRAME_PREFIX + HEADER_BYTES);
  writeHeader(frame, kind, callId);
  return frame;
}

export function encodeError(error: SidecarError, callId: number): Buffer {
  const body = Buffer.from(JSON.stringify(error.toJSON()), 'utf8');
  const frame = Buffer.alloc(FRAME_PREFIX + HEADER_BYTES + body.length);
  writeHeader(frame, FrameKind.ERROR_REPLY, callId);
  body.copy(frame, FRAME_PREFIX + HEADER_BYTES);
  return frame;
}

export function decodeError(frame: Buffer): ErrorReply {
  const r = new FrameReader(frame);
  return JSON.parse(r.text(frame.length - r.offset, 'error')) as ErrorReply;
}

/**
 * Splits a byte stream into frames. Frames larger than `maxFrameBytes` are reported through
 * `onOversized` (with the call id when the header arrived) and their bytes skipped, so one bad
 * message does not end the connection.
 */
/** A frame at least this long is gathered into its own buffer chunk by chunk as it arrives. */
const GATHER_FROM_BYTES = 1 << 20;

export class FrameSplitter {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private skipping = 0;
  /** The length field of the frame being gathered, once its header has been read; -1 before. */
  private frameLength = -1;
  /**
   * A large frame's buffer, filled as its chunks arrive: copying (and, on some machines, faulting
   * in) tens of megabytes at once when the last chunk lands would hold the event loop.
   */
  private gathering: Buffer | null = null;
  private gathered = 0;

  constructor(
    private readonly maxFrameBytes: number,
    private readonly onFrame: (frame: Buffer) => void,
    private readonly onOversized: (length: number, callId: number) => void,
  ) {}

  push(chunk: Buffer): void {
    if (this.skipping > 0) {
      const skipped = Math.min(this.skipping, chunk.length);
      this.skipping -= skipped;
      chunk = chunk.subarray(skipped);
      if (chunk.length === 0) return;
    }
    const gathering = this.gathering;
    if (gathering !== null) {
      const n = Math.min(gathering.length - this.gathered, chunk.length);
      chunk.copy(gathering, this.gathered, 0, n);
      this.gathered += n;
      this.buffered += n;
      if (this.gathered < gathering.length) return;
      this.gathering = null;
      this.buffered -= gathering.length;
      this.frameLength = -1;
      this.onFrame(gathering);
      if (n < chunk.length) this.push(chunk.subarray(n));
      return;
    }
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    // Each byte is looked at a bounded number of times, however the stream is cut: the header is
    // read once per frame (from at most its 16 bytes), and a frame is copied out once.
    while (this.buffered >= FRAME_PREFIX) {
      if (this.frameLength < 0) {
        const head = this.peek(FRAME_PREFIX + HEADER_BYTES);
        const length = head.readUInt32LE(0);
        if (length > this.maxFrameBytes) {
          if (head.length < FRAME_PREFIX + HEADER_BYTES && this.buffered < FRAME_PREFIX + HEADER_BYTES) return;
          this.onOversized(length, head.length >= FRAME_PREFIX + HEADER_BYTES ? head.readUInt32LE(8) : 0);
          this.skip(FRAME_PREFIX + length);
          continue;
        }
        this.frameLength = length;
      }
      if (this.buffered < FRAME_PREFIX + this.frameLength) {
        if (FRAME_PREFIX + this.frameLength >= GATHER_FROM_BYTES) this.startGathering();
        return;
      }
      const frame = this.take(FRAME_PREFIX + this.frameLength);
      this.frameLength = -1;
      this.onFrame(frame);
    }
  }

  /** Moves what is buffered of the current (large, incomplete) frame into its own buffer. */
  private startGathering(): void {
    const frame = Buffer.allocUnsafe(FRAME_PREFIX + this.frameLength);
    let at = 0;
    for (const chunk of this.chunks) at += chunk.copy(frame, at);
    this.chunks = [];
    this.gathering = frame;
    this.gathered = at;
  }

  /** Bytes held of frames not complete yet. */
  get pendingBytes(): number {
    return this.buffered;
  }

  /** Up to `bytes` bytes from the front (fewer if fewer are buffered), without consuming them. */
  private peek(bytes: number): Buffer {
    const first = this.chunks[0];
    if (first.length >= bytes || this.chunks.length === 1) return first;
    const head: Buffer[] = [];
    let have = 0;
    for (let i = 0; i < this.chunks.length && have < bytes; i++) {
      head.push(this.chunks[i]);
      have += this.chunks[i].length;
    }
    return Buffer.concat(head, Math.min(have, bytes));
  }

  /** The first `bytes` bytes, consumed: only the chunks they span are copied. */
  private take(bytes: number): Buffer {
    const first = this.chunks[0];
    this.buffered -= bytes;
    if (first.length >= bytes) {
      if (first.length === bytes) this.chunks.shift();
      else this.chunks[0] = first.subarray(bytes);
      return first.subarray(0, bytes);
    }
    const out = Buffer.allocUnsafe(bytes);
    let at = 0;
    let used = 0;
    while (at < bytes) {
      const chunk = this.chunks[used];
      const n = Math.min(chunk.length, bytes - at);
      chunk.copy(out, at, 0, n);
      at += n;
      if (n < chunk.length) {
        this.chunks[used] = chunk.subarray(n);
        break;
      }
      used++;
    }
    this.chunks.splice(0, used);
    return out;
  }

  private skip(bytes: number): void {
    const available = Math.min(bytes, this.buffered);
    if (available > 0) this.take(available);
    this.skipping = bytes - available;
  }
}

function isAscii(bytes: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (bytes[i] > 0x7f) return false;
  return true;
}

function sum(buffers: Buffer[]): number {
  let total = 0;
  for (const b of buffers) total += b.length;
  return total;
}

export { NO_PROMPT };
