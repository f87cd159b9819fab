// Structured logs (pino). Secrets never reach a log line: authorization headers, access
// tokens in query strings, passwords and key material are redacted at the serializer.
import { pino, type Logger } from 'pino';

const SECRET_QUERY = /([?&](?:access_token|token|password)=)[^&]*/gi;

export function redactUrl(url: string): string {
  return url.replace(SECRET_QUERY, '$1[redacted]');
}

export function createLogger(level: string, name = 'peekd'): Logger {
  return pino({
    name,
    level,
    redact: {
      paths: ['req.headers.authorization', 'headers.authorization', '*.password', '*.access_token', '*.accessToken', '*.seed', '*.signingKey'],
      censor: '[redacted]',
    },
    serializers: {
      req: (req: { method?: string; url?: string; ip?: string }) => ({ method: req.method, url: redactUrl(req.url ?? ''), ip: req.ip }),
    },
  });
}

export type { Logger };
