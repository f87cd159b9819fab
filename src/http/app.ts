// The HTTP server: one Fastify app with the client API, the federation API and the admin
// API registered as plugins, one error handler, JSON everywhere.
import cors from '@fastify/cors';
import { randomUUID } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify';
import type { HttpApp, Peekd } from '../peekd.ts';
import rateLimit from '@fastify/rate-limit';
import { badJson, invalidParam, limitExceeded, matrixClientErrorHandler, matrixErrorHandler, sendMatrixError, toMatrixError, MatrixError } from './errors.ts';
import { bodyAfterAuth, checkBody, deferBodyError, isFederationRequest } from './bodyChecks.ts';
import { parseJsonBody } from './jsonBody.ts';
import { unstorableString } from '../matrix/storable.ts';
import { registerAccountRoutes } from './client/account.ts';
import { registerDirectoryRoutes } from './client/directory.ts';
import { registerMiscRoutes } from './client/misc.ts';
import { registerPeekRoutes } from './client/peek.ts';
import { registerHistoryRoutes } from './client/history.ts';
import { registerRoomRoutes } from './client/rooms/index.ts';
import { registerSyncRoutes } from './client/sync.ts';
import { registerVersions } from './client/versions.ts';
import { registerPreviewRoutes } from './client/preview.ts';
import { registerPublicRoomsRoutes } from './client/publicRooms.ts';
import { registerProfileRoutes } from './client/profile.ts';
import { registerPresenceRoutes } from './client/presence.ts';
import { registerAccountDataRoutes } from './client/accountData.ts';
import { registerAdmin } from './admin/admin.ts';
import { registerFederationRoutes } from './federation/routes.ts';
import { SharedRateLimitStore } from './rateLimitStore.ts';
import { registerFederationHistoryRoutes } from './federation/history.ts';
import { lazyChildLogger, type Logger } from '../logger.ts';
import { httpRequestDurationSeconds, httpRequestsTotal } from '../metrics.ts';
import type { Health } from '../health.ts';

export type { HttpApp } from '../peekd.ts';

/** CORS as the client-server specification asks of every client API route; any OPTIONS is answered 204 (a preflight or not). */
export const CORS_OPTIONS = {
  origin: '*',
  methods: ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS'],
  allowedHeaders: ['X-Requested-With', 'Content-Type', 'Authorization'],
  strictPreflight: false,
};

export async function buildHttpApp(peekd: Peekd): Promise<HttpApp> {
  const { config } = peekd;
  const app: FastifyInstance = Fastify({
    loggerInstance: peekd.logger.child({ component: 'http' }) as unknown as FastifyBaseLogger,
    // Fastify's own request lines are off: peekd writes one line per request itself (onResponse).
    // The request ID is `req_id` in every line: the request's, and the command, actor and
    // append lines of the commands it sends (their command IDs start with it).
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'req_id' }),
    // Each request's child logger is made when the request first writes a line, not for
    // every request (src/logger.ts).
    childLoggerFactory: (logger, bindings, options) => lazyChildLogger(logger as unknown as Logger, bindings, options) as unknown as FastifyBaseLogger,
    bodyLimit: config.maxFederationBodyBytes,
    // Matrix IDs in paths (`!room:server`, `#alias:server`) must reach handlers intact.
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH, ignoreTrailingSlash: true },
    // Headers (or a request line) past Node's limit: a Matrix error, not Fastify's own body.
    clientErrorHandler: matrixClientErrorHandler,
    // The router's own refusals (an ID past MAX_PARAM_LENGTH, a malformed %-escape): Matrix errors too.
    frameworkErrors: (err, _req, reply) => {
      // Matrix IDs are at most 255 bytes: a longer one is malformed (400), as a shorter one past 255 is.
      if (err.code === 'FST_ERR_MAX_PARAM_LENGTH') return sendMatrixError(reply, new MatrixError(400, 'M_INVALID_PARAM', `a path parameter is longer than ${MAX_PARAM_LENGTH} characters`));
      if (err.code === 'FST_ERR_BAD_URL') return sendMatrixError(reply, new MatrixError(400, 'M_INVALID_PARAM', 'the path is not a valid URL'));
      return sendMatrixError(reply, toMatrixError(err));
    },
    // Shutdown closes idle keep-alive connections at once and lets requests in flight
    // finish (drainHttp).
    forceCloseConnections: 'idle',
    // Validation checks types; it never coerces or fills them in.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false } },
    genReqId: () => randomUUID(),
  });
  let ready = false;
  // Every hook peekd adds to every request is synchronous (callback style) unless it must
  // wait: an async hook costs a promise and a trip through the microtask queue per request.
  // The request ID names the commands this request sends (their envelopes in the log).
  app.addHook('onRequest', (req, reply, done) => {
    reply.header('X-Request-Id', req.id);
    done();
  });
  // One line per request, and its metrics: the route pattern, never the URL (which may
  // hold an access_token) — unmatched URLs count as one route.
  app.addHook('onResponse', (req, reply, done) => {
    const route = req.routeOptions.url ?? 'unmatched';
    const status = reply.statusCode;
    const seconds = reply.elapsedTime / 1000;
    httpRequestsTotal.inc({ method: req.method, route, status });
    httpRequestDurationSeconds.observe({ method: req.method, route }, seconds);
    req.log.info({ method: req.method, route, status, ms: Math.round(seconds * 10_000) / 10 }, 'request');
    done();
  });

  // Every body is JSON, whatever the client says its type is: strict UTF-8, valid JSON,
  // bounded nesting (src/http/jsonBody.ts).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (req, body, done) => {
    // A body that is refused here waits on the request when the route authenticates first
    // (the federation API, client routes that need a token: src/http/bodyChecks.ts), so a
    // request without valid credentials is 401 whatever it carries.
    const refuse = (err: MatrixError) => {
      if (!bodyAfterAuth(req)) return done(err, undefined);
      deferBodyError(req, err);
      done(null, undefined);
    };
    const parsed = parseJsonBody(body as Buffer);
    if (!parsed.ok) return refuse(parsed.error);
    // Postgres cannot store U+0000 nor a lone surrogate in text or jsonb: refuse them at the
    // edge rather than let something that can never be projected into the log. (Federation
    // checks each PDU on its own.)
    if (!isFederationRequest(req)) {
      const bad = unstorableString(parsed.value);
      if (bad) return refuse(badJson(`the body holds ${bad}, which is not supported`));
    }
    done(null, parsed.value);
  });
  // Matrix responses are `application/json` exactly: Fastify would add `; charset=utf-8`,
  // which some established client test suites refuse.
  app.addHook('onSend', (_req, reply, payload, done) => {
    const type = reply.getHeader('content-type');
    if (typeof type === 'string' && type.startsWith('application/json')) reply.header('content-type', 'application/json');
    done(null, payload);
  });
  await app.register(cors, CORS_OPTIONS);
  app.setErrorHandler(matrixErrorHandler);
  // An unknown endpoint is 404 M_UNRECOGNIZED; a known one asked with a method it does not
  // take is 405 M_UNRECOGNIZED, as the client-server specification says.
  app.setNotFoundHandler((req, reply) => {
    const allowed = ROUTED_METHODS.filter((method) => method !== req.method && app.findRoute({ method, url: req.url }) !== null);
    if (allowed.length === 0) return sendMatrixError(reply, new MatrixError(404, 'M_UNRECOGNIZED', 'unrecognized request'));
    reply.header('Allow', allowed.join(', '));
    return sendMatrixError(reply, new MatrixError(405, 'M_UNRECOGNIZED', `${req.method} is not supported on this endpoint`));
  });

  // Client API bodies have their own, smaller limit.
  app.addHook('onRoute', (route) => {
    if (route.url.startsWith('/_matrix/client') && route.bodyLimit === undefined) route.bodyLimit = config.maxClientBodyBytes;
  });
  // Every body is a JSON object (no Matrix endpoint takes anything else), checked before
  // any handler looks at state: other JSON is M_BAD_JSON, and a route with a body schema
  // that gets no body at all answers M_NOT_JSON.
  app.addHook('preValidation', (req, _reply, done) => {
    try {
      checkParams(req);
      // The federation API checks the body after the request's signature (requireServerAuth),
      // client routes that need a token after the token (requireAuth).
      if (!bodyAfterAuth(req)) checkBody(req);
    } catch (err) {
      return done(err as Error);
    }
    done();
  });
  await app.register(rateLimit, { global: false, store: SharedRateLimitStore, errorResponseBuilder: (_req, context) => limitExceeded(context.ttl) });

  registerVersions(app, () => ready);
  registerOperationsRoutes(app, peekd.health, !peekd.config.metricsListen);
  if (peekd.client) {
    // Read your writes (src/projections/readBarrier.ts): writes answer once the log has
    // them; any other client request first waits until every write this process
    // acknowledged is in the tables it reads (almost always already true: a comparison, no
    // wait). Client routes that read no projection, or see to it themselves, say
    // `config: { barrier: false }`; other routes that read one (federation history) say
    // `barrier: true`. Keys, versions and the rest never wait on a projection.
    const barrier = peekd.client.barrier;
    app.addHook('preHandler', (req, _reply, done) => {
      const waiting = (req.routeOptions.config?.barrier ?? req.url.startsWith('/_matrix/client/')) ? barrier.pendingReads() : undefined;
      if (waiting) waiting.then(() => done(), done);
      else done();
    });
    registerAccountRoutes(app, peekd.client);
    registerPeekRoutes(app, peekd.client);
    registerRoomRoutes(app, peekd.client);
    registerHistoryRoutes(app, peekd.client);
    registerDirectoryRoutes(app, peekd.client);
    registerSyncRoutes(app, peekd.client);
    registerMiscRoutes(app, peekd.client);
    registerPreviewRoutes(app, peekd.client);
    registerPublicRoomsRoutes(app, peekd.client);
    registerProfileRoutes(app, peekd.client);
    registerPresenceRoutes(app, peekd.client);
    registerAccountDataRoutes(app, peekd.client);
  }
  registerFederationRoutes(app, peekd.federation);
  registerFederationHistoryRoutes(app, peekd.federation);
  registerAdmin(app, peekd);
  return { app, markReady: () => (ready = true) };
}

/**
 * No path parameter holds U+0000, no query parameter U+0000 or a lone surrogate, and the
 * client and admin APIs take each query parameter once (except the specification's lists).
 * Throws the Matrix error otherwise. (The body: checkBody, src/http/bodyChecks.ts.)
 */
function checkParams(req: FastifyRequest): void {
  // Path parameters are IDs, types and keys: none may hold U+0000 (it could never be stored).
  for (const [name, value] of Object.entries((req.params ?? {}) as Record<string, unknown>)) {
    if (typeof value === 'string' && value.includes('\u0000')) throw invalidParam(`the path parameter ${name} holds U+0000`);
  }
  // Nor may a query parameter's name or value: handlers hand them to Postgres as filter
  // IDs, tokens, device IDs.
  const bad = unstorableString(req.query ?? {}); // names and values
  if (bad) throw invalidParam(`a query parameter holds ${bad}`);
  // The client and admin APIs take every query parameter once, except the lists the
  // specification gives (`server_name`, `via`); a repeated one is refused rather than
  // read as an array by code that expects a string.
  if (!isFederationRequest(req) && !req.url.startsWith('/_matrix/key')) {
    for (const [name, value] of Object.entries((req.query ?? {}) as Record<string, unknown>)) {
      if (Array.isArray(value) && !REPEATABLE_QUERY.has(name)) throw invalidParam(`the query parameter ${name} is given more than once`);
    }
  }
}

/**
 * The methods a route may answer, to tell a known endpoint asked with the wrong method from an
 * unknown one. Not OPTIONS: the CORS preflight route matches every URL. HEAD comes with GET.
 */
const ROUTED_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH'] as const;

/** Client API query parameters that are lists (given once per item). */
const REPEATABLE_QUERY: ReadonlySet<string> = new Set(['server_name', 'via']);

/** The longest path parameter (an ID) the router matches; Matrix IDs are at most 255 bytes. */
const MAX_PARAM_LENGTH = 1024;

declare module 'fastify' {
  interface FastifyContextConfig {
    /** false: the route reads no projection before it answers, or waits for what it needs itself (read your writes). */
    barrier?: boolean;
  }
}

/** `GET /health`, `GET /ready` and (unless it has a listener of its own) `GET /metrics`. */
export function registerOperationsRoutes(app: FastifyInstance, health: Health, metrics: boolean): void {
  app.get('/health', { config: { barrier: false } }, async () => ({ status: 'ok' }));
  app.get('/ready', { config: { barrier: false } }, async (_req, reply) => {
    const { ready, reasons } = await health.readiness();
    return reply.code(ready ? 200 : 503).send({ ready, reasons });
  });
  if (metrics) {
    app.get('/metrics', { config: { barrier: false } }, async (_req, reply) => {
      const body = await health.metrics();
      return reply.type('text/plain; version=0.0.4; charset=utf-8').send(body);
    });
  }
}

/** /metrics, /health and /ready on a listener of their own (PEEKD_METRICS_LISTEN), off the public port. */
export async function startOpsListener(health: Health, host: string, port: number): Promise<FastifyInstance> {
  const app = Fastify({ forceCloseConnections: true });
  registerOperationsRoutes(app, health, true);
  await app.listen({ host, port });
  return app;
}

/**
 * Closes the HTTP server gracefully: new connections are refused (and new requests on open
 * ones answered 503), `release` makes open long-polls answer with what they have, requests
 * in flight finish and each connection closes once idle. Past `graceMs`, whatever is still
 * open is closed.
 */
export async function drainHttp(app: FastifyInstance, release: () => void, graceMs: number): Promise<void> {
  const closed = app.close();
  release();
  const sweep = setInterval(() => app.server.closeIdleConnections(), 20);
  const force = setTimeout(() => app.server.closeAllConnections(), graceMs);
  try {
    await closed;
  } finally {
    clearInterval(sweep);
    clearTimeout(force);
  }
}
