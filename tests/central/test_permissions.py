"""What a county clerk may read: only its own department's cases, on pages and through the API,
scans included; and case lists that are paged, never silently cut short."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from central.county import County, CountyError, Settings
from sync.law.intake import valid_id_for_demo
from node.services.scans import prepare
from node.station import Station
from tests.conftest import PASSWORD, csrf_of, log_in

ID = valid_id_for_demo("41152119580312001")


def form_for(item: dict, n: int = 0) -> dict:
    form = {"name": f"李秀英{n}", "id_number": ID, "phone": "13800138000", "address": "张村三组12号",
            "reason": "家中困难，申请办理", "materials": [m["code"] for m in item["materials"]]}
    for f in item["fields"]:
        form["f_" + f["name"]] = {"int": "3", "date": "2026-01-05",
                                  "select": (f.get("options") or [{"value": ""}])[0]["value"]}.get(f["type"], "家中困难")
    return form


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture
def station(system):
    st = Station(system.stations["V1"]["settings"])
    st.store.user_by_token(system.stations["V1"]["token"])   # unlocks (node/vault.py)
    st.sync()                                            # the catalogue
    yield st
    st.store.close()


@pytest.fixture
def one_case(system, station):
    """A case with one scan that reached the county, with its department and another one."""
    item = station.items()[0]
    scan = prepare(item["materials"][0]["code"], "id.jpg", jpeg())
    app = station.take(item["code"], form_for(item), "accept", "代办员", [scan])
    station.sync()
    other = next(d for d in system.clerk_tokens if d not in ("supervisor", item["department"]))
    return {"id": app["id"], "receipt": app["receipt_no"], "sha": scan.sha256, "dept": item["department"],
            "other": other}


def test_a_clerk_of_another_department_cannot_open_the_case_its_scans_or_decide(system, http, one_case):
    case, own, other = one_case["id"], one_case["dept"], one_case["other"]
    assert http(system.central_url, system.central_token).get(f"/api/v1/cases/{case}").json()["scans_complete"]

    # Pages: the other department's clerk does not see it in the queue, nor by its URL.
    page, home = log_in(http, system.central_url, other)
    assert home.status_code == 200 and one_case["receipt"] not in home.text
    for url in (f"/cases/{case}", f"/cases/{case}/scans/{one_case['sha']}"):
        r = page.get(url)
        assert r.status_code == 403, url
        assert "该办件属于其他部门" in r.text and ID not in r.text and "张村三组12号" not in r.text
        assert not r.headers["content-type"].startswith("image/")
    r = page.post(f"/cases/{case}/decision", data={"decision": "approve", "csrf": csrf_of(page)})
    assert r.status_code == 403 and ID not in r.text

    # The API: the list leaves it out, one case and a decision are refused with a JSON error.
    api = http(system.central_url, system.clerk_tokens[other])
    listed = api.get("/api/v1/cases").json()
    assert case not in [c["id"] for c in listed["cases"]] and listed["total"] == 0
    r = api.get("/api/v1/cases", params={"department": own})
    assert r.status_code == 403 and r.json()["error"] == "other_department"
    r = api.get(f"/api/v1/cases/{case}")
    assert r.status_code == 403 and r.json()["error"] == "other_department" and ID not in r.text
    assert set(r.json()) == {"error", "message", "details"}
    r = api.post(f"/api/v1/cases/{case}/decision", json={"decision": "approve"})
    assert r.status_code == 403 and ID not in r.text
    assert http(system.central_url, system.central_token).get(f"/api/v1/cases/{case}").json()["status"] == "received"

    # Its own department's clerk reads everything, and the supervisor too.
    page, home = log_in(http, system.central_url, own)
    assert one_case["receipt"] in home.text
    r = page.get(f"/cases/{case}")
    assert r.status_code == 200 and ID in r.text
    r = page.get(f"/cases/{case}/scans/{one_case['sha']}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    mine = http(system.central_url, system.clerk_tokens[own])
    assert [c["id"] for c in mine.get("/api/v1/cases").json()["cases"]] == [case]
    assert mine.get(f"/api/v1/cases/{case}").json()["id_number"] == ID
    boss, home = log_in(http, system.central_url, "boss")
    assert one_case["receipt"] in home.text and boss.get(f"/cases/{case}/scans/{one_case['sha']}").status_code == 200


def test_a_clerk_needs_a_department_of_the_catalogue(system):
    county = County(Settings(data=system.data / "central"))
    try:
        for dept in ("nosuch", None, ""):
            with pytest.raises(CountyError) as err:
                county.add_user("clerk9", "新科员", PASSWORD, "clerk", dept)
            assert err.value.code == "unknown_department"
        assert county.store.user("username", "clerk9") is None
        county.add_user("clerk9", "新科员", PASSWORD, "clerk", "minzheng")
        assert county.store.user("username", "clerk9")["department"] == "minzheng"
    finally:
        county.store.close()


def test_the_case_list_is_paged_with_a_total_and_never_cut_short(system, http, station):
    items = [i for i in station.items() if i["department"] == "minzheng"]
    others = [i for i in station.items() if i["department"] != "minzheng"]
    t = time.monotonic()
    for n in range(520):
        item = items[n % len(items)] if n < 480 else others[n % len(others)]
        station.take(item["code"], form_for(item, n), "accept", "代办员")
    while station.sync_state()["up_waiting"]:
        station.sync()
    assert time.monotonic() - t < 240

    api = http(system.central_url, system.central_token)
    first = api.get("/api/v1/cases").json()
    assert first["total"] == 520 and len(first["cases"]) == 50 and first["next_offset"] == 50
    seen, url = [], "/api/v1/cases?limit=500"
    while url:
        page = api.get(url).json()
        assert page["total"] == 520
        seen += [c["id"] for c in page["cases"]]
        url = page["next"]
    assert len(seen) == 520 == len(set(seen))
    assert page["next"] is None and page["next_offset"] is None

    # Filters hold across pages.
    clerk = http(system.central_url, system.clerk_tokens["minzheng"])
    mz = clerk.get("/api/v1/cases", params={"limit": 100, "offset": 400, "status": "received"}).json()
    assert mz["total"] == 480 and len(mz["cases"]) == 80 and mz["next"] is None
    assert {c["department"] for c in mz["cases"]} == {"minzheng"}

    # Bad paging gets a 422 with the reason, never a quietly different list.
    for params in ({"limit": "0"}, {"limit": "501"}, {"limit": "x"}, {"offset": "-1"}, {"page": "2"},
                   {"status": "nonsense"}):
        r = api.get("/api/v1/cases", params=params)
        assert r.status_code == 422, params
        assert r.json()["error"] == "invalid" and set(r.json()["details"]) == set(params)

    # The county's queue page says how many there are and links to the next and previous pages.
    page, home = log_in(http, system.central_url, "minzheng")
    assert "共 480 件" in home.text and 'rel="next"' in home.text and 'rel="prev"' not in home.text
    last = page.get("/?status=received&offset=450")
    assert "第 451–480 件" in last.text and 'rel="prev"' in last.text and 'rel="next"' not in last.text
    assert last.text.count("/cases/") == 30
    assert page.get("/?offset=abc").status_code == 422


def test_a_case_that_is_not_there_has_one_error_code_for_reading_and_deciding(system, http):
    api = http(system.central_url, system.central_token)
    missing = "00000000-0000-4000-8000-000000000000"
    read = api.get(f"/api/v1/cases/{missing}")
    decide = api.post(f"/api/v1/cases/{missing}/decision", json={"decision": "approve"})
    assert (read.status_code, read.json()["error"]) == (404, "not_found")
    assert (decide.status_code, decide.json()["error"]) == (404, "not_found")
