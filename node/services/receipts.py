"""The day's gapless receipt numbers: ``<station>-<YYYYMMDD>-<5 digits>``, shared by receipts,
correction notices, refusals and 办不成事 reports (the numbers: the store's ``receipt_numbers``)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import TYPE_CHECKING

from sync import log
from sync.law import facts
from sync.law.intake import RESTORE_BLOCK

if TYPE_CHECKING:
    from node.services.desk import Desk


def next_number(st: Desk, db: sqlite3.Connection, now: dt.datetime) -> str:
    """One counter per day, raised in the transaction that records the document, so the numbers a
    station issues on a day run 1, 2, 3 … without a gap (an auditor reads a gap as a missing
    receipt). Never reused: the counter is raised past every number of that day our log holds,
    including events the county gave back to a station restored from a backup (PROTOCOL.md §8.5)."""
    day = f"{now:%Y%m%d}"
    prefix = f"{st.code}-{day}-"
    number = st.store.last_receipt(db, log.up(st.code), day, prefix) + 1
    if st.store.meta("restored_at"):
        # Restored from a backup: the lost copy may have issued numbers nobody here knows of.
        # Jump to the next block and put the skipped numbers on record, signed, for the county.
        # A copy that was itself made while marked (``restore_marks`` 2 or more) jumps one block
        # further per mark: the copy it was made from took the next block itself.
        marks = int(st.store.meta("restore_marks") or 1)
        block = (number - 1) // RESTORE_BLOCK * RESTORE_BLOCK + marks * RESTORE_BLOCK + 1
        st.record(db, facts.Fact(facts.RECEIPTS_VOIDED, facts.SPECS[facts.RECEIPTS_VOIDED].to_body(
            day=day, first=number, last=block - 1, at=now.isoformat(timespec="seconds"),
            reason=f"restored from a backup at {st.store.meta('restored_at')}")))
        st.store.delete_meta(db, "restored_at", "restore_marks")
        st.store.set_meta(db, "restore_jumped", now.isoformat(timespec="seconds"))
        number = block
    st.store.set_last_receipt(db, day, number)
    return f"{prefix}{number:05d}"
