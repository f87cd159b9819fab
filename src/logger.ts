// Structured logs (pino). Secrets never reach a log line: authorization headers, access
// tokens in query strings, passwords and key material are redacted at the serializer.
import { pino, type Bindings, type ChildLoggerOptions, type Logger } from 'pino';

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

type Level = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

/**
 * A request's logger, as Fastify makes one per request (`childLoggerFactory`): the pino
 * child with the request's bindings is made only when a line is actually written at an
 * enabled level. A pino child serialises (and redacts) its bindings when it is made —
 * about a microsecond and a few objects per request. At `info` (the default) every request
 * writes its request line and so makes its child as before; at `warn` and above only
 * requests that log an error or a warning do.
 */
class LazyChildLogger {
  #real: Logger | undefined;
  constructor(
    private readonly parent: Logger,
    private readonly own: Bindings,
    private readonly options: ChildLoggerOptions,
  ) {}

  private real(): Logger {
    return (this.#real ??= this.parent.child(this.own, this.options));
  }

  private enabled(level: Level): boolean {
    if (this.#real) return this.#real.isLevelEnabled(level);
    const own = this.options.level;
    if (own === undefined) return this.parent.isLevelEnabled(level);
    const values = this.parent.levels.values;
    return (values[level] ?? 0) >= (values[own] ?? 0);
  }

  get level(): string {
    return this.#real?.level ?? this.options.level ?? this.parent.level;
  }
  set level(level: string) {
    this.real().level = level;
  }
  isLevelEnabled(level: Level): boolean {
    return this.enabled(level);
  }
  bindings(): Bindings {
    return this.real().bindings();
  }
  child(bindings: Bindings, options?: ChildLoggerOptions): Logger {
    return this.real().child(bindings, options);
  }
  private write(level: Level, args: unknown[]): void {
    if (this.enabled(level)) (this.real()[level] as (...a: unknown[]) => void)(...args);
  }
  fatal(...args: unknown[]): void {
    this.write('fatal', args);
  }
  error(...args: unknown[]): void {
    this.write('error', args);
  }
  warn(...args: unknown[]): void {
    this.write('warn', args);
  }
  info(...args: unknown[]): void {
    this.write('info', args);
  }
  debug(...args: unknown[]): void {
    this.write('debug', args);
  }
  trace(...args: unknown[]): void {
    this.write('trace', args);
  }
  silent(): void {}
}

/** Fastify's `childLoggerFactory`: each request's logger, made lazily (LazyChildLogger). */
export function lazyChildLogger(parent: Logger, bindings: Bindings, options: ChildLoggerOptions): Logger {
  return new LazyChildLogger(parent, bindings, options) as unknown as Logger;
}
