"""The county rotates its own keys (PROTOCOL.md §10): announced to each station in county.keys_rotated
under the key that station trusts, old pushes, exports and scans still open, every old signature still
verifies, and keys never announced are refused. Real SQLite files, a real server on loopback."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from central.app import create_app as central_app
from central.county import County
from central.store import Store as CentralStore
from crypto import envelope
from crypto.errors import BadSignature
from crypto.keys import Identity
from node.services.scans import prepare
from node.settings import Settings as NodeSettings
from node.station import Station
from sync import exchange, log
from sync.errors import BadEvent
from tests.conftest import serve
from tests.sync.test_protocol_machine import form_for
from tests.sync.test_recovery import CLERK, cli, pair, round_trip, settle, take  # noqa: F401 (pair is a fixture)


def down_events(st: Station) -> list[log.Event]:
    with st.store.lock:
        return log.events_after(st.store.conn, log.down(st.code), 0, 10_000)


def photo() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, "JPEG")
    return out.getvalue()


def rotate(county: County) -> tuple[County, str]:
    """`lastmile central rotate-keys` on the stopped county; the county opened again."""
    data = str(county.settings.data)
    county.store.close()
    done = cli("central", "rotate-keys", "--data", data)
    assert done.returncode == 0, done.stderr
    county = County(county.settings)
    assert county.me.public.fingerprint() in done.stdout
    assert "announced to 1 active stations" in done.stdout
    return county, done.stdout


def test_county_rotation_with_cases_in_flight_everything_arrives_and_verifies(pair):
    county, st, root = pair
    old = county.me.public
    before = take(st, 1)
    round_trip(county, st)
    county.decide(before[0]["id"], "approve", "", CLERK)       # signed by the old key
    # In flight at the rotation: a USB export, a network push already sealed to the old key, a scan
    # sealed to the old key at intake.
    item = st.items()[0]
    exported = take(st, 1)
    usb = root / "before.lmb"
    st.export(usb)
    with_scan = st.take(item["code"], form_for(item, 7), "accept", "代办员",
                        attached=[prepare(item["materials"][0]["code"], "id.jpg", photo())])
    with st.store.transaction() as db:
        sealed_ahead = exchange.build_push(db, me=st.me, station=st.code, county=st.county.keys,
                                           county_name=st.county.name)
    assert envelope.parse(sealed_ahead.blob).header["to_key"] == old.enc_id

    county, printed = rotate(county)
    new = county.me.public
    assert new.sign_id != old.sign_id and new.fingerprint() in printed
    assert (county.settings.data / "keys.retired" / old.sign_id / "enc.pem").exists()

    # The USB answer (and the push sealed ahead) open with the old key; answers are still signed by it.
    answer_file = root / "before.lmb.answer"
    county.import_bundle(usb, answer_file)
    st.import_answers(answer_file)
    sealed = county.answer(sealed_ahead.blob)
    assert envelope.parse(sealed).header["from_key"] == old.sign_id
    with st.store.transaction() as db:
        exchange.apply_answer(db, sealed, me=st.me, station=st.code, county=st.county.keys,
                              county_name=st.county.name, apply=st.apply_down, fresh=True, expect=sealed_ahead.id)
    # The station learnt the new key from county.keys_rotated (signed by the old one) ...
    history = st.county_key_history()
    assert [k["sign_id"] for k in history] == [old.sign_id, new.sign_id]
    rotated = [e for e in down_events(st) if e.kind == "county.keys_rotated"]
    assert len(rotated) == 1 and rotated[0].key == old.sign_id and rotated[0].body == new.to_dict()
    assert history[1]["valid_from"] == rotated[0].seq + 1
    # ... and seals the next push to the new X25519 key.
    with st.store.transaction() as db:
        nxt = exchange.build_push(db, me=st.me, station=st.code, county=st.county.keys, county_name=st.county.name)
        db.execute("DELETE FROM _sync_sent WHERE id = ?", (nxt.id,))
    assert envelope.parse(nxt.blob).header["to_key"] == new.enc_id

    with serve(central_app(county.settings)) as url:
        settle(st, url)                                  # the county sees the station holds the event
        county.decide(exported[0]["id"], "reject", "材料不全", CLERK, reason="不符合条件", basis="《示范条例》第三条")
        county.decide(with_scan["id"], "approve", "", CLERK)
        after = take(st, 1)
        settle(st, url)
    decided = [e for e in down_events(st) if e.kind == "case.decided"]
    assert [e.key for e in decided] == [old.sign_id, new.sign_id, new.sign_id]
    mine = {a["id"]: a for a in st.store.applications(limit=100)}
    assert mine[before[0]["id"]]["status"] == "approved"
    assert mine[exported[0]["id"]]["status"] == "rejected"
    assert mine[with_scan["id"]]["status"] == "approved"
    # The scan sealed to the old key arrived and opens.
    case = county.store.case(with_scan["id"])
    scans = county.store.scans_of(with_scan["id"])
    assert scans and all(s["received_at"] for s in scans)
    assert county.scan_bytes(case, scans[0]["sha256"])[1] == "image/jpeg"
    # Every event of both logs verifies, old decisions with the old key, new ones with the new.
    for app in before + exported + after + [with_scan]:
        view = county.signed_case(county.store.case(app["id"]))
        assert view["signature"] == "valid"
    first = county.signed_case(county.store.case(before[0]["id"]))
    assert first["decision_key"]["sign_id"] == old.sign_id and first["decision_key"]["valid"]
    last = county.signed_case(county.store.case(exported[0]["id"]))
    assert last["decision_key"]["sign_id"] == new.sign_id and last["decision_key"]["valid"]
    # The station keeps the old key across a restart, and shows who signed each decision.
    st.store.close()
    st2 = Station(NodeSettings(data=st.settings.data))
    try:
        assert [k["sign_id"] for k in st2.county_key_history()] == [old.sign_id, new.sign_id]
        assert st2.county.keys.enc == new.enc and st2.county.keys.sign == new.sign
        shown = st2.decision_keys()
        assert shown[before[0]["id"]] == old.sign_id and shown[exported[0]["id"]] == new.sign_id
        # The station's API and the county's API name the county key that signed the decision.
        from central.http.pages import case_json
        from node.http.common import app_json
        assert app_json(st2, st2.store.application(before[0]["id"]))["decision"]["county_key"] == old.sign_id
        assert app_json(st2, st2.store.application(exported[0]["id"]))["decision"]["county_key"] == new.sign_id
        api = case_json(county, county.store.case(before[0]["id"]))["decision_key"]
        assert api["sign_id"] == old.sign_id and api["valid"] and not api["current"]
    finally:
        st2.store.close()
    st.store = type(st.store)(st.settings.db_path)      # for the fixture's teardown


def test_a_forged_county_keys_rotated_is_refused_and_teaches_no_key(pair):
    county, st, _ = pair
    forger = Identity.generate()
    with county.store.transaction() as db:       # slipped into the county's log under an unknown key
        log.append(db, forger, stream=log.down(st.code), author=county.name, kind="county.keys_rotated",
                   body=forger.public.to_dict())
    before = down_events(st)
    with pytest.raises(BadEvent, match="not on record"):
        round_trip(county, st)
    assert down_events(st) == before
    assert [k["sign_id"] for k in st.county_key_history()] == [county.me.public.sign_id]
    assert st.county.keys.enc == county.me.public.enc       # still seals to the only key it holds


def test_an_answer_from_a_county_key_never_announced_is_refused(pair):
    county, st, _ = pair
    with st.store.transaction() as db:
        push = exchange.build_push(db, me=st.me, station=st.code, county=st.county.keys, county_name=st.county.name)
    forged = envelope.seal({"ack": 0, "events": [], "in_reply_to": push.id}, sender=Identity.generate(),
                           sender_name=county.name, recipient=st.me.public, recipient_name=st.code, kind="answer",
                           extra={"ack": 0, "first": 0, "last": 0, "in_reply_to": push.id})
    with st.store.transaction() as db:
        with pytest.raises(BadSignature) as caught:
            exchange.apply_answer(db, forged, me=st.me, station=st.code, county=st.county.keys,
                                  county_name=st.county.name, apply=st.apply_down, fresh=True)
    assert caught.value.code == "bad_signature"


def test_a_push_sealed_to_a_key_the_county_never_had_is_refused(pair):
    county, st, _ = pair
    with st.store.transaction() as db:
        push = exchange.build_push(db, me=st.me, station=st.code, county=Identity.generate().public,
                                   county_name=st.county.name)
    with pytest.raises(Exception, match="key it holds"):
        county.answer(push.blob)


def test_two_rotations_before_a_station_syncs_are_both_taken_in_order(pair):
    county, st, _ = pair
    k0 = county.me.public
    county, _ = rotate(county)
    k1 = county.me.public
    county, _ = rotate(county)
    k2 = county.me.public
    with serve(central_app(county.settings)) as url:
        settle(st, url)
        rotated = [e for e in down_events(st) if e.kind == "county.keys_rotated"]
        assert [(e.key, e.body["sign"]) for e in rotated] == [(k0.sign_id, k1.sign), (k0.sign_id, k2.sign)]
        assert [k["sign_id"] for k in st.county_key_history()] == [k0.sign_id, k1.sign_id, k2.sign_id]
        taken = take(st, 1)
        settle(st, url)
        county.decide(taken[0]["id"], "approve", "", CLERK)
        settle(st, url)
    assert st.decision_keys()[taken[0]["id"]] == k2.sign_id
    assert st.county.keys.enc == k2.enc
    assert {a["id"]: a["status"] for a in st.store.applications(limit=10)} == {taken[0]["id"]: "approved"}


def test_a_county_keys_rotated_with_a_bad_body_is_set_aside_and_teaches_no_key(pair):
    county, st, _ = pair
    with county.store.transaction() as db:
        ev = log.append(db, county.me, stream=log.down(st.code), author=county.name, kind="county.keys_rotated",
                        body={"sign": county.me.public.sign, "enc": "short", "extra": 1})
    round_trip(county, st)
    assert ev.seq in [e.seq for e in down_events(st)]                  # stored and acknowledged ...
    with st.store.lock:
        reasons = [r for r in __import__("sync.inbox", fromlist=["repairs"]).repairs(st.store.conn)]
    assert [r["seq"] for r in reasons] == [ev.seq]                      # ... set aside for repair
    assert [k["sign_id"] for k in st.county_key_history()] == [county.me.public.sign_id]


def test_a_rotation_cut_short_is_finished_or_dropped_when_the_county_starts(pair):
    county, st, root = pair
    data, settings = county.settings.data, county.settings
    before = county.me.public.sign_id
    county.store.close()
    Identity.generate().save(data / "keys.next")             # new keys written, never announced
    county = County(settings)
    assert county.me.public.sign_id == before and not (data / "keys.next").exists()
    county.store.close()
    announced = Identity.generate()
    announced.save(data / "keys.next")                       # announced, but the key files not moved yet
    store = CentralStore(settings.db_path)
    with store.transaction() as db:
        store.set_meta(db, "county_sign_id", announced.public.sign_id)
    store.close()
    county = County(settings)
    try:
        assert county.me.public.sign_id == announced.public.sign_id and not (data / "keys.next").exists()
    finally:
        county.store.close()
    county.store = type(county.store)(settings.db_path)


@pytest.mark.real_kdf          # `station add` runs in a subprocess, the enrolment in this one: same scrypt
def test_a_station_restored_or_replaced_after_a_county_rotation_gets_every_old_decision(pair):
    """A station restored from a backup taken before the rotation still opens the county's answers
    (signed by the key it holds) and learns the new key in order; a new PC enrolled after the
    rotation knows only the new key, and the older events come with the keys the county vouches for."""
    import shutil
    from node.services.enrolment import enroll
    county, st, root = pair
    old = county.me.public
    taken = take(st, 2)
    round_trip(county, st)
    county.decide(taken[0]["id"], "approve", "", CLERK)
    round_trip(county, st)
    st.store.close()
    shutil.copytree(st.settings.data, root / "S1-backup")          # before the rotation
    st.store = type(st.store)(st.settings.db_path)
    county, _ = rotate(county)
    with serve(central_app(county.settings)) as url:
        settle(st, url)
        county.decide(taken[1]["id"], "reject", "不符合条件", CLERK, reason="不符合条件", basis="《示范条例》第三条")   # signed by the new key
        settle(st, url)
        st.store.close()
        shutil.rmtree(st.settings.data)
        shutil.copytree(root / "S1-backup", st.settings.data)       # restored: knows only the old key
        st = Station(NodeSettings(data=st.settings.data))
        county.mark_restored("S1", "installer")         # INSTALL §6: the county gives records back only then
        settle(st, url)
        mine = {a["id"]: a["status"] for a in st.store.applications(limit=100)}
        assert mine == {taken[0]["id"]: "approved", taken[1]["id"]: "rejected"}
        assert [k["sign_id"] for k in st.county_key_history()] == [old.sign_id, county.me.public.sign_id]

        data = str(county.settings.data)
        county.store.close()
        added = cli("central", "station", "add", "--code", "S1", "--replace", "--data", data)
        assert added.returncode == 0, added.stderr
        otp = added.stdout.split("code (valid 72 h, one use, wrong tries only slow it down): ")[1].split()[0]
        county = County(county.settings)
        new_data = root / "S1-new"
        enroll(NodeSettings(data=new_data), central_url=url, station="S1", code=otp,
               fingerprint=county.me.public.fingerprint())
        new = Station(NodeSettings(data=new_data))
        try:
            assert [k["sign_id"] for k in new.county_key_history()] == [county.me.public.sign_id]
            settle(new, url)
            mine = {a["id"]: a["status"] for a in new.store.applications(limit=100)}
            assert mine == {taken[0]["id"]: "approved", taken[1]["id"]: "rejected"}
            shown = new.decision_keys()
            assert shown[taken[0]["id"]] == old.sign_id and shown[taken[1]["id"]] == county.me.public.sign_id
            # It never took the old key as one to seal to or take envelopes from.
            assert [k["sign_id"] for k in new.county_key_history()] == [county.me.public.sign_id]
        finally:
            new.store.close()
    st.store.close()
    st.store = type(st.store)(st.settings.db_path)     # for the fixture's teardown


def test_the_stations_page_lists_the_county_keys_and_who_is_still_on_the_old_one(pair, http):
    from tests.conftest import PASSWORD, log_in
    county, st, _ = pair
    old = county.me.public
    county, _ = rotate(county)
    county.add_user("boss", "督办", PASSWORD, "supervisor", None)
    with serve(central_app(county.settings)) as url:
        web, _ = log_in(http, url, "boss")
        page = web.get("/stations").text
        assert 'id="county-keys"' in page and old.fingerprint() in page
        assert county.me.public.fingerprint() in page and 'id="on-old-key"' in page and "S1" in page
        settle(st, url)                              # takes the announcement ...
        settle(st, url)                              # ... and the county sees it holds it
        page = web.get("/stations").text
        assert 'id="county-keys"' in page and 'id="on-old-key"' not in page
