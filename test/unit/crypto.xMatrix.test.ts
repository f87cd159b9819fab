import { describe, expect, it } from 'vitest';
import { decodeBase64 } from '../../src/crypto/base64.ts';
import { canonicalJsonBytes } from '../../src/crypto/canonicalJson.ts';
import { tweetnaclEd25519 } from '../../src/crypto/ed25519.ts';
import { generateSigningKey, signingKeyFromSeed } from '../../src/crypto/signingKey.ts';
import { signJson } from '../../src/crypto/signJson.ts';
import { buildRequestSigningJson, parseXMatrixHeader, signRequest, verifyRequestSignature, type FederationRequest } from '../../src/crypto/xMatrix.ts';

const key = signingKeyFromSeed('a_Key1', decodeBase64('YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1'));

const req: FederationRequest = {
  method: 'PUT',
  uri: '/_matrix/federation/v1/send/1700000000000?x=1',
  origin: 'origin.hs.example.com',
  destination: 'destination.hs.example.com',
  content: { pdus: [], edus: [{ edu_type: 'm.typing', content: { typing: true } }] },
};

describe('buildRequestSigningJson', () => {
  it('has method, uri, origin, destination and content (spec "Request Authentication")', () => {
    expect(buildRequestSigningJson(req)).toEqual({
      method: 'PUT',
      uri: '/_matrix/federation/v1/send/1700000000000?x=1',
      origin: 'origin.hs.example.com',
      destination: 'destination.hs.example.com',
      content: req.content,
    });
  });

  it('omits content when undefined but keeps falsy JSON bodies', () => {
    const { content: _c, ...noBody } = req;
    expect(buildRequestSigningJson(noBody)).not.toHaveProperty('content');
    expect(buildRequestSigningJson({ ...noBody, content: undefined })).not.toHaveProperty('content');
    expect(buildRequestSigningJson({ ...noBody, content: null })).toHaveProperty('content', null);
    expect(buildRequestSigningJson({ ...noBody, content: {} })).toHaveProperty('content', {});
  });
});

describe('signRequest', () => {
  const header = signRequest(req, key);

  it('produces the spec header layout', () => {
    expect(header).toMatch(/^X-Matrix origin="origin\.hs\.example\.com",destination="destination\.hs\.example\.com",key="ed25519:a_Key1",sig="[A-Za-z0-9+/]{86}"$/);
  });

  it('signs the same bytes signJson would (cross-checked with tweetnacl)', () => {
    const parsed = parseXMatrixHeader(header)!;
    const viaSignJson = signJson(buildRequestSigningJson(req), req.origin, key);
    expect(parsed.sig).toBe(viaSignJson.signatures[req.origin]![key.keyId]);
    expect(tweetnaclEd25519.verify(key.publicKey, canonicalJsonBytes(buildRequestSigningJson(req)), decodeBase64(parsed.sig))).toBe(true);
  });

  it('round-trips through parse and verify', () => {
    const parsed = parseXMatrixHeader(header);
    expect(parsed).toEqual({
      origin: req.origin,
      destination: req.destination,
      key: 'ed25519:a_Key1',
      sig: expect.any(String),
    });
    expect(verifyRequestSignature(req, parsed!, key.publicKey)).toBe(true);
    expect(verifyRequestSignature(req, parsed!, key.publicKey, tweetnaclEd25519)).toBe(true);
  });

  it('tells a header without destination (older servers: checked against our own name) from one with an empty destination (refused)', () => {
    const without = parseXMatrixHeader(header.replace(/destination="[^"]*",/, ''))!;
    expect(without.destination).toBeUndefined();
    expect(verifyRequestSignature(req, without, key.publicKey)).toBe(true);
    expect(verifyRequestSignature({ ...req, destination: 'elsewhere.example' }, without, key.publicKey)).toBe(false);
    const empty = parseXMatrixHeader(header.replace(/destination="[^"]*"/, 'destination=""'))!;
    expect(empty.destination).toBe('');
    expect(verifyRequestSignature(req, empty, key.publicKey)).toBe(false);
  });

  it('works without a body', () => {
    const { content: _c, ...getReq } = { ...req, method: 'GET', uri: '/_matrix/federation/v1/version' };
    const parsed = parseXMatrixHeader(signRequest(getReq, key))!;
    expect(verifyRequestSignature(getReq, parsed, key.publicKey)).toBe(true);
    expect(verifyRequestSignature({ ...getReq, content: {} }, parsed, key.publicKey)).toBe(false);
  });

  it('escapes quotes and backslashes in values, and parsing undoes it', () => {
    const odd = { ...req, origin: 'we"ird\\origin' };
    const h = signRequest(odd, key);
    expect(h).toContain('origin="we\\"ird\\\\origin"');
    const parsed = parseXMatrixHeader(h)!;
    expect(parsed.origin).toBe('we"ird\\origin');
    expect(verifyRequestSignature(odd, parsed, key.publicKey)).toBe(true);
  });
});

describe('verifyRequestSignature: rejects', () => {
  const parsed = parseXMatrixHeader(signRequest(req, key))!;

  it.each<[string, FederationRequest]>([
    ['another destination', { ...req, destination: 'evil.example.com' }],
    ['another uri', { ...req, uri: '/_matrix/federation/v1/send/1700000000001?x=1' }],
    ['another query string', { ...req, uri: '/_matrix/federation/v1/send/1700000000000?x=2' }],
    ['another method', { ...req, method: 'POST' }],
    ['another body', { ...req, content: { pdus: [], edus: [] } }],
    ['a missing body', { ...req, content: undefined }],
    ['another origin', { ...req, origin: 'evil.example.com' }],
  ])('%s', (_name, other) => {
    expect(verifyRequestSignature(other, parsed, key.publicKey)).toBe(false);
  });

  it('a header whose destination does not match, even if the signature would', () => {
    expect(verifyRequestSignature(req, { ...parsed, destination: 'x' }, key.publicKey)).toBe(false);
  });

  it('accepts a header without destination (pre-v1.3 senders) if the signature covers ours', () => {
    const { destination: _d, ...noDest } = parsed;
    expect(verifyRequestSignature(req, noDest, key.publicKey)).toBe(true);
  });

  it('the wrong public key, a non-ed25519 key ID, or a malformed signature', () => {
    expect(verifyRequestSignature(req, parsed, generateSigningKey().publicKey)).toBe(false);
    expect(verifyRequestSignature(req, { ...parsed, key: 'curve25519:a_Key1' }, key.publicKey)).toBe(false);
    expect(verifyRequestSignature(req, { ...parsed, sig: '!!!' }, key.publicKey)).toBe(false);
    expect(verifyRequestSignature(req, { ...parsed, sig: parsed.sig.slice(4) }, key.publicKey)).toBe(false);
  });

  it('a body that cannot be canonicalised, without throwing', () => {
    expect(verifyRequestSignature({ ...req, content: { x: 0.5 } }, parsed, key.publicKey)).toBe(false);
  });
});

describe('parseXMatrixHeader: lenient parsing (RFC 9110 auth-params)', () => {
  const expected = { origin: 'o.example', destination: 'd.example', key: 'ed25519:k1', sig: 'c2ln+/x' };

  it.each([
    ['canonical', 'X-Matrix origin="o.example",destination="d.example",key="ed25519:k1",sig="c2ln+/x"'],
    ['reordered', 'X-Matrix sig="c2ln+/x",key="ed25519:k1",destination="d.example",origin="o.example"'],
    ['lower-case scheme', 'x-matrix origin="o.example",destination="d.example",key="ed25519:k1",sig="c2ln+/x"'],
    ['upper-case scheme and names', 'X-MATRIX ORIGIN="o.example",Destination="d.example",KEY="ed25519:k1",Sig="c2ln+/x"'],
    ['bare values', 'X-Matrix origin=o.example,destination=d.example,key=ed25519:k1,sig=c2ln+/x'],
    ['mixed bare and quoted', 'X-Matrix origin=o.example,destination="d.example",key=ed25519:k1,sig="c2ln+/x"'],
    ['spaces around commas', 'X-Matrix origin="o.example" , destination="d.example",  key="ed25519:k1" ,sig="c2ln+/x"'],
    ['tabs and several spaces after the scheme', 'X-Matrix \t origin="o.example",\tdestination="d.example",key="ed25519:k1",\t sig="c2ln+/x"'],
    ['spaces around =', 'X-Matrix origin = "o.example",destination= d.example,key ="ed25519:k1",sig="c2ln+/x"'],
    ['leading and trailing whitespace', '  X-Matrix origin="o.example",destination="d.example",key="ed25519:k1",sig="c2ln+/x"  '],
    ['trailing comma and empty list elements', 'X-Matrix origin="o.example",,destination="d.example",key="ed25519:k1",sig="c2ln+/x",'],
    ['unknown parameters', 'X-Matrix origin="o.example",destination="d.example",foo="bar, baz",key="ed25519:k1",x=y,sig="c2ln+/x"'],
    ['escaped characters inside quotes', 'X-Matrix origin="o.exa\\mple",destination="d.example",key="ed25519:k1",sig="c2ln+/x"'],
  ])('%s', (_name, header) => {
    expect(parseXMatrixHeader(header)).toEqual(expected);
  });

  it('keeps commas, equals signs and spaces that are inside quotes', () => {
    expect(parseXMatrixHeader('X-Matrix origin="a, b=c",key="k",sig="s=="')).toEqual({ origin: 'a, b=c', key: 'k', sig: 's==' });
    // A bare value runs to the next separator, so padded base64 survives unquoted too.
    expect(parseXMatrixHeader('X-Matrix origin=o,key=k,sig=c2lnbg==')).toEqual({ origin: 'o', key: 'k', sig: 'c2lnbg==' });
  });

  it('omits destination when absent (older senders)', () => {
    const parsed = parseXMatrixHeader('X-Matrix origin="o",key="ed25519:k",sig="s"');
    expect(parsed).toEqual({ origin: 'o', key: 'ed25519:k', sig: 's' });
    expect(parsed).not.toHaveProperty('destination');
  });

  it.each([
    ['missing origin', 'X-Matrix destination="d",key="ed25519:k",sig="s"'],
    ['missing key', 'X-Matrix origin="o",destination="d",sig="s"'],
    ['missing sig', 'X-Matrix origin="o",destination="d",key="ed25519:k"'],
    ['empty origin', 'X-Matrix origin="",key="ed25519:k",sig="s"'],
    ['empty sig', 'X-Matrix origin="o",key="ed25519:k",sig='],
    ['another scheme', 'Bearer origin="o",key="ed25519:k",sig="s"'],
    ['scheme only', 'X-Matrix'],
    ['scheme and spaces only', 'X-Matrix   '],
    ['no space after scheme', 'X-Matrixorigin="o",key="ed25519:k",sig="s"'],
    ['empty string', ''],
    ['unterminated quote', 'X-Matrix origin="o,key="ed25519:k",sig="s'],
    ['dangling backslash', 'X-Matrix origin="o",key="ed25519:k",sig="s\\'],
    ['parameter without =', 'X-Matrix origin="o",key,sig="s"'],
    ['missing comma', 'X-Matrix origin="o" key="ed25519:k",sig="s"'],
    ['garbage after a quoted value', 'X-Matrix origin="o"x,key="ed25519:k",sig="s"'],
    ['duplicate parameter', 'X-Matrix origin="o",origin="p",key="ed25519:k",sig="s"'],
    ['duplicate parameter differing in case', 'X-Matrix origin="o",key="ed25519:k",sig="s",SIG="t"'],
  ])('returns null: %s', (_name, header) => {
    expect(parseXMatrixHeader(header)).toBeNull();
  });

  it('returns null for non-strings', () => {
    expect(parseXMatrixHeader(undefined as unknown as string)).toBeNull();
  });
});
