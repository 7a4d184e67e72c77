"""Exactly one case per submission: a double click, the back button or a retried API call never
makes a second case (node/services/idem.py), through real servers."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import pytest

from node.app import create_app as node_app
from node.store import Store as NodeStore
from tests.conftest import PASSWORD, log_in, serve, stored
from tests.node.test_bundles import BIRTH, FIELDS, ID
from tests.sync.test_protocol_machine import form_for


def hidden(page: str, name: str) -> str:
    return page.split(f'name="{name}" value="')[1].split('"')[0]


def cases_at(settings: Any) -> int:
    conn = sqlite3.connect(settings.db_path)
    try:
        return int(conn.execute("SELECT count(*) FROM applications").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def v1(system, http) -> dict[str, Any]:
    """Station V1 with its catalogue, an API client and an item with materials."""
    v1 = system.stations["V1"]
    api = http(v1["url"], v1["token"])
    assert api.post("/api/v1/sync").status_code == 200                      # the catalogue
    item = next(i for i in api.get("/api/v1/catalog").json()["items"] if i["materials"])
    return {**v1, "api": api, "item": item, "form": form_for(item, 3)}


def payload_of(item: dict[str, Any], form: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"item": item["code"], "decision": "accept", "applicant": {k: form[k] for k in ("name", "id_number")},
            "fields": {k[2:]: v for k, v in form.items() if k.startswith("f_")}, "materials": form["materials"],
            **extra}


def opened_form(http: Any, v1: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    """A logged-in agent's browser with the intake form open: (client, the form's hidden fields)."""
    page, _ = log_in(http, v1["url"], "agent")
    shown = page.get(f"/apply/{v1['item']['code']}")
    assert shown.status_code == 200
    return page, {"csrf": hidden(shown.text, "csrf"), "submit_token": hidden(shown.text, "submit_token")}


def test_the_form_sent_twice_makes_one_case_and_shows_the_same_receipt(v1, http):
    page, hidden_fields = opened_form(http, v1)
    path = f"/apply/{v1['item']['code']}"
    data = {**v1["form"], **hidden_fields, "decision": "accept"}
    first = page.post(path, data=data, follow_redirects=False)
    again = page.post(path, data=data, follow_redirects=False)                      # the double click
    back = page.post(path, data={**data, "decision": "correction"}, follow_redirects=False)  # back, resubmit
    assert first.status_code == again.status_code == back.status_code == 303
    assert first.headers["location"] == again.headers["location"] == back.headers["location"]
    app_id = first.headers["location"].split("/")[2]
    receipt_no = v1["api"].get(f"/api/v1/applications/{app_id}").json()["receipt_no"]
    shown = page.get(again.headers["location"])
    assert shown.status_code == 200 and receipt_no in shown.text
    assert cases_at(v1["settings"]) == 1
    # A new form is a new submission.
    _, fresh = opened_form(http, v1)
    assert fresh["submit_token"] != hidden_fields["submit_token"]


def test_an_unknown_or_foreign_form_token_is_refused_in_plain_words(v1, http):
    page, hidden_fields = opened_form(http, v1)
    other, _ = opened_form(http, v1)                           # the same agent, another session
    path = f"/apply/{v1['item']['code']}"
    data = {**v1["form"], "decision": "accept"}
    other_csrf = hidden(other.get(path).text, "csrf")
    foreign = other.post(path, data={**data, "csrf": other_csrf, "submit_token": hidden_fields["submit_token"]})
    made_up = page.post(path, data={**data, "csrf": hidden_fields["csrf"], "submit_token": "abc.def"})
    missing = page.post(path, data={**data, "csrf": hidden_fields["csrf"]})
    for r in (foreign, made_up, missing):
        assert r.status_code == 400
        assert "此表单不是在本次登录中发给您的，请从首页重新打开。" in r.text
    assert cases_at(v1["settings"]) == 0


def test_the_sitting_form_sent_twice_makes_one_sitting_and_refuses_a_foreign_token(v1, http):
    """The 一件事一次办 form passes the same guard as the item form."""
    page, _ = log_in(http, v1["url"], "agent")
    other, _ = log_in(http, v1["url"], "agent")                  # the same agent, another session
    shown, elsewhere = page.get("/bundle/YJS-001").text, other.get("/bundle/YJS-001").text
    data = {"csrf": hidden(shown, "csrf"), "submit_token": hidden(shown, "submit_token"), "decision": "accept",
            "name": "王芳", "id_number": ID, "materials": BIRTH,
            **{f"f_{k}": str(v) for fields in FIELDS.values() for k, v in fields.items()}}
    foreign = other.post("/bundle/YJS-001", data={**data, "csrf": hidden(elsewhere, "csrf")})
    made_up = page.post("/bundle/YJS-001", data={**data, "submit_token": "abc.def"})
    for r in (foreign, made_up):
        assert r.status_code == 400 and "此表单不是在本次登录中发给您的，请从首页重新打开。" in r.text
    assert cases_at(v1["settings"]) == 0
    first = page.post("/bundle/YJS-001", data=data, follow_redirects=False)
    again = page.post("/bundle/YJS-001", data=data, follow_redirects=False)              # the double click
    back = page.post("/bundle/YJS-001", data={**data, "decision": "correction"}, follow_redirects=False)
    assert first.status_code == again.status_code == back.status_code == 303, first.text
    assert first.headers["location"] == again.headers["location"] == back.headers["location"]
    assert first.headers["location"].endswith("/bundle-receipt")
    assert cases_at(v1["settings"]) == 2                          # one sitting: one case per item, once
    stale = other.post("/bundle/YJS-001", data={**data, "csrf": hidden(elsewhere, "csrf"),
                                                "submit_token": hidden(elsewhere, "submit_token")},
                       follow_redirects=False)                     # the other session's own form: a new sitting
    assert stale.status_code == 303 and stale.headers["location"] != first.headers["location"]
    assert cases_at(v1["settings"]) == 4


def test_a_form_with_errors_keeps_its_token_and_the_corrected_one_makes_one_case(v1, http):
    page, hidden_fields = opened_form(http, v1)
    path = f"/apply/{v1['item']['code']}"
    wrong = page.post(path, data={**v1["form"], **hidden_fields, "name": "", "decision": "accept"})
    assert wrong.status_code == 422 and hidden(wrong.text, "submit_token") == hidden_fields["submit_token"]
    data = {**v1["form"], **hidden_fields, "decision": "accept"}
    first = page.post(path, data=data, follow_redirects=False)
    again = page.post(path, data=data, follow_redirects=False)
    assert first.headers["location"] == again.headers["location"]
    assert cases_at(v1["settings"]) == 1


def test_an_api_repeat_with_the_same_key_returns_the_first_answer_and_one_case_reaches_the_county(v1, system):
    api, body = v1["api"], payload_of(v1["item"], v1["form"])
    key = {"idempotency-key": "order-2026-0001"}
    first = api.post("/api/v1/applications", json=body, headers=key)
    again = api.post("/api/v1/applications", json=body, headers=key)           # a retry after a timeout
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json() and again.headers.get("idempotent-replayed") == "true"
    assert cases_at(v1["settings"]) == 1
    assert api.post("/api/v1/sync").status_code == 200
    assert stored(system)[1] == 1
    later = api.post("/api/v1/applications", json=dict(reversed(list(body.items()))), headers=key)  # after sync
    assert later.status_code == 201 and later.json() == first.json()
    assert later.json()["id"] == first.json()["id"] and later.json()["receipt_no"] == first.json()["receipt_no"]
    assert api.post("/api/v1/sync").status_code == 200
    assert cases_at(v1["settings"]) == 1 and stored(system)[1] == 1


def test_keys_are_remembered_on_disk_not_in_memory(v1, http):
    body, key = payload_of(v1["item"], v1["form"]), {"idempotency-key": "kept-over-a-restart"}
    first = v1["api"].post("/api/v1/applications", json=body, headers=key)
    assert first.status_code == 201
    with serve(node_app(v1["settings"], background_sync=False)) as restarted:     # a fresh process's view
        again = http(restarted, v1["token"]).post("/api/v1/applications", json=body, headers=key)
    assert again.status_code == 201 and again.json() == first.json()
    assert cases_at(v1["settings"]) == 1


def test_the_same_key_with_another_body_is_refused_and_keys_belong_to_one_api_user(v1, http):
    api, body = v1["api"], payload_of(v1["item"], v1["form"])
    key = {"idempotency-key": "order-2026-0002"}
    assert api.post("/api/v1/applications", json=body, headers=key).status_code == 201
    other = api.post("/api/v1/applications", json=payload_of(v1["item"], form_for(v1["item"], 4)), headers=key)
    assert other.status_code == 422, other.text
    assert other.json()["error"] == "idempotency_key_reused" and "Idempotency-Key" in other.json()["message"]
    assert cases_at(v1["settings"]) == 1
    store = NodeStore(v1["settings"].db_path)                   # a second API user of the same station
    try:
        token = store.add_user("agent2", "第二代办员", PASSWORD)
    finally:
        store.close()
    theirs = http(v1["url"], token).post("/api/v1/applications", json=body, headers=key)
    assert theirs.status_code == 201 and cases_at(v1["settings"]) == 2


def test_bad_keys_are_refused_and_without_a_key_nothing_changes(v1):
    api, body = v1["api"], payload_of(v1["item"], v1["form"])
    for bad in ("", "x" * 101, "clé-1".encode(), "tab\there"):
        r = api.post("/api/v1/applications", json=body, headers={"idempotency-key": bad})
        assert r.status_code == 400 and r.json()["error"] == "invalid_idempotency_key", bad
    ok = api.post("/api/v1/applications", json=body, headers={"idempotency-key": "~" * 100})
    assert ok.status_code == 201
    assert api.post("/api/v1/applications", json=body).status_code == 201     # no key: as before, a new case
    assert cases_at(v1["settings"]) == 2


def at_once(n: int, send: Any) -> list[Any]:
    """``send()`` from ``n`` threads released together."""
    gate, answers = threading.Barrier(n), [None] * n

    def one(i: int) -> None:
        gate.wait()
        answers[i] = send()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return answers


def test_concurrent_repeats_make_one_case(v1, http):
    body, key = payload_of(v1["item"], v1["form"]), {"idempotency-key": "same-moment"}
    clients = [http(v1["url"], v1["token"]) for _ in range(6)]
    api_answers = at_once(6, lambda: clients.pop().post("/api/v1/applications", json=body, headers=key))
    assert {r.status_code for r in api_answers} == {201}
    assert len({r.json()["id"] for r in api_answers}) == 1 and len({r.text for r in api_answers}) == 1
    assert cases_at(v1["settings"]) == 1

    page, hidden_fields = opened_form(http, v1)
    path, data = f"/apply/{v1['item']['code']}", {**v1["form"], **hidden_fields, "decision": "accept"}
    form_answers = at_once(6, lambda: page.post(path, data=data, follow_redirects=False))
    assert {r.status_code for r in form_answers} == {303}
    assert len({r.headers["location"] for r in form_answers}) == 1
    assert cases_at(v1["settings"]) == 2
