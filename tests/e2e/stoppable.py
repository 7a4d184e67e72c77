"""A county and two stations like the ``system`` fixture (tests/conftest.py), except that the county's
server can be stopped mid-test: the stations go on offline, as they do when the link is down.
Each station also has an admin (``admin``) and a second agent (``agent2``), all with PASSWORD."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

import httpx

from central.app import create_app as central_app
from node.app import create_app as node_app
from node.store import Store as NodeStore
from tests.conftest import PASSWORD, System, add_station, make_county, serve


@contextlib.contextmanager
def stoppable_system(tmp_path: Path) -> Iterator[tuple[System, Callable[[], None]]]:
    """(the system, a function that stops the county's server for good)."""
    central, tokens = make_county(tmp_path / "central")
    county = contextlib.ExitStack()
    try:
        central_url = county.enter_context(serve(central_app(central)))
        with contextlib.ExitStack() as stack:
            stations = {}
            for code, level in (("V1", "village"), ("T1", "township")):
                settings, token = add_station(central, central_url, tmp_path / code, code, level)
                store = NodeStore(settings.db_path)
                store.user_by_token(token)      # unlocked: the key is wrapped for the new accounts (node/vault.py)
                store.add_user("admin", f"{code}站长", PASSWORD, "admin")
                store.add_user("agent2", f"{code}代办员乙", PASSWORD)
                store.close()
                url = stack.enter_context(serve(node_app(settings, background_sync=False)))
                stations[code] = {"url": url, "token": token, "settings": settings}

            def stop_county() -> None:
                county.close()
                with contextlib.suppress(httpx.TransportError):
                    httpx.get(central_url + "/login", timeout=2)
                    raise AssertionError("the county still answers")

            yield System(tmp_path, central_url, tokens["supervisor"], tokens, stations), stop_county
    finally:
        county.close()
