"""The county's stations: registering, enrolling, revoking, and the keys each has had."""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from typing import TYPE_CHECKING, Any

from central.services import calendar
from central.services import verify as doc_verify
from central.services import retention
from central.errors import CountyError, N_
from crypto.keys import PublicKeys
from sync import enrolment, log
from sync.errors import RevokedStation, UnknownStation
from sync.law import facts

if TYPE_CHECKING:
    from central.services.context import Context

logger = logging.getLogger("lastmile.central")
LEVELS = ("village", "township", "county")
ENROL_HOURS = 72
RESTORE_HOURS = 24          # how long a restore mark lets the county give a station its own log back
RESTORE_MARK = "restore_mark:"


def add_station(county: Context, code: str, name: str, level: str, *, replace: bool = False) -> str:
    """Register a station; return its one-time enrolment code (valid 72 hours, single use).

    Only the code's scrypt-derived MAC key is stored (sync/enrolment.py): the code itself never
    travels at enrolment, and the county can check a station's MAC without it.

    ``replace``: the station is enrolled and its PC is being replaced. Enrolment opens again (the
    old PC's syncs are refused from now on); the new PC enrols with new keys, the old keys stay
    on record so its old events still verify, and it rebuilds everything from the county's copy."""
    if replace and not level:                     # a new computer: same station, same level
        level = (county.store.station(code) or {}).get("level") or ""
    if level not in LEVELS:
        raise CountyError(400, "bad_level", f"level must be one of {', '.join(LEVELS)}")
    if not code or not code.isascii() or not code.replace("-", "").isalnum() or len(code) > 32:
        raise CountyError(400, "bad_code", N_("station code must be 1-32 letters, digits or '-'"))
    otp = "-".join(secrets.token_hex(2).upper() for _ in range(4))
    key = enrolment.mac_key(otp, code).hex()
    expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=ENROL_HOURS)).isoformat()
    with county.store.transaction() as db:
        existing = county.store.station(code)
        if existing and existing["status"] == "active" and not replace:
            raise CountyError(409, "exists", f"station {code} is already enrolled; to replace its computer,"
                                             " run `lastmile central station add --replace`")
        if replace and (not existing or existing["status"] != "active"):
            raise CountyError(409, "not_active", f"station {code} is not enrolled: add it without --replace")
        if replace:
            logger.warning("station %s: enrolment re-opened to replace its computer", code)
        if existing:
            name = name or existing["name"]
            county.store.update_station(db, code, name=name, level=level, status="pending",
                                      enroll_code_hash=key, enroll_expires=expires)
        else:
            county.store.insert_station(db, {"code": code, "name": name, "level": level, "status": "pending",
                                           "enroll_code_hash": key, "enroll_expires": expires,
                                           "created_at": log.utcnow()})
        county.store.set_meta(db, f"enroll_failures:{code}", "0")
    return otp


def enrolment_info(county: Context) -> dict[str, Any]:
    """What a station fetches first, to check against the fingerprint its installer typed."""
    return {"county_name": county.name, "county_keys": county.me.public.to_dict(),
            "fingerprint": county.me.public.fingerprint()}


def enroll(county: Context, code: str, keys: PublicKeys, mac: str) -> dict[str, Any]:
    """Enrol a pending station whose MAC proves it knows the one-time code; answer with the
    county's MAC over both key sets. Wrong MACs are counted (never voiding the code); the view slows
    their sender down."""
    county_keys = county.me.public.to_dict()
    failure: CountyError | None = None
    with county.store.transaction() as db:
        st = county.store.station(code)
        if st is None or st["status"] != "pending" or not st["enroll_code_hash"]:
            raise CountyError(403, "not_pending", N_("no enrolment is open for this station"))
        if dt.datetime.fromisoformat(st["enroll_expires"]) < dt.datetime.now(dt.timezone.utc):
            raise CountyError(403, "expired", N_("the enrolment code has expired; ask the county for a new one"))
        key = bytes.fromhex(st["enroll_code_hash"])
        expected = enrolment.request_mac(key, station=code, station_keys=keys.to_dict(), county_name=county.name,
                                         county_keys=county_keys)
        if not enrolment.same(expected, mac):
            # Counted, never voiding: a 64-bit code guessed online is out of reach however fast,
            # and voiding let 5 junk requests cancel an installer's code (issue 15, finding 12).
            # The sender's address is slowed down instead (central/http/pages.py enroll).
            failures = int(county.store.meta(f"enroll_failures:{code}") or 0) + 1
            county.store.set_meta(db, f"enroll_failures:{code}", str(failures))
            failure = CountyError(403, "bad_mac", N_(
                "the enrolment proof is wrong: a mistyped code, or someone changed the request on the way"))
        else:
            now, (head, _) = log.utcnow(), log.head(db, log.up(code))
            if st["sign_key"] and st["sign_key"] != keys.sign:      # a replacement PC: new keys from here
                county.store.retire_station_keys(db, code, now, head)
                db.execute("INSERT INTO _sync_recoveries (stream, at, what, first, last) VALUES (?, ?, ?, ?, ?)",
                           (log.up(code), now, "replaced", head + 1, head))
                # The county re-opened enrolment (`station add --replace`) and the new computer
                # proved the one-time code: that is the installer's word; it rebuilds from our copy.
                mark_restored(county, code, "enrolment of a replacement computer", db=db)
            county.store.add_station_key(db, code, keys.sign, keys.enc, keys.sign_id, keys.enc_id,
                                       "replaced" if st["sign_key"] else "enrolled", now, head + 1)
            county.store.update_station(db, code, status="active", sign_key=keys.sign, enc_key=keys.enc,
                                      enroll_code_hash=None, enroll_expires=None, enrolled_at=now)
            county.store.set_meta(db, f"enroll_failures:{code}", "0")
            # It got our current keys in this answer: sign for it with them from now on (§10).
            county.store.set_meta(db, f"county_rotation:{code}", "")
            latest = county.store.latest_catalog(db)
            if latest:
                county.record(db, code, facts.Fact(facts.CATALOG_PUBLISHED, {"catalog": json.loads(latest[1])}))
            calendar.send_all(county, db, code)     # every year's working-day schedule (sync/law/workdays.py)
            doc_verify.publish(county, db, to=code)  # every station's keys, to all (central/services/verify.py)
            retention.send_all(county, db, code)     # the personal-data retention period (central/services/retention.py)
    if failure:
        raise failure
    answer = {"station_name": st["name"], "station_level": st["level"], "county_name": county.name,
              "county_keys": county_keys}
    answer["mac"] = enrolment.answer_mac(key, station=code, station_keys=keys.to_dict(), county_name=county.name,
                                         county_keys=county_keys, station_name=st["name"],
                                         station_level=st["level"])
    return answer


# the restore mark: a station's own log goes back to it only after an installer asked (issue 15)
def mark_restored(county: Context, code: str, by: str, *, db: Any = None) -> dict[str, Any]:
    """Mark ``code`` restored or replaced: for the next ``RESTORE_HOURS`` hours the county gives the
    station its own upstream log back when it asks (``up_return``, PROTOCOL.md §8.5), until it
    holds it all again; then the mark is spent. Without a mark nobody gets a station's log back,
    not even with its keys (a copy of its disk). CountyError 404 for an unknown station, 409 for a
    revoked one."""
    if db is None:
        with county.store.transaction() as tx:
            return mark_restored(county, code, by, db=tx)
    st = county.store.station(code)
    if st is None:
        raise CountyError(404, "unknown_station", N_("No such station."))
    if st["status"] == "revoked":
        raise CountyError(409, "revoked", N_("This station is revoked: enrol its computer again first."))
    now = dt.datetime.now(dt.timezone.utc)
    mark = {"at": now.isoformat(timespec="seconds"), "by": by, "served": False,
            "until": (now + dt.timedelta(hours=RESTORE_HOURS)).isoformat(timespec="seconds")}
    county.store.set_meta(db, RESTORE_MARK + code, json.dumps(mark))
    db.execute("INSERT INTO _sync_recoveries (stream, at, what, first, last) VALUES (?, ?, ?, ?, ?)",
               (log.up(code), log.utcnow(), "restore_marked", 0, 0))
    logger.warning("station %s marked restored by %s: it may get its own log back until %s", code, by,
                   mark["until"])
    return {"station": code, **mark}


def restore_mark(county: Context, code: str, db: Any = None) -> dict[str, Any] | None:
    """The station's restore mark while it holds (not spent, not expired), else None."""
    if db is not None:
        row = db.execute("SELECT value FROM meta WHERE name = ?", (RESTORE_MARK + code,)).fetchone()
        raw = str(row[0]) if row else None
    else:
        raw = county.store.meta(RESTORE_MARK + code)
    if not raw:
        return None
    mark = json.loads(raw)
    if dt.datetime.fromisoformat(mark["until"]) < dt.datetime.now(dt.timezone.utc):
        return None
    return dict(mark)


def may_return(county: Context, db: Any, code: str, needed: bool) -> bool:
    """``exchange.answer_push``'s gate: the county gives a station its own log back, or its own
    events to it again below what it confirmed, only under a live restore mark. The mark is spent by the first push, after it was used, that needs nothing
    back (the station holds its whole log again); a lost answer's push asks again and is served."""
    mark = restore_mark(county, code, db)
    if needed:
        if mark is None:
            logger.warning("station %s asked for its records back without a restore mark: refused", code)
            return False
        if not mark["served"]:
            county.store.set_meta(db, RESTORE_MARK + code, json.dumps({**mark, "served": True}))
        return True
    if mark is not None and mark["served"]:
        county.store.set_meta(db, RESTORE_MARK + code, "")
        db.execute("INSERT INTO _sync_recoveries (stream, at, what, first, last) VALUES (?, ?, ?, ?, ?)",
                   (log.up(code), log.utcnow(), "restore_done", 0, 0))
    return True


def revoke(county: Context, code: str) -> None:
    with county.store.transaction() as db:
        if not county.store.station(code):
            raise CountyError(404, "unknown_station", f"no station {code}")
        county.store.update_station(db, code, status="revoked")
        # Events stored before now stay valid (their keys were good when they came); none after.
        county.store.revoke_station_keys(db, code, log.utcnow())
        doc_verify.publish(county, db)


def station_keys(county: Context, code: str) -> PublicKeys:
    st = county.store.station(code)
    if st is None or st["status"] == "pending":
        raise UnknownStation(f"station {code!r} is not enrolled at this county")
    if st["status"] == "revoked":
        raise RevokedStation(f"station {code!r} has been revoked")
    return PublicKeys(sign=st["sign_key"], enc=st["enc_key"])


def station_keys_for(county: Context, code: str, key_id: object) -> PublicKeys:
    """The station's key set that signs with ``key_id``: its current one, or the one it announced
    in a ``station.keys_rotated`` event the county has stored (accepted only from then on).
    Anything else gets the current set, which the envelope check then refuses."""
    keys = station_keys(county, code)          # UnknownStation / RevokedStation
    announced = county.store.meta(f"next_keys:{code}")
    if key_id != keys.sign_id and announced:
        new = PublicKeys.from_dict(json.loads(announced))
        if new.sign_id == key_id:
            return new
    return keys


def promote_keys(county: Context, db: Any, code: str, key_id: object) -> None:
    """A push signed with the key the station announced: that key is now its current one; the old
    one stays on record (retired at the rotation event's seq)."""
    announced = county.store.meta(f"next_keys:{code}")
    if not announced:
        return
    new = PublicKeys.from_dict(json.loads(announced))
    if new.sign_id != key_id:
        return
    seq, now = int(county.store.meta(f"next_keys_seq:{code}") or 0), log.utcnow()
    county.store.retire_station_keys(db, code, now, seq, keep=new.sign_id)
    county.store.update_station(db, code, sign_key=new.sign, enc_key=new.enc)
    county.store.set_meta(db, f"next_keys:{code}", "")
    db.execute("INSERT INTO _sync_recoveries (stream, at, what, first, last) VALUES (?, ?, ?, ?, ?)",
               (log.up(code), now, "keys_rotated", seq, seq))
    doc_verify.publish(county, db)
    logger.warning("station %s now signs with its new key %s (rotated at #%d)", code, new.sign_id, seq)


def key_history(county: Context, code: str) -> dict[str, str]:
    """Every sign key the station ever had on record, by key id: its old events verify with them."""
    keys = {k["sign_id"]: k["sign_key"] for k in county.store.station_key_history(code)}
    st = county.store.station(code)
    if st and st["sign_key"]:
        keys[PublicKeys(sign=st["sign_key"], enc=st["enc_key"]).sign_id] = st["sign_key"]
    return keys

