// Server ACLs (m.room.server_acl): whether a server may take part in a room, as the
// server-server API's "Server Access Control Lists" section defines it.

function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 'i');
}

function isIpLiteral(host: string): boolean {
  return host.startsWith('[') || /^\d{1,3}(\.\d{1,3}){3}$/.test(host);
}

/** The host part of a server name (no port). */
function hostOf(serverName: string): string {
  if (serverName.startsWith('[')) return serverName.slice(0, serverName.indexOf(']') + 1);
  const colon = serverName.lastIndexOf(':');
  return colon === -1 ? serverName : serverName.slice(0, colon);
}

/** True when the room's ACL (its content; null = no ACL) lets `serverName` in. */
export function serverAllowedByAcl(serverName: string, acl: Record<string, unknown> | null | undefined): boolean {
  if (!acl) return true;
  const host = hostOf(serverName);
  const list = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
  if (acl.allow_ip_literals === false && isIpLiteral(host)) return false;
  if (list(acl.deny).some((g) => globToRegExp(g).test(host))) return false;
  return list(acl.allow).some((g) => globToRegExp(g).test(host));
}
