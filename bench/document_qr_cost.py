"""What the ``document.qr`` fact costs on the wire (ARCHITECTURE "The QR text travels up behind its
event"): ``--cases`` applications taken at a station (scratch SQLite, in this process), then their
upstream events in canonical JSON, raw and zstd-compressed as a push compresses them, with and
without the ``document.qr`` events. Not a test.

    .venv/bin/python bench/document_qr_cost.py --cases 500
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crypto import canonical  # noqa: E402
from sync import exchange, log  # noqa: E402


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
        with st.store.transaction() as db:
            events = log.events_after(db, log.up(st.code), 0, limit=10 * args.cases + 100, max_bytes=1 << 40)
        st.store.close()
    wire = [e.to_wire() for e in events]
    without = [w for w in wire if w["kind"] != "document.qr"]
    zc = zstandard.ZstdCompressor(level=args.level)

    def size(ws: list[dict]) -> tuple[int, int]:
        raw = canonical.dumps(ws)
        return len(raw), len(zc.compress(raw))

    (raw_all, z_all), (raw_wo, z_wo) = size(wire), size(without)
    n_qr = len(wire) - len(without)
    print(f"{args.cases} applications: {len(without)} events without document.qr, {n_qr} document.qr events")
    print(f"raw canonical JSON: {raw_wo / 1e3:.1f} kB -> {raw_all / 1e3:.1f} kB "
          f"(+{(raw_all - raw_wo) / max(n_qr, 1):.0f} B per document.qr, x{raw_all / raw_wo:.2f})")
    print(f"zstd-{args.level}:            {z_wo / 1e3:.1f} kB -> {z_all / 1e3:.1f} kB "
          f"(+{(z_all - z_wo) / max(n_qr, 1):.0f} B per document.qr, x{z_all / z_wo:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
