"""Put a station's backup back in place (``lastmile node restore``).

A backup is a copy of the data folder: ``node.db`` (with ``-wal``/``-shm`` if it was copied while
stopped), ``keys/``, ``blobs/``. Whatever the station did after that copy is lost on this disk: the
county gives back what it holds of it at the next sync (PROTOCOL.md §8.5), but receipt numbers it
handed to citizens and never synced are known to nobody. So the restored database is marked: its
first receipt number jumps to the next block, and the numbers skipped are put on record in a
signed ``station.receipts_voided`` fact (ARCHITECTURE.md, receipt numbers).
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from node.store import Store
from sync import log


class RestoreError(Exception):
    pass


def restore(backup: Path, data: Path, *, replace: bool = False) -> Path | None:
    """Copy ``backup`` to ``data`` and mark it restored. A ``data`` folder in the way is refused,
    or with ``replace`` moved aside (returned) so nothing is deleted. Stop the node first."""
    if not (backup / "node.db").is_file() or not (backup / "keys").is_dir():
        raise RestoreError(f"{backup} is not a station backup: it needs node.db and keys/")
    moved = None
    if data.exists() and any(data.iterdir()):
        if not replace:
            raise RestoreError(f"{data} is not empty; stop the node and pass --replace to move it aside")
        moved = data.with_name(f"{data.name}.replaced-{dt.datetime.now():%Y%m%d-%H%M%S}")
        data.rename(moved)
    elif data.exists():
        data.rmdir()
    shutil.copytree(backup, data)
    mark_restored(data)
    return moved


def mark_restored(data: Path) -> None:
    """Mark ``data``'s database as put back from a backup (a copy, or a Litestream replica, which is
    seconds to minutes behind): its next receipt number starts a new block of 1000."""
    store = Store(data / "node.db")
    try:
        with store.transaction() as db:
            store.set_meta(db, "restored_at", log.utcnow())
    finally:
        store.close()
