// Profiles of local users: display name and avatar. An account without a profile row has
// the profile registration gives it (its localpart as display name, none for a guest, as
// Synapse does); a field set to "" is cleared.
import { eq } from 'drizzle-orm';
import type { Db } from '../store/db.ts';
import { accounts, profiles } from '../store/schema.ts';

export interface Profile {
  displayname?: string;
  avatar_url?: string;
}

/** The profile of a local account, or null when there is no such account. */
export async function readProfile(db: Pick<Db, 'select'>, userId: string): Promise<Profile | null> {
  const [row] = await db
    .select({ isGuest: accounts.isGuest, hasProfile: profiles.userId, displayName: profiles.displayName, avatarUrl: profiles.avatarUrl })
    .from(accounts)
    .leftJoin(profiles, eq(profiles.userId, accounts.userId))
    .where(eq(accounts.userId, userId));
  if (!row) return null;
  if (row.hasProfile === null) return row.isGuest ? {} : { displayname: userId.slice(1, userId.indexOf(':')) };
  return { ...(row.displayName !== null ? { displayname: row.displayName } : {}), ...(row.avatarUrl !== null ? { avatar_url: row.avatarUrl } : {}) };
}

/** Sets one field of the profile (null clears it), keeping the other as it was. */
export async function writeProfileField(db: Db, userId: string, field: keyof Profile, value: string | null): Promise<Profile> {
  await db.transaction(async (tx) => {
    // The row starts as the profile the account had (readProfile's default), then changes.
    const current = (await readProfile(tx, userId)) ?? {};
    const next = { ...current, [field]: value ?? undefined };
    const values = { displayName: next.displayname ?? null, avatarUrl: next.avatar_url ?? null };
    await tx
      .insert(profiles)
      .values({ userId, ...values })
      .onConflictDoUpdate({ target: profiles.userId, set: field === 'displayname' ? { displayName: values.displayName } : { avatarUrl: values.avatarUrl } });
  });
  return (await readProfile(db, userId)) ?? {};
}
