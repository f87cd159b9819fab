import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Base64Error, decodeBase64, encodeBase64Unpadded, encodeBase64UrlUnpadded } from '../../src/crypto/base64.ts';

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('base64', () => {
  // Matrix spec, appendices "Unpadded Base64" (matrix-org/matrix-spec content/appendices.md).
  const specExamples: [string, string][] = [
    ['', ''],
    ['f', 'Zg'],
    ['fo', 'Zm8'],
    ['foo', 'Zm9v'],
    ['foob', 'Zm9vYg'],
    ['fooba', 'Zm9vYmE'],
    ['foobar', 'Zm9vYmFy'],
  ];

  it.each(specExamples)('UNPADDED_BASE64(%j) = %j (spec appendix)', (plain, encoded) => {
    expect(encodeBase64Unpadded(utf8(plain))).toBe(encoded);
    expect(decodeBase64(encoded)).toEqual(utf8(plain));
  });

  it('decodes padded input too (spec: SHOULD accept with or without padding)', () => {
    expect(decodeBase64('Zg==')).toEqual(utf8('f'));
    expect(decodeBase64('Zm8=')).toEqual(utf8('fo'));
    expect(decodeBase64('Zm9v')).toEqual(utf8('foo'));
  });

  it('uses the URL-safe alphabet for encodeBase64UrlUnpadded and decodes it back', () => {
    const bytes = Uint8Array.from([0xfb, 0xff, 0xbf, 0xfe]);
    expect(encodeBase64Unpadded(bytes)).toBe('+/+//g');
    expect(encodeBase64UrlUnpadded(bytes)).toBe('-_-__g');
    expect(decodeBase64('+/+//g')).toEqual(bytes);
    expect(decodeBase64('-_-__g')).toEqual(bytes);
    expect(decodeBase64('-_-__g==')).toEqual(bytes);
  });

  it('round-trips random bytes in both alphabets', () => {
    for (let len = 0; len < 70; len++) {
      const bytes = new Uint8Array(randomBytes(len));
      const std = encodeBase64Unpadded(bytes);
      const url = encodeBase64UrlUnpadded(bytes);
      expect(std).not.toMatch(/=/);
      expect(url).toMatch(/^[A-Za-z0-9_-]*$/);
      expect(decodeBase64(std)).toEqual(bytes);
      expect(decodeBase64(url)).toEqual(bytes);
    }
  });

  it('encodes subarray views without leaking neighbouring bytes', () => {
    const backing = Uint8Array.from([1, 2, 3, 4, 5, 6]);
    expect(encodeBase64Unpadded(backing.subarray(2, 4))).toBe(encodeBase64Unpadded(Uint8Array.from([3, 4])));
  });

  it('returns a plain Uint8Array that is not shared with other results', () => {
    const a = decodeBase64('Zm9v');
    const b = decodeBase64('Zm9v');
    expect(Object.getPrototypeOf(a)).toBe(Uint8Array.prototype);
    a[0] = 0;
    expect(b[0]).toBe(0x66);
  });

  it('accepts non-zero trailing bits (the spec test seed has them)', () => {
    // "…XA1": the last character carries two bits beyond the 32nd byte.
    expect(decodeBase64('YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1')).toHaveLength(32);
  });

  it.each([
    ['Z', 'length 1 mod 4'],
    ['Zm9vY', 'length 1 mod 4'],
    ['Zm9v Yg', 'whitespace'],
    ['Zm9v\n', 'newline'],
    ['Zm9v!', 'bad character'],
    ['Zg=', 'truncated padding'],
    ['Zg===', 'too much padding'],
    ['Zm9v====', 'padding on a full quantum'],
    ['Zm9v=', 'padding on a full quantum'],
    ['Z=g=', 'padding in the middle'],
    ['Zm8==', 'wrong amount of padding'],
    ['+-', 'mixed alphabets'],
    ['a/b_', 'mixed alphabets'],
    ['é', 'non-ASCII'],
  ])('rejects %j (%s) with Base64Error', (input) => {
    expect(() => decodeBase64(input)).toThrow(Base64Error);
  });

  it('rejects non-strings', () => {
    expect(() => decodeBase64(42 as unknown as string)).toThrow(Base64Error);
  });
});
