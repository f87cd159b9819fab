// Room actor snapshots: derived data that spares a long history's full read on activation.
// A snapshot is the folded RoomState at two stream positions; activation reads it and the
// tail after it. Deleting snapshots changes no outcome, only how much is read.
import { promisify } from 'node:util';
import { gunzip, gzip } from 'node:zlib';
import { Kvm, type KV } from '@nats-io/kv';
import { retryTransient } from '../nats/errors.ts';
import type { NatsConnection } from '@nats-io/transport-node';
import { roomToken, type Naming } from '../events/subjects.ts';
import type { LivePeek, RoomFacts, RoomState, StateEntry } from './state.ts';

export interface SnapshotStore {
  load(roomId: string): Promise<RoomState | null>;
  save(state: RoomState): Promise<void>;
  delete(roomId: string): Promise<void>;
}

interface SerializedState {
  v: 2;
  roomId: string;
  peeksSeq: number;
  roomsSeq: number;
  peeks: [string, LivePeek][];
  /** Recent command IDs (absent in snapshots from before envelopes). */
  commands?: { peeks: [string, number][]; rooms: [string, number][] };
  room: (Omit<RoomFacts, 'state' | 'txns'> & { state: [string, StateEntry][]; txns: [string, string][] }) | null;
}

export function serializeState(state: RoomState): string {
  const s: SerializedState = {
    v: 2,
    roomId: state.roomId,
    peeksSeq: state.peeksSeq,
    roomsSeq: state.roomsSeq,
    peeks: [...state.peeks],
    commands: { peeks: [...state.commands.peeks], rooms: [...state.commands.rooms] },
    room: state.room ? { ...state.room, state: [...state.room.state], txns: [...state.room.txns] } : null,
  };
  return JSON.stringify(s);
}

export function deserializeState(text: string): RoomState | null {
  const s = JSON.parse(text) as SerializedState;
  if (s.v !== 2) return null; // v1: from before envelopes, in raw sequences: ignored (derived data)
  return {
    roomId: s.roomId,
    peeksSeq: s.peeksSeq,
    roomsSeq: s.roomsSeq,
    peeks: new Map(s.peeks),
    commands: { peeks: new Map(s.commands?.peeks ?? []), rooms: new Map(s.commands?.rooms ?? []) },
    room: s.room ? { ...s.room, state: new Map(s.room.state), txns: new Map(s.room.txns) } : null,
  };
}

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

/** gzip's magic bytes: a compressed snapshot (plain JSON starts with `{`). */
function isGzip(data: Uint8Array): boolean {
  return data.length > 2 && data[0] === 0x1f && data[1] === 0x8b;
}

/**
 * Snapshots in a NATS KV bucket (one key per room, latest only), gzipped: one value must
 * fit in one NATS message (max_payload, 1 MiB by default), and a room's state JSON passes
 * that at about 1,400 members; compressed, at about 6,000.
 */
export class KvSnapshotStore implements SnapshotStore {
  private constructor(private readonly kv: KV) {}

  static async open(nc: NatsConnection, naming: Naming, replicas = 1): Promise<KvSnapshotStore> {
    const kv = await retryTransient(() => new Kvm(nc).create(naming.kvBucket('snapshots'), { history: 1, replicas }));
    return new KvSnapshotStore(kv);
  }

  async load(roomId: string): Promise<RoomState | null> {
    const entry = await this.kv.get(roomToken(roomId));
    if (!entry || entry.operation !== 'PUT' || entry.length === 0) return null;
    const text = isGzip(entry.value) ? (await gunzipAsync(entry.value)).toString('utf8') : entry.string();
    const state = deserializeState(text);
    return state && state.roomId === roomId ? state : null;
  }

  async save(state: RoomState): Promise<void> {
    await this.kv.put(roomToken(state.roomId), await gzipAsync(serializeState(state)));
  }

  async delete(roomId: string): Promise<void> {
    await this.kv.purge(roomToken(roomId));
  }
}
