// The configuration contract: every setting has an env var (the names below are stable),
// an optional JSON config file may set the same keys, and the environment wins.
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import ipaddr from 'ipaddr.js';
import { parse as parseJsonc, type ParseError } from 'jsonc-parser';
import { isValidServerName } from './events/ids.ts';

export const ALL_ROLES = ['http', 'rooms', 'projections', 'federation'] as const;
export type Role = (typeof ALL_ROLES)[number];

/**
 * Addresses outbound federation refuses by default (Synapse's default
 * ip_range_blacklist): loopback, private, CGNAT, link-local, multicast, documentation,
 * benchmarking and other reserved ranges, IPv4 and IPv6.
 */
export const DEFAULT_IP_DENYLIST = [
  '0.0.0.0/8',
  '10.0.0.0/8',
  '100.64.0.0/10',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '172.16.0.0/12',
  '192.0.0.0/24',
  '192.0.2.0/24',
  '192.88.99.0/24',
  '192.168.0.0/16',
  '198.18.0.0/15',
  '198.51.100.0/24',
  '203.0.113.0/24',
  '224.0.0.0/4',
  '240.0.0.0/4',
  '255.255.255.255/32',
  '::/128',
  '::1/128',
  '::ffff:0:0/96',
  '64:ff9b::/96',
  '100::/64',
  '2001::/23',
  '2001:db8::/32',
  '2002::/16',
  'fc00::/7',
  'fe80::/10',
  'fec0::/10',
  'ff00::/8',
];

export interface Config {
  serverName: string;
  listenHost: string;
  listenPort: number;
  dataDir: string;
  databaseUrl?: string;
  natsUrl?: string;
  natsServerBin?: string;
  streamPrefix: string;
  shards: number;
  signingKeyPath: string;
  federationDestinations: Record<string, string>;
  peekLifetimeMs: number;
  inboundRenewalIntervalMs: number;
  outboundIdleMs: number;
  adminToken?: string;
  roles: Role[];
  logLevel: string;
  /** Client-API rate limit for /peek: requests per device per second, and burst. */
  peekRatePerSecond: number;
  peekRateBurst: number;
  maxPeeksPerDevice: number;
  maxInboundPeeksPerServer: number;
  registrationRatePerSecond: number;
  maxClientBodyBytes: number;
  maxFederationBodyBytes: number;
  snapshotInterval: number;
  leaseTtlMs: number;
  streamReplicas: number;
  projectionWaitMs: number;
  /** Group commit of the PEEKS projections: at most one transaction per this many ms while no read waits (0: none). */
  projectionLingerMs: number;
  /** CIDR ranges outbound federation never connects to (unless the destination is configured). */
  federationIpDenylist: string[];
  /** CIDR ranges exempt from the denylist. */
  federationIpAllowlist: string[];
  /** Largest federation response body peekd reads (key responses have a smaller, fixed cap). */
  maxFederationResponseBytes: number;
  registration: 'open' | 'closed';
  guestAccess: boolean;
  guestRegistrationBurst: number;
  guestRegistrationRefillMs: number;
  /** Failed logins allowed in a burst, per account and per client address. */
  loginFailureBurst: number;
  /** One more failed login is allowed every this many ms. */
  loginFailureRefillMs: number;
  /** CIDR ranges whose per-address failed-login bucket is not applied (PEEKD_LOGIN_FAILURE_EXEMPT_ADDRESSES). */
  loginFailureExemptAddresses: string[];
  /** Password hashes computed at once; further logins queue (and past the queue get 429). */
  passwordHashConcurrency: number;
  maxFiltersPerUser: number;
  /** Where /metrics is served: undefined = on the main listener; else its own host and port. */
  metricsListen?: { host: string; port: number };
  /** Longest a graceful shutdown may take before the process exits non-zero. */
  shutdownTimeoutMs: number;
  /** /ready fails while a projection this process runs is more than this many log messages behind. */
  readyMaxLag: number;
}

interface Setting {
  env: string;
  key: keyof Config;
  help: string;
  default: string;
}

/** Every setting, in the order `peekd --help` lists them. */
export const SETTINGS: Setting[] = [
  { env: 'PEEKD_SERVER_NAME', key: 'serverName', help: "this server's Matrix server name", default: 'localhost:8008' },
  { env: 'PEEKD_LISTEN', key: 'listenHost', help: 'host:port the HTTP server binds', default: '127.0.0.1:8008' },
  { env: 'PEEKD_DATA_DIR', key: 'dataDir', help: 'embedded database, nats-server store, signing key', default: './data' },
  { env: 'DATABASE_URL', key: 'databaseUrl', help: 'Postgres URL; unset = embedded PGlite in the data dir', default: '' },
  { env: 'NATS_URL', key: 'natsUrl', help: 'NATS with JetStream; unset = start `nats-server -c nats.conf`', default: '' },
  { env: 'PEEKD_STREAM_PREFIX', key: 'streamPrefix', help: 'prefix for stream, subject, KV and consumer names', default: '' },
  { env: 'PEEKD_SHARDS', key: 'shards', help: 'shard count, fixed when the streams are created', default: '64' },
  { env: 'PEEKD_SIGNING_KEY', key: 'signingKeyPath', help: 'path of the ed25519 key file', default: '<data dir>/signing.key' },
  { env: 'PEEKD_FEDERATION_DESTINATIONS', key: 'federationDestinations', help: 'JSON map server name → base URL, checked before discovery', default: '{}' },
  { env: 'PEEKD_PEEK_LIFETIME_MS', key: 'peekLifetimeMs', help: 'lifetime of a device peek before it must be renewed', default: '3600000' },
  { env: 'PEEKD_INBOUND_RENEWAL_INTERVAL_MS', key: 'inboundRenewalIntervalMs', help: 'renewal_interval granted to remote peekers', default: '3600000' },
  { env: 'PEEKD_OUTBOUND_IDLE_MS', key: 'outboundIdleMs', help: 'end an outbound peek when no peeking device synced for this long', default: '600000' },
  { env: 'PEEKD_ADMIN_TOKEN', key: 'adminToken', help: 'bearer token for /_peekd/admin/… (unset: admin API off)', default: '' },
  { env: 'PEEKD_ROLES', key: 'roles', help: 'http,rooms,projections,federation or a subset', default: 'http,rooms,projections,federation' },
  { env: 'PEEKD_NATS_SERVER', key: 'natsServerBin', help: 'the nats-server binary to start when NATS_URL is unset (unset: search PATH)', default: '' },
  { env: 'PEEKD_LOG_LEVEL', key: 'logLevel', help: 'log level: trace, debug, info, warn, error, fatal or silent', default: 'info' },
  { env: 'PEEKD_PEEK_RATE_PER_SECOND', key: 'peekRatePerSecond', help: '/peek calls per device per second, averaged over a window of PEEKD_PEEK_RATE_BURST calls', default: '5' },
  { env: 'PEEKD_PEEK_RATE_BURST', key: 'peekRateBurst', help: '/peek calls a device may make in a burst', default: '20' },
  { env: 'PEEKD_MAX_PEEKS_PER_DEVICE', key: 'maxPeeksPerDevice', help: 'live peeks one device may hold', default: '100' },
  { env: 'PEEKD_MAX_INBOUND_PEEKS_PER_SERVER', key: 'maxInboundPeeksPerServer', help: 'live peeks one remote server may hold here', default: '10000' },
  { env: 'PEEKD_REGISTRATION_RATE_PER_SECOND', key: 'registrationRatePerSecond', help: 'registrations per second per client address', default: '100' },
  { env: 'PEEKD_MAX_CLIENT_BODY_BYTES', key: 'maxClientBodyBytes', help: 'largest client API request body', default: '1048576' },
  { env: 'PEEKD_SNAPSHOT_INTERVAL', key: 'snapshotInterval', help: 'room actor snapshot every this many events (0: off)', default: '500' },
  { env: 'PEEKD_LEASE_TTL_MS', key: 'leaseTtlMs', help: 'with roles split: how long a room host holds a shard lease without renewing it', default: '10000' },
  { env: 'PEEKD_STREAM_REPLICAS', key: 'streamReplicas', help: 'replicas of every stream and KV bucket peekd creates (3 on a three-node JetStream cluster)', default: '1' },
  {
    env: 'PEEKD_PROJECTION_WAIT_MS',
    key: 'projectionWaitMs',
    help: 'longest a request waits for the read models to show the writes this process acknowledged before it (read your writes) before answering 503; writes themselves answer once the log has them',
    default: '10000',
  },
  {
    env: 'PEEKD_PROJECTION_LINGER_MS',
    key: 'projectionLingerMs',
    help: 'group commit of the peek projections (sync peeks, audit, federation peeks): while no read waits for them, at most one Postgres transaction per this many ms, gathering the events in between; a read in the same process that waits for them (read your writes) or a quiet stream commits at once (with roles split, a read in an HTTP process may wait up to this long); 0 commits every batch at once',
    default: '100',
  },
  { env: 'PEEKD_MAX_FEDERATION_BODY_BYTES', key: 'maxFederationBodyBytes', help: 'largest federation request body', default: '16777216' },
  { env: 'PEEKD_MAX_FEDERATION_RESPONSE_BYTES', key: 'maxFederationResponseBytes', help: 'largest federation response body peekd reads from a peer', default: '16777216' },
  {
    env: 'PEEKD_FEDERATION_IP_DENYLIST',
    key: 'federationIpDenylist',
    help: 'comma-separated CIDR ranges outbound federation never connects to, unless the server is in PEEKD_FEDERATION_DESTINATIONS (default: loopback, private, link-local and reserved ranges; `none` for no denylist; empty means the default)',
    default: DEFAULT_IP_DENYLIST.join(','),
  },
  { env: 'PEEKD_FEDERATION_IP_ALLOWLIST', key: 'federationIpAllowlist', help: 'comma-separated CIDR ranges exempt from the denylist', default: '' },
  { env: 'PEEKD_REGISTRATION', key: 'registration', help: 'open: anyone may register an account; closed: /register answers 403', default: 'open' },
  {
    env: 'PEEKD_GUEST_ACCESS',
    key: 'guestAccess',
    help: 'on: POST /register?kind=guest gives guest accounts, limited to what the Guest access module allows (sync, read and peek world_readable rooms, join rooms whose guest_access is can_join and send there, set a display name; upgradable to full accounts); off: guests refused, existing guest tokens answer 403',
    default: 'on',
  },
  { env: 'PEEKD_GUEST_REGISTRATION_BURST', key: 'guestRegistrationBurst', help: 'guest registrations a client address may make in a burst, before 429', default: '100' },
  { env: 'PEEKD_GUEST_REGISTRATION_REFILL_MS', key: 'guestRegistrationRefillMs', help: 'after the burst, one more guest registration per client address every this many ms', default: '1000' },
  { env: 'PEEKD_LOGIN_FAILURE_BURST', key: 'loginFailureBurst', help: 'failed logins allowed in a burst, per account and per client address, before 429', default: '5' },
  { env: 'PEEKD_LOGIN_FAILURE_REFILL_MS', key: 'loginFailureRefillMs', help: 'after the burst, one more failed login is allowed every this many ms', default: '6000' },
  {
    env: 'PEEKD_LOGIN_FAILURE_EXEMPT_ADDRESSES',
    key: 'loginFailureExemptAddresses',
    help: 'client addresses (comma-separated CIDR ranges, or none) whose per-address failed-login limit does not apply — the local machine: a test suite, or a reverse proxy through which every client would share one address; the per-account limit still applies',
    default: '127.0.0.1/32,::1/128',
  },
  { env: 'PEEKD_PASSWORD_HASH_CONCURRENCY', key: 'passwordHashConcurrency', help: 'password hashes computed at once (each takes 16 MiB); more wait in a bounded queue', default: '2' },
  { env: 'PEEKD_METRICS_LISTEN', key: 'metricsListen', help: 'host:port of a listener of its own for /metrics (unset: /metrics on PEEKD_LISTEN)', default: '' },
  { env: 'PEEKD_SHUTDOWN_TIMEOUT_MS', key: 'shutdownTimeoutMs', help: 'on SIGTERM/SIGINT, longest the graceful shutdown may take before peekd exits non-zero', default: '10000' },
  { env: 'PEEKD_READY_MAX_LAG', key: 'readyMaxLag', help: '/ready answers 503 while a projection this process runs is more than this many log messages behind its stream', default: '1000' },
  { env: 'PEEKD_MAX_FILTERS_PER_USER', key: 'maxFiltersPerUser', help: 'stored sync filters per user', default: '100' },
];

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

function positiveInt(name: string, raw: string): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new ConfigError(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

function nonNegativeInt(name: string, raw: string): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new ConfigError(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
  return n;
}

function replicas(raw: string): number {
  const n = positiveInt('PEEKD_STREAM_REPLICAS', raw);
  if (n > 5) throw new ConfigError(`PEEKD_STREAM_REPLICAS must be 1..5 (JetStream's limit), got ${n}`);
  return n;
}

/**
 * Reads the config file (JSON whose keys are the env var names) if one is given. A syntax
 * error is reported by line and column only: V8's message quotes the text around it, which
 * may be part of a secret (the admin token, a DATABASE_URL password).
 */
function readConfigFile(path: string | undefined): Record<string, string> {
  if (!path) return {};
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ConfigError(`config file ${path} is not valid JSON: ${jsonErrorPlace(text)}`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError(`config file ${path} must hold a JSON object`);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(parsed)) {
    if (!SETTINGS.some((s) => s.env === k)) throw new ConfigError(`unknown key ${k} in ${path}`);
    out[k] = typeof v === 'string' ? v : JSON.stringify(v);
  }
  return out;
}

/**
 * Where a text JSON.parse refused stops being JSON, as "syntax error at line L, column C"
 * (jsonc-parser's strict reading, no comments or trailing commas): V8's own message says
 * where only for some errors, and quotes the text around it.
 */
function jsonErrorPlace(text: string): string {
  const errors: ParseError[] = [];
  parseJsonc(text, errors, { disallowComments: true, allowTrailingComma: false, allowEmptyContent: false });
  const at = errors[0]?.offset;
  if (at === undefined) return 'syntax error';
  const line = text.slice(0, at).split('\n').length;
  const column = at - text.lastIndexOf('\n', at - 1);
  return `syntax error at line ${line}, column ${column}`;
}

const URL_ESCAPE_HINT = 'percent-encode special characters in the user name and password (# as %23, @ as %40, / as %2F, ? as %3F, : as %3A, % as %25)';

/**
 * Checks DATABASE_URL before the postgres driver sees it: the driver's own error for a URL it
 * cannot parse (Node's ERR_INVALID_URL) carries the whole URL, password included. These
 * messages name the variable, never its value. A comma-separated host list (which the driver
 * accepts) is checked by its first host, as the driver reads it.
 */
export function checkDatabaseUrl(raw: string): string {
  if (!/^postgres(ql)?:\/\//i.test(raw)) throw new ConfigError('DATABASE_URL must be a postgres:// or postgresql:// URL (its value is not shown: it may hold a password)');
  const authority = raw.slice(raw.indexOf('://') + 3).split(/[/?]/)[0]!;
  // A # in the user name or password would end the URL there (a fragment after the path is
  // harmless: the driver ignores it).
  if (authority.includes('#')) throw new ConfigError(`DATABASE_URL holds a #, which ends a URL (its value is not shown: it may hold a password): ${URL_ESCAPE_HINT}`);
  const hosts = authority.slice(authority.lastIndexOf('@') + 1);
  let url: URL;
  try {
    url = new URL(hosts.includes(',') ? raw.replace(hosts, hosts.split(',')[0]!) : raw);
  } catch {
    throw new ConfigError(`DATABASE_URL is not a valid URL (its value is not shown: it may hold a password): ${URL_ESCAPE_HINT}`);
  }
  try {
    decodeURIComponent(url.username);
    decodeURIComponent(url.password);
  } catch {
    throw new ConfigError(`DATABASE_URL holds a % that starts no valid escape: ${URL_ESCAPE_HINT}`);
  }
  return raw;
}

/**
 * Checks the servers of NATS_URL that carry credentials (`nats://user:password@host:port`):
 * the NATS client's error for one it cannot parse carries the whole URL, password included.
 * The rest are left to the client, whose forms (bare host:port, IPv6) are its own.
 */
export function checkNatsUrl(raw: string): string {
  for (const server of raw.split(',').map((s) => s.trim())) {
    if (!server.includes('@')) continue;
    let valid = !server.includes('#');
    try {
      new URL(`http://${server.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '')}`);
    } catch {
      valid = false;
    }
    if (!valid) throw new ConfigError(`NATS_URL is not a valid URL (its value is not shown: it may hold a password): ${URL_ESCAPE_HINT}`);
  }
  return raw;
}

function cidrList(name: string, raw: string): string[] {
  const list = raw
    .split(',')
    .map((r) => r.trim())
    .filter(Boolean);
  for (const cidr of list) {
    try {
      ipaddr.parseCIDR(cidr);
    } catch {
      throw new ConfigError(`${name} must be comma-separated CIDR ranges (like 10.0.0.0/8), got ${JSON.stringify(cidr)}`);
    }
  }
  return list;
}

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

/** Whether `raw` is an http(s) URL a federation request can be sent to (a base: no query or fragment). */
function isHttpBaseUrl(raw: unknown): boolean {
  if (typeof raw !== 'string') return false;
  try {
    const url = new URL(raw);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.search === '' && url.hash === '';
  } catch {
    return false;
  }
}

function optional<T>(raw: string | undefined, parse: (raw: string) => T): T | undefined {
  return raw === undefined ? undefined : parse(raw);
}

function oneOf<T extends string>(name: string, raw: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(raw)) throw new ConfigError(`${name} must be one of ${allowed.join(', ')}, got ${JSON.stringify(raw)}`);
  return raw as T;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, configFile = env.PEEKD_CONFIG): Config {
  const file = readConfigFile(configFile);
  const get = (name: string): string | undefined => {
    const v = env[name] ?? file[name];
    return v === undefined || v === '' ? undefined : v;
  };
  const dflt = (name: string) => SETTINGS.find((s) => s.env === name)!.default;
  const value = (name: string) => get(name) ?? dflt(name);

  const serverName = value('PEEKD_SERVER_NAME');
  if (!isValidServerName(serverName)) throw new ConfigError(`PEEKD_SERVER_NAME is not a valid server name: ${serverName}`);
  const listen = value('PEEKD_LISTEN');
  const m = listen.match(/^(.*):(\d+)$/);
  if (!m || Number(m[2]) > 65535) throw new ConfigError(`PEEKD_LISTEN must be host:port (a port up to 65535), got ${listen}`);
  const metricsListen = get('PEEKD_METRICS_LISTEN');
  const mm = metricsListen?.match(/^(.*):(\d+)$/);
  if (metricsListen && (!mm || Number(mm[2]) > 65535)) throw new ConfigError(`PEEKD_METRICS_LISTEN must be host:port, got ${metricsListen}`);
  const dataDir = resolve(value('PEEKD_DATA_DIR'));
  let federationDestinations: Record<string, string>;
  try {
    federationDestinations = JSON.parse(value('PEEKD_FEDERATION_DESTINATIONS'));
  } catch {
    throw new ConfigError('PEEKD_FEDERATION_DESTINATIONS must be a JSON object of server name → base URL');
  }
  if (!federationDestinations || typeof federationDestinations !== 'object' || Array.isArray(federationDestinations)) {
    throw new ConfigError('PEEKD_FEDERATION_DESTINATIONS must be a JSON object of server name → base URL');
  }
  for (const [name, base] of Object.entries(federationDestinations)) {
    if (!isValidServerName(name)) throw new ConfigError(`PEEKD_FEDERATION_DESTINATIONS: ${JSON.stringify(name)} is not a valid server name`);
    if (!isHttpBaseUrl(base)) throw new ConfigError(`PEEKD_FEDERATION_DESTINATIONS: the base URL of ${name} must be an http:// or https:// URL, got ${JSON.stringify(base)}`);
  }
  const roles = value('PEEKD_ROLES')
    .split(',')
    .map((r) => r.trim())
    .filter(Boolean);
  for (const r of roles) if (!(ALL_ROLES as readonly string[]).includes(r)) throw new ConfigError(`unknown role ${r} in PEEKD_ROLES`);
  return {
    serverName,
    listenHost: m[1]!.replace(/^\[(.*)\]$/, '$1'),
    listenPort: Number(m[2]),
    dataDir,
    databaseUrl: optional(get('DATABASE_URL'), checkDatabaseUrl),
    natsUrl: optional(get('NATS_URL'), checkNatsUrl),
    natsServerBin: get('PEEKD_NATS_SERVER'),
    streamPrefix: value('PEEKD_STREAM_PREFIX'),
    shards: positiveInt('PEEKD_SHARDS', value('PEEKD_SHARDS')),
    signingKeyPath: get('PEEKD_SIGNING_KEY') ?? join(dataDir, 'signing.key'),
    federationDestinations,
    peekLifetimeMs: positiveInt('PEEKD_PEEK_LIFETIME_MS', value('PEEKD_PEEK_LIFETIME_MS')),
    inboundRenewalIntervalMs: positiveInt('PEEKD_INBOUND_RENEWAL_INTERVAL_MS', value('PEEKD_INBOUND_RENEWAL_INTERVAL_MS')),
    outboundIdleMs: positiveInt('PEEKD_OUTBOUND_IDLE_MS', value('PEEKD_OUTBOUND_IDLE_MS')),
    adminToken: get('PEEKD_ADMIN_TOKEN'),
    roles: roles as Role[],
    logLevel: oneOf('PEEKD_LOG_LEVEL', value('PEEKD_LOG_LEVEL'), LOG_LEVELS),
    peekRatePerSecond: positiveInt('PEEKD_PEEK_RATE_PER_SECOND', value('PEEKD_PEEK_RATE_PER_SECOND')),
    peekRateBurst: positiveInt('PEEKD_PEEK_RATE_BURST', value('PEEKD_PEEK_RATE_BURST')),
    maxPeeksPerDevice: positiveInt('PEEKD_MAX_PEEKS_PER_DEVICE', value('PEEKD_MAX_PEEKS_PER_DEVICE')),
    maxInboundPeeksPerServer: positiveInt('PEEKD_MAX_INBOUND_PEEKS_PER_SERVER', value('PEEKD_MAX_INBOUND_PEEKS_PER_SERVER')),
    registrationRatePerSecond: positiveInt('PEEKD_REGISTRATION_RATE_PER_SECOND', value('PEEKD_REGISTRATION_RATE_PER_SECOND')),
    maxClientBodyBytes: positiveInt('PEEKD_MAX_CLIENT_BODY_BYTES', value('PEEKD_MAX_CLIENT_BODY_BYTES')),
    maxFederationBodyBytes: positiveInt('PEEKD_MAX_FEDERATION_BODY_BYTES', value('PEEKD_MAX_FEDERATION_BODY_BYTES')),
    snapshotInterval: nonNegativeInt('PEEKD_SNAPSHOT_INTERVAL', value('PEEKD_SNAPSHOT_INTERVAL')),
    leaseTtlMs: positiveInt('PEEKD_LEASE_TTL_MS', value('PEEKD_LEASE_TTL_MS')),
    streamReplicas: replicas(value('PEEKD_STREAM_REPLICAS')),
    projectionWaitMs: positiveInt('PEEKD_PROJECTION_WAIT_MS', value('PEEKD_PROJECTION_WAIT_MS')),
    projectionLingerMs: nonNegativeInt('PEEKD_PROJECTION_LINGER_MS', value('PEEKD_PROJECTION_LINGER_MS')),
    // Empty means the default, as for every setting (a blank line in an env file must not
    // open loopback and private addresses to outbound requests); `none` turns it off.
    federationIpDenylist: value('PEEKD_FEDERATION_IP_DENYLIST') === 'none' ? [] : cidrList('PEEKD_FEDERATION_IP_DENYLIST', value('PEEKD_FEDERATION_IP_DENYLIST')),
    federationIpAllowlist: cidrList('PEEKD_FEDERATION_IP_ALLOWLIST', value('PEEKD_FEDERATION_IP_ALLOWLIST')),
    maxFederationResponseBytes: positiveInt('PEEKD_MAX_FEDERATION_RESPONSE_BYTES', value('PEEKD_MAX_FEDERATION_RESPONSE_BYTES')),
    registration: oneOf('PEEKD_REGISTRATION', value('PEEKD_REGISTRATION'), ['open', 'closed'] as const),
    guestAccess: oneOf('PEEKD_GUEST_ACCESS', value('PEEKD_GUEST_ACCESS'), ['on', 'off'] as const) === 'on',
    guestRegistrationBurst: positiveInt('PEEKD_GUEST_REGISTRATION_BURST', value('PEEKD_GUEST_REGISTRATION_BURST')),
    guestRegistrationRefillMs: positiveInt('PEEKD_GUEST_REGISTRATION_REFILL_MS', value('PEEKD_GUEST_REGISTRATION_REFILL_MS')),
    loginFailureBurst: positiveInt('PEEKD_LOGIN_FAILURE_BURST', value('PEEKD_LOGIN_FAILURE_BURST')),
    loginFailureRefillMs: positiveInt('PEEKD_LOGIN_FAILURE_REFILL_MS', value('PEEKD_LOGIN_FAILURE_REFILL_MS')),
    loginFailureExemptAddresses: value('PEEKD_LOGIN_FAILURE_EXEMPT_ADDRESSES') === 'none' ? [] : cidrList('PEEKD_LOGIN_FAILURE_EXEMPT_ADDRESSES', value('PEEKD_LOGIN_FAILURE_EXEMPT_ADDRESSES')),
    passwordHashConcurrency: positiveInt('PEEKD_PASSWORD_HASH_CONCURRENCY', value('PEEKD_PASSWORD_HASH_CONCURRENCY')),
    maxFiltersPerUser: positiveInt('PEEKD_MAX_FILTERS_PER_USER', value('PEEKD_MAX_FILTERS_PER_USER')),
    metricsListen: mm ? { host: mm[1]!.replace(/^\[(.*)\]$/, '$1'), port: Number(mm[2]) } : undefined,
    shutdownTimeoutMs: positiveInt('PEEKD_SHUTDOWN_TIMEOUT_MS', value('PEEKD_SHUTDOWN_TIMEOUT_MS')),
    readyMaxLag: nonNegativeInt('PEEKD_READY_MAX_LAG', value('PEEKD_READY_MAX_LAG')),
  };
}

/** The settings table for `peekd --help` and docs/configuration.md. */
export function settingsHelp(): string {
  const width = Math.max(...SETTINGS.map((s) => s.env.length));
  return SETTINGS.map((s) => `  ${s.env.padEnd(width)}  ${s.help} (default: ${s.default || 'unset'})`).join('\n');
}
