"""Enrolment: generate the node's keys and exchange public keys with the county, once."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from crypto.errors import BadEncoding
from crypto.keys import Identity, PublicKeys
from node.settings import Settings
from node.store import Store
from sync import enrolment, exchange


class EnrolmentFailed(Exception):
    pass


ENROL_PATH = "/enroll/v2"


MAX_SLOW_DOWN_S = 120.0      # how long enrolment waits out the county's 429 before giving up


def _refusal(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        message = body.get("message", resp.text) if isinstance(body, dict) else resp.text
    except ValueError:
        message = resp.text[:200]
    return f"the county refused enrolment ({resp.status_code}): {message}"


def _same_fingerprint(typed: str, county: PublicKeys) -> bool:
    return typed.replace("-", "").replace(" ", "").upper() == county.fingerprint().replace("-", "")


def enroll(settings: Settings, *, central_url: str, station: str, code: str,
           fingerprint: str | None, check_fingerprint: bool = True) -> dict[str, Any]:
    """Enrol with the county in two steps (PROTOCOL.md §7 ``/enroll/v2``).

    1. Fetch the county's name and keys and check them against the fingerprint the installer typed;
       on a mismatch stop before anything is sent (the code stays usable).
    2. Send the station's keys with a MAC keyed by the code (the code never travels) and check the
       county's MAC on its answer before storing anything.

    ``check_fingerprint=False`` (``--no-fingerprint-check``) skips step 1's check; the MACs still
    bind both key sets to the code."""
    if check_fingerprint and not fingerprint:
        raise EnrolmentFailed("the county's key fingerprint is required (--fingerprint), to be sure you are "
                              "talking to your county")
    try:
        enrolment.normalise(code)
    except ValueError as exc:
        raise EnrolmentFailed(str(exc)) from exc
    base = central_url.rstrip("/")
    settings.data.mkdir(parents=True, exist_ok=True)
    store = Store(settings.db_path)
    try:
        if store.meta("station_code"):
            raise EnrolmentFailed(f"{settings.data} is already enrolled as {store.meta('station_code')}")
        try:
            with httpx.Client(timeout=30) as http:
                info_resp = http.get(base + ENROL_PATH + "/county")
                if info_resp.status_code != 200:
                    raise EnrolmentFailed(_refusal(info_resp))
                try:
                    info = info_resp.json()
                    county = PublicKeys.from_dict(info["county_keys"])
                    county_name = info["county_name"]
                    if not isinstance(county_name, str):
                        raise TypeError("county_name is not a string")
                except (ValueError, KeyError, TypeError, BadEncoding) as exc:
                    raise EnrolmentFailed(f"the county's answer is not understood: {exc}") from exc
                if check_fingerprint and not _same_fingerprint(str(fingerprint), county):
                    raise EnrolmentFailed("the county's key fingerprint does not match the one you were given; "
                                          "do not use this link, call the county (your code was not used)")
                if not (settings.key_dir / "sign.pem").exists():
                    Identity.generate().save(settings.key_dir)
                me = Identity.load(settings.key_dir)
                key = enrolment.mac_key(code, station)
                mac = enrolment.request_mac(key, station=station, station_keys=me.public.to_dict(),
                                            county_name=county_name, county_keys=county.to_dict())
                resp = http.post(base + ENROL_PATH, json={"station": station, "keys": me.public.to_dict(), "mac": mac})
                waited = 0.0
                while resp.status_code == 429 and waited < MAX_SLOW_DOWN_S:
                    # Someone sent wrong proofs from this address: the county slows it down for a
                    # while (never voiding the code); wait as it says and send the same request again.
                    pause = min(float(resp.headers.get("retry-after") or 1), MAX_SLOW_DOWN_S - waited)
                    time.sleep(max(0.1, pause))
                    waited += max(0.1, pause)
                    resp = http.post(base + ENROL_PATH, json={"station": station, "keys": me.public.to_dict(),
                                                              "mac": mac})
        except httpx.TransportError as exc:
            raise EnrolmentFailed(f"cannot reach the county centre at {central_url}: {exc}") from exc
        if resp.status_code != 200:
            raise EnrolmentFailed(_refusal(resp))
        try:
            answer = resp.json()
            ok = isinstance(answer, dict) and PublicKeys.from_dict(answer.get("county_keys")) == county \
                and answer.get("county_name") == county_name and isinstance(answer.get("station_name"), str) \
                and isinstance(answer.get("station_level"), str) and enrolment.same(enrolment.answer_mac(
                    key, station=station, station_keys=me.public.to_dict(), county_name=county_name,
                    county_keys=county.to_dict(), station_name=answer["station_name"],
                    station_level=answer["station_level"]), answer.get("mac"))
        except (ValueError, BadEncoding):
            ok = False
        if not ok:
            raise EnrolmentFailed("the county's answer does not prove it knows the code: someone may have changed "
                                  "it on the way; nothing was stored here, call the county")
        record(store, station=station, central_url=central_url, answer=answer)
        return {"station": station, "name": store.meta("station_name"), "level": store.meta("station_level"),
                "county_fingerprint": county.fingerprint(), "data": str(Path(settings.data))}
    finally:
        store.close()


def record(store: Store, *, station: str, central_url: str, answer: dict[str, Any]) -> PublicKeys:
    """Store what the county answered to an enrolment (already checked)."""
    county = PublicKeys.from_dict(answer["county_keys"])
    with store.transaction() as db:
        for name, value in (("station_code", station), ("station_name", answer["station_name"]),
                            ("station_level", answer["station_level"]), ("county_url", central_url.rstrip("/")),
                            ("county_name", answer["county_name"]),
                            ("county_keys", json.dumps(county.to_dict()))):
            store.set_meta(db, name, value)
        # The first entry of the county's key history (PROTOCOL.md §10): later keys come only from a
        # county.keys_rotated event verified under a key already held.
        exchange.add_county_keys(db, county, 1)
    return county
