"""Logins, sessions and passwords, at both apps: guessing is slowed down, logout and a password change
end every session, cookies are Secure over HTTPS, and passwords follow the rules."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys

import pytest

from central.county import County, CountyError, Settings
from crypto import passwords
from node.store import Store as NodeStore
from tests.conftest import PASSWORD, ROOT, csrf_of, log_in

NEW_PASSWORD = "harvest-moon-4411"


def client(http, url: str, headers: dict[str, str] | None = None, **kw):
    page = http(url, **kw)
    page.headers.update(headers or {})
    return page


def try_login(http, url: str, username: str, password: str, **headers: str):
    page = client(http, url, headers)
    return page.post("/login", data={"username": username, "password": password, "csrf": csrf_of(page)})


def logged_in(page) -> bool:
    r = page.get("/", follow_redirects=False)
    return r.status_code == 200


def cli(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deploy.cli", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=120)


def test_five_wrong_passwords_slow_the_account_down_but_not_its_api_token(system, http):
    url = system.central_url
    for _ in range(5):
        assert try_login(http, url, "minzheng", "wrong-password-1").status_code == 401
    r = try_login(http, url, "minzheng", PASSWORD)       # the right one, too early
    assert r.status_code == 429 and "请等" in r.text and "秒后再试" in r.text
    assert 1 <= int(r.headers["retry-after"]) <= 5
    r = http(url, system.clerk_tokens["minzheng"]).get("/api/v1/cases")
    assert r.status_code == 200                           # the API token keeps working
    assert try_login(http, url, "renshe", PASSWORD).status_code == 303   # other accounts are not slowed


def test_twenty_failures_from_one_address_slow_that_address_only(system, http):
    url = system.stations["V1"]["url"]
    for n in range(20):
        assert try_login(http, url, f"nobody{n}", "wrong-password-1").status_code == 401
    r = try_login(http, url, "agent", PASSWORD)
    assert r.status_code == 429 and "这台电脑输错密码的次数太多" in r.text and int(r.headers["retry-after"]) <= 5
    # Another computer (the address as uvicorn reports it, here through a trusted loopback proxy).
    assert try_login(http, url, "agent", PASSWORD, **{"x-forwarded-for": "10.1.2.3"}).status_code == 303


@pytest.mark.parametrize("app", ["central", "node"])
def test_logout_ends_every_session_of_the_account_and_a_saved_cookie(system, http, app):
    url, user = (system.central_url, "minzheng") if app == "central" else (system.stations["V1"]["url"], "agent")
    first, _ = log_in(http, url, user)
    second, _ = log_in(http, url, user)
    saved = dict(first.cookies)
    assert logged_in(first) and logged_in(second)
    r = first.post("/logout", data={"csrf": csrf_of(first)})
    assert r.url.path == "/login"
    replay = http(url, cookies=saved)
    assert replay.get("/", follow_redirects=False).headers["location"] == "/login"
    assert not logged_in(second)                          # the other browser is logged out too
    again, _ = log_in(http, url, user)
    assert logged_in(again)


def test_password_change_by_cli_ends_sessions_keeps_token(system, http):
    url, data = system.stations["V1"]["url"], str(system.stations["V1"]["settings"].data)
    page, _ = log_in(http, url, "agent")
    assert logged_in(page)
    weak = cli("node", "user", "passwd", "--data", data, "--username", "agent", "--password-stdin", stdin="short\n")
    assert weak.returncode == 2 and "at least 10 characters" in weak.stderr
    assert logged_in(page)
    done = cli("node", "user", "passwd", "--data", data, "--username", "agent", "--password-stdin",
               stdin=NEW_PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert NEW_PASSWORD not in done.stdout + done.stderr
    assert not logged_in(page)
    assert try_login(http, url, "agent", PASSWORD).status_code == 401
    assert try_login(http, url, "agent", NEW_PASSWORD).status_code == 303
    assert http(url, system.stations["V1"]["token"]).get("/api/v1/status").status_code == 200


def test_cli_user_add_reads_the_password_from_stdin_or_env_and_checks_department(system, http):
    data = str(system.data / "central")
    r = cli("central", "user", "add", "--data", data, "--username", "li", "--department", "renshe",
            "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    r = cli("central", "user", "add", "--data", data, "--username", "wu", "--department", "renshe",
            env={"LASTMILE_PASSWORD": NEW_PASSWORD})
    assert r.returncode == 0, r.stderr
    r = cli("central", "user", "add", "--data", data, "--username", "zhao", "--department", "nosuch",
            "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert r.returncode == 2 and "department" in r.stderr
    r = cli("central", "user", "add", "--data", data, "--username", "qian", "--department", "renshe",
            "--password-stdin", stdin="password123\n")
    assert r.returncode == 2 and "too common" in r.stderr
    assert try_login(http, system.central_url, "li", NEW_PASSWORD).status_code == 303
    assert try_login(http, system.central_url, "wu", NEW_PASSWORD).status_code == 303
    assert try_login(http, system.central_url, "zhao", NEW_PASSWORD).status_code == 401


def test_cookies_are_secure_over_https_and_csrf_changes_at_login(system, http):
    url = system.central_url
    page = http(url)
    plain = page.post("/login", data={"username": "minzheng", "password": PASSWORD, "csrf": csrf_of(page)})
    assert plain.status_code == 303 and "secure" not in plain.headers["set-cookie"].lower()

    # Behind a TLS proxy on this machine (uvicorn trusts X-Forwarded-Proto from 127.0.0.1 by default).
    # httpx keeps Secure cookies off plain http: hand them on by hand, as the browser behind the proxy would.
    tls = client(http, url, {"x-forwarded-proto": "https"})
    form = tls.get("/login")
    assert "; secure" in form.headers["set-cookie"].lower()
    before = form.text.split('name="csrf" value="')[1].split('"')[0]
    r = tls.post("/login", data={"username": "minzheng", "password": PASSWORD, "csrf": before},
                 headers={"cookie": form.headers["set-cookie"].split(";")[0]})
    assert r.status_code == 303
    assert "; secure" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
    home = tls.get("/", headers={"cookie": r.headers["set-cookie"].split(";")[0]})
    assert home.status_code == 200
    after = home.text.split('name="csrf" value="')[1].split('"')[0]
    assert after != before


def test_old_scrypt_hashes_still_log_in_and_are_replaced_by_argon2id(system, http):
    salt = os.urandom(16)
    dk = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    old = f"scrypt${2**14}$8$1${salt.hex()}${dk.hex()}"
    db = sqlite3.connect(system.data / "central" / "central.db")
    with db:
        db.execute("UPDATE users SET password = ? WHERE username = 'renshe'", (old,))
    assert try_login(http, system.central_url, "renshe", "wrong-password-1").status_code == 401
    assert db.execute("SELECT password FROM users WHERE username = 'renshe'").fetchone()[0] == old
    assert try_login(http, system.central_url, "renshe", PASSWORD).status_code == 303
    new = db.execute("SELECT password FROM users WHERE username = 'renshe'").fetchone()[0]
    db.close()
    assert new.startswith("$argon2id$") and passwords.check_password(PASSWORD, new)


def test_password_rules(tmp_path):
    for bad, why in (("short-1", "10 characters"), ("password123", "too common"), ("QWERTYUIOP", "too common"),
                     ("aaaaaaaaaaaa", "too common"), ("agent-agent-2026", "user name")):
        with pytest.raises(passwords.WeakPassword, match=why):
            passwords.check_strength(bad, "agent")
    passwords.check_strength(PASSWORD, "agent")
    store = NodeStore(tmp_path / "node.db")
    with pytest.raises(ValueError):
        store.add_user("agent", "代办员", "12345678")
    store.close()
    settings = Settings(data=tmp_path / "central")
    County.init(settings)
    county = County(settings)
    with pytest.raises(CountyError) as err:
        county.add_user("boss", "督办", "1234567890", "supervisor", None)
    assert err.value.code == "weak_password" and county.store.user("username", "boss") is None
    county.store.close()


def test_one_browser_keeps_its_logins_at_two_stations_and_the_county(system, http):
    """A browser keeps cookies per host, not per port: the demo's stations and county on one
    127.0.0.1 must each have their own session cookie, or logging in at one logs out of the other."""
    v1, t1, county = system.stations["V1"]["url"], system.stations["T1"]["url"], system.central_url
    browser = http(v1, follow_redirects=True)          # one cookie jar for all three, as in one browser

    def log_in_at(url: str, username: str) -> None:
        csrf = browser.get(f"{url}/login").text.split('name="csrf" value="')[1].split('"')[0]
        r = browser.post(f"{url}/login", data={"username": username, "password": PASSWORD, "csrf": csrf})
        assert r.status_code == 200 and "/login" not in str(r.url)

    def at_home(url: str) -> bool:
        return browser.get(f"{url}/", follow_redirects=False).status_code == 200

    log_in_at(v1, "agent")
    log_in_at(t1, "agent")
    log_in_at(county, "minzheng")
    assert at_home(v1) and at_home(t1) and at_home(county)
    assert "V1代办员" in browser.get(f"{v1}/").text and "T1代办员" in browser.get(f"{t1}/").text
    names = {c.name for c in browser.cookies.jar}
    assert {"lastmile_node_V1", "lastmile_node_T1", "lastmile_central"} <= names
