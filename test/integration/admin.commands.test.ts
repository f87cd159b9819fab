// POST /_peekd/admin/v1/commands: an operator's command ID becomes the envelope's JetStream
// message ID, a NATS header. One that a header cannot carry (a control character, a space,
// non-ASCII) is refused as M_BAD_JSON before anything is appended — it was a 500 — and a
// good one makes the command idempotent.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPeekd } from '../helpers/peekd.ts';
import { TestUser } from '../helpers/matrix.ts';

const TOKEN = 'admin-commands-test-token';

let hs: Awaited<ReturnType<typeof startTestPeekd>>;

beforeAll(async () => {
  hs = await startTestPeekd({ env: { PEEKD_ADMIN_TOKEN: TOKEN } });
});

afterAll(async () => {
  await hs?.dropAll();
});

const command = (body: Record<string, unknown>) =>
  fetch(`${hs.url}/_peekd/admin/v1/commands`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });

describe('the admin command API', () => {
  it('refuses a commandId a NATS header cannot carry, appends nothing for it, and retries a good one idempotently', async () => {
    const alice = await TestUser.register(hs.url, 'alice');
    const bob = await TestUser.register(hs.url, 'bob');
    const { room_id: roomId } = await alice.createWorldReadableRoom();
    const start = { type: 'StartDevicePeek', roomId, userId: bob.userId, deviceId: bob.deviceId };
    for (const commandId of ['\n', 'a\r\nb', 'two words', 'é', '\u0000', '', 'x'.repeat(256), 7]) {
      const res = await command({ ...start, commandId });
      expect(res.status, JSON.stringify(commandId)).toBe(400);
      expect(((await res.json()) as { errcode: string }).errcode, JSON.stringify(commandId)).toBe('M_BAD_JSON');
    }
    // Nothing was started by the refused ones: the first good command starts the peek.
    const first = await command({ ...start, commandId: 'ops-2026-12-06_1' });
    expect(first.status).toBe(200);
    const started = (await first.json()) as { peek_events: { seq: number; type: string }[] };
    expect(started.peek_events.map((e) => e.type)).toEqual(['PeekStarted']);
    // The same ID again: answered from the log, not applied twice.
    const again = await command({ ...start, commandId: 'ops-2026-12-06_1' });
    expect(again.status).toBe(200);
    const repeated = (await again.json()) as { peek_events: { seq: number; type: string }[] };
    expect(repeated.peek_events).toEqual(started.peek_events);
    // The longest ID allowed goes through.
    const longest = await command({ ...start, commandId: '~'.repeat(255) });
    expect(longest.status).toBe(200);
    expect(((await longest.json()) as { peek_events: { type: string }[] }).peek_events.map((e) => e.type)).toEqual(['PeekRenewed']);
  });
});
