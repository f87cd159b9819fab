import { describe, expect, it } from 'vitest';
import { CanonicalJsonError, canonicalJson, canonicalJsonBytes, compareCodePoints } from '../../src/crypto/canonicalJson';

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
    expect(canonicalJson([9007199254740991, -9007199254740991, 0, -0, 1e15])).toBe(
      '[9007199254740991,-9007199254740991,0,0,1000000000000000]',
    );
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
