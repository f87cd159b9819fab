// Identifiers in a command are checked before the command reaches its room: a malformed
// room ID, user ID, server name or peek ID is refused with a typed error, nothing appended.
import { isValidDeviceId, isValidPeekId, isValidRoomId, isValidServerName, isValidUserId } from '../events/ids';
import type { RoomCommand } from './commands';
import { InvalidInputError } from './errors';

export function validateCommand(cmd: RoomCommand): InvalidInputError | null {
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
      for (const e of cmd.events) if (!isValidUserId(e.sender)) return new InvalidInputError(`malformed sender ${JSON.stringify(e.sender)}`);
      return null;
    case 'Tick':
      return null;
  }
}
