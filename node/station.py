"""The station's services: intake, hand-out and sync, each one transaction over store and log."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import httpx

from crypto import envelope
from crypto.errors import CryptoError
from crypto.keys import Identity, PublicKeys, private_dir
from node import vault
from node.services import documents, healing, intake as counter, life, projections, retention
from node.services import verify as doc_verify
from node.services.scans import Scan
from node.settings import Settings
from node.store import Store
from sync import blobs, bundle, client, docs, exchange, inbox, log
from sync.errors import StaleAnswer, SyncError
from sync.law import facts, intake, workdays
from sync.log import Event

logger = logging.getLogger("lastmile.node")
CHINA = dt.timezone(dt.timedelta(hours=8))
#: how long a station pushes without an optional field (``qr_texts``, ``applied``) after its county
#: refused it (an older county, PROTOCOL.md §6)
NEWER_FIELD_RETRY_S = 24 * 3600
#: the county's events stored while the station was locked, to apply at the unlock (Station.apply_deferred)
DEFERRED_SCHEMA = "CREATE TABLE IF NOT EXISTS vault_deferred (stream TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (stream, seq))"


def _names_field(message: str, name: str) -> bool:
    """Whether a county's ``bad_event`` refusal is about the push field ``name`` (an older county
    names an unknown one in "unknown fields: a, b", a newer one a malformed one as 'name')."""
    unknown = re.search(r"unknown fields: ([\w, ]+)", message)
    return f"'{name}'" in message or (unknown is not None and name in unknown.group(1).replace(" ", "").split(","))


def stall_reason(state: dict[str, Any]) -> str | None:
    """Why the sync does not do its work although the county answers, or None (``sync.stall_reason``
    of ``GET /api/v1/status``, shown on the page):

    - ``not_applied``: unlocked, yet county events that came while locked still wait to be applied;
    - ``no_catalogue``: the county has answered, and the station still holds no catalogue to accept from;
    - ``not_confirmed``: the county answers but has confirmed none of the waiting items for minutes.

    - ``restore_not_marked``: the station is behind the county's copy of its own log, or holds less
      of the county's events than it once confirmed, and the county gives them back only once it has
      marked the station restored (PROTOCOL.md §8.5, the answer's ``up_refused`` or
      ``down_refused``); until then the station's new facts (own log) or the county's decisions wait.

    A locked station waiting for the unlock is not stalled (``locked``, ``down_deferred`` say it)."""
    if state.get("up_refused"):
        return "restore_not_marked"
    if state["down_deferred"] and not state["locked"]:
        return "not_applied"
    if state["last_contact"] and not state["catalog_version"] and not state["down_deferred"]:
        return "no_catalogue"
    if state["stalled"]:
        return "not_confirmed"
    return None


class NotEnrolled(Exception):
    pass


class Station:
    """The facade the web layer and the CLI hold: the store, the keys and the county, and the one
    write path (``record``); it is the ``Desk`` (node/services/desk.py) it hands its services.
    Sync, key rotation and USB bundles are here; the counter's work is node/services/intake.py,
    self-heal node/services/healing.py."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or Store(settings.db_path)
        if not self.store.meta("station_code"):
            raise NotEnrolled(f"{settings.data} holds no enrolled station; run `lastmile node init` first")
        if not settings.key_dir.exists() and (settings.data / "keys.new").exists():
            os.replace(settings.data / "keys.new", settings.key_dir)    # a key switch cut short (rotate_keys)
        self.me = Identity.load(settings.key_dir)
        self.code = str(self.store.meta("station_code"))
        self.name = str(self.store.meta("station_name"))
        self.level = str(self.store.meta("station_level"))
        self.enrolled_county = self.store.county_keys()
        with self.store.transaction() as db:
            exchange.add_county_keys(db, self.enrolled_county, 1)    # enrolled before the key history: seed it
        self._county_url_read = str(self.store.meta("county_url"))    # to notice a later set-central
        self.county = client.Peer(url=self._county_url_read, name=str(self.store.meta("county_name")),
                                  keys=self._county_keys())
        self._sync_lock = threading.Lock()
        with self.store.transaction() as db:
            db.execute(DEFERRED_SCHEMA)
        self.store.vault.on_unlock.append(self.apply_deferred)     # what came down while locked
        self.http_options: dict[str, Any] = {}     # extra httpx.Client options (event hooks in the benchmark)

    # intake ----------------------------------------------------------------
    def items(self) -> list[dict[str, Any]]:
        return [i for i in self.store.catalog()["items"] if self.level in i.get("levels", [])]

    def item(self, code: str) -> dict[str, Any] | None:
        return next((i for i in self.store.catalog()["items"] if i["code"] == code), None)

    def department_names(self) -> dict[str, dict[str, str]]:
        return {d["code"]: d for d in self.store.catalog().get("departments", [])}

    def now(self) -> dt.datetime:
        """China time for receipts and promised dates. A station clock found more than 5 minutes off
        at the last contact (a dead CMOS battery, a wrong time zone) is corrected by that offset,
        so a wrong clock does not move a citizen's promised date."""
        skew = int(self.store.sync_status("clock_skew_s") or 0)
        now = dt.datetime.now(CHINA)
        return now - dt.timedelta(seconds=skew) if abs(skew) > client.SKEW_LIMIT_S else now

    def calendar(self) -> workdays.WorkCalendar:
        """The working days this station counts: the county's published years, then the library."""
        with self.store.lock:
            return workdays.calendar_from(self.store.conn)

    def life(self, app: dict[str, Any]) -> dict[str, Any]:
        """The case's time limit, correction list and collector (node/services/life.py), by the station's clock."""
        return life.life(app, self.now().date(), self.calendar())

    def take(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """node/services/intake.py ``take``."""
        return counter.take(self, *args, **kwargs)

    def hand_out(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """node/services/intake.py ``hand_out``."""
        return counter.hand_out(self, *args, **kwargs)

    def supplement(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """node/services/intake.py ``supplement``."""
        return counter.supplement(self, *args, **kwargs)

    def heal_hooks(self) -> exchange.HealHooks:
        return healing.hooks(self)

    def mark_received(self, db: sqlite3.Connection, ack: int) -> None:
        self.store.mark_received(db, ack)

    @property
    def blob_dir(self) -> Path:
        return self.settings.data / "blobs"

    def seal_scan(self, scan: Scan) -> int:
        """Write the scan sealed to the county (unreadable at the station); return its sealed size.
        The file and its directory entry are fsynced before the application that lists it is
        recorded."""
        path = self.blob_dir / f"{scan.sha256}.sealed"
        if not path.exists():                   # 0700 folder, 0600 file, fsynced with its directory entry
            docs.write_file(path, envelope.seal_blob(scan.data, recipient=self.county.keys, digest=scan.sha256))
        return path.stat().st_size

    def upload_scans(self, http: httpx.Client) -> int:
        """Send the scans of applications the county already holds; resume where it stopped.

        A scan is done only when the county's signed answer says it is verified. A scan the county
        refuses (4xx) keeps its error (``scans_failed`` in the sync state) and the next one goes on;
        only a link failure stops the pass."""
        with self.store.transaction() as db:
            acked = log.acked(db, log.up(self.code))
            budget = client.link_budget(db, floor=blobs.MIN_CHUNK, ceiling=blobs.MAX_CHUNK)
            chunk = min(int(log.get_status(db, "chunk_size") or blobs.START_CHUNK), budget)
        skew = int(self.store.sync_status("clock_skew_s") or 0)       # our clock minus the county's

        def county_clock() -> float:
            return time.time() - skew

        sent = 0
        for pending in self.store.pending_scans(acked):
            sha = pending["sha256"]

            def progress(offset: int, next_chunk: int, bps: int | None) -> None:
                nonlocal chunk
                chunk = next_chunk
                self.store.scan_progress(sha, offset, False)
                with self.store.transaction() as db:
                    log.set_status(db, "chunk_size", str(next_chunk))
                    if bps and next_chunk >= 32 * 1024:      # small chunks measure the round trip, not the link
                        log.set_status(db, "link_bps", str(bps))

            sealed = (self.blob_dir / f"{sha}.sealed").read_bytes()
            try:
                offset, verified = blobs.upload(http, self.county.url, me=self.me, county=self.county.keys,
                                                station=self.code, sha=sha, sealed=sealed, chunk=chunk,
                                                max_chunk=budget, progress=progress, clock=county_clock)
            except blobs.ScanRefused as exc:
                logger.warning("scan %s refused by the county: %s", sha[:12], exc)
                with self.store.transaction() as db:
                    log.set_status(db, f"{blobs.SCAN_ERROR}{sha}", f"{exc.code}: {exc}"[:500])
                continue
            self.store.scan_progress(sha, offset, verified)
            with self.store.transaction() as db:
                if log.get_status(db, f"{blobs.SCAN_ERROR}{sha}"):
                    log.set_status(db, f"{blobs.SCAN_ERROR}{sha}", "")
            sent += verified
        return sent

    # the one write path --------------------------------------------------------
    def record(self, db: sqlite3.Connection, fact: facts.Fact, *, check: facts.Fact | None = None) -> Event:
        """Validate a fact by the shared spec (the county checks it again on arrival with the same
        code), append it to our upstream log and project it, inside the caller's transaction.
        ``check``: the form of the fact to validate when it differs (an application before its
        scan list is added: scans are checked at intake, and their list again at the county)."""
        if fact.spec.author != facts.STATION:
            raise ValueError(f"{fact.kind} is not a station's fact")
        item = None
        if fact.kind == facts.SUPPLEMENTED:
            row = db.execute("SELECT body FROM applications WHERE id = ?", (fact.body.get("id"),)).fetchone()
            item = facts.case_item(json.loads(row[0])) if row else None
        (check or fact).validate(facts.Context(author=self.code, level=self.level, catalog=self.store.catalog(),
                                               item=item))
        ev = log.append(db, self.me, stream=log.up(self.code), author=self.code, kind=fact.kind, body=fact.body)
        projections.UP[fact.kind](self.store, db, ev)
        return ev

    def qr_texts(self, events: Sequence[Event]) -> dict[int, str]:
        """What a push carries beside its events (``qr_texts``, PROTOCOL.md §6): the QR text this
        station prints for each document event of the push, so the county can give it."""
        return doc_verify.qr_texts(self, events)

    # downstream ------------------------------------------------------------
    def apply_down(self, db: sqlite3.Connection, ev: Event) -> None:
        """Apply one county event to the station's projections (called inside the sync transaction).

        While the station is locked (node/vault.py) the event is stored (sealed to the vault's public
        key) but its projection needs the cases' personal data: it is deferred, in order, until the
        unlock (``apply_deferred``); so is every later one while some wait."""
        if self.store.vault.locked or db.execute("SELECT 1 FROM vault_deferred LIMIT 1").fetchone():
            db.execute("INSERT OR IGNORE INTO vault_deferred (stream, seq) VALUES (?, ?)", (ev.stream, ev.seq))
            return
        self._project_down(db, ev)

    def _project_down(self, db: sqlite3.Connection, ev: Event) -> None:
        """The projection of one county event, with nothing waiting before it."""
        project = projections.DOWN.get(ev.kind)
        if project is None:
            raise ValueError(f"unknown event kind {ev.kind!r}")
        project(self.store, db, ev)

    def apply_deferred(self) -> int:
        """Unlocked: apply the county's events that came down while locked, oldest first, each as
        the sync would have (one that breaks a rule is set aside for repair and reported to the
        county at the next sync). The number applied."""
        if self.store.vault.locked:
            return 0
        done = 0
        with self.store.transaction() as db:
            for stream, seq in db.execute("SELECT stream, seq FROM vault_deferred ORDER BY seq").fetchall():
                db.execute("DELETE FROM vault_deferred WHERE stream = ? AND seq = ?", (stream, seq))
                ev = log.get(db, stream, seq)
                if ev is None:
                    continue
                db.execute("SAVEPOINT lastmile_deferred")
                try:
                    self._project_down(db, ev)      # not apply_down: it would queue it behind the rest
                    done += 1
                except Exception as exc:  # noqa: BLE001 - as sync/inbox.py: set aside, never block
                    db.execute("ROLLBACK TO SAVEPOINT lastmile_deferred")
                    logger.error("event %s#%d set aside for repair at the unlock: %s", stream, seq, exc)
                    db.execute("INSERT INTO _sync_repairs (stream, seq, reason, at) VALUES (?, ?, ?, ?)",
                               (stream, seq, inbox.repair_reason(exc)[:1000], log.utcnow()))
                db.execute("RELEASE SAVEPOINT lastmile_deferred")
        if done:
            logger.info("applied %d county event(s) that came while the station was locked", done)
        return done

    @property
    def address(self) -> str:
        """Where citizens find the station, printed on its documents (``lastmile node set-info``)."""
        return str(self.store.meta("station_address") or "")

    @property
    def phone(self) -> str:
        return str(self.store.meta("station_phone") or "")

    def contact(self) -> dict[str, str]:
        """The address and phone the documents print (reads the database: call it in a worker thread)."""
        return {"address": self.address, "phone": self.phone}

    def set_info(self, address: str | None = None, phone: str | None = None) -> None:
        """Set the station's address and phone for its documents; a phone must be well-formed."""
        if phone and not intake.PHONE.match(phone.strip()):
            raise ValueError("the phone is not an 11-digit mobile number or a landline with area code")
        if address is not None and len(address.strip()) > 200:
            raise ValueError("the address is longer than 200 characters")
        with self.store.transaction() as db:
            if address is not None:
                self.store.set_meta(db, "station_address", address.strip())
            if phone is not None:
                self.store.set_meta(db, "station_phone", phone.strip())

    def sync(self) -> client.SyncResult:
        """Events first (the county sees the case at once), then the scans it lists."""
        if self.store.vault_refresh() and not self.store.vault.can_seal:
            raise vault.Locked("the station is locked until an agent logs in: sync waits for the unlock")
        if not self._sync_lock.acquire(timeout=2 * self.settings.http_timeout):
            raise client.LinkDown("another sync is still running")
        try:
            return self._sync()
        finally:
            self._sync_lock.release()
            self.purge_due()

    def purge_due(self) -> None:
        """The retention purge (node/services/retention.py), at most once an hour (a purge that removes
        something vacuums the file), whatever the link does; a failure is logged and tried again
        next time, never raised into the sync loop."""
        if time.monotonic() < getattr(self, "_next_purge", 0.0) or self.store.vault.locked:
            return
        self._next_purge = time.monotonic() + 3600
        try:
            retention.purge(self)
        except (sqlite3.Error, OSError, ValueError) as exc:
            logger.error("retention purge failed, tried again later: %s", exc)

    # key rotation (PROTOCOL.md §10) -------------------------------------------------------------
    def _county_keys(self) -> PublicKeys:
        """The county's newest X25519 key we hold (pushes and scans are sealed to it) and the sign key
        it signed its last answer with (scan answers are checked with it)."""
        with self.store.lock:
            return exchange.county_signing(self.store.conn, self.enrolled_county)

    def _refresh_county(self) -> None:
        """The county with its newest keys, and at a new address if `lastmile node set-central`
        changed it in the database while this node was running (an address set on this object
        alone, such as a test's proxy, stays until then)."""
        url = self.county.url
        in_db = str(self.store.meta("county_url") or "")
        if in_db and in_db != self._county_url_read:
            self._county_url_read = url = in_db
        self.county = client.Peer(url=url, name=self.county.name, keys=self._county_keys())

    def decision_keys(self) -> dict[str, str]:
        """Application id -> the id of the county key that signed its latest decision (verified by
        that key when it came), for the pages."""
        return self.store.decision_keys(log.down(self.code))

    def decision_key(self, app_id: str) -> str | None:
        """The id of the county key that signed the application's latest decision, or None."""
        return self.store.decision_key(log.down(self.code), app_id)

    def county_key_history(self) -> list[dict[str, Any]]:
        """The county's key sets this station holds, oldest first (shown on the sync page)."""
        with self.store.lock:
            return exchange.county_keys(self.store.conn, self.enrolled_county)

    def rotate_keys(self) -> dict[str, Any]:
        """Make new keys and announce them in ``station.keys_rotated`` (signed by the current key). The
        station keeps signing with the old key until the county has stored that event (its ack covers
        it); the next sync then switches (``_switch_keys``). Raises ValueError if one is pending."""
        nxt = self.settings.key_dir / "next"
        with self.store.transaction() as db:
            if log.get_status(db, "rotation_seq"):
                raise ValueError("a key rotation is already waiting for the county to store it; sync first")
            if nxt.exists():
                shutil.rmtree(nxt)            # left by a rotation cut short before its event was written
            new = Identity.generate()
            new.save(nxt)
            ev = self.record(db, facts.Fact(facts.STATION_KEYS_ROTATED, new.public.to_dict()))
        logger.warning("new station keys %s announced at #%d; used once the county has stored it",
                       new.public.sign_id, ev.seq)
        return {"seq": ev.seq, "old_key": self.me.public.sign_id, "new_key": new.public.sign_id}

    def _switch_keys(self) -> bool:
        """Once the county's ack covers our ``station.keys_rotated``, sign and receive with the new
        keys. The old private keys move to ``keys.retired/<key id>/``."""
        with self.store.transaction() as db:
            seq = log.get_status(db, "rotation_seq")
            if not seq or log.acked(db, log.up(self.code)) < int(seq):
                return False
        kd, data = self.settings.key_dir, self.settings.data
        if (kd / "next").exists():
            retired = data / "keys.retired" / self.me.public.sign_id
            private_dir(retired.parent)
            staged = data / "keys.new"
            if staged.exists():
                shutil.rmtree(staged)
            shutil.copytree(kd / "next", staged)
            os.replace(kd, retired)
            os.replace(staged, kd)
            shutil.rmtree(retired / "next")
        old, self.me = self.me.public.sign_id, Identity.load(kd)
        with self.store.transaction() as db:
            log.set_status(db, "rotation_seq", "")
        logger.warning("station keys switched from %s to %s", old, self.me.public.sign_id)
        return True

    def _sync(self) -> client.SyncResult:
        """One sync. Locked (node/vault.py), it is a receiving one: it sends none of our facts (their
        bodies cannot be read), stores what the county sends (sealed to the vault's public key, applied
        at the unlock), and sends the scans already sealed to the county; the decisions' documents
        wait, since which ones are due depends on the applied decisions."""
        locked = self.store.vault.locked
        if not locked:
            self.apply_deferred()
        self._switch_keys()
        self._refresh_county()
        with httpx.Client(timeout=self.settings.http_timeout, **self.http_options) as http:
            offered = self._push_extras()

            def once() -> client.SyncResult:
                return client.sync_once(self.store.transaction, http, me=self.me, station=self.code,
                                        county=self.county, apply=self.apply_down, on_ack=self.mark_received,
                                        hooks=self.heal_hooks(), send=not locked, **offered)
            while True:
                try:
                    result = once()
                    break
                except client.Rejected as exc:
                    refused = [f for f in offered if exc.code == "bad_event" and _names_field(str(exc), f)]
                    if not refused:
                        raise
                    # A county older than a field refuses every push that carries it (PROTOCOL.md §6):
                    # push without it, and offer it again a day later (the county may be upgraded by then).
                    logger.warning("the county does not take %s in a push yet (%s); sending without for a day",
                                   ", ".join(refused), exc)
                    with self.store.transaction() as db:
                        for name in refused:
                            log.set_status(db, f"{name}_refused_at", str(time.time()))
                            del offered[name]
            self._refresh_county()          # a county.keys_rotated just stored: seal to its new key
            fetched = 0
            try:
                result.scans = self.upload_scans(http)
                if not self.store.vault.locked:
                    self.apply_deferred()                   # unlocked during this sync
                    fetched = documents.fetch_pending(self, http)   # the decisions' result documents, resumably
            except (SyncError, CryptoError) as exc:
                with self.store.transaction() as db:
                    log.set_status(db, "last_error", f"scans: {exc}"[:500])
                    log.set_status(db, "last_error_code", getattr(exc, "code", "error"))
                raise
            if self.store.meta("restore_jumped") and not self.store.recovery_state(log.up(self.code))["healing"]:
                with self.store.transaction() as db:    # healed: a restore found later is a new one
                    db.execute("DELETE FROM meta WHERE name = 'restore_jumped'")
            # INFO only when something moved: the loop syncs every few seconds, and an idle sync
            # logged at INFO buries everything else (a failure is logged by the loop, as a warning)
            moved = result.sent or result.acked or result.received or result.scans or fetched
            logger.log(logging.INFO if moved else logging.DEBUG,
                       "sync: %d event(s) sent, %d confirmed, %d received, %d scan(s), %d document(s)",
                       result.sent, result.acked, result.received, result.scans, fetched)
            return result

    def applied(self, db: sqlite3.Connection) -> dict[str, Any]:
        """How far this station has applied what the county sent (a push's ``applied``, PROTOCOL.md
        §6): every ``down/<station>`` event up to ``down`` is applied or set aside for repair, those
        after it wait for the unlock (``vault_deferred``); ``catalog`` is the catalogue version in force."""
        first_waiting = db.execute("SELECT min(seq) FROM vault_deferred").fetchone()[0]
        down = first_waiting - 1 if first_waiting else log.head(db, log.down(self.code))[0]
        return {"down": down, "catalog": int(self.store.catalog().get("version") or 0),
                "locked": self.store.vault.locked}

    def _push_extras(self) -> dict[str, Any]:
        """The optional fields a push carries beside its events (``sync_once``'s ``qr_texts`` and
        ``applied``), less those the county refused in the last day (an older county)."""
        extras: dict[str, Any] = {"qr_texts": self.qr_texts, "applied": self.applied}
        for name in list(extras):
            refused = self.store.sync_status(f"{name}_refused_at")
            if refused and time.time() - float(refused) < NEWER_FIELD_RETRY_S:
                del extras[name]
        return extras

    def export(self, to: Path) -> dict[str, Any]:
        """Write every upstream event the county has not confirmed to a bundle file (USB stick).

        Always includes at least one envelope, so the answer also brings down what waits for us."""
        self._switch_keys()
        self._refresh_county()          # sealed to the county's newest key we hold (§10)
        envelopes, after, bundle_id = [], None, bundle.new_id()
        with self.store.transaction() as db:
            while True:
                push = exchange.build_push(db, me=self.me, station=self.code, county=self.county.keys,
                                           county_name=self.county.name, after=after, bundle=bundle_id,
                                           **self._push_extras())
                if push.last == 0 and envelopes:
                    db.execute("DELETE FROM _sync_sent WHERE id = ?", (push.id,))
                    break
                envelopes.append(push.blob)
                if push.last == 0:
                    break
                after = push.last
        size = bundle.write(to, envelopes, kind="push", bundle_id=bundle_id)
        return {"envelopes": len(envelopes), "events": after or 0, "bytes": size, "file": str(to),
                "bundle": bundle_id}

    def import_answers(self, path: Path) -> dict[str, Any]:
        """Apply an answer bundle written by `lastmile central import`, in any order with network syncs."""
        acked = received = 0
        answers = bundle.read(path)
        if answers.kind != "answer" or answers.in_reply_to is None:
            raise StaleAnswer(f"{path} is not an answer bundle")
        with self.store.transaction() as db:
            if exchange.sent_bundle(db, answers.in_reply_to) is None:
                raise StaleAnswer(f"{path} answers bundle {answers.in_reply_to}, which this station never exported"
                                  " (exported before a restore, or by another station?); export again")
        for blob in answers.envelopes:
            with self.store.transaction() as db:
                got = exchange.apply_answer(db, blob, me=self.me, station=self.code, county=self.county.keys,
                                            county_name=self.county.name, apply=self.apply_down,
                                            bundle=answers.in_reply_to, hooks=self.heal_hooks())
                self.mark_received(db, log.acked(db, log.up(self.code)))
            acked += got.acked
            received += got.received
        self._refresh_county()
        return {"acked": acked, "received": received, "state": self.sync_state()}

    def set_central(self, url: str) -> str:
        """Change the county's address (it moved; same county, same keys); return the old one.
        Raises ValueError for anything but an http(s) URL with a host."""
        parsed = httpx.URL(url) if isinstance(url, str) and url.strip() == url and url else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host or parsed.query \
                or parsed.fragment:
            raise ValueError(f"{url!r} is not an http:// or https:// address of the county centre")
        before = str(self.store.meta("county_url"))
        with self.store.transaction() as db:
            self.store.set_meta(db, "county_url", url.rstrip("/"))
        self._county_url_read = url.rstrip("/")
        self.county = client.Peer(url=url.rstrip("/"), name=self.county.name, keys=self.county.keys)
        logger.warning("county address changed from %s to %s", before, url)
        return before

    def sync_state(self) -> dict[str, Any]:
        state = self.store.sync_state(log.up(self.code), log.down(self.code))
        state.update(self.store.recovery_state(log.up(self.code)))
        # Locked, the decisions cannot be read: which documents are due waits for the unlock.
        state["docs_waiting"] = [] if self.store.vault.locked else documents.waiting(self)
        with self.store.lock:
            applied = self.applied(self.store.conn)
            deferred = self.store.conn.execute("SELECT count(*) FROM vault_deferred").fetchone()[0]
        state.update(down_applied=applied["down"], down_deferred=deferred, catalog_version=applied["catalog"],
                     locked=applied["locked"])
        state["up_refused"] = self.store.sync_status(exchange.UP_REFUSED) or None
        state["stall_reason"] = stall_reason(state)
        state["stalled"] = state["stall_reason"] is not None
        return state

    def sync_loop(self) -> client.SyncLoop:
        return client.SyncLoop(self.sync, self.settings.sync_interval)
