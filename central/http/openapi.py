"""The county's OpenAPI document (``GET /openapi.json``) and the audit of its page actions: every
POST a page makes and the API operation that does the same (docs/ARCHITECTURE.md keeps the table
as prose; tests/test_openapi.py checks both against the mounted routes). The station-to-county wire
(``/sync/v1``, ``/enroll/v2``) is no API for people: docs/PROTOCOL.md describes it byte by byte."""

from __future__ import annotations

from typing import Any

from sync.chain import PROBLEMS as PROBLEM_KINDS
from sync.law.intake import PROBLEMS
from templates.openapi import (ANY, BOOLEAN, INTEGER, NULLABLE_STRING, OBJECT, STRING, array, document, nullable,
                               obj, operation, ref)

PAGE_ACTIONS: dict[tuple[str, str], tuple[str, str] | str] = {
    ("POST", "/login"): "a browser session; the API authenticates every request with a bearer token",
    ("POST", "/logout"): "a browser session; the API authenticates every request with a bearer token",
    ("POST", "/cases/{id}/decision"): ("POST", "/api/v1/cases/{id}/decision"),
    ("POST", "/reports/{id}/{action}"): ("POST", "/api/v1/reports/{id}/{action}"),
    ("POST", "/ratings/{case_id}/answer"): ("POST", "/api/v1/ratings/{case_id}/answer"),
    ("POST", "/stations/{code}/restore"): ("POST", "/api/v1/stations/{code}/restore"),
    ("POST", "/selfcheck"): ("POST", "/api/v1/selfcheck"),
}

ID = {"id": STRING}
CASE = obj(["id", "station", "status", "signature", "record_matches_signature", "record_mismatches", "scans",
            "scans_complete", "scans_missing"],
           id=STRING, station=STRING, status=STRING, signature={"type": "string", "enum": ["valid", "invalid", "missing"]},
           record_matches_signature=BOOLEAN, record_mismatches=array(OBJECT), decision_key=nullable(OBJECT),
           scans=array(OBJECT), scans_complete=BOOLEAN, scans_missing=array(STRING), promised_provisional=BOOLEAN)
STATION_DOCUMENT = obj(["kind", "receipt_no", "at", "seq", "verify_code", "qr_text"],
                       kind={"type": "string", "enum": ["application.accepted", "application.correction_notice",
                                                        "application.refused"]},
                       receipt_no=STRING, at=STRING, seq=INTEGER, verify_code=STRING, qr_text=NULLABLE_STRING)
REPORT = obj(["id", "station", "receipt_no", "status"], id=STRING, station=STRING, receipt_no=STRING, status=STRING,
             owner=nullable(OBJECT), answer=nullable(OBJECT))
YEAR = {"year": {"type": "string", "pattern": "^(20[0-9]{2}|2100)$", "description": "2000 to 2100"}}
DATE = {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "description": "YYYY-MM-DD, in the year"}
RATING = obj(["score"], score=INTEGER, comment=NULLABLE_STRING)
SCHEDULE = obj(["year", "source", "provisional", "holidays", "workdays"], year=INTEGER,
               source={"type": "string", "enum": ["county", "library", "weekends"]},
               provisional=BOOLEAN, holidays=array(DATE), workdays=array(DATE))

SCHEMAS: dict[str, Any] = {
    "SelfCheck": obj(["at", "streams", "events", "redacted", "problem_count", "problems", "seconds"], at=STRING,
                     streams=INTEGER, events=INTEGER, redacted=INTEGER, problem_count=INTEGER, seconds={"type": "number"},
                     problems=array(obj(["stream", "seq", "what", "params"], stream=STRING, seq=INTEGER,
                                        what={"type": "string", "enum": sorted(PROBLEM_KINDS)}, params=OBJECT))),
    "Retention": obj(["retention_days", "set_at", "set_by", "default"], retention_days=INTEGER,
                     set_at=NULLABLE_STRING, set_by=NULLABLE_STRING, default=BOOLEAN),"Case": CASE, "Report": REPORT, "Rating": RATING, "Schedule": SCHEDULE,
                           "Verification": obj(["valid", "reason"], valid=BOOLEAN, reason=STRING, undetermined=BOOLEAN, pending=BOOLEAN,
                                           station_name=NULLABLE_STRING, replaced_by=nullable(OBJECT))}

SCAN = operation("A scan of a case, as the station sent it (JPEG or PDF, judged from its bytes)", errors=(403, 404, 415),
                 path={"id": STRING, "sha": STRING})
SCAN["responses"]["200"] = {"description": "The scan's bytes.", "content": {
    "image/jpeg": {"schema": {"type": "string", "contentMediaType": "image/jpeg"}},
    "application/pdf": {"schema": {"type": "string", "contentMediaType": "application/pdf"}}}}

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/openapi.json"): operation("This document", auth=False, errors=()),
    ("GET", "/api/v1/cases"): operation(
        "One page of cases, oldest received first (a clerk: its own department)", errors=(403, 422),
        query={"station": STRING, "status": STRING, "department": STRING,
               "limit": {"type": "integer", "minimum": 1, "maximum": 500}, "offset": {"type": "integer", "minimum": 0}},
        response=obj(["cases", "total", "offset", "limit", "next", "next_offset"], cases=array(ref("Case")),
                     total=INTEGER, offset=INTEGER, limit=INTEGER, next=NULLABLE_STRING,
                     next_offset={"type": ["integer", "null"]})),
    ("GET", "/api/v1/cases/{id}"): operation(
        "One case, with the signed application it came from and the QR texts of its station documents",
        path=ID, errors=(403, 404),
        description="`station_documents`: every document the station printed for the case (its application "
                    "events: 受理回执, 一次性告知书, 不予受理决定书), oldest first. `qr_text` is the exact text of the "
                    "document's QR code as the station printed it, sent up beside the document's event in the push "
                    "(`qr_texts`, docs/PROTOCOL.md §6, §11) and checked against the station's keys and the document "
                    "before it is kept and before it is given; `null` when the station sent none (a station older "
                    "than that field). `qr_text` and "
                    "`verify_code` at the top: the latest document's.",
        response={"allOf": [ref("Case"), obj(["application", "qr_text", "verify_code", "station_documents"],
                                             application=ANY, qr_text=NULLABLE_STRING, verify_code=NULLABLE_STRING,
                                             station_documents=array(STATION_DOCUMENT))]}),
    ("POST", "/api/v1/cases/{id}/decision"): operation(
        "Decide a case: approve, reject or ask the citizen for corrections", path=ID, response=ref("Case"),
        errors=(403, 404, 409, 422),
        body=obj(["decision"], decision={"type": "string", "enum": ["approve", "reject", "correction"]},
                 note=STRING, reason=STRING, basis=STRING,
                 materials=array(obj(["code", "problem"], code=STRING, problem={"type": "string", "enum": list(PROBLEMS)},
                                     text=STRING)),
                 attachments=array(obj(["name", "data_base64"], name=STRING, data_base64=STRING)))),
    ("GET", "/api/v1/cases/{id}/scans/{sha}"): SCAN,
    ("POST", "/api/v1/users/{username}/unlock"): operation(
        "Forget the wrong passwords counted for an account, so its next login is checked at once (supervisor)",
        errors=(401, 403, 404), path={"username": STRING},
        response=obj(["username", "cleared"], username=STRING, cleared=BOOLEAN)),
    ("GET", "/api/v1/stations"): operation(
        "What the stations page shows: each station's state and sync counts, sync problems, restores, the "
        "county's keys", errors=(),
        response=obj(["stations", "problems", "recoveries", "county_keys", "on_old_key"],
                     stations=array(obj(["code", "name", "level", "status"], code=STRING, name=STRING, level=STRING,
                                        status=STRING, received=INTEGER, down_waiting=INTEGER,
                                        scans_missing=INTEGER, down_have=nullable(INTEGER),
                                        down_applied=nullable(INTEGER), catalog_applied=nullable(INTEGER),
                                        catalog_latest=INTEGER, locked=BOOLEAN, restore_until=NULLABLE_STRING,
                                        not_applying={"enum": [None, "locked", "stalled", "catalogue"]})),
                     problems=array(OBJECT), recoveries=array(OBJECT), county_keys=array(OBJECT),
                     on_old_key=array(ANY))),
    ("POST", "/api/v1/stations/{code}/restore"): operation(
        "Mark a station restored from a backup or replaced (supervisors): for 24 hours, once, the county gives "
        "it its own records back when it asks (PROTOCOL.md §8.5, the restore mark)", path={"code": STRING},
        errors=(403, 404, 409),
        response=obj(["station", "at", "until", "by", "served"], station=STRING, at=STRING, until=STRING, by=STRING,
                     served=BOOLEAN), description="Reads no body."),
    ("GET", "/api/v1/selfcheck"): operation(
        "The last log self-check: every log the county holds walked for links, signatures and bodies, and "
        "what it found changed or removed (null before the first check)", errors=(), response=nullable(ref("SelfCheck"))),
    ("POST", "/api/v1/selfcheck"): operation(
        "Run the log self-check now and answer its result (supervisors; seconds to minutes at a large county)",
        errors=(403,), response=ref("SelfCheck"), description="Reads no body."),
    ("GET", "/api/v1/reports"): operation("The stations' 办不成事 reports, open ones first", errors=(),
                                          response=obj(["reports"], reports=array(ref("Report")))),
    ("POST", "/api/v1/reports/{id}/{action}"): operation(
        "Take a report (首问负责), or answer it", response=ref("Report"), errors=(403, 404, 409, 422),
        path={"id": STRING, "action": {"type": "string", "enum": ["take", "answer"]}},
        body=obj(answer=STRING), description="`answer` needs `{\"answer\"}`; `take` reads no body."),
    ("GET", "/api/v1/ratings"): operation(
        "The ratings the caller may read, open follow-ups first", errors=(),
        query={"open": {"type": "string", "enum": ["1", "true", "0", "false"]}},
        response=obj(["ratings", "open"], ratings=array(OBJECT), open=INTEGER)),
    ("POST", "/api/v1/ratings/{case_id}/answer"): operation(
        "Answer a rating of 1 or 2 (整改反馈)", path={"case_id": STRING}, body=obj(["answer"], answer=STRING),
        response=ref("Rating"), errors=(403, 404, 409, 422)),
    ("GET", "/api/v1/calendar/{year}"): operation("A year's working-day schedule", path=YEAR,
                                                  response=ref("Schedule"), errors=(422,)),
    ("PUT", "/api/v1/calendar/{year}"): operation(
        "Enter a year's working-day schedule and send it to every station (supervisors)", path=YEAR,
        response=ref("Schedule"), errors=(403, 422),
        body={**obj(["holidays", "workdays"], holidays=array(DATE), workdays=array(DATE)), "additionalProperties": False}),
    ("GET", "/api/v1/settings/retention"): operation(
        "How long stations keep a handed-out case's personal data", errors=(), response=ref("Retention")),
    ("PUT", "/api/v1/settings/retention"): operation(
        "Set the retention period and send it to every station (supervisors)", response=ref("Retention"),
        errors=(403, 422), body={**obj(["retention_days"], retention_days={"type": "integer", "minimum": 1,
                                                                             "maximum": 3650}),
                                  "additionalProperties": False}),
    ("POST", "/api/v1/verify"): operation(
        "Check a document's QR code text or typed verification code", auth=False,
        body=obj(["code"], code=STRING, nonce=STRING), response=ref("Verification"), errors=(422, 429),
        description="A station asking about a typed code it does not hold sends a `nonce` (16-64 base64url "
                    "characters); the answer then carries `Lastmile-Signature`: the county's Ed25519 signature, "
                    "unpadded base64url, over `lastmile-verify/1|` + nonce + `|` + the answer's bytes "
                    "(docs/PROTOCOL.md §11)."),
}

DOCUMENT = document("lastmile county centre", "The JSON API of the county centre (README.md, \"JSON API\"). "
                    "Errors are `{\"error\", \"message\", \"details\"}`.", OPERATIONS, SCHEMAS)
