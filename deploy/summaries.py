"""What `lastmile node sync`, `node export`, `node import` and `central import` print for the installer: a few plain
lines saying what moved and what still waits (the JSON the commands used to print is behind --json).

Plain English, like the rest of the command line; the station's pages say the same in Chinese."""

from __future__ import annotations

from typing import Any


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.1f} MiB"


def _records(n: int) -> str:
    return f"{n} record" + ("" if n == 1 else "s")


def waiting(state: dict[str, Any]) -> list[str]:
    """What still waits, and anything a person must look at, from ``Station.sync_state()``."""
    lines = [f"still waiting to go up: {_records(int(state.get('up_waiting') or 0))}, "
             f"{int(state.get('scans_waiting') or 0)} scan(s)"]
    docs = state.get("docs_waiting") or []
    if docs:
        lines.append(f"result documents still coming from the county: {len(docs)}")
    lines.append(f"last contact with the county: {state.get('last_contact') or 'never'} (UTC)")
    if state.get("last_error"):
        lines.append(f"last error: {state['last_error']}")
    for r in state.get("reported") or []:
        lines.append(f"WARNING: the county set aside record #{r['seq']}"
                     + (f" (receipt {r['receipt_no']})" if r.get("receipt_no") else "") + f": {r['reason']}")
    if state.get("forks"):
        lines.append(f"WARNING: {state['forks']} record(s) disagree with the county's copy; see the station page")
    if state.get("clock_off"):
        lines.append(f"WARNING: this computer's clock is {state.get('clock_skew_s')} s off the county's; set it right")
    for f in state.get("scans_failed") or []:
        lines.append(f"WARNING: scan {str(f['sha256'])[:12]}… failed: {f['error']}")
    return lines


def sync(result: dict[str, Any], state: dict[str, Any]) -> str:
    """``result``: SyncResult.to_dict(); ``state``: the station's sync state after it."""
    lines = [f"sync done: sent {_records(result['sent'])}, the county confirmed {result['acked']}; "
             f"received {_records(result['received'])} from the county; {result['scans']} scan(s) uploaded",
             f"  {result['rounds']} round(s), {_size(result['bytes_up'])} up, {_size(result['bytes_down'])} down"]
    return "\n".join(lines + ["  " + line for line in waiting(state)])


def sync_failed(error: str, state: dict[str, Any]) -> str:
    return "\n".join([f"sync failed: {error}", "nothing is lost: what waits goes up at the next sync"]
                     + ["  " + line for line in waiting(state)])


def export(out: dict[str, Any], data: str) -> str:
    """``out``: what ``Station.export`` returns."""
    what = (f"with the records up to #{out['events']}" if out["events"] else
            "with nothing to go up (it still brings back what waits for this station)")
    return "\n".join([
        f"wrote {out['envelopes']} sealed envelope(s), {_size(int(out['bytes']))}, {what}, to {out['file']} "
        f"(bundle {out['bundle']})",
        f"  at the county: lastmile central import {out['file']} --data COUNTY_DIR",
        f"  then back here: lastmile node import {out['file']}.answer --data {data}"])


def imported(out: dict[str, Any]) -> str:
    """``out``: what ``Station.import_answers`` returns."""
    return "\n".join([f"answer applied: the county confirmed {_records(out['acked'])}; "
                      f"received {_records(out['received'])} from the county"]
                     + ["  " + line for line in waiting(out["state"])])


def county_import(out: dict[str, Any]) -> str:
    """``out``: what ``County.import_bundle`` returns."""
    stations = ", ".join(out["stations"]) or "(none)"
    return "\n".join([f"bundle of station {stations} taken: {_records(out['stored'])} newly stored",
                      f"  the answer ({out['answers']} sealed envelope(s)) is in {out['answer_file']}",
                      f"  carry it back to the station: lastmile node import {out['answer_file']} --data STATION_DIR"])
