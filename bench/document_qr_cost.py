"""What the QR texts beside a push's events cost on the wire (ARCHITECTURE "The QR text travels up
beside its event"): ``--cases`` applications taken at a station (scratch SQLite, in this process),
then one push of their upstream events built by ``exchange.build_push`` as the station builds it,
without and with its ``qr_texts`` (PROTOCOL.md §6): the payload in canonical JSON, raw and
zstd-compressed at the level pushes are sealed with, and the sealed envelope. Not a test.

    .venv/bin/python bench/document_qr_cost.py --cases 500
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crypto import canonical, envelope  # noqa: E402
from sync import exchange  # noqa: E402


def catalogue(county, st) -> None:  # type: ignore[no-untyped-def]
    """One round trip: the county's catalogue comes down to the station."""
    with st.store.transaction() as db:
        push = exchange.build_push(db, me=st.me, station=st.code, county=st.county.keys, county_name=st.county.name)
    answer = county.answer(push.blob)
    with st.store.transaction() as db:
        exchange.apply_answer(db, answer, me=st.me, station=st.code, county=st.county.keys,
                              county_name=st.county.name, apply=st.apply_down, fresh=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--cases", type=int, default=500)
    p.add_argument("--level", type=int, default=19, help="zstd level (a push is sealed at 19)")
    args = p.parse_args()
    from tests.sync.test_protocol_machine import form_for, make_pair
    with tempfile.TemporaryDirectory() as tmp:
        county, st = make_pair(Path(tmp))
        catalogue(county, st)
        for i in range(args.cases):
            item = st.items()[i % len(st.items())]
            st.take(item["code"], form_for(item, i), "accept", "代办员")
        blobs, payloads = [], []
        for hook in (None, st.qr_texts):
            with st.store.transaction() as db:
                push = exchange.build_push(db, me=st.me, station=st.code, county=st.county.keys,
                                           county_name=st.county.name, limit=10 * args.cases + 100,
                                           max_bytes=1 << 40, qr_texts=hook)
            blobs.append(push.blob)
            payloads.append(envelope.open_sealed(push.blob, recipient=county.me, recipient_name=county.name,
                                                 sender=st.me.public)[1])
        county.store.close()
        st.store.close()
    without, with_ = payloads
    n_ev, n_qr = len(with_["events"]), len(with_.get("qr_texts", {}))
    zc = zstandard.ZstdCompressor(level=args.level)

    def size(payload: dict) -> tuple[int, int]:
        raw = canonical.dumps(payload)
        return len(raw), len(zc.compress(raw))

    (raw_wo, z_wo), (raw_w, z_w) = size(without), size(with_)
    print(f"{args.cases} applications: one push of {n_ev} events, {n_qr} QR texts beside them")
    print(f"raw canonical JSON: {raw_wo / 1e3:.1f} kB -> {raw_w / 1e3:.1f} kB "
          f"(+{(raw_w - raw_wo) / max(n_qr, 1):.0f} B per QR text, x{raw_w / raw_wo:.2f})")
    print(f"zstd-{args.level}:            {z_wo / 1e3:.1f} kB -> {z_w / 1e3:.1f} kB "
          f"(+{(z_w - z_wo) / max(n_qr, 1):.0f} B per QR text, x{z_w / z_wo:.2f})")
    print(f"sealed push:        {len(blobs[0]) / 1e3:.1f} kB -> {len(blobs[1]) / 1e3:.1f} kB "
          f"(+{(len(blobs[1]) - len(blobs[0])) / max(n_qr, 1):.0f} B per QR text, x{len(blobs[1]) / len(blobs[0]):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
