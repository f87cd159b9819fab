// Identifiers in a command are checked before the command reaches its room: a malformed
// room ID, user ID, server name or peek ID is refused with a typed error, nothing appended.
import { isValidDeviceId, isValidPeekId, isValidRoomId, isValidServerName, isValidUserId } from '../events/ids.ts';
import type { RoomCommand } from './commands.ts';
import { canonicalJson } from '../crypto/index.ts';
import type { PduDraft } from './commands.ts';
import { BadJsonError, InvalidInputError } from './errors.ts';

/** Event types and state keys, like IDs, are at most 255 bytes. */
const MAX_NAME_BYTES = 255;

function badName(what: string, value: unknown): InvalidInputError | null {
  if (typeof value !== 'string') return new InvalidInputError(`${what} must be a string`);
  if (value.includes('\u0000')) return new InvalidInputError(`${what} holds U+0000`);
  if (Buffer.byteLength(value, 'utf8') > MAX_NAME_BYTES) return new InvalidInputError(`${what} is longer than ${MAX_NAME_BYTES} bytes`);
  return null;
}

/** A draft's type, state key and content as an event can carry them. */
function checkDraft(e: PduDraft): InvalidInputError | BadJsonError | null {
  if (!isValidUserId(e.sender)) return new InvalidInputError(`malformed sender ${JSON.stringify(e.sender)}`);
  if (typeof e.type !== 'string' || e.type === '') return new InvalidInputError('an event type must be a non-empty string');
  const bad = badName('the event type', e.type) ?? (e.state_key !== undefined ? badName('the state key', e.state_key) : null);
  if (bad) return bad;
  if (e.content === null || typeof e.content !== 'object' || Array.isArray(e.content)) return new BadJsonError('event content must be a JSON object');
  try {
    canonicalJson(e.content);
  } catch (err) {
    return new BadJsonError(`event content is not canonical JSON: ${(err as Error).message}`);
  }
  return null;
}

export function validateCommand(cmd: RoomCommand): InvalidInputError | BadJsonError | null {
  if (!isValidRoomId(cmd.roomId)) return new InvalidInputError(`malformed room ID ${JSON.stringify(cmd.roomId)}`);
  switch (cmd.type) {
    case 'StartDevicePeek':
    case 'StopDevicePeek':
      if (!isValidUserId(cmd.userId)) return new InvalidInputError(`malformed user ID ${JSON.stringify(cmd.userId)}`);
      if (!isValidDeviceId(cmd.deviceId)) return new InvalidInputError(`malformed device ID ${JSON.stringify(cmd.deviceId)}`);
      return null;
    case 'StartInboundPeek':
    case 'RenewInboundPeek':
    case 'DeleteInboundPeek':
    case 'StartOutboundPeek':
    case 'RenewOutboundPeek':
      if (!isValidServerName(cmd.server)) return new InvalidInputError(`malformed server name ${JSON.stringify(cmd.server)}`);
      if (!isValidPeekId(cmd.peekId, cmd.roomId)) return new InvalidInputError(`malformed peek ID ${JSON.stringify(cmd.peekId)}`);
      if ('renewalIntervalMs' in cmd && !(Number.isInteger(cmd.renewalIntervalMs) && cmd.renewalIntervalMs > 0)) {
        return new InvalidInputError('renewal interval must be a positive integer');
      }
      return null;
    case 'EndOutboundPeek':
    case 'ReceivePdus':
      if (!isValidServerName(cmd.type === 'ReceivePdus' ? cmd.origin : cmd.server)) return new InvalidInputError('malformed server name');
      return null;
    case 'CreateRoom':
    case 'SendEvents':
      for (const e of cmd.events) {
        const bad = checkDraft(e);
        if (bad) return bad;
      }
      return null;
    case 'Tick':
      return null;
  }
  // A command from outside the type system (the admin API takes JSON): not one we know.
  return new InvalidInputError(`unknown command type ${JSON.stringify((cmd as { type?: unknown }).type)}`);
}
