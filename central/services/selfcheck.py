"""The county's log self-check: every stream it holds walked from its first event to its last
(sync/chain.py), so a log edited on disk is flagged by the county itself, not only when a station
next syncs (issue 15, item 13).

``up/<station>`` is checked with the station's whole key history, ``down/<station>`` with the
county's own keys, current and retired. An ``up`` stream may hold redacted stubs (a station that
purged events a restored county had lost sends them so, PROTOCOL.md §8.7); a ``down`` stream may
not. The head each stream reached when it was last found whole is kept (``selfcheck_heads``), so a
deleted last event is flagged too; a stream the county took records back into since (a county
restore, ``_sync_recoveries``) is judged against its new head only.

Runs in the background every ``Settings.selfcheck_every_s`` (central/app.py), by ``lastmile
central check``, and by a supervisor's button (``POST /api/v1/selfcheck``). It reads on a
read-only connection, one snapshot per stream, so no push or clerk waits for it; it writes only
its result (``meta.selfcheck``) and the heads, in one short transaction. Blocking: a thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable, Mapping

from central.store import Store
from sync import chain, log

logger = logging.getLogger("lastmile.central")
META = "selfcheck"
SHOWN = 100             # problems kept in the result; ``problem_count`` has them all


def run(store: Store, own_keys: Mapping[str, str], key_history: Callable[[str], Mapping[str, str]],
        stop: threading.Event | None = None) -> dict[str, Any] | None:
    """Walk every stream; store and return the result (None if ``stop`` was set first)."""
    started, at = time.monotonic(), log.utcnow()
    result: dict[str, Any] = {"at": at, "streams": 0, "events": 0, "redacted": 0, "problems": [], "problem_count": 0}
    whole: list[tuple[str, int, str, str]] = []
    with store.reading() as db:
        heads, recovered, names = store.selfcheck_heads(db), store.last_recovery(db), store.stream_names(db)
    for stream in names:
        if stop is not None and stop.is_set():
            return None
        side, _, code = stream.partition("/")
        keys = own_keys if side == "down" else key_history(code)
        held = heads.get(stream)
        seen = chain.Checkpoint(*held) if held and recovered.get(stream, "") <= held[2] else None
        with store.reading() as db:
            walked = chain.walk(stream, chain.rows(db, stream), keys, redacted_ok=lambda seq: side == "up", seen=seen)
        result["streams"] += 1
        result["events"] += walked.events
        result["redacted"] += walked.redacted
        result["problem_count"] += len(walked.problems)
        result["problems"] += walked.problems[:SHOWN - len(result["problems"])]
        if not walked.problems and walked.events:
            whole.append((stream, walked.head, walked.head_hash, at))
    result["seconds"] = round(time.monotonic() - started, 3)
    with store.transaction() as db:
        store.save_selfcheck(db, whole, json.dumps(result, ensure_ascii=False))
    if result["problem_count"]:
        for p in result["problems"][:20]:
            logger.error("log self-check: %s", chain.describe(p))
        logger.error("log self-check: %d problems in %d streams (%d events) — see the stations page",
                     result["problem_count"], result["streams"], result["events"])
    else:
        logger.info("log self-check: %d streams, %d events, links and signatures whole (%.1f s)",
                    result["streams"], result["events"], result["seconds"])
    return result


def last(store: Store) -> dict[str, Any] | None:
    """The result of the last check, or None before the first."""
    raw = store.meta(META)
    return json.loads(raw) if raw else None


class Every(threading.Thread):
    """``check()`` ``first_s`` after start, then every ``every_s``, until ``stop`` is set; a failing
    check is logged and tried again at the next turn."""

    def __init__(self, check: Callable[[threading.Event], Any], first_s: float, every_s: float) -> None:
        super().__init__(name="lastmile-selfcheck", daemon=True)
        self.check, self.first_s, self.every_s, self.stop = check, first_s, every_s, threading.Event()

    def run(self) -> None:
        wait = self.first_s
        while not self.stop.wait(wait):
            try:
                self.check(self.stop)
            except Exception:  # noqa: BLE001 - the next turn tries again; a closed store ends it
                if self.stop.is_set():
                    return
                logger.exception("log self-check failed")
            wait = self.every_s
