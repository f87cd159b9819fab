export { Base64Error, decodeBase64, encodeBase64Unpadded, encodeBase64UrlUnpadded } from './base64.ts';
export { CanonicalJsonError, canonicalJson, canonicalJsonBytes, compareCodePoints } from './canonicalJson.ts';
export { ED25519_PUBLIC_KEY_LENGTH, ED25519_SEED_LENGTH, ED25519_SIGNATURE_LENGTH, defaultEd25519, nodeEd25519, tweetnaclEd25519, type Ed25519 } from './ed25519.ts';
export {
  SigningKeyFileError,
  formatSigningKeyFile,
  generateSigningKey,
  isValidKeyVersion,
  keyVersionOf,
  loadOrCreateSigningKeyFile,
  parseSigningKeyFile,
  parseSigningKeys,
  randomKeyVersion,
  signingKeyFromSeed,
  type SigningKey,
} from './signingKey.ts';
export { getSignature, signJson, signableJson, verifyJsonSignature, type Signatures } from './signJson.ts';
export {
  REDACTION_ROOM_VERSIONS,
  enforcesKeyValidity,
  UnsupportedRoomVersionError,
  checkContentHash,
  computeContentHash,
  eventIdForPdu,
  hashAndSignPdu,
  redactPdu,
  referenceHash,
  signPdu,
  verifyPduSignature,
  withContentHash,
  type Pdu,
} from './eventHashes.ts';
export { buildRequestSigningJson, parseXMatrixHeader, signRequest, verifyRequestSignature, type FederationRequest, type XMatrixAuth } from './xMatrix.ts';
