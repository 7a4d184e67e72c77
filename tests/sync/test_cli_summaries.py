"""`lastmile node sync`, `node export`, `node import` and `central import` tell the installer in a few plain lines what
moved and what still waits; `--json` gives the machine-readable answer (issue 8). Real data folders,
the real console script in a subprocess, a real county on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from tests.sync.test_link import accept


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deploy.cli", *args], capture_output=True, text=True, timeout=120)


def test_node_sync_prints_a_summary_and_json_on_request(system, station):
    data = str(station.settings.data)
    accept(station, 2)
    out = run("node", "sync", "--data", data)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert not text.lstrip().startswith("{")
    assert "sync done: sent 2 records, the county confirmed 2" in text
    assert "still waiting to go up: 0 records, 0 scan(s)" in text
    assert "last contact with the county: 20" in text

    accept(station, 1)
    out = run("node", "sync", "--data", data, "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["sent"] == 1 and got["acked"] == 1 and got["state"]["up_waiting"] == 0


def test_node_sync_that_cannot_reach_the_county_says_so_and_what_waits(system, station):
    data = str(station.settings.data)
    accept(station, 1)
    with socket.socket() as s:                       # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    assert run("node", "set-central", dead, "--data", data).returncode == 0
    out = run("node", "sync", "--data", data)
    assert out.returncode == 1
    assert "sync failed" in out.stderr
    assert "nothing is lost" in out.stdout and "still waiting to go up: 1 record, 0 scan(s)" in out.stdout
    out = run("node", "sync", "--data", data, "--json")
    assert out.returncode == 1 and json.loads(out.stdout)["up_waiting"] == 1


def test_node_export_and_import_print_summaries_and_json_on_request(system, station, tmp_path):
    data, central = str(station.settings.data), str(system.data / "central")
    accept(station, 2)
    stick = tmp_path / "V1.bundle"
    out = run("node", "export", "--data", data, "--to", str(stick))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("wrote 1 sealed envelope(s)")
    assert f"to {stick}" in out.stdout
    assert f"lastmile central import {stick} --data COUNTY_DIR" in out.stdout
    assert f"lastmile node import {stick}.answer --data {data}" in out.stdout
    out = run("central", "import", str(stick), "--data", central)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("bundle of station V1 taken: 2 records newly stored")
    assert f"lastmile node import {stick}.answer --data STATION_DIR" in out.stdout
    out = run("node", "import", f"{stick}.answer", "--data", data)
    assert out.returncode == 0, out.stderr
    assert "answer applied: the county confirmed 2 records" in out.stdout
    assert "still waiting to go up: 0 records" in out.stdout

    out = run("node", "export", "--data", data, "--to", str(tmp_path / "again.bundle"), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["envelopes"] == 1
    out = run("central", "import", str(tmp_path / "again.bundle"), "--data", central, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["stations"] == ["V1"] and json.loads(out.stdout)["stored"] == 0
    out = run("node", "import", str(tmp_path / "again.bundle.answer"), "--data", data, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["state"]["up_waiting"] == 0
