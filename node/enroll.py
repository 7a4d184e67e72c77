"""Enrolment: generate the node's keys and exchange public keys with the county, once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from crypto.keys import Identity, PublicKeys
from node.station import Settings
from node.store import Store


class EnrolmentFailed(Exception):
    pass


def enroll(settings: Settings, *, central_url: str, station: str, code: str,
           fingerprint: str | None = None) -> dict[str, Any]:
    """Create keys under DATA/keys, present the one-time code to the county, store what it answers."""
    settings.data.mkdir(parents=True, exist_ok=True)
    store = Store(settings.db_path)
    try:
        if store.meta("station_code"):
            raise EnrolmentFailed(f"{settings.data} is already enrolled as {store.meta('station_code')}")
        if not (settings.key_dir / "sign.pem").exists():
            Identity.generate().save(settings.key_dir)
        me = Identity.load(settings.key_dir)
        try:
            resp = httpx.post(central_url.rstrip("/") + "/enroll/v1", timeout=30,
                              json={"station": station, "code": code, "keys": me.public.to_dict()})
        except httpx.TransportError as exc:
            raise EnrolmentFailed(f"cannot reach the county centre at {central_url}: {exc}") from exc
        if resp.status_code != 200:
            try:
                message = resp.json().get("message", resp.text)
            except ValueError:
                message = resp.text
            raise EnrolmentFailed(f"the county refused enrolment ({resp.status_code}): {message}")
        county = record(store, station=station, central_url=central_url, answer=resp.json(), fingerprint=fingerprint)
        return {"station": station, "name": store.meta("station_name"), "level": store.meta("station_level"),
                "county_fingerprint": county.fingerprint(), "data": str(Path(settings.data))}
    finally:
        store.close()


def record(store: Store, *, station: str, central_url: str, answer: dict[str, Any],
           fingerprint: str | None = None) -> PublicKeys:
    """Store what the county answered to an enrolment; check its key fingerprint if one was given."""
    county = PublicKeys.from_dict(answer["county_keys"])
    if fingerprint and fingerprint.replace("-", "").upper() != county.fingerprint().replace("-", ""):
        raise EnrolmentFailed("the county's key fingerprint does not match the one you were given; "
                              "do not use this link, call the county")
    with store.transaction() as db:
        for name, value in (("station_code", station), ("station_name", answer["station_name"]),
                            ("station_level", answer["station_level"]), ("county_url", central_url.rstrip("/")),
                            ("county_name", answer["county_name"]),
                            ("county_keys", json.dumps(county.to_dict()))):
            store.set_meta(db, name, value)
    return county
