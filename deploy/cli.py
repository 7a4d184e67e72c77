"""`lastmile`: the one console script, for installers, operators and the demo."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from deploy import summaries, verify_cli

DEMO_CATALOG = Path(__file__).resolve().parent.parent / "central" / "catalog_demo.json"


def serve(app: Any, host: str, port: int) -> int:
    """Run ``app`` under uvicorn with the limits of templates/limits.py ``server_config``: h11 with a
    timeout on request heads (uvicorn has none), keep-alive closed after 5 idle seconds; the body
    timeouts and the byte budgets are the apps' own middleware."""
    import uvicorn

    from templates.limits import server_config
    server = uvicorn.Server(server_config(app, host=host, port=port, log_level="info"))
    server.run()
    return 0 if server.started else 3


def _central(args: argparse.Namespace) -> int:
    from central.county import County, CountyError, Settings
    from crypto.errors import CryptoError
    from sync.errors import SyncError

    settings = Settings(data=Path(args.data))
    if args.cmd == "init":
        County.init(Settings(data=Path(args.data), name=args.name))
        county = County(settings)
        print(f"county centre ready in {args.data}; key fingerprint {county.me.public.fingerprint()}")
        return 0
    if args.cmd == "serve":
        from central.app import create_app
        return serve(create_app(settings), args.host, args.port)
    if args.cmd in ("backup", "restore"):
        return _backup(args, settings.db_path, "central")
    if args.cmd == "station":
        args.code = args.code or args.station_code
        if not args.code:
            print("error: name the station: lastmile central station ACTION CODE --data DIR", file=sys.stderr)
            return 2
    county = County(settings)
    try:
        if args.cmd == "station" and args.action == "restore":
            mark = county.mark_restored(args.code, "cli")
            print(f"station {args.code} marked restored until {mark['until']} (UTC): at its next sync it gets its "
                  "own records back from the county, once; the mark then ends by itself. Without the mark the "
                  "county gives a station's records to nobody, not even to a copy of its disk")
        elif args.cmd == "station" and args.action == "add":
            code = county.add_station(args.code, args.name, args.level or ("" if args.replace else "village"),
                                      replace=args.replace)
            fingerprint = county.me.public.fingerprint()
            if args.replace:
                print(f"REPLACING the computer of station {args.code}: its old computer's syncs are refused from "
                      "now on; the new one enrols with new keys (the old keys stay on record, so its old records "
                      "still verify) and rebuilds everything from the county's copy by itself")
            print(f"station {args.code} registered. One-time enrolment code (valid 72 h, one use, "
                  f"wrong tries only slow it down): {code}")
            print(f"county key fingerprint (the installer types it at the station as --fingerprint): {fingerprint}")
            print("the same fingerprint as a QR code, to scan at the station:")
            import segno
            segno.make(fingerprint, error="m").terminal(compact=True)
            print(f"at the station: lastmile node init --data DIR --central URL --station {args.code} "
                  f"--enroll {code} --fingerprint {fingerprint}")
        elif args.cmd == "station" and args.action == "revoke":
            county.revoke(args.code)
            print(f"station {args.code} revoked; its syncs are now refused")
        elif args.cmd == "user" and args.action == "unlock":
            from templates import throttle
            had = throttle.release(county.store, args.username)
            print(f"wrong passwords counted for {args.username} forgotten; its next login is checked at once"
                  if had else f"no wrong passwords were counted for {args.username}; nothing to do")
        elif args.cmd == "user" and args.action == "passwd":
            county.set_password(args.username, read_password(args))
            print(f"password of {args.username} changed; every session of it has ended")
        elif args.cmd == "user":
            if args.role == "clerk" and not args.department:
                known = ", ".join(d["code"] for d in county.catalog().get("departments", []))
                print(f"error: a clerk needs --department, one of: {known or '(publish the catalogue first)'}",
                      file=sys.stderr)
                return 2
            token = county.add_user(args.username, args.name or args.username, read_password(args), args.role,
                                    args.department)
            print(f"user {args.username} saved. API token: {token}")
        elif args.cmd == "import":
            src = Path(args.path)
            out = Path(args.answer) if args.answer else src.with_name(src.name + ".answer")
            done = county.import_bundle(src, out)
            print(json.dumps(done, ensure_ascii=False) if args.json else summaries.county_import(done))
        elif args.cmd == "rotate-keys":
            done = county.rotate_keys()
            print(f"new county keys made (key {done['new_key']}); new key fingerprint {done['fingerprint']}")
            print(f"announced to {len(done['stations'])} active stations, each in a record signed by the key it "
                  f"trusts now (old key {done['old_key']}, kept in keys.retired/: it still opens what was sealed "
                  "to it, and signs for a station until that station has the record). Stations enrolled from now "
                  "on get the new keys: give them the new fingerprint.")
        elif args.cmd == "catalog":
            catalog = json.loads(Path(args.file or DEMO_CATALOG).read_text(encoding="utf-8"))
            print(f"catalogue version {county.publish_catalog(catalog)} published to all stations")
        elif args.cmd == "calendar":
            return _calendar(county, args)
        elif args.cmd == "retention":
            return _retention(county, args)
        elif args.cmd == "check":
            return _check(county)
    except (CountyError, SyncError, CryptoError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        county.store.close()
    return 0


def _check(county: Any) -> int:
    """`lastmile central check --data DIR` (central/services/selfcheck.py): walk every log now; 1 on problems."""
    from sync import chain
    done = county.self_check()
    redacted = f" ({done['redacted']} redacted by a station's purge)" if done["redacted"] else ""
    print(f"{done['streams']} logs, {done['events']} events checked in {done['seconds']} s: links, signatures "
          f"and bodies{redacted}")
    if not done["problem_count"]:
        print("whole: nothing was changed or removed")
        return 0
    print(f"PROBLEMS ({done['problem_count']}): records were changed or removed on disk after they were stored; "
          "keep the database as it is and see INSTALL.md, the log self-check", file=sys.stderr)
    for p in done["problems"]:
        print("  " + chain.describe(p), file=sys.stderr)
    return 1


def _retention(county: Any, args: argparse.Namespace) -> int:
    """`lastmile central retention set DAYS` / `show` (central/services/retention.py)."""
    from central.services import retention

    if args.action == "set":
        try:
            who = getpass.getuser()
        except (OSError, KeyError):
            who = "unknown"
        try:
            body = retention.publish(county, args.days, f"cli:{who}")
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"retention period set to {body['retention_days']} days and sent to all stations: each removes the "
              "personal data of cases handed out longer ago than that, once the county holds them in full")
        return 0
    now = retention.current(county)
    print(f"retention period: {now['retention_days']} days" + (" (the default)" if now["default"] else
                                                                f", set {now['set_at']} by {now['set_by']}"))
    return 0


def _calendar(county: Any, args: argparse.Namespace) -> int:
    """`lastmile central calendar set YEAR FILE` / `show [YEAR]` (central/services/calendar.py)."""
    import datetime as dt

    from central.services import calendar
    from sync.law.workdays import ScheduleError

    if args.action == "set":
        if not args.file:
            print("error: give the schedule FILE: lastmile central calendar set YEAR FILE", file=sys.stderr)
            return 2
        try:
            holidays, days = calendar.read_file(Path(args.file))
        except ScheduleError as exc:
            print(f"error: {args.file}: {exc}", file=sys.stderr)
            return 2
        try:
            who = getpass.getuser()
        except (OSError, KeyError):      # no user name in this container
            who = "unknown"
        body = calendar.publish(county, args.year, holidays, days, f"cli:{who}")
        print(f"working-day calendar of {body['year']} published to all stations: {len(body['holidays'])} "
              f"holidays, {len(body['workdays'])} make-up working days")
        return 0
    if args.year is not None and not calendar.workdays.MIN_YEAR <= args.year <= calendar.workdays.MAX_YEAR:
        print(f"error: the year must be from {calendar.workdays.MIN_YEAR} to {calendar.workdays.MAX_YEAR}", file=sys.stderr)
        return 2
    try:
        today = dt.date.fromisoformat(args.today) if args.today else calendar.china_today()
    except ValueError:
        print(f"error: --today {args.today} is not a date written YYYY-MM-DD", file=sys.stderr)
        return 2
    years = [args.year] if args.year else sorted({today.year, today.year + 1,
                                                  *calendar.workdays.stored_years(county.store.conn)})
    for year in years:
        s = calendar.effective(county, year)
        print(f"{year}: source {s['source']}" + (" (PROVISIONAL: weekends only)" if s["provisional"] else "")
              + (f", entered {s['published_at']} by {s['published_by']}" if s["published_at"] else ""))
        print(f"  holidays: {' '.join(s['holidays']) or '-'}")
        print(f"  make-up working days: {' '.join(s['workdays']) or '-'}")
    missing = calendar.missing_year(county, today)
    if missing:
        print(f"WARNING: no working-day schedule for {missing}: promised dates in {missing} are counted on "
              f"weekends alone and marked provisional. Enter the State Council's schedule: "
              f"lastmile central calendar set {missing} FILE", file=sys.stderr)
    return 0


def _node(args: argparse.Namespace) -> int:
    from crypto.errors import CryptoError
    from node.settings import Settings
    from node.station import Station
    from sync.errors import SyncError

    settings = Settings(data=Path(args.data), sync_interval=getattr(args, "sync_interval", None) or 15.0)
    if args.cmd == "init":
        from node.services.enrolment import EnrolmentFailed, enroll
        try:
            if args.no_fingerprint_check:
                print("WARNING: --no-fingerprint-check: the county's keys are not checked against a fingerprint; "
                      "only the one-time code protects this enrolment", file=sys.stderr)
            info = enroll(settings, central_url=args.central, station=args.station, code=args.enroll,
                          fingerprint=args.fingerprint, check_fingerprint=not args.no_fingerprint_check)
        except EnrolmentFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"station {info['station']} ({info['name']}, {info['level']}) enrolled; "
              f"county key fingerprint {info['county_fingerprint']}")
        return 0
    if args.cmd == "backup" or (args.cmd == "restore" and args.replica):
        return _backup(args, settings.db_path, "node")
    if args.cmd == "restore":
        from node.services.restore import RestoreError, restore
        try:
            moved = restore(Path(args.backup), Path(args.data), replace=args.replace)
        except (RestoreError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(("the old data folder was moved to %s; " % moved if moved else "")
              + f"backup restored to {args.data}. Start the node and sync: the county gives back what it holds "
              "since the backup. The first receipt number jumps to the next block of "
              "1000; the numbers skipped are put on record for the county.")
        return 0
    if args.cmd == "serve":
        from node.app import create_app
        return serve(create_app(settings), args.host, args.port)
    import sqlite3

    from node.store import TOKEN_ENV
    station = Station(settings)
    station.store.unlock_from_env()     # node/vault.py: LASTMILE_NODE_TOKEN unlocks what reads personal data
    try:
        if args.cmd == "user":
            try:
                if args.action == "unlock":
                    from templates import throttle
                    had = throttle.release(station.store, args.username)
                    print(f"wrong passwords counted for {args.username} forgotten; its next login is checked at "
                          "once" if had else f"no wrong passwords were counted for {args.username}; nothing to do")
                elif args.action == "passwd":
                    station.store.set_password(args.username, read_password(args))
                    print(f"password of {args.username} changed; every session of it has ended")
                else:
                    token = station.store.add_user(args.username, args.name or args.username, read_password(args),
                                                   args.role)
                    print(f"{args.role} {args.username} saved. API token: {token}")
            except (ValueError, LookupError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        elif args.cmd == "rotate-keys":
            try:
                done = station.rotate_keys()
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(f"new station keys made (key {done['new_key']}), announced to the county in record #{done['seq']}, "
                  f"signed by the old key {done['old_key']}. The station keeps using the old key until the county "
                  "has stored that record; the next sync after that switches to the new keys (the old private "
                  "key moves to keys.retired/). Sync now if you can.")
        elif args.cmd == "set-info":
            try:
                station.set_info(args.address, args.phone)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(f"documents now print: {station.name} · {station.address or '(no address)'} · "
                  f"{station.phone or '(no phone)'}")
        elif args.cmd == "set-central":
            try:
                before = station.set_central(args.url)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(f"county address changed from {before} to {args.url}; the next sync uses it, also in a running node")
        elif args.cmd in ("export", "import"):
            try:
                out = station.export(Path(args.to)) if args.cmd == "export" else station.import_answers(Path(args.path))
            except (SyncError, CryptoError, OSError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(json.dumps(out, ensure_ascii=False) if args.json else
                  summaries.export(out, args.data) if args.cmd == "export" else summaries.imported(out))
        elif args.cmd == "purge":
            return _purge(station, args)
        elif args.cmd == "sync":
            try:
                result = station.sync()
            except (SyncError, CryptoError) as exc:
                print(f"sync failed: {exc}", file=sys.stderr)
                print(json.dumps(station.sync_state(), ensure_ascii=False) if args.json else
                      summaries.sync_failed(str(exc), station.sync_state()))
                return 1
            print(json.dumps({**result.to_dict(), "state": station.sync_state()}, ensure_ascii=False) if args.json
                  else summaries.sync(result.to_dict(), station.sync_state()))
    except sqlite3.OperationalError as exc:
        if not station.store.vault.locked:
            raise
        print(f"error: the station's personal data is encrypted and locked ({exc}): set {TOKEN_ENV} to the API "
              "token of one of its accounts", file=sys.stderr)
        return 2
    finally:
        station.store.close()
    return 0


def _backup(args: argparse.Namespace, db: Path, part: str) -> int:
    """`lastmile node|central backup --data DIR --replica PATH [--once]` and `restore --replica PATH
    --data NEWDIR`: Litestream's configuration, one snapshot now, a restore (deploy/backup.py)."""
    from deploy import backup

    db, replica = db.resolve(), Path(args.replica).resolve()
    try:
        if args.cmd == "backup":
            config, unit, command = backup.configure(db, replica)
            print(f"wrote {config} (Litestream's configuration: {db} -> the replica folder {replica})")
            print(f"wrote {unit} (a systemd unit running it: copy it to /etc/systemd/system/)")
            print(f"to back up continuously, run as the service's user: {command}")
            if args.once:
                backup.snapshot_now(config)
                print(f"backup made now: a full snapshot of {db.name} is in {replica}")
            return 0
        backup.restore(replica, db)
        if part == "node":
            from node.services.restore import mark_restored
            mark_restored(db.parent)
    except (backup.BackupError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"restored {db} from the replica {replica}; Litestream's integrity check passed.")
    if not (db.parent / "keys").is_dir():
        print(f"The replica holds the database only: copy the {'station' if part == 'node' else 'county'}'s "
              f"keys/ folder (and keys.retired/ if there is one) from your key backup into {db.parent} "
              "before starting it (docs/INSTALL.md).")
    if part == "node":
        print("Start the node and let an agent log in: its next receipt number starts a new block of 1000, "
              "and its first sync gets back from the county what the replica missed.")
    else:
        print("Start the county: at their next sync the stations send again what the replica missed.")
    return 0


def _purge(station: Any, args: argparse.Namespace) -> int:
    """`lastmile node purge --data DIR [--as-of YYYY-MM-DD]` (node/services/retention.py), then the chain check."""
    import datetime as dt

    from node.services import retention

    now = None
    if args.as_of:
        try:
            now = dt.datetime.combine(dt.date.fromisoformat(args.as_of), dt.time(23, 59, 59),
                                      dt.timezone(dt.timedelta(hours=8)))
        except ValueError:
            print(f"error: --as-of {args.as_of} is not a date written YYYY-MM-DD", file=sys.stderr)
            return 2
    done = retention.purge(station, now)
    chain = retention.verify_chain(station)
    print(f"retention period {done['retention_days']} days: personal data removed from {len(done['cases'])} cases "
          f"and {len(done['reports'])} reports ({done['events']} event bodies, {done['files']} files)")
    print(f"log: {chain['events']} events, links and signatures checked; {chain['redacted']} bodies redacted "
          "after the retention period" + ("" if not chain["problems"] else "; PROBLEMS:"))
    for p in chain["problems"]:
        print(f"  {p}", file=sys.stderr)
    return 1 if chain["problems"] else 0


PASSWORD_ENV = "LASTMILE_PASSWORD"


def read_password(args: argparse.Namespace) -> str:
    """The new password: from standard input (--password-stdin), the LASTMILE_PASSWORD variable,
    or typed twice at a prompt. Never from the command line, where other users see it (ps)."""
    if getattr(args, "password", None):
        print("warning: --password shows the password to every user of this computer; "
              "use the prompt, --password-stdin or LASTMILE_PASSWORD", file=sys.stderr)
        return str(args.password)
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    first = getpass.getpass(f"new password for {args.username} (10+ characters): ")
    if getpass.getpass("the same again: ") != first:
        raise SystemExit("error: the two passwords differ; nothing changed")
    return first


def _user_parser(sub: Any, help_text: str, central: bool) -> None:
    u = sub.add_parser("user", help=help_text)
    u.add_argument("action", choices=["add", "passwd", "unlock"],
                   help="add (or replace) an account, or change its password (either ends every session of the "
                        "account); unlock: forget the wrong passwords counted for it, so its next login is "
                        "checked at once")
    u.add_argument("--data", required=True)
    u.add_argument("--username", required=True)
    u.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    u.add_argument("--password", help=argparse.SUPPRESS)          # deprecated: visible to other users (ps)
    u.add_argument("--name")
    if central:
        u.add_argument("--role", choices=["clerk", "supervisor"], default="clerk")
        u.add_argument("--department", help="department code of the catalogue, required for clerks")
    else:
        u.add_argument("--role", choices=["agent", "admin"], default="agent",
                       help="admin: also manages the station's accounts on the page /staff")


def _backup_parsers(sub: Any, db: str, what: str, restore: bool = True) -> None:
    x = sub.add_parser("backup", help=f"continuous backup of the {what}'s {db} with Litestream: write its "
                                      "configuration and a systemd unit into DATA")
    x.add_argument("--data", required=True)
    x.add_argument("--replica", required=True, help="a folder on another disk (a USB disk, a NAS mount)")
    x.add_argument("--once", action="store_true", help="also take a full snapshot now")
    if restore:
        x = sub.add_parser("restore", help=f"restore {db} from a Litestream replica into a new data folder")
        x.add_argument("--replica", required=True, help="the replica folder of `backup`")
        x.add_argument("--data", required=True, help="a new data folder (an existing database is refused)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lastmile", description="Offline-first government services: stations and county centre")
    sub = p.add_subparsers(dest="part", required=True)

    c = sub.add_parser("central", help="the county centre").add_subparsers(dest="cmd", required=True)
    x = c.add_parser("init", help="create keys and database")
    x.add_argument("--data", required=True)
    x.add_argument("--name", default="county", help="the county's sync name")
    x = c.add_parser("serve", help="run the web server")
    x.add_argument("--data", required=True)
    x.add_argument("--host", default="127.0.0.1")
    x.add_argument("--port", type=int, default=8700)
    st = c.add_parser("station", help="register, revoke, or mark restored a station")
    st.add_argument("action", choices=["add", "revoke", "restore"],
                    help="restore: the station was restored from a backup or its computer replaced; for 24 h "
                         "the county gives it its own records back when it asks (once)")
    st.add_argument("station_code", nargs="?", metavar="CODE", help="the station code (or --code)")
    st.add_argument("--data", required=True)
    st.add_argument("--code", help="the station code")
    st.add_argument("--name", default="")
    st.add_argument("--level", choices=["village", "township", "county"], default=None,
                    help="add: village (the default), township or county; --replace keeps the station's level")
    st.add_argument("--replace", action="store_true",
                    help="add: the station is enrolled and its computer is being replaced; re-open enrolment")
    _user_parser(c, "add a staff account or change its password", central=True)
    x = c.add_parser("import", help="take a station's USB bundle and write the answer bundle")
    x.add_argument("path", help="bundle written by `lastmile node export`")
    x.add_argument("--data", required=True)
    x.add_argument("--answer", help="where to write the answer (default: PATH.answer)")
    x.add_argument("--json", action="store_true", help="print the result as JSON instead of a summary")
    x = c.add_parser("rotate-keys", help="make new county keys and announce them to every active station")
    x.add_argument("--data", required=True)
    k = c.add_parser("catalog", help="publish a catalogue version to all stations")
    k.add_argument("action", choices=["publish"])
    k.add_argument("--data", required=True)
    k.add_argument("--file", help="catalogue JSON (default: the demo catalogue)")
    k = c.add_parser("calendar", help="enter a year's working-day schedule (holidays, make-up working days) or show it")
    k.add_argument("action", choices=["set", "show"])
    k.add_argument("year", nargs="?", type=int, help="the year (set: required)")
    k.add_argument("file", nargs="?", help='set: JSON {"holidays": [...], "workdays": [...]} or lines "2027-01-01 holiday"')
    k.add_argument("--data", required=True)
    k.add_argument("--today", help="show: warn as of this day, YYYY-MM-DD (default: today, China time)")
    _backup_parsers(c, "central.db", "county centre")
    x = c.add_parser("check", help="walk every log the county holds (links, signatures, bodies) and report "
                                   "anything changed or removed on disk; exit 1 if so")
    x.add_argument("--data", required=True)
    k = c.add_parser("retention", help="how long stations keep personal data of cases handed out (default 30 days)")
    k.add_argument("action", choices=["set", "show"])
    k.add_argument("days", nargs="?", help="set: a whole number of days, 1-3650")
    k.add_argument("--data", required=True)

    n = sub.add_parser("node", help="a station node").add_subparsers(dest="cmd", required=True)
    x = n.add_parser("init", help="create keys and enrol with the county")
    x.add_argument("--data", required=True)
    x.add_argument("--central", required=True, help="the county centre's URL")
    x.add_argument("--station", required=True, help="station code given by the county")
    x.add_argument("--enroll", required=True, help="one-time enrolment code")
    fp = x.add_mutually_exclusive_group(required=True)
    fp.add_argument("--fingerprint", help="the county key fingerprint printed by `lastmile central station add`")
    fp.add_argument("--no-fingerprint-check", action="store_true",
                    help="DANGEROUS: do not check the county's keys against a fingerprint")
    x = n.add_parser("serve", help="run the station web page and background sync")
    x.add_argument("--data", required=True)
    x.add_argument("--host", default="127.0.0.1")
    x.add_argument("--port", type=int, default=8701)
    x.add_argument("--sync-interval", type=float, default=15.0)
    x = n.add_parser("set-info", help="the station's address and phone, printed on its documents")
    x.add_argument("--data", required=True)
    x.add_argument("--address")
    x.add_argument("--phone")
    x = n.add_parser("restore", help="put a backup of the data folder back in place (stop the node first), "
                                     "or restore the database from a Litestream replica into a new folder")
    src = x.add_mutually_exclusive_group(required=True)
    src.add_argument("--from", dest="backup", help="the backup folder (node.db, keys/, blobs/)")
    src.add_argument("--replica", help="the replica folder of `lastmile node backup` (into a new --data folder)")
    x.add_argument("--data", required=True)
    x.add_argument("--replace", action="store_true", help="--from: move a data folder in the way aside")
    _backup_parsers(n, "node.db", "station", restore=False)
    x = n.add_parser("set-central", help="change the county centre's address (same county, same keys)")
    x.add_argument("url", help="the county centre's new URL, e.g. https://county.example:8700")
    x.add_argument("--data", required=True)
    x = n.add_parser("rotate-keys", help="make new station keys and announce them to the county")
    x.add_argument("--data", required=True)
    x = n.add_parser("purge", help="remove personal data past the county's retention period now, "
                                   "then check the log's links and signatures")
    x.add_argument("--data", required=True)
    x.add_argument("--as-of", help="count the period to the end of this day, YYYY-MM-DD (default: now): "
                                   "for tests; a later day removes data early")
    x = n.add_parser("sync", help="sync with the county now")
    x.add_argument("--data", required=True)
    x.add_argument("--json", action="store_true", help="print the result as JSON instead of a summary")
    x = n.add_parser("export", help="write what waits to go up to a file, for a USB stick")
    x.add_argument("--data", required=True)
    x.add_argument("--to", required=True)
    x.add_argument("--json", action="store_true", help="print the result as JSON instead of a summary")
    x = n.add_parser("import", help="apply the county's answer bundle from a USB stick")
    x.add_argument("path")
    x.add_argument("--data", required=True)
    x.add_argument("--json", action="store_true", help="print the result as JSON instead of a summary")
    _user_parser(n, "add an agent account or change its password", central=False)

    verify_cli.add_parser(sub)
    d = sub.add_parser("demo", help="run a county centre and two demo stations on this machine")
    d.add_argument("--data", default="data/demo")
    d.add_argument("--base-port", type=int, default=8700)
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--sync-interval", type=float, default=5.0)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO: the station's sync every few seconds would bury what matters
    # (the demo's URLs, a sync that moved or failed: sync/client.py logs those itself).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parser().parse_args(argv)
    if args.part == "central":
        return _central(args)
    if args.part == "node":
        return _node(args)
    if args.part == "verify":
        return verify_cli.run(args)
    from deploy.demo import run
    return run(Path(args.data), host=args.host, base_port=args.base_port, sync_interval=args.sync_interval,
               catalog=DEMO_CATALOG)


if __name__ == "__main__":
    sys.exit(main())
