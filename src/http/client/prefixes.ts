import type { FastifyInstance, RouteOptions } from 'fastify';
import { isAuthHook } from './auth.ts';

export const CLIENT_PREFIXES = ['/_matrix/client/v3', '/_matrix/client/r0'];
export const PEEK_PREFIXES = [...CLIENT_PREFIXES, '/_matrix/client/unstable/org.matrix.msc2753'];

/**
 * Registers one route under every client API prefix (v3, r0, …). Its access-token check
 * (`preHandler: auth`, from requireAuth) runs before the body is parsed into errors and
 * validated: as a preValidation hook, with the body checked once the token is (bodyAfterAuth).
 */
export function clientRoute(app: FastifyInstance, route: Omit<RouteOptions, 'url'> & { path: string }, prefixes = CLIENT_PREFIXES): void {
  const { path, ...rest } = route;
  const options = isAuthHook(rest.preHandler) ? { ...rest, preHandler: undefined, preValidation: rest.preHandler, config: { ...(rest.config as object | undefined), bodyAfterAuth: true } } : rest;
  for (const prefix of prefixes) app.route({ ...options, url: `${prefix}${path}` } as RouteOptions);
}
