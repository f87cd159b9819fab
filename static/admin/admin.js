// peekd operator view: a vanilla ES module, no dependencies, no build step.
//
// Reads the admin JSON API (v1/peeks, v1/shards, v1/projections, v1/audit, relative to
// /_peekd/admin/) with the admin token in the Authorization header, never in a URL. The token
// is asked for once and kept in this tab's sessionStorage. Every piece of data reaches the
// page through textContent and attributes (createElement / createElementNS), never as markup.

const TOKEN_KEY = 'peekd.adminToken';
const REFRESH_MS = 5_000;
const SVG_NS = 'http://www.w3.org/2000/svg';
const AUDIT_PAGE = 1000;
const AUDIT_MAX_PAGES = 20;
const PEEKS_LIMIT = 1000;
const MAX_BARS = 400;
const MAX_TABLE_EVENTS = 1000;

/** End reasons (src/events/peekEvents.ts), in legend order. */
const REASONS = ['unpeeked', 'timed_out', 'joined', 'visibility_changed', 'encrypted', 'device_removed', 'remote_deleted', 'no_active_peekers', 'rejected'];

const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY);
let timer;
let inFlight;
let again = false;

// --- small DOM helpers ------------------------------------------------------------------

/** An element with attributes (`class`, `data-*`, anything) and children (nodes or text). */
function h(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

function s(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(node, attrs, children) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** Sets a message line (hidden when empty); `kind`: error (default) or info. */
function show(node, text, kind = 'error') {
  node.textContent = text ?? '';
  node.hidden = !text;
  node.className = `message ${kind}`;
}

const fmtNumber = (n) => (typeof n === 'number' ? n.toLocaleString('en-US') : '—');

function fmtDuration(ms) {
  const a = Math.abs(ms);
  if (a < 1000) return `${Math.round(a)} ms`;
  if (a < 60_000) return `${(a / 1000).toFixed(a < 10_000 ? 1 : 0)} s`;
  if (a < 3_600_000) return `${Math.round(a / 60_000)} min`;
  if (a < 86_400_000) return `${(a / 3_600_000).toFixed(1)} h`;
  return `${(a / 86_400_000).toFixed(1)} d`;
}

/** A <time> with the moment relative to now, the exact time on hover. */
function when(ms, now) {
  if (typeof ms !== 'number') return h('span', { class: 'muted' }, '—');
  const iso = new Date(ms).toISOString();
  const d = ms - now;
  const text = Math.abs(d) < 1000 ? 'now' : d < 0 ? `${fmtDuration(d)} ago` : `in ${fmtDuration(d)}`;
  return h('time', { datetime: iso, title: new Date(ms).toLocaleString() }, text);
}

// --- the API ------------------------------------------------------------------------------

class AuthError extends Error {}
class ApiError extends Error {
  constructor(status, errcode, message) {
    super(message);
    this.status = status;
    this.errcode = errcode;
  }
}

/**
 * GET an admin endpoint. Every failure is an exception the caller shows on the page: a 401
 * (AuthError), another error answer (ApiError with peekd's errcode and message), or no
 * answer at all (ApiError with status 0).
 */
async function api(path, params = {}) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') qs.set(k, String(v));
  const url = qs.toString() ? `${path}?${qs}` : path;
  let res;
  try {
    res = await fetch(url, { headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' }, cache: 'no-store', credentials: 'omit' });
  } catch {
    throw new ApiError(0, 'NETWORK', 'peekd did not answer (is it running, and is this page served by it?)');
  }
  let body = null;
  try {
    body = await res.json();
  } catch {
    // not JSON: reported below by status
  }
  if (res.status === 401) throw new AuthError(`${body?.errcode ?? 'M_UNKNOWN_TOKEN'}: ${body?.error ?? 'the token was refused'}`);
  if (!res.ok) throw new ApiError(res.status, body?.errcode ?? 'M_UNKNOWN', body?.error ?? res.statusText);
  return body;
}

const describe = (err) => (err instanceof ApiError ? (err.status ? `${err.errcode} (${err.status}): ${err.message}` : err.message) : String(err?.message ?? err));

// --- search (kept in the URL's fragment, never the token) ---------------------------------

const SEARCH_PARAM = { room: 'room_id', user: 'user_id', server: 'server_name' };

function currentSearch() {
  const q = new URLSearchParams(location.hash.slice(1));
  for (const kind of Object.keys(SEARCH_PARAM)) {
    const value = q.get(kind);
    if (value) return { kind, value };
  }
  return null;
}

function setSearch(search) {
  const next = search ? `#${new URLSearchParams({ [search.kind]: search.value })}` : '';
  if (location.hash === next || (!next && !location.hash)) {
    syncSearchForm();
    void refresh();
  } else if (next) {
    location.hash = next;
  } else {
    history.replaceState(null, '', location.pathname + location.search);
    syncSearchForm();
    void refresh();
  }
}

function syncSearchForm() {
  const search = currentSearch();
  $('search-kind').value = search?.kind ?? 'room';
  $('search-value').value = search?.value ?? '';
}

/** A light check before asking peekd (which checks properly): the sigil the kind needs. */
function searchProblem(search) {
  if (!search) return null;
  if (search.kind === 'room' && !search.value.startsWith('!')) return 'A room ID starts with "!" (for example !abc:example.org).';
  if (search.kind === 'user' && !search.value.startsWith('@')) return 'A user ID starts with "@" (for example @alice:example.org).';
  if (search.kind === 'server' && /^[!@#$]/.test(search.value)) return 'A server name has no sigil (for example example.org or matrix.example.org:8448).';
  return null;
}

function searchFilter(search) {
  return search ? { [SEARCH_PARAM[search.kind]]: search.value } : {};
}

// --- the token ----------------------------------------------------------------------------

function askForToken(message) {
  stopTimer();
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $('app').hidden = true;
  $('controls').hidden = true;
  $('login').hidden = false;
  show($('login-message'), message);
  $('token-input').value = '';
  $('token-input').focus();
}

async function submitToken(event) {
  event.preventDefault();
  const given = $('token-input').value.trim();
  if (!given) {
    show($('login-message'), 'Enter the admin token.');
    return;
  }
  token = given;
  $('token-submit').disabled = true;
  show($('login-message'), 'Checking the token…', 'info');
  try {
    // One request checks the token (one refusal at most), then everything loads.
    const shards = await api('v1/shards');
    sessionStorage.setItem(TOKEN_KEY, given);
    $('login').hidden = true;
    show($('login-message'), '');
    openApp();
    renderShards(shards);
  } catch (err) {
    if (err instanceof AuthError) askForToken(`The admin token was refused (${err.message}). Check the value of PEEKD_ADMIN_TOKEN and try again.`);
    else show($('login-message'), `Could not check the token: ${describe(err)}`);
  } finally {
    $('token-submit').disabled = false;
  }
}

function openApp() {
  $('app').hidden = false;
  $('controls').hidden = false;
  syncSearchForm();
  startTimer();
  void refresh();
}

// --- refreshing ---------------------------------------------------------------------------

function startTimer() {
  stopTimer();
  if (!$('auto-refresh').checked) return;
  timer = setInterval(() => {
    if (document.visibilityState === 'visible') void refresh();
  }, REFRESH_MS);
}

function stopTimer() {
  if (timer) clearInterval(timer);
  timer = undefined;
}

/** Loads everything for the current search; one at a time (a request during one runs after it). */
function refresh() {
  if (!token) return Promise.resolve();
  if (inFlight) {
    again = true;
    return inFlight;
  }
  inFlight = load().finally(() => {
    inFlight = undefined;
    if (again) {
      again = false;
      void refresh();
    }
  });
  return inFlight;
}

async function load() {
  const search = currentSearch();
  const problem = searchProblem(search);
  show($('search-message'), problem);
  // Without a search, every live peek is listed; the audit needs a room, user or server.
  const filter = problem ? null : searchFilter(search);
  const windowMs = Number($('timeline-window').value) || 0;
  const [shards, projections, peeks, audit] = await Promise.allSettled([
    api('v1/shards'),
    api('v1/projections'),
    filter ? api('v1/peeks', { ...filter, limit: PEEKS_LIMIT }) : Promise.resolve(null),
    filter && search ? loadAudit(filter, windowMs) : Promise.resolve(null),
  ]);
  const results = [shards, projections, peeks, audit];
  if (results.some((r) => r.status === 'rejected' && r.reason instanceof AuthError)) {
    askForToken('The admin token is no longer accepted (peekd may have restarted with another PEEKD_ADMIN_TOKEN). Enter it again.');
    return;
  }
  const now = Date.now();
  settle(shards, renderShards, 'shards-message');
  settle(projections, renderProjections, 'projections-message');
  settle(peeks, (v) => renderPeeks(v, search, now), 'peeks-message');
  settle(audit, (v) => renderTimeline(v, search, now, windowMs), 'timeline-message');
  const failed = results.filter((r) => r.status === 'rejected');
  $('updated').textContent = `updated ${new Date(now).toLocaleTimeString()}`;
  show($('status'), failed.length === results.length ? `Nothing could be loaded: ${describe(failed[0].reason)}` : '');
}

/** Renders what arrived (null: nothing was asked), or shows why it did not. */
function settle(result, render, messageId) {
  if (result.status === 'fulfilled') {
    show($(messageId), '');
    render(result.value);
  } else {
    show($(messageId), describe(result.reason));
  }
}

async function loadAudit(filter, windowMs) {
  const events = [];
  const since = windowMs ? Date.now() - windowMs : undefined;
  let from;
  for (let page = 0; page < AUDIT_MAX_PAGES; page++) {
    const answer = await api('v1/audit', { ...filter, since, from, limit: AUDIT_PAGE });
    events.push(...answer.events);
    if (!answer.next_batch) return { events, truncated: false };
    from = answer.next_batch;
  }
  return { events, truncated: true };
}

// --- live peeks -----------------------------------------------------------------------------

function peekerOf(p) {
  if (p.kind === 'device') return [p.user_id, ' · ', h('span', { class: 'mono' }, p.device_id)];
  return [p.server_name, ' ', h('span', { class: 'muted' }, `(peek ${p.peek_id})`)];
}

function searchButton(kind, value, text = value) {
  const b = h('button', { type: 'button', class: 'link', title: `search ${kind} ${value}` }, text);
  b.addEventListener('click', () => setSearch({ kind, value }));
  return b;
}

function groupOf(p, by) {
  if (by === 'device') return p.kind === 'device' ? { key: `${p.user_id}\u0000${p.device_id}`, title: `${p.user_id} · ${p.device_id}` } : { key: '\uffff', title: 'peeks between servers' };
  if (by === 'server') return p.kind === 'device' ? { key: '\uffff', title: 'device peeks (local users)' } : { key: p.server_name, title: `${p.server_name}` };
  return { key: p.room_id, title: p.room_id };
}

function renderPeeks(answer, search, now) {
  if (!answer) {
    $('peek-counts').textContent = '';
    $('peek-list').replaceChildren();
    return;
  }
  const { peeks, counts } = answer;
  const total = counts.device + counts.inbound + counts.outbound;
  const scope = search ? ` for ${search.kind} ${search.value}` : '';
  $('peek-counts').replaceChildren(
    h('strong', {}, fmtNumber(total)),
    ` live peeks${scope}: `,
    `${fmtNumber(counts.device)} device, ${fmtNumber(counts.inbound)} inbound (servers peeking rooms here), ${fmtNumber(counts.outbound)} outbound (rooms we peek elsewhere)`,
    peeks.length < total ? h('span', { class: 'muted' }, ` — showing the newest ${fmtNumber(peeks.length)}`) : '',
  );
  if (peeks.length === 0) {
    $('peek-list').replaceChildren(h('p', { class: 'muted', id: 'no-peeks' }, search ? 'No live peek matches the search.' : 'No live peeks.'));
    return;
  }
  const by = $('group-by').value;
  const groups = new Map();
  for (const p of peeks) {
    const g = groupOf(p, by);
    if (!groups.has(g.key)) groups.set(g.key, { title: g.title, items: [] });
    groups.get(g.key).items.push(p);
  }
  const body = h('tbody');
  for (const key of [...groups.keys()].sort()) {
    const g = groups.get(key);
    const title = by === 'room' && key !== '\uffff' ? searchButton('room', key) : by === 'server' && key !== '\uffff' ? searchButton('server', key) : g.title;
    body.append(h('tr', { class: 'group-row' }, h('th', { colspan: 6 }, title, h('span', { class: 'muted' }, ` (${g.items.length})`))));
    for (const p of g.items) {
      const overdue = typeof p.expires_at === 'number' && p.expires_at < now;
      body.append(
        h(
          'tr',
          {
            class: `peek-row${overdue ? ' overdue' : ''}`,
            'data-kind': p.kind,
            'data-room-id': p.room_id,
            'data-user-id': p.user_id,
            'data-device-id': p.device_id,
            'data-server-name': p.server_name,
            'data-peek-id': p.peek_id,
            'data-started-seq': p.started_seq,
          },
          h('td', {}, h('span', { class: `kind kind-${p.kind}` }, p.kind)),
          h('td', {}, searchButton('room', p.room_id)),
          h(
            'td',
            {},
            p.kind === 'device'
              ? [searchButton('user', p.user_id), ' · ', h('span', { class: 'mono' }, p.device_id)]
              : [searchButton('server', p.server_name), ' ', h('span', { class: 'muted' }, `(peek ${p.peek_id})`)],
          ),
          h('td', {}, when(p.started_at, now)),
          h('td', {}, when(p.renewed_at, now)),
          h('td', {}, when(p.expires_at, now), overdue ? ' (due)' : ''),
        ),
      );
    }
  }
  $('peek-list').replaceChildren(
    h('table', { id: 'peek-table' }, h('thead', {}, h('tr', {}, ...['kind', 'room', 'peeker', 'started', 'last renewed', 'expires'].map((c) => h('th', { scope: 'col' }, c)))), body),
  );
}

// --- shard map ------------------------------------------------------------------------------

function renderShards(map) {
  const here = map.this_host;
  $('host-info').replaceChildren('this process: ', h('code', {}, here), ` · ${map.mode === 'all-in-one' ? 'all roles in one process' : 'roles split'}`);
  $('shards-mode').textContent =
    map.mode === 'all-in-one'
      ? `All in one process: this process hosts all ${map.shards.length} shards and runs every job; no leases are taken.`
      : `Roles split: ${map.shards.length} shards held through leases in NATS KV (a lease lapses ${fmtDuration(map.lease_ttl_ms)} after its last renewal). Lease age = time since the lease was last written.`;
  const owners = [...new Set(map.shards.map((x) => x.owner).filter((o) => o !== null))].sort();
  const letter = (o) => String.fromCharCode(65 + (owners.indexOf(o) % 26));
  const cells = map.shards.map((x) => {
    const owned = x.owner !== null;
    const idx = owners.indexOf(x.owner);
    const age = x.lease_age_ms === null ? '' : fmtDuration(x.lease_age_ms);
    const title = owned
      ? `shard ${x.shard}: ${x.owner}${x.owner === here ? ' (this process)' : ''}${age ? `, lease written ${age} ago` : ''}`
      : `shard ${x.shard}: no owner (commands to it wait for a room host)`;
    return h(
      'div',
      { class: `shard ${owned ? `owner-${idx % 8}` : 'unowned'}`, 'data-shard': x.shard, 'data-owner': x.owner ?? '', title },
      h('span', { class: 'shard-no' }, `#${x.shard}`),
      h('span', { class: 'shard-owner' }, owned ? letter(x.owner) : 'none'),
      age ? h('span', { class: 'shard-age' }, age) : '',
    );
  });
  $('shard-grid').replaceChildren(...cells);
  const counts = new Map();
  for (const x of map.shards) counts.set(x.owner, (counts.get(x.owner) ?? 0) + 1);
  const legend = owners.map((o, i) =>
    h(
      'li',
      { 'data-owner': o },
      h('span', { class: `swatch owner-${i % 8}` }),
      h('strong', {}, letter(o)),
      ' ',
      h('code', {}, o),
      o === here ? ' (this process)' : '',
      h('span', { class: 'muted' }, ` — ${counts.get(o)} shards`),
    ),
  );
  if (counts.get(null)) legend.push(h('li', {}, h('span', { class: 'swatch shard unowned' }), `no owner — ${counts.get(null)} shards`));
  $('shard-owners').replaceChildren(...legend);
  const rows = map.jobs.map((j) =>
    h(
      'tr',
      { 'data-job': j.job },
      h('td', {}, h('code', {}, j.job)),
      h('td', {}, j.owner === null ? h('span', { class: 'muted' }, 'no owner') : [h('code', {}, j.owner), j.owner === here ? ' (this process)' : '']),
      h('td', { class: 'num' }, j.lease_age_ms === null ? '—' : fmtDuration(j.lease_age_ms)),
    ),
  );
  const hosts = (map.hosts ?? []).map((x) =>
    h('tr', {}, h('td', {}, x.group), h('td', {}, h('code', {}, x.host), x.host === here ? ' (this process)' : ''), h('td', { class: 'num' }, `${fmtDuration(x.heartbeat_age_ms)} ago`)),
  );
  $('jobs').replaceChildren(
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'job'), h('th', {}, 'owner'), h('th', { class: 'num' }, 'lease age'))), h('tbody', {}, ...rows)),
    hosts.length ? h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'heartbeat group'), h('th', {}, 'process'), h('th', { class: 'num' }, 'last seen'))), h('tbody', {}, ...hosts)) : '',
  );
}

// --- projections ----------------------------------------------------------------------------

function renderProjections({ projections }) {
  // In log messages (stream sequences), as the metrics count them: `position` is the last
  // message the projection has wholly committed, `head` the stream's last, `lag` between.
  const rows = projections.map((p) =>
    h(
      'tr',
      { class: `projection-row${p.lag > 0 ? ' behind' : ''}`, 'data-projection': p.name, 'data-lag': p.lag },
      h('td', {}, h('code', {}, p.name)),
      h('td', {}, p.stream),
      h('td', { class: 'num' }, fmtNumber(p.position)),
      h('td', { class: 'num' }, fmtNumber(p.head)),
      h('td', { class: 'num' }, fmtNumber(p.lag)),
      h(
        'td',
        {},
        h('progress', {
          max: Math.max(1, p.head),
          value: p.head > 0 ? Math.max(0, p.head - p.lag) : 1,
          title: p.lag ? `${fmtNumber(p.lag)} ${p.lag === 1 ? 'message' : 'messages'} behind` : 'caught up',
        }),
      ),
    ),
  );
  $('projection-list').replaceChildren(
    h(
      'table',
      { id: 'projection-table' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          h('th', {}, 'projection'),
          h('th', {}, 'stream'),
          h('th', { class: 'num' }, 'position'),
          h('th', { class: 'num' }, 'head'),
          h('th', { class: 'num' }, 'messages behind'),
          h('th', {}, ''),
        ),
      ),
      h('tbody', {}, ...rows),
    ),
  );
}

// --- the audit timeline -----------------------------------------------------------------------

function peekKey(e) {
  return e.kind === 'device' ? `device\u0000${e.room_id}\u0000${e.user_id}\u0000${e.device_id}` : `${e.kind}\u0000${e.room_id}\u0000${e.server_name}\u0000${e.peek_id}`;
}

/**
 * Pairs audit events into peeks: a PeekStarted opens one, PeekRenewed marks it, PeekExpired
 * ends it. A peek whose start is before the events read (a time window) starts at the first
 * event seen and is flagged `startedBefore`.
 */
export function pairPeeks(events) {
  const open = new Map();
  const peeks = [];
  const first = events.length ? Math.min(...events.map((e) => e.at)) : 0;
  const begin = (e, at, startedBefore) => {
    const p = {
      // Unique and stable: who peeked, and the position of the peek's first event (its
      // PeekStarted), since one device or peek ID can peek a room again later.
      id: `${e.kind === 'device' ? `${e.user_id}/${e.device_id}` : `${e.server_name}/${e.peek_id}`}@${e.seq}`,
      key: peekKey(e),
      kind: e.kind,
      room_id: e.room_id,
      user_id: e.user_id,
      device_id: e.device_id,
      server_name: e.server_name,
      peek_id: e.peek_id,
      start: at,
      startSeq: e.seq,
      startedBefore,
      renewals: [],
      end: null,
      reason: null,
    };
    peeks.push(p);
    open.set(p.key, p);
    return p;
  };
  for (const e of [...events].sort((a, b) => a.seq - b.seq)) {
    const key = peekKey(e);
    let p = open.get(key);
    if (e.event === 'PeekStarted') {
      if (p) {
        p.end = e.at;
        p.reason = 'other';
      }
      begin(e, e.at, false);
    } else if (e.event === 'PeekRenewed') {
      p ??= begin(e, first, true);
      p.renewals.push(e.at);
    } else if (e.event === 'PeekExpired') {
      p ??= begin(e, first, true);
      p.end = e.at;
      p.reason = REASONS.includes(e.reason) ? e.reason : 'other';
      p.rawReason = e.reason;
      open.delete(key);
    }
  }
  return peeks;
}

const STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800].map((x) => x * 1000);

function ticksFor(lo, hi, want = 7) {
  const step = STEPS.find((st) => (hi - lo) / st <= want) ?? Math.ceil((hi - lo) / want / 86_400_000) * 86_400_000;
  const offset = new Date(lo).getTimezoneOffset() * 60_000;
  const out = [];
  for (let t = Math.ceil((lo - offset) / step) * step + offset; t <= hi; t += step) out.push(t);
  return { step, ticks: out };
}

function tickLabel(t, step) {
  const d = new Date(t);
  const pad = (n) => String(n).padStart(2, '0');
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  if (step < 60_000) return `${hm}:${pad(d.getSeconds())}`;
  if (step < 86_400_000) return hm;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function peekLabel(p, manyRooms) {
  const who = p.kind === 'device' ? `${p.user_id} · ${p.device_id}` : p.kind === 'inbound' ? `${p.server_name} peeks here (${p.peek_id})` : `peeking on ${p.server_name} (${p.peek_id})`;
  return manyRooms ? `${p.room_id} — ${who}` : who;
}

const shorten = (text, max) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

function renderLegend() {
  $('timeline-legend').replaceChildren(
    h('li', {}, h('span', { class: 'swatch live' }), 'live (runs to now)'),
    ...REASONS.map((r) => h('li', { 'data-reason': r }, h('span', { class: `swatch reason-${r}` }), `ended: ${r.replaceAll('_', ' ')}`)),
    h('li', {}, h('span', { class: 'swatch reason-other' }), 'ended: other'),
    h('li', {}, h('span', { class: 'tick-swatch' }), 'renewal'),
  );
}

function renderTimeline(audit, search, now, windowMs) {
  const chart = $('timeline-chart');
  const table = $('timeline-table');
  if (!audit || !search) {
    $('timeline-title').textContent = 'Audit timeline';
    $('timeline-note').textContent = 'Search a room, user or server (or pick a room in the live list) to see its peeks over time.';
    chart.replaceChildren();
    table.replaceChildren();
    $('timeline-events').hidden = true;
    return;
  }
  $('timeline-title').textContent = `Audit timeline — ${search.kind} ${search.value}`;
  const all = pairPeeks(audit.events);
  const bars = all.slice(-MAX_BARS);
  const notes = [`${all.length} peeks, ${audit.events.length} audit events`];
  if (windowMs) notes.push(`since ${new Date(now - windowMs).toLocaleString()}`);
  if (audit.truncated) notes.push(`only the first ${fmtNumber(audit.events.length)} events were read: narrow the window`);
  if (bars.length < all.length) notes.push(`showing the latest ${bars.length}`);
  $('timeline-note').textContent = `${notes.join('; ')}.`;
  $('timeline-events').hidden = audit.events.length === 0;
  if (bars.length === 0) {
    chart.replaceChildren(h('p', { class: 'muted', id: 'no-history' }, 'No peek of this in the audit.'));
    table.replaceChildren();
    return;
  }

  const manyRooms = new Set(bars.map((b) => b.room_id)).size > 1;
  const W = 1000;
  const LABEL = 270;
  const RIGHT = 24;
  const TOP = 30;
  const LANE = 24;
  const BAR = 14;
  const H = TOP + bars.length * LANE + 8;
  let lo = Math.min(...bars.map((b) => b.start));
  let hi = Math.max(now, ...bars.map((b) => b.end ?? now), ...bars.flatMap((b) => b.renewals));
  if (hi - lo < 2_000) hi = lo + 2_000;
  const pad = (hi - lo) * 0.02;
  lo -= pad;
  hi += pad;
  const x = (t) => LABEL + ((t - lo) / (hi - lo)) * (W - LABEL - RIGHT);

  const root = s('svg', { class: 'timeline', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'timeline-svg-title', 'data-bars': bars.length });
  root.append(s('title', { id: 'timeline-svg-title' }, `Peeks of ${search.kind} ${search.value} over time: one bar per peek`));
  const { step, ticks } = ticksFor(lo, hi);
  for (const t of ticks) {
    root.append(s('line', { class: 'grid', x1: x(t), x2: x(t), y1: TOP - 6, y2: H }), s('text', { class: 'axis-label', x: x(t), y: TOP - 10, 'text-anchor': 'middle' }, tickLabel(t, step)));
  }
  bars.forEach((b, i) => {
    const y = TOP + i * LANE;
    const end = b.end ?? now;
    const live = b.end === null;
    const label = peekLabel(b, manyRooms);
    const describeBar = [
      label,
      manyRooms ? '' : b.room_id,
      `${b.kind} peek, started ${b.startedBefore ? 'before the window' : new Date(b.start).toLocaleString()}`,
      b.renewals.length ? `renewed ${b.renewals.length}×` : 'never renewed',
      live ? 'still live' : `ended ${new Date(end).toLocaleString()} (${b.rawReason ?? b.reason}) after ${fmtDuration(end - b.start)}`,
    ]
      .filter(Boolean)
      .join('\n');
    const lane = s('g', { class: 'lane', 'data-peek-id': b.id });
    lane.append(s('rect', { class: 'lane-bg', x: 0, y, width: W, height: LANE }));
    lane.append(s('text', { class: 'lane-label', x: LABEL - 8, y: y + LANE / 2 + 4, 'text-anchor': 'end' }, s('title', {}, label), shorten(label, 40)));
    const x0 = x(b.start);
    const bar = s(
      'rect',
      {
        class: `peek-bar ${live ? 'live' : `reason-${b.reason}`}`,
        x: x0,
        y: y + (LANE - BAR) / 2,
        width: Math.max(2, x(end) - x0),
        height: BAR,
        rx: 3,
        'data-peek-id': b.id,
        'data-kind': b.kind,
        'data-room-id': b.room_id,
        'data-user-id': b.user_id,
        'data-device-id': b.device_id,
        'data-server-name': b.server_name,
        'data-started-seq': b.startSeq,
        'data-start': b.start,
        'data-end': b.end ?? undefined,
        'data-live': live ? 'true' : 'false',
        'data-end-reason': live ? '' : (b.rawReason ?? b.reason),
        'data-renewals': b.renewals.length,
      },
      s('title', {}, describeBar),
    );
    lane.append(bar);
    if (b.startedBefore) lane.append(s('text', { class: 'before-mark', x: x0 - 3, y: y + LANE / 2 + 4, 'text-anchor': 'end' }, '…'));
    for (const at of b.renewals) {
      lane.append(s('line', { class: 'renewal-tick', x1: x(at), x2: x(at), y1: y + 3, y2: y + LANE - 3, 'data-peek-id': b.id }, s('title', {}, `renewed ${new Date(at).toLocaleString()}`)));
    }
    root.append(lane);
  });
  root.append(s('line', { class: 'now-line', x1: x(now), x2: x(now), y1: TOP - 6, y2: H }), s('text', { class: 'now-label', x: x(now), y: H - 2, 'text-anchor': 'end' }, 'now '));
  chart.replaceChildren(root);

  const listed = audit.events.slice(-MAX_TABLE_EVENTS);
  table.replaceChildren(
    listed.length < audit.events.length ? h('p', { class: 'muted' }, `The latest ${fmtNumber(listed.length)} of ${fmtNumber(audit.events.length)} events.`) : '',
    h(
      'table',
      {},
      h('thead', {}, h('tr', {}, ...['seq', 'time', 'event', 'room', 'peeker', 'expires', 'reason'].map((c) => h('th', {}, c)))),
      h(
        'tbody',
        {},
        ...listed.map((e) =>
          h(
            'tr',
            { 'data-seq': e.seq },
            h('td', { class: 'num' }, fmtNumber(e.seq)),
            h('td', {}, when(e.at, now)),
            h('td', {}, e.event),
            h('td', {}, h('code', {}, e.room_id)),
            h('td', {}, peekerOf(e)),
            h('td', {}, typeof e.expires_at === 'number' ? when(e.expires_at, now) : ''),
            h('td', {}, e.reason ?? ''),
          ),
        ),
      ),
    ),
  );
}

// --- start ------------------------------------------------------------------------------------

function init() {
  renderLegend();
  $('token-form').addEventListener('submit', (e) => void submitToken(e));
  $('search-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const value = $('search-value').value.trim();
    setSearch(value ? { kind: $('search-kind').value, value } : null);
  });
  $('search-clear').addEventListener('click', () => setSearch(null));
  $('refresh').addEventListener('click', () => void refresh());
  $('auto-refresh').addEventListener('change', startTimer);
  $('group-by').addEventListener('change', () => void refresh());
  $('timeline-window').addEventListener('change', () => void refresh());
  $('forget-token').addEventListener('click', () => askForToken('The token was forgotten. Enter it again to continue.'));
  window.addEventListener('hashchange', () => {
    syncSearchForm();
    void refresh();
  });
  if (token) openApp();
  else askForToken('');
}

init();
