"""The county as one facade, on top of its services (central/services/, one module per noun): here
``Settings`` and what the services share and do not own: the one write path ``record``, the county's
own keys and their rotation, the sync answer and USB bundles, scans and staff accounts. Every other
operation is a service function bound to ``County`` by name below. Nothing under central/ but the
web layer (central/http/) and the composition root (central/app.py) imports this module; a
service names what it needs of the county by ``central.services.context.Context``.

Each method is one transaction: a processing fact and the downstream event that carries it
to the station are written together.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from central.errors import CountyError, N_
from central.services import cases, catalogue, permissions, projections, reports, selfcheck, stations
from central.services import retention as county_retention
from central.services import verify as doc_verify
from central.store import Store
from crypto import envelope, passwords
from crypto.errors import CryptoError
from crypto.keys import Identity, load_retired, save_retired
from sync import blobs, bundle, exchange, log
from sync.errors import BadEvent
from sync.law import facts
from sync.log import Event

logger = logging.getLogger("lastmile.central")
SKEW_LIMIT_S = 300


@dataclass(frozen=True, slots=True)
class Settings:
    data: Path
    name: str = "county"
    max_concurrent_syncs: int = 8     # more at once are answered 503 + Retry-After, spread at random
    max_unverified_bytes: int = 64 * 1024 * 1024   # bodies held before their sender is authenticated, all
                                                   # connections together; more: 503 busy_unverified
    calendar_today: dt.date | None = None   # the day the calendar warning counts from (tests); None: today
    selfcheck_first_s: float = 600.0   # the log self-check (central/services/selfcheck.py): first this long after start,
    selfcheck_every_s: float = 6 * 3600.0   # then this often; 0: never in the background

    @property
    def db_path(self) -> Path:
        return self.data / "central.db"

    @property
    def key_dir(self) -> Path:
        return self.data / "keys"


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


def sniff(data: bytes) -> str | None:
    """The type a scan is served as, from its first bytes: JPEG or PDF, nothing else."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:5] == b"%PDF-":
        return "application/pdf"
    return None


def applied_columns(summary: dict[str, Any]) -> dict[str, Any]:
    """The station's row as its push reports it: what it holds of down/<station>, and (a station
    newer than ``applied``, PROTOCOL.md §6) what it has applied of it and of the catalogue."""
    applied = summary.get("applied")
    if applied is None:
        return {"down_have": summary["down_have"]}
    return {"down_have": summary["down_have"], "down_applied": applied["down"],
            "catalog_applied": applied["catalog"], "locked": int(applied["locked"])}


class County:
    """The county: its settings, store and keys, and every service bound to it. Each operation
    below is a function of ``central/services/<noun>.py`` taking the county first (a
    ``central.services.context.Context``); binding it here is what makes ``county.decide(…)``
    read as before. Nothing below this module imports it."""

    # cases: applying station facts, decisions, the signed view of a case (central/services/cases.py)
    reproject_down = cases.reproject_down
    apply_up_recovering = cases.apply_up_recovering
    apply_up = cases.apply_up
    application_body = cases.application_body
    decide = cases.decide
    signed_application = cases.signed_application
    signed_application_key = cases.signed_application_key
    life = cases.life
    signed_case = cases.signed_case
    decision_key = cases.decision_key
    # the catalogue (central/services/catalogue.py)
    publish_catalog = catalogue.publish_catalog
    catalog = catalogue.catalog
    # stations: registering, enrolling, revoking, their keys (central/services/stations.py)
    add_station = stations.add_station
    enrolment_info = stations.enrolment_info
    enroll = stations.enroll
    mark_restored = stations.mark_restored
    restore_mark = stations.restore_mark
    may_return = stations.may_return
    revoke = stations.revoke
    station_keys = stations.station_keys
    station_keys_for = stations.station_keys_for
    key_history = stations.key_history
    # 办不成事 (central/services/reports.py)
    take_report = reports.take_report
    answer_report = reports.answer_report

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
        self.catalogs: dict[int, dict[str, Any]] = {}     # published catalogue versions, by version
        # The county's clock for the retention period of what it gives back (tests move it on).
        self.now: Any = lambda: dt.datetime.now(dt.timezone.utc)
        doc_verify.publish_now(self)    # once after an upgrade (or a change made offline): every station's keys

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

    def self_check(self, stop: threading.Event | None = None) -> dict[str, Any] | None:
        """Walk every log the county holds (central/services/selfcheck.py); the result, stored. Blocking."""
        return selfcheck.run(self.store, self.own_keys(), self.key_history, stop)

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

    # sync ----------------------------------------------------------------------
    def answer(self, blob: bytes) -> bytes:
        from_key = envelope.parse(blob).header.get("from_key")
        with self.store.transaction() as db:
            sealed, summary = exchange.answer_push(db, blob, me=self.me, county_name=self.name,
                                                   station_keys=lambda code: self.station_keys_for(code, from_key),
                                                   apply=self.apply_up_recovering,
                                                   take_back=self.reproject_down, key_history=self.key_history,
                                                   held=list(self.retired.values()), own_keys=self.own_keys(),
                                                   signer=self._signer, take_qr=self.take_qr_texts,
                                                   may_return=self.may_return, redact_up=self.as_returned)
            stations.promote_keys(self, db, summary["station"], from_key)
            now = log.utcnow()
            skew = clock_skew(summary.get("station_time"), now)
            self.store.update_station(db, summary["station"], last_contact=now, clock_skew_s=skew,
                                      up_waiting=summary["up_waiting"], **applied_columns(summary))
        if skew is not None and abs(skew) > SKEW_LIMIT_S:
            logger.warning("station %s clock is off by %d s", summary["station"], skew)
        moved = any(summary.get(k) for k in ("stored", "duplicates", "qr_texts", "forks", "repairs", "sent_down",
                                              "gap_at", "taken_back", "diverged_at", "up_returned", "up_refused",
                                              "down_refused"))
        logger.log(logging.INFO if moved else logging.DEBUG, "sync %s", summary)   # idle: every few seconds
        return sealed

    def as_returned(self, db: Any, ev: Event) -> Event:
        """A station's own event as ``up_return`` carries it: a purged case's as its stub (central/services/retention.py)."""
        return county_retention.as_returned(self, db, ev)

    def take_qr_texts(self, db: Any, station: str, entries: list[tuple[int, str, str]]) -> int:
        """The QR texts a push carries beside its events (central/verify.take_qr_texts)."""
        return doc_verify.take_qr_texts(self, db, station, entries)

    def import_bundle(self, path: Path, answer_to: Path) -> dict[str, Any]:
        """Take a station's USB bundle and write the answer bundle it carries back."""
        answers, stored, senders = [], 0, set()
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
                                                       own_keys=self.own_keys(), signer=self._signer, take_qr=self.take_qr_texts,
                                                       may_return=self.may_return, redact_up=self.as_returned)
                stations.promote_keys(self, db, summary["station"], from_key)
                if summary["applied"] is not None:
                    self.store.update_station(db, summary["station"], **applied_columns(summary))
            answers.append(sealed)
            stored += summary["stored"]
            senders.add(summary["station"])
        bundle.write(answer_to, answers, kind="answer", in_reply_to=pushes.id)
        return {"stations": sorted(senders), "stored": stored, "answers": len(answers), "answer_file": str(answer_to)}

    # scans ---------------------------------------------------------------------
    def blob_dir(self, station: str) -> Path:
        return self.settings.data / "blobs" / station

    def fresh_nonce(self, nonce: str, expires: int, now: float) -> bool:
        """Record a signed request's nonce (central.db, until it expires); False if seen before. A
        database too busy to record it is ``503 busy`` (the station asks again), never a 500."""
        try:
            return self.store.use_nonce(nonce, expires, now)
        except sqlite3.Error as exc:
            logger.warning("request nonce not recorded, database busy: %s", exc)
            raise CountyError(503, "busy", "the county's database is busy; ask again") from exc

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
        if not self.fresh_nonce(nonce, expires, now):
            raise CountyError(401, "replayed_request", "this scan request was already received")
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

