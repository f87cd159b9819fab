import type { FastifyInstance, RouteOptions } from 'fastify';

export const CLIENT_PREFIXES = ['/_matrix/client/v3', '/_matrix/client/r0'];
export const PEEK_PREFIXES = [...CLIENT_PREFIXES, '/_matrix/client/unstable/org.matrix.msc2753'];

/** Registers one route under every client API prefix (v3, r0, …). */
export function clientRoute(app: FastifyInstance, route: Omit<RouteOptions, 'url'> & { path: string }, prefixes = CLIENT_PREFIXES): void {
  const { path, ...rest } = route;
  for (const prefix of prefixes) app.route({ ...rest, url: `${prefix}${path}` } as RouteOptions);
}
