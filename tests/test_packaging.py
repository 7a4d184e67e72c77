"""The first steps of a new user (issue 8): `make demo` installs only what the demo needs, `make test`
the test tools as well, in either order in the same .venv; installing lastmile prints no wall of
setuptools warnings, and the package still carries every page, style sheet and translation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_n(target: str, venv: Path) -> str:
    """The commands `make TARGET` would run with VENV=venv (make -n runs none of them)."""
    out = subprocess.run(["make", "-n", target, f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_demo_installs_no_test_tools_and_make_test_adds_them_in_either_order(tmp_path):
    venv = tmp_path / "venv"
    first = make_n("demo", venv)
    assert "-m venv" in first
    assert "pip install -q -e .\n" in first and "[test]" not in first
    assert "lastmile demo --data data/demo" in first

    # A venv made by `make demo` (its marker newer than pyproject.toml): `make test` adds the test extra only.
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    later = time.time() + 5
    (venv / ".installed-demo").touch()
    os.utime(venv / ".installed-demo", (later, later))
    then_test = make_n("test", venv)
    assert "pip install -q -e '.[test]'" in then_test and "-m venv" not in then_test
    assert "lastmile demo" not in then_test and "pytest" in then_test
    assert "-m venv" not in make_n("demo", venv) and "pip install" not in make_n("demo", venv)

    # And the other way round: after `make test`, `make demo` installs lastmile alone, nothing of the tests.
    (venv / ".installed-demo").unlink()
    (venv / ".installed").touch()
    os.utime(venv / ".installed", (later, later))
    then_demo = make_n("demo", venv)
    assert "pip install -q -e .\n" in then_demo and "[test]" not in then_demo and "-m venv" not in then_demo
    assert "pip install" not in make_n("test", venv)


def test_building_lastmile_prints_no_setuptools_warnings_and_keeps_every_template(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    said = out.stdout + out.stderr
    assert "Package would be ignored" not in said
    warnings = [line for line in said.splitlines() if "Warning" in line and "Location" not in line]
    assert warnings == [], warnings
    assert shutil.which("lastmile", path=str(Path(sys.executable).parent)), "the test venv lost its lastmile"
    wheel = next(tmp_path.glob("lastmile-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ROOT.joinpath("templates").rglob("*"):
        if path.suffix in (".html", ".css", ".js", ".po"):
            assert path.relative_to(ROOT).as_posix() in names, path
    assert "deploy/litestream.service" in names         # the systemd unit `lastmile backup` fills in


def test_an_editable_install_as_make_does_prints_no_warning_box(tmp_path):
    """`make demo` / `make test` install with `pip install -e`: setuptools' boxed warnings ("Package
    would be ignored", "Editable installation") are what a new user saw scroll past."""
    # --ignore-installed: into another prefix, pip would otherwise first uninstall the lastmile of the
    # venv running the tests, and `lastmile` (make demo, the CLI tests after this one) would be gone.
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-v", "--no-deps", "--ignore-installed", "-e",
                          str(ROOT), "--prefix", str(tmp_path / "prefix")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    said = out.stdout + out.stderr
    for box in ("Package would be ignored", "Editable installation", "!!"):
        assert box not in said, box
    warnings = [line for line in said.splitlines() if "Warning" in line and "Location" not in line]
    assert warnings == [], warnings
    assert shutil.which("lastmile", path=str(Path(sys.executable).parent)), "the test venv lost its lastmile"
