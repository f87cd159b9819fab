// Server discovery: a configured map of server name → base URL first (loopback tests,
// private deployments), then /.well-known/matrix/server, then https://<name>:8448.
// A name with an explicit port, or an IP literal, is used as it is (no well-known).
import { isValidServerName } from '../events/ids';

const WELL_KNOWN_CACHE_MS = 60 * 60_000;
const WELL_KNOWN_TIMEOUT_MS = 5_000;

export class ServerResolver {
  private readonly wellKnown = new Map<string, { base: string; until: number }>();

  constructor(
    private readonly destinations: Record<string, string>,
    private readonly now: () => number = Date.now,
    private readonly fetchImpl: typeof fetch = (input, init) => fetch(input, init),
  ) {}

  async baseUrl(serverName: string): Promise<string> {
    const configured = Object.hasOwn(this.destinations, serverName) ? this.destinations[serverName] : undefined;
    if (configured) return configured.replace(/\/+$/, '');
    if (hasPort(serverName) || isIpLiteral(serverName)) return defaultBase(serverName);
    const cached = this.wellKnown.get(serverName);
    if (cached && cached.until > this.now()) return cached.base;
    let base = defaultBase(serverName);
    try {
      const res = await this.fetchImpl(`https://${serverName}/.well-known/matrix/server`, { signal: AbortSignal.timeout(WELL_KNOWN_TIMEOUT_MS) });
      if (res.ok) {
        const body = (await res.json()) as { 'm.server'?: unknown };
        const delegated = body['m.server'];
        if (typeof delegated === 'string' && isValidServerName(delegated)) base = defaultBase(delegated);
      }
    } catch {
      // no well-known: the default applies
    }
    this.wellKnown.set(serverName, { base, until: this.now() + WELL_KNOWN_CACHE_MS });
    return base;
  }
}

function hasPort(name: string): boolean {
  return /:\d+$/.test(name) && (!name.startsWith('[') || /\]:\d+$/.test(name));
}

function isIpLiteral(name: string): boolean {
  return name.startsWith('[') || /^\d{1,3}(\.\d{1,3}){3}(:\d+)?$/.test(name);
}

function defaultBase(serverName: string): string {
  return hasPort(serverName) ? `https://${serverName}` : `https://${serverName}:8448`;
}
