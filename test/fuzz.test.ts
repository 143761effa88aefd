/**
 * Seeded, bounded fuzzing of both binary transports: valid Step messages, mutated. Whatever the
 * bytes, every call gets exactly one answer (a reply or a coded error of the catalogue), nothing
 * is INTERNAL, and the sidecar goes on serving correct drafts. Seeds are fixed so a failure
 * reproduces; FUZZ_RUNS raises the count for a longer local run.
 */
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FastLaneClient } from '../src/client/clients.js';
import { ErrorCodes } from '../src/core/errors.js';
import { NO_PROMPT, type StepBatch } from '../src/core/step-service.js';
import { decodeError, encodeStep, FrameKind, readHeader } from '../src/protocol/fast-lane.js';
import { SidecarService } from '../src/protocol/grpc-definitions.js';
import { messageFromBatch } from '../src/protocol/messages.js';
import { loadConfig } from '../src/server/config.js';
import { startSidecar, type Sidecar } from '../src/server/sidecar.js';
import { draftLists, PROMPT } from './helpers.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 400);
const HEADER = 12; // length prefix, magic, version, kind, call id: kept, so each answer can be matched to its call

/** A valid step of 1 to 6 requests: full contexts, deltas, chunks with `remaining`, a timing block. */
const validBatch = fc
  .record({
    engine: fc.constantFrom('fuzz-a', 'fuzz-b'),
    stepId: fc.bigInt({ min: 1n, max: 1n << 40n }),
    k: fc.integer({ min: 0, max: 8 }),
    timing: fc.boolean(),
    items: fc.array(
      fc.record({
        id: fc.constantFrom('r0', 'r1', 'r2', 'r3'),
        tokens: fc.array(fc.integer({ min: 0, max: 50 }), { minLength: 1, maxLength: 24 }),
        full: fc.boolean(),
        remaining: fc.constantFrom(0, 0, 5),
        start: fc.integer({ min: 0, max: 30 }),
      }),
      { minLength: 1, maxLength: 6 },
    ),
  })
  .map(({ engine, stepId, k, timing, items }): StepBatch => ({
    engineId: engine,
    stepId,
    numReqs: items.length,
    prefill: false,
    k,
    reqIds: items.map((item) => item.id),
    starts: items.map((item) => (item.full ? 0 : item.start)),
    counts: items.map((item) => item.tokens.length),
    promptLengths: items.map((item) => (item.full ? Math.min(2, item.tokens.length) : NO_PROMPT)),
    remaining: items.map((item) => item.remaining),
    tokens: items.flatMap((item) => item.tokens),
    finished: [],
    ...(timing ? { timing: { stepUs: 20_000, stepReqs: items.length, verifiedSlots: 3, hadPrefill: false } } : {}),
  }));

/** Byte-level mutations of a message: flips, overwrites with extreme values, cuts and insertions. */
const mutations = fc.array(
  fc.oneof(
    fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
    fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.constantFrom(0, 0xff, 0x7f, 0x80, 1) }),
    fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
    fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
  ),
  { minLength: 1, maxLength: 6 },
);

function mutate(body: Buffer, steps: ReadonlyArray<{ kind: string; at: number; bit?: number; value?: number; bytes?: Uint8Array }>): Buffer {
  let out = Buffer.from(body);
  for (const step of steps) {
    if (out.length === 0) break;
    const at = step.at % out.length;
    if (step.kind === 'flip') out[at] ^= 1 << step.bit!;
    else if (step.kind === 'set') out[at] = step.value!;
    else if (step.kind === 'cut') out = out.subarray(0, at);
    else out = Buffer.concat([out.subarray(0, at), Buffer.from(step.bytes!), out.subarray(at)]);
  }
  return out;
}

const codes = new Set(Object.keys(ErrorCodes));
let sidecar: Sidecar;

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sam-fuzz-'));
  sidecar = await startSidecar(
    loadConfig({ env: {}, file: null, overrides: { socket: join(dir, 'sidecar.sock'), http: { port: 0 }, log: { level: 'silent' }, shutdown: { drainMs: 0 }, warmUpSteps: 20 } }),
  );
});
afterAll(async () => {
  await sidecar?.close();
});

async function stillDrafts(engineId: string, stepId: bigint): Promise<void> {
  const client = await FastLaneClient.connect(sidecar.context.config.socket);
  try {
    const tokens = [...PROMPT, 1, 2, 3, 1, 2];
    const outcome = await client.step({ engineId, stepId, numReqs: 1, prefill: false, k: 3, reqIds: ['after'], starts: [0], counts: [tokens.length], promptLengths: [4], tokens, finished: [] });
    expect(draftLists(outcome)).toEqual([[3, 1, 2]]);
  } finally {
    await client.close();
  }
  expect(sidecar.context.service.counters.callErrors.get('INTERNAL')).toBeUndefined();
}

describe('fuzzing the fast lane (seeded)', () => {
  it('answers every mutated STEP frame exactly once, with a reply or a coded error, and keeps serving', async () => {
    const client = await FastLaneClient.connect(sidecar.context.config.socket);
    let callId = 0;
    let errors = 0;
    await fc.assert(
      fc.asyncProperty(validBatch, mutations, async (batch, steps) => {
        const valid = encodeStep(batch, ++callId);
        const body = mutate(valid.subarray(HEADER), steps);
        const frame = Buffer.concat([valid.subarray(0, HEADER), body]);
        frame.writeUInt32LE(frame.length - 4, 0); // the prefix says what follows: framing stays in step
        const reply = await client.raw(frame, callId);
        const { kind } = readHeader(reply);
        expect([FrameKind.STEP_REPLY, FrameKind.ERROR_REPLY]).toContain(kind);
        if (kind === FrameKind.ERROR_REPLY) {
          errors++;
          expect(codes.has(decodeError(reply).code)).toBe(true);
        }
      }),
      { numRuns: RUNS, seed: 20261202 },
    );
    await client.close();
    expect(errors).toBeGreaterThan(0); // the mutations do reach the decoder's checks
    await stillDrafts('fuzz-after-fast-lane', 1n);
  }, 120_000);
});

describe('fuzzing gRPC (seeded)', () => {
  it('answers every mutated StepRequest message with a response or a status carrying sam-error-code, never a bare INTERNAL', async () => {
    const Client = grpc.makeGenericClientConstructor({}, 'Fuzz');
    const client = new Client(`unix:${sidecar.context.config.grpc.socket}`, grpc.credentials.createInsecure());
    const step = SidecarService.Step;
    const call = (bytes: Buffer) =>
      new Promise<{ error: grpc.ServiceError | null }>((resolve) => {
        client.makeUnaryRequest(
          step.path,
          (value: Buffer) => value,
          (value: Buffer) => value,
          bytes,
          { deadline: Date.now() + 10_000 },
          (error: grpc.ServiceError | null) => resolve({ error }),
        );
      });
    let coded = 0;
    await fc.assert(
      fc.asyncProperty(validBatch, mutations, async (batch, steps) => {
        const bytes = mutate(step.requestSerialize(messageFromBatch(batch)), steps);
        const { error } = await call(bytes);
        if (error === null) return;
        const code = error.metadata.get('sam-error-code')[0];
        expect(code, `status ${error.code}: ${error.details}`).toBeDefined();
        expect(codes.has(String(code))).toBe(true);
        expect(error.code).not.toBe(grpc.status.INTERNAL);
        coded++;
      }),
      { numRuns: RUNS, seed: 20261203 },
    );
    expect(coded).toBeGreaterThan(0);
    // Garbage that is no protobuf at all: coded, not INTERNAL.
    const { error } = await call(Buffer.from([0x12, 0x05, 0x01])); // field 2 says 5 bytes follow; 1 does
    expect(error?.metadata.get('sam-error-code')).toEqual(['MALFORMED_MESSAGE']);
    client.close();
    await stillDrafts('fuzz-after-grpc', 1n);
  }, 120_000);
});
