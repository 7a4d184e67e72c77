"""A receipt says everything a citizen needs: when it was accepted, each material with original or
copy and how many, where the station is and how to call it, and a place for the seal."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import CATALOG, log_in
from tests.life.test_case_life import ITEM, accept, sync


def test_the_receipt_names_time_materials_station_address_phone_and_seal(system, http):
    v1 = system.stations["V1"]
    done = subprocess.run([sys.executable, "-m", "deploy.cli", "node", "set-info", "--data", str(v1["settings"].data),
                           "--address", "示范县张村村委会一楼", "--phone", "0371-65123401"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    bad = subprocess.run([sys.executable, "-m", "deploy.cli", "node", "set-info", "--data", str(v1["settings"].data),
                          "--phone", "12"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "phone" in bad.stderr
    api = http(v1["url"], v1["token"])
    sync(api)
    app = accept(api)
    page, _ = log_in(http, v1["url"], "agent")
    receipt = page.get(f"/applications/{app['id']}/document").text
    assert "示范县张村村委会一楼" in receipt and "0371-65123401" in receipt       # set while the node runs
    assert "（盖章）" in receipt and "seal-box" in receipt
    at = app["created_at"]
    assert f"{at[:10]} {at[11:16]}" in receipt                                # the time of acceptance
    table = receipt.split('id="received"')[1].split("</table>")[0]
    for m in ITEM["materials"]:
        if m.get("required"):
            row = table.split(m["name"])[1].split("</tr>")[0]
            assert ("原件" if m["form"] == "original" else "复印件") in row and f">{m['copies']}<" in row
    assert "data-print" in receipt
