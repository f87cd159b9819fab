// validateCommand: malformed identifiers in a command are refused (InvalidInputError, naming
// the field) before the command reaches its room; well-formed commands pass (null).
import { describe, expect, it } from 'vitest';
import type { RoomCommand } from '../../src/actors/commands.ts';
import { InvalidInputError } from '../../src/actors/errors.ts';
import { validateCommand } from '../../src/actors/validateCommand.ts';

const ROOM = '!room:example.org';
const LONG_ROOM = `!${'r'.repeat(255 - '!:example.org'.length)}:example.org`; // exactly 255 bytes
const TOO_LONG_ROOM = `!${'r'.repeat(256 - '!:example.org'.length)}:example.org`; // 256 bytes
const TOO_LONG_USER = `@${'u'.repeat(256 - '@:example.org'.length)}:example.org`;

const valid: Record<RoomCommand['type'], RoomCommand> = {
  StartDevicePeek: { type: 'StartDevicePeek', roomId: ROOM, userId: '@bob:example.org', deviceId: 'BOBPHONE' },
  StopDevicePeek: { type: 'StopDevicePeek', roomId: ROOM, userId: '@bob:example.org', deviceId: 'BOBPHONE', reason: 'unpeeked' },
  StartInboundPeek: { type: 'StartInboundPeek', roomId: ROOM, server: 'remote.org', peekId: 'p1', roomVersions: ['10'] },
  RenewInboundPeek: { type: 'RenewInboundPeek', roomId: ROOM, server: 'remote.org:8448', peekId: 'p1' },
  DeleteInboundPeek: { type: 'DeleteInboundPeek', roomId: ROOM, server: '[::1]:8448', peekId: 'p1' },
  StartOutboundPeek: { type: 'StartOutboundPeek', roomId: '!far:remote.org', server: 'remote.org', peekId: 'o1', renewalIntervalMs: 3_600_000, pdus: [] },
  RenewOutboundPeek: { type: 'RenewOutboundPeek', roomId: '!far:remote.org', server: 'remote.org', peekId: 'o1', renewalIntervalMs: 1 },
  EndOutboundPeek: { type: 'EndOutboundPeek', roomId: '!far:remote.org', server: 'remote.org', reason: 'unpeeked' },
  Tick: { type: 'Tick', roomId: ROOM },
  CreateRoom: {
    type: 'CreateRoom',
    roomId: ROOM,
    roomVersion: '10',
    events: [{ type: 'm.room.create', sender: '@alice:example.org', content: {}, state_key: '' }],
  },
  SendEvents: { type: 'SendEvents', roomId: ROOM, events: [{ type: 'm.room.message', sender: '@alice:example.org', content: { body: 'hi' } }] },
  ReceivePdus: { type: 'ReceivePdus', roomId: '!far:remote.org', origin: 'remote.org', pdus: [] },
};
const commandTypes = Object.keys(valid) as RoomCommand['type'][];

function refused(cmd: RoomCommand, message: string | RegExp): void {
  const err = validateCommand(cmd);
  expect(err).toBeInstanceOf(InvalidInputError);
  expect(err!.code).toBe('invalid');
  if (typeof message === 'string') expect(err!.message).toContain(message);
  else expect(err!.message).toMatch(message);
}

describe('validateCommand', () => {
  it.each(commandTypes)('accepts a well-formed %s', (type) => {
    expect(validateCommand(valid[type])).toBeNull();
  });

  describe('room IDs (every command)', () => {
    const malformed = ['', 'room:example.org', '#room:example.org', '!:example.org', '!room', '!room:', '!room:exa mple.org', '!ro om:example.org', '!room:example.org:70000', TOO_LONG_ROOM];
    for (const type of commandTypes) {
      it.each(malformed)(`${type} refuses room ID %j`, (roomId) => {
        refused({ ...valid[type], roomId } as RoomCommand, `malformed room ID ${JSON.stringify(roomId)}`);
      });
    }

    it.each(commandTypes)('%s accepts a room ID of exactly 255 bytes', (type) => {
      expect(Buffer.byteLength(LONG_ROOM)).toBe(255);
      expect(validateCommand({ ...valid[type], roomId: LONG_ROOM } as RoomCommand)).toBeNull();
    });
  });

  describe('device peeks: user and device IDs', () => {
    const peekCommands = ['StartDevicePeek', 'StopDevicePeek'] as const;
    const badUsers = ['', 'bob:example.org', '@:example.org', '@bob', '@b b:example.org', '@bob:exa_mple.org', '@bób:example.org', TOO_LONG_USER];

    for (const type of peekCommands) {
      it.each(badUsers)(`${type} refuses user ID %j`, (userId) => {
        refused({ ...valid[type], userId } as RoomCommand, `malformed user ID ${JSON.stringify(userId)}`);
      });

      it.each(['', 'A B', 'x'.repeat(256)])(`${type} refuses device ID %j`, (deviceId) => {
        refused({ ...valid[type], deviceId } as RoomCommand, `malformed device ID ${JSON.stringify(deviceId)}`);
      });

      it(`${type} accepts historical user IDs and long device IDs`, () => {
        expect(validateCommand({ ...valid[type], userId: '@Bob=1:example.org:8448', deviceId: 'x'.repeat(255) } as RoomCommand)).toBeNull();
      });
    }
  });

  describe('federation peeks: server names and peek IDs', () => {
    const fedCommands = ['StartInboundPeek', 'RenewInboundPeek', 'DeleteInboundPeek', 'StartOutboundPeek', 'RenewOutboundPeek'] as const;

    for (const type of fedCommands) {
      it.each(['', 'remote org', 'remote.org:', 'remote.org:65536', 'remote_org', '[::1'])(`${type} refuses server %j`, (server) => {
        refused({ ...valid[type], server } as RoomCommand, `malformed server name ${JSON.stringify(server)}`);
      });

      it.each(['', '123456789', 'p 1', 'p!', 'pé', '!other:example.org', '!far:remote.org.'])(`${type} refuses peek ID %j`, (peekId) => {
        refused({ ...valid[type], peekId } as RoomCommand, `malformed peek ID ${JSON.stringify(peekId)}`);
      });

      it.each(['a', '12345678', 'A.=_-9zZ'])(`${type} accepts peek ID %j`, (peekId) => {
        expect(validateCommand({ ...valid[type], peekId } as RoomCommand)).toBeNull();
      });

      it(`${type} accepts the room ID as peek ID`, () => {
        const cmd = valid[type];
        expect(validateCommand({ ...cmd, peekId: cmd.roomId } as RoomCommand)).toBeNull();
      });
    }

    for (const type of ['StartOutboundPeek', 'RenewOutboundPeek'] as const) {
      it.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY])(`${type} refuses renewal interval %s`, (renewalIntervalMs) => {
        refused({ ...valid[type], renewalIntervalMs } as RoomCommand, 'renewal interval must be a positive integer');
      });
    }
  });

  describe('other commands', () => {
    it.each(['', 'remote org', 'remote.org:99999'])('EndOutboundPeek refuses server %j', (server) => {
      refused({ ...valid.EndOutboundPeek, server } as RoomCommand, 'malformed server name');
    });

    it.each(['', 'remote org', 'remote.org:99999'])('ReceivePdus refuses origin %j', (origin) => {
      refused({ ...valid.ReceivePdus, origin } as RoomCommand, 'malformed server name');
    });

    it.each(['CreateRoom', 'SendEvents'] as const)('%s refuses a malformed sender anywhere in the batch', (type) => {
      const cmd = valid[type] as Extract<RoomCommand, { events: unknown }>;
      const events = [...cmd.events, { type: 'm.room.message', sender: '@ev il:example.org', content: {} }];
      refused({ ...cmd, events } as RoomCommand, 'malformed sender "@ev il:example.org"');
    });

    it('Tick checks only the room ID', () => {
      expect(validateCommand({ type: 'Tick', roomId: '!r:example.org' })).toBeNull();
      refused({ type: 'Tick', roomId: 'r:example.org' }, 'malformed room ID');
    });
  });
});
