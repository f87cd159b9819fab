import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { CanonicalJsonError, canonicalJson, canonicalJsonBytes, canonicalJsonOrUndefined, compareCodePoints } from '../../src/crypto/canonicalJson.ts';

/**
 * Every example from the Matrix spec, appendices "Canonical JSON" > "Examples"
 * (matrix-org/matrix-spec content/appendices.md). Inputs are the spec's JSON
 * texts verbatim, parsed with JSON.parse.
 */
const SPEC_EXAMPLES: [string, string][] = [
  ['{}', '{}'],
  [
    `{
    "one": 1,
    "two": "Two"
}`,
    '{"one":1,"two":"Two"}',
  ],
  [
    `{
    "b": "2",
    "a": "1"
}`,
    '{"a":"1","b":"2"}',
  ],
  ['{"b":"2","a":"1"}', '{"a":"1","b":"2"}'],
  [
    `{
    "auth": {
        "success": true,
        "mxid": "@john.doe:example.com",
        "profile": {
            "display_name": "John Doe",
            "three_pids": [
                {
                    "medium": "email",
                    "address": "john.doe@example.org"
                },
                {
                    "medium": "msisdn",
                    "address": "123456789"
                }
            ]
        }
    }
}`,
    '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}',
  ],
  [
    `{
    "a": "日本語"
}`,
    '{"a":"日本語"}',
  ],
  [
    `{
    "本": 2,
    "日": 1
}`,
    '{"日":1,"本":2}',
  ],
  [
    `{
    "a": "\\u65E5"
}`,
    '{"a":"日"}',
  ],
  [
    `{
    "a": null
}`,
    '{"a":null}',
  ],
  [
    `{
    "a": -0,
    "b": 1e10
}`,
    '{"a":0,"b":10000000000}',
  ],
];

describe('canonicalJson: spec appendix examples', () => {
  it.each(SPEC_EXAMPLES)('%s', (input, expected) => {
    expect(canonicalJson(JSON.parse(input))).toBe(expected);
    expect(Buffer.from(canonicalJsonBytes(JSON.parse(input))).toString('utf8')).toBe(expected);
  });
});

describe('canonicalJson: key order is by Unicode code point', () => {
  it('sorts astral characters after U+E000..U+FFFF (unlike UTF-16 code unit order)', () => {
    // U+FB01 (ﬁ) is below U+1F600 (😀) as a code point, but its UTF-16 unit 0xFB01
    // is above the surrogate 0xD83D, so a naive JS sort gets this wrong.
    const obj = { '\u{1F600}': 1, '\uFB01': 2 };
    expect(Object.keys(obj).sort()).toEqual(['\u{1F600}', '\uFB01']); // the trap
    expect(canonicalJson(obj)).toBe('{"\uFB01":2,"\u{1F600}":1}');
  });

  it('agrees with UTF-8 byte order on a mixed set of keys', () => {
    const keys = ['b', 'a', 'ab', '', 'Z', '\u00e9', '\u4e2d', '\uffff', '\ue000', '\u{10000}', '\u{1F600}', '\u{10FFFF}', '\ud7ff'];
    const byUtf8 = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x, 'utf8'), Buffer.from(y, 'utf8')));
    expect([...keys].sort(compareCodePoints)).toEqual(byUtf8);
    const obj = Object.fromEntries(keys.map((k, i) => [k, i]));
    const expected = `{${byUtf8.map((k) => `${JSON.stringify(k)}:${keys.indexOf(k)}`).join(',')}}`;
    expect(canonicalJson(obj)).toBe(expected);
  });

  it('sorts a prefix before its extensions and nested objects too', () => {
    expect(canonicalJson({ aa: 1, a: { z: 1, y: [{ d: 1, c: 2 }] } })).toBe('{"a":{"y":[{"c":2,"d":1}],"z":1},"aa":1}');
  });

  it('keeps array order', () => {
    expect(canonicalJson([3, 1, 2, 'b', 'a'])).toBe('[3,1,2,"b","a"]');
  });
});

describe('canonicalJson: strings (spec grammar: only mandatory escapes)', () => {
  it('uses the short escapes for \\b \\f \\n \\r \\t and escapes " and \\', () => {
    expect(canonicalJson('\b\f\n\r\t"\\')).toBe('"\\b\\f\\n\\r\\t\\"\\\\"');
  });

  it('uses lowercase \\u00XX for the other control characters', () => {
    expect(canonicalJson('\u0000\u0001\u001f\u000b\u001b')).toBe('"\\u0000\\u0001\\u001f\\u000b\\u001b"');
  });

  it('emits everything else raw, including DEL, U+2028, U+2029, / and astral characters', () => {
    const s = '\u007f\u2028\u2029/<>&\u00e9\u{1F600}';
    expect(canonicalJson(s)).toBe(`"${s}"`);
    expect(canonicalJsonBytes(s)).toEqual(new Uint8Array(Buffer.from(`"${s}"`, 'utf8')));
  });

  it('rejects lone surrogates (not encodable as UTF-8)', () => {
    expect(() => canonicalJson('\ud800')).toThrow(CanonicalJsonError);
    expect(() => canonicalJson('a\udc00b')).toThrow(CanonicalJsonError);
    expect(() => canonicalJson({ ['\ud83d']: 1 })).toThrow(CanonicalJsonError);
  });
});

describe('canonicalJson: numbers and other values', () => {
  it('accepts integers up to ±(2^53-1) and writes them without exponent', () => {
    expect(canonicalJson([9007199254740991, -9007199254740991, 0, -0, 1e15])).toBe('[9007199254740991,-9007199254740991,0,0,1000000000000000]');
  });

  it('writes true, false and null', () => {
    expect(canonicalJson({ t: true, f: false, n: null })).toBe('{"f":false,"n":null,"t":true}');
  });

  it.each([
    ['a float', 1.5],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['-Infinity', Number.NEGATIVE_INFINITY],
    ['2^53', 2 ** 53],
    ['-(2^53)', -(2 ** 53)],
    ['undefined', undefined],
    ['a function', () => 1],
    ['a bigint', 1n],
    ['a symbol', Symbol('x')],
    ['a Date', new Date(0)],
    ['a Map', new Map()],
    ['a Uint8Array', new Uint8Array(1)],
  ])('rejects %s with CanonicalJsonError', (_name, value) => {
    expect(() => canonicalJson(value)).toThrow(CanonicalJsonError);
    expect(() => canonicalJson({ nested: [value] })).toThrow(CanonicalJsonError);
  });

  it('rejects undefined object members rather than silently dropping them, and reports the path', () => {
    let err: unknown;
    try {
      canonicalJson({ content: { list: [1, { x: undefined }] } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CanonicalJsonError);
    expect((err as CanonicalJsonError).path).toBe('$.content.list[1].x');
  });

  it('rejects cycles but allows shared (non-cyclic) references', () => {
    const shared = { a: 1 };
    expect(canonicalJson({ x: shared, y: shared })).toBe('{"x":{"a":1},"y":{"a":1}}');
    const cyclic: Record<string, unknown> = {};
    cyclic['self'] = cyclic;
    expect(() => canonicalJson(cyclic)).toThrow(CanonicalJsonError);
  });

  it('accepts null-prototype objects and own "__proto__" keys from JSON.parse', () => {
    const o = Object.create(null) as Record<string, unknown>;
    o['b'] = 1;
    o['a'] = 2;
    expect(canonicalJson(o)).toBe('{"a":2,"b":1}');
    expect(canonicalJson(JSON.parse('{"__proto__":{"x":1},"a":1}'))).toBe('{"__proto__":{"x":1},"a":1}');
  });

  it('matches JSON.stringify for plain ASCII data without control characters', () => {
    const value = { z: [1, 2, { b: 'x', a: null }], m: 'hello', a: true };
    expect(canonicalJson(value)).toBe(JSON.stringify({ a: true, m: 'hello', z: [1, 2, { a: null, b: 'x' }] }));
  });
});

/**
 * canonicalJson tries a fast writer first and falls back to the checked writer (which
 * keeps a path and a cycle set for its error messages) when the fast one gives up.
 */
describe('canonicalJson: the fast writer and the checked writer agree', () => {
  /**
   * The spec's definition by other means: JSON.stringify for the scalars (its escapes are
   * canonical JSON's for well-formed strings), keys sorted by code point. (Not
   * JSON.stringify of a sorted copy: integer-like keys would come first.)
   */
  function reference(value: unknown): string {
    if (Array.isArray(value)) return `[${value.map(reference).join(',')}]`;
    if (value !== null && typeof value === 'object') {
      const record = value as Record<string, unknown>;
      const keys = Object.keys(record).sort(compareCodePoints);
      return `{${keys.map((k) => `${JSON.stringify(k)}:${reference(record[k])}`).join(',')}}`;
    }
    return JSON.stringify(value);
  }

  /** Random JSON values: astral and control characters, escapes, safe integers, nesting. */
  function randomJson(seed: string): () => unknown {
    let counter = 0;
    let pool = Buffer.alloc(0);
    const byte = (): number => {
      if (pool.length === 0) pool = createHash('sha256').update(`${seed}/${counter++}`).digest();
      const b = pool[0]!;
      pool = pool.subarray(1);
      return b;
    };
    const CHARS = ['a', 'b', 'Z', '0', ' ', '"', '\\', '/', '\n', '\t', '\u0000', '\u001f', '\u007f', '\u00e9', '\u2028', '\u4e2d', '\ue000', '\uffff', '\u{1F600}', '\u{10000}', '\u{10FFFF}'];
    const str = (): string => Array.from({ length: byte() % 6 }, () => CHARS[byte() % CHARS.length]).join('');
    const value = (depth: number): unknown => {
      const kind = byte() % (depth > 3 ? 5 : 7);
      switch (kind) {
        case 0:
          return str();
        case 1:
          return ((byte() << 16) | (byte() << 8) | byte()) * (byte() % 2 ? -1 : 1) * (byte() % 3 === 0 ? 2 ** 29 : 1);
        case 2:
          return byte() % 2 === 0;
        case 3:
          return null;
        case 4:
          return byte() % 2 ? Number.MAX_SAFE_INTEGER : -Number.MAX_SAFE_INTEGER;
        case 5:
          return Array.from({ length: byte() % 4 }, () => value(depth + 1));
        default:
          return Object.fromEntries(Array.from({ length: byte() % 5 }, () => [str(), value(depth + 1)]));
      }
    };
    return () => value(0);
  }

  it('writes what the reference writes for 2,000 random values', () => {
    const next = randomJson('canonical-fast');
    for (let i = 0; i < 2000; i++) {
      const v = next();
      const expected = reference(v);
      expect(canonicalJson(v)).toBe(expected);
      expect(canonicalJsonOrUndefined(v)).toBe(expected);
      expect(Buffer.from(canonicalJsonBytes(v)).toString('utf8')).toBe(expected);
    }
  });

  it('writes structures nested deeper than the fast writer goes (the checked writer takes over)', () => {
    let arrays: unknown = 1;
    let objects: unknown = 'x';
    for (let i = 0; i < 300; i++) {
      arrays = [arrays];
      objects = { b: objects, a: i };
    }
    expect(canonicalJsonOrUndefined(arrays)).toBeUndefined();
    expect(canonicalJson(arrays)).toBe(`${'['.repeat(300)}1${']'.repeat(300)}`);
    expect(canonicalJson(objects)).toBe(reference(objects));
  });

  it('gives up, and canonicalJson reports the precise error, for everything it rejects', () => {
    const cyclic: Record<string, unknown> = { a: { list: [1, {}] } };
    ((cyclic['a'] as { list: Record<string, unknown>[] }).list[1] as Record<string, unknown>)['back'] = cyclic;
    const cases: [unknown, string][] = [
      [{ a: { b: [1, 2.5] } }, '$.a.b[1]'],
      [{ a: { b: [1, 2 ** 53] } }, '$.a.b[1]'],
      [{ a: [{ x: undefined }] }, '$.a[0].x'],
      // eslint-disable-next-line no-sparse-arrays -- a hole, on purpose
      [{ a: [, 1] }, '$.a[0]'],
      [{ a: 'ok', b: 'lone \ud800' }, '$.b'],
      [{ ['\udc00']: 1 }, '$.\udc00'],
      [{ when: new Date(0) }, '$.when'],
      [{ n: 1n }, '$.n'],
      [cyclic, '$.a.list[1].back'],
    ];
    for (const [value, path] of cases) {
      expect(canonicalJsonOrUndefined(value)).toBeUndefined();
      let err: unknown;
      try {
        canonicalJson(value);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(CanonicalJsonError);
      expect((err as CanonicalJsonError).path).toBe(path);
    }
  });
});
