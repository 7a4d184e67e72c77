"""Sync through tests/faultproxy.py: a throttled, slow link that cuts every connection at random
moments, duplicates and delays requests. Everything arrives exactly once, scans included."""

from __future__ import annotations

from dataclasses import replace

from tests.faultproxy import FaultProxy
from tests.sync.test_link import accept, county_cases
from tests.sync.test_scans import photo
from node.services.scans import prepare
from tests.sync.test_protocol_machine import form_for


def sync_until_done(st, rounds: int = 200) -> int:
    failures = 0
    for _ in range(rounds):
        try:
            st.sync()
        except Exception:  # noqa: BLE001 - a cut: the loop simply goes again, as the node's does
            failures += 1
        state = st.sync_state()
        if state["up_waiting"] == 0 and state["scans_waiting"] == 0:
            return failures
    raise AssertionError(f"not done after {rounds} syncs: {st.sync_state()}")


def test_everything_arrives_once_through_cuts_duplicates_and_delays(system, station, http):
    item = next(i for i in station.items() if i["materials"])
    scans = [prepare(item["materials"][0]["code"], f"s{i}.jpg", photo(600, 450)) for i in range(2)]
    form_ids = accept(station, 40)
    with_scans = station.take(item["code"], form_for(item, 99), "accept", "代办员", scans)
    host, port = system.central_url.replace("http://", "").split(":")
    with FaultProxy(upstream=(host, int(port)), rate_bps=800_000, latency=0.05, cut_every=(0.7, 1.5),
                    duplicate_p=0.4, delay_p=0.1, delay=(0.1, 0.4), seed=7) as proxy:
        station.county = replace(station.county, url=proxy.url)
        station.settings = replace(station.settings, http_timeout=5.0)
        sync_until_done(station)
        assert proxy.stats.cuts >= 1 and proxy.stats.duplicated >= 1
    cases = county_cases(system)
    assert sorted(c["id"] for c in cases) == sorted(form_ids + [with_scans["id"]])     # once each
    case = http(system.central_url, system.central_token).get(f"/api/v1/cases/{with_scans['id']}").json()
    assert case["scans_complete"]
    assert station.sync_state()["forks"] == 0
