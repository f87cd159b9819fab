// The operator's page in a real browser (Debian's Chromium through puppeteer-core) against
// a running peekd with peeks made through the client API: the page asks for the token,
// says so on the page when it is wrong, then shows the live peeks, the shard map, the
// projections, and a room's audit history as one bar per peek — renewals ticked, end
// reasons coloured as the legend says — and never logs an error of its own.
import { existsSync } from 'node:fs';
import { jetstreamManager } from '@nats-io/jetstream';
import puppeteer, { type Browser, type ConsoleMessage, type HTTPRequest, type Page } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROJECTIONS } from '../../src/projections/index.ts';
import { startTestPeekd } from '../helpers/peekd.ts';
import { TestUser, auditUntil, enc, request } from '../helpers/matrix.ts';
import { until } from '../helpers/until.ts';

const TOKEN = 'admin-page-test-token';
const CHROMIUM = process.env.PEEKD_CHROMIUM || '/usr/bin/chromium';
const WAIT = { timeout: 15_000 };

/** MSC2753 peek, under its unstable prefix (what clients that implement it call). */
async function peek(user: TestUser, roomId: string): Promise<void> {
  const r = await user.req('POST', `/_matrix/client/unstable/org.matrix.msc2753/peek/${enc(roomId)}`, {});
  if (r.status !== 200) throw new Error(`peek ${roomId}: ${r.status} ${JSON.stringify(r.body)}`);
}

interface Bar {
  peekId: string;
  kind: string;
  roomId: string;
  userId: string;
  deviceId: string;
  live: string;
  endReason: string;
  renewals: number;
  startedSeq: string;
  ticks: number;
  fill: string;
}

describe('the operator page in Chromium', () => {
  let t: Awaited<ReturnType<typeof startTestPeekd>>;
  let browser: Browser | undefined;
  let page: Page;
  let alice: TestUser;
  let bob: TestUser;
  let carol: TestUser;
  let dave: TestUser;
  let room: string;
  let other: string;
  /** Errors the browser logged (console messages of type error), and uncaught page errors. */
  const consoleErrors: { text: string; url: string | undefined }[] = [];
  const pageErrors: string[] = [];
  const requests: { url: string; authorization: string | undefined }[] = [];

  /** Clicks inside the page in one step (the page re-renders every 5 s: no handle can go stale). */
  const click = (selector: string) => page.$eval(selector, (el) => (el as unknown as { click(): void }).click());
  const text = (selector: string) => page.$eval(selector, (el) => el.textContent ?? '');
  const isHidden = (selector: string) => page.$eval(selector, (el) => (el as unknown as { hidden: boolean }).hidden);
  const count = (selector: string) => page.$$eval(selector, (els) => els.length);
  const waitForCount = (selector: string, n: number) => page.waitForFunction((sel: string, want: number) => (globalThis as any).document.querySelectorAll(sel).length === want, WAIT, selector, n);

  async function bars(): Promise<Bar[]> {
    return page.$$eval('svg.timeline .peek-bar', (els) =>
      els.map((el: any) => ({
        peekId: el.dataset.peekId,
        kind: el.dataset.kind,
        roomId: el.dataset.roomId,
        userId: el.dataset.userId,
        deviceId: el.dataset.deviceId,
        live: el.dataset.live,
        endReason: el.dataset.endReason,
        renewals: Number(el.dataset.renewals),
        startedSeq: el.dataset.startedSeq,
        ticks: el.ownerDocument.querySelectorAll(`.renewal-tick[data-peek-id="${(globalThis as any).CSS.escape(el.dataset.peekId)}"]`).length,
        fill: (globalThis as any).getComputedStyle(el).fill,
      })),
    );
  }

  beforeAll(async () => {
    // No browser, no test: fail loudly rather than skip.
    if (!existsSync(CHROMIUM)) {
      throw new Error(`adminPage.test.ts drives Chromium, which is not at ${CHROMIUM}: install it (Debian: apt-get install chromium) or set PEEKD_CHROMIUM to its path`);
    }
    t = await startTestPeekd({ env: { PEEKD_ADMIN_TOKEN: TOKEN } });
    alice = await TestUser.register(t.url, 'alice');
    bob = await TestUser.register(t.url, 'bob');
    carol = await TestUser.register(t.url, 'carol');
    dave = await TestUser.register(t.url, 'dave');
    room = (await alice.createWorldReadableRoom()).room_id;
    other = (await alice.createWorldReadableRoom()).room_id;
    // bob peeks, and peeks again (a renewal); carol peeks and unpeeks; dave peeks another room.
    await peek(bob, room);
    await peek(bob, room);
    await peek(carol, room);
    expect((await carol.unpeek(room)).status).toBe(200);
    await peek(dave, other);
    // The audit projection commits on its own schedule: wait until it has them all.
    const audit = await auditUntil(t.url, TOKEN, { room_id: room }, (es) => es.length === 4);
    expect(audit.map((e) => [e.event, e.user_id])).toEqual([
      ['PeekStarted', bob.userId],
      ['PeekRenewed', bob.userId],
      ['PeekStarted', carol.userId],
      ['PeekExpired', carol.userId],
    ]);

    browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--headless', '--no-sandbox'] });
    page = await browser.newPage();
    page.on('console', (m: ConsoleMessage) => {
      if (m.type() === 'error') consoleErrors.push({ text: m.text(), url: m.location()?.url });
    });
    page.on('pageerror', (err) => pageErrors.push(String((err as Error)?.message ?? err)));
    page.on('request', (r: HTTPRequest) => requests.push({ url: r.url(), authorization: r.headers().authorization }));
  });

  afterAll(async () => {
    await browser?.close();
    await t?.dropAll();
  });

  it('loads without a token, asks for it, and logs no error', async () => {
    const res = await page.goto(`${t.url}/_peekd/admin`, { waitUntil: 'load' });
    // /_peekd/admin was redirected to /_peekd/admin/, which was served with its CSP.
    expect(page.url()).toBe(`${t.url}/_peekd/admin/`);
    expect(res?.headers()['content-security-policy']).toContain("default-src 'self'");
    await page.waitForSelector('#token-input', { visible: true, ...WAIT });
    expect(await isHidden('#app')).toBe(true);
    expect(await isHidden('#login-message')).toBe(true);
    expect(pageErrors).toEqual([]);
    expect(consoleErrors).toEqual([]);
    // Nothing was asked of the API without a token.
    expect(requests.filter((r) => r.url.includes('/v1/'))).toEqual([]);
  });

  it('says on the page that a wrong token was refused', async () => {
    await page.type('#token-input', 'not-the-token');
    await click('#token-submit');
    await page.waitForFunction(() => /refused/.test((globalThis as any).document.getElementById('login-message').textContent), WAIT);
    expect(await isHidden('#login-message')).toBe(false);
    expect(await text('#login-message')).toContain('The admin token was refused (M_UNKNOWN_TOKEN');
    expect(await isHidden('#app')).toBe(true);
    expect(await page.evaluate(() => (globalThis as any).sessionStorage.getItem('peekd.adminToken'))).toBeNull();
    // One request checked the token. The page logged nothing itself; the one console line is
    // Chromium's own network log of that refused request.
    const asked = requests.filter((r) => r.url.includes('/v1/'));
    expect(asked).toEqual([{ url: `${t.url}/_peekd/admin/v1/shards`, authorization: 'Bearer not-the-token' }]);
    expect(consoleErrors).toEqual([{ text: expect.stringContaining('status of 401'), url: `${t.url}/_peekd/admin/v1/shards` }]);
    expect(pageErrors).toEqual([]);
    consoleErrors.length = 0;
  });

  it('with the token, shows the live peeks just started, the shard map and the projections', async () => {
    await page.type('#token-input', TOKEN);
    await click('#token-submit');
    const bobRow = `.peek-row[data-kind="device"][data-room-id="${room}"][data-user-id="${bob.userId}"]`;
    await page.waitForSelector(bobRow, WAIT);
    expect(await isHidden('#login')).toBe(true);
    expect(await page.$eval(bobRow, (el: any) => el.dataset.deviceId)).toBe(bob.deviceId);
    expect(await page.$eval(bobRow, (el: any) => el.textContent)).toContain(bob.userId);
    await page.waitForSelector(`.peek-row[data-room-id="${other}"][data-user-id="${dave.userId}"]`, WAIT);
    // carol's peek ended: it is not live.
    expect(await count(`.peek-row[data-user-id="${carol.userId}"]`)).toBe(0);
    expect(await count('.peek-row')).toBe(2);
    expect(await text('#peek-counts')).toContain('2 live peeks');
    // Grouped by device instead of by room: one group per peeking device.
    await page.select('#group-by', 'device');
    await page.waitForFunction(() => (globalThis as any).document.querySelectorAll('.group-row').length === 2 && /·/.test((globalThis as any).document.querySelector('.group-row').textContent), WAIT);
    expect(await page.$$eval('.group-row', (els) => els.map((el) => el.textContent))).toEqual([`${bob.userId} · ${bob.deviceId} (1)`, `${dave.userId} · ${dave.deviceId} (1)`].sort());
    await page.select('#group-by', 'room');
    await page.waitForFunction((r: string) => [...(globalThis as any).document.querySelectorAll('.group-row')].some((el: any) => el.textContent.startsWith(r)), WAIT, room);

    // Shard map: all in one process, every shard here.
    await waitForCount('.shard', 8);
    const owners = await page.$$eval('.shard', (els) => els.map((el: any) => el.dataset.owner));
    expect(owners).toEqual(Array(8).fill(t.peekd.hostId));
    expect(await text('#host-info')).toContain(t.peekd.hostId);
    // Projections, each at its stream head.
    await waitForCount('.projection-row', PROJECTIONS.length);
    expect(await page.$$eval('.projection-row', (els) => els.map((el: any) => el.dataset.projection))).toEqual(PROJECTIONS.map((p) => p.name));

    // The token is kept for this tab and travels in the Authorization header only.
    expect(await page.evaluate(() => (globalThis as any).sessionStorage.getItem('peekd.adminToken'))).toBe(TOKEN);
    const api = requests.filter((r) => r.url.includes('/v1/') && r.authorization === `Bearer ${TOKEN}`);
    expect(api.length).toBeGreaterThanOrEqual(3);
    expect(requests.filter((r) => r.url.includes(TOKEN))).toEqual([]);
    expect(consoleErrors).toEqual([]);
    expect(pageErrors).toEqual([]);
  });

  it("draws the room's audit history: one bar per peek, renewals ticked, end reasons coloured as the legend says", async () => {
    // Pick the room from the live list: the search and the timeline follow.
    await click(`.peek-row[data-room-id="${room}"] td:nth-child(2) button`);
    await page.waitForSelector('svg.timeline .peek-bar', WAIT);
    expect(await page.$eval('#search-value', (el: any) => el.value)).toBe(room);
    expect(await page.evaluate(() => (globalThis as any).location.hash)).toBe(`#${new URLSearchParams({ room })}`);
    // The list follows the search too: only this room's live peek.
    await waitForCount('.peek-row', 1);

    const drawn = await bars();
    expect(drawn).toHaveLength(2);
    expect(new Set(drawn.map((b) => b.peekId)).size).toBe(2);
    const [bobBar, carolBar] = drawn;
    expect(bobBar).toMatchObject({ kind: 'device', roomId: room, userId: bob.userId, deviceId: bob.deviceId, live: 'true', endReason: '', renewals: 1, ticks: 1 });
    expect(carolBar).toMatchObject({ kind: 'device', roomId: room, userId: carol.userId, deviceId: carol.deviceId, live: 'false', endReason: 'unpeeked', renewals: 0, ticks: 0 });
    // The live bar is the live peek listed above it; each bar is named by who peeked and where its peek started.
    const bobStartedSeq = await page.$eval(`.peek-row[data-user-id="${bob.userId}"]`, (el: any) => el.dataset.startedSeq);
    expect(bobBar!.startedSeq).toBe(bobStartedSeq);
    expect(bobBar!.peekId).toBe(`${bob.userId}/${bob.deviceId}@${bobStartedSeq}`);
    // Colours: each bar has its legend's colour, and they differ.
    const swatch = (cls: string) => page.$eval(`#timeline-legend .swatch.${cls}`, (el) => (globalThis as any).getComputedStyle(el).backgroundColor);
    expect(bobBar!.fill).toBe(await swatch('live'));
    expect(carolBar!.fill).toBe(await swatch('reason-unpeeked'));
    expect(bobBar!.fill).not.toBe(carolBar!.fill);
    expect(await text('#timeline-legend')).toContain('ended: unpeeked');
    // dave's peek of the other room is not in this room's history.
    expect(drawn.some((b) => b.userId === dave.userId)).toBe(false);
    expect(consoleErrors).toEqual([]);
    expect(pageErrors).toEqual([]);
  });

  it('updates by itself: a new peek of the room gets its own bar', async () => {
    await peek(carol, room);
    await auditUntil(t.url, TOKEN, { room_id: room }, (es) => es.length === 5);
    // No click: the page refreshes every 5 s.
    await waitForCount('svg.timeline .peek-bar', 3);
    const drawn = await bars();
    expect(new Set(drawn.map((b) => b.peekId)).size).toBe(3);
    expect(drawn.map((b) => [b.userId, b.live, b.endReason])).toEqual([
      [bob.userId, 'true', ''],
      [carol.userId, 'false', 'unpeeked'],
      [carol.userId, 'true', ''],
    ]);
    await waitForCount('.peek-row', 2);
    expect(consoleErrors).toEqual([]);
    expect(pageErrors).toEqual([]);
  });

  it("shows each projection against its stream head in log messages, and a stopped one's lag", async () => {
    type Position = { name: string; stream: string; position: number; head: number; lag: number };
    const api = async (): Promise<Position[]> => {
      const r = await request(t.url, 'GET', '/_peekd/admin/v1/projections', { token: TOKEN });
      expect(r.status).toBe(200);
      return r.body.projections;
    };
    /** What the projections table shows, row by row. */
    const shown = () =>
      page.$$eval('.projection-row', (els) =>
        els.map((el: any) => {
          const progress = el.querySelector('progress');
          return {
            name: el.dataset.projection,
            lag: el.dataset.lag,
            behind: el.classList.contains('behind'),
            cells: [...el.querySelectorAll('td')].slice(0, 5).map((td: any) => td.textContent),
            bar: { max: progress.max, value: progress.value, title: progress.title },
          };
        }),
      );
    const fmt = (n: number) => n.toLocaleString('en-US');
    /** The row the page should draw for one projection of the API's answer. */
    const expected = (p: Position) => ({
      name: p.name,
      lag: String(p.lag),
      behind: p.lag > 0,
      cells: [p.name, p.stream, fmt(p.position), fmt(p.head), fmt(p.lag)],
      bar: { max: Math.max(1, p.head), value: p.head > 0 ? p.head - p.lag : 1, title: p.lag === 0 ? 'caught up' : `${fmt(p.lag)} ${p.lag === 1 ? 'message' : 'messages'} behind` },
    });
    let last: unknown;
    const pageShows = async (want: Position[]) => {
      last = await shown();
      return JSON.stringify(last) === JSON.stringify(want.map(expected));
    };

    // Settled: every projection at the head, the head being the stream's last sequence.
    await until('every projection at its head', async () => (await api()).every((p) => p.lag === 0 && p.position === p.head));
    const settled = await api();
    const jsm = await jetstreamManager(t.peekd.nc);
    const peeksHead = (await jsm.streams.info(t.peekd.naming.streamName('peeks'))).state.last_seq;
    // Six peek commands so far (bob's two, carol's peek, unpeek and second peek, dave's):
    // six messages in PEEKS, one per command.
    expect(peeksHead).toBe(6);
    for (const p of settled.filter((x) => x.stream === 'peeks')) expect([p.name, p.position, p.head]).toEqual([p.name, peeksHead, peeksHead]);
    await until('the page to show the settled projections', () => pageShows(settled), 15_000, 200);

    // The audit stops; two peek commands (a peek and its renewal) put it two messages behind.
    const runner = t.peekd.projections.get('audit')!;
    await runner.stop();
    try {
      const erin = await TestUser.register(t.url, 'erin');
      await peek(erin, other);
      await peek(erin, other);
      await until('every other projection at the new head', async () => (await api()).every((p) => p.name === 'audit' || p.lag === 0));
      const now = await api();
      const audit = now.find((p) => p.name === 'audit')!;
      expect(audit).toEqual({ name: 'audit', stream: 'peeks', position: peeksHead, head: peeksHead + 2, lag: 2 });
      await until('the page to show the audit two messages behind', () => pageShows(now), 15_000, 200).catch((err) => {
        throw new Error(`${(err as Error).message}: the page shows ${JSON.stringify(last)}, the API says ${JSON.stringify(now)}`);
      });
      const row = (await shown()).find((r) => r.name === 'audit')!;
      expect(row).toMatchObject({ lag: '2', behind: true, bar: { max: peeksHead + 2, value: peeksHead, title: '2 messages behind' } });
      expect((await shown()).filter((r) => r.behind).map((r) => r.name)).toEqual(['audit']);
    } finally {
      await runner.start();
    }
    await until('the page to show the audit caught up', async () => (await shown()).every((r) => r.lag === '0' && !r.behind), 15_000, 200);
    expect(consoleErrors).toEqual([]);
    expect(pageErrors).toEqual([]);
  });

  it('searches by user and by server, and explains a malformed search on the page', async () => {
    await page.select('#search-kind', 'user');
    await page.$eval('#search-value', (el: any) => (el.value = ''));
    await page.type('#search-value', dave.userId);
    await click('#search-submit');
    await page.waitForFunction(
      (u: string) => {
        const d = (globalThis as any).document;
        const barsNow = [...d.querySelectorAll('svg.timeline .peek-bar')];
        return barsNow.length === 1 && barsNow[0].dataset.userId === u;
      },
      WAIT,
      dave.userId,
    );
    expect((await bars())[0]).toMatchObject({ roomId: other, userId: dave.userId, live: 'true' });
    await waitForCount('.peek-row', 1);
    expect(await page.$eval('.peek-row', (el: any) => el.dataset.roomId)).toBe(other);

    // A server no one peeks from: nothing live, no history, said in words.
    await page.select('#search-kind', 'server');
    await page.$eval('#search-value', (el: any) => (el.value = ''));
    await page.type('#search-value', 'nobody.example');
    await click('#search-submit');
    await page.waitForSelector('#no-history', WAIT);
    await page.waitForSelector('#no-peeks', WAIT);

    // A user ID without its sigil: a message, no error.
    await page.select('#search-kind', 'user');
    await page.$eval('#search-value', (el: any) => (el.value = ''));
    await page.type('#search-value', 'dave');
    await click('#search-submit');
    await page.waitForFunction(() => !(globalThis as any).document.getElementById('search-message').hidden, WAIT);
    expect(await text('#search-message')).toContain('starts with "@"');
    expect(consoleErrors).toEqual([]);
    expect(pageErrors).toEqual([]);
  });

  it('keeps the token for the tab: a reload opens without asking', async () => {
    await page.goto(`${t.url}/_peekd/admin/#${new URLSearchParams({ room })}`, { waitUntil: 'load' });
    await waitForCount('svg.timeline .peek-bar', 3);
    expect(await isHidden('#login')).toBe(true);
    expect(await count('.peek-row')).toBe(2);
    // Forgetting it asks again.
    await click('#forget-token');
    await page.waitForSelector('#token-input', { visible: true, ...WAIT });
    expect(await page.evaluate(() => (globalThis as any).sessionStorage.getItem('peekd.adminToken'))).toBeNull();
    expect(consoleErrors).toEqual([]);
    expect(pageErrors).toEqual([]);
  });
});
