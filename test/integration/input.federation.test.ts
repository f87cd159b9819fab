// Malformed federation transactions, met before anything is taken: a /send whose body is
// wrong anywhere (here its expired_peeks) is refused as a whole with 400 M_BAD_JSON, and none
// of its PDUs reaches the room; a well-formed retry of it is then taken in full.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { holdsFor, hostPeeksOf, outboundPeeks, peekedRoomOn, roomCopy, startFederation, waitFor, type FakeRoom, type FakeServer, type Federation, type FedServer } from '../helpers/federation.ts';

let fed: Federation;
let A: FedServer;
let F: FakeServer;
/** Rooms F hosts, by room ID. */
const hosted = new Map<string, FakeRoom>();

beforeAll(async () => {
  fed = await startFederation({ servers: 1, fakes: 1 });
  [A] = fed.servers as [FedServer];
  [F] = fed.fakes as [FakeServer];
  // F answers A's peeks of its rooms: the snapshot, renewals, DELETEs.
  F.handler = hostPeeksOf(hosted, A.name);
}, 60_000);

afterAll(async () => {
  await fed?.cleanup();
});

const copyAtA = (roomId: string) => roomCopy(A, roomId);

/** A room hosted by F that a user of A peeks (so A takes F's PDUs of it). */
const peekedRoom = () => peekedRoomOn(A, F, hosted);

function sendTxn(txnId: string, pdus: unknown[], expiredPeeks: unknown[]) {
  return F.send(A.name, 'PUT', `/_matrix/federation/v1/send/${txnId}`, { origin: F.name, origin_server_ts: Date.now(), pdus, edus: [], expired_peeks: expiredPeeks });
}

describe('/send with malformed expired_peeks', () => {
  it('refuses the whole transaction with 400 M_BAD_JSON and takes none of its PDUs; the corrected retry is taken', async () => {
    const { room, peekId } = await peekedRoom();
    const before = await copyAtA(room.roomId);
    const message = room.add('m.room.message', { msgtype: 'm.text', body: 'sent beside a bad expired_peeks' });
    const malformed = [
      { room_id: '\u0000', peek_id: 'x' },
      { room_id: room.roomId, peek_id: '\u0000' },
      { room_id: `!nul\u0000:${F.name}`, peek_id: 'abc' },
      { room_id: 'not a room ID', peek_id: 'abc' },
      { room_id: room.roomId, peek_id: 'far-too-long-for-a-peek-id' },
    ];
    for (const [i, entry] of malformed.entries()) {
      const r = await sendTxn(`bad-peeks-${i}`, [message.pdu], [{ room_id: room.roomId, peek_id: 'notours' }, entry]);
      expect({ entry, status: r.status, errcode: r.body?.errcode }).toEqual({ entry, status: 400, errcode: 'M_BAD_JSON' });
    }
    // Nothing was written: the message is not in A's copy, and A still peeks through F.
    await holdsFor('the message stays out', async () => !(await copyAtA(room.roomId)).includes(message.id), 500);
    expect(await copyAtA(room.roomId)).toEqual(before);
    expect((await outboundPeeks(A, room.roomId)).map((r) => r.peekId)).toEqual([peekId]);

    // The refusal was not remembered: the same transaction ID, well formed, is taken in full.
    const good = await sendTxn('bad-peeks-0', [message.pdu], [{ room_id: room.roomId, peek_id: 'notours' }]);
    expect(good.status).toBe(200);
    expect(good.body.pdus[message.id]).toEqual({});
    await waitFor('the message in A', async () => (await copyAtA(room.roomId)).includes(message.id), 5_000);
  });
});
