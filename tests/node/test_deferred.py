"""The county's events that reach a locked station are applied at the unlock (issue 14).

A station restarted at night (a power cut) is locked until an agent logs in, and still syncs: what
the county sends is stored sealed and waits (``vault_deferred``). At the unlock it must all be
applied, in order, exactly as a station that was never locked applies it; and every later event
must be applied too. A fault here is invisible at the counter (the sync "succeeds") and costs the
citizen the result, so each test compares the station with its *twin*: a copy of the same station,
same keys and data, that syncs the same county events unlocked.

Real parts: a real county on loopback, real station data folders, the real Station.sync.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import pytest

from central.services import calendar, ratings as county_ratings, retention as county_retention, verify as county_verify
from central.app import create_app as central_app
from central.county import County
from node.services import ratings as station_ratings
from node.services import reports as station_reports
from node.settings import Settings as NodeSettings
from node.station import Station
from sync import log
from sync.law import facts, reports
from node.app import create_app as node_app
from tests.conftest import CATALOG, PASSWORD, add_station, log_in, make_county, serve
from tests.sync.test_protocol_machine import form_for

CLERK = {"username": "keyuan", "name": "科员", "role": "supervisor", "department": None}
#: every kind the county sends a station (node/services/projections.py DOWN), each made below
DOWN_KINDS = {facts.CASE_DECIDED, facts.CATALOG_PUBLISHED, facts.CALENDAR_PUBLISHED, "retention.set",
              reports.TAKEN, reports.ANSWERED, facts.RATING_ANSWERED, facts.STATIONS_DIRECTORY,
              facts.COUNTY_KEYS_ROTATED}
#: tables that are projections of the two logs (what a citizen's case, report and rating show, and
#: the catalogue, calendar, retention period and directory in force)
PROJECTED = ("applications", "reports", "ratings", "receipt_numbers", "retention_redacted", "retention_purged")


# The twin is a copy and knows it (node/store.py file_identity): which file it is and its restore mark
# are not what the station shows.
COPY_MARKS = {"db_file", "restored_at", "restore_marks", "restore_jumped"}


def test_every_downstream_kind_is_covered() -> None:
    from node.services import projections
    assert set(projections.DOWN) == DOWN_KINDS


@contextlib.contextmanager
def county_and_station(root: Path, tokens: dict[str, str] | None = None
                       ) -> Iterator[tuple[County, str, NodeSettings, str]]:
    """A real county on loopback (its app's own County: what the test decides, the server serves)
    and one enrolled village station with an agent's token; ``tokens`` gets the county's staff tokens."""
    central, made = make_county(root / "central")
    if tokens is not None:
        tokens.update(made)
    app = central_app(central)
    with serve(app) as url:
        settings, token = add_station(central, url, root / "V1", "V1", "village")
        yield app.state.county, url, settings, token


def opened(settings: NodeSettings, token: str | None) -> Station:
    """The station after a restart; unlocked by the agent's token if given (as its first API call)."""
    st = Station(settings)
    assert st.store.vault.locked
    if token is not None:
        assert st.store.user_by_token(token) is not None and not st.store.vault.locked
    return st


def projections(st: Station) -> dict[str, Any]:
    """What the station shows, read through its store (values decrypted)."""
    out: dict[str, Any] = {}
    with st.store.lock:
        c = st.store.conn
        for table in PROJECTED:
            out[table] = sorted(tuple(map(str, r)) for r in c.execute(f"SELECT * FROM {table}").fetchall())
        out["meta"] = sorted((r[0], r[1]) for r in c.execute("SELECT name, value FROM meta").fetchall()
                             if not str(r[0]).startswith("vault") and r[0] not in COPY_MARKS)
    return out


def deferred(st: Station) -> int:
    with st.store.lock:
        return int(st.store.conn.execute("SELECT count(*) FROM vault_deferred").fetchone()[0])


def prepare(county: County, settings: NodeSettings, token: str, n: int) -> dict[str, list[str]]:
    """n cases to decide, n approved and handed-out cases rated 1 (a follow-up to answer), 2n reports."""
    st = opened(settings, token)
    try:
        st.sync()
        items = [i for i in st.items() if i["code"].startswith("MZ")]
        cases = [st.take(items[i % len(items)]["code"], form_for(items[i % len(items)], i), "accept", "代办员")["id"]
                 for i in range(2 * n)]
        made = [station_reports.file(st, {"name": f"群众{i}", "phone": "13800000000", "tried": "办证",
                                          "where": "县大厅", "contact": "13800000000"}, "代办员")["id"]
                for i in range(2 * n)]
        st.sync()
        for case in cases[n:]:
            county.decide(case, "approve", "予以批准", CLERK)
        st.sync()
        for case in cases[n:]:
            st.hand_out(case, "代办员")
            station_ratings.rate(st, case, 1, "太慢", "代办员")
        st.sync()
        return {"decide": cases[:n], "rated": cases[n:], "reports": made}
    finally:
        st.store.close()


def county_acts(county: County, made: dict[str, list[str]], n: int) -> None:
    """n events of every kind the county sends, interleaved, as a working day at the county makes them."""
    for i in range(n):
        county.decide(made["decide"][i], "approve" if i % 2 else "reject", "依规办理", CLERK,
                      **({} if i % 2 else {"reason": "收入超过标准", "basis": "《社会救助暂行办法》第九条"}))
        county_ratings.answer(county, made["rated"][i], f"已整改{i}", CLERK)
        county.take_report(made["reports"][i], CLERK)
        county.answer_report(made["reports"][n + i], f"答复{i}", CLERK)
        county.publish_catalog(CATALOG)
        calendar.publish(county, 2030, [f"2030-01-0{1 + i % 3}"], [], "boss")
        county_retention.publish(county, 1000 + i, "boss")
        with county.store.transaction() as db:      # as the first start after an upgrade does
            db.execute("DELETE FROM meta WHERE name = ?", (county_verify.META,))
            county_verify.publish(county, db)
        county.rotate_keys()


@pytest.mark.parametrize("n", [1, 2, 50])
def test_county_events_deferred_while_locked_are_all_applied_at_the_unlock(tmp_path: Path, n: int) -> None:
    with county_and_station(tmp_path) as (county, url, settings, token):
        made = prepare(county, settings, token, n)
        twin = NodeSettings(data=tmp_path / "twin", sync_interval=3600)
        shutil.copytree(settings.data, twin.data)       # the same station, never to be locked
        with sqlite3.connect(county.settings.data / "central.db") as raw:
            before = raw.execute("SELECT max(seq) FROM _sync_events WHERE stream = ?", (log.down("V1"),)).fetchone()[0]
        county_acts(county, made, n)
        with sqlite3.connect(county.settings.data / "central.db") as raw:
            sent = dict(raw.execute("SELECT kind, count(*) FROM _sync_events WHERE stream = ? AND seq > ?"
                                    " GROUP BY kind", (log.down("V1"), before)).fetchall())
        assert set(sent) == DOWN_KINDS and all(v >= n for v in sent.values()), sent

        st = opened(settings, None)             # restarted at night: locked
        try:
            got = st.sync()
            # All wait but the county's key rotations, which hold no personal data and are taken at once.
            waiting = got.received - sent[facts.COUNTY_KEYS_ROTATED]
            assert got.received == sum(sent.values()) and deferred(st) == waiting
            state = st.sync_state()
            assert state["locked"] and not state["stalled"] and state["down_deferred"] == waiting
            assert state["down_applied"] == before
            # The first agent logs in (here: the agent's token, as a script's first call would).
            assert st.store.user_by_token(token) is not None
            assert deferred(st) == 0
            st.sync()
            state = st.sync_state()
            assert not state["stalled"] and state["down_applied"] == state["down_received"] == before + got.received
            assert state["catalog_version"] == 1 + n
            shown = {a["id"]: a for a in st.store.db["applications"].rows}
            assert all(shown[c]["status"] in ("approved", "rejected") for c in made["decide"])
            assert [station_ratings.rating_of(st, c)["answer"] for c in made["rated"]] == [
                f"已整改{i}" for i in range(n)]
            locked_view = projections(st)
        finally:
            st.store.close()

        other = opened(twin, token)
        try:
            # The twin is a copy of V1's disk, behind what V1 confirmed: the county sends it the same
            # events again only under a restore mark (PROTOCOL.md §8.5), as an installer would set.
            county.mark_restored("V1", "test: the twin is a copy of V1")
            other.sync()
            assert projections(other) == locked_view
        finally:
            other.store.close()

        # A later decision, after the unlock, is applied at once too (issue 14: it queued behind).
        later = opened(settings, token)
        try:
            county.publish_catalog(CATALOG)
            later.sync()
            assert later.sync_state()["catalog_version"] == 2 + n and deferred(later) == 0
        finally:
            later.store.close()


def test_the_county_sees_what_each_station_applied_and_a_locked_one_stands_out(tmp_path: Path, http) -> None:
    tokens: dict[str, str] = {}
    with county_and_station(tmp_path, tokens) as (county, url, settings, token):
        made = prepare(county, settings, token, 1)
        boss = http(url, tokens["supervisor"])

        def row() -> dict[str, Any]:
            return next(s for s in boss.get("/api/v1/stations").json()["stations"] if s["code"] == "V1")

        seen = row()
        assert (seen["down_applied"], seen["catalog_applied"], seen["catalog_latest"], seen["not_applying"]) == (
            seen["down_have"], 1, 1, None)
        county.decide(made["decide"][0], "approve", "", CLERK)
        county.publish_catalog(CATALOG)
        st = opened(settings, None)                     # restarted, nobody logged in yet
        try:
            st.sync()
            st.sync()                                   # its next push says what it holds and applied
            seen = row()
            assert seen["locked"] and seen["not_applying"] == "locked"
            assert seen["down_applied"] == seen["down_have"] - 2 and seen["catalog_applied"] == 1
            page = http(url, follow_redirects=True)
            from tests.conftest import csrf_of
            page.post("/login", data={"username": "boss", "password": PASSWORD, "csrf": csrf_of(page)})
            text = page.get("/stations").text
            assert "站点锁定中，等待代办员登录" in text and "最新：v2" in text
            assert st.store.user_by_token(token) is not None     # an agent logs in
            st.sync()
            seen = row()
            assert not seen["locked"] and seen["not_applying"] is None
            assert (seen["down_applied"], seen["catalog_applied"]) == (seen["down_have"], 2)
        finally:
            st.store.close()


def test_a_station_whose_county_has_no_catalogue_says_it_cannot_take_applications(tmp_path: Path, http) -> None:
    """An installer enrolled the station before the county published its catalogue: the sync works,
    and the station must not look healthy: its page and status say why nothing can be taken."""
    from central.county import Settings as CentralSettings
    central = CentralSettings(data=tmp_path / "central")
    County.init(central)
    with serve(central_app(central)) as url:
        settings, token = add_station(central, url, tmp_path / "V1", "V1", "village")
        with serve(node_app(settings, background_sync=False)) as node_url:
            node = http(node_url, token)
            assert node.post("/api/v1/sync").status_code == 200
            sync = node.get("/api/v1/status").json()["sync"]
            assert sync["last_contact"] and not sync["last_error"]
            assert (sync["stalled"], sync["stall_reason"], sync["catalog_version"]) == (True, "no_catalogue", 0)
            page, _ = log_in(http, node_url, "agent")
            home = page.get("/").text
            assert "本站还没有收到事项目录，因此无法受理申请" in home and "同步完成" not in home


def test_county_events_still_waiting_after_the_unlock_are_a_stall(tmp_path: Path) -> None:
    """The state a station was in before the fix (issue 14): unlocked, county events still waiting.
    Whatever causes it, the station must call it a stall, not a finished sync."""
    from node.station import stall_reason
    with county_and_station(tmp_path) as (county, url, settings, token):
        made = prepare(county, settings, token, 1)
        county.decide(made["decide"][0], "approve", "", CLERK)
        st = opened(settings, None)
        try:
            st.sync()
            state = st.sync_state()
            assert state["down_deferred"] == 1 and stall_reason(state) is None        # locked: waiting, not stuck
            assert stall_reason({**state, "locked": False}) == "not_applied"
        finally:
            st.store.close()
