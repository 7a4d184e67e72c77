"""schemathesis against a real station and a real county (uvicorn on loopback, SQLite files), each
with its own OpenAPI document (``GET /openapi.json``): every operation, valid and invalid requests,
with a bearer token that may do everything. No answer is a 5xx; a valid request's answer has a
documented status and matches the documented schema.

Nothing is excluded: the tokens are an admin's (station) and a supervisor's (county) on a throw-away
system, so staff changes, syncs and calendar entries only touch this test's files."""

from __future__ import annotations

import os
import time
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from node.store import Store as NodeStore
from tests.conftest import PASSWORD
from tests.life.test_case_life import APPLICANT, ITEM, accept, fields, sync

# per operation; the run stays well under 90 s. LASTMILE_FUZZ=<n> runs n (and n/2 invalid) for a deeper search.
DEPTH = int(os.environ.get("LASTMILE_FUZZ", "30"))
EXAMPLES = {GenerationMode.POSITIVE: DEPTH, GenerationMode.NEGATIVE: max(1, DEPTH * 5 // 8)}
CHECKS = {GenerationMode.POSITIVE: [not_a_server_error, status_code_conformance, response_schema_conformance],
          GenerationMode.NEGATIVE: [not_a_server_error]}


def _fuzz(doc: dict[str, Any], base_url: str, token: str, seen: dict[str, set[int]]) -> list[str]:
    """Every operation of ``doc``, both generation modes; the failures, one line each. ``seen``
    gathers the statuses each operation answered."""
    schema = schemathesis.openapi.from_dict(doc)
    failures: list[str] = []
    for result in schema.get_all_operations():
        op = result.ok()
        for mode, examples in EXAMPLES.items():
            @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                response = case.call(base_url=base_url, headers={"authorization": f"Bearer {token}"}, timeout=60)
                seen.setdefault(f"{base_url} {op.method.upper()} {op.path}", set()).add(response.status_code)
                case.validate_response(response, checks=CHECKS[mode])
            try:
                run()
            except Unsatisfiable:       # nothing to make invalid (GET /openapi.json takes no input)
                assert mode is GenerationMode.NEGATIVE, op.path
            except Exception as exc:  # noqa: BLE001 - gathered and reported together below
                failures.append(f"{op.method.upper()} {op.path} ({mode.value}): {str(exc)[:1500]}")
    return failures


def _pinned(doc: dict[str, Any], values: dict[str, list[str]]) -> dict[str, Any]:
    """``doc`` with the path parameters named in ``values`` drawn from real ones (cases that exist),
    so the operations on one case reach past their 404 into the case's states."""
    for ops in doc["paths"].values():
        for op in ops.values():
            for p in op.get("parameters", []):
                if p["in"] == "path" and p["name"] in values:
                    p["schema"] = {"type": "string", "enum": values[p["name"]]}
    return doc


def _cases(api: Any) -> list[str]:
    """An accepted case (synced up) and one the station's correction notice left waiting."""
    made = [accept(api)["id"]]
    r = api.post("/api/v1/applications", json={"item": ITEM["code"], "decision": "correction",
                                               "applicant": APPLICANT, "fields": fields(), "materials": []})
    assert r.status_code == 201, r.text
    sync(api)
    return made + [r.json()["id"]]


def test_schemathesis_finds_no_server_error_on_the_station_or_the_county(system, http):
    v1 = system.stations["V1"]
    sync(http(v1["url"], v1["token"]))                        # the catalogue comes down
    ids = _cases(http(v1["url"], v1["token"]))
    store = NodeStore(v1["settings"].db_path)
    try:
        admin = store.add_user("chief", "站长", PASSWORD, "admin")
    finally:
        store.close()
    started, seen = time.monotonic(), {}
    node_doc, county_doc = http(v1["url"]).get("/openapi.json").json(), http(system.central_url).get("/openapi.json").json()
    failures = _fuzz(node_doc, v1["url"], admin, seen)
    failures += _fuzz(county_doc, system.central_url, system.central_token, seen)
    # once more on real cases; the county then decides, so the station's side goes on to hand-out and rating
    county_ids = {"id": ids, "case_id": ids}
    failures += _fuzz(_pinned(county_doc, county_ids), system.central_url, system.central_token, seen)
    sync(http(v1["url"], v1["token"]))
    failures += _fuzz(_pinned(node_doc, {"id": ids}), v1["url"], admin, seen)
    assert not failures, "\n\n".join(failures)
    print(sorted((k, sorted(v)) for k, v in seen.items()))
    assert len(seen) == sum(len(d["paths"][p]) for d in (node_doc, county_doc) for p in d["paths"])
    assert time.monotonic() - started < 240 or DEPTH > 30
