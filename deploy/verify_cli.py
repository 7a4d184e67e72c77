"""`lastmile verify CODE_OR_QR_TEXT --data DIR`: check a document on a station's or the county's data
folder, offline (PROTOCOL.md §11). Exit 0 genuine, 1 refused, 2 no usable data folder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    v = sub.add_parser("verify", help="check a document's QR text or typed verification code, offline")
    v.add_argument("code", help="the QR code's text, or the 12-character verification code; '-' reads it from stdin")
    v.add_argument("--data", required=True, help="a station's or the county's data folder")
    v.add_argument("--lang", choices=("zh_CN", "en"), default="zh_CN")
    v.add_argument("--json", action="store_true", help="print the answer as the API gives it")


def run(args: argparse.Namespace) -> int:
    from sync import verify
    from templates import gettext_for

    data = Path(args.data)
    text = sys.stdin.read() if args.code == "-" else args.code
    if (data / "central.db").exists():
        from central.services import verify as county_verify
        from central.county import County, Settings as CountySettings
        county = County(CountySettings(data=data))
        try:
            result = county_verify.check(county, text)
        finally:
            county.store.close()
    elif (data / "node.db").exists():
        from node.services import verify as station_verify
        from node.settings import Settings
        from node.station import Station
        st = Station(Settings(data=data))
        st.store.unlock_from_env()      # node/vault.py: LASTMILE_NODE_TOKEN
        try:
            result = station_verify.check(st, text)
        finally:
            st.store.close()
    else:
        print(f"{data} holds neither a station (node.db) nor a county (central.db)", file=sys.stderr)
        return 2
    _ = gettext_for(args.lang)
    answer = verify.api_answer(result, _)
    if args.json:
        print(json.dumps(answer, ensure_ascii=False, indent=2))
    else:
        print(("✓ " if answer["valid"] else "? " if answer["undetermined"] else "✗ ") + answer["reason"])
        for k in ("station", "receipt_no", "item", "issued_at", "key_id", "state", "verify_code"):
            if answer[k]:
                print(f"  {k}: {answer[k]}")
    return 0 if answer["valid"] else 1
