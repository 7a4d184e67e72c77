"""The county's services: enrolment, the sync answer, applying station events, decisions.

Each method is one transaction: a processing fact and the downstream event that carries it
to the station are written together.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from central import permissions, projections
from central.store import Store
from crypto import canonical, passwords
from crypto.keys import Identity, PublicKeys, load_retired, save_retired
from crypto import envelope
from crypto.errors import CryptoError
from sync import blobs, bundle, enrolment, exchange, facts, log
from sync import rules
from sync.errors import BadEvent, RevokedStation, UnknownStation
from sync.log import Event

logger = logging.getLogger("lastmile.central")
LEVELS = ("village", "township", "county")
DECISIONS = facts.DECISIONS
ENROL_HOURS = 72


def N_(message: str) -> str:
    """Mark a message id for translation; the web layer translates it."""
    return message


SKEW_LIMIT_S = 300


@dataclass(frozen=True, slots=True)
class Settings:
    data: Path
    name: str = "county"
    max_concurrent_syncs: int = 8     # more at once are answered 503 + Retry-After, spread at random

    @property
    def db_path(self) -> Path:
        return self.data / "central.db"

    @property
    def key_dir(self) -> Path:
        return self.data / "keys"


class CountyError(Exception):
    """A request the county refuses; ``status`` is the HTTP status, the message a message id."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def clock_skew(station_time: object, county_time: str) -> int | None:
    """Seconds the station's clock is ahead of the county's (negative: behind); None if unknown.

    Only shown and flagged: logs are ordered by sequence number and time limits are counted from
    the county's own receipt time when the two disagree, so a wrong clock reorders nothing."""
    if not isinstance(station_time, str):
        return None
    try:
        a = dt.datetime.fromisoformat(station_time.replace("Z", "+00:00"))
        b = dt.datetime.fromisoformat(county_time.replace("Z", "+00:00"))
    except ValueError:
        return None
    if a.tzinfo is None:
        return None
    return int((a - b).total_seconds())


# The columns of a case row copied from the station's signed application, and where in the signed
# body each comes from. Anything else in the row (status, decision, times at the county) is the
# county's own.
SIGNED_COLUMNS: dict[str, tuple[str, ...]] = {
    "station": ("station",), "receipt_no": ("receipt_no",), "item_code": ("item_code",),
    "item_name": ("item_name",), "department": ("department",), "applicant_name": ("applicant", "name"),
    "id_number": ("applicant", "id_number"), "accepted_at": ("at",), "promised_date": ("promised_date",)}
SCAN_KEYS = ("sha256", "material", "name", "mime", "size")


def signed_columns(body: dict[str, Any]) -> dict[str, Any]:
    """The values the case row's copied columns must hold, taken from the signed body."""
    out: dict[str, Any] = {}
    for column, path in SIGNED_COLUMNS.items():
        value: Any = body
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        out[column] = value
    return out


def record_mismatches(case: dict[str, Any], body: dict[str, Any],
                      scans: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every copied column of the stored row (and the stored scan list) that differs from the
    signed application: ``[{"field", "stored", "signed"}]``, empty when they agree."""
    out = [{"field": column, "stored": case.get(column), "signed": value}
           for column, value in signed_columns(body).items()
           if (case.get(column) or None) != (value or None)]
    if scans is not None:
        def listed(rows: list[Any]) -> list[tuple[str, ...]]:   # one per SHA-256, as the county stores them
            first = {}
            for r in rows:
                if isinstance(r, dict):
                    first.setdefault(str(r.get("sha256")), tuple(str(r.get(k)) for k in SCAN_KEYS))
            return sorted(first.values())
        stored, signed = listed(scans), listed(body.get("scans") or [])
        if stored != signed:
            out.append({"field": "scans", "stored": [dict(zip(SCAN_KEYS, s)) for s in stored],
                        "signed": [dict(zip(SCAN_KEYS, s)) for s in signed]})
    return out


def sniff(data: bytes) -> str | None:
    """The type a scan is served as, from its first bytes: JPEG or PDF, nothing else."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:5] == b"%PDF-":
        return "application/pdf"
    return None


class County:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or Store(settings.db_path)
        self._finish_rotation(settings, self.store)
        if not (settings.key_dir / "sign.pem").exists():
            raise FileNotFoundError(f"{settings.data} has no county keys; run `lastmile central init` first")
        self.me = Identity.load(settings.key_dir)
        # Old keys after a rotation (PROTOCOL.md §10): they still open what was sealed to them, and
        # sign for a station until it holds the county.keys_rotated event that names the new ones.
        self.retired = load_retired(settings.data / "keys.retired")
        self.name = self.store.meta("county_name") or settings.name
        self._blob_lock = threading.Lock()
        self._nonces: dict[str, float] = {}     # scan request nonces seen, until they expire
        self._catalogs: dict[int, dict[str, Any]] = {}     # published catalogue versions, by version

    @staticmethod
    def init(settings: Settings) -> None:
        settings.data.mkdir(parents=True, exist_ok=True)
        if not (settings.key_dir / "sign.pem").exists():
            Identity.generate().save(settings.key_dir)
        store = Store(settings.db_path)
        with store.transaction() as db:
            if not store.meta("county_name"):
                store.set_meta(db, "county_name", settings.name)
        store.close()

    # catalogue -----------------------------------------------------------------
    def publish_catalog(self, catalog: dict[str, Any]) -> int:
        """Store a new catalogue version and send it down to every active station."""
        with self.store.transaction() as db:
            latest = self.store.latest_catalog(db)
            version = (latest[0] if latest else 0) + 1
            body = {**catalog, "version": version}
            self.store.insert_catalog(db, version, log.utcnow(), canonical.dumps(body).decode())
            for code in self.store.active_station_codes(db):
                self.record(db, code, facts.Fact(facts.CATALOG_PUBLISHED, {"catalog": body}))
        return version

    def catalog(self) -> dict[str, Any]:
        latest = self.store.latest_catalog()
        return json.loads(latest[1]) if latest else {"version": 0, "items": [], "departments": []}

    def _send_down(self, db: Any, station: str, kind: str, body: dict[str, Any]) -> Event:
        return log.append(db, self._signer(db, station), stream=log.down(station), author=self.name, kind=kind,
                          body=body)

    # the one write path -------------------------------------------------------------
    def record(self, db: Any, station: str, fact: facts.Fact) -> Event:
        """Validate one of the county's facts by the shared spec, append it to ``station``'s downstream
        log and project it with the same function that re-projects it after a restore, all inside
        the caller's transaction."""
        if fact.spec.author != facts.COUNTY:
            raise ValueError(f"{fact.kind} is not a county's fact")
        fact.validate()
        ev = self._send_down(db, station, fact.kind, fact.body)
        project = projections.DOWN.get(fact.kind)
        if project is not None:
            project(self, db, ev)
        return ev

    # the county's own keys (PROTOCOL.md §3, §10) ------------------------------------------------
    def _signer(self, db: Any, station: str, down_have: int | None = None) -> Identity:
        """Who signs for ``station``: the key it trusted before our last rotation, until it holds the
        ``county.keys_rotated`` event sent to it (``down_have`` of the push being answered, or else
        what it confirmed), then the current key."""
        row = db.execute("SELECT value FROM meta WHERE name = ?", (f"county_rotation:{station}",)).fetchone()
        if not row or not row[0]:
            return self.me
        pending = json.loads(row[0])
        have = log.acked(db, log.down(station)) if down_have is None else down_have
        if have >= int(pending["seq"]):
            return self.me
        return self.retired.get(pending["key"], self.me)

    def on_old_key(self) -> list[str]:
        """The stations the county still signs for with an old key: they do not hold its latest
        ``county.keys_rotated`` yet (their next sync or USB round takes it)."""
        with self.store.lock:
            return sorted(code for code in self.store.active_station_codes(self.store.conn)
                          if self._signer(self.store.conn, code) is not self.me)

    def held_identities(self) -> list[Identity]:
        """Every identity whose X25519 key still opens pushes and scans: current first."""
        return [self.me, *self.retired.values()]

    def own_keys(self) -> dict[str, str]:
        """The county's sign keys by key id, current and retired: its old events verify with them."""
        return {i.public.sign_id: i.public.sign for i in self.held_identities()}

    def county_key_history(self) -> list[dict[str, Any]]:
        """The county's key sets, oldest first: ``sign_id``, ``enc_id``, ``fingerprint``, ``from`` and
        ``until`` (UTC, empty while current), for the stations page."""
        raw = self.store.meta("county_key_history")
        history = json.loads(raw) if raw else []
        if not any(k["sign_id"] == self.me.public.sign_id for k in history):
            history.append({"sign_id": self.me.public.sign_id, "enc_id": self.me.public.enc_id,
                            "fingerprint": self.me.public.fingerprint(), "from": "", "until": ""})
        return history

    @staticmethod
    def _finish_rotation(settings: Settings, store: Store) -> None:
        """A rotation cut short between its database commit and the key files' move: finish it (the
        database names the new key), or drop new keys it never announced."""
        nxt = settings.data / "keys.next"
        if not (nxt / "sign.pem").exists():
            return
        if store.meta("county_sign_id") == Identity.load(nxt).public.sign_id:
            old = settings.data / "keys.old"
            if settings.key_dir.exists():
                if old.exists():
                    shutil.rmtree(old)
                os.replace(settings.key_dir, old)
            os.replace(nxt, settings.key_dir)
            if old.exists():
                shutil.rmtree(old)
        else:
            shutil.rmtree(nxt)

    def rotate_keys(self) -> dict[str, Any]:
        """New county keys (PROTOCOL.md §10). The old private keys are kept (keys.retired/<key id>/);
        every active station gets ``county.keys_rotated`` (body: the new ``sign``, ``enc``) signed by
        the key it trusts now; each goes on getting events and answers signed by that key until it
        holds the event, then by the new one. Stations enrolled from now on get the new keys."""
        data = self.settings.data
        old, new = self.me, Identity.generate()
        save_retired(old, data / "keys.retired")           # before anything names the new key
        nxt = data / "keys.next"
        if nxt.exists():
            shutil.rmtree(nxt)
        new.save(nxt)
        now, sent = log.utcnow(), []
        with self.store.transaction() as db:
            raw = self.store.meta("county_key_history")
            history = json.loads(raw) if raw else []
            if not any(k["sign_id"] == old.public.sign_id for k in history):
                history.append({"sign_id": old.public.sign_id, "enc_id": old.public.enc_id,
                                "fingerprint": old.public.fingerprint(), "from": "", "until": ""})
            for k in history:
                if k["sign_id"] == old.public.sign_id:
                    k["until"] = now
            history.append({"sign_id": new.public.sign_id, "enc_id": new.public.enc_id,
                            "fingerprint": new.public.fingerprint(), "from": now, "until": ""})
            self.store.set_meta(db, "county_key_history", json.dumps(history))
            self.retired[old.public.sign_id] = old
            for code in self.store.active_station_codes(db):
                signer = self._signer(db, code)
                ev = log.append(db, signer, stream=log.down(code), author=self.name, kind=exchange.ROTATED,
                                body=new.public.to_dict())
                self.store.set_meta(db, f"county_rotation:{code}",
                                    json.dumps({"seq": ev.seq, "key": signer.public.sign_id}))
                sent.append(code)
            self.store.set_meta(db, "county_sign_id", new.public.sign_id)
        self._finish_rotation(self.settings, self.store)
        self.me = Identity.load(self.settings.key_dir)
        logger.warning("county keys rotated from %s to %s; announced to %d stations", old.public.sign_id,
                       new.public.sign_id, len(sent))
        return {"old_key": old.public.sign_id, "new_key": new.public.sign_id,
                "fingerprint": new.public.fingerprint(), "stations": sent}

    # stations ------------------------------------------------------------------
    def add_station(self, code: str, name: str, level: str, *, replace: bool = False) -> str:
        """Register a station; return its one-time enrolment code (valid 72 hours, single use).

        Only the code's scrypt-derived MAC key is stored (sync/enrolment.py): the code itself never
        travels at enrolment, and the county can check a station's MAC without it.

        ``replace``: the station is enrolled and its PC is being replaced. Enrolment opens again (the
        old PC's syncs are refused from now on); the new PC enrols with new keys, the old keys stay
        on record so its old events still verify, and it rebuilds everything from the county's copy."""
        if replace and not level:                     # a new computer: same station, same level
            level = (self.store.station(code) or {}).get("level") or ""
        if level not in LEVELS:
            raise CountyError(400, "bad_level", f"level must be one of {', '.join(LEVELS)}")
        if not code or not code.isascii() or not code.replace("-", "").isalnum() or len(code) > 32:
            raise CountyError(400, "bad_code", N_("station code must be 1-32 letters, digits or '-'"))
        otp = "-".join(secrets.token_hex(2).upper() for _ in range(4))
        key = enrolment.mac_key(otp, code).hex()
        expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=ENROL_HOURS)).isoformat()
        with self.store.transaction() as db:
            existing = self.store.station(code)
            if existing and existing["status"] == "active" and not replace:
                raise CountyError(409, "exists", f"station {code} is already enrolled; to replace its computer,"
                                                 " run `lastmile central station add --replace`")
            if replace and (not existing or existing["status"] != "active"):
                raise CountyError(409, "not_active", f"station {code} is not enrolled: add it without --replace")
            if replace:
                logger.warning("station %s: enrolment re-opened to replace its computer", code)
            if existing:
                name = name or existing["name"]
                self.store.update_station(db, code, name=name, level=level, status="pending",
                                          enroll_code_hash=key, enroll_expires=expires)
            else:
                self.store.insert_station(db, {"code": code, "name": name, "level": level, "status": "pending",
                                               "enroll_code_hash": key, "enroll_expires": expires,
                                               "created_at": log.utcnow()})
            self.store.set_meta(db, f"enroll_failures:{code}", "0")
        return otp

    def enrolment_info(self) -> dict[str, Any]:
        """What a station fetches first, to check against the fingerprint its installer typed."""
        return {"county_name": self.name, "county_keys": self.me.public.to_dict(),
                "fingerprint": self.me.public.fingerprint()}

    def enroll(self, code: str, keys: PublicKeys, mac: str) -> dict[str, Any]:
        """Enrol a pending station whose MAC proves it knows the one-time code; answer with the
        county's MAC over both key sets. Wrong MACs are counted: the fifth voids the code."""
        county_keys = self.me.public.to_dict()
        failure: CountyError | None = None
        with self.store.transaction() as db:
            st = self.store.station(code)
            if st is None or st["status"] != "pending" or not st["enroll_code_hash"]:
                raise CountyError(403, "not_pending", N_("no enrolment is open for this station"))
            if dt.datetime.fromisoformat(st["enroll_expires"]) < dt.datetime.now(dt.timezone.utc):
                raise CountyError(403, "expired", N_("the enrolment code has expired; ask the county for a new one"))
            key = bytes.fromhex(st["enroll_code_hash"])
            expected = enrolment.request_mac(key, station=code, station_keys=keys.to_dict(), county_name=self.name,
                                             county_keys=county_keys)
            if not enrolment.same(expected, mac):
                failures = int(self.store.meta(f"enroll_failures:{code}") or 0) + 1
                self.store.set_meta(db, f"enroll_failures:{code}", str(failures))
                if failures >= enrolment.MAX_ATTEMPTS:
                    self.store.update_station(db, code, enroll_code_hash=None, enroll_expires=None)
                    failure = CountyError(403, "code_void", N_(
                        "too many wrong enrolment attempts: this code is now void; the county must run "
                        "`lastmile central station add` again for a new code"))
                else:
                    failure = CountyError(403, "bad_mac", N_(
                        "the enrolment proof is wrong: a mistyped code, or someone changed the request on the way"))
            else:
                now, (head, _) = log.utcnow(), log.head(db, log.up(code))
                if st["sign_key"] and st["sign_key"] != keys.sign:      # a replacement PC: new keys from here
                    self.store.retire_station_keys(db, code, now, head)
                    db.execute("INSERT INTO _sync_recoveries (stream, at, what, first, last) VALUES (?, ?, ?, ?, ?)",
                               (log.up(code), now, "replaced", head + 1, head))
                self.store.add_station_key(db, code, keys.sign, keys.enc, keys.sign_id, keys.enc_id,
                                           "replaced" if st["sign_key"] else "enrolled", now, head + 1)
                self.store.update_station(db, code, status="active", sign_key=keys.sign, enc_key=keys.enc,
                                          enroll_code_hash=None, enroll_expires=None, enrolled_at=now)
                self.store.set_meta(db, f"enroll_failures:{code}", "0")
                # It got our current keys in this answer: sign for it with them from now on (§10).
                self.store.set_meta(db, f"county_rotation:{code}", "")
                latest = self.store.latest_catalog(db)
                if latest:
                    self.record(db, code, facts.Fact(facts.CATALOG_PUBLISHED, {"catalog": json.loads(latest[1])}))
        if failure:
            raise failure
        answer = {"station_name": st["name"], "station_level": st["level"], "county_name": self.name,
                  "county_keys": county_keys}
        answer["mac"] = enrolment.answer_mac(key, station=code, station_keys=keys.to_dict(), county_name=self.name,
                                             county_keys=county_keys, station_name=st["name"],
                                             station_level=st["level"])
        return answer

    def revoke(self, code: str) -> None:
        with self.store.transaction() as db:
            if not self.store.station(code):
                raise CountyError(404, "unknown_station", f"no station {code}")
            self.store.update_station(db, code, status="revoked")
            # Events stored before now stay valid (their keys were good when they came); none after.
            self.store.revoke_station_keys(db, code, log.utcnow())

    def station_keys(self, code: str) -> PublicKeys:
        st = self.store.station(code)
        if st is None or st["status"] == "pending":
            raise UnknownStation(f"station {code!r} is not enrolled at this county")
        if st["status"] == "revoked":
            raise RevokedStation(f"station {code!r} has been revoked")
        return PublicKeys(sign=st["sign_key"], enc=st["enc_key"])

    def station_keys_for(self, code: str, key_id: object) -> PublicKeys:
        """The station's key set that signs with ``key_id``: its current one, or the one it announced
        in a ``station.keys_rotated`` event the county has stored (accepted only from then on).
        Anything else gets the current set, which the envelope check then refuses."""
        keys = self.station_keys(code)          # UnknownStation / RevokedStation
        announced = self.store.meta(f"next_keys:{code}")
        if key_id != keys.sign_id and announced:
            new = PublicKeys.from_dict(json.loads(announced))
            if new.sign_id == key_id:
                return new
        return keys

    def _promote_keys(self, db: Any, code: str, key_id: object) -> None:
        """A push signed with the key the station announced: that key is now its current one; the old
        one stays on record (retired at the rotation event's seq)."""
        announced = self.store.meta(f"next_keys:{code}")
        if not announced:
            return
        new = PublicKeys.from_dict(json.loads(announced))
        if new.sign_id != key_id:
            return
        seq, now = int(self.store.meta(f"next_keys_seq:{code}") or 0), log.utcnow()
        self.store.retire_station_keys(db, code, now, seq, keep=new.sign_id)
        self.store.update_station(db, code, sign_key=new.sign, enc_key=new.enc)
        self.store.set_meta(db, f"next_keys:{code}", "")
        db.execute("INSERT INTO _sync_recoveries (stream, at, what, first, last) VALUES (?, ?, ?, ?, ?)",
                   (log.up(code), now, "keys_rotated", seq, seq))
        logger.warning("station %s now signs with its new key %s (rotated at #%d)", code, new.sign_id, seq)

    def key_history(self, code: str) -> dict[str, str]:
        """Every sign key the station ever had on record, by key id: its old events verify with them."""
        keys = {k["sign_id"]: k["sign_key"] for k in self.store.station_key_history(code)}
        st = self.store.station(code)
        if st and st["sign_key"]:
            keys[PublicKeys(sign=st["sign_key"], enc=st["enc_key"]).sign_id] = st["sign_key"]
        return keys

    # sync ----------------------------------------------------------------------
    def answer(self, blob: bytes) -> bytes:
        from_key = envelope.parse(blob).header.get("from_key")
        with self.store.transaction() as db:
            sealed, summary = exchange.answer_push(db, blob, me=self.me, county_name=self.name,
                                                   station_keys=lambda code: self.station_keys_for(code, from_key),
                                                   apply=self.apply_up_recovering,
                                                   take_back=self.reproject_down, key_history=self.key_history,
                                                   held=list(self.retired.values()), own_keys=self.own_keys(),
                                                   signer=self._signer)
            self._promote_keys(db, summary["station"], from_key)
            now = log.utcnow()
            skew = clock_skew(summary.get("station_time"), now)
            self.store.update_station(db, summary["station"], last_contact=now, clock_skew_s=skew,
                                      up_waiting=summary["up_waiting"])
        if skew is not None and abs(skew) > SKEW_LIMIT_S:
            logger.warning("station %s clock is off by %d s", summary["station"], skew)
        logger.info("sync %s", summary)
        return sealed

    def import_bundle(self, path: Path, answer_to: Path) -> dict[str, Any]:
        """Take a station's USB bundle and write the answer bundle it carries back."""
        answers, stored, stations = [], 0, set()
        pushes = bundle.read(path)
        if pushes.kind != "push":
            raise BadEvent(f"{path} is not a station's push bundle")
        for blob in pushes.envelopes:
            from_key = envelope.parse(blob).header.get("from_key")
            with self.store.transaction() as db:
                sealed, summary = exchange.answer_push(db, blob, me=self.me, county_name=self.name,
                                                       station_keys=lambda code: self.station_keys_for(code, from_key),
                                                       apply=self.apply_up_recovering,
                                                       take_back=self.reproject_down, key_history=self.key_history,
                                                       held=list(self.retired.values()),
                                                       own_keys=self.own_keys(), signer=self._signer)
                self._promote_keys(db, summary["station"], from_key)
            answers.append(sealed)
            stored += summary["stored"]
            stations.add(summary["station"])
        bundle.write(answer_to, answers, kind="answer", in_reply_to=pushes.id)
        return {"stations": sorted(stations), "stored": stored, "answers": len(answers), "answer_file": str(answer_to)}

    # recovery after a restore from an old backup -----------------------------------------------
    def reproject_down(self, db: Any, ev: Event) -> None:
        """Re-project one of the county's own downstream events that a station gave back after the
        county was restored from an old backup: the catalogue version, the decision. A decision on
        a case the county has not got back yet waits for it (``recovery_pending``)."""
        project = projections.DOWN.get(ev.kind)
        if project is None:
            raise ValueError(f"unknown event kind {ev.kind!r}")
        project(self, db, ev)

    def apply_up_recovering(self, db: Any, ev: Event) -> None:
        """``apply_up``, plus the decisions given back before their case came back (a restore)."""
        case_id = ev.body.get("id") if isinstance(ev.body, dict) else None
        if ev.kind == "application.handed_out" and isinstance(case_id, str):
            self._apply_pending(db, case_id)
        self.apply_up(db, ev)
        if ev.kind != "application.handed_out" and isinstance(case_id, str):
            self._apply_pending(db, case_id)

    def _apply_pending(self, db: Any, case_id: str) -> None:
        body = self.store.take_pending_decision(db, case_id)
        case = self.store.case(case_id, db) if body else None
        if body and case:
            projections.decide_case(self, db, case, json.loads(body))

    def apply_up(self, db: Any, ev: Event) -> None:
        """Project one station event into cases (inside the sync transaction).

        A valid signature proves only who wrote the event: every fact is checked again here with
        the station's own rules (sync/rules.py), against the catalogue version it names and the
        station's level, and must name a case its author owns in a state that allows it. A
        broken rule raises rules.RuleError; the inbox sets the event aside with that reason."""
        project = projections.UP.get(ev.kind)
        if project is None:
            raise rules.RuleError(N_("Unknown event kind %(kind)s."), kind=ev.kind)
        facts.spec(ev.kind).validate(ev.body, self._context(db, ev))
        project(self, db, ev)

    def _context(self, db: Any, ev: Event) -> facts.Context:
        """What the station knew: its level, and the catalogue version the body names."""
        version = ev.body.get("catalog_version") if isinstance(ev.body, dict) else None
        catalog = self._catalog_version(db, version) if type(version) is int else None
        st = self.store.station(ev.author)
        return facts.Context(author=ev.author, level=st["level"] if st else None, catalog=catalog)

    def _catalog_version(self, db: Any, version: int) -> dict[str, Any] | None:
        """A published catalogue version (versions never change once published, so they are cached)."""
        if version not in self._catalogs:
            body = self.store.catalog_version(db, version)
            if body is None:
                return None
            self._catalogs[version] = json.loads(body)
        return self._catalogs[version]

    # scans ---------------------------------------------------------------------
    def blob_dir(self, station: str) -> Path:
        return self.settings.data / "blobs" / station

    def scan_request(self, station: str, sha: str, offset: int | str, total: int, signature: str,
                     expires: int, nonce: str) -> None:
        """Check a scan request before any of its body is read: signed by the station, not expired
        and not valid too far ahead, its nonce never seen, a scan the station listed, the length it
        listed, and (for a PATCH) the offset held. A scan already complete on disk is counted first."""
        keys = self.station_keys(station)          # UnknownStation / RevokedStation
        blobs.check_request(keys, station, sha, offset, total, expires, nonce, signature)
        now = time.time()
        if expires < now:
            raise CountyError(401, "expired_request", "the scan request has expired (or the station's clock is off)")
        if expires > now + blobs.MAX_AHEAD_S:
            raise CountyError(401, "expired_request", "the scan request is valid too far ahead")
        with self._blob_lock:
            for seen in [n for n, until in self._nonces.items() if until < now]:
                del self._nonces[seen]
            if nonce in self._nonces:
                raise CountyError(401, "replayed_request", "this scan request was already received")
            self._nonces[nonce] = float(expires)
        size = self.store.scan_size(station, sha)
        if size is None:
            raise CountyError(404, "unknown_scan", "no application of this station lists this scan")
        if total != size + envelope.BLOB_OVERHEAD:
            raise CountyError(400, "bad_length", "Upload-Length does not match the size the application lists")
        self._reconcile(station, sha, total)
        if isinstance(offset, int) and offset != blobs.held(self.blob_dir(station), sha):
            raise blobs.OffsetMismatch(blobs.held(self.blob_dir(station), sha))

    def _reconcile(self, station: str, sha: str, total: int) -> None:
        """A scan counts as received exactly when its file is in place: a whole part file left
        unverified (a crash) is verified now, and a ``.sealed`` file the database does not count yet
        (a failed update after the rename) is counted now."""
        folder = self.blob_dir(station)
        done, part = folder / f"{sha}.sealed", folder / f"{sha}.part"
        with self._blob_lock:
            if not done.exists() and part.exists() and part.stat().st_size == total:
                self._verify_and_complete(folder, sha)
            if done.exists():
                self._count_scan(station, sha)

    def _verify_and_complete(self, folder: Path, sha: str) -> None:
        try:
            envelope.open_blob((folder / f"{sha}.part").read_bytes(), recipient=self.held_identities(),
                               digest=sha)
        except CryptoError as exc:
            blobs.discard(folder, sha)
            raise CountyError(422, "bad_scan", f"the scan does not match its hash: {exc}") from exc
        blobs.complete(folder, sha)

    def _count_scan(self, station: str, sha: str) -> None:
        try:
            with self.store.transaction() as db:
                self.store.mark_scan_received(db, station, sha, log.utcnow())
        except sqlite3.Error as exc:
            # The file is in place and stays: the next HEAD, PATCH or application listing it counts it.
            logger.error("scan %s of %s is stored but could not be counted yet: %s", sha[:12], station, exc)
            raise CountyError(503, "busy", "the scan is stored but not yet recorded; ask again") from exc

    def scan_state(self, station: str, sha: str) -> tuple[int, str]:
        """The bytes held of a scan and whether it is ``verified`` (in place) or ``partial``."""
        folder = self.blob_dir(station)
        state = blobs.VERIFIED if (folder / f"{sha}.sealed").exists() else blobs.PARTIAL
        return blobs.held(folder, sha), state

    def sign_scan_answer(self, station: str, sha: str, offset: int, total: int, state: str, nonce: str) -> str:
        with self.store.lock:
            signer = self._signer(self.store.conn, station)
        return blobs.sign_answer(signer, station, sha, offset, total, state, nonce)

    def scan_offset(self, station: str, sha: str, total: int, signature: str, expires: int,
                    nonce: str) -> tuple[int, str]:
        self.scan_request(station, sha, "head", total, signature, expires, nonce)
        return self.scan_state(station, sha)

    def scan_write(self, station: str, sha: str, offset: int, total: int, chunk: bytes) -> int:
        """Store part of a checked request's body; when the scan is whole, check it decrypts to its
        hash, rename it into place (fsynced), and only then count it in the database."""
        folder = self.blob_dir(station)
        with self._blob_lock:          # one writer of scan files at a time
            new = blobs.append(folder, sha, offset, chunk, total)
            if new == total:
                self._verify_and_complete(folder, sha)
                self._count_scan(station, sha)
        return new

    def scan_bytes(self, case: dict[str, Any], sha: str) -> tuple[bytes, str | None] | None:
        """A received scan's bytes and its type judged from those bytes (``image/jpeg`` or
        ``application/pdf``; None for anything else), whatever the station declared."""
        for scan in self.store.scans_of(case["id"]):
            if scan["sha256"] == sha and scan["received_at"]:
                sealed = (self.blob_dir(case["station"]) / f"{sha}.sealed").read_bytes()
                data = envelope.open_blob(sealed, recipient=self.held_identities(), digest=sha)
                return data, sniff(data)
        return None

    # cases ---------------------------------------------------------------------
    def decide(self, case_id: str, decision: str, note: str, user: dict[str, Any]) -> dict[str, Any]:
        if decision not in DECISIONS:
            raise CountyError(422, "bad_decision", N_("Choose approve, reject or correction."))
        note = note.strip()
        if decision != "approve" and not note:
            raise CountyError(422, "note_required", N_("A rejection or a correction request needs a note for the citizen."))
        if len(note) > 2000:
            raise CountyError(422, "note_too_long", N_("The note is too long."))
        with self.store.transaction() as db:
            case = self.store.case(case_id, db)
            if case is None:
                raise CountyError(404, "not_found", N_("No such case."))
            if not permissions.may_decide(user, case):
                raise CountyError(403, "other_department", N_("This case belongs to another department."))
            if case["status"] != "received":
                raise CountyError(409, "not_open", N_("This case has already been decided."))
            self.record(db, case["station"], facts.Fact(facts.CASE_DECIDED, facts.SPECS[facts.CASE_DECIDED].to_body(
                id=case_id, decision=decision, note=note, by=user["name"], department=case["department"],
                at=log.utcnow())))
            return self.store.case(case_id, db) or {}

    def signed_application(self, case: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The application as the station signed it, and its signature re-verified now with the
        key its ``key`` id names in the station's key history: ``valid``, ``invalid`` or ``missing``.
        A key revoked after the event was stored still verifies it; one revoked before does not."""
        body, signature, _ = self.signed_application_key(case)
        return body, signature

    def signed_application_key(self, case: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
        """``signed_application`` and the key-history entry of the key that signed it (None if unknown)."""
        stream = log.up(case["station"])
        with self.store.lock:
            ev = log.get(self.store.conn, stream, int(case["seq"]))
        history = self.store.station_key_history(case["station"])
        if ev is None or not history:
            return (ev.body if ev else {}), "missing", None
        key = next((k for k in history if k["sign_id"] == ev.key), None)
        if key is None:
            return ev.body, "invalid", None
        try:
            ev.check(key["sign_key"])
        except BadEvent:
            return ev.body, "invalid", key
        stored = self.store.stored_at(stream, ev.seq) or ""
        if key["revoked_at"] and stored >= key["revoked_at"]:
            return ev.body, "invalid", key
        return ev.body, ("valid" if ev.body.get("id") == case["id"] else "invalid"), key

    def signed_case(self, case: dict[str, Any]) -> dict[str, Any]:
        """What the case page and API show: the case row with every column it copies from the
        application replaced by the signed value (when the signature verifies), the signed body,
        the signature's state, the scans, and ``mismatches``: each place where the stored row (or
        its scans) differs from what the station signed. Blocking: call it in a worker thread."""
        body, signature, key = self.signed_application_key(case)
        scans = self.store.scans_of(case["id"])
        mismatches = record_mismatches(case, body, scans) if body else []
        shown = {**case, **signed_columns(body)} if body and signature == "valid" else dict(case)
        return {"case": shown, "body": body, "signature": signature, "scans": scans, "mismatches": mismatches,
                "signed_by": key, "decision_key": self.decision_key(case)}

    def decision_key(self, case: dict[str, Any]) -> dict[str, Any] | None:
        """The county key that signed the case's latest decision (``sign_id``, ``current``) and whether
        that signature verifies now with the county's key history (``valid``); None if undecided."""
        stream = log.down(case["station"])
        with self.store.lock:
            row = self.store.conn.execute(
                "SELECT seq FROM _sync_events WHERE stream = ? AND kind = 'case.decided'"
                " AND json_extract(body, '$.id') = ? ORDER BY seq DESC LIMIT 1", (stream, case["id"])).fetchone()
            ev = log.get(self.store.conn, stream, int(row[0])) if row else None
        if ev is None:
            return None
        try:
            ev.check(self.own_keys())
            valid = True
        except BadEvent:
            valid = False
        return {"sign_id": ev.key, "valid": valid, "current": ev.key == self.me.public.sign_id, "seq": ev.seq}

    # users ---------------------------------------------------------------------
    def add_user(self, username: str, name: str, password: str, role: str, department: str | None) -> str:
        """Add or replace a staff account; return its API token. A clerk needs a department of the
        catalogue; a supervisor has none. Replacing an account ends its sessions."""
        if role not in permissions.ROLES:
            raise CountyError(400, "bad_role", N_("role must be clerk or supervisor"))
        if not username or len(username) > 64 or not username.isprintable() or username != username.strip():
            raise CountyError(400, "bad_username", N_("A user name is 1-64 printable characters."))
        if role == "clerk":
            known = {d["code"] for d in self.catalog().get("departments", [])}
            if department not in known:
                raise CountyError(400, "unknown_department",
                                  N_("A clerk needs the code of a department in the published catalogue."))
        else:
            department = None
        self._check_password(username, password)
        token = passwords.new_token()
        with self.store.transaction() as db:
            self.store.upsert_user(db, {"username": username, "name": name, "password": passwords.hash_password(password),
                                        "token_hash": passwords.token_hash(token), "role": role,
                                        "department": department, "created_at": log.utcnow(),
                                        "session_key": passwords.new_session_key()})
        return token

    @staticmethod
    def _check_password(username: str, password: str) -> None:
        try:
            passwords.check_strength(password, username)
        except passwords.WeakPassword as exc:
            raise CountyError(422, "weak_password", str(exc)) from exc

    def set_password(self, username: str, password: str) -> None:
        """Change a password; every session of the account ends (its API token stays)."""
        self._check_password(username, password)
        hashed = passwords.hash_password(password)
        with self.store.transaction() as db:
            if not self.store.update_user(db, username, password=hashed, session_key=passwords.new_session_key()):
                raise CountyError(404, "unknown_user", N_("No such user."))
        logger.info("password of %s changed; its sessions ended", username)

    def end_sessions(self, username: str) -> None:
        """Log the account out everywhere: every session cookie of it stops working."""
        with self.store.transaction() as db:
            self.store.update_user(db, username, session_key=passwords.new_session_key())

    def login(self, username: str, password: str) -> dict[str, Any] | None:
        """The user (with its ``session_key``) if the password is right; an old kind of hash is
        replaced by an argon2id one on the way."""
        u = self.store.user("username", username)
        ok, rehashed = passwords.verify(password, u.pop("password") if u else None)
        if not ok or u is None:
            return None
        if rehashed or not u["session_key"]:
            u["session_key"] = u["session_key"] or passwords.new_session_key()
            with self.store.transaction() as db:
                self.store.update_user(db, username, session_key=u["session_key"],
                                       **({"password": rehashed} if rehashed else {}))
            logger.info("password hash of %s upgraded to argon2id", username)
        return u

    def session_user(self, username: str) -> dict[str, Any] | None:
        """The account as it is now, for checking a session on each request."""
        u = self.store.user("username", username)
        if u:
            u.pop("password")
        return u

    def user_by_token(self, token: str) -> dict[str, Any] | None:
        u = self.store.user("token_hash", passwords.token_hash(token))
        if u:
            u.pop("password")
            u.pop("session_key")
        return u

