#!/usr/bin/python3
"""An independent oracle for what peekd signs, hashes and names.

Reads one JSON document on stdin (artifacts collected from live peekd servers over real
HTTP) and checks every server key response, notary response, PDU and X-Matrix request
signature in it with matrix.org's own Python libraries: signedjson (verify_signed_json),
canonicaljson (encode_canonical_json), unpaddedbase64 and PyNaCl. The redaction algorithm,
content hash, reference hash / event ID and the X-Matrix header grammar are written here
from the Matrix specification (server-server API, room versions 1-11, appendices), never
from peekd's TypeScript.

Input (all JSON bodies are passed as the exact text peekd sent, parsed here, never by JS):

    {
      "key_responses": [{"source", "server", "body"}],          GET /_matrix/key/v2/server
      "key_queries":   [{"source", "notary", "body"}],          POST/GET /_matrix/key/v2/query
      "responses":     [{"source", "kind", "server", "body",   federation answers holding PDUs;
                         "event_id"?, "anchor"?}],              kind: event | state | state_ids |
                                                                backfill | get_missing_events |
                                                                event_auth | peek
      "requests":      [{"source", "origin", "destination",    requests a peekd sent to a fake
                         "method", "uri", "authorization",      peer, as the peer received them
                         "content_type", "body"}],
      "claimed_event_ids": [{"event_id", "label"}]             IDs peekd gave out (client API)
    }

Output: a JSON report on stdout. Exit 0 when every check passed, 1 on any failure, 2 when
the input itself cannot be used, 3 when a library is missing.
"""

import copy
import hashlib
import json
import re
import sys
import time
from collections import Counter, defaultdict

try:
    import canonicaljson
    import nacl.signing  # noqa: F401 (signedjson's key type; imported to fail early)
    import unpaddedbase64
    from signedjson.key import decode_signing_key_base64, decode_verify_key_bytes
    from signedjson.sign import SignatureVerifyException, sign_json, verify_signed_json
except ImportError as err:  # pragma: no cover
    print(
        json.dumps(
            {
                "ok": False,
                "error": f"missing Python module {err.name!r}: apt-get install python3-signedjson python3-canonicaljson "
                "(and run this script with /usr/bin/python3)",
            }
        )
    )
    sys.exit(3)

MAX_SAFE = 2**53 - 1
KEY_ID_RE = re.compile(r"^ed25519:[a-zA-Z0-9_]+$")
STD_B64_RE = re.compile(r"^[A-Za-z0-9+/]*$")
URL_B64_RE = re.compile(r"^[A-Za-z0-9_-]*$")
# RFC 9110 section 5.6.2 token characters.
TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def canonical(value):
    """matrix.org's canonical JSON bytes."""
    return canonicaljson.encode_canonical_json(value)


def b64(data):
    return unpaddedbase64.encode_base64(data)


def b64url(data):
    return unpaddedbase64.encode_base64(data, urlsafe=True)


def sha256(data):
    return hashlib.sha256(data).digest()


class Oracle:
    def __init__(self):
        self.checks = Counter()
        self.failures = []
        self.notes = []
        self.pdus_by_kind = Counter()
        self.requests_by_route = Counter()
        # "server key_id" -> PDU signatures verified with it ("(old)": from old_verify_keys)
        self.pdu_signatures_by_key = Counter()
        self.now_ms = int(time.time() * 1000)
        # server name -> key ID -> (VerifyKey, expired_ts or None); only from responses whose
        # self-signature verified.
        self.keys = defaultdict(dict)
        self.room_versions = {}
        # every (event ID computed here) -> the PDU's source, for claimed-ID checks
        self.computed_ids = {}

    # --- bookkeeping ----------------------------------------------------------------------

    def check(self, name, ok, source, detail=None, **where):
        self.checks[name] += 1
        if not ok:
            failure = {"check": name, "source": source}
            failure.update({k: v for k, v in where.items() if v is not None})
            if detail is not None:
                failure["detail"] = detail
            self.failures.append(failure)
        return ok

    # --- strict JSON ----------------------------------------------------------------------

    def strict_json(self, text, source):
        """Parses peekd's bytes as canonical JSON requires (no floats, no duplicate keys,
        integers in +-(2^53-1), valid UTF-8 all the way through canonicaljson)."""
        issues = []

        def pairs(kvs):
            d = {}
            for k, v in kvs:
                if k in d:
                    issues.append(f"duplicate key {k!r}")
                d[k] = v
            return d

        def pfloat(s):
            issues.append(f"non-integer number {s}")
            return float(s)

        def pint(s):
            v = int(s)
            if abs(v) > MAX_SAFE:
                issues.append(f"integer {s} outside +-(2^53-1)")
            return v

        def pconst(s):
            issues.append(f"{s} is not JSON")
            return float("nan")

        if not isinstance(text, str):
            self.check("json.strict", False, source, "no body text")
            return None
        try:
            value = json.loads(text, object_pairs_hook=pairs, parse_float=pfloat, parse_int=pint, parse_constant=pconst)
        except ValueError as err:
            self.check("json.strict", False, source, f"not JSON: {err}")
            return None
        try:
            canonical(value)
        except (ValueError, TypeError, UnicodeEncodeError) as err:
            issues.append(f"canonicaljson cannot encode it: {err}")
        self.check("json.strict", not issues, source, "; ".join(issues) or None)
        return value

    # --- base64 ---------------------------------------------------------------------------

    def unpadded_b64(self, s, nbytes=None, urlsafe=False):
        """None when `s` is well-formed unpadded base64 (of `nbytes` bytes), else why not."""
        if not isinstance(s, str):
            return f"{s!r} is not a string"
        if not (URL_B64_RE if urlsafe else STD_B64_RE).match(s):
            return f"{s!r} is not unpadded {'URL-safe' if urlsafe else 'standard'} base64"
        if len(s) % 4 == 1:
            return f"{s!r} has an impossible length"
        try:
            raw = unpaddedbase64.decode_base64(s)
        except Exception as err:  # noqa: BLE001
            return f"{s!r} does not decode: {err}"
        again = b64url(raw) if urlsafe else b64(raw)
        if again != s:
            return f"{s!r} is not the canonical encoding of its bytes ({again!r})"
        if nbytes is not None and len(raw) != nbytes:
            return f"{s!r} decodes to {len(raw)} bytes, not {nbytes}"
        return None

    # --- server keys ----------------------------------------------------------------------

    def key_response(self, art):
        source = art.get("source", "key response")
        body = self.strict_json(art.get("body"), source)
        if not isinstance(body, dict):
            self.check("key.shape", False, source, "not a JSON object")
            return
        return self.server_keys_object(body, source, art.get("server"))

    def server_keys_object(self, body, source, expected_server):
        """Checks one server-keys object (the body of /key/v2/server, or one entry of a
        notary answer). Returns (server_name, {key_id: VerifyKey}) of what verified."""
        server = body.get("server_name")
        self.check("key.server_name", isinstance(server, str) and (expected_server is None or server == expected_server), source, f"server_name {server!r}, expected {expected_server!r}")
        if not isinstance(server, str):
            return None
        verify_keys = body.get("verify_keys")
        ok = isinstance(verify_keys, dict) and len(verify_keys) > 0
        self.check("key.verify_keys", ok, source, f"verify_keys {verify_keys!r}")
        if not ok:
            return None
        decoded = {}
        for key_id, entry in verify_keys.items():
            self.check("key.key_id", bool(KEY_ID_RE.match(key_id)), source, f"key ID {key_id!r} is not ed25519:[a-zA-Z0-9_]+", key_id=key_id)
            raw_b64 = entry.get("key") if isinstance(entry, dict) else None
            why = self.unpadded_b64(raw_b64, 32)
            if not self.check("key.key_base64", why is None, source, why, key_id=key_id):
                continue
            if KEY_ID_RE.match(key_id):
                decoded[key_id] = decode_verify_key_bytes(key_id, unpaddedbase64.decode_base64(raw_b64))
        old = body.get("old_verify_keys", {})
        old_ok = isinstance(old, dict)
        self.check("key.old_verify_keys", old_ok, source, f"old_verify_keys {old!r} is not an object")
        old_decoded = {}
        if old_ok:
            for key_id, entry in old.items():
                why = None
                if not KEY_ID_RE.match(key_id):
                    why = f"key ID {key_id!r} is not ed25519:[a-zA-Z0-9_]+"
                elif not isinstance(entry, dict) or not isinstance(entry.get("expired_ts"), int) or isinstance(entry.get("expired_ts"), bool):
                    why = f"{key_id}: expired_ts missing or not an integer"
                else:
                    why = self.unpadded_b64(entry.get("key"), 32)
                if self.check("key.old_verify_keys", why is None, source, why, key_id=key_id):
                    old_decoded[key_id] = (decode_verify_key_bytes(key_id, unpaddedbase64.decode_base64(entry["key"])), entry["expired_ts"])
                self.check("key.old_verify_keys", key_id not in verify_keys, source, f"{key_id} is both current and old", key_id=key_id)
        vut = body.get("valid_until_ts")
        vut_ok = isinstance(vut, int) and not isinstance(vut, bool)
        self.check("key.valid_until_ts", vut_ok and vut > self.now_ms, source, f"valid_until_ts {vut!r} is not an integer in the future (now {self.now_ms})")
        if vut_ok and vut > self.now_ms + 7 * 24 * 3600 * 1000:
            self.notes.append(f"{source}: valid_until_ts is more than 7 days ahead (receivers cap it)")
        sigs = body.get("signatures")
        self.check("key.signatures_shape", isinstance(sigs, dict) and isinstance(sigs.get(server), dict), source, f"signatures {sigs!r} hold nothing from {server}")
        all_self_signed = bool(decoded)
        for key_id, vk in decoded.items():
            sig = (sigs or {}).get(server, {}).get(key_id) if isinstance(sigs, dict) and isinstance(sigs.get(server), dict) else None
            why = self.unpadded_b64(sig, 64)
            self.check("key.signature_base64", why is None, source, why, key_id=key_id)
            try:
                verify_signed_json(copy.deepcopy(body), server, vk)
                good = True
                detail = None
            except SignatureVerifyException as err:
                good = False
                detail = str(err)
            all_self_signed &= self.check("key.self_signature", good, source, detail, key_id=key_id)
        if all_self_signed:
            for key_id, vk in decoded.items():
                self.add_key(server, key_id, vk, None, source)
            for key_id, (vk, expired) in old_decoded.items():
                self.add_key(server, key_id, vk, expired, source)
        return server, decoded

    def add_key(self, server, key_id, vk, expired_ts, source):
        known = self.keys[server].get(key_id)
        if known is not None:
            self.check("key.consistent", bytes(known[0]) == bytes(vk), source, f"{server} {key_id} published with two different public keys", key_id=key_id)
            if expired_ts is None and known[1] is not None:
                self.keys[server][key_id] = (vk, None)
            return
        self.keys[server][key_id] = (vk, expired_ts)

    def key_query(self, art):
        """A notary answer (/_matrix/key/v2/query): every entry self-signed by its server and
        signed by the notary."""
        source = art.get("source", "key query")
        notary = art.get("notary")
        body = self.strict_json(art.get("body"), source)
        entries = body.get("server_keys") if isinstance(body, dict) else None
        if not self.check("query.shape", isinstance(entries, list), source, "no server_keys list"):
            return
        for i, entry in enumerate(entries):
            where = f"{source} server_keys[{i}]"
            if not self.check("query.shape", isinstance(entry, dict), where, "entry is not an object"):
                continue
            self.server_keys_object(entry, where, None)
            notary_keys = self.keys.get(notary, {})
            signed_by_notary = False
            for key_id, (vk, _expired) in notary_keys.items():
                if key_id in (entry.get("signatures", {}).get(notary, {}) or {}):
                    try:
                        verify_signed_json(copy.deepcopy(entry), notary, vk)
                        signed_by_notary = True
                    except SignatureVerifyException:
                        pass
            self.check("query.notary_signature", signed_by_notary, where, f"no valid signature by the notary {notary}")

    # --- redaction, hashes, event IDs (Matrix spec, written here) -------------------------

    @staticmethod
    def version_number(room_version):
        if isinstance(room_version, str) and re.fullmatch(r"[1-9][0-9]?", room_version) and 1 <= int(room_version) <= 11:
            return int(room_version)
        return None

    @staticmethod
    def redact(event, v):
        """The spec's redaction algorithm for room versions 1-11 (v = version number)."""
        top = {"event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures", "depth", "prev_events", "auth_events", "origin_server_ts"}
        if v <= 10:
            top |= {"prev_state", "origin", "membership"}
        out = {k: copy.deepcopy(val) for k, val in event.items() if k in top and k != "content"}
        content = event.get("content")
        content = content if isinstance(content, dict) else {}
        etype = event.get("type")
        keep = []
        kept = {}
        if etype == "m.room.member":
            keep = ["membership"] + (["join_authorised_via_users_server"] if v >= 9 else [])
            tpi = content.get("third_party_invite")
            if v >= 11 and isinstance(tpi, dict) and "signed" in tpi:
                kept["third_party_invite"] = {"signed": copy.deepcopy(tpi["signed"])}
        elif etype == "m.room.create":
            keep = list(content.keys()) if v >= 11 else ["creator"]
        elif etype == "m.room.join_rules":
            keep = ["join_rule"] + (["allow"] if v >= 8 else [])
        elif etype == "m.room.power_levels":
            keep = ["ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"] + (["invite"] if v >= 11 else [])
        elif etype == "m.room.history_visibility":
            keep = ["history_visibility"]
        elif etype == "m.room.aliases" and v <= 5:
            keep = ["aliases"]
        elif etype == "m.room.redaction" and v >= 11:
            keep = ["redacts"]
        for k in keep:
            if k in content:
                kept[k] = copy.deepcopy(content[k])
        out["content"] = kept
        return out

    def content_hash(self, pdu):
        stripped = {k: v for k, v in pdu.items() if k not in ("unsigned", "signatures", "hashes")}
        return b64(sha256(canonical(stripped)))

    def event_id(self, pdu, v):
        redacted = self.redact(pdu, v)
        redacted.pop("signatures", None)
        redacted.pop("unsigned", None)
        digest = sha256(canonical(redacted))
        return "$" + (b64(digest) if v == 3 else b64url(digest))

    def pdu(self, pdu, source, where, kind):
        """(a) content hash, (b) origin signatures over the redacted event, (c) event ID.
        Returns the event ID computed here (None when it cannot be)."""
        self.pdus_by_kind[kind] += 1
        if not self.check("pdu.shape", isinstance(pdu, dict), source, "PDU is not an object", where=where):
            return None
        room_id = pdu.get("room_id")
        room_version = self.room_versions.get(room_id)
        v = self.version_number(room_version)
        if not self.check("pdu.room_version", v is not None, source, f"room version {room_version!r} of {room_id!r} unknown (no m.room.create seen) or unsupported", where=where):
            return None
        computed_id = None
        if v >= 3:
            try:
                computed_id = self.event_id(pdu, v)
            except (ValueError, TypeError, UnicodeEncodeError) as err:
                self.check("pdu.event_id", False, source, f"reference hash not computable: {err}", where=where)
        eid = computed_id or pdu.get("event_id")
        # (a)+(d): the hash of the canonical JSON of peekd's bytes, re-encoded by canonicaljson.
        hashes = pdu.get("hashes")
        claimed = hashes.get("sha256") if isinstance(hashes, dict) else None
        why = self.unpadded_b64(claimed, 32)
        if self.check("pdu.hash_format", why is None, source, why, where=where, event_id=eid):
            try:
                actual = self.content_hash(pdu)
                self.check("pdu.content_hash", actual == claimed, source, f"hashes.sha256 {claimed} but canonicaljson gives {actual}", where=where, event_id=eid)
            except (ValueError, TypeError, UnicodeEncodeError) as err:
                self.check("pdu.content_hash", False, source, f"not encodable as canonical JSON: {err}", where=where, event_id=eid)
        # (b): every signature verifies over the redacted event; the sender's server signed.
        sigs = pdu.get("signatures")
        sender = pdu.get("sender")
        origin = sender.split(":", 1)[1] if isinstance(sender, str) and ":" in sender else None
        if self.check("pdu.signed_by_sender", isinstance(sigs, dict) and origin in sigs and isinstance(sigs.get(origin), dict) and sigs[origin], source, f"no signature by the sender's server {origin!r}", where=where, event_id=eid):
            redacted = self.redact(pdu, v)
            for server, by_key in sigs.items():
                if not self.check("pdu.signature_format", isinstance(by_key, dict), source, f"signatures[{server!r}] is not an object", where=where, event_id=eid):
                    continue
                for key_id, sig in by_key.items():
                    why = None if KEY_ID_RE.match(key_id) else f"key ID {key_id!r} is not ed25519:[a-zA-Z0-9_]+"
                    why = why or self.unpadded_b64(sig, 64)
                    self.check("pdu.signature_format", why is None, source, why, where=where, event_id=eid)
                    known = self.keys.get(server, {}).get(key_id)
                    if not self.check("pdu.signing_key_known", known is not None, source, f"no verified published key {server} {key_id}", where=where, event_id=eid):
                        continue
                    vk, expired = known
                    try:
                        verify_signed_json(copy.deepcopy(redacted), server, vk)
                        good, detail = True, None
                    except SignatureVerifyException as err:
                        good, detail = False, f"{server} {key_id}: {err}"
                    if self.check("pdu.signature", good, source, detail, where=where, event_id=eid):
                        self.pdu_signatures_by_key[f"{server} {key_id}{' (old)' if expired is not None else ''}"] += 1
                    if expired is not None and v >= 5:
                        ts = pdu.get("origin_server_ts")
                        self.check("pdu.signing_key_valid", isinstance(ts, int) and ts < expired, source, f"signed with {key_id}, expired at {expired}, event at {ts}", where=where, event_id=eid)
        # (c): the event ID is the reference hash; a v3+ PDU carries none itself.
        if v >= 3 and computed_id is not None:
            own = pdu.get("event_id")
            self.check("pdu.event_id", own is None or own == computed_id, source, f"PDU says event_id {own}, reference hash gives {computed_id}", where=where, event_id=computed_id)
            if own is not None:
                self.notes.append(f"{source} {where}: a v{v} PDU carries an event_id field")
            self.computed_ids.setdefault(computed_id, f"{source} {where}")
        return computed_id

    # --- federation answers ---------------------------------------------------------------

    @staticmethod
    def pdus_of(kind, body):
        """(where, pdu) pairs of a federation answer."""
        out = []

        def take(field):
            items = body.get(field)
            if isinstance(items, list):
                out.extend((f"{field}[{i}]", p) for i, p in enumerate(items))

        if kind in ("event", "backfill"):
            take("pdus")
        elif kind == "state":
            take("pdus")
            take("auth_chain")
        elif kind == "get_missing_events":
            take("events")
        elif kind == "event_auth":
            take("auth_chain")
        elif kind == "peek":
            if "latest_event" in body:
                out.append(("latest_event", body.get("latest_event")))
            take("state")
            take("auth_chain")
            take("events")
        elif kind == "transaction":
            take("pdus")
        return out

    def learn_room_versions(self, parsed):
        """Room versions from every m.room.create seen (and peek snapshots' room_version)."""
        for source, kind, body in parsed:
            if kind == "peek" and isinstance(body.get("room_version"), str):
                for _w, p in self.pdus_of(kind, body):
                    if isinstance(p, dict) and isinstance(p.get("room_id"), str):
                        self.set_room_version(p["room_id"], body["room_version"], source)
            for _w, p in self.pdus_of(kind, body):
                if isinstance(p, dict) and p.get("type") == "m.room.create" and p.get("state_key") == "" and isinstance(p.get("room_id"), str):
                    content = p.get("content") if isinstance(p.get("content"), dict) else {}
                    self.set_room_version(p["room_id"], content.get("room_version", "1"), source)

    def set_room_version(self, room_id, version, source):
        known = self.room_versions.get(room_id)
        if known is None:
            self.room_versions[room_id] = version
        else:
            self.check("pdu.room_version", known == version, source, f"{room_id} is version {known!r} and {version!r}")

    def answer(self, art, body, ids_by_anchor):
        source = art.get("source", art.get("kind"))
        kind = art.get("kind")
        server = art.get("server")
        if kind in ("event", "backfill") and "origin" in body:
            self.check("pdu.envelope", body.get("origin") == server, source, f"origin {body.get('origin')!r}, expected {server!r}")
        computed = []
        for where, p in self.pdus_of(kind, body):
            computed.append((where, self.pdu(p, source, where, kind)))
        if kind == "event":
            self.check("pdu.envelope", len(computed) == 1, source, f"{len(computed)} PDUs in an /event answer")
            if computed and art.get("event_id") is not None:
                self.check("ids.claimed", computed[0][1] == art["event_id"], source, f"asked for {art['event_id']}, reference hash of the answer is {computed[0][1]}", event_id=art["event_id"])
        if kind == "state":
            ids_by_anchor[(server, art.get("anchor"))]["state"] = (
                sorted(i for w, i in computed if w.startswith("pdus")),
                sorted(i for w, i in computed if w.startswith("auth_chain")),
            )
        if kind == "state_ids":
            pdu_ids, auth_ids = body.get("pdu_ids"), body.get("auth_chain_ids")
            if self.check("ids.shape", isinstance(pdu_ids, list) and isinstance(auth_ids, list), source, "pdu_ids / auth_chain_ids missing"):
                ids_by_anchor[(server, art.get("anchor"))]["state_ids"] = (sorted(pdu_ids), sorted(auth_ids), source)
        if kind == "peek":
            state_ids = {i for w, i in computed if w.startswith("state[")}
            latest_id = next((i for w, i in computed if w == "latest_event"), None)
            les = body.get("latest_event_state_ids")
            common = body.get("common_state_ids")
            if self.check("ids.shape", isinstance(les, dict) and isinstance(common, list), source, "latest_event_state_ids must be an object and common_state_ids a list"):
                named = set(common)
                for extremity, lst in les.items():
                    self.check("ids.shape", isinstance(lst, list), source, f"latest_event_state_ids[{extremity}] is not a list")
                    named |= set(lst if isinstance(lst, list) else [])
                self.check("ids.peek_state", named == state_ids, source, f"IDs named {sorted(named - state_ids)} not in state, state IDs {sorted(state_ids - named)} not named")
                self.check("ids.peek_latest", latest_id in les, source, f"latest_event_state_ids keys {sorted(les)} do not name the latest event {latest_id}")

    def pair_state(self, ids_by_anchor):
        for (server, anchor), got in ids_by_anchor.items():
            if "state" in got and "state_ids" in got:
                pdus, auth = got["state"]
                pdu_ids, auth_ids, source = got["state_ids"]
                self.check("ids.state_ids", pdu_ids == pdus, source, f"/state_ids pdu_ids differ from the IDs of /state's PDUs at {anchor}")
                self.check("ids.state_ids", auth_ids == auth, source, f"/state_ids auth_chain_ids differ from the IDs of /state's auth_chain at {anchor}")

    # --- X-Matrix -------------------------------------------------------------------------

    def parse_x_matrix(self, header):
        """RFC 9110 section 11.4 credentials with auth-params. Returns (params, compat issues)
        or raises ValueError."""
        m = re.match(r"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+)( +)", header)
        if not m or m.group(1).lower() != "x-matrix":
            raise ValueError("scheme is not X-Matrix")
        compat = []
        if m.group(1) != "X-Matrix":
            compat.append(f"scheme written {m.group(1)!r}")
        if len(m.group(2)) != 1:
            compat.append("more than one space after the scheme")
        s = header[m.end() :]
        i, n = 0, len(s)
        params = {}
        first = True
        while True:
            if not first:
                j = i
                while j < n and s[j] in " \t":
                    j += 1
                if j >= n:
                    if j != i:
                        compat.append("trailing whitespace")
                    break
                if s[j] != ",":
                    raise ValueError(f"expected ',' at {s[j:]!r}")
                if j != i:
                    compat.append("whitespace before a comma")
                j += 1
                k = j
                while k < n and s[k] in " \t":
                    k += 1
                if k != j:
                    compat.append("whitespace after a comma")
                i = k
            first = False
            nm = re.match(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", s[i:])
            if not nm:
                raise ValueError(f"expected a parameter name at {s[i:]!r}")
            name = nm.group(0)
            i += len(name)
            while i < n and s[i] in " \t":
                i += 1
                compat.append("whitespace around '='")
            if i >= n or s[i] != "=":
                raise ValueError(f"expected '=' after {name}")
            i += 1
            while i < n and s[i] in " \t":
                i += 1
                compat.append("whitespace around '='")
            if i < n and s[i] == '"':
                i += 1
                value = []
                while True:
                    if i >= n:
                        raise ValueError("unterminated quoted string")
                    c = s[i]
                    if c == "\\":
                        if i + 1 >= n:
                            raise ValueError("dangling backslash")
                        compat.append("backslash in a value")
                        value.append(s[i + 1])
                        i += 2
                    elif c == '"':
                        i += 1
                        break
                    else:
                        value.append(c)
                        i += 1
                value = "".join(value)
            else:
                vm = re.match(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", s[i:])
                if not vm:
                    raise ValueError(f"expected a token or quoted string for {name}")
                value = vm.group(0)
                i += len(value)
            if name != name.lower():
                compat.append(f"parameter name {name!r} not lower case")
            if name.lower() in params:
                raise ValueError(f"parameter {name} repeated")
            params[name.lower()] = value
        return params, compat

    def request(self, art):
        source = art.get("source") or f"{art.get('method')} {art.get('uri')}"
        method, uri, destination = art.get("method"), art.get("uri"), art.get("destination")
        route = re.sub(r"^(/_matrix/federation/v1/[a-z_]+).*", r"\1", (uri or "").split("?")[0])
        if method == "POST" and (uri or "").split("?")[0].endswith("/renew"):
            route += "/renew"
        self.requests_by_route[f"{method} {route}"] += 1
        body_text = art.get("body") or ""
        content = None
        has_body = body_text != ""
        if has_body:
            content = self.strict_json(body_text, source)
            self.check("request.content_type", (art.get("content_type") or "").split(";")[0].strip().lower() == "application/json", source, f"Content-Type {art.get('content_type')!r} for a JSON body")
            # peekd writes request bodies as canonical JSON: the bytes must be exactly what
            # canonicaljson makes of them (a direct test of peekd's canonical JSON writer).
            if content is not None:
                again = canonical(content)
                self.check(
                    "canonical.bytes",
                    again == body_text.encode("utf-8"),
                    source,
                    None if again == body_text.encode("utf-8") else f"sha256 of peekd's bytes {b64(sha256(body_text.encode('utf-8')))}, of canonicaljson's {b64(sha256(again))}; first difference at byte {first_diff(again, body_text.encode('utf-8'))}",
                )
        header = art.get("authorization")
        if not self.check("xmatrix.header", isinstance(header, str), source, "no Authorization header"):
            return
        try:
            params, compat = self.parse_x_matrix(header)
            self.check("xmatrix.parse", True, source)
        except ValueError as err:
            self.check("xmatrix.parse", False, source, f"{err}: {header!r}")
            return
        self.check("xmatrix.compat", not compat, source, "; ".join(compat) or None)
        origin, dest, key_id, sig = (params.get(p) for p in ("origin", "destination", "key", "sig"))
        self.check("xmatrix.params", origin == art.get("origin"), source, f"origin {origin!r}, expected {art.get('origin')!r}")
        self.check("xmatrix.params", dest == destination, source, f"destination {dest!r}, expected {destination!r}")
        self.check("xmatrix.params", isinstance(key_id, str) and bool(KEY_ID_RE.match(key_id)), source, f"key {key_id!r} is not ed25519:[a-zA-Z0-9_]+")
        why = self.unpadded_b64(sig, 64)
        self.check("xmatrix.params", why is None, source, why)
        known = self.keys.get(origin, {}).get(key_id)
        if not self.check("xmatrix.key_known", known is not None and known[1] is None, source, f"no current verified key {origin} {key_id}"):
            return
        signed = {"method": method, "uri": uri, "origin": origin, "destination": destination}
        if has_body:
            if content is None:
                self.check("xmatrix.signature", False, source, "body is not JSON")
                return
            signed["content"] = content
        signed["signatures"] = {origin: {key_id: sig}}
        try:
            verify_signed_json(signed, origin, known[0])
            good, detail = True, None
        except SignatureVerifyException as err:
            good, detail = False, str(err)
        self.check("xmatrix.signature", good, source, detail)
        # A transaction peekd pushes: its origin, then every PDU in it.
        if method == "PUT" and (uri or "").startswith("/_matrix/federation/v1/send/") and isinstance(content, dict):
            self.check("txn.origin", content.get("origin") == origin, source, f"transaction origin {content.get('origin')!r}, X-Matrix origin {origin!r}")
            ts = content.get("origin_server_ts")
            self.check("txn.origin", isinstance(ts, int) and not isinstance(ts, bool), source, "origin_server_ts is not an integer")
            for where, p in self.pdus_of("transaction", content):
                self.pdu(p, source, where, "transaction")

    # --- the run ----------------------------------------------------------------------------

    def run(self, doc):
        for art in doc.get("key_responses", []):
            self.key_response(art)
        for art in doc.get("key_queries", []):
            self.key_query(art)
        parsed = []
        for art in doc.get("responses", []):
            body = self.strict_json(art.get("body"), art.get("source", art.get("kind")))
            if self.check("response.shape", isinstance(body, dict), art.get("source"), "answer is not a JSON object"):
                parsed.append((art, body))
        requests = doc.get("requests", [])
        # Room versions also from the transactions peekd pushed (parsed strictly later).
        transactions = []
        for art in requests:
            if (art.get("uri") or "").startswith("/_matrix/federation/v1/send/") and art.get("body"):
                try:
                    body = json.loads(art["body"])
                except ValueError:
                    continue
                if isinstance(body, dict):
                    transactions.append((art.get("source"), "transaction", body))
        self.learn_room_versions([(a.get("source"), a.get("kind"), b) for a, b in parsed] + transactions)
        ids_by_anchor = defaultdict(dict)
        for art, body in parsed:
            self.answer(art, body, ids_by_anchor)
        self.pair_state(ids_by_anchor)
        for art in requests:
            self.request(art)
        for claim in doc.get("claimed_event_ids", []):
            eid = claim.get("event_id")
            self.check("ids.claimed", eid in self.computed_ids, claim.get("label", "claimed"), f"{eid} is not the reference hash of any PDU peekd served", event_id=eid)
        categories = Counter()
        for name, count in self.checks.items():
            categories[name.split(".")[0]] += count
        return {
            "ok": not self.failures,
            "checks_run": sum(self.checks.values()),
            "categories": dict(sorted(categories.items())),
            "checks": dict(sorted(self.checks.items())),
            "pdus_by_source_kind": dict(sorted(self.pdus_by_kind.items())),
            "requests_by_route": dict(sorted(self.requests_by_route.items())),
            "pdu_signatures_by_key": dict(sorted(self.pdu_signatures_by_key.items())),
            "distinct_event_ids": len(self.computed_ids),
            "room_versions": dict(sorted(self.room_versions.items())),
            "keys": {server: sorted(ids) for server, ids in sorted(self.keys.items())},
            "failures": self.failures,
            "notes": sorted(set(self.notes)),
            "libraries": {"canonicaljson": canonicaljson.__version__},
        }


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def self_test():
    """The specification's own signing examples (appendix "Signing JSON" / "Signing
    events"), so a broken library or a slip in the redaction code here shows up first."""
    problems = []
    key = decode_signing_key_base64("ed25519", "1", "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
    vectors = [
        ({}, "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"),
        ({"one": 1, "two": "Two"}, "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"),
    ]
    for obj, expected in vectors:
        got = sign_json(copy.deepcopy(obj), "domain", key)["signatures"]["domain"]["ed25519:1"]
        if got != expected:
            problems.append(f"sign_json({obj}) gave {got}")
    event = {
        "auth_events": [],
        "content": {},
        "depth": 3,
        "origin": "domain",
        "origin_server_ts": 1000000,
        "prev_events": [],
        "room_id": "!x:domain",
        "sender": "@a:domain",
        "type": "X",
        "unsigned": {"age_ts": 1000000},
    }
    o = Oracle()
    if o.content_hash(event) != "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos":
        problems.append(f"content hash of the spec's example event gave {o.content_hash(event)}")
    event["hashes"] = {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"}
    signed = sign_json(o.redact(event, 1), "domain", key)["signatures"]["domain"]["ed25519:1"]
    if signed != "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg":
        problems.append(f"signature of the spec's example event gave {signed}")
    # Canonical JSON as the spec's appendix describes it.
    samples = [
        ({"b": "2", "a": "1"}, b'{"a":"1","b":"2"}'),
        ({"\u65e5\u672c\u8a9e": "\u65e5\u672c\u8a9e"}, '{"\u65e5\u672c\u8a9e":"\u65e5\u672c\u8a9e"}'.encode()),
        ({"a": "\u0000"}, b'{"a":"\\u0000"}'),
        ({"\U0001f600": 1, "\ue000": 2}, '{"\ue000":2,"\U0001f600":1}'.encode()),
    ]
    for value, expected in samples:
        if canonical(value) != expected:
            problems.append(f"canonicaljson gave {canonical(value)!r} for {value!r}")
    return problems


def main():
    problems = self_test()
    if problems:
        print(json.dumps({"ok": False, "error": "self-test against the spec's examples failed", "problems": problems}, indent=2))
        return 2
    try:
        doc = json.loads(sys.stdin.read())
    except ValueError as err:
        print(json.dumps({"ok": False, "error": f"input is not JSON: {err}"}))
        return 2
    if not isinstance(doc, dict):
        print(json.dumps({"ok": False, "error": "input is not a JSON object"}))
        return 2
    report = Oracle().run(doc)
    report["self_test"] = "passed"
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
