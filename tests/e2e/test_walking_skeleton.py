"""One application from a village station to the county and its result back, through the APIs."""

from __future__ import annotations

from tests.conftest import PASSWORD, csrf_of, log_in

from sync.law.intake import valid_id_for_demo

ID = valid_id_for_demo("41152119580312001")


def full_application(item: dict, decision: str = "accept") -> dict:
    fields = {}
    for f in item["fields"]:
        fields[f["name"]] = {"int": "3", "date": "2026-01-05", "select": (f.get("options") or [{"value": ""}])[0]["value"]}.get(
            f["type"], "家中困难，申请办理")
    return {"item": item["code"], "decision": decision,
            "applicant": {"name": "李秀英", "id_number": ID, "phone": "13800138000", "address": "张村三组12号"},
            "fields": fields, "materials": [m["code"] for m in item["materials"]]}


def test_application_reaches_county_and_result_comes_back(system, http):
    client = http
    v1 = system.stations["V1"]
    node = client(v1["url"], v1["token"])
    central = client(system.central_url, system.central_token)

    # 1. The village station got the county's catalogue at enrolment; it only offers village items.
    assert node.post("/api/v1/sync").status_code == 200
    catalog = node.get("/api/v1/catalog").json()
    assert len(catalog["items"]) >= 8 and all("village" in i["levels"] for i in catalog["items"])
    item = next(i for i in catalog["items"] if i["code"].startswith("MZ"))

    # 2. The agent accepts: a receipt number and a promised date, signed locally.
    r = node.post("/api/v1/applications", json=full_application(item))
    assert r.status_code == 201, r.text
    app = r.json()
    assert app["status"] == "accepted" and app["receipt_no"].startswith("V1-") and app["promised_date"]
    assert node.get("/api/v1/status").json()["sync"]["up_waiting"] == 1

    # 3. Sync: the application reaches the county; the station sees nothing waiting.
    moved = node.post("/api/v1/sync").json()
    assert moved["sent"] == 1 and moved["state"]["up_waiting"] == 0 and moved["state"]["last_contact"]
    assert node.get(f"/api/v1/applications/{app['id']}").json()["status"] == "received"

    # 4. The county sees it, in the right department, with a verified station signature.
    cases = central.get("/api/v1/cases", params={"station": "V1", "status": "received"}).json()["cases"]
    assert [c["id"] for c in cases] == [app["id"]]
    assert cases[0]["signature"] == "valid" and cases[0]["department"] == item["department"]
    clerk = client(system.central_url, system.clerk_tokens[item["department"]])
    assert clerk.post(f"/api/v1/cases/{app['id']}/decision", json={"decision": "reject"}).status_code == 422
    other = next(t for d, t in system.clerk_tokens.items() if d not in (item["department"], "supervisor"))
    assert client(system.central_url, other).post(f"/api/v1/cases/{app['id']}/decision",
                                                  json={"decision": "approve"}).status_code == 403
    r = clerk.post(f"/api/v1/cases/{app['id']}/decision", json={"decision": "approve", "note": "符合条件，予以批准"})
    assert r.status_code == 200 and r.json()["status"] == "approved"
    assert clerk.post(f"/api/v1/cases/{app['id']}/decision", json={"decision": "approve"}).status_code == 409

    # 5. The decision flows down; the station hands it out; the hand-out goes up.
    assert node.post("/api/v1/sync").json()["received"] >= 1
    got = node.get(f"/api/v1/applications/{app['id']}").json()
    assert got["status"] == "approved" and got["decision"]["note"] == "符合条件，予以批准"
    login, home = log_in(http, v1["url"], "agent")
    assert "李秀英" in home.text and f"/applications/{app['id']}/handout" in home.text
    unchecked = login.post(f"/applications/{app['id']}/handout", data={"csrf": csrf_of(login)})
    assert unchecked.status_code == 422 and "核验" in unchecked.text      # the identity check is not optional
    r = login.post(f"/applications/{app['id']}/handout", data={"csrf": csrf_of(login), "collector": "applicant",
                                                             "identity_checked": "1"})
    assert r.status_code == 200
    assert node.get(f"/api/v1/applications/{app['id']}").json()["handed_out_at"]
    node.post("/api/v1/sync")
    assert central.get(f"/api/v1/cases/{app['id']}").json()["status"] == "handed_out"


def test_correction_notice_and_refusal_at_the_station(system, http):
    client = http
    t1 = system.stations["T1"]
    node = client(t1["url"], t1["token"])
    node.post("/api/v1/sync")
    item = node.get("/api/v1/catalog").json()["items"][0]
    required = [m["code"] for m in item["materials"] if m["required"]]
    bad = full_application(item)
    bad["materials"] = required[1:]
    r = node.post("/api/v1/applications", json=bad)          # accept with a required material missing
    assert r.status_code == 422 and "materials" in r.json()["details"]
    bad["decision"] = "correction"
    r = node.post("/api/v1/applications", json=bad)
    assert r.status_code == 201 and r.json()["status"] == "correction_notice"
    assert r.json()["missing"] == required[:1]
    refuse = full_application(item, "refuse")
    assert node.post("/api/v1/applications", json=refuse).status_code == 422   # a refusal needs a reason
    refuse["reason"] = "不属于本事项受理范围"
    assert node.post("/api/v1/applications", json=refuse).json()["status"] == "refused"
    node.post("/api/v1/sync")
    statuses = {c["status"] for c in client(system.central_url, system.central_token)
                .get("/api/v1/cases", params={"station": "T1"}).json()["cases"]}
    assert statuses == {"correction_notice", "refused"}


def test_bad_input_is_refused_with_a_clear_message(system, http):
    client = http
    v1 = system.stations["V1"]
    node = client(v1["url"], v1["token"])
    node.post("/api/v1/sync")
    item = node.get("/api/v1/catalog").json()["items"][0]
    app = full_application(item)
    app["applicant"]["id_number"] = ID[:-1] + ("0" if ID[-1] != "0" else "1")
    r = node.post("/api/v1/applications", json=app)
    assert r.status_code == 422 and "applicant.id_number" in r.json()["details"]
    app["applicant"] = {"name": "", "id_number": ID}
    r = node.post("/api/v1/applications", json=app)
    assert r.status_code == 422 and "applicant.name" in r.json()["details"]
    assert node.post("/api/v1/applications", content=b"{not json").status_code == 400
    assert http(v1["url"]).get("/api/v1/catalog").status_code == 401
    assert node.get("/api/v1/status").json()["sync"]["up_written"] == 0     # nothing was recorded


def test_script_in_a_name_is_shown_as_text_on_both_pages(system, http):
    v1 = system.stations["V1"]
    node = http(v1["url"], v1["token"])
    node.post("/api/v1/sync")
    item = next(i for i in node.get("/api/v1/catalog").json()["items"] if i["code"].startswith("MZ"))
    app = full_application(item)
    app["applicant"]["name"] = "<script>alert(1)</script>"
    created = node.post("/api/v1/applications", json=app).json()
    node.post("/api/v1/sync")
    for url, path, user in ((v1["url"], f"/applications/{created['id']}/document", "agent"),
                            (system.central_url, f"/cases/{created['id']}", "boss")):
        page, _ = log_in(http, url, user)
        html = page.get(path).text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html


def test_a_form_post_without_the_page_token_is_refused(system, http):
    page = http(system.stations["V1"]["url"])
    r = page.post("/login", data={"username": "agent", "password": PASSWORD})
    assert r.status_code == 400 and "页面已过期" in r.text


def test_a_wrong_password_is_told_in_chinese(system, http):
    _, r = log_in(http, system.central_url, "boss", "nope")
    assert r.status_code == 401 and "用户名或密码错误" in r.text
