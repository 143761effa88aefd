/**
 * HTTP transport (fastify, TCP, 127.0.0.1 by default): probes, Prometheus metrics, a JSON Step for
 * debugging and tools, and read-only introspection.
 */
import { timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { SidecarError, sidecarError } from '../core/errors.js';
import { batchFromMessage, jsonFromOutcome, parseStepJson } from '../protocol/messages.js';
import { redactedUrl } from '../sharing/redis-config.js';
import type { SidecarContext } from './context.js';

export class HttpServer {
  readonly app: FastifyInstance;
  address = '';

  /**
   * @param socketProblems why a socket this sidecar serves is unusable (one line each); /readyz
   *   fails while there is any.
   */
  constructor(
    private readonly context: SidecarContext,
    private readonly socketProblems: () => string[] = () => [],
  ) {
    const app = Fastify({ logger: false, bodyLimit: context.config.limits.maxMessageBytes });
    this.app = app;
    app.setErrorHandler((error, _request, reply) => {
      const coded = this.context.asCallError(fromFastifyError(error));
      void reply.status(coded.httpStatus).send(coded.toJSON());
    });
    app.setNotFoundHandler((request, reply) => {
      void reply.status(404).send(sidecarError('NOT_FOUND', `no route ${request.method} ${request.url}`, 'url').toJSON());
    });

    app.get('/livez', async () => ({ status: 'ok' }));
    app.get('/readyz', async (_request, reply) => {
      if (!this.context.ready) return reply.status(503).send({ status: 'not ready' });
      // A socket file deleted or taken over by another process leaves this sidecar unreachable.
      const problems = this.socketProblems();
      if (problems.length > 0) return reply.status(503).send({ status: 'not ready', problems });
      return { status: 'ready' };
    });
    app.get('/metrics', async (_request, reply) => {
      const registry = this.context.metrics.registry;
      return reply.header('content-type', registry.contentType).send(await registry.metrics());
    });

    if (context.config.http.jsonStep) this.jsonStepRoutes();
    this.readOnlyRoutes();
  }

  /**
   * Routes that change state or show a request's text: with http.token, only with it
   * (Authorization: Bearer <token>); without one, only on a loopback host (anyone who can reach a
   * port bound to the network could otherwise read other engines' drafts or drop their requests).
   */
  private readonly guarded = async (request: FastifyRequest): Promise<void> => {
    const { token, host } = this.context.config.http;
    if (token === undefined) {
      if (isLoopback(host)) return;
      throw sidecarError('FORBIDDEN', `${request.method} ${request.url.split('?')[0]} is closed on ${host} without http.token (SAM_SIDECAR_HTTP_TOKEN)`, 'authorization');
    }
    const given = Buffer.from(/^Bearer (.+)$/.exec(request.headers.authorization ?? '')?.[1] ?? '');
    const expected = Buffer.from(token);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw sidecarError('FORBIDDEN', 'missing or wrong bearer token', 'authorization');
  };

  /** Step and release: they change state, so they can be turned off (http.jsonStep). */
  private jsonStepRoutes(): void {
    const app = this.app;
    app.post('/v1/step', { preHandler: [requireJson, this.guarded] }, async (request) => {
      const started = process.hrtime.bigint();
      const reply = jsonFromOutcome(this.context.step(batchFromMessage(parseStepJson(request.body))));
      this.context.metrics.observeStep('http', started);
      return reply;
    });
    app.post('/v1/release', { preHandler: [requireJson, this.guarded] }, async (request) => {
      const body = request.body as { engineId?: unknown; engine_id?: unknown; reqIds?: unknown; req_ids?: unknown } | null;
      const engineId = body?.engineId ?? body?.engine_id;
      const reqIds = body?.reqIds ?? body?.req_ids;
      if (typeof engineId !== 'string') throw sidecarError('INVALID_ARGUMENT', 'engineId must be a string', 'engineId');
      if (!Array.isArray(reqIds) || !reqIds.every((id) => typeof id === 'string')) throw sidecarError('INVALID_ARGUMENT', 'reqIds must be an array of strings', 'reqIds');
      return { released: this.context.release(engineId, reqIds as string[]) };
    });
    for (const url of ['/v1/step', '/v1/release']) {
      app.route({
        method: ['GET', 'PUT', 'DELETE', 'PATCH'],
        url,
        handler: async (request, reply) => reply.header('allow', 'POST').status(405).send(sidecarError('METHOD_NOT_ALLOWED', `${request.method} ${url}: use POST`, 'method').toJSON()),
      });
    }
  }

  private readOnlyRoutes(): void {
    const app = this.app;

    app.get('/v1/stats', async () => this.context.stats());
    app.get('/v1/memory', async () => {
      const { tokensIndexed, bytes, maxTokens, historyTokens, corpusTokens, accountedBytes, maxBytes } = this.context.service.stats();
      return { tokens: tokensIndexed, bytes, maxTokens, historyTokens, corpusTokens, bytesPerToken: tokensIndexed > 0 ? bytes / tokensIndexed : 0, accountedBytes, maxBytes };
    });
    app.get('/v1/config', { preHandler: this.guarded }, async () => redactedConfig(this.context.config));
    app.get('/v1/gates', async () => ({ gates: this.context.service.gates() }));
    app.get<{ Params: { engine: string; req: string } }>('/v1/engines/:engine/requests/:req', { preHandler: this.guarded }, async (request, reply) => {
      const view = this.context.service.describe(request.params.engine, request.params.req);
      if (view === undefined) {
        const error = sidecarError('UNKNOWN_REQUEST', `request ${JSON.stringify(request.params.req)} of engine ${JSON.stringify(request.params.engine)}`, 'req_id');
        return reply.status(404).send(error.toJSON());
      }
      return { ...view, gate: this.context.service.gateAcceptance(request.params.engine) };
    });
  }

  async listen(): Promise<void> {
    const { host, port } = this.context.config.http;
    try {
      await this.app.listen({ host, port });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
        throw sidecarError('LISTEN_FAILED', `HTTP cannot listen on ${host}:${port} (${code}): is a sidecar already running? Stop it, or set another http.port (SAM_SIDECAR_HTTP_PORT)`, 'http.port');
      }
      throw error;
    }
    const bound = this.app.server.address();
    this.address = typeof bound === 'object' && bound !== null ? `http://${host}:${bound.port}` : String(bound);
  }

  get port(): number {
    const bound = this.app.server.address();
    return typeof bound === 'object' && bound !== null ? bound.port : 0;
  }

  async close(): Promise<void> {
    await this.app.close();
  }
}

/** Fastify's own failures (bad JSON, too large, wrong content type) as catalogue codes. */
/** A body that is not declared JSON gets 415 before anything else looks at it. */
async function requireJson(request: FastifyRequest): Promise<void> {
  const type = request.headers['content-type'] ?? '';
  if (!/^application\/json\b/i.test(type)) throw sidecarError('UNSUPPORTED_MEDIA_TYPE', type === '' ? 'no content-type' : `content-type ${type}`, 'content-type');
}

function fromFastifyError(error: unknown): unknown {
  if (error instanceof SidecarError) return error;
  const code = (error as { code?: string }).code ?? '';
  const message = (error as Error).message;
  if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') return sidecarError('MESSAGE_TOO_LARGE', message, 'body');
  if (code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return sidecarError('UNSUPPORTED_MEDIA_TYPE', message, 'content-type');
  if (code.startsWith('FST_ERR_CTP') || (error as { statusCode?: number }).statusCode === 400) return sidecarError('INVALID_ARGUMENT', message, 'body');
  return error;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** The config as served: secrets replaced. */
function redactedConfig(config: SidecarContext['config']): unknown {
  const redis = config.sharing.redis;
  return {
    ...config,
    http: { ...config.http, token: config.http.token === undefined ? undefined : '***' },
    sharing: { ...config.sharing, redis: { ...redis, password: redis.password === undefined ? undefined : '***', url: redis.url === null ? null : redactedUrl(redis.url) } },
  };
}
