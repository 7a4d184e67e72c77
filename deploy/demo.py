"""`lastmile demo`: a county centre and two stations on loopback, with demo data.

Each part runs as its own process, exactly as an installer would start it; the demo only
does the installer's steps for them (init, accounts, catalogue, enrolment) the first time.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from crypto.keys import private_dir

ADDRESSES = {"V001": ("示范县张村村委会一楼便民服务站", "0371-6512-3401"),
             "T001": ("示范县城关镇人民路18号便民服务中心", "0371-6512-3402")}
PASSWORD = "lastmile-demo-2026"     # the demo's logins; passes the password rules
STATIONS = [("V001", "张村村便民服务站", "village"), ("T001", "城关镇便民服务中心", "township")]
AGENTS = {"V001": "张丽", "T001": "刘伟"}
ADMINS = {"V001": "张村 站长 张建华", "T001": "城关镇 主任 陈明"}
CLERKS = [("minzheng", "民政局 王科员", "minzheng"), ("renshe", "人社局 李科员", "renshe"),
          ("yibao", "医保局 赵科员", "yibao"), ("canlian", "残联 孙科员", "canlian"),
          ("weijian", "卫健委 周科员", "weijian"), ("zhujian", "住建局 吴科员", "zhujian"),
          ("gongan", "公安局 郑科员", "gongan")]


def _free(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with code {proc.returncode}")
        try:
            httpx.get(url + "/login", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not come up in {timeout} s")


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "deploy.cli", *args])


def setup(data: Path, central_url: str, central_proc: subprocess.Popen[bytes], catalog: Path) -> dict[str, Any]:
    """First run only: accounts, catalogue, stations, enrolment. Returns what demo.json records."""
    from central.county import County, Settings as CentralSettings
    from node.services.enrolment import enroll
    from node.settings import Settings as NodeSettings
    from node.store import Store

    county = County(CentralSettings(data=data / "central"))
    county.publish_catalog(json.loads(catalog.read_text(encoding="utf-8")))   # clerks need its departments
    tokens = {"supervisor": county.add_user("supervisor", "督办 陈主任", PASSWORD, "supervisor", None)}
    for username, name, dept in CLERKS:
        tokens[username] = county.add_user(username, name, PASSWORD, "clerk", dept)
    codes = {code: county.add_station(code, name, level) for code, name, level in STATIONS}
    fingerprint = county.me.public.fingerprint()
    county.store.close()
    _wait(central_url, central_proc)
    stations = []
    for code, name, level in STATIONS:
        settings = NodeSettings(data=data / code)
        enroll(settings, central_url=central_url, station=code, code=codes[code], fingerprint=fingerprint)
        store = Store(settings.db_path)
        token = store.add_user("agent", AGENTS[code], PASSWORD)             # documents print the agent's own name
        store.add_user("admin", ADMINS[code], PASSWORD, "admin")            # manages the accounts on /staff
        with store.transaction() as db:                                     # printed on the station's documents
            store.set_meta(db, "station_address", ADDRESSES[code][0])
            store.set_meta(db, "station_phone", ADDRESSES[code][1])
        store.close()
        stations.append({"code": code, "name": name, "level": level, "token": token})
    return {"central": {"token": tokens["supervisor"], "clerk_tokens": tokens}, "stations": stations}


def run(data: Path, *, host: str, base_port: int, sync_interval: float, catalog: Path) -> int:
    """``catalog``: the demo catalogue (deploy/cli.py ``DEMO_CATALOG``): the CLI imports the demo, never the reverse."""
    data = data.resolve()
    ports = [base_port + i for i in range(len(STATIONS) + 1)]
    busy = [p for p in ports if not _free(host, p)]
    if busy:
        print(f"error: port(s) {busy} on {host} are in use; stop the other demo or pass --base-port", file=sys.stderr)
        return 2
    central_url = f"http://{host}:{ports[0]}"
    info_path = data / "demo.json"
    first = not info_path.exists()
    procs: list[subprocess.Popen[bytes]] = []
    private_dir(data)       # 0700 like every folder the apps make (demo.json holds the API tokens)
    try:
        if first:
            subprocess.run([sys.executable, "-m", "deploy.cli", "central", "init", "--data", str(data / "central")],
                           check=True)
        procs.append(_spawn("central", "serve", "--data", str(data / "central"), "--host", host, "--port", str(ports[0])))
        if first:
            info = setup(data, central_url, procs[0], catalog)
        else:
            info = json.loads(info_path.read_text(encoding="utf-8"))
            _wait(central_url, procs[0])
            if info["central"].get("url") != central_url:        # resumed with another --base-port or --host
                for st in info["stations"]:
                    subprocess.run([sys.executable, "-m", "deploy.cli", "node", "set-central", central_url,
                                    "--data", str(data / st["code"])], check=True)
        info["central"]["url"] = central_url
        for st, port in zip(info["stations"], ports[1:]):
            st["url"] = f"http://{host}:{port}"
            procs.append(_spawn("node", "serve", "--data", str(data / st["code"]), "--host", host, "--port", str(port),
                                "--sync-interval", str(sync_interval)))
        for st, proc in zip(info["stations"], procs[1:]):
            _wait(st["url"], proc)
        info_path.write_text(json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")
        info_path.chmod(0o600)
        print("\n=== lastmile demo is running (Ctrl-C to stop) ===")
        print(f"County centre : {central_url}   staff: supervisor / {PASSWORD} (all departments),"
              f" or minzheng, renshe, yibao, canlian, weijian, zhujian, gongan / {PASSWORD}")
        for st in info["stations"]:
            print(f"Station {st['code']}  : {st['url']}   {st['name']}   agent / {PASSWORD}")
        print(f"API tokens    : {info_path}\n", flush=True)
        stop = {"now": False}

        def _stop(signum: int, frame: object) -> None:
            stop["now"] = True
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        while not stop["now"] and all(p.poll() is None for p in procs):
            time.sleep(0.5)
        return 0 if stop["now"] else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
