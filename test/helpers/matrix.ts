// A minimal Matrix client for tests: real HTTP, JSON in and out.
import { expect } from 'vitest';
export interface MatrixResponse<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

export async function request<T = any>(
  baseUrl: string,
  method: string,
  path: string,
  opts: { token?: string; body?: unknown; rawBody?: string; headers?: Record<string, string> } = {},
): Promise<MatrixResponse<T>> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  let body: string | undefined;
  if (opts.rawBody !== undefined) body = opts.rawBody;
  else if (opts.body !== undefined) body = JSON.stringify(opts.body);
  if (body !== undefined && !headers['content-type']) headers['content-type'] = 'application/json';
  const res = await fetch(baseUrl + path, { method, headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    // leave as text: the test will see it is not JSON
  }
  return { status: res.status, body: parsed as T, headers: res.headers };
}

export const enc = encodeURIComponent;

export class TestUser {
  constructor(
    readonly baseUrl: string,
    readonly userId: string,
    readonly deviceId: string,
    readonly token: string,
  ) {}

  static async register(baseUrl: string, localpart: string, password = 'correct horse'): Promise<TestUser> {
    const r = await request(baseUrl, 'POST', '/_matrix/client/v3/register', { body: { username: localpart, password, auth: { type: 'm.login.dummy' } } });
    if (r.status !== 200) throw new Error(`register ${localpart}: ${r.status} ${JSON.stringify(r.body)}`);
    return new TestUser(baseUrl, r.body.user_id, r.body.device_id, r.body.access_token);
  }

  /** Another device of the same user (a password login). */
  async login(password = 'correct horse'): Promise<TestUser> {
    const r = await request(this.baseUrl, 'POST', '/_matrix/client/v3/login', { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: this.userId }, password } });
    if (r.status !== 200) throw new Error(`login: ${r.status} ${JSON.stringify(r.body)}`);
    return new TestUser(this.baseUrl, r.body.user_id, r.body.device_id, r.body.access_token);
  }

  req<T = any>(method: string, path: string, body?: unknown): Promise<MatrixResponse<T>> {
    return request<T>(this.baseUrl, method, path, { token: this.token, body });
  }

  async ok<T = any>(method: string, path: string, body?: unknown): Promise<T> {
    const r = await this.req<T>(method, path, body);
    if (r.status !== 200) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  createRoom(body: Record<string, unknown>): Promise<{ room_id: string; room_alias?: string }> {
    return this.ok('POST', '/_matrix/client/v3/createRoom', body);
  }

  /** A public room whose history is world_readable. */
  createWorldReadableRoom(extra: Record<string, unknown> = {}): Promise<{ room_id: string; room_alias?: string }> {
    return this.createRoom({
      preset: 'public_chat',
      ...extra,
      initial_state: [{ type: 'm.room.history_visibility', state_key: '', content: { history_visibility: 'world_readable' } }],
    });
  }

  async send(roomId: string, body: string, txnId = `t${Math.random().toString(36).slice(2)}`): Promise<string> {
    const r = await this.ok('PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${enc(txnId)}`, { msgtype: 'm.text', body });
    return r.event_id;
  }

  async setState(roomId: string, type: string, content: Record<string, unknown>, stateKey = ''): Promise<string> {
    const r = await this.ok('PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/state/${enc(type)}/${enc(stateKey)}`, content);
    return r.event_id;
  }

  peek(roomIdOrAlias: string, body: Record<string, unknown> = {}): Promise<MatrixResponse> {
    return this.req('POST', `/_matrix/client/v3/peek/${enc(roomIdOrAlias)}`, body);
  }

  unpeek(roomId: string): Promise<MatrixResponse> {
    return this.req('POST', `/_matrix/client/v3/rooms/${enc(roomId)}/unpeek`, {});
  }

  sync(params: SyncParams = {}): Promise<any> {
    return this.ok('GET', `/_matrix/client/v3/sync?${syncQuery(params)}`);
  }

  /**
   * Long-polls /sync from `since` until `until(body)` holds, for at most `withinMs`;
   * returns the matching body and every body seen on the way (oldest first).
   */
  async syncUntil(since: string | undefined, until: (body: any) => boolean, withinMs = 10_000, params: Omit<SyncParams, 'since' | 'timeout'> = {}): Promise<{ body: any; seen: any[] }> {
    const deadline = Date.now() + withinMs;
    const seen: any[] = [];
    let next = since;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`syncUntil: condition not met within ${withinMs} ms; last bodies: ${JSON.stringify(seen.slice(-3))}`);
      const body = await this.sync({ ...params, since: next, timeout: Math.max(0, Math.min(left, 5_000)) });
      seen.push(body);
      if (until(body)) return { body, seen };
      next = body.next_batch;
    }
  }

  join(roomIdOrAlias: string): Promise<MatrixResponse> {
    return this.req('POST', `/_matrix/client/v3/join/${enc(roomIdOrAlias)}`, {});
  }

  leave(roomId: string): Promise<MatrixResponse> {
    return this.req('POST', `/_matrix/client/v3/rooms/${enc(roomId)}/leave`, {});
  }

  logout(): Promise<MatrixResponse> {
    return this.req('POST', '/_matrix/client/v3/logout', {});
  }

  whoami(): Promise<MatrixResponse> {
    return this.req('GET', '/_matrix/client/v3/account/whoami');
  }

  /** The room's events, newest first (GET /messages, dir=b). */
  async messages(roomId: string, limit = 100): Promise<any[]> {
    const r = await this.ok('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=${limit}`);
    return r.chunk;
  }
}

export interface SyncParams {
  since?: string;
  timeout?: number;
  filter?: string;
  full_state?: boolean;
}

function syncQuery(params: SyncParams): URLSearchParams {
  const q = new URLSearchParams();
  if (params.since) q.set('since', params.since);
  if (params.timeout !== undefined) q.set('timeout', String(params.timeout));
  if (params.filter) q.set('filter', params.filter);
  if (params.full_state) q.set('full_state', 'true');
  return q;
}

/** Every room ID a sync body lists in `section`. */
export function roomsIn(body: any, section: 'join' | 'peek' | 'leave' | 'invite'): string[] {
  return Object.keys(body?.rooms?.[section] ?? {});
}

/** The (type, body) pairs of a room section's timeline, for compact assertions. */
export function timelineOf(section: any): { type: string; body?: unknown; state_key?: string }[] {
  return (section?.timeline?.events ?? []).map((e: any) => ({
    type: e.type,
    ...(e.content?.body !== undefined ? { body: e.content.body } : {}),
    ...(e.state_key !== undefined ? { state_key: e.state_key } : {}),
  }));
}

/** The audit entries once `until(entries)` holds (the audit projection commits on its own schedule). */
export async function auditUntil(baseUrl: string, adminToken: string, query: Record<string, string>, until: (entries: any[]) => boolean, withinMs = 5_000): Promise<any[]> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const entries = await audit(baseUrl, adminToken, query);
    if (until(entries) || Date.now() > deadline) return entries;
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** GET /_peekd/admin/v1/audit with the admin token. */
export async function audit(baseUrl: string, adminToken: string, query: Record<string, string>): Promise<any[]> {
  const r = await request(baseUrl, 'GET', `/_peekd/admin/v1/audit?${new URLSearchParams(query)}`, { token: adminToken });
  if (r.status !== 200) throw new Error(`audit: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.events;
}

/** A Matrix error: this status and errcode, a string `error`, served as JSON. */
export function expectError(r: { status: number; body: any; headers: Headers }, status: number, errcode: string): void {
  expect({ status: r.status, errcode: r.body?.errcode }).toEqual({ status, errcode });
  expect(typeof r.body.error).toBe('string');
  expect(r.headers.get('content-type')).toMatch(/^application\/json/);
}

/** A new guest account (POST /register?kind=guest). */
export async function registerGuest(baseUrl: string): Promise<TestUser> {
  const r = await request(baseUrl, 'POST', '/_matrix/client/v3/register?kind=guest', { body: {} });
  if (r.status !== 200) throw new Error(`guest registration: ${r.status} ${JSON.stringify(r.body)}`);
  return new TestUser(baseUrl, r.body.user_id, r.body.device_id, r.body.access_token);
}

/** The user's current member event in the room (the whole event). */
export function memberEvent(reader: TestUser, roomId: string, userId: string): Promise<any> {
  return reader.ok('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/state/m.room.member/${enc(userId)}?format=event`);
}
