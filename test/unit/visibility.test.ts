// Executable specification of history visibility (src/syncapi/visibility.ts), as the Matrix
// client-server API's "History visibility" section defines it. Each test writes a room's
// history as a list of labelled events and says which labels a viewer sees:
//
//   history(hv('joined'), msg('m1'), member(BOB, 'join'), msg('m2')).seenBy(BOB) → ['m2', …]
//
// Sequences are spaced (10, 20, …) like real stream sequences, which other rooms interleave.
// Before a history's first setting event the room is `shared` (the default), so that event
// and anything before it are visible to a viewer who joins later.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { mayOpenRoom, visibilityJudge, visibilityOf, visibleEvents, type EventRef, type HistoryVisibility, type VisibilityFacts } from '../../src/syncapi/visibility.ts';

const ALICE = '@alice:example.org';
const BOB = '@bob:example.org';
const CAROL = '@carol:example.org';

interface Labelled {
  label: string;
  pdu: EventRef['pdu'];
}

const msg = (label: string): Labelled => ({ label, pdu: { type: 'm.room.message', content: { msgtype: 'm.text', body: label } } });
const hv = (value: string, label = `hv:${value}`): Labelled => ({ label, pdu: { type: 'm.room.history_visibility', state_key: '', content: { history_visibility: value } } });
const member = (user: string, membership: string, label = `${user.slice(1, user.indexOf(':'))}:${membership}`): Labelled => ({
  label,
  pdu: { type: 'm.room.member', state_key: user, content: { membership } },
});

/** The facts the room reader would collect for `viewer` over these events. */
function factsOf(events: (EventRef & Labelled)[], viewer: string | null): VisibilityFacts {
  return {
    visibility: events.filter((e) => e.pdu.type === 'm.room.history_visibility' && e.pdu.state_key === '').map((e) => ({ seq: e.seq, value: visibilityOf(e.pdu.content) })),
    membership:
      viewer === null
        ? []
        : events
            .filter((e) => e.pdu.type === 'm.room.member' && e.pdu.state_key === viewer)
            .map((e) => ({ seq: e.seq, membership: typeof e.pdu.content?.membership === 'string' ? e.pdu.content.membership : 'leave' })),
    viewer,
  };
}

function history(...steps: Labelled[]) {
  const events = steps.map((s, i) => ({ ...s, seq: (i + 1) * 10 }));
  return {
    events,
    facts: (viewer: string | null) => factsOf(events, viewer),
    /** The labels `viewer` may see, in order. */
    seenBy(viewer: string | null): string[] {
      const judge = visibilityJudge(factsOf(events, viewer));
      return events.filter(judge).map((e) => e.label);
    },
  };
}

const SETTINGS: HistoryVisibility[] = ['world_readable', 'shared', 'invited', 'joined'];

/** The viewer's membership just before the message, and the events that bring it about. */
const MEMBERSHIPS: Record<string, Labelled[]> = {
  none: [],
  invite: [member(BOB, 'invite')],
  join: [member(BOB, 'invite'), member(BOB, 'join')],
  'leave (joined, then left)': [member(BOB, 'join'), member(BOB, 'leave')],
  'leave (invite rejected)': [member(BOB, 'invite'), member(BOB, 'leave')],
};

/** Whether a message is visible, by setting and the viewer's membership before it (nothing happens after it). */
const TABLE: Record<HistoryVisibility, Record<string, boolean>> = {
  world_readable: { none: true, invite: true, join: true, 'leave (joined, then left)': true, 'leave (invite rejected)': true },
  shared: { none: false, invite: false, join: true, 'leave (joined, then left)': false, 'leave (invite rejected)': false },
  invited: { none: false, invite: true, join: true, 'leave (joined, then left)': false, 'leave (invite rejected)': false },
  joined: { none: false, invite: false, join: true, 'leave (joined, then left)': false, 'leave (invite rejected)': false },
};

describe('a message, by setting × the viewer’s membership before it', () => {
  const cases = SETTINGS.flatMap((setting) => Object.keys(MEMBERSHIPS).map((m) => [setting, m, TABLE[setting][m]!] as const));
  it.each(cases)('%s, membership %s → visible: %s', (setting, membership, visible) => {
    const h = history(member(ALICE, 'join'), ...MEMBERSHIPS[membership]!, hv(setting), msg('E'));
    expect(h.seenBy(BOB).includes('E')).toBe(visible);
  });

  it('the same holds when the setting came first and the membership changed after it', () => {
    for (const [setting, membership, visible] of cases) {
      const h = history(member(ALICE, 'join'), hv(setting), ...MEMBERSHIPS[membership]!, msg('E'));
      expect({ setting, membership, visible: h.seenBy(BOB).includes('E') }).toEqual({ setting, membership, visible });
    }
  });
});

describe('shared: visible to a viewer who joined at any point at or after the event', () => {
  it('a message before the invite and the join is visible once the viewer joins', () => {
    const h = history(hv('shared'), msg('m1'), member(BOB, 'invite'), msg('m2'), member(BOB, 'join'), msg('m3'));
    expect(h.seenBy(BOB)).toEqual(['hv:shared', 'm1', 'bob:invite', 'm2', 'bob:join', 'm3']);
  });

  it('a later join still counts after the viewer has left again; what came after the leave does not', () => {
    const h = history(hv('shared'), msg('m1'), member(BOB, 'join'), msg('m2'), member(BOB, 'leave'), msg('m3'));
    expect(h.seenBy(BOB)).toEqual(['hv:shared', 'm1', 'bob:join', 'm2', 'bob:leave']);
  });

  it('joined, then left before the event: hidden', () => {
    const h = history(hv('shared'), member(BOB, 'join'), member(BOB, 'leave'), msg('E'));
    expect(h.seenBy(BOB)).not.toContain('E');
  });

  it('joined, left before the event, joined again after it: visible', () => {
    const h = history(hv('shared'), member(BOB, 'join'), member(BOB, 'leave', 'bob:leave'), msg('E'), member(BOB, 'join', 'bob:rejoin'));
    expect(h.seenBy(BOB)).toEqual(['hv:shared', 'bob:join', 'bob:leave', 'E', 'bob:rejoin']);
  });

  it('a later invite alone is not a join: hidden', () => {
    const h = history(hv('shared'), msg('E'), member(BOB, 'invite'));
    expect(h.seenBy(BOB)).toEqual([]);
  });

  it('a later join does not open invited or joined history', () => {
    for (const setting of ['invited', 'joined']) {
      const h = history(hv(setting), msg('E'), member(BOB, 'join'), msg('after'));
      // The first setting event itself falls under the default (shared) before it.
      expect(h.seenBy(BOB)).toEqual([`hv:${setting}`, 'bob:join', 'after']);
    }
  });

  it('another user’s join does not count for the viewer', () => {
    const h = history(hv('shared'), msg('E'), member(CAROL, 'join'));
    expect(h.seenBy(BOB)).toEqual([]);
  });
});

describe('the m.room.history_visibility event itself: the setting before it or the one it sets', () => {
  it('joined → invited is visible to an invited viewer (by the one it sets); the reverse too (by the one before)', () => {
    const h = history(hv('joined', 'start'), member(BOB, 'invite'), msg('m1'), hv('invited', 'to invited'), msg('m2'), hv('joined', 'back to joined'), msg('m3'));
    expect(h.seenBy(BOB)).toEqual(['to invited', 'm2', 'back to joined']);
  });

  it('joined → world_readable and world_readable → joined are visible to anyone, the events between them too', () => {
    const h = history(hv('joined', 'start'), msg('m1'), hv('world_readable', 'open'), msg('m2'), hv('joined', 'close'), msg('m3'));
    for (const viewer of [BOB, null]) expect(h.seenBy(viewer)).toEqual(['open', 'm2', 'close']);
  });

  it('joined → shared is visible to a viewer who joins later (under shared), not to one who never does', () => {
    const h = history(hv('joined', 'start'), msg('m1'), hv('shared', 'to shared'), msg('m2'));
    expect(h.seenBy(BOB)).toEqual([]);
    const later = history(hv('joined', 'start'), msg('m1'), hv('shared', 'to shared'), msg('m2'), member(BOB, 'join'));
    expect(later.seenBy(BOB)).toEqual(['start', 'to shared', 'm2', 'bob:join']);
  });

  it('for a joined viewer every change of setting is visible', () => {
    const h = history(member(BOB, 'join'), hv('joined', 'a'), hv('invited', 'b'), hv('shared', 'c'), hv('world_readable', 'd'), hv('joined', 'e'));
    expect(h.seenBy(BOB)).toEqual(['bob:join', 'a', 'b', 'c', 'd', 'e']);
  });

  it('a history_visibility event with a state_key other than "" is an ordinary event', () => {
    const odd: Labelled = { label: 'odd', pdu: { type: 'm.room.history_visibility', state_key: 'x', content: { history_visibility: 'world_readable' } } };
    const h = history(hv('joined'), odd, msg('m1'));
    expect(h.seenBy(null)).toEqual([]);
  });
});

describe('the viewer’s own membership event: the membership before it or the one it sets', () => {
  it('joined: the viewer’s join is visible, the invite before it is not', () => {
    const h = history(hv('joined'), msg('m1'), member(BOB, 'invite'), msg('m2'), member(BOB, 'join'), msg('m3'));
    expect(h.seenBy(BOB)).toEqual(['hv:joined', 'bob:join', 'm3']);
  });

  it('invited: the viewer’s invite is visible (by the membership it sets), and its join', () => {
    const h = history(hv('invited'), msg('m1'), member(BOB, 'invite'), msg('m2'), member(BOB, 'join'), msg('m3'));
    expect(h.seenBy(BOB)).toEqual(['hv:invited', 'bob:invite', 'm2', 'bob:join', 'm3']);
  });

  it('joined: the viewer’s leave is visible (by the membership before it), nothing after it', () => {
    const h = history(hv('joined'), member(BOB, 'join'), msg('m1'), member(BOB, 'leave'), msg('m2'));
    expect(h.seenBy(BOB)).toEqual(['hv:joined', 'bob:join', 'm1', 'bob:leave']);
  });

  it('invited: an invite rejected is visible, what follows it is not', () => {
    const h = history(hv('invited'), member(BOB, 'invite'), msg('m1'), member(BOB, 'leave'), msg('m2'));
    expect(h.seenBy(BOB)).toEqual(['bob:invite', 'm1', 'bob:leave']);
  });

  it('someone else’s membership event gets no such allowance', () => {
    const joined = history(hv('joined'), member(CAROL, 'join'), member(BOB, 'join'));
    expect(joined.seenBy(BOB)).toEqual(['hv:joined', 'bob:join']);
    const invited = history(hv('joined'), hv('invited'), member(CAROL, 'invite'), member(BOB, 'invite'), msg('m1'));
    expect(invited.seenBy(BOB)).toEqual(['bob:invite', 'm1']);
    expect(invited.seenBy(CAROL)).toEqual(['carol:invite', 'bob:invite', 'm1']);
  });

  it('a member event without a membership gives nothing beyond the membership before it', () => {
    const broken: Labelled = { label: 'broken', pdu: { type: 'm.room.member', state_key: BOB, content: {} } };
    expect(history(hv('joined'), broken, msg('m1')).seenBy(BOB)).toEqual([]);
  });
});

describe('unknown and absent settings count as shared', () => {
  it.each([[{ history_visibility: 'bogus' }], [{ history_visibility: 'WORLD_READABLE' }], [{ history_visibility: 5 }], [{}], [null], [undefined]])('visibilityOf(%j) = shared', (content) => {
    expect(visibilityOf(content)).toBe('shared');
  });

  it.each(SETTINGS)('visibilityOf names %s', (setting) => {
    expect(visibilityOf({ history_visibility: setting })).toBe(setting);
  });

  it('no history_visibility event at all: shared (a later join opens everything before)', () => {
    const h = history(member(ALICE, 'join'), msg('m1'), member(BOB, 'join'));
    expect(h.seenBy(BOB)).toEqual(['alice:join', 'm1', 'bob:join']);
    expect(h.seenBy(CAROL)).toEqual([]);
  });

  it('an unknown value after joined behaves as shared, and is not world_readable', () => {
    const h = history(hv('joined'), msg('m1'), hv('bogus', 'to bogus'), msg('m2'), member(BOB, 'join'));
    expect(h.seenBy(BOB)).toEqual(['hv:joined', 'to bogus', 'm2', 'bob:join']);
    expect(h.seenBy(null)).toEqual([]);
  });
});

describe('a viewer with no membership (null: a peeking server; or a user never in the room)', () => {
  const h = history(
    member(ALICE, 'join'),
    hv('shared', 'shared'),
    msg('m1'),
    hv('world_readable', 'open'),
    msg('m2'),
    member(ALICE, 'invite', 'alice invites'),
    hv('invited', 'close'),
    msg('m3'),
    hv('joined', 'joined'),
    msg('m4'),
  );

  it('sees only what was sent under world_readable (and the events that open and close it)', () => {
    expect(h.seenBy(null)).toEqual(['open', 'm2', 'alice invites', 'close']);
  });

  it('a user never in the room sees the same', () => {
    expect(h.seenBy(CAROL)).toEqual(h.seenBy(null));
  });

  it('a null viewer gets no membership allowance for a member event whatever its state_key', () => {
    const noKey: Labelled = { label: 'nokey', pdu: { type: 'm.room.member', content: { membership: 'join' } } };
    expect(history(hv('joined'), noKey, msg('m1')).seenBy(null)).toEqual([]);
  });
});

describe('a change of setting mid-history is judged at each event', () => {
  // joined → world_readable → shared, with bob invited under joined, joining under shared
  // and leaving; carol never a member.
  const h = history(
    member(ALICE, 'join'),
    hv('joined', 'joined'),
    msg('j1'),
    member(BOB, 'invite'),
    msg('j2'),
    hv('world_readable', 'open'),
    msg('w1'),
    hv('shared', 'shared'),
    msg('s1'),
    member(BOB, 'join'),
    msg('s2'),
    member(BOB, 'leave'),
    msg('s3'),
  );

  it('the member who joined under shared sees from the world_readable point on (and the default-shared start), up to the leave', () => {
    // What came before the first setting event was shared, so the later join opens it.
    expect(h.seenBy(BOB)).toEqual(['alice:join', 'joined', 'open', 'w1', 'shared', 's1', 'bob:join', 's2', 'bob:leave']);
  });

  it('the non-member sees exactly the world_readable window', () => {
    expect(h.seenBy(CAROL)).toEqual(['open', 'w1', 'shared']);
  });

  it('the creator sees everything', () => {
    expect(h.seenBy(ALICE)).toEqual(h.events.map((e) => e.label));
  });

  it('visibleEvents gives the same as the judge, in order', () => {
    expect(visibleEvents(h.facts(BOB), h.events).map((e) => e.label)).toEqual(h.seenBy(BOB));
    expect(visibleEvents(h.facts(BOB), [...h.events].reverse()).map((e) => e.label)).toEqual([...h.seenBy(BOB)].reverse());
  });

  it('the judge does not depend on which events it is asked about, nor in what order', () => {
    const judge = visibilityJudge(h.facts(BOB));
    const forwards = h.events.map(judge);
    const backwards = [...h.events].reverse().map(judge).reverse();
    expect(backwards).toEqual(forwards);
  });
});

describe('mayOpenRoom', () => {
  it('a user with any membership may open the room; a stranger only a world_readable one', () => {
    const h = history(hv('joined'), member(BOB, 'invite'), member(BOB, 'leave'));
    for (const current of SETTINGS) {
      expect(mayOpenRoom(h.facts(BOB), current)).toBe(true);
      expect(mayOpenRoom(h.facts(CAROL), current)).toBe(current === 'world_readable');
      expect(mayOpenRoom(h.facts(null), current)).toBe(current === 'world_readable');
    }
  });
});

/**
 * The rule straight from the specification, one event at a time: walk the history keeping
 * the setting and the viewer's membership, nothing precomputed but "joins at or after".
 */
function referenceVisible(events: { seq: number; pdu: EventRef['pdu'] }[], viewer: string | null): boolean[] {
  const out: boolean[] = [];
  let setting = 'shared';
  let membership: string | undefined;
  events.forEach((e, i) => {
    const joinsLater = viewer !== null && events.slice(i).some((x) => x.pdu.type === 'm.room.member' && x.pdu.state_key === viewer && x.pdu.content?.membership === 'join');
    const may = (vis: string, mem: string | undefined) => vis === 'world_readable' || mem === 'join' || (vis === 'shared' && joinsLater) || (vis === 'invited' && mem === 'invite');
    const settings = [setting];
    const memberships = [membership];
    const isHv = e.pdu.type === 'm.room.history_visibility' && e.pdu.state_key === '';
    const isOwn = viewer !== null && e.pdu.type === 'm.room.member' && e.pdu.state_key === viewer;
    const rawHv = e.pdu.content?.history_visibility;
    const sets = typeof rawHv === 'string' && SETTINGS.includes(rawHv as HistoryVisibility) ? rawHv : 'shared';
    if (isHv) settings.push(sets);
    if (isOwn && typeof e.pdu.content?.membership === 'string') memberships.push(e.pdu.content.membership as string);
    out.push(settings.some((s) => memberships.some((m) => may(s, m))));
    if (isHv) setting = sets;
    if (isOwn) membership = typeof e.pdu.content?.membership === 'string' ? (e.pdu.content.membership as string) : 'leave';
  });
  return out;
}

describe('against the rule walked event by event (random histories)', () => {
  const step = fc.oneof(
    fc.constant(msg('m')),
    fc.constantFrom(...SETTINGS, 'bogus').map((v) => hv(v)),
    fc.tuple(fc.constantFrom(BOB, CAROL), fc.constantFrom('invite', 'join', 'leave', 'ban')).map(([u, m]) => member(u, m)),
  );

  it('visibilityJudge agrees with the reference for every event, viewer and history', () => {
    fc.assert(
      fc.property(fc.array(step, { maxLength: 30 }), fc.constantFrom(BOB, CAROL, null), (steps, viewer) => {
        const h = history(...steps);
        const judge = visibilityJudge(h.facts(viewer));
        expect(h.events.map(judge)).toEqual(referenceVisible(h.events, viewer));
      }),
      { numRuns: 500 },
    );
  });
});
