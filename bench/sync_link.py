"""How close sync comes to what a bad village link physically allows. Not a test: prints figures.

A backlog of applications (about 2 KB of JSON each: varied names, ID numbers, addresses, free
text) plus scans goes from a station to the county through tests/faultproxy.py at 256 kbit/s each
way, 300 ms round trip, every connection cut every 20 s. In the same run, the first applications
are sent the naive way (one POST per application, retried until it goes) for comparison.

    .venv/bin/python bench/sync_link.py                    # the issue's figures: 5000 + 20 scans, 500 naive
    .venv/bin/python bench/sync_link.py --apps 500 --scans 4 --naive 100    # a quick look
    .venv/bin/python bench/sync_link.py --outage --apps 1000               # after an outage

``--outage``: the station syncs normally over the link for a while, then the county becomes
unreachable (connections refused) while the backlog is taken and the station keeps trying; the link
comes back and the clock starts. Goal: wall time <= 1.2 x (bytes that crossed the link / link rate).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx
import zstandard
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from central.app import create_app as central_app  # noqa: E402
from crypto import canonical, envelope  # noqa: E402
from sync.law.intake import valid_id_for_demo  # noqa: E402
from node.services.scans import Scan  # noqa: E402
from node.station import Station  # noqa: E402
from sync import client, exchange, log  # noqa: E402
from sync.errors import SyncError  # noqa: E402
from tests.conftest import serve  # noqa: E402
from tests.faultproxy import FaultProxy  # noqa: E402
from tests.sync.test_protocol_machine import make_pair  # noqa: E402

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
GIVEN = "秀英桂兰玉兰建华国强志明淑珍春梅海燕丽娟文军红霞永刚德福长生金凤小平卫东建国淑华玉珍秀兰凤英桂英振华立新红梅伟强"
PLACES = ["张村", "李家庄", "王家湾", "河东村", "石桥村", "柳树屯", "南坡村", "北岭村", "大王庄", "新民村", "红旗村", "前进村"]
PHRASES = ["家中主要劳动力因病丧失劳动能力", "常年患有慢性病需长期服药", "子女在外地务工收入不稳定", "房屋年久失修存在安全隐患",
           "去年遭受洪涝灾害农作物大面积减产", "家庭成员中有重度残疾人需要专人照料", "老人年逾八十独自居住", "孩子正在县城读高中开支较大",
           "承包土地较少主要依靠种植玉米小麦", "经村民代表评议情况属实", "申请人本人到场并签字确认", "已如实申报家庭收入和财产状况",
           "医疗费用自付部分较高", "丈夫于前年因意外去世", "依靠低保和亲属接济维持基本生活", "村委会已入户核实"]


COMMON = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经"
          "十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研质")


def free_text(rng: random.Random, n: int) -> str:
    """Free text as agents type it: set phrases mixed with what only this case says."""
    parts = []
    for _ in range(rng.randint(11, 17)):
        if rng.random() < 0.5:
            parts.append(rng.choice(PHRASES))
        else:
            parts.append("".join(rng.choice(COMMON) for _ in range(rng.randint(8, 24))))
    return "，".join(parts) + f"。（{rng.choice(PLACES)}第{n}号）"


def realistic_form(item: dict, rng: random.Random, n: int) -> dict:
    born = f"{rng.randint(1930, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    form = {"name": rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.randint(1, 2))),
            "id_number": valid_id_for_demo(f"{rng.choice(['411521', '411522', '411523', '411524'])}{born}{rng.randint(0, 999):03d}"),
            "phone": f"1{rng.choice('3589')}{rng.randint(0, 999999999):09d}",
            "address": f"河南省信阳市示范县{rng.choice(['城关镇', '双河乡', '李店镇', '高桥乡'])}"
                       f"{rng.choice(PLACES)}{rng.randint(1, 12)}组{rng.randint(1, 99)}号",
            "reason": free_text(rng, n),
            "materials": [m["code"] for m in item["materials"]]}
    for f in item["fields"]:
        if f["type"] == "int":
            value = str(rng.randint(1, 9))
        elif f["type"] == "date":
            value = f"20{rng.randint(10, 26)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        elif f["type"] == "select":
            value = rng.choice(f["options"])["value"]
        else:
            value = free_text(rng, n)
        form["f_" + f["name"]] = value
    return form


def scan_of(rng: random.Random, material: str, target: int = 200 * 1024) -> Scan:
    side = 700
    while True:
        img = Image.merge("RGB", [Image.effect_noise((side, side * 3 // 4), rng.randint(20, 40))] * 3)
        out = io.BytesIO()
        img.save(out, "JPEG", quality=85)
        if out.tell() >= target * 0.95:
            return Scan(material, f"scan{rng.randint(0, 10**6)}.jpg", "image/jpeg", out.getvalue()[:])
        side = int(side * 1.15)


def backlog(st: Station, n: int, scans: int, seed: int) -> tuple[list[bytes], int]:
    """Take ``n`` applications, the first ``scans`` with one ~200 KB scan; return their bodies' JSON."""
    rng = random.Random(seed)
    items = st.items()
    bodies, scan_bytes = [], 0
    for i in range(n):
        item = items[i % len(items)]
        attached = [scan_of(rng, item["materials"][0]["code"])] if i < scans else []
        scan_bytes += sum(len(s.data) for s in attached)
        app = st.take(item["code"], realistic_form(item, rng, i), "accept", "代办员", attached)
        bodies.append(canonical.dumps(st.store.application(app["id"])["body"]))
    return bodies, scan_bytes


class Meter:
    """httpx hooks: requests made, their header bytes, and the bodies of pushes that were answered."""

    def __init__(self) -> None:
        self.requests = 0
        self.headers = 0
        self.answered_pushes = 0

    def on_request(self, request: httpx.Request) -> None:
        self.requests += 1
        self.headers += len(request.method) + len(str(request.url.raw_path)) + 12 + sum(
            len(k) + len(v) + 4 for k, v in request.headers.raw)

    def on_response(self, response: httpx.Response) -> None:
        if response.status_code == 200 and response.request.method == "POST":
            self.answered_pushes += len(response.request.content)

    def options(self) -> dict:
        return {"event_hooks": {"request": [self.on_request], "response": [self.on_response]}}


def link(args: argparse.Namespace, upstream: str) -> FaultProxy:
    host, port = upstream.rsplit(":", 1)
    lo, hi = args.cut
    return FaultProxy(upstream=(host.replace("http://", ""), int(port)), rate_bps=args.rate,
                      latency=args.rtt / 2, cut_every=(lo, hi), seed=args.seed)


def ours(args: argparse.Namespace, root: Path) -> dict:
    county, st = make_pair(root / "ours")
    with serve(central_app(county.settings)) as url, link(args, url) as proxy:
        st.county = replace(st.county, url=url)
        st.sync()                                        # catalogue, over a clean link
        t = time.perf_counter()
        bodies, scan_bytes = backlog(st, args.apps, args.scans, args.seed)
        intake_s = time.perf_counter() - t
        sealed_bytes = sum(p.stat().st_size for p in st.blob_dir.glob("*.sealed"))
        st.county = replace(st.county, url=proxy.url)
        meter = Meter()
        up0, down0 = proxy.stats.bytes_up, proxy.stats.bytes_down
        start = time.perf_counter()
        errors = 0
        events_done = None
        # What Station.sync does, in its two phases, so the time the applications took shows apart.
        with httpx.Client(timeout=30, **meter.options()) as http:
            while time.perf_counter() - start < args.timeout:
                state = st.sync_state()
                if state["up_waiting"] == 0 and events_done is None:
                    events_done = time.perf_counter() - start
                if state["up_waiting"] == 0 and state["scans_waiting"] == 0:
                    break
                try:
                    if state["up_waiting"]:
                        client.sync_once(st.store.transaction, http, me=st.me, station=st.code, county=st.county,
                                         apply=st.apply_down, on_ack=st.mark_received)
                    else:
                        st.upload_scans(http)
                except (SyncError, OSError) as exc:
                    errors += 1
                    if errors % 10 == 0:
                        print(f"  … {errors} interrupted rounds so far ({type(exc).__name__})", flush=True)
        wall = time.perf_counter() - start
        wire_up, wire_down = proxy.stats.bytes_up - up0, proxy.stats.bytes_down - down0
        cuts = proxy.stats.cuts
    cases = county.store.cases(limit=10**9)
    complete = county.store._all("SELECT count(*) FROM scans WHERE received_at IS NOT NULL")[0][0]
    county.store.close()
    st.store.close()
    floor_json = len(zstandard.ZstdCompressor(level=19).compress(b"".join(bodies)))
    floor = floor_json + 96 * len(bodies) + scan_bytes
    return {"apps": len(bodies), "delivered": len(cases), "scans_complete": complete, "intake_s": intake_s,
            "wall_s": wall, "events_s": events_done or wall, "wire_up": wire_up, "wire_down": wire_down, "floor": floor, "floor_json": floor_json,
            "json_raw": sum(map(len, bodies)), "scan_bytes": scan_bytes, "requests": meter.requests,
            # Everything that went up, less request headers, the pushes that were answered and each
            # sealed scan byte once: what is left crossed the link more than once.
            "resent": max(0, wire_up - meter.headers - meter.answered_pushes - sealed_bytes), "sent": wire_up,
            "cuts": cuts, "interrupted": errors}


class Pushes:
    """httpx hook: events carried by each push envelope sent (0 for a pull), in order."""

    def __init__(self) -> None:
        self.carried: list[int] = []

    def on_request(self, request: httpx.Request) -> None:
        head = envelope.parse(request.read()).header
        self.carried.append(head["last"] - head["first"] + 1 if head["last"] else 0)


def outage(args: argparse.Namespace, root: Path) -> dict:
    """The backlog is taken while the county is unreachable; measure from the moment the link is up."""
    county, st = make_pair(root / "outage")
    with serve(central_app(county.settings)) as url, link(args, url) as proxy:
        st.county = replace(st.county, url=url)
        st.sync()                                        # catalogue, over a clean link
        st.county = replace(st.county, url=proxy.url)
        backlog(st, 40, 0, args.seed + 1)                # normal days: the station syncs over its link
        while st.sync_state()["up_waiting"]:
            try:
                st.sync()
            except (SyncError, OSError):
                pass
        for _ in range(2):                               # idle runs of the background loop: pulls
            try:
                st.sync()
            except (SyncError, OSError):
                pass
        proxy.set(down=True)                             # the county is unreachable
        bodies, _ = backlog(st, args.apps, 0, args.seed)
        failed_runs = 0
        with httpx.Client(timeout=30) as http:
            for _ in range(args.outage_runs):            # the background loop keeps trying meanwhile
                try:
                    client.sync_once(st.store.transaction, http, me=st.me, station=st.code, county=st.county,
                                     apply=st.apply_down, sleep=lambda s: None)
                except SyncError:
                    failed_runs += 1
        limit_before = st.sync_state()["batch_limit"]
        with st.store.transaction() as db:
            measured = {k: log.get_status(db, k) for k in ("link_bps", "rtt_s", "wire_per_event")}
        pushes = Pushes()
        proxy.set(down=False)                            # the link is up: the clock starts
        up0, down0, cuts0 = proxy.stats.bytes_up, proxy.stats.bytes_down, proxy.stats.cuts
        start = time.perf_counter()
        errors = 0
        with httpx.Client(timeout=30, event_hooks={"request": [pushes.on_request]}) as http:
            while st.sync_state()["up_waiting"] and time.perf_counter() - start < args.timeout:
                try:
                    client.sync_once(st.store.transaction, http, me=st.me, station=st.code, county=st.county,
                                     apply=st.apply_down, on_ack=st.mark_received)
                except (SyncError, OSError):
                    errors += 1
        wall = time.perf_counter() - start
        wire_up, wire_down = proxy.stats.bytes_up - up0, proxy.stats.bytes_down - down0
        cuts = proxy.stats.cuts - cuts0
    delivered = len(county.store.cases(limit=10**9))
    county.store.close()
    st.store.close()
    return {"apps": len(bodies), "delivered": delivered - 40, "wall_s": wall, "wire_up": wire_up,
            "wire_down": wire_down, "failed_runs": failed_runs, "limit_before": limit_before, "measured": measured,
            "carried": pushes.carried, "cuts": cuts, "interrupted": errors}


def print_outage(args: argparse.Namespace, o: dict) -> None:
    rate = args.rate / 8
    wire = o["wire_up"] + o["wire_down"]
    pushes = [n for n in o["carried"] if n]
    print(f"\noutage: {o['apps']} applications taken while the county was unreachable; "
          f"{o['failed_runs']} sync runs failed meanwhile; batch limit when the link came up: {o['limit_before']}; "
          f"measured before the outage: {o['measured']}")
    print(f"delivered: {o['delivered']}/{o['apps']}; events per push: {pushes[:8]}{' …' if len(pushes) > 8 else ''} "
          f"({len(o['carried'])} requests, {len(pushes)} pushes, {o['cuts']} cuts, {o['interrupted']} interrupted runs)")
    print(f"wire bytes: {wire:,} (up {o['wire_up']:,}, down {o['wire_down']:,}); at {args.rate / 1000:.0f} kbit/s "
          f"that is {wire / rate:.1f} s of link")
    print(f"wall time from link up: {o['wall_s']:.1f} s = {o['wall_s'] / (wire / rate):.2f}x the link time   "
          f"[goal <= 1.2x]")


def naive(args: argparse.Namespace, root: Path) -> dict:
    """One POST per application, retried until it goes through: what a simple client does."""
    county, st = make_pair(root / "naive")
    with serve(central_app(county.settings)) as url, link(args, url) as proxy:
        st.county = replace(st.county, url=url)
        st.sync()
        backlog(st, args.naive, 0, args.seed)
        start = time.perf_counter()
        posts = 0
        with httpx.Client(timeout=30) as http:
            for seq in range(1, args.naive + 1):
                while True:
                    with st.store.transaction() as db:
                        blob = exchange.build_push(db, me=st.me, station=st.code, county=st.county.keys,
                                                   county_name=st.county.name, after=seq - 1, limit=1).blob
                    posts += 1
                    try:
                        answer = client.post_envelope(http, proxy.url, blob)
                        break
                    except SyncError:
                        time.sleep(random.uniform(0, 1))
                with st.store.transaction() as db:
                    exchange.apply_answer(db, answer, me=st.me, station=st.code, county=st.county.keys,
                                          county_name=st.county.name, apply=st.apply_down)
        wall = time.perf_counter() - start
        wire = proxy.stats.bytes_up + proxy.stats.bytes_down
    delivered = len(county.store.cases(limit=10**9))
    county.store.close()
    st.store.close()
    return {"apps": args.naive, "delivered": delivered, "wall_s": wall, "posts": posts, "wire": wire}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--apps", type=int, default=5000)
    p.add_argument("--scans", type=int, default=20)
    p.add_argument("--naive", type=int, default=500)
    p.add_argument("--rate", type=int, default=256_000, help="bits per second, each way")
    p.add_argument("--rtt", type=float, default=0.3, help="seconds")
    p.add_argument("--cut", type=float, nargs=2, default=(20.0, 20.0), help="cut every A..B seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--json", action="store_true", help="print the figures as JSON too")
    p.add_argument("--outage", action="store_true", help="the after-an-outage scenario instead (uses --apps)")
    p.add_argument("--outage-runs", type=int, default=10, help="sync runs that fail during the outage")
    args = p.parse_args()
    if args.outage:
        with tempfile.TemporaryDirectory(prefix="lm-bench-") as tmp:
            print(f"link: {args.rate / 1000:.0f} kbit/s each way, RTT {args.rtt * 1000:.0f} ms, cut every "
                  f"{args.cut[0]:.0f}-{args.cut[1]:.0f} s", flush=True)
            o = outage(args, Path(tmp))
        print_outage(args, o)
        if args.json:
            print(json.dumps({"outage": o}))
        return
    with tempfile.TemporaryDirectory(prefix="lm-bench-") as tmp:
        print(f"link: {args.rate / 1000:.0f} kbit/s each way, RTT {args.rtt * 1000:.0f} ms, cut every "
              f"{args.cut[0]:.0f}-{args.cut[1]:.0f} s", flush=True)
        o = ours(args, Path(tmp))
        n = naive(args, Path(tmp)) if args.naive else None
    rate = args.rate / 8
    wire = o["wire_up"] + o["wire_down"]
    print(f"\nbacklog: {o['apps']} applications ({o['json_raw'] / o['apps']:.0f} B of JSON each) + {args.scans} scans "
          f"({o['scan_bytes'] / 1024:.0f} KB); intake took {o['intake_s']:.1f} s")
    print(f"delivered: {o['delivered']}/{o['apps']} applications, {o['scans_complete']}/{args.scans} scans complete")
    print(f"floor: {o['floor']:,} B = JSON as one zstd-19 stream {o['floor_json']:,} + 96 B x {o['apps']} + scans {o['scan_bytes']:,}")
    print(f"wire bytes: {wire:,} (up {o['wire_up']:,}, down {o['wire_down']:,}) = {wire / o['floor']:.2f}x the floor   [goal <= 1.25x]")
    print(f"wall time: {o['wall_s']:.1f} s vs floor/link {o['floor'] / rate:.1f} s = {o['wall_s'] / (o['floor'] / rate):.2f}x   [goal <= 1.5x]")
    print(f"requests: {o['requests']} = {o['requests'] / o['apps']:.3f} per application; {o['cuts']} connections cut, "
          f"{o['interrupted']} interrupted rounds")
    print(f"bytes sent more than once: {o['resent']:,} of {o['sent']:,} = {100 * o['resent'] / max(o['sent'], 1):.1f}%   [goal < 5%]")
    print(f"the applications themselves (scans follow them) were all at the county after {o['events_s']:.1f} s")
    if n:
        per_naive = n["wall_s"] / n["apps"]
        per_ours, per_all = o["events_s"] / o["apps"], o["wall_s"] / o["apps"]
        print(f"naive, one POST per application: {n['delivered']}/{n['apps']} in {n['wall_s']:.1f} s = "
              f"{per_naive * 1000:.0f} ms each ({n['posts']} POSTs); ours {per_ours * 1000:.1f} ms each = "
              f"{per_naive / per_ours:.1f}x faster per application   [goal >= 10x]; "
              f"counting the scans' time too, {per_all * 1000:.1f} ms = {per_naive / per_all:.1f}x")
    if args.json:
        print(json.dumps({"ours": o, "naive": n}))


if __name__ == "__main__":
    main()
