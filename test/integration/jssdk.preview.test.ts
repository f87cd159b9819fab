// matrix-js-sdk's room preview, unmodified, against a running peekd: peekInRoom(roomId) —
// GET /rooms/{roomId}/initialSync, then GET /events?room_id=… long-polls — as a registered
// user and as a guest, each receiving a message sent after the preview opened as a live
// timeline event of the room.
import * as sdk from 'matrix-js-sdk';
import { logger } from 'matrix-js-sdk/lib/logger';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { auditUntil, TestUser } from '../helpers/matrix.ts';

const ADMIN = 'admin-secret-jssdk-preview';
let hs: Awaited<ReturnType<typeof startTestPeekd>>;
let alice: TestUser;
const clients: sdk.MatrixClient[] = [];

beforeAll(async () => {
  logger.setLevel('silent');
  hs = await startTestPeekd({ env: { PEEKD_ADMIN_TOKEN: ADMIN } });
  alice = await TestUser.register(hs.url, 'alice');
});

afterAll(async () => {
  for (const c of clients) {
    c.stopPeeking();
    c.stopClient();
  }
  // Closing answers the previews' open long-polls; the clients, no longer peeking, stop.
  await hs?.dropAll();
});

function clientFor(session: { user_id: string; device_id: string; access_token: string }): sdk.MatrixClient {
  const client = sdk.createClient({ baseUrl: hs.url, accessToken: session.access_token, userId: session.user_id, deviceId: session.device_id });
  clients.push(client);
  return client;
}

/**
 * Resolves with the message once the client adds it to the room's live timeline (rejects
 * after `ms`). Set up before the message is sent: the SDK's poll may deliver it before the
 * send answers with its ID, so it is matched by its body.
 */
function liveMessage(client: sdk.MatrixClient, roomId: string, body: string, ms = 10_000): Promise<sdk.MatrixEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off(sdk.RoomEvent.Timeline, on);
      reject(new Error(`no live message "${body}" within ${ms} ms`));
    }, ms);
    const on = (event: sdk.MatrixEvent, room: sdk.Room | undefined, toStartOfTimeline: boolean | undefined) => {
      if (room?.roomId !== roomId || toStartOfTimeline || event.getContent().body !== body) return;
      clearTimeout(timer);
      client.off(sdk.RoomEvent.Timeline, on);
      resolve(event);
    };
    client.on(sdk.RoomEvent.Timeline, on);
  });
}

/** A world_readable room with a name, a topic and one message. */
async function previewableRoom(name: string) {
  const { room_id: roomId } = await alice.createWorldReadableRoom({ name, topic: `about ${name}` });
  const hello = await alice.send(roomId, `hello ${name}`);
  return { roomId, hello };
}

/** peekInRoom, then a message from alice: the preview shows the room, then the message live. */
async function previewAndReceive(client: sdk.MatrixClient, name: string) {
  const { roomId, hello } = await previewableRoom(name);
  const room = await client.peekInRoom(roomId);
  expect(room.roomId).toBe(roomId);
  expect(room.name).toBe(name);
  expect(room.currentState.getStateEvents(sdk.EventType.RoomTopic, '')?.getContent().topic).toBe(`about ${name}`);
  const timeline = room.getLiveTimeline().getEvents();
  expect(timeline.find((e) => e.getId() === hello)?.getContent().body).toBe(`hello ${name}`);
  expect(client.getRoom(roomId)).toBe(room);

  const received = liveMessage(client, roomId, `live in ${name}`);
  const sent = alice.send(roomId, `live in ${name}`);
  const eventId = await sent;
  const event = await received;
  expect(event.getId()).toBe(eventId);
  expect(event.getSender()).toBe(alice.userId);
  expect(room.getLiveTimeline().getEvents().at(-1)?.getId()).toBe(eventId);
  return { roomId, room };
}

describe('matrix-js-sdk 36 peekInRoom against peekd', () => {
  it('previews a world_readable room as a registered user and receives a message sent afterwards', async () => {
    const bob = await TestUser.register(hs.url, 'bob');
    const client = clientFor({ user_id: bob.userId, device_id: bob.deviceId, access_token: bob.token });
    const { roomId } = await previewAndReceive(client, 'Registered preview');
    // The preview is the device's peek, in the log like any other.
    const entries = await auditUntil(hs.url, ADMIN, { room_id: roomId, user_id: bob.userId }, (es) => es.length >= 1);
    expect(entries[0]).toMatchObject({ event: 'PeekStarted', kind: 'device', device_id: bob.deviceId });
    client.stopPeeking();
  });

  it('previews a world_readable room as a guest and receives a message sent afterwards', async () => {
    const anon = sdk.createClient({ baseUrl: hs.url });
    const guest = await anon.registerGuest();
    expect(guest.user_id).toMatch(/^@/);
    const client = clientFor({ user_id: guest.user_id, device_id: guest.device_id!, access_token: guest.access_token! });
    client.setGuest(true);
    expect(client.isGuest()).toBe(true);
    const { roomId } = await previewAndReceive(client, 'Guest preview');
    const entries = await auditUntil(hs.url, ADMIN, { room_id: roomId, user_id: guest.user_id }, (es) => es.length >= 1);
    expect(entries[0]).toMatchObject({ event: 'PeekStarted', kind: 'device', device_id: guest.device_id });
    client.stopPeeking();
  });
});
