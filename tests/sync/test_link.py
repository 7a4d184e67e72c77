"""Link behaviour: USB and network mixed, a busy county, adaptive batches, clock skew."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace

import httpx
import pytest

from central.app import create_app as central_app
from central.county import County, Settings as CentralSettings, clock_skew
from node.station import Station
from sync import client, log
from sync.errors import Retryable
from tests.conftest import log_in, serve
from tests.sync.test_protocol_machine import form_for


def lastmile(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "deploy.cli", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def accept(st: Station, n: int) -> list[str]:
    ids = []
    for i in range(n):
        item = st.items()[i % len(st.items())]
        ids.append(st.take(item["code"], form_for(item, i), "accept", "代办员")["id"])
    return ids


def county_cases(system) -> list[dict]:
    county = County(CentralSettings(data=system.data / "central"))
    try:
        return county.store.cases(station="V1")
    finally:
        county.store.close()


def test_usb_and_network_in_any_order_deliver_everything_once(system, station, tmp_path):
    ids = accept(station, 3)
    data, central = str(station.settings.data), str(system.data / "central")
    lastmile("node", "export", "--data", data, "--to", str(tmp_path / "a.bundle"))
    station.sync()                                            # the network wins the race
    accept(station, 2)
    lastmile("central", "import", str(tmp_path / "a.bundle"), "--data", central)   # stale stick: harmless
    lastmile("node", "import", str(tmp_path / "a.bundle.answer"), "--data", data)
    # The stick asked for the county's events from before the network sync: the county sends them
    # from what the station confirmed since (no restore mark), and the station, holding that much,
    # takes it as the harmless old answer it is: no stall, nothing to mark.
    assert station.sync_state()["stall_reason"] is None
    lastmile("node", "export", "--data", data, "--to", str(tmp_path / "b.bundle"))
    lastmile("central", "import", str(tmp_path / "b.bundle"), "--data", central)
    county = County(CentralSettings(data=system.data / "central"))
    county.decide(ids[0], "approve", "", {"name": "科员", "role": "supervisor", "department": None})
    county.store.close()
    lastmile("node", "export", "--data", data, "--to", str(tmp_path / "c.bundle"))
    lastmile("central", "import", str(tmp_path / "c.bundle"), "--data", central)
    lastmile("node", "import", str(tmp_path / "c.bundle.answer"), "--data", data)
    lastmile("node", "import", str(tmp_path / "a.bundle.answer"), "--data", data)   # an old answer again
    station.sync()
    assert len(county_cases(system)) == 5
    assert station.store.application(ids[0])["status"] == "approved"
    state = station.sync_state()
    assert state["up_waiting"] == 0 and state["forks"] == 0


def test_a_truncated_or_foreign_bundle_is_refused_and_changes_nothing(system, station, tmp_path):
    accept(station, 1)
    station.export(tmp_path / "x.bundle")
    raw = (tmp_path / "x.bundle").read_bytes()
    (tmp_path / "cut.bundle").write_bytes(raw[:-7])
    (tmp_path / "junk.bundle").write_bytes(b"hello")
    for name in ("cut.bundle", "junk.bundle"):
        out = subprocess.run([sys.executable, "-m", "deploy.cli", "central", "import", str(tmp_path / name),
                              "--data", str(system.data / "central")], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "error:" in out.stderr
    assert county_cases(system) == []


def test_a_busy_county_answers_503_and_the_station_waits_as_told(system, station):
    busy = central_app(CentralSettings(data=system.data / "central", max_concurrent_syncs=0))
    accept(station, 1)
    with serve(busy) as url, httpx.Client(timeout=10) as http:
        waits: list[float] = []
        with pytest.raises(Retryable):
            client.sync_once(station.store.transaction, http, me=station.me, station="V1",
                             county=replace(station.county, url=url), apply=station.apply_down,
                             attempts=3, sleep=waits.append)
    assert len(waits) == 2 and all(5 <= w <= 60 for w in waits)       # Retry-After honoured, spread
    state = station.sync_state()
    assert state["last_error_code"] == "link_down" and state["up_waiting"] == 1
    assert state["batch_limit"] in (None, client.START_BATCH)      # a busy county says nothing of the link


class CutFirst(httpx.BaseTransport):
    """A link that drops the first ``n`` requests mid-way, then works."""

    def __init__(self, n: int) -> None:
        self.left, self.inner, self.bodies = n, httpx.HTTPTransport(), []

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.bodies]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(request.read())
        if self.left:
            self.left -= 1
            raise httpx.ReadError("connection reset by peer")
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_batches_shrink_after_cuts_and_grow_after_success(system, station):
    accept(station, 60)
    link = CutFirst(2)
    with httpx.Client(transport=link, timeout=10) as http:
        result = client.sync_once(station.store.transaction, http, me=station.me, station="V1",
                                  county=station.county, apply=station.apply_down, sleep=lambda s: None)
    pushes = [size for size in link.sizes if size > 3000]          # after each cut, a small pull asks first
    assert pushes[1] < pushes[0]                                   # two cuts: 100 -> 25 events per envelope
    assert link.sizes[1] < 3000                                    # the pull that asks where the county is
    assert result.acked == 60 and len(county_cases(system)) == 60
    assert station.sync_state()["batch_limit"] > 25                  # grew again after full batches went through


def test_clock_skew_is_measured_and_shown(system, station, http):
    assert clock_skew("2026-01-01T00:10:00Z", "2026-01-01T00:00:00Z") == 600
    assert clock_skew("garbage", "2026-01-01T00:00:00Z") is None
    assert abs(station.sync_state()["clock_skew_s"] or 0) < 5          # this machine's clocks agree
    with station.store.transaction() as db:
        log.set_status(db, "clock_skew_s", "-1800")
    html = log_in(http, system.stations["V1"]["url"], "agent")[1].text
    assert 'id="clock-warning"' in html and "30分钟" in html


def test_a_county_restored_from_an_old_backup_gets_the_lost_events_again(system, station):
    accept(station, 4)
    station.sync()
    central_db = system.data / "central" / "central.db"
    import sqlite3
    conn = sqlite3.connect(central_db)
    with conn:      # the county's disk died; its backup predates the last two events
        conn.execute("DELETE FROM _sync_events WHERE stream = 'up/V1' AND seq > 2")
        conn.execute("DELETE FROM cases WHERE seq > 2")
    conn.close()
    accept(station, 1)
    station.sync()          # the county answers with ack 2; the station rewinds and resends
    station.sync()
    assert len(county_cases(system)) == 5
    assert station.sync_state()["up_waiting"] == 0


def test_a_push_that_died_in_flight_shrinks_the_next_batch(system, station):
    with station.store.transaction() as db:
        log.set_status(db, "batch_limit", "400")
        log.set_status(db, "push_in_flight", "400")       # the process was killed mid-push
    accept(station, 1)
    station.sync()
    state = station.sync_state()
    assert state["batch_limit"] == 200 and state["up_waiting"] == 0


def test_the_county_sees_what_waits_at_each_station(system, station, http):
    accept(station, 10)
    with station.store.transaction() as db:
        log.set_status(db, "batch_limit", "5")
    with httpx.Client(timeout=10) as h:
        client.sync_once(station.store.transaction, h, me=station.me, station="V1", county=station.county,
                         apply=station.apply_down, max_rounds=1)
    page, _ = log_in(http, system.central_url, "boss")
    cells = re.sub(r"<td [^>]*>", "<td>", page.get("/stations").text)     # without the phone's data-labels
    row = cells.split("<td>V1</td>")[1].split("</tr>")[0]
    assert "<td>5</td>" in row          # 10 written, 5 confirmed: 5 still at the station
    assert "<td>村级</td><td>已注册</td>" in row      # level and enrolment in the clerk's language


def test_a_station_clock_found_wrong_dates_receipts_by_the_county_clock(system, station):
    import datetime as dt

    right = accept(station, 1)[0]
    # The last contact measured this station's clock 400 days behind the county's (a dead CMOS
    # battery); receipts and promised dates must follow the county's time, not the wrong clock.
    with station.store.transaction() as db:
        log.set_status(db, "clock_skew_s", str(-400 * 86400))
    corrected = accept(station, 1)[0]
    a, b = station.store.application(right), station.store.application(corrected)
    shift = dt.datetime.fromisoformat(b["created_at"]) - dt.datetime.fromisoformat(a["created_at"])
    assert abs(shift - dt.timedelta(days=400)) < dt.timedelta(minutes=5)
    assert b["promised_date"] > a["promised_date"]
    with station.store.transaction() as db:
        log.set_status(db, "clock_skew_s", "120")                   # two minutes off: within tolerance
    small = station.store.application(accept(station, 1)[0])
    assert abs(dt.datetime.fromisoformat(small["created_at"]) - dt.datetime.fromisoformat(a["created_at"])) \
        < dt.timedelta(minutes=5)


def test_a_poison_event_is_acked_set_aside_at_both_ends_and_blocks_nothing(system, station, http):
    accept(station, 1)
    with station.store.transaction() as db:      # an event this county's code cannot process
        poison = log.append(db, station.me, stream="up/V1", author="V1", kind="application.from_the_future", body={})
    accept(station, 1)
    station.sync()
    assert len(county_cases(system)) == 2 and station.sync_state()["up_waiting"] == 0
    assert [r["seq"] for r in station.sync_state()["reported"]] == [poison.seq]
    page, _ = log_in(http, system.central_url, "boss")
    problems = page.get("/stations").text.split('id="problems"')[1]
    assert f"#{poison.seq}" in problems and "待修复" in problems and "未知的事件类型 application.from_the_future" in problems
