"""The county's catalogue: publishing a version (sent down to every active station) and reading
the versions it has published (applications are checked against the one they name)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from crypto import canonical
from sync import log
from sync.law import facts

if TYPE_CHECKING:
    from central.store import Store

logger = logging.getLogger("lastmile.central")


class Catalogue:
    """Mixed into County (central/county.py)."""
    store: Store
    _catalogs: dict[int, dict[str, Any]]

    def publish_catalog(self, catalog: dict[str, Any]) -> int:
        """Store a new catalogue version and send it down to every active station. Its ``appeal``
        block (the review body and court a rejection names, PROTOCOL.md §4) is required."""
        from central.services.documents import check_catalog_appeal
        check_catalog_appeal(catalog)
        from central.services.bundles import check_catalog_bundles
        check_catalog_bundles(catalog)          # 一件事一次办: every bundle names items of this catalogue
        with self.store.transaction() as db:
            latest = self.store.latest_catalog(db)
            version = (latest[0] if latest else 0) + 1
            body = {**catalog, "version": version}
            self.store.insert_catalog(db, version, log.utcnow(), canonical.dumps(body).decode())
            for code in self.store.active_station_codes(db):
                self.record(db, code, facts.Fact(facts.CATALOG_PUBLISHED, {"catalog": body}))
        return version

    def catalog(self) -> dict[str, Any]:
        latest = self.store.latest_catalog()
        return json.loads(latest[1]) if latest else {"version": 0, "items": [], "departments": []}

    def _catalog_version(self, db: Any, version: int) -> dict[str, Any] | None:
        """A published catalogue version (versions never change once published, so they are cached)."""
        if version not in self._catalogs:
            body = self.store.catalog_version(db, version)
            if body is None:
                return None
            self._catalogs[version] = json.loads(body)
        return self._catalogs[version]
