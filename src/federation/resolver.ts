// Server discovery: a configured map of server name → base URL first (loopback tests,
// private deployments), then /.well-known/matrix/server, then https://<name>:8448.
export class ServerResolver {
  private readonly wellKnown = new Map<string, { base: string; until: number }>();

  constructor(
    private readonly destinations: Record<string, string>,
    private readonly now: () => number = Date.now,
  ) {}

  async baseUrl(serverName: string): Promise<string> {
    const configured = this.destinations[serverName];
    if (configured) return configured.replace(/\/+$/, '');
    const cached = this.wellKnown.get(serverName);
    if (cached && cached.until > this.now()) return cached.base;
    let base = defaultBase(serverName);
    if (!/:\d+$/.test(serverName) && !serverName.endsWith(']')) {
      try {
        const res = await fetch(`https://${serverName}/.well-known/matrix/server`, { signal: AbortSignal.timeout(5000) });
        if (res.ok) {
          const body = (await res.json()) as { 'm.server'?: unknown };
          if (typeof body['m.server'] === 'string' && body['m.server'] !== '') {
            const delegated = body['m.server'];
            base = `https://${/:\d+$/.test(delegated) ? delegated : `${delegated}:8448`}`;
          }
        }
      } catch {
        // no well-known: the default applies
      }
    }
    this.wellKnown.set(serverName, { base, until: this.now() + 60 * 60_000 });
    return base;
  }
}

function defaultBase(serverName: string): string {
  return /:\d+$/.test(serverName) ? `https://${serverName}` : `https://${serverName}:8448`;
}
