"""The README, as a test (issue 14): its first command started exactly as a newcomer starts it, then
one application walked through in Chromium, across a restart of the whole demo; and every command
line the README quotes parses.

Nothing is set up beforehand: `lastmile demo --data TMP --base-port FREE`, a subprocess of the
installed console script, makes the county, both stations, the accounts and the catalogue itself.
A suite of green parts once hid a demo that could take no application (the stations never applied
the county's catalogue); this test is the front door.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from playwright.sync_api import expect

from deploy.cli import parser
from tests.e2e.test_browser import attach_scan, browser, fill_dibao_form, login, shot  # noqa: F401 - browser: fixture
from tests.e2e.test_walking_skeleton import full_application
from tests.test_demo import _free_base
from sync.law.intake import valid_id_for_demo

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
LASTMILE = Path(sys.executable).with_name("lastmile")       # the console script `make demo` runs
DEMO_PASSWORD = "lastmile-demo-2026"                        # as the README's table gives it
BANNER = "lastmile demo is running"


class Demo:
    """`lastmile demo` as a process group: started, stopped with Ctrl-C, started again."""

    def __init__(self, data: Path, base: int, log: Path) -> None:
        self.data, self.base, self.log = data, base, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> dict[str, Any]:
        assert LASTMILE.exists(), f"{LASTMILE} is missing: the README's install step did not make it"
        mark = self.log.stat().st_size if self.log.exists() else 0
        out = self.log.open("ab")
        self.proc = subprocess.Popen([str(LASTMILE), "demo", "--data", str(self.data), "--base-port", str(self.base)],
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        out.close()
        deadline = time.monotonic() + 180
        while BANNER not in self.log.read_bytes()[mark:].decode(errors="replace"):
            assert self.proc.poll() is None, "the demo stopped:\n" + self.log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the demo did not print its URLs in 180 s"
            time.sleep(0.3)
        printed = self.log.read_bytes()[mark:].decode(errors="replace")
        for port in range(self.base, self.base + 3):            # the URLs a newcomer opens are printed
            assert f"http://127.0.0.1:{port}" in printed
        return json.loads((self.data / "demo.json").read_text(encoding="utf-8"))

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)                     # Ctrl-C, as the README says
        try:
            assert self.proc.wait(timeout=60) == 0
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    d = Demo(tmp_path / "demo", _free_base(), tmp_path / "demo.log")
    try:
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            os.killpg(d.proc.pid, signal.SIGTERM)
            try:
                d.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(d.proc.pid, signal.SIGKILL)


def sync_until(page: Any, url: str, ready: str, timeout: float = 90) -> None:
    """Press 立即同步 on the station's start page until ``ready`` (a selector) is there."""
    deadline = time.monotonic() + timeout
    page.goto(url + "/")
    while page.locator(ready).count() == 0:
        assert time.monotonic() < deadline, f"{ready} never showed at {url}:\n" + page.inner_text("body")[:2000]
        page.click("text=立即同步")
        page.wait_for_timeout(1500)
        page.goto(url + "/")


def county_row(info: dict[str, Any], code: str) -> dict[str, Any]:
    r = httpx.get(info["central"]["url"] + "/api/v1/stations", timeout=30,
                  headers={"authorization": f"Bearer {info['central']['token']}"})
    assert r.status_code == 200, r.text
    return next(s for s in r.json()["stations"] if s["code"] == code)


def decide(page: Any, name: str, decision: str) -> None:
    """The 民政 clerk opens the case of ``name`` from the queue and decides it."""
    page.goto(page.url.split("/", 3)[0] + "//" + page.url.split("/", 3)[2] + "/")
    page.click(f"#cases tr:has-text('{name}') a")
    page.fill("textarea[name=note]", "经审核，依规办理")
    if decision == "reject":
        page.fill("[name=reason]", "家庭人均收入高于当地低保标准")
        page.fill("[name=basis]", "《社会救助暂行办法》第九条")
    page.click(f"button[value={decision}]")
    expect(page.locator(".ok")).to_contain_text("审批结果已保存")


def test_a_newcomer_takes_one_application_through_the_readme_demo_and_a_restart(demo, browser, tmp_path):
    info = demo.start()
    v001 = next(s for s in info["stations"] if s["code"] == "V001")
    assert oct((demo.data).stat().st_mode & 0o777) == "0o700"        # the data folder, as `init` makes it

    # 1. The agent logs in at V001 and takes a 最低生活保障 application with a scan.
    station = browser.new_page(locale="zh-CN")
    login(station, v001["url"], "agent", DEMO_PASSWORD)
    sync_until(station, v001["url"], "text=最低生活保障申请")
    shot(station, "readme-1-home")
    station.click("text=最低生活保障申请")
    fill_dibao_form(station, "王桂兰", valid_id_for_demo("11010519491231002"))
    attach_scan(station, tmp_path)
    station.click("button[value=accept]")

    # 2. The receipt prints: on A4, in Chinese, with its receipt number.
    station.wait_for_selector("text=受理回执")
    receipt_no = station.locator("#receipt-no").inner_text().strip() if station.locator("#receipt-no").count() \
        else re.search(r"\d{8,}", station.inner_text("body")).group(0)
    station.emulate_media(media="print")
    pdf = tmp_path / "receipt.pdf"
    station.pdf(path=str(pdf), prefer_css_page_size=True)
    station.emulate_media(media="screen")
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "受理回执" in text and "王桂兰" in text and receipt_no in text

    # Two more applications (a script with the station's token, as the README's API section shows).
    api = httpx.Client(base_url=v001["url"], headers={"authorization": f"Bearer {v001['token']}"}, timeout=60)
    item = next(i for i in api.get("/api/v1/catalog").json()["items"] if i["name"] == "最低生活保障申请")
    for name, tail in (("赵德明", "11010519520101003"), ("孙玉梅", "11010519550505004")):
        body = full_application(item)
        body["applicant"] = {**body["applicant"], "name": name, "id_number": valid_id_for_demo(tail)}
        assert api.post("/api/v1/applications", json=body).status_code == 201
    api.close()
    sync_until(station, v001["url"], "#up-waiting:text-is('0')")

    # 3. The 民政 clerk approves it at the county.
    county = browser.new_page(locale="zh-CN")
    login(county, info["central"]["url"], "minzheng", DEMO_PASSWORD)
    decide(county, "王桂兰", "approve")

    # 4. The result shows at V001.
    sync_until(station, v001["url"], "#results:has-text('王桂兰')")
    expect(station.locator("#results")).to_contain_text("已批准")
    shot(station, "readme-4-result")

    # 5. The demo is stopped and started again: the stations come back locked.
    demo.stop()
    info = demo.start()
    deadline = time.monotonic() + 60
    while not county_row(info, "V001")["locked"]:
        assert time.monotonic() < deadline, "V001 never reported itself locked after the restart"
        time.sleep(1)

    # 6. The clerk decides two more cases while V001 is locked; V001 receives them, locked.
    county = browser.new_page(locale="zh-CN")
    login(county, info["central"]["url"], "minzheng", DEMO_PASSWORD)
    decide(county, "赵德明", "approve")
    decide(county, "孙玉梅", "reject")
    deadline = time.monotonic() + 90
    while True:
        row = county_row(info, "V001")
        if row["locked"] and row["down_waiting"] == 0 and row["down_applied"] is not None \
                and row["down_applied"] < row["down_have"]:
            break                           # it holds both decisions and has not applied them: locked
        assert time.monotonic() < deadline, f"V001 did not receive the decisions while locked: {row}"
        time.sleep(1)
    county.goto(info["central"]["url"] + "/stations")
    expect(county.locator("#stations")).to_contain_text("站点锁定中，等待代办员登录")
    shot(county, "readme-6-stations-locked")

    # 7. The agent logs in, and both results show.
    station = browser.new_page(locale="zh-CN")
    login(station, v001["url"], "agent", DEMO_PASSWORD)
    station.goto(v001["url"] + "/")
    results = station.locator("#results")
    expect(results).to_contain_text("赵德明")
    expect(results).to_contain_text("孙玉梅")
    expect(results).to_contain_text("不予批准")
    expect(station.locator("#stalled")).to_have_count(0)
    shot(station, "readme-7-results-after-restart")
    deadline = time.monotonic() + 60
    while (row := county_row(info, "V001"))["not_applying"] is not None or row["locked"]:
        assert time.monotonic() < deadline, f"the county never saw V001 apply what it holds: {row}"
        time.sleep(1)
    demo.stop()
    # The banner with the URLs is not buried: a sync is logged only when it moved or failed, never as
    # the HTTP requests underneath (every few seconds per station).
    assert "HTTP Request:" not in demo.log.read_text(errors="replace")


# every command line the README quotes --------------------------------------------------------------

def quoted_commands() -> list[str]:
    """Each `lastmile …` the README quotes (in code spans and blocks), alternatives (a|b) expanded."""
    found = set(re.findall(r"`(lastmile [^`]+)`", README)) | set(re.findall(r"^\s*(lastmile [^\n`]+)$", README, re.M))
    out = set()
    for cmd in found:
        cmd = cmd.replace("…", "").replace("[", "").replace("]", "").strip()
        words = cmd.split()
        alts = [[w] if "|" not in w or w.startswith("-") else w.split("|") for w in words]
        variants = [[]]
        for choice in alts:
            variants = [v + [c] for v in variants for c in choice]
        out.update(" ".join(v) for v in variants)
    return sorted(out)


def test_the_readme_quotes_commands_at_all() -> None:
    cmds = quoted_commands()
    assert len(cmds) >= 20 and "lastmile demo --data DIR" in cmds


@pytest.mark.parametrize("cmd", quoted_commands())
def test_every_lastmile_command_the_readme_quotes_parses(cmd: str, capsys) -> None:
    """The words of the command up to its first placeholder name a real subcommand, and every
    option it gives is one that subcommand takes (`--help` of that subcommand lists it)."""
    words = shlex.split(cmd)[1:]
    path = []
    for w in words:
        if w.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*", w):
            break
        path.append(w)
    with pytest.raises(SystemExit) as done:
        parser().parse_args([*path, "--help"])
    assert done.value.code == 0, cmd
    helped = capsys.readouterr().out
    for option in (w.split("=")[0] for w in words if w.startswith("--")):
        assert option in helped, f"{cmd}: {option} is not an option of `lastmile {' '.join(path)}`"


@pytest.mark.parametrize("target", ["demo", "test", "demo DEMO_ARGS=\"--base-port 9700\""])
def test_the_readme_make_commands_are_targets_of_the_makefile(target: str) -> None:
    assert f"make {target}" in README
    dry = subprocess.run(["make", "-n", *shlex.split(target)], cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    if target.startswith("demo"):
        assert "lastmile demo --data data/demo" in dry.stdout
        if "9700" in target:
            assert "--base-port 9700" in dry.stdout
