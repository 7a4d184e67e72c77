"""The sync runs every few seconds: an idle one logs nothing at INFO (the demo's banner with its
addresses stays on the screen), one that moved something says so at INFO, at the station and at
the county, and the county's access log keeps no line per answered sync."""

from __future__ import annotations

import logging

from central.app import QuietSyncAccess
from tests.sync.test_protocol_machine import form_for


def info_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and r.name.startswith("lastmile")]


def test_an_idle_sync_logs_nothing_at_info_and_one_that_moved_something_does(system, http, caplog):
    node = http(system.stations["V1"]["url"], system.stations["V1"]["token"])
    caplog.set_level(logging.DEBUG)
    assert node.post("/api/v1/sync").json()["received"] > 0          # the first brings the catalogue
    assert any(m.startswith("sync: ") and "received" in m for m in info_lines(caplog))
    node.post("/api/v1/sync")                                        # its confirmation may still go up
    caplog.clear()

    assert node.post("/api/v1/sync").json()["sent"] == 0
    assert info_lines(caplog) == []
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(m.startswith("sync: 0 event(s) sent") for m in debug)           # still there, at DEBUG
    assert any(m.startswith("sync {'station': 'V1'") for m in debug)           # the county's, too

    item = next(i for i in node.get("/api/v1/catalog").json()["items"] if i["materials"])
    form = form_for(item, 3)
    r = node.post("/api/v1/applications", json={
        "item": item["code"], "decision": "accept", "applicant": {k: form[k] for k in ("name", "id_number")},
        "fields": {k[2:]: v for k, v in form.items() if k.startswith("f_")}, "materials": form["materials"]})
    assert r.status_code == 201, r.text
    caplog.clear()
    assert node.post("/api/v1/sync").json()["sent"] > 0
    lines = info_lines(caplog)
    assert any(m.startswith("sync: ") and "sent" in m and not m.startswith("sync: 0 ") for m in lines), lines
    assert any(m.startswith("sync {'station': 'V1'") for m in lines), lines       # the county: it stored it


def access_record(method: str, path: str, status: int) -> logging.LogRecord:
    """A record as uvicorn's access log makes it."""
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                             ("127.0.0.1:5000", method, path, "1.1", status), None)


def test_the_countys_access_log_keeps_refused_syncs_and_other_requests_only():
    quiet = QuietSyncAccess()
    access = logging.getLogger("uvicorn.access")
    old = access.level
    try:
        access.setLevel(logging.INFO)
        assert not quiet.filter(access_record("POST", "/sync/v1/exchange", 200))
        assert quiet.filter(access_record("POST", "/sync/v1/exchange", 409))
        assert quiet.filter(access_record("POST", "/cases/x/decision", 200))
        access.setLevel(logging.DEBUG)
        assert quiet.filter(access_record("POST", "/sync/v1/exchange", 200))
    finally:
        access.setLevel(old)
