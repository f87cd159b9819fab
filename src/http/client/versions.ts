import type { FastifyInstance } from 'fastify';
import { MatrixError, sendMatrixError } from '../errors.ts';

export const SUPPORTED_VERSIONS = ['r0.6.1', 'v1.1', 'v1.2', 'v1.3', 'v1.4', 'v1.5', 'v1.6'];

/** GET /_matrix/client/versions answers only once peekd can serve everything else. */
export function registerVersions(app: FastifyInstance, isReady: () => boolean): void {
  app.get('/_matrix/client/versions', { config: { barrier: false } }, async (_req, reply) => {
    if (!isReady()) return sendMatrixError(reply, new MatrixError(503, 'M_UNKNOWN', 'peekd is starting'));
    return { versions: SUPPORTED_VERSIONS, unstable_features: { 'org.matrix.msc2753': true, 'org.matrix.msc2444': true } };
  });
}
