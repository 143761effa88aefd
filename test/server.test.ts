/**
 * Integration: the real server (fast lane + gRPC over Unix sockets, HTTP on TCP) driven by real
 * clients of each transport.
 */
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { FastLaneClient, GrpcClient, HttpClient, type StepClient } from '../src/client/clients.js';
import { SidecarError } from '../src/core/errors.js';
import { GateReason } from '../src/core/gate.js';
import { ItemStatus } from '../src/core/step-service.js';
import { decodeError, decodeStepReply, encodeStep, FrameKind, readHeader } from '../src/protocol/fast-lane.js';
import { HealthService, SidecarService } from '../src/protocol/grpc-definitions.js';
import { batchFromMessage } from '../src/protocol/messages.js';
import { InProcessBackend } from '../src/replay/in-process.js';
import { replay } from '../src/replay/simulate.js';
import { syntheticTraces } from '../src/replay/synthetic.js';
import { WireBackend } from '../src/replay/wire.js';
import { packageVersion } from '../src/package-root.js';
import { loadConfig } from '../src/server/config.js';
import { PrefaultedArrays } from '../src/server/prefaulted-arrays.js';
import { startSidecar, type Sidecar } from '../src/server/sidecar.js';
import { draftLists, PROMPT, stepBatch } from './helpers.js';

const running: Sidecar[] = [];
const clients: StepClient[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await Promise.all(running.splice(0).map((s) => s.close()));
});

async function start(overrides: Record<string, unknown> = {}, dir = mkdtempSync(join(tmpdir(), 'sam-test-'))): Promise<Sidecar> {
  const config = loadConfig({
    env: {},
    file: null,
    overrides: { socket: join(dir, 'sidecar.sock'), http: { port: 0 }, log: { level: 'silent' }, shutdown: { drainMs: 0 }, warmUpSteps: 20, ...overrides },
  });
  const sidecar = await startSidecar(config);
  running.push(sidecar);
  return sidecar;
}

async function fastLane(sidecar: Sidecar): Promise<FastLaneClient> {
  const client = await FastLaneClient.connect(sidecar.context.config.socket);
  clients.push(client);
  return client;
}
function grpcClient(sidecar: Sidecar): GrpcClient {
  const client = new GrpcClient(`unix:${sidecar.context.config.grpc.socket}`);
  clients.push(client);
  return client;
}
function httpClient(sidecar: Sidecar): HttpClient {
  return new HttpClient(sidecar.http.address);
}

const prompt = PROMPT;
const batch = stepBatch;
const drafts = draftLists;

async function expectCode(promise: Promise<unknown>, code: string): Promise<SidecarError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(SidecarError);
  expect((error as SidecarError).code).toBe(code);
  return error as SidecarError;
}

describe('sidecar server', () => {
  it('serves the same drafts as the in-process core over the fast lane, gRPC and HTTP (same AL on a replay)', async () => {
    const rows = syntheticTraces({ groups: 3, samplesPerGroup: 4 });
    const reference = await replay(rows, new InProcessBackend({}), { k: 3, siblings: 'live' });
    for (const via of ['uds', 'grpc', 'http'] as const) {
      const sidecar = await start();
      const client = via === 'uds' ? await fastLane(sidecar) : via === 'grpc' ? grpcClient(sidecar) : httpClient(sidecar);
      const result = await replay(rows, new WireBackend(client), { k: 3, siblings: 'live' });
      expect({ via, al: result.al, accepted: result.acceptedPerPos, steps: result.steps }).toEqual({
        via,
        al: reference.al,
        accepted: reference.acceptedPerPos,
        steps: reference.steps,
      });
    }
  });

  it('learns the same step cost and decides the same through the fast lane, gRPC and HTTP (calibrated gate, timed steps)', async () => {
    // Steps of 4, 40 and 120 requests in turn, each carrying the timing of the step before it.
    const timedSteps = (engineId: string) => {
      const held = new Map<string, number>();
      return Array.from({ length: 120 }, (_, i) => {
        const size = [4, 40, 120][i % 3];
        const items = Array.from({ length: size }, (_, r) => {
          const id = `r${r}`;
          const length = held.get(id);
          held.set(id, (length ?? 4) + 1);
          return length === undefined ? { id, tokens: [...prompt, r % 7], prompt: 4 } : { id, start: length, tokens: [(i + r) % 7] };
        });
        const timing = { stepUs: 20_000 + 100 * size + 50 * size * (i % 5), stepReqs: size, verifiedSlots: i % 2 === 0 ? 0 : size * (i % 5), hadPrefill: i < 3 };
        return { ...batch(items, { stepId: BigInt(i + 1), k: 3, numReqs: size }), engineId, timing };
      });
    };
    const decisions: Record<string, unknown> = {};
    for (const via of ['uds', 'grpc', 'http'] as const) {
      const sidecar = await start({ gate: { mode: 'calibrated', minObservations: 0 } });
      const client = via === 'uds' ? await fastLane(sidecar) : via === 'grpc' ? grpcClient(sidecar) : httpClient(sidecar);
      const reasons: number[] = [];
      for (const step of timedSteps(`engine-${via}`)) {
        reasons.push((await client.step(step)).reason);
      }
      const [gate] = sidecar.context.service.gates();
      decisions[via] = { reasons, curve: gate.curve };
      expect(gate.curve.length).toBeGreaterThan(0);
      // The learnt curve, break-even size and decisions by reason are in /v1/stats (and gRPC Stats).
      const stats = (await (await fetch(`${sidecar.http.address}/v1/stats`)).json()) as { gates: Array<{ mode: string; curve: unknown[] }>; decisions: Record<string, number> };
      expect(stats.gates[0]).toMatchObject({ mode: 'calibrated', curve: gate.curve });
      expect(Object.values(stats.decisions).reduce((a, b) => a + b, 0)).toBe(120);
      await client.close();
    }
    expect(decisions.grpc).toEqual(decisions.uds);
    expect(decisions.http).toEqual(decisions.uds);
  });

  it('refuses a socket directory others may write to, or another user owns, and creates a missing one owner-only', async () => {
    const { chmodSync, statSync } = await import('node:fs');
    const open = mkdtempSync(join(tmpdir(), 'sam-open-'));
    chmodSync(open, 0o777); // as a squatter would leave it, or a shared /tmp subdirectory
    await expect(start({}, open)).rejects.toMatchObject({ code: 'SOCKET_DIR_UNSAFE', field: 'socket' });
    await expect(start({}, open)).rejects.toThrowError(/others may write to it \(mode 777\)/);
    const created = join(mkdtempSync(join(tmpdir(), 'sam-new-')), 'sub', 'dir');
    const sidecar = await start({ socket: join(created, 's.sock'), grpc: { socket: join(created, 's.sock.grpc') } });
    expect(statSync(created).mode & 0o777).toBe(0o750); // socketMode 660: the group may search it
    expect(sidecar.fastLane.socketProblem()).toBeNull();
    // A directory another user made first (uid 65534, "nobody"); only root can stage that here.
    if (process.getuid?.() !== 0) return;
    const { chownSync } = await import('node:fs');
    const squatted = mkdtempSync(join(tmpdir(), 'sam-squat-'));
    chownSync(squatted, 65534, 65534);
    await expect(start({}, squatted)).rejects.toThrowError(/belongs to uid 65534, not to this process/);
  });

  it('keeps the routes that change state or show requests\' text closed on a network host without a token, and behind it with one', async () => {
    const open = await start({ http: { host: '0.0.0.0', port: 0 } });
    const base = open.http.address.replace('0.0.0.0', '127.0.0.1');
    const step = { engine_id: 'e', step_id: 1, num_reqs: 1, k: 3, requests: [{ req_id: 'r', tokens: [...prompt, 1], prompt_len: 4 }] };
    const post = (url: string, body: unknown, headers: Record<string, string> = {}) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
    for (const response of [await post(`${base}/v1/step`, step), await fetch(`${base}/v1/engines/e/requests/r`), await fetch(`${base}/v1/config`)]) {
      expect(response.status).toBe(403);
      expect(((await response.json()) as { code: string }).code).toBe('FORBIDDEN');
    }
    // Probes, metrics and the aggregate stats stay open (kubelet, Prometheus).
    for (const path of ['/readyz', '/metrics', '/v1/stats']) expect((await fetch(`${base}${path}`)).status).toBe(200);
    const token = 'a-token-of-sixteen-or-more';
    const guarded = await start({ http: { host: '0.0.0.0', port: 0, token }, sharing: { redis: { url: 'redis://user:secret@127.0.0.1:1', password: 'secret' } } });
    const guardedBase = guarded.http.address.replace('0.0.0.0', '127.0.0.1');
    expect((await post(`${guardedBase}/v1/step`, step, { authorization: 'Bearer wrong-token-of-the-same-len' })).status).toBe(403);
    expect((await post(`${guardedBase}/v1/step`, step, { authorization: `Bearer ${token}` })).status).toBe(200);
    const config = await (await fetch(`${guardedBase}/v1/config`, { headers: { authorization: `Bearer ${token}` } })).text();
    expect(config).not.toContain('secret');
    expect(config).not.toContain(token);
  });

  it('answers tensor-parallel duplicates of a step byte-identically, on any connection, and applies them once', async () => {
    const sidecar = await start();
    const rank0 = await fastLane(sidecar);
    const rank1 = await fastLane(sidecar);
    const step = batch([{ id: 'r', tokens: [...prompt, 1, 2, 3, 1, 2], prompt: 4 }]);
    const [a, b] = await Promise.all([rank0.raw(encodeStep(step, 7), 7), rank1.raw(encodeStep(step, 7), 7)]);
    expect(Buffer.compare(a, b)).toBe(0);
    expect(readHeader(a).kind).toBe(FrameKind.STEP_REPLY);
    const viaGrpc = await grpcClient(sidecar).step(step);
    expect(drafts(viaGrpc)).toEqual([[3, 1, 2]]);
    expect(sidecar.context.service.describe('engine-1', 'r')?.length).toBe(9);
    expect(sidecar.context.service.counters.duplicateSteps).toBe(2);
  });

  it('carries fast-lane frames over gRPC: FastLane answers with the bytes the socket answers', async () => {
    const sidecar = await start();
    const Sidecar = grpc.makeGenericClientConstructor(SidecarService, 'Sidecar');
    const raw = new Sidecar(`unix:${sidecar.context.config.grpc.socket}`, grpc.credentials.createInsecure()) as grpc.Client & Record<string, Function>;
    const call = (data: Buffer) =>
      new Promise<Buffer>((resolve, reject) => raw.FastLane({ data }, (error: Error | null, reply: { data: Uint8Array }) => (error ? reject(error) : resolve(Buffer.from(reply.data)))));
    const step = batch([{ id: 'r', tokens: [...prompt, 1, 2, 3, 1, 2], prompt: 4 }]);
    const viaGrpc = await call(encodeStep(step, 7));
    expect(drafts(decodeStepReply(viaGrpc))).toEqual([[3, 1, 2]]);
    // The socket gets the same step as a tensor-parallel duplicate: the same bytes.
    expect(Buffer.compare(await (await fastLane(sidecar)).raw(encodeStep(step, 7), 7), viaGrpc)).toBe(0);
    // A frame cut short is answered with a coded error frame, not a failed call.
    expect(decodeError(await call(encodeStep(step, 8).subarray(0, 20)))).toMatchObject({ code: 'MALFORMED_FRAME', field: 'length' });
    raw.close();
  });

  it('gives every bad input a coded error naming the field, and keeps serving other requests', async () => {
    const sidecar = await start({ drafting: { vocabSize: 1000 }, limits: { maxK: 8, maxMessageBytes: 4096 } });
    const client = await fastLane(sidecar);
    await client.step(batch([{ id: 'good', tokens: [...prompt, 1, 2, 3, 1, 2], prompt: 4 }]));
    const mixed = await client.step(
      batch([
        { id: 'unknown', start: 4, tokens: [1] },
        { id: 'good', start: 12, tokens: [3] },
        { id: 'big', tokens: [...prompt, 1000], prompt: 4 },
        { id: 'good', start: 9, tokens: [3] },
        { id: 'good', start: 10, tokens: [1] },
      ]),
    );
    expect(Array.from(mixed.statuses)).toEqual([ItemStatus.RESYNC, ItemStatus.RESYNC, ItemStatus.ERROR, ItemStatus.OK, ItemStatus.ERROR]);
    expect(mixed.errors.map((e) => e.code)).toEqual(['UNKNOWN_REQUEST', 'TOKEN_GAP', 'TOKEN_OUT_OF_RANGE', 'DUPLICATE_REQUEST']);
    expect(drafts(mixed)[3]).toEqual([1, 2, 3]);

    const kError = await expectCode(client.step(batch([], { k: 9 })), 'K_OUT_OF_RANGE');
    expect(kError.field).toBe('k');
    await expectCode(client.step(batch([], { stepId: 1n })), 'STALE_STEP');
    await expectCode(client.step(batch([{ id: 'x', tokens: Array(2000).fill(1), prompt: 1 }])), 'MESSAGE_TOO_LARGE');

    const truncated = encodeStep(batch([{ id: 'x', tokens: [1, 2, 3], prompt: 1 }]), 41);
    const shortFrame = truncated.subarray(0, truncated.length - 4);
    shortFrame.writeUInt32LE(shortFrame.length - 4, 0);
    const malformed = await client.raw(shortFrame, 41);
    expect(decodeError(malformed)).toMatchObject({ code: 'MALFORMED_FRAME', field: 'items' });
    const future = encodeStep(batch([]), 42);
    future.writeUInt8(9, 6);
    const version = await client.raw(future, 42);
    expect(readHeader(Buffer.concat([version]))).toBeDefined();
    expect(decodeError(version).code).toBe('UNSUPPORTED_VERSION');

    // The connection and the other request survived all of it.
    const after = await client.step(batch([{ id: 'good', start: 10, tokens: [1] }]));
    expect(drafts(after)).toEqual([[2, 3, 1]]);

    await expectCode(grpcClient(sidecar).step(batch([], { k: 9 })), 'K_OUT_OF_RANGE');
    await expectCode(httpClient(sidecar).step(batch([], { k: 9 })), 'K_OUT_OF_RANGE');
    const badJson = await fetch(`${sidecar.http.address}/v1/step`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"engine_id": 5}' });
    expect(badJson.status).toBe(400);
    expect(await badJson.json()).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'engineId' });
    // JSON numbers past uint32 (what the proto fields carry) are refused, not wrapped; 2^32-1 is
    // the "no prompt" marker and is refused as a prompt length on every transport.
    for (const [fields, field] of [
      [{ start: 2 ** 32 }, 'requests[0].start'],
      [{ prompt_len: 2 ** 32 + 3 }, 'requests[0].promptLen'],
      [{ promptLen: 2 ** 32 - 1 }, 'requests[0].promptLen'],
    ] as const) {
      const body = { engine_id: 'e-wrap', step_id: 1, num_reqs: 1, k: 3, requests: [{ req_id: 'r', tokens: [1, 2], ...fields }] };
      const answer = await fetch(`${sidecar.http.address}/v1/step`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      expect(answer.status).toBe(400);
      expect(await answer.json()).toMatchObject({ code: 'INVALID_ARGUMENT', field });
    }
    // The same marker set explicitly in a gRPC message (its optional uint32 can carry it).
    expect(() => batchFromMessage({ engine_id: 'e-wrap', step_id: 2, num_reqs: 1, prefill: false, k: 3, requests: [{ req_id: 'r', tokens: [1, 2], prompt_len: 2 ** 32 - 1 }], finished_req_ids: [] })).toThrowError(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', field: 'requests[0].prompt_len' }),
    );
  });

  it('survives arbitrary frame bodies: each gets a coded error (or a reply), and the server keeps serving', async () => {
    const sidecar = await start();
    const client = await fastLane(sidecar);
    let callId = 1000;
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 160 }), fc.constantFrom(FrameKind.STEP, FrameKind.RELEASE, FrameKind.PING, 99), async (body, kind) => {
        const frame = Buffer.alloc(12 + body.length);
        frame.writeUInt32LE(8 + body.length, 0);
        frame.writeUInt16LE(0x5341, 4);
        frame.writeUInt8(1, 6);
        frame.writeUInt8(kind, 7);
        frame.writeUInt32LE(++callId, 8);
        Buffer.from(body).copy(frame, 12);
        const reply = await client.raw(frame, callId);
        expect([FrameKind.ERROR_REPLY, FrameKind.STEP_REPLY, FrameKind.RELEASE_REPLY, FrameKind.PONG]).toContain(readHeader(reply).kind);
      }),
      { numRuns: 300, seed: 20261201 },
    );
    const after = await client.step(batch([{ id: 'r', tokens: [...prompt, 1, 2, 3, 1, 2], prompt: 4 }], { engineId: 'after-fuzz' }));
    expect(drafts(after)).toEqual([[3, 1, 2]]);
    expect(sidecar.context.service.counters.callErrors.get('INTERNAL')).toBeUndefined();
  });

  it('gates by batch size (VLLM_SPECULATIVE_BATCH_SIZE_THRE) and resumes drafting without gaps in the long tail', async () => {
    const sidecar = await start({ gate: { threshold: 2 } });
    const client = await fastLane(sidecar);
    const ids = ['a', 'b', 'c'];
    const big = await client.step(batch(ids.map((id) => ({ id, tokens: [...prompt, 5, 6, 7, 5], prompt: 4 }))));
    // The reply also announces the bound, so a client knows which steps will get no drafts.
    expect(big).toMatchObject({ speculate: false, reason: GateReason.ABOVE_THRESHOLD, offAbove: 2 });
    expect(big.drafts.length).toBe(0);
    await client.step(batch([{ id: 'a', start: 8, tokens: [6] }, { id: 'b', start: 8, tokens: [6] }, { id: 'c', start: 8, tokens: [6] }]));
    const tail = await client.step(batch([{ id: 'a', start: 9, tokens: [7] }], { finished: ['b', 'c'] }));
    expect(tail).toMatchObject({ speculate: true, reason: GateReason.BELOW_THRESHOLD });
    expect(drafts(tail)).toEqual([[5, 6, 7]]);
  });

  it('after a restart it asks for RESYNC, and a resent full context restores drafting', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sam-restart-'));
    let sidecar = await start({}, dir);
    let client = await fastLane(sidecar);
    await client.step(batch([{ id: 'r', tokens: [...prompt, 1, 2, 3, 1, 2], prompt: 4 }]));
    await sidecar.close();
    expect(existsSync(sidecar.context.config.socket)).toBe(false);
    sidecar = await start({}, dir);
    client = await fastLane(sidecar);
    const lost = await client.step(batch([{ id: 'r', start: 9, tokens: [3] }]));
    expect(lost.statuses[0]).toBe(ItemStatus.RESYNC);
    const resent = await client.step(batch([{ id: 'r', tokens: [...prompt, 1, 2, 3, 1, 2, 3], prompt: 4 }]));
    expect(drafts(resent)).toEqual([[1, 2, 3]]);
  });

  it('keeps a long group\'s arrays resident ahead from a worker thread, shrinks it once retired into arrays that worker prepared, and drafts from it as before', async () => {
    const sidecar = await start();
    const client = await fastLane(sidecar);
    const text = Array.from({ length: 140_000 }, (_, i) => ((i * 7919) % 30011) + 1); // arrays over 4 MiB
    await client.step(batch([{ id: 'long', tokens: [...prompt, ...text], prompt: prompt.length }]));
    const service = sidecar.context.service;
    while (service.stats().backlogTokens > 0) await new Promise((resolve) => setTimeout(resolve, 10)); // indexed in idle slices
    await client.step(batch([], { finished: ['long'] }));
    const bytes = async () => ((await (await fetch(`${sidecar.http.address}/v1/memory`)).json()) as { bytes: number }).bytes;
    const retired = await bytes();
    const deadline = Date.now() + 20_000;
    while ((await bytes()) >= retired && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await bytes()).toBeLessThan(retired);
    const arrays = service.draftEngine.arraySupply as PrefaultedArrays;
    expect(arrays).toBeInstanceOf(PrefaultedArrays);
    expect(arrays.problem).toBeNull();
    expect(arrays.handedOver).toBeGreaterThan(0);
    // Each slice is timed, for operators to see what idle work holds the loop for.
    const metrics = await (await fetch(`${sidecar.http.address}/metrics`)).text();
    expect(Number(/sam_sidecar_idle_slice_duration_seconds_count (\d+)/.exec(metrics)?.[1])).toBeGreaterThan(1);
    expect(metrics).toContain(`sam_sidecar_compaction_prepared_arrays_total ${arrays.handedOver}`);
    expect(metrics).toContain('sam_sidecar_prefault_worker_up 1');
    expect(Number(/sam_sidecar_prefaulted_ahead_bytes_total (\d+)/.exec(metrics)?.[1])).toBeGreaterThan(0); // its arrays were made resident ahead
    const again = await client.step(batch([{ id: 'again', tokens: [...prompt, ...text.slice(0, 500)], prompt: prompt.length }]));
    expect(drafts(again)).toEqual([text.slice(500, 503)]);
  });

  it('keeps within a small token budget by evicting history, then idle requests (which RESYNC); the corpus within its own', async () => {
    const sidecar = await start({ memory: { maxTokens: 250, historyTokens: 200, corpusTokens: 200, maintenanceIntervalMs: 10 } });
    const client = await fastLane(sidecar);
    const context = (p: number) => [p, p + 1, ...Array.from({ length: 98 }, (_, i) => (i * 13) % 97)];
    for (let g = 0; g < 3; g++) {
      await client.step(batch([{ id: `done-${g}`, tokens: context(1000 * (g + 1)), prompt: 2 }]));
      await client.step(batch([], { finished: [`done-${g}`] }));
    }
    await client.step(batch([{ id: 'live-old', tokens: context(7000), prompt: 2 }]));
    await client.step(batch([{ id: 'live-new', tokens: context(8000), prompt: 2 }]));
    await client.step(batch([{ id: 'live-newest', tokens: context(9000), prompt: 2 }]));
    await new Promise((resolve) => setTimeout(resolve, 50));
    const memory = (await (await fetch(`${sidecar.http.address}/v1/memory`)).json()) as { tokens: number; corpusTokens: number; bytes: number };
    expect(memory.tokens - memory.corpusTokens).toBeLessThanOrEqual(250);
    expect(memory.corpusTokens).toBeGreaterThan(0);
    expect(memory.corpusTokens).toBeLessThanOrEqual(200);
    expect(memory.bytes).toBeGreaterThan(0);
    const stats = (await (await fetch(`${sidecar.http.address}/v1/stats`)).json()) as { historyGroups: number; evictedForMemory: number };
    expect(stats.historyGroups).toBe(0);
    const back = await client.step(batch([{ id: 'live-old', start: 100, tokens: [5] }]));
    expect(back.statuses[0]).toBe(ItemStatus.RESYNC);
  });

  it('serves probes, Prometheus metrics with vLLM-aligned names, config and request introspection over HTTP', async () => {
    const sidecar = await start();
    const client = await fastLane(sidecar);
    await client.step(batch([{ id: 'r', tokens: [...prompt, 1, 2, 3, 1, 2], prompt: 4 }]));
    await client.step(batch([{ id: 'r', start: 9, tokens: [3, 1, 9] }]));
    const base = sidecar.http.address;
    expect((await fetch(`${base}/livez`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    for (const name of [
      'sam_sidecar_spec_decode_num_drafts_total 1',
      'sam_sidecar_spec_decode_num_draft_tokens_total',
      'sam_sidecar_spec_decode_num_accepted_tokens_total 2',
      'sam_sidecar_spec_decode_num_accepted_tokens_per_pos_total{position="1"} 1',
      'sam_sidecar_gate_decisions_total{speculate="true",reason="below_threshold"} 2',
      'sam_sidecar_step_duration_seconds_bucket{le="0.0001",transport="uds"}',
      'sam_sidecar_requests 1',
      'sam_sidecar_memory_bytes',
      `sam_sidecar_build_info{version="${packageVersion()}",node="${process.version}"} 1`,
      'process_cpu_seconds_total',
      'nodejs_heap_size_used_bytes',
      // Per engine (bounded: the 16 most recently seen).
      'sam_sidecar_engine_steps_total{engine="engine-1"} 2',
      'sam_sidecar_engine_accepted_tokens_total{engine="engine-1"} 2',
    ]) {
      expect(metrics).toContain(name);
    }
    expect(metrics).not.toContain('sam_sidecar_process_');
    const view = (await (await fetch(`${base}/v1/engines/engine-1/requests/r`)).json()) as { length: number; promptLength: number };
    expect(view).toMatchObject({ length: 12, promptLength: 4 });
    expect((await fetch(`${base}/v1/engines/engine-1/requests/nope`)).status).toBe(404);
    const config = (await (await fetch(`${base}/v1/config`)).json()) as { gate: { threshold: number } };
    expect(config.gate.threshold).toBe(32);
  });

  it('answers the standard gRPC health check, and on shutdown turns not ready and removes its sockets', async () => {
    const sidecar = await start({ shutdown: { drainMs: 300 } });
    const Health = grpc.makeGenericClientConstructor(HealthService, 'Health');
    const health = new Health(`unix:${sidecar.context.config.grpc.socket}`, grpc.credentials.createInsecure()) as grpc.Client & Record<string, Function>;
    const check = (service: string) =>
      new Promise<{ status: number }>((resolve, reject) => health.Check({ service }, (e: Error | null, r: { status: number }) => (e ? reject(e) : resolve(r))));
    expect((await check('')).status).toBe(1);
    expect((await check('sam_sidecar.v1.Sidecar')).status).toBe(1);
    await expect(check('other')).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    health.close();
    const client = await fastLane(sidecar);
    const closing = sidecar.close();
    expect(sidecar.context.ready).toBe(false);
    // While draining, steps are refused with a code the shim treats as "no drafts this step".
    await expectCode(client.step(batch([])), 'NOT_READY');
    expect((await fetch(`${sidecar.http.address}/readyz`)).status).toBe(503);
    await closing;
    expect(existsSync(sidecar.context.config.socket)).toBe(false);
    expect(existsSync(sidecar.context.config.grpc.socket!)).toBe(false);
  });

  it('with busyPollUs keeps polling after a step, serves the same drafts, and stops polling at shutdown', async () => {
    const sidecar = await start({ busyPollUs: 1_000_000 });
    const client = await fastLane(sidecar);
    expect(sidecar.context.busyPoll.active).toBe(false); // the warm-up's steps do not start it
    const reply = await client.step(batch([{ id: 'r', tokens: [...prompt, 1, 2, 3, 1, 2], prompt: 4 }]));
    expect(drafts(reply)).toEqual([[3, 1, 2]]);
    expect(sidecar.context.busyPoll.active).toBe(true);
    await sidecar.close();
    await new Promise((resolve) => setImmediate(resolve));
    expect(sidecar.context.busyPoll.active).toBe(false);
  });

  it('after a PING polls (wakePollUs) until the step it announced is answered, and only then', async () => {
    const sidecar = await start({ wakePollUs: 1_000_000 });
    const client = await fastLane(sidecar);
    await client.ping();
    expect(sidecar.context.busyPoll.active).toBe(true);
    const reply = await client.step(batch([{ id: 'r', tokens: [...prompt, 1, 2, 3, 1, 2], prompt: 4 }]));
    expect(drafts(reply)).toEqual([[3, 1, 2]]);
    await new Promise((resolve) => setImmediate(resolve));
    expect(sidecar.context.busyPoll.active).toBe(false); // busyPollUs is 0: no poll after steps
    await sidecar.close();
  });

  it('serves gRPC over TCP as well when configured, with the same Step and Stats', async () => {
    const sidecar = await start({ grpc: { tcp: '127.0.0.1:0' } });
    const tcp = sidecar.grpc.addresses.find((address) => !address.startsWith('unix:'))!;
    expect(tcp).toMatch(/^127\.0\.0\.1:\d+$/);
    const client = new GrpcClient(tcp);
    clients.push(client);
    const outcome = await client.step(batch([{ id: 'r', tokens: [...prompt, 1, 2, 3, 1, 2], prompt: 4 }]));
    expect(drafts(outcome)).toEqual([[3, 1, 2]]);
    const stats = await client.stats();
    expect(stats).toMatchObject({ requests: 1, steps: 1, drafts: 1, draftTokens: 3 });
    // One snapshot behind both transports: gRPC Stats equals HTTP /v1/stats, field for field.
    expect(stats).toEqual(await (await fetch(`${sidecar.http.address}/v1/stats`)).json());
    expect(await client.release('engine-1', ['r', 'unknown'])).toBe(1);
  });

  it('speaks proto3 JSON on /v1/step: camelCase both ways (snake_case accepted), uint64 as strings, enums by name; 415 and 405 where due', async () => {
    const sidecar = await start();
    const url = `${sidecar.http.address}/v1/step`;
    const json = { 'content-type': 'application/json' };
    const body = { engineId: 'e-json', stepId: '18446744073709551614', numReqs: 1, k: 3, requests: [{ reqId: 'r', tokens: [...prompt, 1, 2, 3, 1, 2], promptLen: 4 }] };
    const answer = (await (await fetch(url, { method: 'POST', headers: json, body: JSON.stringify(body) })).json()) as Record<string, unknown>;
    expect(answer).toEqual({ stepId: '18446744073709551614', speculate: true, reason: 'BELOW_THRESHOLD', offAbove: 32, drafts: [{ status: 'OK', tokens: [3, 1, 2] }] });
    const unknown = (await (await fetch(url, { method: 'POST', headers: json, body: JSON.stringify({ engine_id: 'e-json2', step_id: 1, num_reqs: 1, k: 3, requests: [{ req_id: 'x', start: 9, tokens: [1] }] }) })).json()) as { drafts: Array<Record<string, unknown>> };
    expect(unknown.drafts[0]).toMatchObject({ status: 'RESYNC', errorCode: 'UNKNOWN_REQUEST' });
    const noType = await fetch(url, { method: 'POST', body: JSON.stringify(body) });
    expect({ status: noType.status, code: ((await noType.json()) as { code: string }).code }).toEqual({ status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' });
    const get = await fetch(url);
    expect({ status: get.status, allow: get.headers.get('allow') }).toEqual({ status: 405, allow: 'POST' });
    const big = await fetch(url, { method: 'POST', headers: json, body: JSON.stringify({ ...body, stepId: 2 ** 60 }) });
    expect(await big.json()).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'stepId' });
  });

  it('can turn the state-changing JSON Step off, keeping the read-only routes', async () => {
    const sidecar = await start({ http: { port: 0, jsonStep: false } });
    const step = await fetch(`${sidecar.http.address}/v1/step`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(step.status).toBe(404);
    expect(await step.json()).toMatchObject({ code: 'NOT_FOUND', field: 'url' });
    expect((await fetch(`${sidecar.http.address}/v1/stats`)).status).toBe(200);
  });

  it('refuses to start on a socket another sidecar is serving, and leaves that sidecar serving', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sam-twice-'));
    const first = await start({}, dir);
    const refused = await expectCode(start({}, dir), 'LISTEN_FAILED');
    expect(refused.field).toBe('socket');
    expect(refused.message).toMatch(/another process is listening on .*sidecar\.sock/);
    expect(existsSync(first.context.config.socket)).toBe(true);
    expect(existsSync(first.context.config.grpc.socket!)).toBe(true);
    expect((await fetch(`${first.http.address}/readyz`)).status).toBe(200);
    expect((await (await fastLane(first)).step(batch([{ id: 'r', tokens: [...prompt, 1], prompt: 4 }]))).statuses[0]).toBe(ItemStatus.OK);
  });

  it('refuses to start on an HTTP port in use with one coded line, removing no socket it did not bind', async () => {
    const first = await start();
    const port = Number(new URL(first.http.address).port);
    const refused = await expectCode(start({ socket: first.context.config.socket, http: { port } }), 'LISTEN_FAILED');
    expect(refused.field).toBe('http.port');
    expect(existsSync(first.context.config.socket)).toBe(true);
    expect(existsSync(first.context.config.grpc.socket!)).toBe(true);
    expect((await (await fastLane(first)).step(batch([{ id: 'r', tokens: [...prompt, 1], prompt: 4 }]))).statuses[0]).toBe(ItemStatus.OK);
  });

  it('bounds connections and incomplete frames: a frame stalled past partialFrameSeconds closes its connection, others go on', async () => {
    const { connect } = await import('node:net');
    const sidecar = await start({ limits: { partialFrameSeconds: 0.3, maxConnections: 4 } });
    const stalled = connect(sidecar.context.config.socket);
    await new Promise((resolve) => stalled.once('connect', resolve));
    const closed = new Promise((resolve) => stalled.once('close', resolve));
    const frame = encodeStep(batch([{ id: 'r', tokens: [...prompt, 1], prompt: 4 }]), 1);
    stalled.write(frame.subarray(0, frame.length - 3)); // never finished
    const healthy = await fastLane(sidecar);
    const started = Date.now();
    await closed;
    expect(Date.now() - started).toBeLessThan(5000);
    expect((await healthy.step(batch([{ id: 'ok', tokens: [...prompt, 1, 2, 1], prompt: 4 }]))).statuses[0]).toBe(ItemStatus.OK);
    // The fifth connection at once is refused by the server (the shim fails open and retries).
    const extra = [0, 1, 2, 3].map(() => connect(sidecar.context.config.socket));
    const refused = await new Promise<boolean>((resolve) => {
      extra[3].once('close', () => resolve(true));
      setTimeout(() => resolve(false), 2000);
    });
    expect(refused).toBe(true);
    for (const socket of extra) socket.destroy();
  });

  it('holds at most limits.maxEngines engines: a new engine id evicts the least recently seen', async () => {
    const { StepService } = await import('../src/core/step-service.js');
    const { UNGATED } = await import('../src/core/gate.js');
    const service = new StepService({ maxK: 4, requestTtlMs: 1e12, maxTokens: 1e12, stepCacheSize: 2, maxEngines: 3 }, UNGATED, {});
    for (let e = 0; e < 10; e++) service.step(batch([{ id: 'r', tokens: [...prompt, e], prompt: 4 }], { engineId: `engine-${e}`, stepId: 1n }), e);
    expect(service.stats().engines).toBe(3);
    expect(service.stats().requests).toBe(3); // the evicted engines' requests went with them
    expect(service.counters.evictedEngines).toBe(7);
  });

  it('logs one ready line naming its version, config source and addresses', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) });
    const dir = mkdtempSync(join(tmpdir(), 'sam-ready-'));
    const config = loadConfig({ env: {}, file: null, overrides: { socket: join(dir, 's.sock'), http: { port: 0 }, shutdown: { drainMs: 0 }, warmUpSteps: 0 } });
    running.push(await startSidecar(config, logger, 'embedded defaults + environment'));
    const ready = lines.find((line) => line.msg === 'sam-sidecar ready');
    expect(ready).toMatchObject({ version: packageVersion(), config: 'embedded defaults + environment', socket: join(dir, 's.sock') });
  });

  it('logs coded call and request errors at debug with engine, request and code, one line per code per second', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'debug' }, { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) });
    const dir = mkdtempSync(join(tmpdir(), 'sam-log-'));
    const config = loadConfig({ env: {}, file: null, overrides: { socket: join(dir, 's.sock'), http: { port: 0 }, shutdown: { drainMs: 0 }, warmUpSteps: 0, log: { level: 'debug' } } });
    const sidecar = await startSidecar(config, logger);
    running.push(sidecar);
    const client = await fastLane(sidecar);
    for (let i = 0; i < 50; i++) await expectCode(client.step(batch([], { k: 99 })), 'K_OUT_OF_RANGE');
    await client.step(batch([{ id: 'ghost', start: 7, tokens: [1] }]));
    const coded = lines.filter((line) => typeof line.code === 'string');
    const kOut = coded.filter((line) => line.code === 'K_OUT_OF_RANGE');
    expect(kOut).toHaveLength(1); // 50 refusals, one line
    expect(kOut[0]).toMatchObject({ level: 20, engine: 'engine-1', msg: 'step refused' });
    expect(coded.find((line) => line.code === 'UNKNOWN_REQUEST')).toMatchObject({ engine: 'engine-1', request: 'ghost', msg: 'request not drafted' });
  });

  it('reports not ready while a socket it serves is gone', async () => {
    const sidecar = await start();
    expect((await fetch(`${sidecar.http.address}/readyz`)).status).toBe(200);
    rmSync(sidecar.context.config.socket);
    const answer = await fetch(`${sidecar.http.address}/readyz`);
    expect(answer.status).toBe(503);
    expect(((await answer.json()) as { problems: string[] }).problems[0]).toMatch(/sidecar\.sock is gone/);
  });
});
