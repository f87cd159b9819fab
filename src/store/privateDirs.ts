// The directories peekd keeps its own files in (the data directory, the embedded database's
// and nats-server's stores): created, or tightened, so that only the user peekd runs as may
// enter them (docs/security.md, "Files on disk").
import { chmodSync, mkdirSync, readdirSync, statSync } from 'node:fs';

/** What peekd itself puts in a data directory: the embedded stores, their lock, the signing key and its companions. */
const DATA_DIR_ENTRY = /^(pglite|pglite\.lock|nats|signing\.key(\..+)?)$/;

/**
 * Makes the data directory (and any missing parent) mode 0700, so that only the user peekd
 * runs as may enter it. An existing one is tightened to 0700 when peekd owns it: owned by
 * peekd's user and holding nothing but what peekd puts there (as one made by an earlier
 * peekd under the umask's 0755 does). A directory that holds anything else is the
 * operator's, and so is its mode (docs/security.md, "Files on disk").
 */
export function makeDataDir(dir: string): void {
  if (mkdirSync(dir, { recursive: true, mode: 0o700 }) !== undefined) return;
  const st = statSync(dir);
  if ((st.mode & 0o077) === 0 || st.uid !== process.getuid?.()) return;
  if (readdirSync(dir).every((name) => DATA_DIR_ENTRY.test(name))) chmodSync(dir, 0o700);
}

/**
 * Makes a store directory of peekd's own (the embedded database, the nats-server store) and
 * any missing parent mode 0700; an existing one owned by peekd's user is tightened to 0700
 * whatever its mode, since only peekd keeps files there. PGlite writes its files 0666
 * whatever the umask: this directory is what keeps them (password and access-token hashes
 * among them) from other local users.
 */
export function makeStoreDir(dir: string): void {
  if (mkdirSync(dir, { recursive: true, mode: 0o700 }) !== undefined) return;
  const st = statSync(dir);
  if ((st.mode & 0o077) !== 0 && st.uid === process.getuid?.()) chmodSync(dir, 0o700);
}
