"""A state machine (hypothesis) over a station that restarts, locks, unlocks and syncs while the
county decides (issue 14).

Invariant: after an unlock and one sync, the station's projections (its cases, reports, ratings,
the catalogue, calendar and retention period in force) equal those of its twin: a copy of the same
station, made at the start, that is never locked and syncs the same county events. A station that
stores the county's events while locked and never applies them (as main did with two or more
waiting) breaks it at the first unlock.

Real parts: a real county on loopback per example, real station data folders, the real Station.sync.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from central.services import calendar, ratings as county_ratings, retention as county_retention
from central.app import create_app as central_app
from central.county import CountyError
from node.settings import Settings as NodeSettings
from node.station import Station
from tests.conftest import CATALOG, add_station, make_county, serve
from tests.node.test_deferred import CLERK, deferred, opened, prepare, projections

N = 3       # cases to decide, rated cases to answer, and twice as many reports


class LockedStation(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="lm-locked-"))
        self.stack = contextlib.ExitStack()
        central, _tokens = make_county(self.root / "central")
        app = central_app(central)
        url = self.stack.enter_context(serve(app))
        self.county = app.state.county
        self.settings, self.token = add_station(central, url, self.root / "V1", "V1", "village")
        self.made = prepare(self.county, self.settings, self.token, N)
        shutil.copytree(self.settings.data, self.root / "twin")
        self.twin = opened(NodeSettings(data=self.root / "twin", sync_interval=3600), self.token)
        self.station: Station = opened(self.settings, None)       # starts as after a power cut
        self.year_days = 0

    def teardown(self) -> None:
        for s in (self.station, self.twin):
            s.store.close()
        self.stack.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # the county works, whatever the station does -----------------------------------------------
    @rule(i=st.integers(0, N - 1), how=st.sampled_from(["approve", "reject", "correction"]))
    def county_decides(self, i: int, how: str) -> None:
        extra = {"reason": "收入超过标准", "basis": "《社会救助暂行办法》第九条"} if how == "reject" else {}
        materials = [{"code": "id_card", "problem": "unclear", "text": "看不清"}] if how == "correction" else None
        try:
            self.county.decide(self.made["decide"][i], how, "依规办理", CLERK, materials, **extra)
        except CountyError:
            pass                            # decided already, or waiting on the citizen: a clerk's 409

    @rule(i=st.integers(0, N - 1))
    def county_answers_a_rating(self, i: int) -> None:
        try:
            county_ratings.answer(self.county, self.made["rated"][i], f"已整改{i}", CLERK)
        except CountyError:
            pass

    @rule(i=st.integers(0, 2 * N - 1), answer=st.booleans())
    def county_handles_a_report(self, i: int, answer: bool) -> None:
        try:
            if answer:
                self.county.answer_report(self.made["reports"][i], f"答复{i}", CLERK)
            else:
                self.county.take_report(self.made["reports"][i], CLERK)
        except CountyError:
            pass

    @rule()
    def county_publishes_a_catalogue(self) -> None:
        self.county.publish_catalog(CATALOG)

    @rule(days=st.integers(1, 3650))
    def county_sets_retention(self, days: int) -> None:
        county_retention.publish(self.county, days, "boss")

    @rule()
    def county_publishes_a_calendar(self) -> None:
        self.year_days += 1
        calendar.publish(self.county, 2031, [f"2031-02-{1 + self.year_days % 20:02d}"], [], "boss")

    # the station ---------------------------------------------------------------------------------
    @rule()
    def restart(self) -> None:
        self.station.store.close()
        self.station = opened(self.settings, None)

    @rule()
    def sync(self) -> None:
        self.station.sync()

    @precondition(lambda self: self.station.store.vault.locked)
    @rule()
    def unlock(self) -> None:
        assert self.station.store.user_by_token(self.token) is not None

    @precondition(lambda self: not self.station.store.vault.locked)
    @rule()
    def unlocked_sync_equals_the_twin(self) -> None:
        self.station.sync()
        # The twin is a copy of V1's disk, behind what V1 confirmed: the county sends it the same
        # events again only under a restore mark (PROTOCOL.md §8.5), as an installer would set.
        self.county.mark_restored("V1", "test: the twin is a copy of V1")
        self.twin.sync()
        assert deferred(self.station) == 0
        state = self.station.sync_state()
        assert not state["stalled"] and state["down_applied"] == state["down_received"], state["stall_reason"]
        assert projections(self.station) == projections(self.twin)

    @invariant()
    def nothing_waits_once_unlocked(self) -> None:
        if not self.station.store.vault.locked:
            assert deferred(self.station) == 0


LockedStation.TestCase.settings = settings(max_examples=6, stateful_step_count=14, deadline=None,
                                           suppress_health_check=[HealthCheck.too_slow])
test_a_station_locked_and_unlocked_at_any_time_applies_what_its_twin_applies = LockedStation.TestCase
