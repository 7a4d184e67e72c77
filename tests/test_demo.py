"""`lastmile demo --base-port` (the README's way round ports already taken): the demo runs on the
ports asked for, and resumed on other ports its stations follow the county to its new address."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from node.store import TOKEN_ENV
from tests.test_file_modes import loose, umask


def _free_base() -> int:
    for _ in range(50):
        base = random.randrange(20000, 40000)
        socks = []
        try:
            for port in range(base, base + 3):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no three free ports in a row")


def _start(data: Path, base: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", "demo", "--data", str(data), "--base-port", str(base),
                             "--sync-interval", "3600"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 180
    assert proc.stdout is not None
    for line in proc.stdout:
        if "lastmile demo is running" in line or time.monotonic() > deadline:
            break
    assert proc.poll() is None, "the demo stopped"
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.stdout:
            proc.stdout.close()


def test_demo_runs_on_the_base_port_given_and_follows_it_when_resumed_elsewhere(tmp_path):
    data = tmp_path / "demo"
    base = _free_base()
    with umask(0o022):
        proc = _start(data, base)
    try:
        for port in range(base, base + 3):
            assert httpx.get(f"http://127.0.0.1:{port}/login", timeout=10).status_code == 200
        # --data itself is as private as every folder in it (demo.json holds the API tokens)
        assert loose(data) == []
    finally:
        _stop(proc)
    again = _free_base()
    proc = _start(data, again)
    try:
        assert httpx.get(f"http://127.0.0.1:{again + 1}/login", timeout=10).status_code == 200
        token = next(s["token"] for s in json.loads((data / "demo.json").read_text(encoding="utf-8"))["stations"]
                     if s["code"] == "V001")
        # The CLI runs locked (node/vault.py): it unlocks with the station's API token.
        synced = subprocess.run([sys.executable, "-m", "deploy.cli", "node", "sync", "--data", str(data / "V001")],
                                capture_output=True, text=True, timeout=120, env={**os.environ, TOKEN_ENV: token})
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert "sync done" in synced.stdout
    finally:
        _stop(proc)
