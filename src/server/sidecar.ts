/**
 * The sidecar process: one core service behind the fast lane, gRPC and HTTP, with periodic
 * maintenance (idle eviction, token budget) and graceful shutdown.
 */
import { readFileSync } from 'node:fs';
import { pino, type Logger } from 'pino';
import { StepService } from '../core/step-service.js';
import { packageVersion } from '../package-root.js';
import type { SidecarConfig } from './config.js';
import { SidecarContext } from './context.js';
import { FastLaneServer } from './fast-lane-server.js';
import { GrpcServer } from './grpc-server.js';
import { HttpServer } from './http-server.js';
import { MemoryWatch } from './memory-watch.js';
import { PrefaultedArrays } from './prefaulted-arrays.js';
import { SidecarMetrics } from './metrics.js';
import { RedisSharing, redactedUrl } from '../sharing/redis-sharing.js';
import { warmUp } from './warm-up.js';

export interface Sidecar {
  readonly context: SidecarContext;
  readonly fastLane: FastLaneServer;
  readonly grpc: GrpcServer;
  readonly http: HttpServer;
  /** Not ready, drain, close every transport, remove the socket files. Idempotent. */
  close(): Promise<void>;
}

/**
 * Whether the large arrays of long contexts get transparent huge pages: the kernel's mode, and
 * where that is madvise, glibc's tunable (the image sets it). Without them, first-touch page
 * faults can cost more than the indexing itself on a VM.
 */
function hugePagesState(): string {
  let mode: string;
  try {
    mode = /\[(\w+)\]/.exec(readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))?.[1] ?? 'unknown';
  } catch {
    return 'unavailable';
  }
  if (mode !== 'madvise') return mode;
  return /glibc\.malloc\.hugetlb=1/.test(process.env.GLIBC_TUNABLES ?? '') ? 'madvise, on' : 'madvise, off (set GLIBC_TUNABLES=glibc.malloc.hugetlb=1)';
}

export function createLogger(config: Readonly<SidecarConfig>): Logger {
  return pino({ level: config.log.level, base: { service: 'sam-sidecar' } });
}

export function createService(config: Readonly<SidecarConfig>): StepService {
  return new StepService(
    {
      maxK: config.limits.maxK,
      requestTtlMs: config.limits.requestTtlSeconds * 1000,
      maxTokens: config.memory.maxTokens,
      stepCacheSize: config.limits.stepCacheSize,
      maxRequestsPerStep: config.limits.maxRequestsPerStep,
      maxEngines: config.limits.maxEngines,
      ingestTokensPerStep: config.limits.ingestTokensPerStep,
      maxBytes: config.memory.maxBytes,
    },
    config.gate,
    { ...config.drafting, historyTokens: config.memory.historyTokens, corpusTokens: config.memory.corpusTokens, shareText: config.sharing.redis.url !== null },
  );
}

/**
 * @param configSource where the config came from (a file path, or "embedded defaults"), for the
 *   ready line.
 */
export async function startSidecar(config: Readonly<SidecarConfig>, logger: Logger = createLogger(config), configSource = 'given by the caller'): Promise<Sidecar> {
  if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) throw new Error('sam-sidecar needs a little-endian host (the fast lane copies token arrays as bytes)');
  const service = createService(config);
  const { url, ...redis } = config.sharing.redis;
  // Connects in the background: a sidecar whose Redis is away starts, and drafts from local state.
  const sharing = url === null ? null : new RedisSharing({ ...redis, url }, logger);
  service.sharedText = sharing;
  const metrics = new SidecarMetrics(service, sharing);
  const context = new SidecarContext(config, service, metrics, logger);
  if (sharing !== null) sharing.onArrival = () => context.scheduleIdleWork(); // applied between steps
  // Compaction's arrays and large grown ones are made resident by a worker thread; started here so
  // its memory counts as the runtime's.
  const prefaulted = new PrefaultedArrays();
  prefaulted.onReady = () => {
    if (prefaulted.problem !== null) logger.warn({ problem: prefaulted.problem }, 'memory is made resident on the event loop: the prefault worker is gone');
    context.scheduleIdleWork();
  };
  service.draftEngine.arraySupply = prefaulted;
  service.draftEngine.growthMemory = prefaulted;
  metrics.watchPrefaultedArrays(prefaulted);
  const fastLane = new FastLaneServer(context, config.socket);
  const grpcServer = new GrpcServer(context, config.grpc.socket || undefined, config.grpc.tcp);
  const http = new HttpServer(context, () => [fastLane.socketProblem(), grpcServer.socketProblem()].filter((problem): problem is string => problem !== null));
  try {
    await http.listen(); // probes answer (not ready) while the rest starts
    await fastLane.listen();
    await grpcServer.listen();
  } catch (error) {
    // Whatever did start is closed again, so a failed start leaves no port or socket behind; a
    // socket file is removed only by the process that bound it.
    await Promise.allSettled([http.close(), fastLane.close(), grpcServer.close(), prefaulted.close()]);
    throw error;
  }
  const warmUpStarted = Date.now();
  warmUp(createService(config), config.warmUpSteps);
  // What the process holds beyond the core's budget and the frames being received: the runtime's own.
  const runtimeBytes = process.memoryUsage.rss();
  const memoryWatch = new MemoryWatch(() => runtimeBytes + config.memory.maxBytes + fastLane.bufferedBytes);
  metrics.watchMemory(memoryWatch);
  const maintenance = setInterval(() => {
    service.maintain(Date.now());
    if (memoryWatch.check()) logger.debug({ rss: process.memoryUsage.rss(), collections: memoryWatch.collections }, 'RSS above the byte budget: garbage collection started');
  }, config.memory.maintenanceIntervalMs);
  maintenance.unref();
  // Publishes the engine's new text on a timer, off every step's path; reads in the background.
  sharing?.start(() => service.draftEngine.takeOutbound());
  context.ready = true;
  logger.info(
    {
      version: packageVersion(),
      config: configSource,
      socket: config.socket,
      grpc: grpcServer.addresses,
      http: http.address,
      gate: config.gate.mode,
      threshold: config.gate.threshold,
      sharing: url === null ? 'off' : { redis: redactedUrl(url), keyPrefix: redis.keyPrefix },
      warmUpMs: Date.now() - warmUpStarted,
      hugePages: hugePagesState(),
    },
    'sam-sidecar ready',
  );

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      context.ready = false;
      context.busyPoll.stop();
      grpcServer.notifyNotServing();
      clearInterval(maintenance);
      logger.info({ drainMs: config.shutdown.drainMs }, 'sam-sidecar draining');
      // Steps are answered synchronously, so none is half done; for drainMs clients get NOT_READY
      // (the shim fails open) and probes report not ready, then the sockets close.
      if (config.shutdown.drainMs > 0) await new Promise((resolve) => setTimeout(resolve, config.shutdown.drainMs));
      await Promise.all([fastLane.close(), grpcServer.close()]);
      await sharing?.close();
      await http.close();
      await prefaulted.close();
      logger.info('sam-sidecar closed');
    })();
    return closing;
  };
  return { context, fastLane, grpc: grpcServer, http, close };
}
