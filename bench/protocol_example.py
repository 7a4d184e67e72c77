"""Builds the worked example of docs/PROTOCOL.md §9 from the code, with fixed keys, ids and times.

Everything in §9 that does not depend on HPKE's ephemeral key is reproducible: keys, key ids, the
event's content bytes, hash and signature, both headers, both payloads and every length (hlen, clen,
total). tests/test_protocol_doc.py checks that the section in the doc is exactly what this prints.

    .venv/bin/python bench/protocol_example.py            # print the section
    .venv/bin/python bench/protocol_example.py --write    # replace §9 in docs/PROTOCOL.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

import zstandard
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crypto import canonical, envelope  # noqa: E402
from crypto.keys import Identity, b64  # noqa: E402
from node.services import cases  # noqa: E402
from sync import log, verify  # noqa: E402
from sync.law.intake import check_application, valid_id_for_demo

DOC = ROOT / "docs" / "PROTOCOL.md"
START, END = "## 9. Worked example", "## 10."
SEEDS = {name: f"lastmile-example/{name}" for name in ("station-sign", "station-enc", "county-sign", "county-enc")}
CHINA = dt.timezone(dt.timedelta(hours=8))
TAKEN = dt.datetime(2026, 11, 22, 19, 5, 36, 792000, tzinfo=CHINA)
SCAN = bytes(range(256)) * 800            # stands in for a 204,800-byte JPEG
STATION_NAME = "张村便民服务站"


def identity(who: str) -> Identity:
    seed = {k: hashlib.sha256(v.encode()).digest() for k, v in SEEDS.items()}
    return Identity(ed25519.Ed25519PrivateKey.from_private_bytes(seed[f"{who}-sign"]),
                    x25519.X25519PrivateKey.from_private_bytes(seed[f"{who}-enc"]))


def application_body() -> dict[str, Any]:
    catalog = json.loads((ROOT / "central" / "catalog_demo.json").read_text(encoding="utf-8"))
    item = next(i for i in catalog["items"] if i["code"] == "RS-001")
    form = {"name": "王秀英", "id_number": valid_id_for_demo("41152319580312004"), "phone": "13800000000",
            "address": "张村3组", "f_contribution_grade": "300", "f_special_group": "none", "f_other_pension": "no",
            "materials": ["id_card", "household_register"]}
    ms = ((TAKEN.hour * 60 + TAKEN.minute) * 60 + TAKEN.second) * 1000 + TAKEN.microsecond // 1000
    intake = cases.take(item, form, decision="accept", station="V001", agent="李娟", catalog_version=catalog["version"],
                        now=TAKEN.replace(microsecond=0), receipt_no=f"V001-{TAKEN:%Y%m%d}-{ms:08d}", level="village")
    body = dict(intake.body, id="01ceb1f1-841e-436e-92b5-3ad677f05b4d")
    body["scans"] = [{"sha256": hashlib.sha256(SCAN).hexdigest(), "size": len(SCAN), "name": "身份证.jpg",
                      "mime": "image/jpeg", "material": "id_card"}]
    check_application(intake.kind, body, author="V001", level="village", catalog=catalog)
    return body


def event(station: Identity) -> dict[str, Any]:
    content = {"stream": "up/V001", "seq": 1, "prev": log.GENESIS, "author": "V001", "key": station.public.sign_id,
               "kind": "application.accepted", "at": "2026-11-22T11:05:36.792Z", "body": application_body()}
    h = log.content_hash(content)
    return {**content, "hash": h, "sig": b64(station.sign(log.SIG_CONTEXT + h.encode()))}


def sealed_lengths(header: dict[str, Any], payload: dict[str, Any], level: int) -> tuple[bytes, int, int, int]:
    """(header bytes, hlen, clen, total) as seal() makes them; clen is fixed by the zstd output."""
    hb = canonical.dumps(header)
    compressed = zstandard.ZstdCompressor(level=level).compress(canonical.dumps(payload))
    clen = 32 + len(compressed) + 16
    return hb, len(hb), clen, 13 + len(hb) + clen + envelope.SIG_LEN


def county_answer(push_blob: bytes, station: Identity, county: Identity) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, payload) of the answer the real county code gives this push, on a scratch database
    that holds down/V001 seq 1 (the catalogue): so the example has every key the code sends."""
    import sqlite3

    from sync import exchange, schema
    db = sqlite3.connect(":memory:")
    schema.create(db)
    catalog = json.loads((ROOT / "central" / "catalog_demo.json").read_text(encoding="utf-8"))
    log.append(db, county, stream="down/V001", author="county", kind="catalog.published",
               body={"catalog": catalog}, at="2026-11-22T09:00:00.000Z")
    sealed, _ = exchange.answer_push(db, push_blob, me=county, county_name="county",
                                     station_keys=lambda name: station.public, apply=lambda conn, ev: None)
    header, payload = envelope.open_sealed(sealed, recipient=station, recipient_name="V001", sender=county.public)
    db.close()
    return header, payload


def build() -> dict[str, Any]:
    station, county = identity("station"), identity("county")
    ev = event(station)
    push_id, answer_id = "766fab0f7dcbbf152ee45844", "9e87f448bcfc0eb59285c89a"
    push_header = {"v": 1, "kind": "push", "from": "V001", "to": "county", "from_key": station.public.sign_id,
                   "to_key": county.public.enc_id, "comp": "zstd", "id": push_id, "first": 1, "last": 1}
    b = ev["body"]
    qr = verify.make(sign=station.sign, key_id=station.public.sign_id, station="V001", station_name=STATION_NAME,
                     kind=ev["kind"], at=ev["at"], event_hash=ev["hash"], receipt_no=b["receipt_no"],
                     item_code=b["item_code"], item_name=b["item_name"])
    push = {"events": [ev], "down_have": 1, "up_high": 1, "station_time": "2026-11-22T12:18:16.107Z",
            "qr_texts": {"1": qr}}
    phb, phlen, pclen, ptotal = sealed_lengths(push_header, push, 19)
    compressed = zstandard.ZstdCompressor(level=19).compress(canonical.dumps(push))
    real_header, real_answer = county_answer(envelope.seal_parts(phb, compressed, sender=station,
                                                                 recipient=county.public), station, county)
    answer_header = dict(real_header, id=answer_id)                      # only the random id and the
    answer = dict(real_answer, server_time="2026-11-22T12:18:16.111Z")   # clock are fixed here
    ahb, ahlen, aclen, atotal = sealed_lengths(answer_header, answer, 9)
    content = {k: v for k, v in ev.items() if k not in ("hash", "sig")}
    return {"station": station, "county": county, "event": ev, "content": canonical.dumps(content).decode(),
            "push_header": phb.decode(), "push": push, "push_lengths": (phlen, pclen, ptotal),
            "answer_header": ahb.decode(), "answer": answer, "answer_lengths": (ahlen, aclen, atotal)}


def spaced(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def section() -> str:
    x = build()
    st, co, ev = x["station"].public, x["county"].public, x["event"]
    phlen, pclen, ptotal = x["push_lengths"]
    ahlen, aclen, atotal = x["answer_lengths"]
    event_lines = ",\n   ".join(f'"{k}": {spaced(ev[k])}' for k in
                                ("stream", "seq", "author", "key", "kind", "at", "prev", "body", "hash", "sig"))
    push_rest = {k: v for k, v in x["push"].items() if k != "events"}
    return f"""{START}

Station `V001` (a village station) has already pulled `down/V001` seq 1 (`catalog.published`, the
catalogue of `central/catalog_demo.json`, version 1). On 22 November 2026 at 19:05:36.792 China time
it accepts one application for item `RS-001` with one scan and pushes it (`up/V001` seq 1).

This section is printed by `bench/protocol_example.py` from the code, and `tests/test_protocol_doc.py`
checks that it is exactly what the code makes. The example's private keys are the SHA-256 of the
ASCII strings {", ".join(f"`{v}`" for v in SEEDS.values())} (Ed25519 and X25519 private keys are
32 raw bytes), so the hash, the event signature, the headers, the payloads and every length below can
be reproduced; only the envelope bytes after each header differ from run to run (HPKE's ephemeral key).

| key | public key | key id |
|---|---|---|
| station sign | `{st.sign}` | `{st.sign_id}` |
| station enc | `{st.enc}` | `{st.enc_id}` |
| county sign | `{co.sign}` | `{co.sign_id}` |
| county enc | `{co.enc}` | `{co.enc_id}` |

The push envelope is {ptotal} bytes: `4c4d5345 01 {phlen:08x}` (magic, version 1, hlen {phlen}), {phlen} header
bytes, `{pclen:08x}` (clen {pclen} = 32 enc + {pclen - 48} zstd level 19 + 16 tag), {pclen} bytes, 64-byte
signature. Header:

```json
{x["push_header"]}
```

Payload (one field per line here; on the wire it is canonical, keys sorted, no spaces):

```json
{spaced(push_rest)[:-1]},
 "events": [{{
   {event_lines}}}]}}
```

`qr_texts` carries the receipt's QR text (§6, §11), as station `V001`, named {STATION_NAME}, prints it:
its token is signed by the station sign key, so it too can be reproduced.

The application fields are the strings the form sent (`select` values such as `"300"` are strings,
§4); the materials are the item's three, in catalogue order; the promised date is 5 working days
after Sunday 22 November. Test vector: the hash is SHA-256 of these exact canonical content bytes
(UTF-8), and the signature verifies with the station sign key over
`lastmile-event/1|{ev["hash"]}`:

```
{x["content"]}
```

The county stores seq 1 (its ack is the station's proof of receipt: no downstream event is needed)
and answers ({atotal} bytes, hlen {ahlen}, clen {aclen} = 32 + {aclen - 48} zstd level 9 + 16). Header:

```json
{x["answer_header"]}
```

Payload:

```json
{spaced(x["answer"])}
```

The station checks that `in_reply_to` names the push it just sent, moves its upstream cursor to 1 and
marks the application as at the county; with nothing more either way, it stops. It then sends the
scan: `HEAD /sync/v1/blobs/{ev["body"]["scans"][0]["sha256"][:4]}…{ev["body"]["scans"][0]["sha256"][-4:]}` answers `Upload-Offset: 0`, and
`PATCH`es of 64 KiB, 128 KiB … carry the {len(SCAN) + 48:,} sealed bytes.

"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="replace §9 of docs/PROTOCOL.md")
    args = p.parse_args()
    text = section()
    if not args.write:
        print(text)
        return
    doc = DOC.read_text(encoding="utf-8")
    start, end = doc.index(START), doc.index(END)
    DOC.write_text(doc[:start] + text + doc[end:], encoding="utf-8")
    print(f"wrote §9 of {DOC}")


if __name__ == "__main__":
    main()
