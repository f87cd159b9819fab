// matrix-js-sdk (the real npm client) against a running peekd: log in, start the client
// until it reaches SYNCING, create a room, set state, send a message; a second js-sdk
// client peeks through its HTTP API and finds the message in its raw /sync body. A client
// that lazy-loads members gets the counts from the summary and the rest from /members.
import * as sdk from 'matrix-js-sdk';
import { logger } from 'matrix-js-sdk/lib/logger';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { TestUser } from '../helpers/matrix.ts';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;
const clients: sdk.MatrixClient[] = [];

beforeAll(async () => {
  logger.setLevel('silent');
  hs = await startTestPeekd();
});

afterAll(async () => {
  for (const c of clients) c.stopClient();
  await hs?.dropAll();
});

/** A js-sdk client logged in with m.login.password through the SDK itself. */
async function login(localpart: string, password: string): Promise<sdk.MatrixClient> {
  const anon = sdk.createClient({ baseUrl: hs.url });
  const r = await anon.loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: localpart }, password });
  expect(r.user_id).toBe(`@${localpart}:${hs.serverName}`);
  const client = sdk.createClient({ baseUrl: hs.url, accessToken: r.access_token, userId: r.user_id, deviceId: r.device_id });
  clients.push(client);
  return client;
}

/** Resolves once the client's sync loop reports `state`; rejects on ERROR or after `ms`. */
function syncState(client: sdk.MatrixClient, state: sdk.SyncState, ms = 20_000): Promise<void> {
  return new Promise((resolve, reject) => {
    if (client.getSyncState() === state) return resolve();
    const timer = setTimeout(() => reject(new Error(`no ${state} within ${ms} ms (now ${client.getSyncState()})`)), ms);
    const on = (s: sdk.SyncState, _prev: sdk.SyncState | null, data?: { error?: Error }) => {
      if (s === state) {
        clearTimeout(timer);
        client.off(sdk.ClientEvent.Sync, on);
        resolve();
      } else if (s === sdk.SyncState.Error) {
        clearTimeout(timer);
        client.off(sdk.ClientEvent.Sync, on);
        reject(new Error(`sync error: ${data?.error?.message ?? 'unknown'}`));
      }
    };
    client.on(sdk.ClientEvent.Sync, on);
  });
}

/** Polls `check` until it holds (js-sdk state changes arrive through its own sync loop). */
async function until(what: string, check: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The event once `client` has its remote echo (from /sync, not just the local echo) in the live timeline. */
async function remoteEcho(client: sdk.MatrixClient, roomId: string, eventId: string): Promise<sdk.MatrixEvent> {
  const find = () =>
    client
      .getRoom(roomId)
      ?.getLiveTimeline()
      .getEvents()
      .find((e) => e.getId() === eventId && e.status === null);
  await until(`the remote echo of ${eventId}`, () => find() !== undefined);
  return find()!;
}

describe('matrix-js-sdk 36 against peekd', () => {
  it('logs in, reaches SYNCING, creates a room, sets state and sends; another js-sdk client peeks and sees the message in raw /sync', async () => {
    await TestUser.register(hs.url, 'alice', 'alice-password');
    await TestUser.register(hs.url, 'bob', 'bob-password');

    const alice = await login('alice', 'alice-password');
    await alice.startClient({ initialSyncLimit: 10 });
    await syncState(alice, sdk.SyncState.Prepared);
    await syncState(alice, sdk.SyncState.Syncing);

    const { room_id: roomId } = await alice.createRoom({
      preset: sdk.Preset.PublicChat,
      visibility: sdk.Visibility.Public,
      room_alias_name: 'jssdk',
      name: 'js-sdk room',
      initial_state: [{ type: 'm.room.history_visibility', state_key: '', content: { history_visibility: 'world_readable' } }],
    });
    expect(roomId).toMatch(/^!/);
    const topic = await alice.sendStateEvent(roomId, sdk.EventType.RoomTopic, { topic: 'peeking with js-sdk' }, '');
    expect(topic.event_id).toMatch(/^\$/);
    const sent = await alice.sendMessage(roomId, { msgtype: sdk.MsgType.Text, body: 'hello from js-sdk' });
    expect(sent.event_id).toMatch(/^\$/);

    // Alice's own client syncs the room, its state and the message.
    const echo = await remoteEcho(alice, roomId, sent.event_id);
    expect(echo.getContent().body).toBe('hello from js-sdk');
    const room = alice.getRoom(roomId)!;
    await until('the topic in the room state', () => room.currentState.getStateEvents(sdk.EventType.RoomTopic, '') !== null);
    expect(room.name).toBe('js-sdk room');
    expect(room.currentState.getStateEvents(sdk.EventType.RoomTopic, '')?.getContent().topic).toBe('peeking with js-sdk');
    expect(room.getMyMembership()).toBe(sdk.KnownMembership.Join);
    expect(alice.getSyncState()).toBe(sdk.SyncState.Syncing);

    // Bob peeks through the SDK's HTTP API (the SDK has no MSC2753 call of its own).
    const bob = await login('bob', 'bob-password');
    const peek = await bob.http.authedRequest<{ room_id: string; peek_expiry_ts: number }>(sdk.Method.Post, `/peek/${encodeURIComponent(`#jssdk:${hs.serverName}`)}`, undefined, {});
    expect(peek.room_id).toBe(roomId);
    expect(peek.peek_expiry_ts).toBeGreaterThan(Date.now());
    const sync = await bob.http.authedRequest<any>(sdk.Method.Get, '/sync', { timeout: '0' });
    const peeked = sync.rooms.peek[roomId];
    expect(peeked).toBeDefined();
    const events: any[] = peeked.timeline.events;
    // Like a new join: the whole history fits, from m.room.create on, and no state section.
    expect(events[0].type).toBe('m.room.create');
    expect(peeked.state.events).toEqual([]);
    expect(events.find((e) => e.event_id === sent.event_id)?.content).toEqual({ msgtype: 'm.text', body: 'hello from js-sdk' });
    expect(events.find((e) => e.event_id === topic.event_id)?.content).toEqual({ topic: 'peeking with js-sdk' });
    expect(sync.rooms.join[roomId]).toBeUndefined();

    // A new message from alice wakes bob's long-poll, and alice's client stays in SYNCING.
    const poll = bob.http.authedRequest<any>(sdk.Method.Get, '/sync', { since: sync.next_batch, timeout: '10000' });
    const second = await alice.sendTextMessage(roomId, 'second message');
    const woken = await poll;
    expect(woken.rooms.peek[roomId].timeline.events.map((e: any) => e.event_id)).toEqual([second.event_id]);
    await remoteEcho(alice, roomId, second.event_id);
    expect(alice.getSyncState()).toBe(sdk.SyncState.Syncing);
  });

  it('lazy-loads members: the summary gives the counts, the state the senders and heroes, /members the rest', async () => {
    const owner = await TestUser.register(hs.url, 'llowner', 'pw-llowner');
    const { room_id: roomId } = await owner.createRoom({ preset: 'public_chat' });
    const crowd = await Promise.all(['lla', 'llb', 'llc', 'lld', 'lle', 'llf'].map((name) => TestUser.register(hs.url, name, `pw-${name}`)));
    for (const u of crowd) expect((await u.join(roomId)).status).toBe(200);
    await crowd.at(-1)!.send(roomId, 'the last word');
    await TestUser.register(hs.url, 'lazy', 'lazy-password');
    const lazy = await login('lazy', 'lazy-password');
    await lazy.joinRoom(roomId);
    await lazy.startClient({ initialSyncLimit: 1, lazyLoadMembers: true });
    await syncState(lazy, sdk.SyncState.Syncing);
    const room = lazy.getRoom(roomId)!;
    // Eight joined; the sync sent only some of their member events, and the counts.
    expect(room.getJoinedMemberCount()).toBe(8);
    const loaded = room.currentState.getMembers().length;
    expect(loaded).toBeLessThan(8);
    expect(room.getMember(lazy.getUserId()!)?.membership).toBe(sdk.KnownMembership.Join);
    // The client asks /members for the rest when it needs them.
    await room.loadMembersIfNeeded();
    expect(
      room
        .getJoinedMembers()
        .map((m) => m.userId)
        .sort(),
    ).toEqual([owner.userId, ...crowd.map((u) => u.userId), lazy.getUserId()!].sort());
    expect(lazy.getSyncState()).toBe(sdk.SyncState.Syncing);
  });
});
