// Matrix identifier grammar, checked before any command reaches a room actor.
// Pure: no I/O. See the Matrix specification appendix "Identifier Grammar".

const MAX_ID_BYTES = 255;

/** A server name: hostname (DNS name, IPv4, or [IPv6]) with an optional port. */
const SERVER_NAME = /^(?:\[[0-9A-Fa-f:.]{2,45}\]|[0-9A-Za-z.-]{1,255})(?::[0-9]{1,5})?$/;
const USER_LOCALPART = /^[!-9;-~]+$/; // historical: printable ASCII except ':'
const PEEK_ID = /^[0-9A-Za-z.=_-]{1,8}$/;

function byteLength(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

export function isValidServerName(name: string): boolean {
  if (typeof name !== 'string' || !SERVER_NAME.test(name)) return false;
  const port = name.match(/:([0-9]{1,5})$/);
  if (port && !name.startsWith('[') && Number(port[1]) > 65535) return false;
  if (name.startsWith('[') && /\]:(\d+)$/.test(name) && Number(name.match(/\]:(\d+)$/)![1]) > 65535) return false;
  return true;
}

/** Splits `<sigil>localpart:server` at the first colon. */
function splitSigilled(id: string, sigil: string): { local: string; server: string } | null {
  if (typeof id !== 'string' || byteLength(id) > MAX_ID_BYTES || !id.startsWith(sigil)) return null;
  const colon = id.indexOf(':');
  if (colon < 2) return null;
  const local = id.slice(1, colon);
  const server = id.slice(colon + 1);
  if (!isValidServerName(server)) return null;
  return { local, server };
}

export function isValidRoomId(id: string): boolean {
  const parts = splitSigilled(id, '!');
  return parts !== null && !/[\s\0]/.test(parts.local);
}

export function isValidRoomAlias(alias: string): boolean {
  const parts = splitSigilled(alias, '#');
  return parts !== null && !/[\s\0:]/.test(parts.local);
}

export function isValidUserId(id: string): boolean {
  const parts = splitSigilled(id, '@');
  return parts !== null && USER_LOCALPART.test(parts.local);
}

/**
 * Event IDs: `$` and an opaque rest (room version 3+ IDs are a URL-safe base64 hash; older
 * ones carry `:server`), at most 255 bytes, no whitespace or NUL.
 */
export function isValidEventId(id: string): boolean {
  return typeof id === 'string' && id.length > 1 && id.startsWith('$') && byteLength(id) <= MAX_ID_BYTES && !/[\s\0]/.test(id);
}

/** Device IDs are opaque; we only bound them. */
export function isValidDeviceId(id: string): boolean {
  return typeof id === 'string' && id.length > 0 && byteLength(id) <= MAX_ID_BYTES && !/[\s\0]/.test(id);
}

/**
 * MSC2444 peek IDs: 1–8 characters of [0-9A-Za-z.=_-]. A peek ID equal to the room ID
 * is accepted too, because Dendrite uses the room ID as its peek ID.
 */
export function isValidPeekId(peekId: string, roomId: string): boolean {
  return typeof peekId === 'string' && (PEEK_ID.test(peekId) || peekId === roomId);
}

/** The server part of a room ID, alias or user ID. */
export function serverOf(id: string): string {
  return id.slice(id.indexOf(':') + 1);
}

export function localpartOf(id: string): string {
  return id.slice(1, id.indexOf(':'));
}
