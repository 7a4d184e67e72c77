"""一件事一次办 at the county: the catalogue's bundles are checked before publishing, and a case
of a sitting shows the other cases of the same sitting.

Each item of a sitting is its own case in its own department's queue (nothing changes there). A
case's signed application names its sitting (``bundle``: id, code, the case ids, sync/law/sittings.py);
another case counts as linked only if the county holds it, the same station signed it, its own signed
application names the same sitting and it is for the same applicant (ID number). A hostile or broken
station's inconsistent sitting is therefore just separate cases: nothing is refused for it, and the
inconsistent ones are not shown as linked (logged at WARNING). Who may open a linked case is
central/services/permissions.py's answer; a clerk of another department sees its item and status only.
Blocking: call these in a worker thread.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from central.services import cases, permissions
from sync.law import sittings

if TYPE_CHECKING:
    from central.services.context import Context

logger = logging.getLogger("lastmile.central")


def case_links(c: Context, case: dict[str, Any], body: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """``bundle_id``, ``bundle_code`` and ``bundle_cases`` of a case (None, None, [] outside a sitting):
    each other case of its sitting as ``{id, item_code, item_name, department, status, may_read}``."""
    link = sittings.link_of(body)
    if link is None:
        return {"bundle_id": None, "bundle_code": None, "bundle_cases": []}
    applicant = body.get("applicant", {}).get("id_number") if isinstance(body.get("applicant"), dict) else None
    linked = []
    for other_id in link["cases"]:
        if other_id == case["id"]:
            continue
        other = c.store.case(other_id)
        other_body = cases.signed_application(c, other)[0] if other is not None else {}
        other_link = sittings.link_of(other_body)
        if other is None:
            continue                    # not arrived yet (or never sent): nothing to show
        if (other["station"] != case["station"] or other_link is None or other_link["id"] != link["id"]
                or other_body.get("applicant", {}).get("id_number") != applicant):
            logger.warning("case %s names case %s in its sitting %s, which does not match (station, sitting or "
                           "applicant): not linked", case["id"], other_id, link["id"])
            continue
        linked.append({"id": other["id"], "item_code": other["item_code"], "item_name": other["item_name"],
                       "department": other["department"], "status": other["status"],
                       "may_read": permissions.may_read(user, other)})
    return {"bundle_id": link["id"], "bundle_code": link["code"], "bundle_cases": linked}
