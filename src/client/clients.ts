/**
 * Node clients for the three transports, behind one interface. They serve `replay --via`, the
 * integration tests and the wire benchmark; the Python shim has its own fast-lane client.
 */
import * as grpc from '@grpc/grpc-js';
import net from 'node:net';
import { remoteError, type SidecarError } from '../core/errors.js';
import type { StepBatch, StepOutcome } from '../core/step-service.js';
import {
  decodeCount,
  decodeError,
  decodeStepReply,
  encodeEmpty,
  encodeRelease,
  encodeStep,
  FrameKind,
  FrameSplitter,
  readHeader,
} from '../protocol/fast-lane.js';
import { SidecarService } from '../protocol/grpc-definitions.js';
import { jsonFromBatch, messageFromBatch, outcomeFromJson, outcomeFromMessage, type SidecarStats, statsFromMessage } from '../protocol/messages.js';
import type { Transport } from '../protocol/transports.js';

export type Via = Transport;

export interface StepClient {
  step(batch: StepBatch): Promise<StepOutcome>;
  release(engineId: string, reqIds: readonly string[]): Promise<number>;
  close(): Promise<void>;
}

export interface ClientAddresses {
  socket: string;
  grpcSocket: string;
  httpUrl: string;
  /** The sidecar's http.token, when it has one. */
  httpToken?: string;
}

export async function connectClient(via: Via, addresses: ClientAddresses): Promise<StepClient> {
  if (via === 'uds') return FastLaneClient.connect(addresses.socket);
  if (via === 'grpc') return new GrpcClient(`unix:${addresses.grpcSocket}`);
  return new HttpClient(addresses.httpUrl, addresses.httpToken);
}

interface Pending {
  resolve: (frame: Buffer) => void;
  reject: (error: Error) => void;
}

/** Fast lane over a Unix socket; calls may be pipelined (replies carry the call id). */
export class FastLaneClient implements StepClient {
  private nextCallId = 1;
  private readonly pending = new Map<number, Pending>();

  private constructor(private readonly socket: net.Socket) {
    const splitter = new FrameSplitter(
      0xffffffff,
      (frame) => {
        const callId = frame.readUInt32LE(8);
        const waiter = this.pending.get(callId);
        if (waiter === undefined) return;
        this.pending.delete(callId);
        waiter.resolve(frame);
      },
      () => undefined,
    );
    socket.on('data', (chunk: Buffer) => splitter.push(chunk));
    const failAll = (error: Error) => {
      for (const waiter of this.pending.values()) waiter.reject(error);
      this.pending.clear();
    };
    socket.on('error', failAll);
    socket.on('close', () => failAll(new Error('fast-lane connection closed')));
  }

  static connect(path: string): Promise<FastLaneClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(path);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new FastLaneClient(socket));
      });
      socket.once('error', reject);
    });
  }

  async step(batch: StepBatch): Promise<StepOutcome> {
    return decodeStepReply(this.expect(await this.call((id) => encodeStep(batch, id)), FrameKind.STEP_REPLY));
  }

  async release(engineId: string, reqIds: readonly string[]): Promise<number> {
    return decodeCount(this.expect(await this.call((id) => encodeRelease(engineId, reqIds, id)), FrameKind.RELEASE_REPLY));
  }

  async ping(): Promise<void> {
    this.expect(await this.call((id) => encodeEmpty(FrameKind.PING, id)), FrameKind.PONG);
  }

  /** Sends raw bytes as one call (tests of malformed frames); resolves with the reply frame. */
  raw(frame: Buffer, callId: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.pending.set(callId, { resolve, reject });
      this.socket.write(frame);
    });
  }

  async close(): Promise<void> {
    this.socket.end();
    this.socket.destroy();
  }

  private call(encode: (callId: number) => Buffer): Promise<Buffer> {
    const callId = this.nextCallId;
    this.nextCallId = (this.nextCallId + 1) >>> 0 || 1;
    return this.raw(encode(callId), callId);
  }

  private expect(frame: Buffer, kind: FrameKind): Buffer {
    const header = readHeader(frame);
    if (header.kind === FrameKind.ERROR_REPLY) throw remoteError(decodeError(frame));
    if (header.kind !== kind) throw new Error(`expected frame kind ${kind}, got ${header.kind}`);
    return frame;
  }
}

const GrpcSidecarClient = grpc.makeGenericClientConstructor(SidecarService, 'Sidecar');

/** gRPC (grpc-js), over the Unix socket or TCP. */
export class GrpcClient implements StepClient {
  private readonly client: grpc.Client & Record<string, Function>;

  constructor(address: string) {
    this.client = new GrpcSidecarClient(address, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': -1,
      'grpc.max_send_message_length': -1,
    }) as grpc.Client & Record<string, Function>;
  }

  async step(batch: StepBatch): Promise<StepOutcome> {
    const reply = await this.unary<{ step_id: { toString(): string }; speculate: boolean; reason: number; drafts: Array<{ status: number; tokens: number[]; error_code: string; error_message: string }> }>(
      'Step',
      messageFromBatch(batch),
    );
    return outcomeFromMessage(reply);
  }

  async release(engineId: string, reqIds: readonly string[]): Promise<number> {
    return (await this.unary<{ released: number }>('Release', { engine_id: engineId, req_ids: reqIds })).released;
  }

  async stats(): Promise<SidecarStats> {
    return statsFromMessage(await this.unary('Stats', {}));
  }

  async close(): Promise<void> {
    this.client.close();
  }

  private unary<T>(method: string, request: unknown): Promise<T> {
    return new Promise((resolve, reject) => {
      this.client[method](request, (error: grpc.ServiceError | null, reply: T) => {
        if (error === null) return resolve(reply);
        const code = error.metadata?.get('sam-error-code')[0];
        if (typeof code !== 'string') return reject(error);
        const field = error.metadata.get('sam-error-field')[0];
        reject(remoteError({ code, field: typeof field === 'string' ? field : null, message: error.details }));
      });
    });
  }
}

/** HTTP JSON Step (debugging and tools; slowest of the three). */
export class HttpClient implements StepClient {
  /** @param token the sidecar's http.token, if it has one (guarded routes). */
  constructor(
    private readonly baseUrl: string,
    private readonly token?: string,
  ) {}

  async step(batch: StepBatch): Promise<StepOutcome> {
    return outcomeFromJson(await this.post('/v1/step', jsonFromBatch(batch)));
  }

  async release(engineId: string, reqIds: readonly string[]): Promise<number> {
    return ((await this.post('/v1/release', { engineId, reqIds })) as { released: number }).released;
  }

  async close(): Promise<void> {}

  private async post(path: string, body: unknown): Promise<never> {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    const response = await fetch(`${this.baseUrl}${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
    const json = (await response.json()) as { code?: string; field?: string | null; message?: string };
    if (!response.ok) throw remoteError({ code: json.code ?? 'INTERNAL', field: json.field ?? null, message: json.message ?? response.statusText });
    return json as never;
  }
}

export type { SidecarError };
