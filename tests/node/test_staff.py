"""Accounts at the station: the admin manages the agents on the page and the API (node/staff.py)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from node.store import Store
from templates import gettext_for
from tests.conftest import PASSWORD, csrf_of, log_in
from tests.sync.test_protocol_machine import form_for

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "lantern-gate-3141"
NEW_PASSWORD = "river-stone-5926"


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deploy.cli", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def csrf(page: Any) -> str:
    return str(page.get("/staff").text.split('name="csrf" value="')[1].split('"')[0])


def accounts(data: Path) -> dict[str, tuple[Any, ...]]:
    """username -> (name, role, active), read straight from the station's database file."""
    conn = sqlite3.connect(data / "node.db")
    try:
        return {r[0]: tuple(r[1:]) for r in conn.execute("SELECT username, name, role, active FROM users")}
    finally:
        conn.close()


@pytest.fixture
def station(system, http) -> dict[str, Any]:
    """V1 with an admin made by the installer's CLI (password from stdin), logged in, in English."""
    v1 = system.stations["V1"]
    data = v1["settings"].data
    done = cli("node", "user", "add", "--data", str(data), "--username", "head", "--name", "站长 李明",
               "--role", "admin", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert "admin head saved" in done.stdout and ADMIN_PASSWORD not in done.stdout + done.stderr
    assert accounts(data)["head"] == ("站长 李明", "admin", 1)
    # The CLI ran in its own process while the station was locked (node/vault.py): the data key is
    # not wrapped for head yet. The agent's token unlocks; head's first login then wraps it.
    http(v1["url"], v1["token"]).get("/api/v1/status").raise_for_status()
    admin, home = log_in(http, v1["url"], "head", ADMIN_PASSWORD)
    assert home.status_code == 200 and 'href="/staff"' in home.text          # the link, for admins only
    admin.get("/lang/en")
    token = done.stdout.split("API token: ")[1].strip()
    api = http(v1["url"], token)
    api.post("/api/v1/sync").raise_for_status()                                 # the catalogue
    return {"url": v1["url"], "data": data, "admin": admin, "api": api, "agent_token": v1["token"]}


def add_agent(st: dict[str, Any], username: str = "wangfang", name: str = "王芳", password: str = NEW_PASSWORD) -> Any:
    return st["admin"].post("/staff", data={"csrf": csrf(st["admin"]), "username": username, "name": name,
                                            "role": "agent", "password": password, "password2": password})


def take_application(http, st: dict[str, Any], page: Any) -> Any:
    item = next(i for i in st["api"].get("/api/v1/catalog").json()["items"] if i["materials"])
    form = page.get(f"/apply/{item['code']}").text
    data = {**form_for(item, 7), "csrf": form.split('name="csrf" value="')[1].split('"')[0],
            "submit_token": form.split('name="submit_token" value="')[1].split('"')[0], "decision": "accept"}
    return page.post(f"/apply/{item['code']}", data=data)


def test_the_admin_adds_an_agent_who_takes_an_application_and_the_receipt_shows_her_name(station, http):
    added = add_agent(station)
    assert added.status_code == 200 and 'id="shown-token"' in added.text
    assert "王芳" in added.text and "wangfang" in added.text
    assert accounts(station["data"])["wangfang"] == ("王芳", "agent", 1)
    page, home = log_in(http, station["url"], "wangfang", NEW_PASSWORD)
    assert home.status_code == 200 and 'href="/staff"' not in home.text      # no link for agents
    receipt = take_application(http, station, page)
    assert receipt.status_code == 200 and str(receipt.url).endswith("/document")
    assert "代办人：王芳" in receipt.text.replace(" ", "") or "王芳" in receipt.text.split('class="sig"')[1]
    case_id = str(receipt.url).split("/applications/")[1].split("/")[0]
    assert "王芳" in page.get(f"/applications/{case_id}").text                  # accepted by
    listed = station["admin"].get("/staff").text
    row = listed.split('id="account-wangfang"')[1].split("</tr>")[0]
    assert "never" not in row                                                   # her last login is shown


def test_a_generated_password_is_shown_once_and_works(station, http):
    r = station["admin"].post("/staff", data={"csrf": csrf(station["admin"]), "username": "zhao", "name": "赵强",
                                              "role": "agent", "generate": "1"})
    assert r.status_code == 200
    password = r.text.split('id="shown-password">')[1].split("<")[0]
    assert len(password) >= 10
    assert password not in station["admin"].get("/staff").text                # only this once
    _, home = log_in(http, station["url"], "zhao", password)
    assert home.status_code == 200 and "赵强" in home.text


def test_disabling_an_agent_ends_her_session_token_and_login_at_once_and_enabling_brings_them_back(station, http):
    token = add_agent(station).text.split('id="shown-token">')[1].split("<")[0]
    page, home = log_in(http, station["url"], "wangfang", NEW_PASSWORD)
    assert home.status_code == 200
    api = http(station["url"], token)
    assert api.get("/api/v1/status").status_code == 200

    off = station["admin"].post("/staff/wangfang/disable", data={"csrf": csrf(station["admin"])})
    assert off.status_code == 200 and "disabled" in off.text
    assert accounts(station["data"])["wangfang"][2] == 0
    thrown_out = page.get("/")                                                  # the open session, next request
    assert str(thrown_out.url).endswith("/login")
    r = api.get("/api/v1/status")
    assert r.status_code == 401 and r.json()["error"] == "http_401"
    again = http(station["url"], follow_redirects=True)
    refused = again.post("/login", data={"username": "wangfang", "password": NEW_PASSWORD, "csrf": csrf_of(again)})
    assert refused.status_code == 403 and "此账号已停用" in refused.text          # a plain sentence (Chinese default)
    assert "wangfang" not in (again.get("/").text)

    on = station["admin"].post("/staff/wangfang/enable", data={"csrf": csrf(station["admin"])})
    assert on.status_code == 200 and accounts(station["data"])["wangfang"][2] == 1
    assert api.get("/api/v1/status").status_code == 200                        # the same token again
    _, home = log_in(http, station["url"], "wangfang", NEW_PASSWORD)
    assert home.status_code == 200 and "王芳" in home.text


def test_a_password_reset_ends_the_sessions_but_the_token_keeps_working(station, http):
    token = add_agent(station).text.split('id="shown-token">')[1].split("<")[0]
    page, _ = log_in(http, station["url"], "wangfang", NEW_PASSWORD)
    other = "blue-window-8080"
    r = station["admin"].post("/staff/wangfang/password",
                              data={"csrf": csrf(station["admin"]), "password": other, "password2": other})
    assert r.status_code == 200 and "API token keeps working" in r.text
    assert str(page.get("/").url).endswith("/login")
    assert http(station["url"], token).get("/api/v1/status").status_code == 200
    assert log_in(http, station["url"], "wangfang", NEW_PASSWORD)[1].status_code == 401
    assert log_in(http, station["url"], "wangfang", other)[1].status_code == 200


def test_an_agent_cannot_reach_the_accounts_page_or_api(station, http):
    page, _ = log_in(http, station["url"], "agent", PASSWORD)
    r = page.get("/staff")
    assert r.status_code == 403 and "只有本站管理员" in r.text
    assert page.post("/staff", data={"csrf": csrf_of(page), "username": "x1", "name": "x", "password": PASSWORD,
                                     "password2": PASSWORD}).status_code == 403
    api = http(station["url"], station["agent_token"])
    for r in (api.get("/api/v1/staff"), api.post("/api/v1/staff", json={"username": "x1", "name": "x",
                                                                         "password": PASSWORD}),
              api.post("/api/v1/staff/head/disable")):
        assert r.status_code == 403 and r.json()["error"] == "forbidden" and r.json()["message"]
    assert "x1" not in accounts(station["data"]) and accounts(station["data"])["head"][2] == 1
    assert http(station["url"]).get("/api/v1/staff").status_code == 401


def test_the_last_admin_cannot_be_disabled_nor_disable_themself(station, http):
    r = station["admin"].post("/staff/head/disable", data={"csrf": csrf(station["admin"])})
    assert r.status_code == 409 and "cannot disable your own account" in r.text
    r = station["api"].post("/api/v1/staff/head/disable")
    assert r.status_code == 409 and r.json()["error"] == "own_account"
    assert accounts(station["data"])["head"][2] == 1
    # a second admin may not disable the last other one either once it is alone
    made = station["api"].post("/api/v1/staff", json={"username": "deputy", "name": "副站长 周", "role": "admin",
                                                      "password": NEW_PASSWORD})
    assert made.status_code == 201 and made.json()["role"] == "admin"
    deputy = http(station["url"], made.json()["token"])
    assert deputy.post("/api/v1/staff/head/disable").status_code == 200       # two admins: fine
    r = station["api"].post("/api/v1/staff/deputy/disable")
    assert r.status_code == 401                                                 # head's token stopped with it
    r = deputy.post("/api/v1/staff/deputy/disable")
    assert r.status_code == 409 and r.json()["error"] == "own_account"
    store = Store(station["data"] / "node.db")
    try:
        from node.services import staff
        with pytest.raises(staff.StaffError) as refused:
            staff.set_active(store, "someone-else", "deputy", False)
        assert refused.value.code == "last_admin"
    finally:
        store.close()
    assert accounts(station["data"])["deputy"][2] == 1


@pytest.mark.parametrize("values, says", [
    ({"username": "li", "name": "李四", "password": "short1", "password2": "short1"}, "at least 10 characters"),
    ({"username": "agent", "name": "李四"}, "already an account"),
    ({"username": "li", "name": "<script>alert(1)</script>"}, "A full name is 1 to 60 characters"),
    ({"username": "li", "name": "李四", "password2": "something-else-77"}, "two passwords differ"),
    ({"username": "li si", "name": "李四"}, "A user name is 2 to 32"),
])
def test_bad_input_is_refused_with_a_sentence_and_nothing_is_stored(station, values, says):
    before = accounts(station["data"])
    form = {"csrf": csrf(station["admin"]), "role": "agent", "password": NEW_PASSWORD, "password2": NEW_PASSWORD,
            **values}
    r = station["admin"].post("/staff", data=form)
    assert r.status_code in (409, 422) and says in r.text and "<script>alert" not in r.text
    if "password2" not in values:          # the API takes the password once
        api = {k: v for k, v in form.items() if k in ("username", "name", "role", "password")}
        j = station["api"].post("/api/v1/staff", json=api)
        assert j.status_code == r.status_code and j.json()["error"] in ("invalid", "exists")
        assert j.json()["message"] == gettext_for("zh_CN")(next(iter(j.json()["details"].values()))) != ""
    assert accounts(station["data"]) == before


def test_the_api_lists_adds_disables_enables_and_resets(station, http):
    api = station["api"]
    r = api.post("/api/v1/staff", json={"username": "sun", "name": "孙丽", "role": "agent", "password": NEW_PASSWORD})
    assert r.status_code == 201 and r.json()["active"] is True and r.json()["token"].startswith("lm_")
    listed = {a["username"]: a for a in api.get("/api/v1/staff").json()["staff"]}
    assert listed["sun"]["role"] == "agent" and listed["head"]["role"] == "admin" and listed["head"]["last_login"]
    agent = http(station["url"], r.json()["token"])
    assert api.post("/api/v1/staff/sun/disable").json()["active"] is False
    assert agent.get("/api/v1/status").status_code == 401
    assert api.post("/api/v1/staff/sun/enable").json()["active"] is True
    assert api.post("/api/v1/staff/sun/password", json={"password": "123"}).status_code == 422
    assert api.post("/api/v1/staff/sun/password", json={"password": "moon-lake-2718"}).status_code == 200
    assert agent.get("/api/v1/status").status_code == 200
    assert api.post("/api/v1/staff/nobody/enable").json()["error"] == "not_found"
    assert api.post("/api/v1/staff/sun/delete").status_code == 404
    assert api.post("/api/v1/staff", content=b"{").json()["error"] == "http_400"


def test_an_older_database_gets_roles_by_the_documented_rule(tmp_path):
    for n, expect in ((1, "admin"), (2, "agent")):
        path = tmp_path / f"old{n}.db"
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE users (username TEXT PRIMARY KEY, name TEXT, password TEXT, token_hash TEXT, "
                     "created_at TEXT)")
        for i in range(n):
            conn.execute("INSERT INTO users VALUES (?, '代办员', 'x', 'h', '2026-01-01')", (f"u{i}",))
        conn.commit()
        conn.close()
        Store(path).close()
        assert {v[1] for v in accounts_at(path).values()} == {expect}
        assert {v[2] for v in accounts_at(path).values()} == {1}


def accounts_at(path: Path) -> dict[str, tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return {r[0]: tuple(r[1:]) for r in conn.execute("SELECT username, name, role, active FROM users")}
    finally:
        conn.close()


def test_every_step_of_a_case_carries_the_agents_own_name(station, system, http):
    from tests.life.test_case_life import accept, sync
    token = add_agent(station).text.split('id="shown-token">')[1].split("<")[0]
    page, _ = log_in(http, station["url"], "wangfang", NEW_PASSWORD)
    api = http(station["url"], token)
    county = http(system.central_url, system.clerk_tokens["minzheng"])
    case_id = accept(api)["id"]                                                 # intake by her token
    sync(api)
    assert county.get(f"/api/v1/cases/{case_id}").json()["application"]["agent"] == "王芳"
    assert county.post(f"/api/v1/cases/{case_id}/decision", json={
        "decision": "correction", "note": "", "materials": [{"code": "hardship_proof", "problem": "unclear"}]
    }).status_code == 200
    sync(api)
    notice = page.get(f"/applications/{case_id}/correction-notice")           # printed and handed over by her
    assert notice.status_code == 200 and 'id="agent">王芳<' in notice.text
    form = page.get(f"/applications/{case_id}").text
    r = page.post(f"/applications/{case_id}/supplement", data={
        "csrf": form.split('name="csrf" value="')[1].split('"')[0], "materials": ["hardship_proof"], "note": "补交"})
    assert r.status_code == 200, r.text
    sync(api)
    assert county.get(f"/api/v1/cases/{case_id}").json()["supplement"]["by"] == "王芳"
    assert county.post(f"/api/v1/cases/{case_id}/decision", json={"decision": "approve", "note": "同意"}).status_code == 200
    sync(api)
    form = page.get(f"/applications/{case_id}").text
    r = page.post(f"/applications/{case_id}/handout", data={
        "csrf": form.split('name="csrf" value="')[1].split('"')[0], "collector": "applicant", "identity_checked": "1"})
    assert r.status_code == 200, r.text
    assert "王芳" in page.get(f"/applications/{case_id}").text.split('id="handed-out">')[1].split("</dd>")[0]


def test_the_cli_does_not_turn_the_last_admin_into_an_agent(station):
    args = ("node", "user", "add", "--data", str(station["data"]), "--username", "head", "--password-stdin")
    refused = cli(*args, stdin="another-gate-2718\n")
    assert refused.returncode == 2 and "last admin" in refused.stderr
    assert accounts(station["data"])["head"] == ("站长 李明", "admin", 1)
    assert cli(*args, "--role", "admin", "--name", "站长 李明", stdin="another-gate-2718\n").returncode == 0
