import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GateReason } from '../src/core/gate.js';
import { NO_PROMPT, type StepBatch, type StepOutcome } from '../src/core/step-service.js';
import { decodeStep, decodeStepReply, encodeStep, encodeStepReply, FrameSplitter, IdBlockCache } from '../src/protocol/fast-lane.js';

const sample: StepBatch = {
  engineId: 'node-3/dp0',
  stepId: 2n ** 63n + 5n,
  numReqs: 130,
  prefill: true,
  k: 4,
  reqIds: ['chatcmpl-α', 'b'],
  starts: [0, 17],
  counts: [3, 1],
  promptLengths: [2, NO_PROMPT],
  tokens: [151643, 7, 8, 4_000_000_000],
  finished: ['gone-1', 'gone-2'],
};

describe('fast-lane frames', () => {
  it('round-trips a step, with unicode ids, 64-bit step ids and full-range token ids', () => {
    const decoded = decodeStep(encodeStep(sample, 3));
    expect({ ...decoded, starts: Array.from(decoded.starts), counts: Array.from(decoded.counts), promptLengths: Array.from(decoded.promptLengths), tokens: Array.from(decoded.tokens) }).toEqual(sample);
  });

  it('carries the runner\'s timing of the step before (flag bit 1), and refuses flag bits it does not know', () => {
    const timed = { ...sample, timing: { stepUs: 41_250, stepReqs: 130, verifiedSlots: 388, hadPrefill: false } };
    const frame = encodeStep(timed, 3);
    expect(decodeStep(frame).timing).toEqual(timed.timing);
    expect(decodeStep(encodeStep(sample, 3)).timing).toBeUndefined();
    const flagsAt = 4 + 8 + 8 + 4 + 2; // length prefix, header, step id, num_reqs, k
    expect(frame[flagsAt]).toBe(1 | 2);
    frame[flagsAt] |= 0x80;
    expect(() => decodeStep(frame)).toThrowError(expect.objectContaining({ code: 'MALFORMED_FRAME', field: 'flags' }));
  });

  it('carries what remains of chunked contexts (flag bit 2) only when some is above 0', () => {
    const chunked = { ...sample, remaining: [900, 0] };
    const frame = encodeStep(chunked, 3);
    expect(Array.from(decodeStep(frame).remaining!)).toEqual([900, 0]);
    expect(frame[4 + 8 + 8 + 4 + 2] & 4).toBe(4);
    expect(decodeStep(encodeStep({ ...sample, remaining: [0, 0] }, 3)).remaining).toBeUndefined();
    expect(encodeStep({ ...sample, remaining: [0, 0] }, 3)).toEqual(encodeStep(sample, 3));
  });

  it('reuses the request-id strings of a connection\'s last step only when the ids are byte-identical', () => {
    const cache = new IdBlockCache();
    const first = decodeStep(encodeStep(sample, 1), cache).reqIds;
    expect(decodeStep(encodeStep({ ...sample, stepId: 9n }, 2), cache).reqIds).toBe(first);
    // Same bytes, split differently; then other bytes of the same length.
    const regrouped = decodeStep(encodeStep({ ...sample, reqIds: ['chatcmpl-', 'αb'] }, 3), cache).reqIds;
    expect(regrouped).toEqual(['chatcmpl-', 'αb']);
    expect(decodeStep(encodeStep({ ...sample, reqIds: ['chatcmpl-β', 'c'] }, 4), cache).reqIds).toEqual(['chatcmpl-β', 'c']);
  });

  it('round-trips a reply, per-item errors included', () => {
    const outcome: StepOutcome = {
      stepId: 9n,
      speculate: true,
      reason: GateReason.PREFILL,
      offAbove: 32,
      statuses: Uint8Array.from([0, 1, 0]),
      draftLengths: Uint8Array.from([2, 0, 1]),
      drafts: Int32Array.from([5, 6, 7]),
      errors: [{ index: 1, code: 'TOKEN_GAP', message: 'gap' }],
    };
    expect(decodeStepReply(encodeStepReply(outcome, 1))).toEqual(outcome);
  });

  it('reassembles frames from any split of the byte stream', () => {
    const frames = [encodeStep(sample, 1), encodeStep({ ...sample, reqIds: ['x', 'y'] }, 2), encodeStep(sample, 3)];
    const stream = Buffer.concat(frames);
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: stream.length - 1 }), { maxLength: 12 }), (cuts) => {
        const seen: Buffer[] = [];
        const splitter = new FrameSplitter(1 << 20, (f) => seen.push(Buffer.from(f)), () => expect.unreachable());
        let at = 0;
        for (const cut of [...cuts.sort((a, b) => a - b), stream.length]) {
          splitter.push(stream.subarray(at, cut));
          at = cut;
        }
        expect(seen).toEqual(frames);
      }),
    );
  });

  it('frames in linear time however the stream is cut: a 16 MiB frame whose first chunk is 4 bytes costs what it costs cut at 16', () => {
    const size = 16 * 1024 * 1024;
    const frame = Buffer.alloc(size + 4);
    frame.writeUInt32LE(size, 0);
    const time = (firstChunk: number) => {
      let framed = 0;
      const splitter = new FrameSplitter(64 * 1024 * 1024, (f) => (framed = f.length), () => {});
      const started = process.hrtime.bigint();
      splitter.push(frame.subarray(0, firstChunk));
      for (let at = firstChunk; at < frame.length; at += 16 * 1024) splitter.push(frame.subarray(at, Math.min(frame.length, at + 16 * 1024)));
      expect(framed).toBe(size + 4);
      return Number(process.hrtime.bigint() - started) / 1e6;
    };
    time(16); // warm
    const cutAt16 = Math.min(time(16), time(16));
    const cutAt4 = Math.min(time(4), time(4));
    // Re-copying the buffered bytes at every chunk (quadratic) took seconds here; linear is tens of ms.
    expect(cutAt4).toBeLessThan(3 * cutAt16 + 100);
  });

  it('skips an oversized frame, reporting its call id, and carries on with the next one', () => {
    const big = encodeStep({ ...sample, tokens: Array(300).fill(1), counts: [299, 1] }, 77);
    const small = encodeStep(sample, 78);
    const seen: number[] = [];
    const oversized: number[] = [];
    const splitter = new FrameSplitter(500, (f) => seen.push(f.readUInt32LE(8)), (_length, callId) => oversized.push(callId));
    const stream = Buffer.concat([big, small]);
    for (let i = 0; i < stream.length; i += 100) splitter.push(stream.subarray(i, i + 100));
    expect(oversized).toEqual([77]);
    expect(seen).toEqual([78]);
  });
});
