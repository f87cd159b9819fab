// The operator's web page at /_peekd/admin/: three static files (static/admin/ at the root
// of the checkout: no build step, nothing from a CDN) that read the admin JSON API with the
// token the operator types in. The page itself holds no data and needs no token; it is
// served only while the admin API is on.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { MatrixError } from '../../matrix/errors.ts';

/** From src/http/admin/ (or dist/http/admin/ once compiled): the checkout's static/admin/. */
export const ADMIN_STATIC_DIR = fileURLToPath(new URL('../../../static/admin/', import.meta.url));

export const ADMIN_PAGE_PATH = '/_peekd/admin/';

/**
 * Scripts and styles from this origin only, no inline script or style, no plugins, no
 * framing; the page talks to this origin's API and nothing else.
 */
export const ADMIN_PAGE_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  // `data:` for the empty favicon only (it keeps browsers from asking for /favicon.ico).
  "img-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

const ASSETS: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'admin.js': 'text/javascript; charset=utf-8',
  'admin.css': 'text/css; charset=utf-8',
};

/** Reads the page's files once. A file that is missing makes its route answer 404 (and is logged). */
function loadAssets(dir: string, logger?: Logger): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  for (const [name, type] of Object.entries(ASSETS)) {
    try {
      const body = readFileSync(join(dir, name));
      assets.set(name, { body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 16)}"` });
    } catch (err) {
      logger?.warn({ err, file: join(dir, name) }, 'an admin page file is missing; the page will not be served');
    }
  }
  return assets;
}

/**
 * Registers GET /_peekd/admin/ (and /_peekd/admin, which redirects there), admin.js and
 * admin.css. `enabled`: whether the admin API is on (PEEKD_ADMIN_TOKEN set); when it is not,
 * these answer 404 M_UNRECOGNIZED as the API does.
 */
export function registerAdminView(app: FastifyInstance, options: { enabled: boolean; logger?: Logger; dir?: string }): void {
  const assets = options.enabled ? loadAssets(options.dir ?? ADMIN_STATIC_DIR, options.logger) : new Map<string, Asset>();
  const off = () => new MatrixError(404, 'M_UNRECOGNIZED', 'the admin API is off (set PEEKD_ADMIN_TOKEN)');

  const send = (name: string) => async (req: FastifyRequest, reply: FastifyReply) => {
    if (!options.enabled) throw off();
    const asset = assets.get(name);
    if (!asset) throw new MatrixError(404, 'M_NOT_FOUND', `the admin page file ${name} is missing from ${options.dir ?? ADMIN_STATIC_DIR}`);
    reply
      .header('Content-Security-Policy', ADMIN_PAGE_CSP)
      .header('X-Content-Type-Options', 'nosniff')
      .header('Referrer-Policy', 'no-referrer')
      .header('X-Frame-Options', 'DENY')
      .header('Cross-Origin-Opener-Policy', 'same-origin')
      .header('Cache-Control', 'no-cache')
      .header('ETag', asset.etag)
      .type(asset.type);
    if (req.headers['if-none-match'] === asset.etag) return reply.code(304).send();
    return reply.send(asset.body);
  };

  // The router ignores trailing slashes, so this route also matches /_peekd/admin: that one
  // is sent to the slash form, against which the page's relative URLs (admin.js, v1/…) resolve.
  app.get(ADMIN_PAGE_PATH, async (req, reply) => {
    if (!options.enabled) throw off();
    const path = req.url.split('?')[0]!;
    if (!path.endsWith('/')) return reply.redirect(ADMIN_PAGE_PATH, 302);
    return send('index.html')(req, reply);
  });
  app.get(`${ADMIN_PAGE_PATH}index.html`, send('index.html'));
  app.get(`${ADMIN_PAGE_PATH}admin.js`, send('admin.js'));
  app.get(`${ADMIN_PAGE_PATH}admin.css`, send('admin.css'));
}
