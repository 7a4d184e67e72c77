from __future__ import annotations

import sqlite3

import pytest

from crypto.keys import Identity
from sync import inbox, log, schema
from sync.errors import BadEvent

STATION = Identity.generate()
KEY = STATION.public.sign


def db_at(path):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    schema.create(conn)
    return conn


@pytest.fixture
def pair(tmp_path):
    return db_at(tmp_path / "station.db"), db_at(tmp_path / "county.db")


def write(db, n, start=0):
    return [log.append(db, STATION, stream="up/S1", author="S1", kind="application.accepted",
                       body={"n": start + i}).to_wire() for i in range(n)]


def take(db, events, applied=None):
    def apply(conn, ev):
        if applied is not None:
            applied.append(ev.seq)
    return inbox.accept(db, stream="up/S1", author="S1", author_sign_key=KEY, events=events, apply=apply)


def test_chain_is_dense_and_linked(pair):
    station, _ = pair
    evs = write(station, 3)
    assert [e["seq"] for e in evs] == [1, 2, 3]
    assert evs[0]["prev"] == log.GENESIS and evs[1]["prev"] == evs[0]["hash"]


def test_repeat_push_is_a_no_op(pair):
    station, county = pair
    evs = write(station, 3)
    applied = []
    assert take(county, evs, applied).stored == 3
    again = take(county, evs, applied)
    assert (again.stored, again.duplicates, again.high) == (0, 3, 3)
    assert applied == [1, 2, 3]


def test_out_of_order_waits_for_the_gap(pair):
    station, county = pair
    evs = write(station, 4)
    got = take(county, [evs[2], evs[3]])
    assert got.stored == 0 and got.gap_at == 1 and got.high == 0
    got = take(county, [evs[1], evs[0], evs[3], evs[2]])   # any order within a batch
    assert got.stored == 4 and got.high == 4


def test_fork_is_kept_aside_never_applied(pair, tmp_path):
    station, county = pair
    evs = write(station, 2)
    take(county, evs)
    # A restored-from-old-backup station writes a different event #2.
    other = db_at(tmp_path / "other.db")
    for e in evs[:1]:
        log.store(other, log.Event.from_wire(e))
    forked = log.append(other, STATION, stream="up/S1", author="S1", kind="x", body={"n": 99}).to_wire()
    applied = []
    got = take(county, [forked], applied)
    assert got.forks == [2] and applied == []
    assert log.get(county, "up/S1", 2).body == {"n": 1}   # the original stays
    assert inbox.forks(county)[0]["seq"] == 2


def test_bad_signature_refuses_the_whole_batch(pair):
    station, county = pair
    evs = write(station, 2)
    forged = dict(evs[1], body={"n": "forged"})
    with pytest.raises(BadEvent):
        take(county, [evs[0], forged])
    assert log.head(county, "up/S1") == (0, log.GENESIS)
    impostor = Identity.generate()
    e = log.append(db_at(":memory:"), impostor, stream="up/S1", author="S1", kind="k", body={}).to_wire()
    with pytest.raises(BadEvent):
        take(county, [e])


def test_poison_event_is_stored_acked_and_set_aside(pair, caplog):
    station, county = pair
    evs = write(station, 3)

    def apply(conn, ev):
        conn.execute("CREATE TABLE IF NOT EXISTS seen (n INTEGER)")
        conn.execute("INSERT INTO seen VALUES (?)", (ev.body["n"],))
        if ev.seq == 2:
            raise ValueError("retired item code")

    county.execute("BEGIN")
    got = inbox.accept(county, stream="up/S1", author="S1", author_sign_key=KEY, events=evs, apply=apply)
    county.execute("COMMIT")
    assert got.high == 3 and got.repairs and got.repairs[0][0] == 2
    assert [r[0] for r in county.execute("SELECT n FROM seen ORDER BY n")] == [0, 2]  # #2's effect rolled back
    # A clerk reads a plain sentence; the exception text goes to the log only.
    reason = inbox.repairs(county)[0]["reason"]
    assert "ValueError" not in reason and "internal error" in reason
    assert "ValueError: retired item code" in caplog.text
