"""Data, keys, databases and scans are private to the service's user, whatever the umask."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from PIL import Image

from central.app import create_app as central_app
from central.county import County, Settings as CentralSettings
from central.store import Store as CentralStore
from node.app import create_app as node_app
from node.store import Store as NodeStore
from tests.conftest import ROOT, add_station, make_county, serve
from tests.sync.test_protocol_machine import form_for


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def loose(data: Path) -> list[str]:
    """Everything under ``data`` that someone else could read: directories not 0700, and databases
    (with -wal, -shm), keys, session.key and sealed scans not 0600. Empty when all is private."""
    found = [] if mode(data) == 0o700 else [f"{data} {oct(mode(data))}"]
    for path in sorted(data.rglob("*")):
        private_file = path.suffix == ".pem" or path.name == "session.key" or path.suffix in (".sealed", ".part") or re.search(r"\.db(-wal|-shm)?$", path.name)
        if (path.is_dir() and mode(path) != 0o700) or (path.is_file() and private_file and mode(path) != 0o600):
            found.append(f"{path.relative_to(data)} {oct(mode(path))}")
    return found


def test_both_apps_keep_everything_private_under_umask_022(tmp_path, http):
    with umask(0o022):
        central, tokens = make_county(tmp_path / "central")
        with serve(central_app(central)) as central_url:
            settings, token = add_station(central, central_url, tmp_path / "V1", "V1", "village")
            with serve(node_app(settings, background_sync=False)) as url:
                node = http(url, token)
                assert node.post("/api/v1/sync").status_code == 200
                item = next(i for i in node.get("/api/v1/catalog").json()["items"] if i["materials"])
                form = form_for(item, 5)
                out = io.BytesIO()
                Image.new("RGB", (300, 200), "white").save(out, "JPEG")
                r = node.post("/api/v1/applications", json={
                    "item": item["code"], "decision": "accept",
                    "applicant": {k: form[k] for k in ("name", "id_number")},
                    "fields": {k[2:]: v for k, v in form.items() if k.startswith("f_")},
                    "materials": form["materials"],
                    "scans": [{"material": item["materials"][0]["code"], "name": "a.jpg",
                               "data_base64": base64.b64encode(out.getvalue()).decode()}]})
                assert r.status_code == 201, r.text
                synced = node.post("/api/v1/sync").json()
                assert synced["scans"] == 1, synced
    station_files = {p.name for p in (tmp_path / "V1").rglob("*")}
    county_files = {p.name for p in (tmp_path / "central").rglob("*")}
    assert {"node.db", "session.key", "sign.pem", "enc.pem", "blobs"} <= station_files
    assert {"central.db", "session.key", "sign.pem", "enc.pem", "blobs", "V1"} <= county_files
    assert any(n.endswith(".sealed") for n in station_files) and any(n.endswith(".sealed") for n in county_files)
    assert loose(tmp_path / "V1") == []
    assert loose(tmp_path / "central") == []


def test_the_cli_init_commands_keep_everything_private_under_umask_022(tmp_path):
    def lastmile(*args: str) -> str:
        r = subprocess.run(["sh", "-c", 'umask 022 && exec "$@"', "sh", sys.executable, "-m", "deploy.cli", *args],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout

    lastmile("central", "init", "--data", str(tmp_path / "central"))
    added = lastmile("central", "station", "add", "--data", str(tmp_path / "central"), "--code", "V9", "--name", "九村")
    code = re.search(r"One-time enrolment code[^:]*: (\S+)", added).group(1)  # type: ignore[union-attr]
    fingerprint = re.search(r"--fingerprint (\S+)", added).group(1)          # type: ignore[union-attr]
    assert loose(tmp_path / "central") == []
    with serve(central_app(CentralSettings(data=tmp_path / "central"))) as url:
        lastmile("node", "init", "--data", str(tmp_path / "V9"), "--central", url, "--station", "V9",
                 "--enroll", code, "--fingerprint", fingerprint)
    assert (tmp_path / "V9" / "node.db").exists()
    assert loose(tmp_path / "V9") == []
    assert loose(tmp_path / "central") == []


def test_files_left_readable_by_an_older_version_are_tightened(tmp_path):
    for name, store in (("node", NodeStore), ("central", CentralStore)):
        data = tmp_path / name
        data.mkdir(mode=0o755)
        os.chmod(data, 0o755)
        db = data / f"{name}.db"
        sqlite3.connect(db).close()
        os.chmod(db, 0o644)
        store(db).close()
        assert mode(data) == 0o700 and mode(db) == 0o600
    county = tmp_path / "county"
    with umask(0o022):
        make_county(county)
    (county / "session.key").write_text("old-secret")
    os.chmod(county / "session.key", 0o644)
    County(CentralSettings(data=county)).store.close()
    with umask(0o022):
        central_app(CentralSettings(data=county))
    assert mode(county / "session.key") == 0o600
