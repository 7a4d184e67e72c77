"""Password guessing and enrolment junk, as an attacker does them (issue 15, findings 8 and 12):
real servers on loopback, concurrent requests, other computers through the trusted loopback proxy
(X-Forwarded-For), and only what an attacker or the station's files can observe."""

from __future__ import annotations

import concurrent.futures
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from central.app import create_app as central_app
from central.county import County, Settings as CentralSettings
from node.app import create_app as node_app
from node.services.enrolment import enroll
from node.settings import Settings as NodeSettings
from templates.throttle import LoginThrottle, Rule
from tests.conftest import PASSWORD, ROOT, csrf_of, make_county, serve

BURST = 40


def checks_recorded(db: Path, username: str) -> int:
    """How many password checks the app's database recorded for ``username`` (read from the file)."""
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT checks FROM login_throttle WHERE key = ?", ("name:" + username,)).fetchone()
    finally:
        conn.close()
    return int(row[0]) if row else 0


def burst(http, url: str, username: str, address: str) -> list[int]:
    """BURST wrong-password logins for ``username`` at once, each from its own browser."""
    pages = []
    for _ in range(BURST):
        page = http(url)
        page.headers["x-forwarded-for"] = address
        pages.append((page, csrf_of(page)))
    start = threading.Barrier(BURST)

    def guess(n: int) -> int:
        page, csrf = pages[n]
        start.wait()
        return page.post("/login", data={"username": username, "password": f"guess-number-{n:04d}",
                                         "csrf": csrf}).status_code
    with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
        return list(pool.map(guess, range(BURST)))


@pytest.mark.parametrize("app", ["central", "node"])
@pytest.mark.parametrize("known", [True, False])
def test_a_burst_of_concurrent_guesses_gets_at_most_five_checks(system, http, app, known):
    url, db = ((system.central_url, system.data / "central" / "central.db") if app == "central" else
               (system.stations["V1"]["url"], system.stations["V1"]["settings"].db_path))
    username = ("minzheng" if app == "central" else "agent") if known else "no-such-person"
    codes = burst(http, url, username, "10.7.7.7")
    assert set(codes) <= {401, 429}, codes
    assert 1 <= codes.count(401) <= 5, f"{codes.count(401)} passwords checked in one burst"
    assert checks_recorded(db, username) == codes.count(401)


@pytest.mark.real_kdf          # the point is the cost of a real check, paid for unknown names too
def test_unknown_user_names_take_as_long_as_known_ones(tmp_path, http):
    """Median of 20 wrong-password logins each; throttling set out of the way so every one is checked."""
    settings, _ = make_county(tmp_path / "central")
    app = central_app(settings)
    app.state.login_throttle = LoginThrottle(Rule(10_000, 1, 1), Rule(10_000, 1, 1))
    with serve(app) as url:
        page = http(url)
        csrf = csrf_of(page)
        times: dict[bool, list[float]] = {True: [], False: []}
        for n in range(21):
            for known in (True, False):
                began = time.perf_counter()
                r = page.post("/login", data={"username": "boss" if known else f"ghost{n}",
                                              "password": f"wrong-guess-{n}-{known}", "csrf": csrf})
                if n:                               # the first of each warms up
                    times[known].append(time.perf_counter() - began)
                assert r.status_code == 401
    known, unknown = statistics.median(times[True]), statistics.median(times[False])
    assert max(known, unknown) / min(known, unknown) <= 1.3, (known, unknown)


def try_login(http, url: str, username: str, password: str, address: str | None = None):
    page = http(url)
    if address:
        page.headers["x-forwarded-for"] = address
    return page, page.post("/login", data={"username": username, "password": password, "csrf": csrf_of(page)})


def test_an_agent_slowed_down_gets_in_after_the_wait_and_an_admin_can_clear_it(system, http):
    v1 = system.stations["V1"]
    token = http(v1["url"], v1["token"])
    assert token.get("/api/v1/status").status_code == 200          # the station's vault is made
    # The station restarts (a power cut): a new process, locked until an agent logs in.
    with serve(node_app(v1["settings"], background_sync=False)) as url:
        for n in range(8):                                          # someone on the LAN guesses
            _, r = try_login(http, url, "agent", f"guess-number-{n}", "10.8.8.8")
            assert r.status_code == (401 if n < 5 else 429)
        page, r = try_login(http, url, "agent", PASSWORD)           # the agent, from the counter PC
        assert r.status_code == 429 and "请等" in r.text
        wait = int(r.headers["retry-after"])
        assert 1 <= wait <= 5
        assert page.get("/", follow_redirects=False).status_code in (303, 423)
        time.sleep(wait)
        page, r = try_login(http, url, "agent", PASSWORD)           # right after the wait: in
        assert r.status_code == 303
        assert page.get("/").status_code == 200                     # and the station is unlocked
        assert checks_recorded(v1["settings"].db_path, "agent") == 6

        # Guessing again: the token still works, and the CLI clears the count at once.
        for n in range(6):
            try_login(http, url, "agent", f"guess-again-{n}", "10.8.8.9")
        assert try_login(http, url, "agent", PASSWORD)[1].status_code == 429
        assert http(url, v1["token"]).get("/api/v1/status").status_code == 200
        done = subprocess.run([sys.executable, "-m", "deploy.cli", "node", "user", "unlock", "--data",
                               str(v1["settings"].data), "--username", "agent"], capture_output=True, text=True,
                              cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stderr
        assert try_login(http, url, "agent", PASSWORD)[1].status_code == 303


def test_a_station_admin_clears_a_slowed_agent_on_the_staff_page(system, http):
    v1 = system.stations["V1"]
    store_db = v1["settings"].db_path
    from node.store import Store
    store = Store(store_db)
    try:
        store.add_user("chief", "站长", PASSWORD, role="admin")
    finally:
        store.close()
    for n in range(6):
        try_login(http, v1["url"], "agent", f"guess-number-{n}", "10.8.8.10")
    assert try_login(http, v1["url"], "agent", PASSWORD)[1].status_code == 429
    admin, _ = try_login(http, v1["url"], "chief", PASSWORD)
    staff = admin.get("/staff")
    assert 'id="slowed-agent"' in staff.text and "让其立即登录" in staff.text
    r = admin.post("/staff/agent/unlock", data={"csrf": staff.text.split('name="csrf" value="')[1].split('"')[0]})
    assert r.status_code in (200, 303)
    assert try_login(http, v1["url"], "agent", PASSWORD)[1].status_code == 303


def test_the_county_supervisor_and_cli_clear_a_slowed_clerk(system, http):
    url = system.central_url
    for n in range(6):
        try_login(http, url, "minzheng", f"guess-number-{n}", "10.8.8.11")
    assert try_login(http, url, "minzheng", PASSWORD)[1].status_code == 429
    assert http(url, system.clerk_tokens["renshe"]).post("/api/v1/users/minzheng/unlock").status_code == 403
    r = http(url, system.central_token).post("/api/v1/users/minzheng/unlock")
    assert r.status_code == 200 and r.json()["cleared"] is True
    assert try_login(http, url, "minzheng", PASSWORD)[1].status_code == 303
    for n in range(6):
        try_login(http, url, "minzheng", f"guess-again-{n}", "10.8.8.12")
    done = subprocess.run([sys.executable, "-m", "deploy.cli", "central", "user", "unlock", "--data",
                           str(system.data / "central"), "--username", "minzheng"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert try_login(http, url, "minzheng", PASSWORD)[1].status_code == 303


def test_junk_enrolment_proofs_do_not_stop_the_real_enrolment(system, http, tmp_path):
    county = County(CentralSettings(data=system.data / "central"))
    otp = county.add_station("V5", "五号站", "village")
    fingerprint = county.me.public.fingerprint()
    county.store.close()
    junk = http(system.central_url)
    junk.headers["x-forwarded-for"] = "127.0.0.1"   # the same address as the installer's laptop
    from tests.central.test_sync_endpoint import enrol_request
    info = junk.get("/enroll/v2/county").json()
    # Made first, so that the nine arrive within the first second of slowing down whatever the
    # machine's load (each proof costs a scrypt; made between the posts they let the wait run out).
    proofs = [enrol_request(info, "V5", f"DEAD-BEEF-0000-000{i}") for i in range(9)]
    codes = [junk.post("/enroll/v2", json=proof).status_code for proof in proofs]
    assert codes == [403] * 5 + [429] * 4
    began = time.monotonic()
    done = enroll(NodeSettings(data=tmp_path / "V5"), central_url=system.central_url, station="V5", code=otp,
                  fingerprint=fingerprint)
    assert done["station"] == "V5" and time.monotonic() - began < 30
