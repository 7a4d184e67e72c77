"""Never stuck silently: the loop is restarted if it dies or hangs, and a stall is shown."""

from __future__ import annotations

from tests.conftest import log_in

import threading
import time

import pytest

from sync import client, log
from tests.sync.test_link import accept


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")   # the death is the point
def test_a_dead_loop_is_restarted():
    calls = []

    def step():
        calls.append(1)
        if len(calls) == 1:
            raise SystemExit("a bug kills the thread")      # not an Exception: the loop dies

    loop = client.SyncLoop(step, interval=0.05, check_every=0.05)
    loop.start()
    try:
        assert wait_for(lambda: len(calls) >= 3)
        assert loop.restarts >= 1
    finally:
        loop.stop()


def test_a_hung_loop_is_replaced_and_the_old_one_ends():
    release = threading.Event()
    calls = []

    def step():
        calls.append(threading.current_thread())
        if len(calls) == 1:
            release.wait(5)                                 # hangs, e.g. a wedged driver

    loop = client.SyncLoop(step, interval=0.05, stall_after=0.3, check_every=0.05)
    loop.start()
    try:
        assert wait_for(lambda: len(calls) >= 3)
        assert loop.restarts == 1 and calls[-1] is not calls[0]
        first = calls[0]
        release.set()
        assert wait_for(lambda: not first.is_alive())
    finally:
        loop.stop()


def test_the_station_says_when_the_county_answers_but_nothing_moves(system, station, http):
    accept(station, 1)
    with station.store.transaction() as db:
        log.set_status(db, "last_contact", log.utcnow())
        log.set_status(db, "last_progress", "2026-01-01T00:00:00.000Z")
    assert station.sync_state()["stalled"]
    html = log_in(http, system.stations["V1"]["url"], "agent")[1].text
    assert 'id="stalled"' in html
    station.sync()
    assert not station.sync_state()["stalled"]


def test_the_loop_spreads_out_and_backs_off():
    loop = client.SyncLoop(lambda: None, interval=10)
    calm = [loop.next_wait(0) for _ in range(200)]
    assert 5 <= min(calm) and max(calm) <= 15 and max(calm) - min(calm) > 5     # stations drift apart
    after_many = [loop.next_wait(8) for _ in range(200)]
    assert max(after_many) <= 600 and sum(after_many) / 200 > 100               # a dead county is not hammered
    assert min(loop.next_wait(1, retry_after=45) for _ in range(50)) >= 45     # Retry-After is honoured
