import { describe, expect, it } from 'vitest';
import { InvalidInputError } from '../../src/actors/errors.ts';
import { parseAuditQuery } from '../../src/projections/auditQuery.ts';

const room = '!a:example.org';

describe('audit query parsing', () => {
  it('takes times as ms since the epoch or ISO 8601', () => {
    expect(parseAuditQuery({ room_id: room, since: '1700000000000' }).since).toBe(1700000000000);
    expect(parseAuditQuery({ room_id: room, until: '2026-01-01T00:00:00Z' }).until).toBe(Date.UTC(2026, 0, 1));
  });

  // Found by the hostile sweep: 1e20 is a finite number but no bigint, and Postgres refused it with a 500.
  it.each([
    ['since', '99999999999999999999'],
    ['until', '9007199254740993'],
    ['from', '99999999999999999999'],
    ['since', 'yesterday'],
    ['from', '-1'],
  ])('refuses %s=%s as bad input, not a database error', (key, value) => {
    expect(() => parseAuditQuery({ room_id: room, [key]: value })).toThrow(InvalidInputError);
  });

  it('caps the page and needs a subject', () => {
    expect(parseAuditQuery({ room_id: room, limit: '50000' }).limit).toBe(1000);
    expect(() => parseAuditQuery({})).toThrow(InvalidInputError);
    expect(() => parseAuditQuery({ room_id: room, limit: '0' })).toThrow(InvalidInputError);
  });
});
