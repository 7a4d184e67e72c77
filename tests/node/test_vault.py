"""Encryption at rest at the station (node/vault.py): a thief who copies the whole data folder of a
running or a stopped station finds no name, ID number or phone in it; the first login or token
request after a start unlocks; a wrong password does not. Real servers, real files."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Iterator

from PIL import Image

from central.app import create_app as central_app
from crypto import passwords
from deploy import cli
from node.app import create_app as node_app
from node.services.enrolment import enroll
from node.settings import Settings as NodeSettings
from node.store import TOKEN_ENV, Store
from sync.law.intake import valid_id_for_demo
from tests.conftest import PASSWORD, add_station, csrf_of, log_in, make_county, serve
from tests.e2e.test_walking_skeleton import full_application

PEOPLE = {
    "scanned": ("欧阳淑珍", valid_id_for_demo("41052219560312002"), "13911112222"),
    "decided": ("司马建国", valid_id_for_demo("41052219610704003"), "13922223333"),
    "later": ("诸葛春兰", valid_id_for_demo("41052219700815004"), "13933334444"),
}
BUNDLE_PERSON = ("慕容晓燕", valid_id_for_demo("11010519900307001"), "13955556666")
REPORT = {"name": "上官翠花", "phone": "13944445555", "id_number": valid_id_for_demo("41052219800101005"),
          "tried": "去乡里办高龄津贴，上官翠花被让去县里", "where": "乡便民服务中心2号窗口", "item_code": "MZ-004",
          "contact": "13944445555，上午在家"}
EVERYONE = [*PEOPLE.values(), BUNDLE_PERSON, (REPORT["name"], REPORT["id_number"], REPORT["phone"])]
LOCKED_ZH = "本站已锁定"


def image(kind: str) -> str:
    out = io.BytesIO()
    Image.new("RGB", (120, 80), (200, 30, 30)).save(out, kind)
    return base64.b64encode(out.getvalue()).decode()


def needles(name: str, id_number: str, phone: str) -> list[bytes]:
    """Every form a person's data can take in the files: UTF-8, JSON's \\uXXXX escapes (both cases)."""
    escaped = json.dumps(name).strip('"')
    return [name.encode(), escaped.encode(), escaped.upper().replace("\\U", "\\u").encode(), id_number.encode(),
            phone.encode()]


def leaks(data: Path, to: Path) -> dict[str, list[str]]:
    """Copy the whole data folder as a thief would (database, WAL, shared memory, blobs, documents,
    keys, logs) and search its raw bytes for every person: {needle: files it is in}."""
    shutil.copytree(data, to)
    assert {"node.db", "node.db-wal"} <= {p.name for p in to.iterdir()}
    return raw_hits(to, EVERYONE)


def raw_hits(folder: Path, people: list[tuple[str, str, str]]) -> dict[str, list[str]]:
    """{needle: files of ``folder`` whose raw bytes contain it}, for every form of each person's data."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    found: dict[str, list[str]] = {}
    for person in people:
        for n in needles(*person):
            where = [str(p.relative_to(folder)) for p in files if n in p.read_bytes()]
            if where:
                found[n.decode()] = where
    return found


@contextlib.contextmanager
def station_server(settings: NodeSettings) -> Iterator[str]:
    """The station's server: leaving the block stops it, as a power cut or a reboot would."""
    with serve(node_app(settings, background_sync=False)) as url:
        yield url


def test_a_copy_of_the_data_folder_holds_no_personal_data_running_or_locked(tmp_path, http, capsys, monkeypatch):
    central, tokens = make_county(tmp_path / "central")
    with serve(central_app(central)) as central_url:
        settings, token = add_station(central, central_url, tmp_path / "V1", "V1", "village")
        data = settings.data
        cases: dict[str, Any] = {}
        with station_server(settings) as url:
            node = http(url, token)
            assert node.post("/api/v1/sync").status_code == 200
            item = next(i for i in node.get("/api/v1/catalog").json()["items"] if i["code"].startswith("MZ"))
            for key, (name, id_number, phone) in PEOPLE.items():
                body = full_application(item)
                body["applicant"] = {"name": name, "id_number": id_number, "phone": phone, "address": f"{name}家"}
                if key == "scanned":        # a scan named after the citizen, sealed to the county
                    body["scans"] = [{"material": item["materials"][0]["code"], "name": f"{name}身份证.png",
                                      "data_base64": image("PNG")}]
                r = node.post("/api/v1/applications", json=body)
                assert r.status_code == 201, r.text
                cases[key] = r.json()
            sitting = {"bundle": "YJS-001", "decision": "accept",
                       "applicant": {"name": BUNDLE_PERSON[0], "id_number": BUNDLE_PERSON[1],
                                     "phone": BUNDLE_PERSON[2], "address": "张村三组12号"},
                       "items": [{"item": "WJ-001", "fields": {"child_order": 1, "expected_date": "2026-12-20",
                                                               "marital_status": "first"}},
                                 {"item": "YB-001", "fields": {"insured_count": 1, "insured_category": "newborn",
                                                               "subsidy_type": "none"}}],
                       "materials": ["id_card", "marriage_cert", "household_register"],
                       "scans": [{"material": "id_card", "name": "身份证.jpg", "data_base64": image("JPEG")}]}
            r = node.post("/api/v1/applications", json=sitting)
            assert r.status_code == 201, r.text
            report = node.post("/api/v1/reports", json=REPORT)
            assert report.status_code == 201, report.text
            assert node.post("/api/v1/sync").status_code == 200
            clerk = http(central_url, tokens[item["department"]])
            r = clerk.post(f"/api/v1/cases/{cases['decided']['id']}/decision", json={
                "decision": "approve", "note": f"{PEOPLE['decided'][0]}材料齐全",
                "attachments": [{"name": f"{PEOPLE['decided'][0]}证照.png", "data_base64": image("PNG")}]})
            assert r.status_code == 200, r.text
            assert node.post("/api/v1/sync").status_code == 200
            page, _ = log_in(http, url, "agent")
            handout = {"csrf": csrf_of(page), "collector": "applicant", "identity_checked": "1"}
            assert page.post(f"/applications/{cases['decided']['id']}/handout", data=handout).status_code == 200
            assert node.post(f"/api/v1/applications/{cases['decided']['id']}/rating",
                             json={"score": 5, "comment": f"{PEOPLE['decided'][0]}说很好"}).status_code == 201
            assert node.post("/api/v1/sync").status_code == 200
            status = node.get("/api/v1/status").json()["sync"]
            assert status["scans_waiting"] == 0 and status["up_waiting"] == 0

            # Running and unlocked: the agent sees everyone; the files hold none of it.
            shown = page.get(f"/applications/{cases['decided']['id']}")
            assert PEOPLE["decided"][0] in shown.text, [ln for ln in shown.text.splitlines() if "<dd>" in ln][:3]
            found = node.get("/api/v1/applications", params={"q": PEOPLE["later"][1][-6:]}).json()
            assert [a["applicant_name"] for a in found["applications"]] == [PEOPLE["later"][0]]
            assert leaks(data, tmp_path / "running") == {}

        # The county decides while the station is off, then while it is on and locked.
        r = clerk.post(f"/api/v1/cases/{cases['later']['id']}/decision",
                       json={"decision": "approve", "note": f"{PEOPLE['later'][0]}已核实"})
        assert r.status_code == 200, r.text
        # An account added while the station is off (the CLI): no one has unwrapped the key for it yet.
        store = Store(settings.db_path)
        late_token = store.add_user("late", "后来的代办员", PASSWORD)
        store.close()

        with station_server(settings) as url:
            # Locked: the start page says so (Chinese first), and nothing personal is in the files.
            browser = http(url, follow_redirects=True)
            start = browser.get("/")
            assert start.url.path == "/login" and 'id="vault-locked"' in start.text and LOCKED_ZH in start.text
            assert leaks(data, tmp_path / "locked") == {}
            # The session from before the restart is still valid, but its page says the station is locked.
            page = http(url, cookies=page.cookies)
            locked_page = page.get(f"/applications/{cases['decided']['id']}")
            assert locked_page.status_code == 423 and LOCKED_ZH in locked_page.text
            assert PEOPLE["decided"][0] not in locked_page.text
            # A valid token with no key wrapped for it: 423 locked, in JSON, on personal data.
            late = http(url, late_token)
            r = late.get(f"/api/v1/applications/{cases['later']['id']}")
            assert r.status_code == 423 and r.json()["error"] == "locked" and set(r.json()) == {
                "error", "message", "details"}
            # A wrong password does not unlock; the login page still says locked.
            wrong = browser.post("/login", data={"username": "agent", "password": PASSWORD + "x",
                                                 "csrf": csrf_of(browser)})
            assert wrong.status_code == 401 and 'id="vault-locked"' in wrong.text
            assert late.get(f"/api/v1/applications/{cases['later']['id']}").status_code == 423

            # The agent's token works at once and unlocks the station for everyone.
            node = http(url, token)
            r = node.get(f"/api/v1/applications/{cases['later']['id']}")
            assert r.status_code == 200 and r.json()["applicant_name"] == PEOPLE["later"][0]
            assert 'id="vault-locked"' not in browser.get("/login").text
            assert late.get(f"/api/v1/applications/{cases['later']['id']}").status_code == 200
            # The county's decision made meanwhile comes down and shows on the case's page.
            assert node.post("/api/v1/sync").status_code == 200
            shown = page.get(f"/applications/{cases['later']['id']}")
            assert shown.status_code == 200 and f"{PEOPLE['later'][0]}已核实" in shown.text
            assert leaks(data, tmp_path / "unlocked-again") == {}

        # The late account's token was wrapped on its first use while unlocked: it unlocks by itself.
        with station_server(settings) as url:
            late = http(url, late_token)
            r = late.get(f"/api/v1/applications/{cases['later']['id']}")
            assert r.status_code == 200 and r.json()["applicant_name"] == PEOPLE["later"][0]

        # The command line runs locked: what reads personal data says how to unlock, and does so with a token.
        monkeypatch.delenv(TOKEN_ENV, raising=False)
        assert cli.main(["node", "purge", "--data", str(data)]) == 2
        assert "encrypted and locked" in capsys.readouterr().err
        monkeypatch.setenv(TOKEN_ENV, "not-a-token")
        assert cli.main(["node", "purge", "--data", str(data)]) == 2
        monkeypatch.setenv(TOKEN_ENV, late_token)
        assert cli.main(["node", "purge", "--data", str(data)]) == 0


def test_a_password_login_unlocks_and_an_older_plaintext_database_is_encrypted_in_place(tmp_path, http):
    central, _tokens = make_county(tmp_path / "central")
    with serve(central_app(central)) as central_url:
        settings, _token = add_station(central, central_url, tmp_path / "V1", "V1", "village")
        with station_server(settings) as url:
            browser, landing = log_in(http, url, "agent")
            assert landing.status_code == 200 and 'id="vault-locked"' not in landing.text

    # A station made by a version before the vault: an account and a case in clear, no key at all.
    data = tmp_path / "old"
    old = NodeSettings(data=data, sync_interval=3600)
    from central.county import County
    county = County(central)
    otp = county.add_station("V2", "V2站", "village")
    fingerprint = county.me.public.fingerprint()
    county.store.close()
    with serve(central_app(central)) as central_url:
        enroll(old, central_url=central_url, station="V2", code=otp, fingerprint=fingerprint)
    Store(old.db_path).close()                       # the tables, as a running station has them
    conn = sqlite3.connect(old.db_path, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")        # an older version had none
    name, id_number, phone = PEOPLE["scanned"]
    conn.execute("INSERT INTO users (username, name, password, token_hash, created_at, role, active)"
                 " VALUES ('agent', '代办员', ?, ?, '2026-01-01', 'admin', 1)",
                 (passwords.hash_password(PASSWORD), passwords.token_hash("old-token-1234567890")))
    conn.execute("INSERT INTO applications (id, seq, receipt_no, kind, status, item_code, item_name, applicant_name,"
                 " id_number, phone, body, created_at) VALUES ('a1', 0, 'V2-1', 'application.accepted', 'accepted',"
                 " 'MZ-001', '低保', ?, ?, ?, ?, '2026-01-01T00:00:00Z')",
                 (name, id_number, phone, json.dumps({"applicant": {"name": name}})))
    conn.close()
    raw = b"".join(p.read_bytes() for p in data.glob("node.db*"))
    assert all(n in raw for n in needles(name, id_number, phone)[:1] + needles(name, id_number, phone)[3:])

    with station_server(old) as url:
        wrong = http(url, follow_redirects=True)
        assert wrong.post("/login", data={"username": "agent", "password": "not-the-password",
                                          "csrf": csrf_of(wrong)}).status_code == 401
        browser, landing = log_in(http, url, "agent")   # the first login makes the key, encrypts, vacuums
        assert landing.status_code == 200
        api = http(url, "old-token-1234567890")
        found = api.get("/api/v1/applications", params={"q": name}).json()["applications"]
        assert [a["applicant_name"] for a in found] == [name]
        copy = tmp_path / "copy"
        shutil.copytree(data, copy)
        for n in needles(name, id_number, phone):
            assert not [p for p in copy.rglob("*") if p.is_file() and n in p.read_bytes()], n


def test_the_first_account_added_while_the_node_runs_makes_the_key_the_running_node_then_uses(tmp_path, http):
    from central.county import County
    central, _tokens = make_county(tmp_path / "central")
    county = County(central)
    otp = county.add_station("V3", "V3站", "village")
    fingerprint = county.me.public.fingerprint()
    county.store.close()
    settings = NodeSettings(data=tmp_path / "V3", sync_interval=3600)
    with serve(central_app(central)) as central_url:
        enroll(settings, central_url=central_url, station="V3", code=otp, fingerprint=fingerprint)
        with station_server(settings) as url:           # no account yet: nothing to lock
            store = Store(settings.db_path)             # `lastmile node user add`, next to the running node
            token = store.add_user("agent", "代办员", PASSWORD)
            store.close()
            api = http(url, token)
            assert api.post("/api/v1/sync").status_code == 200       # the key the CLI made, unwrapped by its token
            browser, landing = log_in(http, url, "agent")
            assert landing.status_code == 200 and 'id="vault-locked"' not in landing.text
            item = next(i for i in api.get("/api/v1/catalog").json()["items"] if i["code"].startswith("MZ"))
            body = full_application(item)
            name, id_number, phone = PEOPLE["later"]
            body["applicant"] = {"name": name, "id_number": id_number, "phone": phone, "address": "诸葛村"}
            assert api.post("/api/v1/applications", json=body).status_code == 201
            raw = b"".join(p.read_bytes() for p in settings.data.rglob("*") if p.is_file())
            assert not [n for n in needles(name, id_number, phone) if n in raw]


def test_a_disabled_account_no_longer_opens_the_key_on_a_copied_disk(tmp_path, http):
    central, _tokens = make_county(tmp_path / "central")
    with serve(central_app(central)) as central_url:
        settings, token = add_station(central, central_url, tmp_path / "V1", "V1", "village")
        store = Store(settings.db_path)
        assert store.user_by_token(token)             # unlocked: the new admin's key is wrapped at once
        admin_token = store.add_user("head", "站长", PASSWORD, "admin")
        store.close()
        with station_server(settings) as url:
            r = http(url, admin_token).post("/api/v1/staff/agent/disable")
            assert r.status_code == 200, r.text
    thief = Store(settings.db_path)                   # the disk, with the agent's old password and token
    try:
        assert thief.vault.locked
        assert not thief.vault.try_unlock(thief.conn, "agent", "password", PASSWORD)
        assert not thief.vault.try_unlock(thief.conn, "agent", "token", token)
        assert thief.vault.locked and thief.vault.try_unlock(thief.conn, "head", "password", PASSWORD)
    finally:
        thief.close()


def test_a_locked_station_receives_the_countys_decisions_and_sends_its_sealed_scans(tmp_path, http):
    """A station PC that restarted at night (power cut) is locked until the first agent logs in. It
    still syncs: the county's decisions come down (stored sealed to the vault's public key, shown at
    the unlock), the scans already sealed to the county go up; its own facts wait, since their bodies
    cannot be read. Nothing personal is readable in the files meanwhile."""
    from node.station import Station
    from sync import log

    central, tokens = make_county(tmp_path / "central")
    with serve(central_app(central)) as central_url:
        settings, token = add_station(central, central_url, tmp_path / "V1", "V1", "village")
        data = settings.data
        with station_server(settings) as url:
            node = http(url, token)
            assert node.post("/api/v1/sync").status_code == 200
            item = next(i for i in node.get("/api/v1/catalog").json()["items"] if i["code"].startswith("MZ"))
            made = {}
            for key in ("scanned", "later"):
                name, id_number, phone = PEOPLE[key]
                body = full_application(item)
                body["applicant"] = {"name": name, "id_number": id_number, "phone": phone, "address": f"{name}家"}
                body["scans"] = [{"material": item["materials"][0]["code"], "name": f"{name}身份证.png",
                                  "data_base64": image("PNG")}]
                r = node.post("/api/v1/applications", json=body)
                assert r.status_code == 201, r.text
                made[key] = r.json()["id"]
                if key == "scanned":        # the first case reaches the county; the second not before the night
                    assert node.post("/api/v1/sync").status_code == 200
        clerk = http(central_url, tokens[item["department"]])
        note = f"{PEOPLE['scanned'][0]}材料齐全，予以批准"
        r = clerk.post(f"/api/v1/cases/{made['scanned']}/decision", json={"decision": "approve", "note": note})
        assert r.status_code == 200, r.text
        # The first case's scan upload was cut before the county confirmed it (a link that dropped).
        with sqlite3.connect(settings.db_path) as raw:
            assert raw.execute("UPDATE scans SET done = 0, sent = 0 WHERE app_id = ?", (made["scanned"],)).rowcount == 1

        st = Station(settings)              # the PC restarted: nobody has logged in
        try:
            assert st.store.vault.locked
            got = st.sync()
            assert (got.sent, got.scans) == (0, 1) and got.received >= 1
            # The county holds the station's receipt of its decision, and the scan, but not the waiting case.
            with sqlite3.connect(central.data / "central.db") as county_db:
                decided_seq = county_db.execute("SELECT max(seq) FROM _sync_events WHERE stream = ?",
                                                (log.down("V1"),)).fetchone()[0]
                assert log.acked(county_db, log.down("V1")) == decided_seq
            assert clerk.get(f"/api/v1/cases/{made['later']}").status_code == 404
            with sqlite3.connect(settings.db_path) as raw:
                assert raw.execute("SELECT done FROM scans WHERE app_id = ?", (made["scanned"],)).fetchone() == (1,)
                assert raw.execute("SELECT status FROM applications WHERE id = ?",
                                   (made["scanned"],)).fetchone() == ("received",)     # applied at the unlock
                sealed = raw.execute("SELECT body FROM _sync_events WHERE stream = ? AND seq = ?",
                                     (log.down("V1"), decided_seq)).fetchone()[0]
            assert sealed.startswith("lmpub1:") and note not in sealed
            found = leaks(data, tmp_path / "locked")
            assert found == {} and note.encode() not in (tmp_path / "locked" / "node.db").read_bytes()

            # The first agent's token unlocks: the decision shows on the case, and is under the data key now.
            assert st.store.user_by_token(token) is not None and not st.store.vault.locked
            row = st.store.db["applications"].get(made["scanned"])
            assert (row["status"], row["decision"], row["decision_note"]) == ("approved", "approve", note)
            with sqlite3.connect(settings.db_path) as raw:
                assert not raw.execute("SELECT count(*) FROM _sync_events WHERE body LIKE 'lmpub1:%'").fetchone()[0]
            # The case that waited goes up at the next sync.
            assert st.sync().sent >= 1
            assert clerk.get(f"/api/v1/cases/{made['later']}").status_code == 200
        finally:
            st.store.close()
