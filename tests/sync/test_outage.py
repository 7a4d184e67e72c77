"""After an outage the station syncs at full speed at once: failed connection attempts say nothing
about the link, so they must not shrink the batch; the first push is sized from the measured link.

Real county server, real station SQLite, the link through tests/faultproxy.py (a real TCP proxy)."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from crypto import envelope
from sync import client, log
from sync.errors import Retryable
from tests.faultproxy import FaultProxy
from tests.sync.test_link import CutFirst, accept, county_cases

RATE = 64_000          # bit/s: slow enough that ~4 s of link is a few dozen events


def pushes_of(requests: list[bytes]) -> list[int]:
    """Events carried by each push envelope that went out (pulls count 0)."""
    out = []
    for body in requests:
        head = envelope.parse(body).header
        out.append(head["last"] - head["first"] + 1 if head["last"] else 0)
    return out


def run(station, url: str, sent: list[bytes], **kw):
    def record(request: httpx.Request) -> None:
        sent.append(request.read())

    with httpx.Client(timeout=20, event_hooks={"request": [record]}) as http:
        return client.sync_once(station.store.transaction, http, me=station.me, station="V1",
                                county=replace(station.county, url=url), apply=station.apply_down,
                                on_ack=station.mark_received, sleep=lambda s: None, **kw)


def test_the_first_push_after_an_outage_fills_the_link(system, station):
    host, port = system.central_url.replace("http://", "").rsplit(":", 1)
    with FaultProxy(upstream=(host, int(port)), rate_bps=RATE, latency=0.05, seed=3) as proxy:
        accept(station, 30)                       # normal days: the station syncs and measures its link
        run(station, proxy.url, [])
        before = station.sync_state()
        assert before["up_waiting"] == 0
        proxy.set(down=True)                      # the county is unreachable: connections refused
        accept(station, 150)
        for _ in range(5):                        # the background loop keeps trying, 4 attempts a run
            with pytest.raises(Retryable):
                run(station, proxy.url, [])
        during = station.sync_state()
        assert during["last_error_code"] == "link_down" and during["up_waiting"] == 150
        assert during["batch_limit"] == before["batch_limit"]      # refused connections shrink nothing
        with station.store.transaction() as db:   # the link as the station measured it before the outage
            fit, bps = client.link_fit(db), int(log.get_status(db, "link_bps"))
        proxy.set(down=False)                     # the link comes back
        sent: list[bytes] = []
        run(station, proxy.url, sent, max_rounds=1)
    carried = pushes_of(sent)
    # No pull first (nothing was ever sent during the outage), and a push of about 4 s of link, not 6:
    # as many events as the measured link fits (the batch limit, untouched, does not cut it short).
    # The seconds are counted at the rate the station measured: a loaded machine measures the proxy's
    # 64 kbit/s as less, and then rightly sends less (it failed at 2.496 s of the nominal rate).
    assert carried[0] >= 20, carried
    assert carried[0] == min(fit, during["batch_limit"] or client.MAX_BATCH), (carried, fit, during)
    assert RATE / 4 <= bps <= RATE * 2, bps                    # it measured the proxy's link
    assert 2.5 <= len(sent[0]) * 8 / bps and len(sent[0]) * 8 / RATE <= 6.0, (len(sent[0]), bps)
    assert len(county_cases(system)) == 30 + carried[0]


def test_only_a_request_cut_after_sending_shrinks_the_batch_from_what_it_carried(system, station):
    accept(station, 40)
    with station.store.transaction() as db:
        log.set_status(db, "batch_limit", "1000")          # grown on a good day
        log.set_status(db, "link_bps", "64000")
        log.set_status(db, "wire_per_event", "800")        # 64 kbit/s x 4 s / 800 B = 40 events fit
    link = CutFirst(1)
    with httpx.Client(transport=link, timeout=10) as http:
        client.sync_once(station.store.transaction, http, me=station.me, station="V1", county=station.county,
                         apply=station.apply_down, sleep=lambda s: None, max_rounds=1)
    carried = pushes_of(link.bodies)
    assert carried[:2] == [40, 0]                  # the cut push, then a pull to ask what arrived
    assert station.sync_state()["batch_limit"] == 20   # half of the 40 it carried, not half of 1000


def test_a_refused_connection_leaves_no_push_in_flight(system, station):
    accept(station, 3)
    with serve_nothing() as url:
        with pytest.raises(Retryable):
            run(station, url, [])
    with station.store.transaction() as db:
        assert not log.get_status(db, "push_in_flight")
    run(station, system.central_url, [])
    assert station.sync_state()["batch_limit"] in (None, client.START_BATCH)


class serve_nothing:
    """A loopback port where nothing listens: connecting is refused."""

    def __enter__(self) -> str:
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        pass

