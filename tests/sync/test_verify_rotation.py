"""Documents across a station's key rotation (PROTOCOL.md §11): a reprint of an old document is
signed by the retired key that signed its event, and the new directory reaches the station."""

from __future__ import annotations

import json

from central.services import verify as county_verify
from central.app import create_app as central_app
from node.services import verify as station_verify
from tests.conftest import serve
from tests.sync.test_recovery import pair, settle, take  # noqa: F401 - pair is a fixture


def test_old_and_new_documents_verify_after_a_rotation_and_the_directory_follows(pair):  # noqa: F811
    county, st, _ = pair
    first = take(st, 1)[0]
    old_key = st.me.public.sign_id
    old_qr = station_verify.qr_text(st, st.store.application(first["id"]))
    with serve(central_app(county.settings)) as url:
        settle(st, url)
        st.rotate_keys()
        settle(st, url)                  # the county stores the announcement
        settle(st, url)                  # the station switches; its first push with the new key makes it current
        new_key = st.me.public.sign_id
        assert new_key != old_key
        second = take(st, 1)[0]
        settle(st, url)
    # A reprint of the old document: the same text, signed by the retired key.
    assert station_verify.qr_text(st, st.store.application(first["id"])) == old_qr
    new_qr = station_verify.qr_text(st, st.store.application(second["id"]))
    for text, key in ((old_qr, old_key), (new_qr, new_key)):
        at_county, at_station = county_verify.check(county, text), station_verify.check(st, text)
        assert at_county["valid"] and at_station["valid"] and at_county["key_id"] == at_station["key_id"] == key
    # The station holds the county's newest directory: both keys, the old one retired.
    held = json.loads(st.store.meta(station_verify.META))
    keys = {k["sign_id"]: k for s in held["stations"] if s["code"] == st.code for k in s["keys"]}
    assert set(keys) == {old_key, new_key} and keys[old_key]["valid_until"] and keys[new_key]["valid_until"] is None
