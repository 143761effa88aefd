/**
 * gRPC transport (@grpc/grpc-js): Step, Release, Stats, fast-lane frames (FastLane) and the standard
 * health service, over the Unix socket and optionally TCP. Decodes, calls the core, encodes.
 */
import * as grpc from '@grpc/grpc-js';
import { dirname } from 'node:path';
import { HEALTH_SERVICE_NAMES, HealthService, ServingStatus, SidecarService, UndecodableMessage } from '../protocol/grpc-definitions.js';
import { batchFromMessage, messageFromOutcome, statsToMessage, type StepRequestMessage } from '../protocol/messages.js';
import type { SidecarContext } from './context.js';
import { sidecarError } from '../core/errors.js';
import { answerFrame, prepareSocketDirectory, removeStaleSocket, SocketFile } from './fast-lane-server.js';

export class GrpcServer {
  private readonly server: grpc.Server;
  private readonly watchers = new Set<grpc.ServerWritableStream<unknown, unknown>>();

  constructor(
    private readonly context: SidecarContext,
    readonly socketPath: string | undefined,
    readonly tcp: string | undefined,
  ) {
    this.socketFile = socketPath ? new SocketFile(socketPath, 'gRPC') : undefined;
    const maxBytes = context.config.limits.maxMessageBytes;
    this.server = new grpc.Server({ 'grpc.max_receive_message_length': maxBytes, 'grpc.max_send_message_length': maxBytes });
    this.server.addService(SidecarService, {
      Step: (call: grpc.ServerUnaryCall<StepRequestMessage, unknown>, callback: grpc.sendUnaryData<unknown>) => this.step(call, callback),
      Release: (call: grpc.ServerUnaryCall<{ engine_id: string; req_ids: string[] }, unknown>, callback: grpc.sendUnaryData<unknown>) =>
        this.unary(callback, () => {
          const request = decoded(call.request);
          return { released: this.context.release(request.engine_id, request.req_ids) };
        }),
      Stats: (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) =>
        this.unary(callback, () => {
          decoded(call.request);
          return statsToMessage(this.context.stats());
        }),
      FastLane: (call: grpc.ServerUnaryCall<{ data: Buffer }, unknown>, callback: grpc.sendUnaryData<unknown>) =>
        this.unary(callback, () => ({ data: answerFrame(this.context, Buffer.from(decoded(call.request).data ?? []), 'grpc') })),
    });
    this.server.addService(HealthService, {
      Check: (call: grpc.ServerUnaryCall<{ service: string }, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        if (call.request instanceof UndecodableMessage) return this.unary(callback, () => decoded(call.request));
        const status = this.healthOf(call.request.service);
        // The health protocol answers NOT_FOUND for a service it does not know.
        if (status === ServingStatus.SERVICE_UNKNOWN) callback({ code: grpc.status.NOT_FOUND, details: `unknown service ${JSON.stringify(call.request.service)}` });
        else callback(null, { status });
      },
      Watch: (call: grpc.ServerWritableStream<{ service: string }, unknown>) => {
        call.write({ status: this.healthOf(call.request.service) });
        this.watchers.add(call as grpc.ServerWritableStream<unknown, unknown>);
        call.on('cancelled', () => this.watchers.delete(call as grpc.ServerWritableStream<unknown, unknown>));
      },
    });
  }

  /** Bound addresses (the TCP one with its actual port). */
  readonly addresses: string[] = [];
  private readonly socketFile: SocketFile | undefined;

  /** Why the gRPC socket this server answers on is unusable, or null (also when it serves none). */
  socketProblem(): string | null {
    return this.socketFile?.problem() ?? null;
  }

  async listen(): Promise<void> {
    const credentials = grpc.ServerCredentials.createInsecure();
    if (this.socketPath && this.socketFile) {
      prepareSocketDirectory(dirname(this.socketPath), this.context.config.socketMode, 'grpc.socket');
      await removeStaleSocket(this.socketPath, 'grpc.socket');
      await this.bind(`unix:${this.socketPath}`, credentials, 'grpc.socket');
      this.socketFile.bound(this.context.config.socketMode);
      this.addresses.push(`unix:${this.socketPath}`);
    }
    if (this.tcp) {
      const port = await this.bind(this.tcp, credentials, 'grpc.tcp');
      this.addresses.push(`${this.tcp.slice(0, this.tcp.lastIndexOf(':'))}:${port}`);
    }
  }

  /** Tells health watchers the server stops serving (called when draining starts). */
  notifyNotServing(): void {
    for (const watcher of this.watchers) watcher.write({ status: ServingStatus.NOT_SERVING });
  }

  async close(): Promise<void> {
    for (const watcher of this.watchers) watcher.end();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, 1000);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.socketFile?.remove();
  }

  private bind(address: string, credentials: grpc.ServerCredentials, field: string): Promise<number> {
    return new Promise((resolve, reject) =>
      this.server.bindAsync(address, credentials, (error, port) =>
        error ? reject(sidecarError('LISTEN_FAILED', `gRPC cannot listen on ${address}: ${error.message}`, field)) : resolve(port),
      ),
    );
  }

  private step(call: grpc.ServerUnaryCall<StepRequestMessage, unknown>, callback: grpc.sendUnaryData<unknown>): void {
    const started = process.hrtime.bigint();
    this.unary(callback, () => {
      const reply = messageFromOutcome(this.context.step(batchFromMessage(decoded(call.request))));
      this.context.metrics.observeStep('grpc', started);
      return reply;
    });
  }

  private unary(callback: grpc.sendUnaryData<unknown>, body: () => unknown): void {
    let reply: unknown;
    try {
      reply = body();
    } catch (error) {
      const coded = this.context.asCallError(error);
      const metadata = new grpc.Metadata();
      metadata.set('sam-error-code', coded.code);
      if (coded.field) metadata.set('sam-error-field', coded.field);
      callback({ code: coded.grpcStatus, details: coded.message, metadata });
      return;
    }
    callback(null, reply);
  }

  private healthOf(service: string): number {
    if (!(HEALTH_SERVICE_NAMES as readonly string[]).includes(service)) return ServingStatus.SERVICE_UNKNOWN;
    return this.context.ready ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
  }
}

/** The request, or a coded MALFORMED_MESSAGE where its bytes were not a message of its type. */
function decoded<T>(request: T): T {
  if (request instanceof UndecodableMessage) throw sidecarError('MALFORMED_MESSAGE', `not a ${request.type}: ${request.reason}`, 'message');
  return request;
}
