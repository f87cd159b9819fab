// The HTTP server: one Fastify app with the client API, the federation API and the admin
// API registered as plugins, one error handler, JSON everywhere.
import cors from '@fastify/cors';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Peekd } from '../server';
import { matrixErrorHandler, notJson, sendMatrixError, MatrixError } from './errors';
import { registerVersions } from './client/versions';
import { registerAdmin } from './admin/admin';

export interface HttpApp {
  app: FastifyInstance;
  /** From now on /_matrix/client/versions answers (scripts wait on it). */
  markReady(): void;
}

export async function buildHttpApp(peekd: Peekd): Promise<HttpApp> {
  const { config } = peekd;
  const app: FastifyInstance = Fastify({
    loggerInstance: peekd.logger.child({ component: 'http' }) as unknown as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.maxFederationBodyBytes,
    // Matrix IDs in paths (`!room:server`, `#alias:server`) must reach handlers intact.
    routerOptions: { maxParamLength: 1024 },
  });
  let ready = false;

  // Every body is JSON, whatever the client says its type is; malformed JSON is M_NOT_JSON.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch {
      done(notJson(), undefined);
    }
  });
  await app.register(cors, { origin: '*', methods: ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS'], allowedHeaders: ['X-Requested-With', 'Content-Type', 'Authorization'] });
  app.setErrorHandler(matrixErrorHandler);
  app.setNotFoundHandler((_req, reply) => sendMatrixError(reply, new MatrixError(404, 'M_UNRECOGNIZED', 'unrecognized request')));

  registerVersions(app, () => ready);
  registerAdmin(app, peekd);
  return { app, markReady: () => (ready = true) };
}
