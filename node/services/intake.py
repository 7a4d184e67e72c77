"""The station's counter work on a case, mixed into Station: taking an application (and completing
one a correction notice left waiting), the day's gapless receipt numbers, recording a supplement
after the county's correction request, handing out a result, and a case's clock. Each is one
transaction that records a fact through ``Station.record`` (the one write path)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from typing import TYPE_CHECKING, Any, Callable

from node.services import sittings as bundles
from node.services import cases
from node.services import life
from node.services import projections
from node.services.scans import Scan
from sync import log
from sync.law import facts, workdays
from sync.law.errors import RuleError
from sync.law.intake import RESTORE_BLOCK, check_collector
from sync.law.transitions import Status

if TYPE_CHECKING:
    from node.store import Store


class Intake:
    """Mixed into Station (node/station.py)."""
    store: Store
    code: str
    level: str

    def take(self, item_code: str, form: dict[str, Any], decision: str, agent: str,
             attached: list[Scan] | tuple[Scan, ...] = (),
             within: Callable[[sqlite3.Connection, str], None] | None = None,
             case_id: str | None = None) -> dict[str, Any]:
        """Record the agent's decision on an application; raises cases.IntakeError with field errors.
        ``within(db, app_id)``, if given, runs last in the transaction that records it (node/services/idem.py
        remembers the submission's key there); whatever it raises undoes the whole intake.
        ``case_id``: complete the case a correction notice left waiting for the citizen (一次性告知):
        the same case, its earlier scans kept, a new receipt number, the time limit from now.

        Scans are sealed to the county and written to disk (fsync) before the transaction that
        records the application, whose signed body lists each scan's hash and size."""
        item = self.item(item_code)
        if item is None:
            raise cases.IntakeError({"item": cases.N_("This service item is not in the station's catalogue.")})
        materials = {m["code"] for m in item["materials"]}
        if any(s.material not in materials for s in attached):
            raise cases.IntakeError({"scans": cases.N_("A scan is attached to a material this item does not ask for.")})
        listed = [{"sha256": s.sha256, "size": len(s.data), "name": s.name, "mime": s.mime, "material": s.material}
                  for s in attached]
        sealed = {s.sha256: self._seal_scan(s) for s in attached}
        now = self.now()
        with self.store.transaction() as db:
            earlier: list[dict[str, Any]] = []
            if case_id is not None:
                earlier = self._waiting_case(db, case_id, item_code)
                listed = earlier + [s for s in listed if s["sha256"] not in {e["sha256"] for e in earlier}]
            receipt_no = self._receipt_no(db, now)
            intake = cases.take(item, form, decision=decision, station=self.code, agent=agent,
                                catalog_version=int(self.store.catalog()["version"]), now=now,
                                receipt_no=receipt_no, level=self.level, case_id=case_id,
                                calendar=workdays.calendar_from(db))
            if case_id is not None:     # a case of a sitting (一件事一次办) stays linked when completed
                intake = bundles.carried(self.store, case_id, intake)
            body = {**intake.body, "scans": listed} if listed else intake.body
            # The scans themselves were checked at intake (node/services/scans.py); the body is checked as before.
            self.record(db, facts.Fact(intake.kind, body), check=facts.Fact(intake.kind, intake.body))
            for scan in listed:
                self.store.db["scans"].insert({**scan, "app_id": body["id"], "sealed_size": sealed.get(
                    scan["sha256"], 0), "sent": 0, "done": 0, "created_at": now.isoformat()}, ignore=True)
            if within is not None:
                within(db, body["id"])
        return self.store.application(intake.body["id"]) or {}

    def life(self, app: dict[str, Any]) -> dict[str, Any]:
        """The case's time limit, correction list and collector (node/services/life.py), by the station's clock."""
        return life.life(app, self.now().date(), self.calendar())

    def _waiting_case(self, db: sqlite3.Connection, case_id: str, item_code: str) -> list[dict[str, Any]]:
        """The scans of a case waiting for the citizen after our correction notice; IntakeError if
        the case is not one."""
        row = db.execute("SELECT status, item_code, body FROM applications WHERE id = ?", (case_id,)).fetchone()
        if row is None:
            raise cases.IntakeError({"application": cases.N_("No such application at this station.")})
        if row[0] != Status.CORRECTION_NOTICE or row[1] != item_code:
            raise cases.IntakeError({"application": cases.N_(
                "This case is not waiting for the citizen to complete it.")})
        return list(json.loads(row[2]).get("scans", []))

    def calendar(self) -> workdays.WorkCalendar:
        """The working days this station counts: the county's published years, then the library."""
        with self.store.lock:
            return workdays.calendar_from(self.store.conn)

    def _receipt_no(self, db: sqlite3.Connection, now: dt.datetime) -> str:
        """``<station>-<YYYYMMDD>-<5 digits>``: one counter per day, raised in the transaction that
        records the document, so the numbers a station issues on a day run 1, 2, 3 … without a gap
        (an auditor reads a gap as a missing receipt). Receipts, correction notices and refusals share
        the series. Never reused: the counter is raised past every number of that day our log holds,
        including events the county gave back to a station restored from a backup (PROTOCOL.md §8.5)."""
        day = f"{now:%Y%m%d}"
        prefix = f"{self.code}-{day}-"
        row = db.execute("SELECT last FROM receipt_numbers WHERE day = ?", (day,)).fetchone()
        in_log = db.execute(
            "SELECT max(CAST(substr(json_extract(body, '$.receipt_no'), ?) AS INTEGER)) FROM _sync_events"
            " WHERE stream = ? AND json_extract(body, '$.receipt_no') LIKE ?",
            (len(prefix) + 1, log.up(self.code), prefix + "%")).fetchone()[0]
        in_rows = db.execute("SELECT max(CAST(substr(receipt_no, ?) AS INTEGER)) FROM applications"
                             " WHERE receipt_no LIKE ?", (len(prefix) + 1, prefix + "%")).fetchone()[0]
        number = max(row[0] if row else 0, in_log or 0, in_rows or 0) + 1
        if self.store.meta("restored_at"):
            # Restored from a backup: the lost copy may have issued numbers nobody here knows of.
            # Jump to the next block and put the skipped numbers on record, signed, for the county.
            # A copy that was itself made while marked (``restore_marks`` 2 or more) jumps one block
            # further per mark: the copy it was made from took the next block itself.
            marks = int(self.store.meta("restore_marks") or 1)
            block = (number - 1) // RESTORE_BLOCK * RESTORE_BLOCK + marks * RESTORE_BLOCK + 1
            self.record(db, facts.Fact(facts.RECEIPTS_VOIDED, facts.SPECS[facts.RECEIPTS_VOIDED].to_body(
                day=day, first=number, last=block - 1, at=now.isoformat(timespec="seconds"),
                reason=f"restored from a backup at {self.store.meta('restored_at')}")))
            db.execute("DELETE FROM meta WHERE name IN ('restored_at', 'restore_marks')")
            self.store.set_meta(db, "restore_jumped", now.isoformat(timespec="seconds"))
            number = block
        db.execute("INSERT INTO receipt_numbers (day, last) VALUES (?, ?)"
                   " ON CONFLICT (day) DO UPDATE SET last = excluded.last", (day, number))
        return f"{prefix}{number:05d}"


    def hand_out(self, app_id: str, by: str, collector: dict[str, str] | None = None,
                 identity_checked: bool = True) -> dict[str, Any]:
        """Record who collected a decided case's result (统一窗口出件): the applicant, or a proxy
        (``collector``: name, ID number, relation). cases.IntakeError if the transition table
        forbids it or the collector's details are wrong."""
        with self.store.transaction() as db:
            row = db.execute("SELECT status FROM applications WHERE id = ?", (app_id,)).fetchone()
            if row is None:
                raise cases.IntakeError({"application": cases.N_("No such application at this station.")})
            if not projections.may_hand_out(row[0]):
                raise cases.IntakeError({"application": cases.N_(
                    "This result cannot be handed out (not decided yet, or already handed out).")})
            if not identity_checked:
                raise cases.IntakeError({"identity_checked": cases.N_(
                    "Check the identity document of the person who collects, then tick the box.")})
            values: dict[str, Any] = {"id": app_id, "by": by, "at": self.now().isoformat(timespec="seconds"),
                                      "identity_checked": True}
            if collector is not None:
                values["collector"] = {k: str(collector.get(k, "")).strip() for k in ("name", "id_number", "relation")}
                values["collector"]["id_number"] = values["collector"]["id_number"].upper()
                try:
                    check_collector(values["collector"])
                except RuleError as exc:
                    raise cases.IntakeError({"collector": exc.message}) from exc
            self.record(db, facts.Fact(facts.HAND_OUT, facts.SPECS[facts.HAND_OUT].to_body(**values)))
        return self.store.application(app_id) or {}

    def supplement(self, app_id: str, materials: list[str], attached: list[Scan] | tuple[Scan, ...],
                   note: str, by: str) -> dict[str, Any]:
        """Record what the citizen brought after the county asked for corrections (补正): the same
        case goes up again as a supplement and its time limit resumes. cases.IntakeError if the
        case is not waiting for one or the supplement is empty."""
        app = self.store.application(app_id)
        if app is None:
            raise cases.IntakeError({"application": cases.N_("No such application at this station.")})
        item = facts.case_item(app["body"]) or {"materials": []}
        codes = {m["code"] for m in item["materials"]}
        if any(m not in codes for m in materials) or any(s.material not in codes for s in attached):
            raise cases.IntakeError({"materials": cases.N_("The supplement lists a material this item does not ask for.")})
        listed = [{"sha256": s.sha256, "size": len(s.data), "name": s.name, "mime": s.mime, "material": s.material}
                  for s in attached]
        sealed = {s.sha256: self._seal_scan(s) for s in attached}
        now = self.now()
        body: dict[str, Any] = {"id": app_id, "by": by, "at": now.isoformat(timespec="seconds"),
                                "materials": list(dict.fromkeys(materials)), "note": note.strip()}
        if listed:
            body["scans"] = listed
        with self.store.transaction() as db:
            row = db.execute("SELECT status FROM applications WHERE id = ?", (app_id,)).fetchone()
            if row is None or row[0] != Status.CORRECTION_REQUESTED:
                raise cases.IntakeError({"application": cases.N_("This case is not waiting for a supplement.")})
            try:
                ev = self.record(db, facts.Fact(facts.SUPPLEMENTED, body))
            except RuleError as exc:
                raise cases.IntakeError({"materials": exc.message}) from exc
            for scan in listed:
                self.store.db["scans"].insert({**scan, "app_id": app_id, "sealed_size": sealed[scan["sha256"]],
                                               "sent": 0, "done": 0, "created_at": now.isoformat(), "seq": ev.seq},
                                              ignore=True)
        return self.store.application(app_id) or {}

