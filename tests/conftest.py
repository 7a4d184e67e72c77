"""Shared fixtures: real uvicorn servers on loopback, real SQLite files under tmp_path."""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import sqlite3
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import uvicorn
from argon2 import PasswordHasher
from argon2.low_level import Type

from central.app import create_app as central_app
from central.county import County, Settings as CentralSettings
from crypto import passwords
from node import vault
from node.app import create_app as node_app
from node.services.enrolment import enroll
from node.settings import Settings as NodeSettings
from node.store import Store as NodeStore
from sync import enrolment
from templates.limits import server_config

ROOT = Path(__file__).resolve().parent.parent
CATALOG = json.loads((ROOT / "central" / "catalog_demo.json").read_text(encoding="utf-8"))
PASSWORD = "village-key-2718"     # passes the password rules: 10+ characters, not a common one


# Key stretching. Two thirds of building a county and its stations went into it: the enrolment
# scrypt (sync/enrolment.py, N=2^15), the staff password hashes (crypto/passwords.py, argon2id
# t=3 m=64 MiB p=4) and the vault's password KEK (node/vault.py, argon2id t=2 m=19 MiB). The real
# parameters are module-level constants of those modules, and nothing but this file changes them:
# in every test process (each xdist worker) the session fixture below puts the cheapest parameters
# the algorithms allow in their place, and a test marked ``real_kdf`` gets the real ones back for
# its whole run (fixtures included): the tests of the parameters themselves, the timing tests whose
# point is the cost of a check, and the tests where a `lastmile` subprocess (real parameters) and
# this process must derive the same key (an enrolment code, a vault password). Production code never
# reads anything that could make it cheap: tests/crypto/test_kdf_params.py checks that a fresh
# process has the real parameters. A stored argon2 hash names its parameters, so a hash made with
# either set verifies in both (a process of the other set rehashes it at the next login).
def kdf_parameters() -> dict[str, Any]:
    return {"hasher": passwords._HASHER, "argon": vault.ARGON,
            "scrypt": (enrolment.SCRYPT_N, enrolment.SCRYPT_R, enrolment.SCRYPT_P)}


REAL_KDF = kdf_parameters()
CHEAP_KDF = {"hasher": PasswordHasher(time_cost=1, memory_cost=8, parallelism=1),
             "argon": {**vault.ARGON, "time_cost": 1, "memory_cost": 8, "parallelism": 1},
             "scrypt": (2, 1, 1)}
assert CHEAP_KDF["argon"]["type"] == Type.ID


def use_kdf(params: dict[str, Any]) -> None:
    passwords._HASHER = params["hasher"]
    vault.ARGON = params["argon"]
    enrolment.SCRYPT_N, enrolment.SCRYPT_R, enrolment.SCRYPT_P = params["scrypt"]
    passwords._dummy_hash.cache_clear()         # made once per process, with the parameters of then


@pytest.fixture(scope="session", autouse=True)
def cheap_kdf() -> Iterator[None]:
    use_kdf(CHEAP_KDF)
    yield
    use_kdf(REAL_KDF)


@pytest.fixture(autouse=True)
def real_kdf(request: pytest.FixtureRequest, cheap_kdf: None) -> Iterator[None]:
    """The real parameters for a test marked ``real_kdf`` (set before its other function fixtures)."""
    if request.node.get_closest_marker("real_kdf") is None:
        yield
        return
    use_kdf(REAL_KDF)
    try:
        yield
    finally:
        use_kdf(CHEAP_KDF)


@contextlib.contextmanager
def serving() -> Iterator[Callable[..., str]]:
    """``start(app, **options)`` serves ``app`` on a loopback port, as ``lastmile … serve`` runs it
    (templates/limits.py ``server_config``: the request-head timeout; ``options`` go to it, such as
    ``head_timeout=``), and returns its URL. At the end every server started is told to stop at once,
    then awaited: a uvicorn server takes 0.15-0.2 s to stop (its 0.1 s ticks), so three stopped one
    after another cost half a second for each test of the ``system`` fixture."""
    running: list[tuple[uvicorn.Server, threading.Thread, socket.socket]] = []

    def start(app: Any, **options: Any) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(server_config(app, log_level="warning", lifespan="on", **options))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread, sock))
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    try:
        yield start
    finally:
        for server, _, _ in running:
            server.should_exit = True
        for _, thread, sock in running:
            thread.join(timeout=10)
            sock.close()


@contextlib.contextmanager
def serve(app: Any, **options: Any) -> Iterator[str]:
    """``app`` on a loopback port, configured as ``lastmile … serve`` runs it (``serving``)."""
    with serving() as start:
        yield start(app, **options)


@dataclass
class System:
    data: Path
    central_url: str
    central_token: str
    clerk_tokens: dict[str, str]
    stations: dict[str, dict[str, Any]]


def make_county(data: Path) -> tuple[CentralSettings, dict[str, str]]:
    settings = CentralSettings(data=data)
    County.init(settings)
    county = County(settings)
    county.publish_catalog(CATALOG)          # first: a clerk's department must be in the catalogue
    tokens = {"supervisor": county.add_user("boss", "督办", PASSWORD, "supervisor", None)}
    for d in CATALOG["departments"]:
        tokens[d["code"]] = county.add_user(d["code"], d["name"] + "科员", PASSWORD, "clerk", d["code"])
    county.store.close()
    return settings, tokens


def add_station(central: CentralSettings, central_url: str, data: Path, code: str, level: str) -> tuple[NodeSettings, str]:
    county = County(central)
    otp = county.add_station(code, f"{code}站", level)
    fingerprint = county.me.public.fingerprint()           # as `station add` prints it for the installer
    county.store.close()
    settings = NodeSettings(data=data, sync_interval=3600)
    enroll(settings, central_url=central_url, station=code, code=otp, fingerprint=fingerprint)
    store = NodeStore(settings.db_path)
    token = store.add_user("agent", f"{code}代办员", PASSWORD)
    store.close()
    return settings, token


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    """A county centre and two stations (village V1, township T1), each on its own loopback port."""
    central, tokens = make_county(tmp_path / "central")
    with serving() as start:
        central_url = start(central_app(central))
        stations = {}
        for code, level in (("V1", "village"), ("T1", "township")):
            settings, token = add_station(central, central_url, tmp_path / code, code, level)
            url = start(node_app(settings, background_sync=False))
            stations[code] = {"url": url, "token": token, "settings": settings}
        yield System(tmp_path, central_url, tokens["supervisor"], tokens, stations)


@functools.cache
def tls() -> ssl.SSLContext:
    """A TLS context as httpx makes by default (verifying, certifi's CA certificates)."""
    import certifi
    return ssl.create_default_context(cafile=certifi.where())


@pytest.fixture(scope="session", autouse=True)
def shared_tls() -> Iterator[None]:
    """Every httpx client of a test process that would make its own default TLS context gets the one
    of ``tls()``: httpx makes a new one per client and loads ~150 CA certificates into it, ~50 ms,
    and the tests make thousands of clients (theirs, and the apps': each enrolment, each station
    sync), all speaking plain HTTP on loopback. The same verification, made once."""
    import httpx
    originals = {cls: cls.__init__ for cls in (httpx.Client, httpx.AsyncClient)}

    def shared(init: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(init)
        def __init__(self: Any, **kw: Any) -> None:       # httpx clients take keyword arguments only
            if kw.get("verify", True) is True:
                kw["verify"] = tls()
            init(self, **kw)
        return __init__

    for cls, init in originals.items():
        cls.__init__ = shared(init)                # type: ignore[method-assign]
    yield
    for cls, init in originals.items():
        cls.__init__ = init                        # type: ignore[method-assign]


@pytest.fixture
def http() -> Iterator[Any]:
    """A factory of httpx clients (bearer token optional), all closed at the end of the test."""
    clients: list[Any] = []

    def make(url: str, token: str | None = None, **kw: Any) -> Any:
        import httpx
        headers = {"authorization": f"Bearer {token}"} if token else {}
        c = httpx.Client(base_url=url, headers=headers, timeout=30, **kw)
        clients.append(c)
        return c
    yield make
    for c in clients:
        c.close()


def stored(system: System) -> tuple[int, int]:
    """(events, cases) the county of ``system`` holds, read straight from its database file."""
    conn = sqlite3.connect(system.data / "central" / "central.db")
    try:
        return (conn.execute("SELECT count(*) FROM _sync_events").fetchone()[0],
                conn.execute("SELECT count(*) FROM cases").fetchone()[0])
    finally:
        conn.close()


def csrf_of(page: Any) -> str:
    """The CSRF token of the login page, for form posts from tests."""
    return str(page.get("/login").text.split('name="csrf" value="')[1].split('"')[0])


def log_in(http: Any, url: str, username: str, password: str = PASSWORD) -> tuple[Any, Any]:
    """A browser-like client logged in at ``url``; returns (client, the page after login)."""
    page = http(url, follow_redirects=True)
    landing = page.post("/login", data={"username": username, "password": password, "csrf": csrf_of(page)})
    return page, landing


# The longest files first, longest first (on two cores under load, 2026-12-08; seconds per file).
# `make test` gives each file to one worker (--dist loadfile) in the order collected here
# (--no-loadscope-reorder: xdist would otherwise put the files with most tests first, and so these
# long files of one or two tests last, leaving one core busy minutes after the other went idle).
# A file not named keeps its place after these. Add a file here when it grows past the last one.
LONGEST_FIRST = (
    "sync/test_crash.py",                   # 125
    "test_schemathesis.py",                 # 100
    "e2e/test_readme.py",                   # 72
    "test_guessing.py",                     # 72
    "e2e/test_browser_life.py",             # 70
    "sync/test_restore_race.py",            # 50
    "e2e/test_agent_day.py",                # 50
    "sync/test_hostile_county.py",          # 49
    "node/test_staff.py",                   # 48
    "test_demo.py",                         # 46
    "test_litestream.py",                   # 44
    "sync/test_scans.py",                   # 39
    "test_sessions.py",                     # 35
    "sync/test_recovery.py",                # 34
    "central/test_preauth.py",              # 32
    "crypto/test_strict_wire.py",           # 29
    "test_rating.py",                       # 27
    "test_packaging.py",                    # 27
    "sync/test_protocol_machine.py",        # 27
    "sync/test_link.py",                    # 27
    "test_verify_attacks.py",               # 25
    "life/test_state_machine.py",           # 23
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: n for n, name in enumerate(LONGEST_FIRST)}

    def place(item: pytest.Item) -> int:
        try:
            return rank.get(item.path.relative_to(ROOT / "tests").as_posix(), len(rank))
        except ValueError:
            return len(rank)
    items.sort(key=place)                   # stable: a file's tests keep their order
