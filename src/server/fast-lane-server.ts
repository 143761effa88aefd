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
  FrameKind,
  FrameSplitter,
  IdBlockCache,
  readHeader,
} from '../protocol/fast-lane.js';
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
      (frame) => socket.write(this.handle(frame, ids)),
      (length, callId) => {
        const error = sidecarError('MESSAGE_TOO_LARGE', `frame of ${length} bytes, limit ${this.context.config.limits.maxMessageBytes}`, 'length');
        this.context.countCallError(error);
        socket.write(encodeError(error, callId));
      },
    );
    socket.on('data', (chunk: Buffer) => splitter.push(chunk));
  }

  private handle(frame: Buffer, ids: IdBlockCache): Buffer {
    const started = process.hrtime.bigint();
    let callId = frame.length >= 12 ? frame.readUInt32LE(8) : 0;
    try {
      const header = readHeader(frame);
      callId = header.callId;
      switch (header.kind) {
        case FrameKind.STEP: {
          const reply = encodeStepReply(this.context.step(decodeStep(frame, ids)), callId);
          this.context.metrics.observeStep('uds', started);
          return reply;
        }
        case FrameKind.RELEASE: {
          const { engineId, reqIds } = decodeRelease(frame);
          return encodeCount(FrameKind.RELEASE_REPLY, this.context.release(engineId, reqIds), callId);
        }
        case FrameKind.PING:
          return encodeEmpty(FrameKind.PONG, callId);
        default:
          throw sidecarError('MALFORMED_FRAME', `unknown frame kind ${header.kind}`, 'kind');
      }
    } catch (error) {
      return encodeError(this.context.asCallError(error), callId);
    }
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
