// Executable specification of the room-event commands of the room decider: CreateRoom,
// SendEvents (authorisation, idempotency, the peeks a new state ends) and ReceivePdus.
import { describe, it } from 'vitest';
import type { PduDraft, RoomCommand } from '../../src/actors/commands.ts';
import { BadStateError, DomainError, ForbiddenError, InvalidInputError, NotFoundError } from '../../src/actors/errors.ts';
import type { StoredEvent } from '../../src/actors/evolve.ts';
import {
  ALICE,
  BOB,
  CAROL,
  DAVE,
  REMOTE,
  REMOTE_ROOM,
  ROOM,
  T0,
  asReceived,
  device,
  devicePeekAt,
  given,
  inbound,
  inboundPeekAt,
  member,
  message,
  outbound,
  outboundPeekAt,
  peekExpired,
  publicRoom,
  remoteRoom,
  stateEvent,
  worldReadableRoom,
} from './decider.spec-helpers.ts';

const NEW_ROOM = '!new:example.org';
const room = worldReadableRoom();

const draft = (type: string, sender: string, content: Record<string, unknown>, state_key?: string): PduDraft =>
  state_key === undefined ? { type, sender, content } : { type, sender, content, state_key };
const createDraft = (sender = ALICE): PduDraft => draft('m.room.create', sender, { room_version: '10' }, '');
const joinDraft = (userId: string): PduDraft => draft('m.room.member', userId, { membership: 'join' }, userId);
const msgDraft = (sender: string, body = 'hello'): PduDraft => draft('m.room.message', sender, { msgtype: 'm.text', body });
const hvDraft = (sender: string, hv: string): PduDraft => draft('m.room.history_visibility', sender, { history_visibility: hv }, '');
const encDraft = (sender: string): PduDraft => draft('m.room.encryption', sender, { algorithm: 'm.megolm.v1.aes-sha2' }, '');

const presetEvents = (creator = ALICE): PduDraft[] => [
  createDraft(creator),
  joinDraft(creator),
  draft('m.room.power_levels', creator, { users: { [creator]: 100 } }, ''),
  draft('m.room.join_rules', creator, { join_rule: 'public' }, ''),
  hvDraft(creator, 'world_readable'),
];

const create = (events: PduDraft[], roomId = NEW_ROOM): RoomCommand => ({ type: 'CreateRoom', roomId, roomVersion: '10', events });
const send = (events: PduDraft[], txn?: { deviceId: string; txnId: string }, roomId = ROOM): RoomCommand =>
  txn ? { type: 'SendEvents', roomId, events, txn } : { type: 'SendEvents', roomId, events };
const receive = (pdus: ReturnType<typeof asReceived>, roomId = REMOTE_ROOM, origin = REMOTE): RoomCommand => ({
  type: 'ReceivePdus',
  roomId,
  origin,
  pdus,
});

describe('CreateRoom', () => {
  it('accepts a room that starts with m.room.create: the drafts, in order, nothing else', () => {
    const events = presetEvents();
    given([]).when(create(events)).then({ drafts: events });
  });

  it('refuses a room that does not start with m.room.create (InvalidInputError)', () => {
    given([])
      .when(create([joinDraft(ALICE), createDraft()]))
      .thenThrows(InvalidInputError, 'a room starts with m.room.create');
  });

  it('refuses an empty event list (InvalidInputError)', () => {
    given([]).when(create([])).thenThrows(InvalidInputError, 'a room starts with m.room.create');
  });

  it('refuses a room that already exists (BadStateError)', () => {
    given(room).when(create(presetEvents(), ROOM)).thenThrows(BadStateError, `room ${ROOM} already exists`);
  });

  it('refuses a room ID on another server (InvalidInputError)', () => {
    given([]).when(create(presetEvents(), '!new:remote.org')).thenThrows(InvalidInputError, 'rooms are created on their own server');
  });

  it('refuses an m.room.create with a non-empty state key', () => {
    given([])
      .when(create([draft('m.room.create', ALICE, {}, 'x')]))
      .thenThrows(InvalidInputError, 'empty state key');
  });

  it('authorises every draft: a message by a non-member is refused', () => {
    given([])
      .when(create([createDraft(), joinDraft(ALICE), msgDraft(BOB)]))
      .thenThrows(ForbiddenError, `${BOB} is not in the room`);
  });

  it('only the creator joins an invite-only room without an invite', () => {
    given([])
      .when(create([createDraft(), joinDraft(BOB)]))
      .thenThrows(ForbiddenError, 'not invited');
  });

  // Regression (was a bug): room version 10 auth rules, m.room.create rule 2: "If the domain of the room_id does
  // not match the domain of the sender, reject." decideCreateRoom checks the room ID's server
  // but not the creator's, so a room on example.org "created" by @mallory:evil.org is
  // accepted; roomServerOf (derived from the creator) then says the room is hosted on
  // evil.org, and every later SendEvents to it is refused.
  it('refuses an m.room.create whose sender is on another server than the room ID', () => {
    given([])
      .when(create([createDraft('@mallory:evil.org')]))
      .thenThrows(DomainError);
  });
});

describe('SendEvents', () => {
  const bobJoined = (): StoredEvent[] => [...room, member(40, '$bob-join', BOB, 'join')];

  it('refuses an unknown room (NotFoundError)', () => {
    given([])
      .when(send([msgDraft(ALICE)]))
      .thenThrows(NotFoundError, `unknown room ${ROOM}`);
  });

  it('refuses a room hosted on another server (ForbiddenError)', () => {
    given(remoteRoom())
      .when(send([msgDraft(CAROL)], undefined, REMOTE_ROOM))
      .thenThrows(ForbiddenError, 'does not host the room');
  });

  it('refuses a message by a non-member (ForbiddenError)', () => {
    given(room)
      .when(send([msgDraft(BOB)]))
      .thenThrows(ForbiddenError, `${BOB} is not in the room`);
  });

  it('refuses a message by a user who left', () => {
    given([...bobJoined(), member(44, '$bob-leave', BOB, 'leave')])
      .when(send([msgDraft(BOB)]))
      .thenThrows(ForbiddenError, 'not in the room');
  });

  it('a member sends a message → one draft, no peek changes (peeks stay alive)', () => {
    const history = [...room, devicePeekAt(1, BOB, 'BOBPHONE', T0), inboundPeekAt(2, REMOTE, 'p1', T0)];
    given(history)
      .when(send([msgDraft(ALICE)]), { now: T0 + 1 })
      .then({ drafts: [msgDraft(ALICE)] });
  });

  it('an empty batch decides nothing', () => {
    given(room).when(send([])).then({});
  });

  it('refuses a state event without enough power level (ForbiddenError)', () => {
    given(bobJoined())
      .when(send([draft('m.room.topic', BOB, { topic: 'mine' }, '')]))
      .thenThrows(ForbiddenError, 'you do not have a high enough power level to send m.room.topic');
  });

  it('the same state event by a user with power 100 is accepted', () => {
    const topic = draft('m.room.topic', ALICE, { topic: 'ours' }, '');
    given(bobJoined())
      .when(send([topic]))
      .then({ drafts: [topic] });
  });

  it('a refused history_visibility change ends no peek', () => {
    const history = [...bobJoined(), devicePeekAt(1, DAVE, 'DAVEPC', T0)];
    given(history)
      .when(send([hvDraft(BOB, 'shared')]), { now: T0 + 1 })
      .thenThrows(ForbiddenError, 'power level');
  });

  it('refuses state keyed by another user ID', () => {
    given(room)
      .when(send([draft('m.room.member', ALICE, { membership: 'join' }, BOB)]))
      .thenThrows(ForbiddenError, 'you can only join as yourself');
  });

  it('one refused draft refuses the whole batch', () => {
    given(room)
      .when(send([msgDraft(ALICE), msgDraft(BOB)]))
      .thenThrows(ForbiddenError, `${BOB} is not in the room`);
  });

  it('drafts are authorised against the room as the earlier drafts leave it (join, then speak)', () => {
    given(room)
      .when(send([joinDraft(BOB), msgDraft(BOB)]))
      .then({ drafts: [joinDraft(BOB), msgDraft(BOB)] });
  });

  describe('idempotent transactions', () => {
    const TXN = { deviceId: 'ALICEDEV', txnId: 't1' };
    const sent = (): StoredEvent[] => [...bobJoined(), message(45, '$sent', ALICE, 'hello', { txn: TXN })];

    it('the same (device, txnId) again → existingEventId, no drafts', () => {
      given(sent())
        .when(send([msgDraft(ALICE)], TXN))
        .then({ existingEventId: '$sent' });
    });

    it('a retried transaction is answered even if it would no longer be authorised', () => {
      given([...sent(), member(50, '$alice-leave', ALICE, 'leave')])
        .when(send([msgDraft(ALICE)], TXN))
        .then({ existingEventId: '$sent' });
    });

    it('another txnId on the same device is a new event', () => {
      given(sent())
        .when(send([msgDraft(ALICE)], { deviceId: 'ALICEDEV', txnId: 't2' }))
        .then({ drafts: [msgDraft(ALICE)] });
    });

    it('the same txnId on another device is a new event', () => {
      given(sent())
        .when(send([msgDraft(ALICE)], { deviceId: 'ALICEPC', txnId: 't1' }))
        .then({ drafts: [msgDraft(ALICE)] });
    });

    // Regression (was a bug): the idempotency key is (deviceId, txnId) only. Device IDs are unique per user, not
    // globally (client-server API: transaction IDs are scoped to the user's device/access
    // token), so another user whose device happens to have the same ID and reuses the txnId
    // gets alice's event ID back and their own message is silently dropped. The key needs the
    // sender (or the authenticated user) in it.
    it('the same (deviceId, txnId) of ANOTHER user is a new event', () => {
      given(sent())
        .when(send([msgDraft(BOB)], { deviceId: 'ALICEDEV', txnId: 't1' }))
        .then({ drafts: [msgDraft(BOB)] });
    });
  });

  describe('membership', () => {
    it('a join to a public room is accepted', () => {
      given(room)
        .when(send([joinDraft(BOB)]))
        .then({ drafts: [joinDraft(BOB)] });
    });

    it('a join to an invite-only room is refused (ForbiddenError)', () => {
      given(publicRoom({ joinRule: 'invite' }))
        .when(send([joinDraft(BOB)]))
        .thenThrows(ForbiddenError, 'you are not invited to this room');
    });

    it('an invited user may join an invite-only room', () => {
      const history = [...publicRoom({ joinRule: 'invite' }), member(40, '$bob-invite', BOB, 'invite', { sender: ALICE })];
      given(history)
        .when(send([joinDraft(BOB)]))
        .then({ drafts: [joinDraft(BOB)] });
    });

    it('a banned user may not join a public room', () => {
      const history = [...room, member(40, '$bob-ban', BOB, 'ban', { sender: ALICE })];
      given(history)
        .when(send([joinDraft(BOB)]))
        .thenThrows(ForbiddenError, 'banned');
    });
  });

  describe('peeks the new state ends', () => {
    const NOW = T0 + 1_000;
    // BOB peeks on two devices, DAVE on one, remote.org peeks inbound as p1.
    const peeked = (): StoredEvent[] => [...room, devicePeekAt(1, BOB, 'BOBPHONE', T0), devicePeekAt(2, BOB, 'BOBLAPTOP', T0), devicePeekAt(3, DAVE, 'DAVEPC', T0), inboundPeekAt(4, REMOTE, 'p1', T0)];

    it.each(['shared', 'invited', 'joined'])('history_visibility → %s ends every device and inbound peek (visibility_changed)', (hv) => {
      given(peeked())
        .when(send([hvDraft(ALICE, hv)]), { now: NOW })
        .then({
          drafts: [hvDraft(ALICE, hv)],
          peeks: [
            peekExpired(device(BOB, 'BOBPHONE'), NOW, 'visibility_changed'),
            peekExpired(device(BOB, 'BOBLAPTOP'), NOW, 'visibility_changed'),
            peekExpired(device(DAVE, 'DAVEPC'), NOW, 'visibility_changed'),
            peekExpired(inbound(REMOTE, 'p1'), NOW, 'visibility_changed'),
          ],
        });
    });

    it('history_visibility → world_readable again ends nothing', () => {
      given(peeked())
        .when(send([hvDraft(ALICE, 'world_readable')]), { now: NOW })
        .then({ drafts: [hvDraft(ALICE, 'world_readable')] });
    });

    it('m.room.encryption ends every device and inbound peek (encrypted)', () => {
      given(peeked())
        .when(send([encDraft(ALICE)]), { now: NOW })
        .then({
          drafts: [encDraft(ALICE)],
          peeks: [
            peekExpired(device(BOB, 'BOBPHONE'), NOW, 'encrypted'),
            peekExpired(device(BOB, 'BOBLAPTOP'), NOW, 'encrypted'),
            peekExpired(device(DAVE, 'DAVEPC'), NOW, 'encrypted'),
            peekExpired(inbound(REMOTE, 'p1'), NOW, 'encrypted'),
          ],
        });
    });

    it('encryption wins over a visibility change in the same batch', () => {
      given(peeked())
        .when(send([hvDraft(ALICE, 'shared'), encDraft(ALICE)]), { now: NOW })
        .then({
          drafts: [hvDraft(ALICE, 'shared'), encDraft(ALICE)],
          peeks: [
            peekExpired(device(BOB, 'BOBPHONE'), NOW, 'encrypted'),
            peekExpired(device(BOB, 'BOBLAPTOP'), NOW, 'encrypted'),
            peekExpired(device(DAVE, 'DAVEPC'), NOW, 'encrypted'),
            peekExpired(inbound(REMOTE, 'p1'), NOW, 'encrypted'),
          ],
        });
    });

    it("a user's join ends that user's device peeks (all devices) with 'joined', and nothing else", () => {
      given(peeked())
        .when(send([joinDraft(BOB)]), { now: NOW })
        .then({
          drafts: [joinDraft(BOB)],
          peeks: [peekExpired(device(BOB, 'BOBPHONE'), NOW, 'joined'), peekExpired(device(BOB, 'BOBLAPTOP'), NOW, 'joined')],
        });
    });

    it("another user's join leaves every peek alone", () => {
      const ERIN = '@erin:example.org';
      given(peeked())
        .when(send([joinDraft(ERIN)]), { now: NOW })
        .then({ drafts: [joinDraft(ERIN)] });
    });

    it('an invite of a peeking user does not end their peek', () => {
      const invite = draft('m.room.member', ALICE, { membership: 'invite' }, DAVE);
      given(peeked())
        .when(send([invite]), { now: NOW })
        .then({ drafts: [invite] });
    });
  });
});

describe('ReceivePdus', () => {
  const NOW = T0 + 2_000;
  const snapshot = asReceived(remoteRoom());
  const remoteState = (seq: number, id: string, type: string, content: Record<string, unknown>, stateKey = '', sender = CAROL): StoredEvent =>
    stateEvent(seq, id, type, sender, content, stateKey, { roomId: REMOTE_ROOM, origin: 'federation' });
  const remoteMsg = (seq: number, id: string): StoredEvent => message(seq, id, CAROL, 'hi', { roomId: REMOTE_ROOM, origin: 'federation' });

  it('refuses PDUs for a room hosted here (ForbiddenError)', () => {
    given(room)
      .when(receive(asReceived(room), ROOM))
      .thenThrows(ForbiddenError, 'this server hosts the room');
  });

  it('refuses PDUs for a room ID on this server even before the room is known', () => {
    given([])
      .when(receive(asReceived(room), ROOM))
      .thenThrows(ForbiddenError, 'this server hosts the room');
  });

  it('appends the PDUs of an unknown remote room, create first', () => {
    given([]).when(receive(snapshot)).then({ received: snapshot });
  });

  it('drops PDUs before the room create event is known', () => {
    given([])
      .when(receive(snapshot.slice(1)))
      .then({ received: [] });
  });

  it('skips duplicates of known events and within the batch', () => {
    const fresh = asReceived([remoteMsg(40, '$new')]);
    given(remoteRoom())
      .when(receive([snapshot[4]!, ...fresh, snapshot[0]!, ...fresh]))
      .then({ received: fresh });
  });

  it('refuses events for another room (InvalidInputError)', () => {
    const stray = asReceived([message(40, '$stray', ALICE, 'x')]); // room_id is ROOM
    given(remoteRoom())
      .when(receive([...asReceived([remoteMsg(41, '$ok')]), ...stray]))
      .thenThrows(InvalidInputError, 'event $stray is for another room');
  });

  describe('peeks a received state change ends', () => {
    // BOB peeks the remote room on two devices, DAVE on one, via this server's outbound peek o1.
    const peeked = (): StoredEvent[] => [
      ...remoteRoom(),
      outboundPeekAt(1, REMOTE, 'o1', T0, 300_000),
      devicePeekAt(2, BOB, 'BOBPHONE', T0, REMOTE_ROOM),
      devicePeekAt(3, BOB, 'BOBLAPTOP', T0, REMOTE_ROOM),
      devicePeekAt(4, DAVE, 'DAVEPC', T0, REMOTE_ROOM),
    ];

    it('a received history_visibility change ends every peek, the outbound peek included (visibility_changed)', () => {
      const pdus = asReceived([remoteState(40, '$hv-shared', 'm.room.history_visibility', { history_visibility: 'shared' })]);
      given(peeked())
        .when(receive(pdus), { now: NOW })
        .then({
          received: pdus,
          peeks: [
            peekExpired(outbound(REMOTE, 'o1'), NOW, 'visibility_changed', REMOTE_ROOM),
            peekExpired(device(BOB, 'BOBPHONE'), NOW, 'visibility_changed', REMOTE_ROOM),
            peekExpired(device(BOB, 'BOBLAPTOP'), NOW, 'visibility_changed', REMOTE_ROOM),
            peekExpired(device(DAVE, 'DAVEPC'), NOW, 'visibility_changed', REMOTE_ROOM),
          ],
        });
    });

    it('a received m.room.encryption ends every peek (encrypted)', () => {
      const pdus = asReceived([remoteState(40, '$enc', 'm.room.encryption', { algorithm: 'm.megolm.v1.aes-sha2' })]);
      given(peeked())
        .when(receive(pdus), { now: NOW })
        .then({
          received: pdus,
          peeks: [
            peekExpired(outbound(REMOTE, 'o1'), NOW, 'encrypted', REMOTE_ROOM),
            peekExpired(device(BOB, 'BOBPHONE'), NOW, 'encrypted', REMOTE_ROOM),
            peekExpired(device(BOB, 'BOBLAPTOP'), NOW, 'encrypted', REMOTE_ROOM),
            peekExpired(device(DAVE, 'DAVEPC'), NOW, 'encrypted', REMOTE_ROOM),
          ],
        });
    });

    it("a received join of a local user ends that user's device peeks only", () => {
      const pdus = asReceived([remoteState(40, '$bob-join', 'm.room.member', { membership: 'join' }, BOB, BOB)]);
      given(peeked())
        .when(receive(pdus), { now: NOW })
        .then({
          received: pdus,
          peeks: [peekExpired(device(BOB, 'BOBPHONE'), NOW, 'joined', REMOTE_ROOM), peekExpired(device(BOB, 'BOBLAPTOP'), NOW, 'joined', REMOTE_ROOM)],
        });
    });

    it('a received message ends nothing', () => {
      const pdus = asReceived([remoteMsg(40, '$m')]);
      given(peeked()).when(receive(pdus), { now: NOW }).then({ received: pdus });
    });

    it('a duplicate of an old visibility event changes nothing', () => {
      const dup = asReceived([remoteState(19, '$history', 'm.room.history_visibility', { history_visibility: 'shared' })]);
      given(peeked()).when(receive(dup), { now: NOW }).then({ received: [] });
    });
  });
});
