"""Fuzz the wire parsers: only success or one of our defined errors may come out. Not a test.

A seeded random mutator (atheris is not available) generates inputs for every entry point a
station or a county exposes to bytes from the other side:

- ``canonical.loads`` on mutated JSON: byte edits of a real payload, deep nesting, long integers,
  floats, escapes, duplicate keys, many tiny values;
- ``envelope.parse`` / ``open_sealed`` (real keys) on mutated envelopes: bit flips, truncations,
  extensions, length-field edits, header edits (re-signed or not), and well-signed envelopes around
  hostile compressed data: zstd bombs, a huge window, two frames, trailing bytes, random bytes;
- ``sync.log.Event.from_wire`` + ``check`` on structurally mutated events (some re-signed, as a
  compromised station would);
- the county's ``County.answer`` (``sync.exchange.answer_push`` in a transaction on a scratch SQLite
  county with an enrolled station) on well-signed pushes with mutated payloads (their events, the
  QR texts beside them, the other fields).

Allowed outcomes per entry point are listed in ALLOWED; anything else (a ValueError, a
RecursionError, a MemoryError, an sqlite3 error …) is counted as UNEXPECTED, printed with its
reproducer seed, and makes the exit status 1. Peak RSS is tracked with resource.getrusage.

    .venv/bin/python bench/fuzz_wire.py                      # 1,000,000 inputs, seed 1
    .venv/bin/python bench/fuzz_wire.py -n 20000 --seed 7    # a quick look
    .venv/bin/python bench/fuzz_wire.py --replay 12345       # re-run one input by its seed
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import logging
import random
import resource
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import zstandard

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crypto import canonical, envelope  # noqa: E402
from crypto.errors import (BadEncoding, BadSignature, CryptoError, DecryptionFailed, EnvelopeTooLarge,  # noqa: E402
                           MalformedEnvelope, WrongRecipient)
from crypto.keys import b64  # noqa: E402
from sync import exchange, log  # noqa: E402
from sync.errors import BadEvent, SyncError  # noqa: E402
from sync.log import Event  # noqa: E402

ENVELOPE_ERRORS = (MalformedEnvelope, EnvelopeTooLarge, WrongRecipient, BadSignature, DecryptionFailed)
ALLOWED: dict[str, tuple[type[Exception], ...]] = {
    "loads": (BadEncoding,),
    "parse": (MalformedEnvelope, EnvelopeTooLarge),
    "open": ENVELOPE_ERRORS,
    "event": (BadEvent,),
    "county": (CryptoError, SyncError),
}
# Class codes that name no specific refusal: the county must never answer with one (PROTOCOL.md §7).
GENERIC_CODES = {"crypto", "envelope", "bad_encoding", "sync", "rejected", "retry"}

INTERESTING_INTS = [0, 1, -1, 2**53 - 1, 2**53, -(2**53), 2**63, 10**20]   # longer ones: as raw text
INTERESTING_STRINGS = ["", "\ud800", "\x00", "\u2028", "é", "up/S1", "0" * 64, "A" * 86, "€" * 1000]


def json_value(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON-ish value, sometimes one our encoder must refuse (float, lone surrogate, big int)."""
    r = rng.random()
    if depth > 3 or r < 0.5:
        return rng.choice([None, True, False, rng.randint(-10, 10), rng.choice(INTERESTING_INTS),
                           rng.choice(INTERESTING_STRINGS), "x" * rng.randint(0, 40), 1.5])
    if r < 0.75:
        return [json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["a", "seq", "body", "events", "", "é"]) + str(i): json_value(rng, depth + 1)
            for i in range(rng.randint(0, 4))}


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """One to a few byte-level edits: flips, sets, inserts, deletes, truncation, extension, splices."""
    out = bytearray(data)
    for _ in range(rng.choice([1, 1, 1, 2, 3, 8])):
        op = rng.randrange(8)
        pos = rng.randrange(len(out) + 1) if out else 0
        if op == 0 and out:
            out[min(pos, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and out:
            out[min(pos, len(out) - 1)] = rng.choice([0, 0xFF, 0x7F, 0x80, ord('"'), ord("["), ord("{"), ord("\\")])
        elif op == 2:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and out:
            del out[pos:pos + rng.randint(1, 16)]
        elif op == 4:
            del out[pos:]
        elif op == 5:
            out += rng.choice([b"\0", b" ", b"\n", b"}", b"]", b"x" * 100])
        elif op == 6 and len(out) > 8:
            a, b = sorted(rng.sample(range(len(out)), 2))
            out[pos:pos] = out[a:b][:256]
        elif op == 7 and out:
            out[min(pos, len(out) - 1):min(pos, len(out) - 1) + 4] = struct.pack(
                ">I", rng.choice([0, 1, 2**31, 2**32 - 1, rng.randrange(2**32)]))
    return bytes(out)


def hostile_json(rng: random.Random, base: bytes) -> bytes:
    kind = rng.randrange(10)
    big = rng.random() < 0.01                 # the megabyte-sized cases are slow: keep them rare
    if kind == 0:
        k = 100_000 if big else rng.choice([31, 32, 33, 34, 100, 1000])
        return b"[" * k + b"]" * k
    if kind == 1:
        return b'{"n":' + b"9" * (100_000 if big else rng.choice([15, 16, 17, 18, 4300, 4301, 5000])) + b"}"
    if kind == 2:
        n = rng.choice([499_999, 500_001, 2_000_000]) if big else rng.choice([10, 1000])
        return b"[" + b"[]," * n + b"[]]"
    if kind == 3:
        return rng.choice([b'{"a":1.0}', b'{"a":1e3}', b'{"a":NaN}', b'{"a":-0}', b'{"a":1,"a":2}',
                           b'{"a":"\\ud800"}', b'{"a":"\\u00e9"}', b'{"a":"\\u001F"}', b'\xef\xbb\xbf{}',
                           b'"' + b"\\" * 1001 + b'"', b'{"a":01}', b'{"b":1,"a":1}'])
    if kind == 5:                             # strings that never end: a scan must stay linear
        n = 200_000 if big else rng.choice([10, 1000])
        return rng.choice([b'["' + b'\\"' * n, b'["' + b'\\"' * n + b"\\", b'"' * n, b'["a\\' * n])
    if kind == 4:
        return b'"' + b"x" * (rng.choice([10**6, 8 * 10**6]) if big else rng.choice([0, 10, 1000])) + b'"'
    return mutate_bytes(rng, base)


class Harness:
    """Real keys, a real county with station S1 enrolled (scratch SQLite), and valid envelopes to mutate."""

    def __init__(self, root: Path) -> None:
        from tests.sync.test_protocol_machine import form_for, make_pair
        self.county, self.station = make_pair(root)
        st, county = self.station, self.county
        with st.store.transaction() as db:       # the catalogue comes down, as on a first sync
            push = exchange.build_push(db, me=st.me, station=st.code, county=st.county.keys,
                                       county_name=st.county.name)
        answer = county.answer(push.blob)
        with st.store.transaction() as db:
            exchange.apply_answer(db, answer, me=st.me, station=st.code, county=st.county.keys,
                                  county_name=st.county.name, apply=st.apply_down, fresh=True)
        for i in range(3):
            item = st.items()[i % len(st.items())]
            st.take(item["code"], form_for(item, i), "accept", "代办员")
        with st.store.transaction() as db:
            self.push = exchange.build_push(db, me=st.me, station=st.code, county=st.county.keys,
                                            county_name=st.county.name, qr_texts=st.qr_texts).blob
        self.parsed = envelope.parse(self.push)
        _, self.payload = envelope.open_sealed(self.push, recipient=county.me, recipient_name=county.name,
                                               sender=st.me.public)
        self.payload_bytes = canonical.dumps(self.payload)
        self.answer = county.answer(self.push)
        self.events = self.payload["events"]
        big = b"\0" * (envelope.MAX_PAYLOAD + 1)
        self.bombs = [zstandard.ZstdCompressor(level=3).compress(big),
                      zstandard.ZstdCompressor(level=1).compress(b"[" + b"{}," * 6_000_000 + b"{}]"),
                      zstandard.ZstdCompressor(level=1, write_content_size=False).compress(big)]
        wide = zstandard.ZstdCompressionParameters.from_level(19, window_log=27, write_content_size=False)
        self.wide = zstandard.ZstdCompressor(compression_params=wide).compress(b"x" * 200_000)

    # -- building inputs -------------------------------------------------------------------------
    def header_bytes(self, rng: random.Random) -> bytes:
        head = dict(self.parsed.header)
        r = rng.random()
        if r < 0.3:
            head[rng.choice(list(head) + ["extra", "in_reply_to"])] = json_value(rng)
        elif r < 0.4:
            head.pop(rng.choice(list(head)))
        try:
            hb = canonical.dumps(head)
        except BadEncoding:
            hb = json.dumps(head, default=str).encode("utf-8", "surrogatepass")
        if rng.random() < 0.2:
            hb = mutate_bytes(rng, hb)
        return hb

    def payload_object(self, rng: random.Random) -> Any:
        p = copy.deepcopy(self.payload)
        for _ in range(rng.randint(1, 3)):
            r = rng.random()
            if r < 0.2:
                p[rng.choice(list(p) + ["confirm", "zzz", "in_reply_to", "qr_texts"])] = json_value(rng)
            elif r < 0.25 and isinstance(p.get("qr_texts"), dict):
                self.mutate_qr_texts(rng, p["qr_texts"])
            elif r < 0.3 and p:
                p.pop(rng.choice(list(p)))
            elif r < 0.8 and isinstance(p.get("events"), list) and p["events"]:
                self.mutate_event(rng, p["events"], rng.randrange(len(p["events"])))
            elif r < 0.9 and isinstance(p.get("events"), list):
                p["events"] = p["events"] + p["events"][: rng.randint(0, 3)]
                rng.shuffle(p["events"])
            else:
                p = json_value(rng)
                break
        return p

    def mutate_qr_texts(self, rng: random.Random, texts: dict[str, Any]) -> None:
        """An entry of the push's ``qr_texts`` moved to another key, given another value, or added."""
        key = rng.choice(list(texts) + ["0", "01", "-1", "4", "99", "", "1e0", " 1"])
        r = rng.random()
        if r < 0.4:
            texts[key] = json_value(rng)
        elif r < 0.7 and texts:
            texts[key] = texts.pop(rng.choice(list(texts)))
        else:
            texts[key] = rng.choice(list(texts.values()) or ["x"]) + rng.choice(["", "\n", "x" * 2000])

    def mutate_event(self, rng: random.Random, events: list[Any], i: int) -> None:
        ev = events[i]
        if not isinstance(ev, dict):
            return
        r = rng.random()
        field = rng.choice(["stream", "seq", "prev", "author", "key", "kind", "at", "body", "hash", "sig", "x"])
        if r < 0.3:
            ev[field] = json_value(rng)
        elif r < 0.4:
            ev.pop(field, None)
        elif r < 0.7 and isinstance(ev.get("body"), dict):
            body = ev["body"]
            key = rng.choice(list(body) + ["extra"]) if body else "extra"
            body[key] = json_value(rng)
        else:
            ev["seq"] = rng.choice([0, -1, 1, 2, 3, 4, 10**6, 2**53 - 1, True])
        if rng.random() < 0.5 and isinstance(ev.get("body"), dict):
            self.resign(ev)                   # a compromised station signs what it sends

    def resign(self, ev: dict[str, Any]) -> None:
        content = {k: ev.get(k) for k in ("stream", "seq", "prev", "author", "key", "kind", "at", "body")}
        try:
            ev["hash"] = log.content_hash(content)
        except BadEncoding:
            return
        ev["sig"] = b64(self.station.me.sign(log.SIG_CONTEXT + ev["hash"].encode()))

    def sealed(self, rng: random.Random, compressed: bytes, header: bytes | None = None) -> bytes:
        return envelope.seal_parts(header if header is not None else self.parsed.header_bytes, compressed,
                                   sender=self.station.me, recipient=self.county.me.public)

    def compressed_payload(self, rng: random.Random) -> bytes:
        r = rng.random()
        if r < 0.03:
            return rng.choice(self.bombs)
        if r < 0.05:
            return self.wide
        raw = self.payload_bytes
        if r < 0.5:
            raw = hostile_json(rng, raw)
        elif r < 0.85:
            obj = self.payload_object(rng)
            try:
                raw = canonical.dumps(obj)
            except BadEncoding:
                raw = json.dumps(obj, default=str).encode("utf-8", "surrogatepass")
            if rng.random() < 0.1:                 # an integer longer than int() converts
                raw = raw.replace(b'"seq":', b'"seq":' + b"7" * rng.choice([17, 18, 4301, 5000]) + b"0", 1)
        comp = zstandard.ZstdCompressor(level=rng.choice([1, 3])).compress(raw)
        r = rng.random()
        if r < 0.1:
            comp += zstandard.ZstdCompressor().compress(b'{"events":[],"down_have":0}')
        elif r < 0.15:
            comp += b"\x50\x2a\x4d\x18\x00\x00\x00\x00"
        elif r < 0.2:
            comp = mutate_bytes(rng, comp)
        elif r < 0.22:
            comp = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        return comp

    def envelope_bytes(self, rng: random.Random) -> bytes:
        r = rng.random()
        if r < 0.45:
            return mutate_bytes(rng, self.push)               # an attacker without keys
        if r < 0.55:
            blob = bytearray(self.push)                       # length fields
            at = rng.choice([5, 9 + len(self.parsed.header_bytes)])
            blob[at:at + 4] = struct.pack(">I", rng.choice([0, 1, 4096, 4097, len(self.push), 2**32 - 1,
                                                            rng.randrange(2**32)]))
            return bytes(blob)
        if r < 0.6:                                           # a stolen signing key, a tampered ciphertext
            signed = bytearray(self.parsed.signed)
            start = 13 + len(self.parsed.header_bytes)
            signed[rng.randrange(start, len(signed))] ^= 1 << rng.randrange(8)
            return bytes(signed) + self.station.me.sign(bytes(signed))
        if r < 0.7:
            return self.sealed(rng, zstandard.ZstdCompressor().compress(self.payload_bytes), self.header_bytes(rng))
        return self.sealed(rng, self.compressed_payload(rng))

    # -- one input -------------------------------------------------------------------------------
    def one(self, seed: int) -> tuple[str, Callable[[], Any]]:
        rng = random.Random(seed)
        county, st = self.county, self.station
        target = rng.choices(["loads", "parse", "open", "event", "county"], weights=[30, 25, 25, 15, 5])[0]
        if target == "loads":
            data = hostile_json(rng, self.payload_bytes if rng.random() < 0.7 else canonical.dumps(self.events[0]))
            return target, lambda: canonical.loads(data)
        if target == "parse":
            blob = self.envelope_bytes(rng) if rng.random() < 0.5 else mutate_bytes(rng, self.push)
            return target, lambda: envelope.parse(blob)
        if target == "open":
            blob = self.envelope_bytes(rng)
            if rng.random() < 0.1:                            # the station opening a mutated answer
                blob = mutate_bytes(rng, self.answer)
                return target, lambda: envelope.open_sealed(blob, recipient=st.me, recipient_name=st.code,
                                                            sender=county.me.public)
            return target, lambda: envelope.open_sealed(blob, recipient=county.me, recipient_name=county.name,
                                                        sender=st.me.public)
        if target == "event":
            events = copy.deepcopy(self.events)
            self.mutate_event(rng, events, rng.randrange(len(events)))
            ev = events[0] if rng.random() < 0.2 else rng.choice(events)
            return target, lambda: Event.from_wire(ev).check(st.me.public.sign)
        blob = self.envelope_bytes(rng) if rng.random() < 0.3 else self.sealed(rng, self.compressed_payload(rng))
        return target, lambda: county.answer(blob)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(n: int, seed: int, report_every: int = 50_000, harness: Harness | None = None,
        out: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate and run ``n`` inputs from ``seed``; return counts by entry point and outcome."""
    tmp = None
    if harness is None:
        tmp = tempfile.TemporaryDirectory(prefix="lm-fuzz-")
        harness = Harness(Path(tmp.name))
    logging.disable(logging.CRITICAL)          # the county logs every refusal; not what is measured
    outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
    unexpected: list[tuple[int, str, str]] = []
    start = time.perf_counter()
    slowest = (0.0, 0, "")
    try:
        for i in range(n):
            input_seed = seed * 10**9 + i
            target, call = harness.one(input_seed)
            began = time.perf_counter()
            try:
                call()
                outcomes[target, "ok"] += 1
            except ALLOWED[target] as exc:
                code = getattr(exc, "code", "?")
                if target == "county" and code in GENERIC_CODES:
                    unexpected.append((input_seed, target, f"generic code {code}: {exc}"))
                    outcomes[target, "UNEXPECTED"] += 1
                else:
                    outcomes[target, type(exc).__name__] += 1
            except Exception as exc:  # noqa: BLE001 - that is what we are looking for
                unexpected.append((input_seed, target, "".join(traceback.format_exception_only(exc)).strip()[:300]))
                outcomes[target, "UNEXPECTED"] += 1
            took = time.perf_counter() - began
            if took > slowest[0]:
                slowest = (took, input_seed, target)
            if report_every and (i + 1) % report_every == 0:
                rate = (i + 1) / (time.perf_counter() - start)
                out(f"  {i + 1:,} inputs, {rate:,.0f}/s, peak RSS {peak_rss_mb():.0f} MB, "
                    f"{len(unexpected)} unexpected")
    finally:
        harness.county.store.close()
        harness.station.store.close()
        if tmp is not None:
            tmp.cleanup()
    elapsed = time.perf_counter() - start
    return {"inputs": n, "seconds": elapsed, "per_second": n / elapsed, "peak_rss_mb": peak_rss_mb(),
            "slowest_s": slowest[0], "slowest_seed": slowest[1], "slowest_target": slowest[2],
            "outcomes": {f"{t}:{o}": c for (t, o), c in sorted(outcomes.items())}, "unexpected": unexpected}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--replay", type=int, help="run one input by its seed and show what it raises")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.replay is not None:
        with tempfile.TemporaryDirectory(prefix="lm-fuzz-") as tmp:
            h = Harness(Path(tmp))
            target, call = h.one(args.replay)
            print("target:", target)
            call()
            print("ok")
        return
    res = run(args.n, args.seed)
    print(f"\n{res['inputs']:,} inputs in {res['seconds']:.0f} s = {res['per_second']:,.0f}/s; "
          f"peak RSS {res['peak_rss_mb']:.0f} MB; slowest input {res['slowest_s']:.3f} s "
          f"({res['slowest_target']}, seed {res['slowest_seed']})")
    for key, count in res["outcomes"].items():
        print(f"  {key:40s} {count:>9,}")
    for s, target, what in res["unexpected"][:20]:
        print(f"UNEXPECTED seed {s} ({target}): {what}")
    if args.json:
        print(json.dumps({k: v for k, v in res.items() if k != "unexpected"} | {"unexpected": len(res["unexpected"])}))
    sys.exit(1 if res["unexpected"] else 0)


if __name__ == "__main__":
    main()
