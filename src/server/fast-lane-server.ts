/**
 * Fast-lane transport: binary frames (proto/fast-lane.md) over a Unix domain socket. Decodes,
 * calls the core, encodes; one reply per frame, in order.
 */
import { chmodSync, existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import { sidecarError } from '../core/errors.js';
import {
  decodeRelease,
  decodeStep,
  encodeCount,
  encodeEmpty,
  encodeError,
  encodeStepReply,
  FRAME_PREFIX,
  FrameKind,
  FrameSplitter,
  IdBlockCache,
  readHeader,
} from '../protocol/fast-lane.js';
import type { Transport } from '../protocol/transports.js';
import type { SidecarContext } from './context.js';

export class FastLaneServer {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  constructor(
    private readonly context: SidecarContext,
    readonly path: string,
  ) {
    this.server = net.createServer((socket) => this.accept(socket));
  }

  /** The socket file this process bound (its inode), or null: only that file is ever removed. */
  private boundSocket: BoundSocket | null = null;

  async listen(): Promise<void> {
    mkdirSync(dirname(this.path), { recursive: true });
    await removeStaleSocket(this.path, 'socket');
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.path, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.boundSocket = bindSocketFile(this.path, this.context.config.socketMode);
  }

  /** Why the socket this server answers on is unusable (gone, or replaced by another process), or null. */
  socketProblem(): string | null {
    return this.boundSocket === null ? `fast lane ${this.path} is not listening` : socketFileProblem(this.boundSocket);
  }

  /** Stops accepting, lets connections finish what they sent, then closes them and removes the socket file. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.end();
    await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 500))]);
    for (const socket of this.sockets) socket.destroy();
    if (this.boundSocket !== null) removeBoundSocket(this.boundSocket);
    this.boundSocket = null;
  }

  private accept(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', (error) => this.context.logger.debug({ err: error }, 'fast-lane connection error'));
    const ids = new IdBlockCache();
    const splitter = new FrameSplitter(
      this.context.config.limits.maxMessageBytes,
      (frame) => socket.write(answerFrame(this.context, frame, 'uds', ids)),
      (length, callId) => {
        const error = sidecarError('MESSAGE_TOO_LARGE', `frame of ${length} bytes, limit ${this.context.config.limits.maxMessageBytes}`, 'length');
        this.context.countCallError(error);
        socket.write(encodeError(error, callId));
      },
    );
    socket.on('data', (chunk: Buffer) => splitter.push(chunk));
  }
}

/**
 * Answers one fast-lane request frame with its reply frame; every failure becomes an ERROR_REPLY.
 * Shared by the socket transport and gRPC's FastLane call (`transport` labels the step metric).
 */
export function answerFrame(context: SidecarContext, frame: Buffer, transport: Transport, ids?: IdBlockCache): Buffer {
  const started = process.hrtime.bigint();
  let callId = frame.length >= 12 ? frame.readUInt32LE(8) : 0;
  try {
    const header = readHeader(frame);
    callId = header.callId;
    // A frame that did not come through the socket's splitter (gRPC's FastLane) brings its own length.
    if (frame.readUInt32LE(0) !== frame.length - FRAME_PREFIX) throw sidecarError('MALFORMED_FRAME', `length prefix ${frame.readUInt32LE(0)}, ${frame.length - FRAME_PREFIX} bytes follow it`, 'length');
    switch (header.kind) {
      case FrameKind.STEP: {
        const reply = encodeStepReply(context.step(decodeStep(frame, ids)), callId);
        context.metrics.observeStep(transport, started);
        return reply;
      }
      case FrameKind.RELEASE: {
        const { engineId, reqIds } = decodeRelease(frame);
        return encodeCount(FrameKind.RELEASE_REPLY, context.release(engineId, reqIds), callId);
      }
      case FrameKind.PING:
        context.expectStep();
        return encodeEmpty(FrameKind.PONG, callId);
      default:
        throw sidecarError('MALFORMED_FRAME', `unknown frame kind ${header.kind}`, 'kind');
    }
  } catch (error) {
    return encodeError(context.asCallError(error), callId);
  }
}

export interface BoundSocket {
  readonly path: string;
  readonly inode: number;
}

/** Sets the mode of a socket file this process just bound and remembers which file it is. */
export function bindSocketFile(path: string, mode: string): BoundSocket {
  chmodSync(path, parseInt(mode, 8));
  return { path, inode: statSync(path).ino };
}

/** Why a bound socket file is unusable: gone, or replaced by another process's. */
export function socketFileProblem(bound: BoundSocket): string | null {
  try {
    return statSync(bound.path).ino === bound.inode ? null : `socket ${bound.path} was replaced by another process`;
  } catch {
    return `socket ${bound.path} is gone`;
  }
}

/** Removes a socket file only if it is still the one this process bound. */
export function removeBoundSocket(bound: BoundSocket): void {
  if (socketFileProblem(bound) === null) rmSync(bound.path, { force: true });
}

/**
 * A socket file left by a killed sidecar would make listen() fail. It is removed only when nobody
 * answers on it, so a second sidecar never steals a live one's socket.
 */
export async function removeStaleSocket(path: string, field: string): Promise<void> {
  if (!existsSync(path)) return;
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw sidecarError('LISTEN_FAILED', `another process is listening on ${path}: is a sidecar already running? Stop it, or give this one another ${field}`, field);
  rmSync(path, { force: true });
}
