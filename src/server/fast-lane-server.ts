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
    // Beyond it the kernel's connection is closed at once: the shim fails open and retries later.
    this.server.maxConnections = context.config.limits.maxConnections;
    this.socketFile = new SocketFile(path, 'fast lane');
  }

  private readonly socketFile: SocketFile;

  async listen(): Promise<void> {
    prepareSocketDirectory(dirname(this.path), this.context.config.socketMode, 'socket');
    await removeStaleSocket(this.path, 'socket');
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.path, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.socketFile.bound(this.context.config.socketMode);
  }

  /** Why the socket this server answers on is unusable (gone, or replaced by another process), or null. */
  socketProblem(): string | null {
    return this.socketFile.problem();
  }

  /** Stops accepting, lets connections finish what they sent, then closes them and removes the socket file. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.end();
    await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 500))]);
    for (const socket of this.sockets) socket.destroy();
    this.socketFile.remove();
  }

  private accept(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', (error) => this.context.logger.debug({ err: error }, 'fast-lane connection error'));
    const ids = new IdBlockCache();
    let framesDone = 0;
    const splitter = new FrameSplitter(
      this.context.config.limits.maxMessageBytes,
      (frame) => {
        framesDone++;
        socket.write(answerFrame(this.context, frame, 'uds', ids));
      },
      (length, callId) => {
        const error = sidecarError('MESSAGE_TOO_LARGE', `frame of ${length} bytes, limit ${this.context.config.limits.maxMessageBytes}`, 'length');
        this.context.countCallError(error);
        socket.write(encodeError(error, callId));
      },
    );
    const limits = this.context.config.limits;
    let stalled: NodeJS.Timeout | null = null;
    let counted = 0; // this connection's share of bufferedBytes
    const drop = (why: string) => {
      this.context.logger.warn({ reason: why }, 'fast-lane connection closed');
      socket.destroy();
    };
    socket.on('data', (chunk: Buffer) => {
      const before = framesDone;
      splitter.push(chunk);
      const pending = splitter.pendingBytes;
      if ((pending > 0) !== (counted > 0)) this.context.framesArriving += pending > 0 ? 1 : -1;
      this.buffered += pending - counted;
      counted = pending;
      if (this.buffered > limits.maxBufferedBytes) return drop(`incomplete frames across connections past limits.maxBufferedBytes (${limits.maxBufferedBytes})`);
      // An incomplete frame must complete within partialFrameSeconds; each frame completed restarts the clock.
      if (stalled !== null && (pending === 0 || framesDone > before)) {
        clearTimeout(stalled);
        stalled = null;
      }
      if (pending > 0 && stalled === null) {
        stalled = setTimeout(() => drop(`a frame still incomplete after limits.partialFrameSeconds (${limits.partialFrameSeconds} s)`), limits.partialFrameSeconds * 1000);
        stalled.unref();
      }
    });
    socket.on('close', () => {
      if (stalled !== null) clearTimeout(stalled);
      if (counted > 0) this.context.framesArriving--;
      this.buffered -= counted;
      counted = 0;
    });
  }

  /** Bytes of incomplete frames held across connections (bounded by limits.maxBufferedBytes). */
  get bufferedBytes(): number {
    return this.buffered;
  }

  private buffered = 0;
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
 * A Unix socket file a server serves on. Only the file this process bound (by inode) is ever
 * removed, and a file gone or replaced by another process is reported.
 */
export class SocketFile {
  private inode: number | null = null;

  constructor(
    readonly path: string,
    private readonly label: string,
  ) {}

  /** Sets the mode of the socket file this process just bound and remembers which file it is. */
  bound(mode: string): void {
    chmodSync(this.path, parseInt(mode, 8));
    this.inode = statSync(this.path).ino;
  }

  /** Why clients cannot reach this server through the file (not bound, gone, replaced), or null. */
  problem(): string | null {
    if (this.inode === null) return `${this.label} ${this.path} is not listening`;
    try {
      return statSync(this.path).ino === this.inode ? null : `socket ${this.path} was replaced by another process`;
    } catch {
      return `socket ${this.path} is gone`;
    }
  }

  /** Removes the file if it is still the one this process bound. */
  remove(): void {
    if (this.inode !== null && this.problem() === null) rmSync(this.path, { force: true });
    this.inode = null;
  }
}

/**
 * The directory a socket is bound in. Whoever can write to it can replace the socket with their
 * own and receive the shim's steps, so it must belong to this process's user (or root) and not be
 * writable by others. Created here when missing: owner-only, plus group read and search when
 * `socketMode` grants the group access (the shim of another user in the same group, as in a pod).
 */
export function prepareSocketDirectory(dir: string, socketMode: string, field: string): void {
  const mode = (parseInt(socketMode, 8) & 0o070) !== 0 ? 0o750 : 0o700;
  if (!existsSync(dir)) {
    mkdirSync(dir, { recursive: true, mode });
    chmodSync(dir, mode); // whatever the umask
    return;
  }
  const stats = statSync(dir);
  const uid = process.getuid?.();
  const problems: string[] = [];
  if (!stats.isDirectory()) problems.push('it is not a directory');
  if (uid !== undefined && stats.uid !== uid && stats.uid !== 0) problems.push(`it belongs to uid ${stats.uid}, not to this process (uid ${uid}) or root`);
  if ((stats.mode & 0o002) !== 0) problems.push(`others may write to it (mode ${(stats.mode & 0o7777).toString(8)})`);
  if (problems.length > 0) {
    throw sidecarError('SOCKET_DIR_UNSAFE', `${dir}: ${problems.join('; ')}. Use a directory of this user's that others cannot write to (or remove ${dir} to have it created owner-only)`, field);
  }
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
