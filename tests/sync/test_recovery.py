"""Recovery: answers bound to their pushes, reports kept until confirmed, a county restored from an
old backup, a station restored or replaced. Real SQLite files, real servers on loopback."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from central.app import create_app as central_app
from central.county import County, Settings as CentralSettings
from node.station import Settings as NodeSettings, Station
from sync import bundle, exchange, log, recovery
from sync.errors import StaleAnswer
from tests.conftest import serve
from tests.sync.test_protocol_machine import form_for, make_pair


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[County, Station, Path]]:
    county, station = make_pair(tmp_path)
    round_trip(county, station)                      # the first contact brings the catalogue
    yield county, station, tmp_path
    county.store.close()
    station.store.close()


def take(st: Station, n: int) -> list[dict]:
    out = []
    for i in range(n):
        item = st.items()[i % len(st.items())]
        out.append(st.take(item["code"], form_for(item, i), "accept", "代办员"))
    return out


def round_trip(county: County, st: Station, *, take_answer: bool = True, limit: int = 500) -> bytes:
    """One exchange, as over the network: push, the county answers, the station takes it."""
    with st.store.transaction() as db:
        push = exchange.build_push(db, me=st.me, station=st.code, county=st.county.keys, county_name=st.county.name,
                                   limit=limit)
    sealed = county.answer(push.blob)
    if take_answer:
        with st.store.transaction() as db:
            exchange.apply_answer(db, sealed, me=st.me, station=st.code, county=st.county.keys,
                                  county_name=st.county.name, apply=st.apply_down, fresh=True)
    return sealed


def acked(st: Station) -> int:
    with st.store.transaction() as db:
        return log.acked(db, log.up(st.code))


def reopen(st: Station) -> Station:
    st.store.close()
    return Station(NodeSettings(data=st.settings.data))


# 1. answers are bound to their pushes ------------------------------------------------------------

def test_a_replayed_old_answer_neither_rewinds_the_cursor_nor_sets_the_clock(pair):
    county, st, root = pair
    take(st, 1)
    old = round_trip(county, st)                      # an attacker on the link records this answer
    take(st, 2)
    with serve(central_app(county.settings)) as url:
        st.county = replace(st.county, url=url)
        st.sync()
    assert acked(st) == 3
    skew_before = st.store.sync_status("clock_skew_s")
    time.sleep(2.2)                                    # the recorded answer's clock is now 2 s old

    async def replay(request):                         # ... and plays it back to every later push
        await request.body()
        return Response(old, media_type="application/octet-stream")

    with serve(Starlette(routes=[Route("/sync/v1/exchange", replay, methods=["POST"])])) as url:
        st.county = replace(st.county, url=url)
        with pytest.raises(StaleAnswer):
            st.sync()
    assert acked(st) == 3, "a replayed answer moved the cursor back"
    assert st.store.sync_status("clock_skew_s") == skew_before
    assert st.sync_state()["last_error_code"] == "stale_answer"


def test_an_old_answer_is_refused_as_fresh_and_applied_without_rewinding_as_old(pair):
    county, st, _ = pair
    take(st, 1)
    old = round_trip(county, st)
    take(st, 2)
    round_trip(county, st)
    kw = dict(me=st.me, station=st.code, county=st.county.keys, county_name=st.county.name, apply=st.apply_down)
    with st.store.transaction() as db:
        with pytest.raises(StaleAnswer):
            exchange.apply_answer(db, old, fresh=True, **kw)
    with st.store.transaction() as db:
        got = exchange.apply_answer(db, old, **kw)     # a known push, answered late: safe, never rewinds
    assert got.server_time is None
    assert acked(st) == 3


def test_an_answer_to_a_push_never_sent_is_refused(pair):
    county, st, root = pair
    take(st, 1)
    # A second installation of the same station (same keys) sends a push this one never sent.
    shutil.copytree(st.settings.data, root / "twin")
    twin = Station(NodeSettings(data=root / "twin"))
    try:
        foreign = round_trip(county, twin, take_answer=False)
    finally:
        twin.store.close()
    with st.store.transaction() as db:
        with pytest.raises(StaleAnswer):
            exchange.apply_answer(db, foreign, me=st.me, station=st.code, county=st.county.keys,
                                  county_name=st.county.name, apply=st.apply_down)
    assert acked(st) == 0


def test_an_answer_file_to_an_export_made_after_the_backup_is_refused(pair):
    county, st, root = pair
    take(st, 2)
    st.store.close()
    shutil.copytree(st.settings.data, root / "backup")          # the nightly backup
    st = Station(NodeSettings(data=st.settings.data))
    st.export(root / "a.bundle")
    county.import_bundle(root / "a.bundle", root / "a.answer")
    st.store.close()
    shutil.rmtree(st.settings.data)
    shutil.copytree(root / "backup", st.settings.data)          # the disk died: restore the backup
    st = Station(NodeSettings(data=st.settings.data))
    try:
        with pytest.raises(StaleAnswer, match="never exported"):
            st.import_answers(root / "a.answer")
        assert acked(st) == 0
    finally:
        st.store.close()


def test_an_answer_file_to_an_old_export_is_applied_without_rewinding(pair):
    county, st, root = pair
    take(st, 1)
    st.export(root / "a.bundle")
    county.import_bundle(root / "a.bundle", root / "a.answer")
    take(st, 2)
    round_trip(county, st)
    assert acked(st) == 3
    st.import_answers(root / "a.answer")
    assert acked(st) == 3
    assert bundle.read(root / "a.answer").in_reply_to == bundle.read(root / "a.bundle").id


def test_an_answer_file_whose_header_names_another_export_is_refused(pair):
    county, st, root = pair
    take(st, 1)
    st.export(root / "a.bundle")
    st.export(root / "b.bundle")
    county.import_bundle(root / "a.bundle", root / "a.answer")
    a = bundle.read(root / "a.answer")
    bundle.write(root / "forged.answer", a.envelopes, kind="answer", in_reply_to=bundle.read(root / "b.bundle").id)
    with pytest.raises(StaleAnswer):
        st.import_answers(root / "forged.answer")
    assert acked(st) == 0


# 2. reports are kept until the station confirms them ---------------------------------------------

def poison(st: Station) -> int:
    """An upstream event the county stores but cannot process (a kind it does not know)."""
    with st.store.transaction() as db:
        return log.append(db, st.me, stream=log.up(st.code), author=st.code, kind="application.unheard_of",
                          body={"id": "x"}).seq


def test_a_repair_reported_in_a_lost_answer_is_reported_again_until_confirmed(pair):
    county, st, _ = pair
    take(st, 1)
    seq = poison(st)
    round_trip(county, st, take_answer=False)          # the answer that reported it is lost
    assert st.sync_state()["reported"] == []
    round_trip(county, st)                             # a later answer still reports it
    assert [r["seq"] for r in st.sync_state()["reported"]] == [seq]
    with county.store.transaction() as db:
        assert (seq, "repair") not in recovery.confirmed(db, "up/S1")
    round_trip(county, st)                             # this push confirms it
    with county.store.transaction() as db:
        assert (seq, "repair") in recovery.confirmed(db, "up/S1")
        assert recovery.open_reports(db, "up/S1") == ([], [])
    round_trip(county, st)
    assert [r["seq"] for r in st.sync_state()["reported"]] == [seq]   # the station keeps showing it


def test_a_fork_reported_in_a_lost_answer_is_reported_again(pair):
    county, st, root = pair
    st.store.close()
    shutil.copytree(st.settings.data, root / "twin")
    st = Station(NodeSettings(data=st.settings.data))
    twin = Station(NodeSettings(data=root / "twin"))
    try:
        take(twin, 1)
        round_trip(county, twin)                       # the twin's seq 1 reaches the county first
        take(st, 1)
        round_trip(county, st, take_answer=False)      # ours is a fork; the answer saying so is lost
        round_trip(county, st, limit=0)                # after a cut the station first asks (a pull)
        reported = st.sync_state()["reported"]
        assert [r["seq"] for r in reported] == [1] and "fork" in reported[0]["reason"]
    finally:
        twin.store.close()
        st.store.close()


# 3. a county restored from an old backup gets back what stations hold ---------------------------

CLERK = {"name": "科员", "role": "supervisor", "department": None}


def copy_db(src: Path, dst: Path) -> None:
    """Copy a stopped party's data directory: the database with its -wal/-shm, keys, blobs."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)


def sync_until_quiet(st: Station, url: str) -> None:
    st.county = replace(st.county, url=url)
    for _ in range(10):
        st.sync()
        state = st.sync_state()
        if not state["up_waiting"] and not st.store.sync_status("down_return_from"):
            return
    raise AssertionError(f"sync did not settle: {st.sync_state()}")


def stream(conn, name: str) -> list[tuple[int, str]]:
    return [(int(r[0]), r[1]) for r in conn.execute(
        "SELECT seq, hash FROM _sync_events WHERE stream = ? ORDER BY seq", (name,)).fetchall()]


def test_a_county_restored_from_an_old_backup_gets_everything_back_by_itself(pair):
    county, st, root = pair
    csettings = county.settings
    county.store.close()
    copy_db(csettings.data, root / "county-backup")          # last night's backup: catalogue only
    county = County(csettings)
    first, second = take(st, 2)
    with serve(central_app(csettings)) as url:
        sync_until_quiet(st, url)
        county.decide(first["id"], "approve", "", CLERK)
        sync_until_quiet(st, url)
        assert st.hand_out(first["id"], "代办员")
        sync_until_quiet(st, url)
    county.store.close()
    before_down = stream(st.store.conn, "down/S1")
    copy_db(root / "county-backup", csettings.data)          # the county's disk died: restore the backup
    county = County(csettings)
    assert county.store.case(first["id"]) is None
    with serve(central_app(csettings)) as url:
        sync_until_quiet(st, url)                            # no cursor_ahead: the station gives it all back
    county.store.close()
    county = County(csettings)
    try:
        assert stream(county.store.conn, "up/S1") == stream(st.store.conn, "up/S1")
        assert stream(county.store.conn, "down/S1") == before_down == stream(st.store.conn, "down/S1")
        case = county.store.case(first["id"])
        assert case["status"] == "handed_out" and case["decision"] == "approve"
        assert county.store.case(second["id"])["status"] == "received"
        for conn in (county.store.conn, st.store.conn):
            assert conn.execute("SELECT count(*) FROM _sync_repairs").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM _sync_forks").fetchone()[0] == 0
        assert [r["what"] for r in county.store.recoveries()] == ["down_returned"]
    finally:
        county.store.close()


# 6. the county moved ------------------------------------------------------------------------------

def test_set_central_changes_the_county_address_and_refuses_a_bad_one(pair):
    import subprocess
    import sys
    county, st, _ = pair
    data = str(st.settings.data)
    st.store.close()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "deploy.cli", "node", *args], capture_output=True, text=True,
                              timeout=60)
    bad = cli("set-central", "ftp://county.example", "--data", data)
    assert bad.returncode == 2 and "not an http:// or https:// address" in bad.stderr
    again = Station(NodeSettings(data=st.settings.data))
    take(again, 1)
    again.store.close()
    with serve(central_app(county.settings)) as url:
        done = cli("set-central", url + "/", "--data", data)
        assert done.returncode == 0, done.stderr
        moved = Station(NodeSettings(data=st.settings.data))
        try:
            assert moved.county.url == url
            moved.sync()
            assert moved.sync_state()["up_waiting"] == 0
        finally:
            moved.store.close()


# 4. a receipt number never names two applications --------------------------------------------------

def test_a_station_restored_from_a_backup_never_reissues_a_receipt_number(pair):
    county, st, root = pair
    take(st, 1)
    st.store.close()
    copy_db(st.settings.data, root / "station-backup")
    st = Station(NodeSettings(data=st.settings.data))
    lost = take(st, 2)                                   # given to citizens, then the disk dies
    st.store.close()
    copy_db(root / "station-backup", st.settings.data)
    st = Station(NodeSettings(data=st.settings.data))
    try:
        again = take(st, 2)                              # the restored station goes on taking applications
        issued = [a["receipt_no"] for a in lost + again]
        assert len(set(issued)) == 4, issued
        assert all(r.startswith("S1-") and len(r.split("-")[2]) == 8 for r in issued)
        assert [a["receipt_no"] for a in again] == sorted(a["receipt_no"] for a in again)
    finally:
        st.store.close()
