"""The county's server never waits on its database on the event loop: a slow store delays only the
requests that need it."""

from __future__ import annotations

import threading
import time

from central.app import create_app as central_app
from tests.conftest import make_county, serve


def test_a_busy_database_does_not_freeze_other_requests(tmp_path, http):
    settings, tokens = make_county(tmp_path / "central")
    app = central_app(settings)
    with serve(app) as url:
        api = http(url, tokens["supervisor"])
        anonymous = http(url)
        assert api.get("/api/v1/cases").status_code == 200
        lock = app.state.county.store.lock
        held, release = threading.Event(), threading.Event()

        def hold() -> None:                     # a long transaction, say a big sync being stored
            with lock:
                held.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        held.wait(5)
        waiting: dict[str, int] = {}
        callers = [threading.Thread(target=lambda: waiting.update(cases=api.get("/api/v1/cases").status_code)),
                   threading.Thread(target=lambda: waiting.update(case=api.get("/api/v1/cases/nope").status_code))]
        for t in callers:
            t.start()
        time.sleep(0.3)                         # both now wait for the database
        try:
            for path in ("/login", "/static/app.css", "/login"):
                start = time.monotonic()
                assert anonymous.get(path).status_code == 200
                assert time.monotonic() - start < 1, path
        finally:
            release.set()
            holder.join()
        for t in callers:
            t.join(10)
        assert waiting == {"cases": 200, "case": 404}
