/**
 * Fast-lane transport: binary frames (proto/fast-lane.md) over a Unix domain socket. Decodes,
 * calls the core, encodes; one reply per frame, in order.
 */
import { chmodSync, existsSync, mkdirSync, rmSync } from 'node:fs';
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

  async listen(): Promise<void> {
    mkdirSync(dirname(this.path), { recursive: true });
    await removeStaleSocket(this.path);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.path, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    chmodSync(this.path, parseInt(this.context.config.socketMode, 8));
  }

  /** Stops accepting, lets connections finish what they sent, then closes them and removes the socket file. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.end();
    await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 500))]);
    for (const socket of this.sockets) socket.destroy();
    rmSync(this.path, { force: true });
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

/**
 * A socket file left by a killed sidecar would make listen() fail. It is removed only when nobody
 * answers on it, so a second sidecar never steals a live one's socket.
 */
export async function removeStaleSocket(path: string): Promise<void> {
  if (!existsSync(path)) return;
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw sidecarError('CONFIG_INVALID', `another process is listening on ${path}`, 'socket');
  rmSync(path, { force: true });
}
