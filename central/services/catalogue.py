"""The county's catalogue: publishing a version (sent down to every active station) and reading
the versions it has published (applications are checked against the one they name)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from central.errors import CountyError
from central.services.documents import check_catalog_appeal
from crypto import canonical
from sync import log
from sync.law import facts, sittings
from sync.law.errors import RuleError

if TYPE_CHECKING:
    from central.services.context import Context

logger = logging.getLogger("lastmile.central")


def publish_catalog(county: Context, catalog: dict[str, Any]) -> int:
    """Store a new catalogue version and send it down to every active station. Its ``appeal``
    block (the review body and court a rejection names, PROTOCOL.md §4) is required."""
    check_catalog_appeal(catalog)
    check_catalog_bundles(catalog)          # 一件事一次办: every bundle names items of this catalogue
    with county.store.transaction() as db:
        latest = county.store.latest_catalog(db)
        version = (latest[0] if latest else 0) + 1
        body = {**catalog, "version": version}
        county.store.insert_catalog(db, version, log.utcnow(), canonical.dumps(body).decode())
        for code in county.store.active_station_codes(db):
            county.record(db, code, facts.Fact(facts.CATALOG_PUBLISHED, {"catalog": body}))
    return version


def check_catalog_bundles(catalog: Any) -> None:
    """CountyError 422 ``bad_bundle`` if a bundle of the catalogue breaks a rule (an unknown item …)."""
    try:
        sittings.check_catalog_bundles(catalog if isinstance(catalog, dict) else {})
    except RuleError as exc:
        raise CountyError(422, "bad_bundle", exc.message, exc.params) from None


def catalog(county: Context) -> dict[str, Any]:
    latest = county.store.latest_catalog()
    return json.loads(latest[1]) if latest else {"version": 0, "items": [], "departments": []}


def catalog_version(county: Context, db: Any, version: int) -> dict[str, Any] | None:
    """A published catalogue version (versions never change once published, so they are cached)."""
    if version not in county.catalogs:
        body = county.store.catalog_version(db, version)
        if body is None:
            return None
        county.catalogs[version] = json.loads(body)
    return county.catalogs[version]

