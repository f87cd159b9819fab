// m.room.server_acl evaluation (client-server spec, "Server Access Control Lists"). Pure.

function globToRegExp(glob: string): RegExp {
  const escaped = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${escaped}$`, 'i');
}

function hostOf(serverName: string): string {
  if (serverName.startsWith('[')) return serverName.slice(0, serverName.indexOf(']') + 1);
  const colon = serverName.lastIndexOf(':');
  return colon >= 0 ? serverName.slice(0, colon) : serverName;
}

function isIpLiteral(host: string): boolean {
  return host.startsWith('[') || /^\d{1,3}(\.\d{1,3}){3}$/.test(host);
}

/** Whether the room's server ACL (its m.room.server_acl content, if any) lets `serverName` in. */
export function serverAclAllows(acl: Record<string, unknown> | undefined, serverName: string): boolean {
  if (!acl) return true;
  const host = hostOf(serverName);
  if (acl.allow_ip_literals === false && isIpLiteral(host)) return false;
  const list = (v: unknown) => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
  if (list(acl.deny).some((g) => globToRegExp(g).test(host))) return false;
  return list(acl.allow).some((g) => globToRegExp(g).test(host));
}
