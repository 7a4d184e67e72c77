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
from node.services import verify as doc_verify
from node.settings import Settings as NodeSettings
from node.station import Station
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
                                   limit=limit, qr_texts=st.qr_texts)
    sealed = county.answer(push.blob)
    if take_answer:
        with st.store.transaction() as db:
            exchange.apply_answer(db, sealed, me=st.me, station=st.code, county=st.county.keys,
                                  county_name=st.county.name, apply=st.apply_down, fresh=True,
                                  hooks=st.heal_hooks())
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


def test_a_twin_that_wrote_other_events_at_the_same_numbers_heals_instead_of_forking(pair):
    """Two copies of one station (a PC cloned, a backup put back on a second PC) each took an
    application at seq 1. Before, the second was a fork for a person to sort out; now it is healed
    and re-sequenced, even when the answer saying so is lost: both applications reach the county."""
    county, st, root = pair
    st.store.close()
    shutil.copytree(st.settings.data, root / "twin")
    st = Station(NodeSettings(data=st.settings.data))
    twin = Station(NodeSettings(data=root / "twin"))
    try:
        theirs = take(twin, 1)
        round_trip(county, twin)                       # the twin's seq 1 reaches the county first
        ours = take(st, 1)
        round_trip(county, st, take_answer=False)      # ours does not extend the county's copy; answer lost
        round_trip(county, st)
        # A copy of a station gets nothing of the county's copy until an installer marks it restored
        # at the county (issue 15): it says so, and its own events wait.
        assert st.sync_state()["stall_reason"] == "restore_not_marked"
        assert len(county.store._all("SELECT id FROM cases")) == 1
        county.mark_restored("S1", "installer")
        for _ in range(4):
            round_trip(county, st)
        assert st.sync_state()["stall_reason"] is None
        # The copy knew it was one when it opened (a new database file: issue 15, finding 6), so its
        # first number started a new block; the original numbered 00001. Both applications reach the
        # county (by case id); the healed original learns it was cloned, and its next number starts
        # the block after the copy's.
        assert theirs[0]["receipt_no"].endswith("-01001") and ours[0]["receipt_no"].endswith("-00001")
        held = county.store._all("SELECT id FROM cases")
        assert sorted(r[0] for r in held) == sorted(a["id"] for a in theirs + ours)
        # Each document's QR text went up beside its event, ours with the event re-sequenced (a new
        # hash, a new text): the county keeps what each copy now prints, nothing for the displaced one.
        kept = dict(county.store._all("SELECT case_id, qr_text FROM document_qr"))
        assert kept == {a["id"]: doc_verify.qr_text(s, s.store.application(a["id"]))
                        for s, apps in ((twin, theirs), (st, ours)) for a in apps}
        assert take(st, 1)[0]["receipt_no"].endswith("-02001")
        assert st.sync_state()["reported"] == [] and st.sync_state()["forks"] == 0
        # after the copy's two events: its signed record of the numbers it skipped, then its application
        assert [(r["old_seq"], r["new_seq"]) for r in st.sync_state()["resequenced"]] == [(1, 3)]
        with county.store.transaction() as db:
            assert recovery.open_reports(db, "up/S1") == ([], [])
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
    running = Station(NodeSettings(data=st.settings.data))      # a node that keeps running meanwhile
    take(running, 1)
    try:
        with serve(central_app(county.settings)) as url:
            done = cli("set-central", url + "/", "--data", data)
            assert done.returncode == 0, done.stderr
            moved = Station(NodeSettings(data=st.settings.data))
            assert moved.county.url == url
            moved.store.close()
            running.sync()                  # the running node follows without a restart
            assert running.county.url == url and running.sync_state()["up_waiting"] == 0
    finally:
        running.store.close()


# 4. a receipt number never names two applications --------------------------------------------------

def test_a_station_restored_from_a_backup_never_reissues_a_receipt_number(pair):
    """Numbers run 1, 2, 3 … without a gap; a station put back from a backup with `node restore`
    cannot know which numbers its lost copy issued and never synced, so it jumps to the next block
    and tells the county which numbers it skipped, signed."""
    from node.services.restore import restore
    county, st, root = pair
    take(st, 1)
    st.store.close()
    copy_db(st.settings.data, root / "station-backup")
    st = Station(NodeSettings(data=st.settings.data))
    lost = take(st, 2)                                   # given to citizens, never synced, then the disk dies
    st.store.close()
    moved = restore(root / "station-backup", st.settings.data, replace=True)
    assert moved is not None and (moved / "node.db").exists()          # nothing deleted
    st = Station(NodeSettings(data=st.settings.data))
    try:
        again = take(st, 2)                              # the restored station goes on taking applications
        issued = [a["receipt_no"] for a in lost + again]
        assert len(set(issued)) == 4, issued
        assert [int(r.rsplit("-", 1)[1]) for r in issued] == [2, 3, 1001, 1002]
        round_trip(county, st)
        voided = county.store.voided_receipts()
        day = issued[0].split("-")[1]
        assert [(v["station"], v["day"], v["first_no"], v["last_no"]) for v in voided] == [("S1", day, 2, 1000)]
        assert "restored from a backup" in voided[0]["reason"]
        assert len(take(st, 1)) == 1 and st.store.applications(limit=1)[0]["receipt_no"].endswith("-01003")
    finally:
        st.store.close()


def test_a_station_copied_back_by_hand_learns_from_the_county_which_numbers_it_issued(pair):
    """Put back without `node restore`: the county gives back what the lost copy synced; that marks
    the station restored, and its next number follows every number the county holds, in a new block."""
    county, st, root = pair
    take(st, 1)
    st.store.close()
    copy_db(st.settings.data, root / "station-backup")
    st = Station(NodeSettings(data=st.settings.data))
    synced = take(st, 2)
    round_trip(county, st)
    st.store.close()
    copy_db(root / "station-backup", st.settings.data)
    st = Station(NodeSettings(data=st.settings.data))
    county.mark_restored("S1", "installer")          # the installer's step at the county (INSTALL.md)
    try:
        for _ in range(4):
            round_trip(county, st)
        again = take(st, 1)[0]["receipt_no"]
        assert int(again.rsplit("-", 1)[1]) == 1001, (again, [a["receipt_no"] for a in synced])
        assert again not in {a["receipt_no"] for a in synced}
    finally:
        st.store.close()


# 5. a station restored from a backup heals from the county's copy of its log ----------------------

def settle(st: Station, url: str) -> None:
    """Sync until nothing waits either way and the station is not healing."""
    st.county = replace(st.county, url=url)
    for _ in range(20):
        st.sync()
        state = st.sync_state()
        if not state["up_waiting"] and not state["healing"] and not st.store.sync_status("down_return_from"):
            return
    raise AssertionError(f"sync did not settle: {st.sync_state()}")


def county_cases(county: County) -> dict[str, str]:
    """receipt number -> case id, asserting no receipt number names two cases."""
    rows = county.store._all("SELECT receipt_no, id FROM cases")
    assert len({r[0] for r in rows}) == len(rows), "a receipt number names two applications"
    return {r[0]: r[1] for r in rows}


def test_a_restored_station_heals_from_the_county_and_resequences_what_it_took_since(pair):
    county, st, root = pair
    early = take(st, 2)
    with serve(central_app(county.settings)) as url:
        settle(st, url)
        st.store.close()
        copy_db(st.settings.data, root / "station-backup")          # the nightly backup
        st = Station(NodeSettings(data=st.settings.data))
        later = take(st, 3)                                          # these reach the county ...
        settle(st, url)
        county.decide(later[0]["id"], "approve", "", CLERK)
        st.store.close()
        from node.services.restore import restore                             # ... then the disk dies: restore
        restore(root / "station-backup", st.settings.data, replace=True)
        st = Station(NodeSettings(data=st.settings.data))
        since = take(st, 2)                         # taken before the next sync, at seqs 3, 4 the county holds
        st.county = replace(st.county, url=url)
        st.sync()                                   # not marked restored at the county yet: nothing back
        assert st.sync_state()["stall_reason"] == "restore_not_marked"
        county.mark_restored("S1", "installer")     # `lastmile central station restore S1` (INSTALL.md)
        settle(st, url)
    try:
        everyone = early + later + since
        cases = county_cases(county)
        assert sorted(cases) == sorted(a["receipt_no"] for a in everyone)      # all, each once
        assert sorted(cases.values()) == sorted(a["id"] for a in everyone)
        assert stream(county.store.conn, "up/S1") == stream(st.store.conn, "up/S1")
        mine = {a["id"]: a for a in st.store.applications(limit=100)}
        assert sorted(mine) == sorted(a["id"] for a in everyone)
        assert mine[later[0]["id"]]["status"] == "approved"            # the decision came back with it
        assert all(mine[a["id"]]["status"] == "received" for a in early + later[1:] + since)
        assert {a["receipt_no"] for a in since} == {mine[a["id"]]["receipt_no"] for a in since}
        # The re-sequenced documents' QR texts went up again with their events, by themselves: the
        # county gives every document what the restored station now prints for it.
        kept = dict(county.store._all("SELECT case_id, qr_text FROM document_qr WHERE event_hash IN"
                                      " (SELECT hash FROM _sync_events WHERE stream = 'up/S1')"))
        assert kept == {i: doc_verify.qr_text(st, app) for i, app in mine.items()}
        state = st.sync_state()
        moved = {r["ref"]: (r["old_seq"], r["new_seq"]) for r in state["resequenced"]}
        assert moved == {"": (3, 6), since[0]["receipt_no"]: (4, 7), since[1]["receipt_no"]: (5, 8)}   # #3: the voided block
        assert {r["what"] for r in state["recovered"]} >= {"up_healed", "resequenced"}
        assert state["forks"] == 0 and state["reported"] == [] and not state["healing"]
        for conn in (county.store.conn, st.store.conn):
            assert conn.execute("SELECT count(*) FROM _sync_forks").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM _sync_repairs").fetchone()[0] == 0
        assert "up_diverged" in [r["what"] for r in county.store.recoveries()]
        show_pages(county, st, since[0]["receipt_no"])
    finally:
        st.store.close()


def show_pages(county: County, st: Station, receipt_no: str) -> None:
    """Both pages say, in the reader's language, what was recovered and re-numbered, and why."""
    import httpx
    from node.app import create_app as node_app
    from tests.conftest import PASSWORD, csrf_of
    st.store.add_user("agent", "代办员", PASSWORD)
    county.add_user("boss", "督办", PASSWORD, "supervisor", None)
    for app, user, path in ((node_app(st.settings, background_sync=False), "agent", "/"),
                            (central_app(county.settings), "boss", "/stations")):
        with serve(app) as url, httpx.Client(base_url=url, follow_redirects=True, timeout=30,
                                             headers={"accept-language": "zh-CN"}) as page:
            page.post("/login", data={"username": user, "password": PASSWORD, "csrf": csrf_of(page)})
            text = page.get(path).text
            if path == "/":
                assert 'id="resequenced"' in text and receipt_no in text
                assert "已改用新编号" in text and "已从县中心的副本补回" in text
            else:
                assert 'id="recoveries"' in text and "该站曾从备份恢复或被复制" in text


# 6. a replacement PC: new keys, old keys on record, everything rebuilt from the county -----------

def cli(*args: str) -> "subprocess.CompletedProcess[str]":
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "deploy.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.real_kdf          # `station add` runs in a subprocess, the enrolment in this one: same scrypt
def test_a_replacement_pc_enrols_with_new_keys_and_rebuilds_everything_from_the_county(pair):
    from node.services.enrolment import enroll
    county, old, root = pair
    taken = take(old, 3)
    with serve(central_app(county.settings)) as url:
        settle(old, url)
        county.decide(taken[0]["id"], "approve", "", CLERK)
        settle(old, url)
        assert old.hand_out(taken[0]["id"], "代办员")
        settle(old, url)
        old_key = old.me.public.sign_id
        data = str(county.settings.data)
        county.store.close()
        refused = cli("central", "station", "add", "--code", "S1", "--data", data)
        assert refused.returncode != 0 and "--replace" in refused.stderr + refused.stdout
        added = cli("central", "station", "add", "--code", "S1", "--replace", "--data", data)
        assert added.returncode == 0, added.stderr
        assert "REPLACING" in added.stdout
        otp = added.stdout.split("code (valid 72 h, one use, wrong tries only slow it down): ")[1].split()[0]
        county = County(county.settings)
        assert county.store.station("S1")["level"] == "village"
        with pytest.raises(Exception):
            settle(old, url)                                   # the old computer is refused from now on
        new_data = root / "S1-new"
        enroll(NodeSettings(data=new_data), central_url=url, station="S1", code=otp,
               fingerprint=county.me.public.fingerprint())
        new = Station(NodeSettings(data=new_data))
        try:
            assert new.me.public.sign_id != old_key
            settle(new, url)
            mine = {a["id"]: a for a in new.store.applications(limit=100)}
            assert sorted(mine) == sorted(a["id"] for a in taken)
            assert mine[taken[0]["id"]]["status"] == "handed_out"
            assert {a["receipt_no"] for a in mine.values()} == {a["receipt_no"] for a in taken}
            more = take(new, 2)                                # goes on after the county's head, new key
            settle(new, url)
            assert sorted(county_cases(county).values()) == sorted(a["id"] for a in taken + more)
            assert stream(county.store.conn, "up/S1") == stream(new.store.conn, "up/S1")
            view = county.signed_case(county.store.case(taken[1]["id"]))
            assert view["signature"] == "valid" and view["signed_by"]["sign_id"] == old_key
            assert view["signed_by"]["valid_until"]
            fresh = county.signed_case(county.store.case(more[0]["id"]))
            assert fresh["signature"] == "valid" and fresh["signed_by"]["sign_id"] == new.me.public.sign_id
            assert "replaced" in [r["what"] for r in county.store.recoveries()]
        finally:
            new.store.close()
        old.store.close()
        old = Station(NodeSettings(data=root / "S1-new"))     # for the fixture's teardown


def test_revocation_keeps_what_was_stored_before_it_valid(pair):
    county, st, _ = pair
    taken = take(st, 1)
    round_trip(county, st)
    county.revoke("S1")
    view = county.signed_case(county.store.case(taken[0]["id"]))
    assert view["signature"] == "valid" and view["signed_by"]["revoked_at"]


# 7. key rotation: announced under the old key, used once the county stored it ------------------

def test_rotate_keys_announces_new_keys_and_every_old_signature_still_verifies(pair):
    county, st, root = pair
    first = take(st, 1)
    with serve(central_app(county.settings)) as url:
        settle(st, url)
        old_key, data = st.me.public.sign_id, str(st.settings.data)
        st.store.close()
        done = cli("node", "rotate-keys", "--data", data)
        assert done.returncode == 0, done.stderr
        assert "keeps using the old key until the county" in done.stdout
        again = cli("node", "rotate-keys", "--data", data)
        assert again.returncode == 2 and "already waiting" in again.stderr
        st = Station(NodeSettings(data=st.settings.data))
        second = take(st, 1)                         # after the announcement, still the old key
        settle(st, url)                              # the county stores the announcement ...
        assert st.me.public.sign_id == old_key
        third = take(st, 1)
        settle(st, url)                              # ... so this sync switches to the new keys
        new_key = st.me.public.sign_id
        assert new_key != old_key
        assert (st.settings.data / "keys.retired" / old_key / "sign.pem").exists()
        assert not (st.settings.key_dir / "next").exists()
        fourth = take(st, 1)
        settle(st, url)
        assert county.store.station("S1")["sign_key"] == st.me.public.sign
    try:
        signers = {}
        for app in first + second + third + fourth:
            view = county.signed_case(county.store.case(app["id"]))
            assert view["signature"] == "valid", app
            signers[app["id"]] = view["signed_by"]["sign_id"]
        assert signers[first[0]["id"]] == signers[second[0]["id"]] == old_key
        assert signers[fourth[0]["id"]] == new_key
        history = {k["sign_id"]: k for k in county.store.station_key_history("S1")}
        assert history[old_key]["valid_until"] and history[new_key]["reason"] == "rotated"
        assert "keys_rotated" in [r["what"] for r in county.store.recoveries()]
    finally:
        st.store.close()


def test_an_envelope_signed_with_a_key_never_announced_is_refused(pair):
    county, st, _ = pair
    take(st, 1)
    with st.store.transaction() as db:
        push = exchange.build_push(db, me=type(st.me).generate(), station=st.code, county=st.county.keys,
                                   county_name=st.county.name)
    with pytest.raises(Exception, match="current key|signature"):
        county.answer(push.blob)


def test_a_usb_only_station_sends_again_what_a_restored_county_lost(pair):
    """Before, only an answer over HTTP could move the cursor back: a station that syncs only by USB
    stick never resent what a county restored from its backup had lost."""
    county, st, root = pair
    csettings = county.settings
    county.store.close()
    copy_db(csettings.data, root / "county-backup")
    county = County(csettings)
    first = take(st, 2)

    def usb_round(name: str) -> None:
        st.export(root / f"{name}.bundle")
        county.import_bundle(root / f"{name}.bundle", root / f"{name}.answer")
        st.import_answers(root / f"{name}.answer")

    usb_round("a")
    assert acked(st) == 2
    county.store.close()
    copy_db(root / "county-backup", csettings.data)          # the county's disk died: restore the backup
    county = County(csettings)
    second = take(st, 1)
    st.export(root / "old.bundle")                          # exported, but its answer comes back late
    usb_round("b")                                          # the county lacks #1, #2: the cursor goes back
    assert acked(st) == 0
    county.import_bundle(root / "old.bundle", root / "old.answer")
    st.import_answers(root / "old.answer")                  # an older export's answer never rewinds
    usb_round("c")
    try:
        assert sorted(county_cases(county).values()) == sorted(a["id"] for a in first + second)
        assert acked(st) == 3
    finally:
        county.store.close()
        county = County(csettings)


def test_a_restored_county_that_decided_before_the_station_gave_back_re_appends_its_new_decision(pair):
    """The county, restored from last night's backup, decides a case before the station's next sync:
    its new decision takes a number the station holds with a decision the county lost. Before, the
    station's given-back events forked there and never got in; now the county takes them back and
    appends its new decision after them, and the station gets it as a new event."""
    county, st, root = pair
    csettings = county.settings
    first, second = take(st, 2)
    with serve(central_app(csettings)) as url:
        sync_until_quiet(st, url)
        county.store.close()
        copy_db(csettings.data, root / "county-backup")      # the backup: both cases received, none decided
        county = County(csettings)
        county.decide(first["id"], "approve", "", CLERK)
        sync_until_quiet(st, url)                            # the station holds the decision (down #2)
    county.store.close()
    copy_db(root / "county-backup", csettings.data)          # the county's disk died: restore the backup
    county = County(csettings)
    county.decide(second["id"], "reject", "材料不全", CLERK, reason="材料不全", basis="《示范条例》第三条")  # a new decision at down #2, before any sync
    assert county.self_check()["problem_count"] == 0     # the log self-check now holds down #2 as its head
    with serve(central_app(csettings)) as url:
        sync_until_quiet(st, url)
    county.store.close()
    county = County(csettings)
    try:
        assert stream(county.store.conn, "down/S1") == stream(st.store.conn, "down/S1")
        assert county.store.case(first["id"])["decision"] == "approve"
        assert county.store.case(second["id"])["decision"] == "reject"
        assert st.store.application(first["id"])["status"] == "approved"
        assert st.store.application(second["id"])["status"] == "rejected"
        for conn in (county.store.conn, st.store.conn):
            assert conn.execute("SELECT count(*) FROM _sync_forks").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM _sync_repairs").fetchone()[0] == 0
        assert {"down_returned", "down_resequenced"} <= {r["what"] for r in county.store.recoveries()}
        # The give-back put another event at down #2: a recovery, not an edit (central/services/selfcheck.py).
        assert county.self_check()["problems"] == []
        import httpx
        from tests.conftest import PASSWORD, csrf_of
        county.add_user("boss", "督办", PASSWORD, "supervisor", None)
        with serve(central_app(csettings)) as url, httpx.Client(base_url=url, follow_redirects=True, timeout=30,
                                                                headers={"accept-language": "zh-CN"}) as page:
            page.post("/login", data={"username": "boss", "password": PASSWORD, "csrf": csrf_of(page)})
            assert "已改用其后的新编号" in page.get("/stations").text
    finally:
        county.store.close()


def test_a_copy_voids_exactly_the_range_protocol_section_4_states(pair):
    """PROTOCOL.md §4: with n the number it would have issued and m its restore marks, a restored
    station's next number is b = ⌊(n − 1) / 1000⌋ × 1000 + m × 1000 + 1, and its
    ``station.receipts_voided`` voids n … b − 1 of that day, before the application that uses b."""
    county, st, root = pair
    taken = take(st, 3)
    assert [a["receipt_no"][-5:] for a in taken] == ["00001", "00002", "00003"]
    st.store.close()
    shutil.copytree(st.settings.data, root / "copy")             # a backup put back: m = 1
    copy = Station(NodeSettings(data=root / "copy"))
    try:
        new = take(copy, 1)[0]
        n, m = 4, 1
        b = (n - 1) // 1000 * 1000 + m * 1000 + 1
        assert new["receipt_no"].endswith(f"-{b:05d}")
        with copy.store.transaction() as db:
            mine = log.events_after(db, log.up(copy.code), 3, 10)
        assert [e.kind for e in mine] == ["station.receipts_voided", "application.accepted"]
        voided = mine[0].body
        assert (voided["first"], voided["last"]) == (n, b - 1)
        assert voided["day"] == new["receipt_no"].split("-")[1]
    finally:
        copy.store.close()
        st.store = type(copy.store)(st.settings.db_path)             # the fixture closes it
