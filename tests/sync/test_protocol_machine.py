"""Random interleavings of intake, decisions, pushes, lost and repeated messages, stale answers,
USB round trips and restarts: the county ends with exactly the station's log and the station with
exactly the county's downstream log, every application applied once."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from central.county import County, Settings as CentralSettings
from crypto.keys import Identity
from node.services import enrolment as enroll
from sync.law.intake import valid_id_for_demo
from node.settings import Settings as NodeSettings
from node.station import Station
from node.store import Store as NodeStore
from sync import enrolment, exchange, log

CATALOG = json.loads((Path(__file__).resolve().parents[2] / "central" / "catalog_demo.json").read_text("utf-8"))
CLERK = {"name": "科员", "role": "supervisor", "department": None}


def make_pair(root: Path) -> tuple[County, Station]:
    csettings = CentralSettings(data=root / "central")
    County.init(csettings)
    county = County(csettings)
    county.publish_catalog(CATALOG)
    otp = county.add_station("S1", "一号站", "village")
    nsettings = NodeSettings(data=root / "S1")
    nsettings.data.mkdir(parents=True)
    Identity.generate().save(nsettings.key_dir)
    keys = Identity.load(nsettings.key_dir).public
    answer = county.enroll("S1", keys, enrolment.request_mac(
        enrolment.mac_key(otp, "S1"), station="S1", station_keys=keys.to_dict(), county_name=county.name,
        county_keys=county.me.public.to_dict()))
    store = NodeStore(nsettings.db_path)
    enroll.record(store, station="S1", central_url="http://unused.invalid", answer=answer)
    return county, Station(nsettings, store)


def form_for(item: dict, n: int) -> dict:
    form = {"name": f"申请人{n}", "id_number": valid_id_for_demo(f"110105198001{n % 28 + 1:02d}001"),
            "materials": [m["code"] for m in item["materials"]]}
    for f in item["fields"]:
        form["f_" + f["name"]] = {"int": "2", "date": "2026-01-01"}.get(
            f["type"], (f.get("options") or [{"value": "文本"}])[0]["value"])
    return form


def events(db_conn, stream: str) -> list[tuple[int, str]]:
    return [(int(r[0]), r[1]) for r in db_conn.execute(
        "SELECT seq, hash FROM _sync_events WHERE stream = ? ORDER BY seq", (stream,)).fetchall()]


class Protocol(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="lm-machine-"))
        self.county, self.station = make_pair(self.root)
        self.answers: list[bytes] = []
        self.accepted: set[str] = set()
        self.n = 0
        self.exchange()          # the first contact brings the catalogue

    # transport -------------------------------------------------------------
    def push(self, **kw: int | None) -> bytes:
        with self.station.store.transaction() as db:
            return exchange.build_push(db, me=self.station.me, station="S1", county=self.station.county.keys,
                                       county_name=self.station.county.name, **kw).blob

    def answer(self, blob: bytes) -> bytes:
        with self.county.store.transaction() as db:
            sealed, _ = exchange.answer_push(db, blob, me=self.county.me, county_name=self.county.name,
                                             station_keys=self.county.station_keys, apply=self.county.apply_up)
        return sealed

    def take_answer(self, sealed: bytes) -> None:
        with self.station.store.transaction() as db:
            exchange.apply_answer(db, sealed, me=self.station.me, station="S1", county=self.station.county.keys,
                                  county_name=self.station.county.name, apply=self.station.apply_down)
            self.station.mark_received(db, log.acked(db, "up/S1"))

    def exchange(self, limit: int = 500, lose_answer: bool = False, duplicate: bool = False) -> None:
        blob = self.push(limit=limit)
        sealed = self.answer(blob)
        if duplicate:
            sealed = self.answer(blob)
        self.answers.append(sealed)
        if not lose_answer:
            self.take_answer(sealed)

    # rules -------------------------------------------------------------------
    @rule(k=st.integers(1, 3))
    def accept(self, k: int) -> None:
        item = self.station.items()[self.n % len(self.station.items())]
        for _ in range(k):
            self.n += 1
            app = self.station.take(item["code"], form_for(item, self.n), "accept", "代办员")
            self.accepted.add(app["id"])

    @rule(limit=st.integers(1, 6), lose_answer=st.booleans(), duplicate=st.booleans())
    def sync_round(self, limit: int, lose_answer: bool, duplicate: bool) -> None:
        self.exchange(limit, lose_answer, duplicate)

    @rule(after=st.integers(0, 20))
    def request_lost_or_sent_from_an_old_cursor(self, after: int) -> None:
        blob = self.push(after=after, limit=3)   # a delayed duplicate of an old request arriving now
        self.answers.append(self.answer(blob))

    @precondition(lambda self: self.answers)
    @rule(i=st.integers(0, 1000))
    def stale_answer_arrives_late(self, i: int) -> None:
        self.take_answer(self.answers[i % len(self.answers)])

    @rule()
    def county_decides(self) -> None:
        open_cases = self.county.store.cases(status="received", limit=1)
        if open_cases:
            self.county.decide(open_cases[0]["id"], "approve", "", CLERK)

    @rule(lose_answer_file=st.booleans())
    def usb_round_trip(self, lose_answer_file: bool) -> None:
        stick = self.root / "stick.bundle"
        self.station.export(stick)
        self.county.import_bundle(stick, self.root / "stick.answer")
        if not lose_answer_file:
            self.station.import_answers(self.root / "stick.answer")

    @rule()
    def restart_both(self) -> None:
        self.station.store.close()
        self.county.store.close()
        self.county = County(CentralSettings(data=self.root / "central"))
        self.station = Station(NodeSettings(data=self.root / "S1"))

    # invariants --------------------------------------------------------------
    @invariant()
    def logs_are_prefixes_and_never_fork(self) -> None:
        up_s = events(self.station.store.conn, "up/S1")
        up_c = events(self.county.store.conn, "up/S1")
        down_c = events(self.county.store.conn, "down/S1")
        down_s = events(self.station.store.conn, "down/S1")
        assert up_c == up_s[:len(up_c)]
        assert down_s == down_c[:len(down_s)]
        for conn in (self.station.store.conn, self.county.store.conn):
            assert conn.execute("SELECT count(*) FROM _sync_forks").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM _sync_repairs").fetchone()[0] == 0

    def teardown(self) -> None:
        try:
            for _ in range(100):
                self.exchange()
                with self.station.store.transaction() as db:
                    done = (log.acked(db, "up/S1") == log.head(db, "up/S1")[0])
                if done and events(self.station.store.conn, "down/S1") == events(self.county.store.conn, "down/S1"):
                    break
            assert events(self.county.store.conn, "up/S1") == events(self.station.store.conn, "up/S1")
            assert events(self.station.store.conn, "down/S1") == events(self.county.store.conn, "down/S1")
            ids = [r[0] for r in self.county.store.conn.execute("SELECT id FROM cases").fetchall()]
            assert sorted(ids) == sorted(self.accepted)
            decided = {r[0]: r[1] for r in self.county.store.conn.execute("SELECT id, status FROM cases").fetchall()}
            at_station = {r[0]: r[1] for r in self.station.store.conn.execute("SELECT id, status FROM applications")}
            for case_id, status in decided.items():
                assert at_station[case_id] == {"received": "received", "approved": "approved"}[status]
        finally:
            self.station.store.close()
            self.county.store.close()
            shutil.rmtree(self.root, ignore_errors=True)


Protocol.TestCase.settings = settings(max_examples=25, stateful_step_count=25, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
TestProtocol = Protocol.TestCase
