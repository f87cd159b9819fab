import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, DEFAULT_IP_DENYLIST, loadConfig, SETTINGS } from '../../src/config.ts';
import { settingsMarkdownTable } from '../../src/operator/configDoc.ts';

describe('configuration', () => {
  it('defaults to the documented contract', () => {
    const c = loadConfig({}, undefined);
    expect(c.serverName).toBe('localhost:8008');
    expect([c.listenHost, c.listenPort]).toEqual(['127.0.0.1', 8008]);
    expect(c.dataDir).toBe(join(process.cwd(), 'data'));
    expect(c.signingKeyPath).toBe(join(process.cwd(), 'data', 'signing.key'));
    expect(c.databaseUrl).toBeUndefined();
    expect(c.natsUrl).toBeUndefined();
    expect(c.streamPrefix).toBe('');
    expect(c.shards).toBe(64);
    expect(c.federationDestinations).toEqual({});
    expect(c.peekLifetimeMs).toBe(3_600_000);
    expect(c.inboundRenewalIntervalMs).toBe(3_600_000);
    expect(c.outboundIdleMs).toBe(600_000);
    expect(c.adminToken).toBeUndefined();
    expect(c.roles).toEqual(['http', 'rooms', 'projections', 'federation']);
  });

  it('reads the environment, and a config file whose values the environment overrides', () => {
    const dir = mkdtempSync(join(tmpdir(), 'peekd-config-'));
    try {
      const file = join(dir, 'peekd.json');
      writeFileSync(file, JSON.stringify({ PEEKD_SERVER_NAME: 'file.example', PEEKD_SHARDS: 16, PEEKD_FEDERATION_DESTINATIONS: { 'b.example': 'http://127.0.0.1:9' } }));
      const c = loadConfig({ PEEKD_SHARDS: '32', PEEKD_LISTEN: '[::1]:9000' }, file);
      expect(c.serverName).toBe('file.example');
      expect(c.shards).toBe(32);
      expect(c.federationDestinations).toEqual({ 'b.example': 'http://127.0.0.1:9' });
      expect([c.listenHost, c.listenPort]).toEqual(['::1', 9000]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each([
    [{ PEEKD_SHARDS: '0' }, /PEEKD_SHARDS/],
    [{ PEEKD_PEEK_LIFETIME_MS: 'soon' }, /PEEKD_PEEK_LIFETIME_MS/],
    [{ PEEKD_SERVER_NAME: 'bad name' }, /PEEKD_SERVER_NAME/],
    [{ PEEKD_LISTEN: 'nowhere' }, /PEEKD_LISTEN/],
    [{ PEEKD_FEDERATION_DESTINATIONS: '[1]' }, /PEEKD_FEDERATION_DESTINATIONS/],
    [{ PEEKD_ROLES: 'http,cooking' }, /cooking/],
    [{ PEEKD_LISTEN: '127.0.0.1:99999' }, /PEEKD_LISTEN/],
    [{ PEEKD_LOG_LEVEL: 'verbose' }, /PEEKD_LOG_LEVEL/],
    [{ PEEKD_FEDERATION_DESTINATIONS: '{"a.example":"notaurl"}' }, /PEEKD_FEDERATION_DESTINATIONS/],
    [{ PEEKD_FEDERATION_DESTINATIONS: '{"a.example":5}' }, /PEEKD_FEDERATION_DESTINATIONS/],
    [{ PEEKD_FEDERATION_DESTINATIONS: '{"a.example":"ftp://127.0.0.1:9"}' }, /PEEKD_FEDERATION_DESTINATIONS/],
    [{ PEEKD_FEDERATION_DESTINATIONS: '{"bad name":"http://127.0.0.1:9"}' }, /PEEKD_FEDERATION_DESTINATIONS/],
    [{ PEEKD_FEDERATION_IP_DENYLIST: '10.0.0.0/8,nonsense' }, /PEEKD_FEDERATION_IP_DENYLIST/],
  ])('refuses %j with an error naming the setting', (env, message) => {
    expect(() => loadConfig(env, undefined)).toThrow(ConfigError);
    expect(() => loadConfig(env, undefined)).toThrow(message);
  });

  it('an empty PEEKD_FEDERATION_IP_DENYLIST means the default, as for every setting; `none` turns it off', () => {
    expect(loadConfig({ PEEKD_FEDERATION_IP_DENYLIST: '' }, undefined).federationIpDenylist).toEqual(DEFAULT_IP_DENYLIST);
    expect(loadConfig({}, undefined).federationIpDenylist).toEqual(DEFAULT_IP_DENYLIST);
    expect(loadConfig({ PEEKD_FEDERATION_IP_DENYLIST: 'none' }, undefined).federationIpDenylist).toEqual([]);
    expect(loadConfig({ PEEKD_FEDERATION_IP_DENYLIST: '10.0.0.0/8' }, undefined).federationIpDenylist).toEqual(['10.0.0.0/8']);
  });

  it('refuses an unknown key in the config file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'peekd-config-'));
    try {
      const file = join(dir, 'peekd.json');
      writeFileSync(file, JSON.stringify({ PEEKD_SERVERNAME: 'typo.example' }));
      expect(() => loadConfig({}, file)).toThrow(/PEEKD_SERVERNAME/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a DATABASE_URL the driver would choke on, naming the variable and never its value; takes the forms the driver takes', () => {
    const password = 'Zr8s3cretQm4';
    for (const [url, message] of [
      [`postgres://peekd:${password}#x@db.example/peekd`, /^DATABASE_URL holds a #, .*# as %23/],
      [`postgres://peekd:${password}?x@db.example/peekd`, /^DATABASE_URL is not a valid URL .*\? as %3F/],
      [`postgres://peekd:${password}/x@db.example/peekd`, /^DATABASE_URL is not a valid URL .*\/ as %2F/],
      [`postgres://peekd:${password}%zz@db.example/peekd`, /^DATABASE_URL holds a % that starts no valid escape: .*% as %25/],
      [`peekd:${password}@db.example/peekd`, /^DATABASE_URL must be a postgres:\/\/ or postgresql:\/\/ URL/],
    ] as const) {
      let err: unknown;
      try {
        loadConfig({ DATABASE_URL: url }, undefined);
      } catch (e) {
        err = e;
      }
      expect(err, url).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toMatch(message);
      expect((err as Error).message).not.toContain(password);
      expect((err as Error).message).not.toContain('db.example');
    }
    for (const url of [
      `postgres://peekd:${encodeURIComponent('s3cr#t/?@:%')}@db.example:5432/peekd?sslmode=require`,
      'postgresql://peekd@db1.example:5432,db2.example:5433/peekd?target_session_attrs=read-write',
      'postgres:///peekd?host=/var/run/postgresql',
      'postgres://peekd:pw@[::1]:5432/peekd',
      'postgres://peekd@db.example/peekd#a-fragment-the-driver-ignores',
    ]) {
      expect(loadConfig({ DATABASE_URL: url }, undefined).databaseUrl).toBe(url);
    }
  });

  it('reports a syntax error in the config file by line and column, quoting none of the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'peekd-config-'));
    try {
      const file = join(dir, 'peekd.json');
      const token = 'Tk9vQ2xsecretZ7';
      for (const [text, place] of [
        // An unquoted or single-quoted value, an unterminated string (where it starts), a
        // trailing comma, a missing comma, a missing brace, a leading zero.
        [`{"PEEKD_ADMIN_TOKEN": ${token}}`, 'line 1, column 23'],
        [`{\n  "PEEKD_ADMIN_TOKEN": '${token}'\n}`, 'line 2, column 24'],
        [`{\n  "PEEKD_ADMIN_TOKEN": "${token}\n}`, 'line 2, column 24'],
        [`{"PEEKD_ADMIN_TOKEN": "${token}",\n}`, 'line 2, column 1'],
        [`{"PEEKD_ADMIN_TOKEN": "${token}" "PEEKD_SHARDS": 8}`, 'line 1, column 41'],
        [`{"PEEKD_ADMIN_TOKEN": "${token}"`, 'line 1, column 40'],
        [`{"PEEKD_SHARDS": 08, "PEEKD_ADMIN_TOKEN": "${token}"}`, 'line 1, column 19'],
      ] as const) {
        writeFileSync(file, text);
        expect(() => loadConfig({}, file), text).toThrow(new ConfigError(`config file ${file} is not valid JSON: syntax error at ${place}`));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('docs/configuration.md lists exactly the settings src/config.ts knows', () => {
    const doc = readFileSync(join(import.meta.dirname, '../../docs/configuration.md'), 'utf8');
    const table = doc.slice(doc.indexOf('<!-- settings:start'), doc.indexOf('<!-- settings:end -->'));
    expect(table.slice(table.indexOf('\n') + 1).trim()).toBe(settingsMarkdownTable());
  });

  it('the README table names every variable of the configuration contract', () => {
    const readme = readFileSync(join(import.meta.dirname, '../../README.md'), 'utf8');
    const contract = SETTINGS.slice(0, SETTINGS.findIndex((s) => s.env === 'PEEKD_ROLES') + 1);
    for (const s of contract) expect(readme).toContain(`| \`${s.env}\``);
  });
});
