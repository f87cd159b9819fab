// (issue 14: to be written)
import type { FastifyInstance } from 'fastify';
import type { ClientContext } from './context.ts';

export function registerPresenceRoutes(_app: FastifyInstance, _ctx: ClientContext): void {}
