// A minimal Matrix client for tests: real HTTP, JSON in and out.
export interface MatrixResponse<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

export async function request<T = any>(baseUrl: string, method: string, path: string, opts: { token?: string; body?: unknown; rawBody?: string; headers?: Record<string, string> } = {}): Promise<MatrixResponse<T>> {
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

  sync(params: { since?: string; timeout?: number; filter?: string; full_state?: boolean } = {}): Promise<any> {
    const q = new URLSearchParams();
    if (params.since) q.set('since', params.since);
    if (params.timeout !== undefined) q.set('timeout', String(params.timeout));
    if (params.filter) q.set('filter', params.filter);
    if (params.full_state) q.set('full_state', 'true');
    return this.ok('GET', `/_matrix/client/v3/sync?${q}`);
  }
}
