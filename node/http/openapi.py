"""The station's OpenAPI document (``GET /openapi.json``) and the audit of its page actions: every
POST a page makes and the API operation that does the same (docs/ARCHITECTURE.md keeps the table
as prose; tests/test_openapi.py checks both against the mounted routes)."""

from __future__ import annotations

from typing import Any

from templates.openapi import (ANY, BOOLEAN, INTEGER, NULLABLE_STRING, OBJECT, STRING, array, document, nullable,
                               obj, operation, ref)

# page action (method, path) → its API counterpart (method, path), or None with the reason it has none
PAGE_ACTIONS: dict[tuple[str, str], tuple[str, str] | str] = {
    ("POST", "/login"): "a browser session; the API authenticates every request with a bearer token",
    ("POST", "/logout"): "a browser session; the API authenticates every request with a bearer token",
    ("POST", "/apply/{code}"): ("POST", "/api/v1/applications"),
    ("POST", "/bundle/{code}"): ("POST", "/api/v1/applications"),       # with "items": one sitting (一件事一次办)
    ("POST", "/applications/{id}/complete"): ("POST", "/api/v1/applications/{id}/complete"),
    ("POST", "/applications/{id}/supplement"): ("POST", "/api/v1/applications/{id}/supplement"),
    ("POST", "/applications/{id}/handout"): ("POST", "/api/v1/applications/{id}/handout"),
    ("POST", "/applications/{id}/rate"): ("POST", "/api/v1/applications/{id}/rating"),
    ("POST", "/sync"): ("POST", "/api/v1/sync"),
    ("POST", "/reports"): ("POST", "/api/v1/reports"),
    ("POST", "/staff"): ("POST", "/api/v1/staff"),
    ("POST", "/staff/{username}/{action}"): ("POST", "/api/v1/staff/{username}/{action}"),
}

ID = {"id": STRING}
USERNAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{1,31}$"}
SCAN_IN = obj(["material", "name", "data_base64"], material=STRING, name=STRING,
              data_base64={"type": "string", "description": "The file (JPEG or PDF, at most 8 MiB), base64."})
APPLICANT = obj(["name", "id_number"], name=STRING, id_number=STRING, phone=STRING, address=STRING)
DECISION = {"type": "string", "enum": ["accept", "correction", "refuse"]}
APPLICATION_BODY = {"type": "object", "required": ["decision", "applicant"], "properties": {
    "decision": DECISION, "applicant": APPLICANT,
    "fields": {"type": "object", "description": "The item's form fields by name (strings; whole numbers for "
                                                "`int` fields)."},
    "materials": array(STRING), "reason": STRING, "scans": array(SCAN_IN)}}

SCHEMAS: dict[str, Any] = {
    "Application": obj(
        ["id", "receipt_no", "status", "item_code", "item_name", "applicant_name", "created_at", "missing",
         "documents", "scans"],
        id=STRING, receipt_no=STRING, status=STRING, item_code=STRING, item_name=STRING, applicant_name=STRING,
        created_at=STRING, promised_date=NULLABLE_STRING, promised_provisional=BOOLEAN, missing=array(ANY),
        county_received_at=NULLABLE_STRING, decision=nullable(OBJECT), handed_out_at=NULLABLE_STRING,
        documents=array(obj(["kind", "name", "url", "complete"], kind=STRING, name=STRING, url=STRING,
                            complete=BOOLEAN, qr_text=NULLABLE_STRING, verify_code=NULLABLE_STRING)),
        qr_text=NULLABLE_STRING, verify_code=NULLABLE_STRING,
        scans=array(obj(["sha256", "material", "name", "size", "uploaded"], sha256=STRING, material=STRING,
                        name=STRING, size=INTEGER, uploaded=BOOLEAN))),
    "Report": obj(["id", "receipt_no", "status"], id=STRING, receipt_no=STRING, status=STRING,
                  owner=nullable(OBJECT), answer=nullable(OBJECT), qr_text=NULLABLE_STRING,
                  verify_code=NULLABLE_STRING),
    "Account": obj(["username", "name", "role", "active"], username=STRING, name=STRING,
                   role={"type": "string", "enum": ["admin", "agent"]}, active=BOOLEAN, login_wait_s=INTEGER),
    "Sitting": obj(["bundle_id", "applications", "receipt_url"], bundle_id=STRING, bundle=NULLABLE_STRING,
                   applications=array(ref("Application")), receipt_url=STRING),
    "Verification": obj(["valid", "reason"], valid=BOOLEAN, reason=STRING, undetermined=BOOLEAN, pending=BOOLEAN,
                                           station_name=NULLABLE_STRING, replaced_by=nullable(OBJECT)),
}

APP = ref("Application")
VERIFY = operation("Check a document's QR code text or typed verification code", auth=False,
                   body=obj(["code"], code=STRING), response=ref("Verification"), errors=(422, 429), tags=["documents"])

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/openapi.json"): operation("This document", auth=False, errors=()),
    ("GET", "/api/v1/catalog"): operation(
        "The service items this station may accept", query={"q": STRING}, errors=(),
        response=obj(["version", "level", "items"], version=INTEGER, level=STRING, items=array(OBJECT))),
    ("GET", "/api/v1/status"): operation(
        "The station and its sync state", errors=(),
        response=obj(["station", "name", "level", "sync"], station=STRING, name=STRING, level=STRING, sync=OBJECT)),
    ("POST", "/api/v1/applications"): operation(
        "Take an application: accept it, issue a correction notice, or refuse it; or several items at one "
        "sitting (一件事一次办)", status=201, response={"oneOf": [APP, ref("Sitting")]},
        body={"oneOf": [{**APPLICATION_BODY, "required": ["item", *APPLICATION_BODY["required"]],
                         "properties": {"item": STRING, **APPLICATION_BODY["properties"]}},
                        {"type": "object", "required": ["items", "applicant"], "properties": {
                            "items": {"type": "array", "minItems": 2, "maxItems": 10, "items": obj(
                                ["item"], item=STRING, fields={"type": "object"})},
                            "bundle": NULLABLE_STRING, "applicant": APPLICANT,
                            "decision": {"type": "string", "enum": ["accept", "correction"]},
                            "materials": array(STRING), "reason": STRING, "scans": array(SCAN_IN)}}]},
        headers={"Idempotency-Key": STRING}, errors=(404, 422),
        description="A repeat with the same `Idempotency-Key` and body answers the first `201` again. With "
                    "`items` (one entry per item, each with its own `fields`) it makes one sitting: one case "
                    "per item, one `bundle_id`, one receipt (`receipt_url`); `details` then name "
                    "`items[n].fields.x`."),
    ("GET", "/api/v1/applications"): operation(
        "Find cases by receipt number, ID number (or its last 6), name or phone", query={"q": STRING},
        errors=(422,), response=obj(["q", "applications"], q=STRING, applications=array(APP))),
    ("GET", "/api/v1/applications/{id}"): operation("One case", path=ID, response=APP, errors=(404,)),
    ("POST", "/api/v1/applications/{id}/complete"): operation(
        "Complete a case the station's correction notice left waiting for the citizen (一次性告知)", path=ID,
        body=APPLICATION_BODY, response=APP, errors=(404, 409, 422)),
    ("POST", "/api/v1/applications/{id}/supplement"): operation(
        "What the citizen brought after the county asked for corrections (补正)", path=ID, response=APP,
        body=obj(["materials"], materials=array(STRING), scans=array(SCAN_IN), note=STRING), errors=(404, 409, 422)),
    ("POST", "/api/v1/applications/{id}/handout"): operation(
        "Hand the result out to the applicant or a proxy", path=ID, response=APP, errors=(404, 409, 422),
        body=obj(["identity_checked"], collector=nullable(obj(["name", "id_number", "relation"], name=STRING,
                                                              id_number=STRING, relation=STRING)),
                 identity_checked=BOOLEAN)),
    ("POST", "/api/v1/applications/{id}/rating"): operation(
        "The citizen's rating (好差评)", path=ID, status=201, errors=(404, 409, 422),
        body=obj(["score"], score={"type": "integer", "minimum": 1, "maximum": 5}, comment=STRING),
        response=obj(["score"], score=INTEGER)),
    ("GET", "/api/v1/today"): operation(
        "The start page's lists: results to hand out, cases waiting for the citizen, cases due soon, open reports",
        errors=(), response=obj(["results", "waiting", "due", "open_reports"], results=array(APP), waiting=array(APP),
                                due=array(APP), open_reports=array(ref("Report")))),
    ("POST", "/api/v1/sync"): operation("Sync with the county now, and answer when it is over", errors=(502, 503),
                                        response=obj(["state"], state=OBJECT)),
    ("POST", "/api/v1/reports"): operation(
        "File a 办不成事 report", status=201, response=ref("Report"), errors=(422,),
        body=obj(["name", "tried", "where"], name=STRING, phone=STRING, id_number=STRING, tried=STRING,
                 where=STRING, item_code=STRING, contact=STRING)),
    ("GET", "/api/v1/reports/{id}"): operation("One report", path=ID, response=ref("Report"), errors=(404,)),
    ("GET", "/api/v1/staff"): operation("Every account of the station (admin)", errors=(403,),
                                        response=obj(["staff"], staff=array(ref("Account")))),
    ("POST", "/api/v1/staff"): operation(
        "Add an account (admin); its API token is shown this once", status=201, errors=(403, 409, 422),
        body=obj(["username", "name", "password"], username=USERNAME, name=STRING,
                 role={"type": "string", "enum": ["admin", "agent"]}, password=STRING),
        response={"allOf": [ref("Account"), obj(["token"], token=STRING)]}),
    ("POST", "/api/v1/staff/{username}/{action}"): operation(
        "Disable or enable an account, set its password, or clear its count of wrong passwords (admin)",
        errors=(403, 404, 409, 422),
        path={"username": USERNAME, "action": {"type": "string", "enum": ["disable", "enable", "password", "unlock"]}},
        body=obj(password=STRING), response=ref("Account"),
        description="`password` needs `{\"password\"}`; `disable`, `enable` and `unlock` read no body. `unlock` "
                    "forgets the wrong passwords counted for the account, so its next login is checked at once."),
    ("POST", "/api/v1/verify"): VERIFY,
}

DOCUMENT = document("lastmile station", "The JSON API of a village or township service station (README.md, "
                    "\"JSON API\"). Errors are `{\"error\", \"message\", \"details\"}`; `details` names fields in "
                    "the API's own names.", OPERATIONS, SCHEMAS)

# node/vault.py: after a start, until an agent logs in or a token with a wrapped key is used, every
# authenticated operation may answer 423 ``locked``.
for _op in OPERATIONS.values():
    if _op.get("security") != [] and "401" in _op["responses"]:
        _op["responses"]["423"] = {"description": "The station is locked: its personal data stays encrypted until "
                                                  "an agent logs in or a token whose key is wrapped is used.",
                                   "content": {"application/json": {"schema": ref("Error")}}}
