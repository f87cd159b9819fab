import { describe, expect, it } from 'vitest';
import * as crypto from '../../src/crypto/index.ts';

describe('src/crypto/index', () => {
  it('re-exports the public surface as named exports only', () => {
    expect(Object.keys(crypto)).not.toContain('default');
    for (const name of [
      'encodeBase64Unpadded',
      'encodeBase64UrlUnpadded',
      'decodeBase64',
      'Base64Error',
      'canonicalJson',
      'canonicalJsonBytes',
      'CanonicalJsonError',
      'nodeEd25519',
      'tweetnaclEd25519',
      'defaultEd25519',
      'generateSigningKey',
      'parseSigningKeyFile',
      'formatSigningKeyFile',
      'loadOrCreateSigningKeyFile',
      'signJson',
      'verifyJsonSignature',
      'computeContentHash',
      'withContentHash',
      'checkContentHash',
      'redactPdu',
      'referenceHash',
      'eventIdForPdu',
      'signPdu',
      'hashAndSignPdu',
      'verifyPduSignature',
      'buildRequestSigningJson',
      'signRequest',
      'parseXMatrixHeader',
      'verifyRequestSignature',
    ]) {
      expect(crypto, name).toHaveProperty(name);
    }
    expect(crypto.defaultEd25519).toBe(crypto.nodeEd25519);
  });
});
