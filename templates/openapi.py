"""OpenAPI 3.1 documents of the two apps' JSON APIs, built from the per-app operation lists in
node/openapi.py and central/http/openapi.py, and served at ``GET /openapi.json`` (no login).

Kept next to the routes so it stays true: tests/test_openapi.py asserts that the API routes each
app mounts and the paths its document describes are the same set, and runs schemathesis against
real servers with the documents. The schemas say what a client may rely on (required keys and
their types); objects stay open (more keys may come) so a new field is no breaking change."""

from __future__ import annotations

import re
from typing import Any, Iterable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

Schema = dict[str, Any]

OPENAPI = "3.1.0"
STRING: Schema = {"type": "string"}
NULLABLE_STRING: Schema = {"type": ["string", "null"]}
INTEGER: Schema = {"type": "integer"}
BOOLEAN: Schema = {"type": "boolean"}
OBJECT: Schema = {"type": "object"}
ANY: Schema = {}

ERROR: Schema = {
    "type": "object", "required": ["error", "message", "details"],
    "properties": {
        "error": {"type": "string", "description": "A stable code, e.g. `invalid`, `not_found`, `conflict`."},
        "message": {"type": "string", "description": "What went wrong, in the caller's language."},
        "details": {"description": "`null`, or an object whose keys name the parts of the request at fault in "
                                   "the API's own names (`applicant.id_number`, `fields.birth_date`, "
                                   "`materials`, `scans[0]`, `score`), each with what is wrong.",
                    "type": ["object", "null"]}},
}

ERROR_TEXT = {400: "The body is not JSON, or a header is malformed.", 401: "No valid bearer token.",
              403: "The token's user may not do this.", 404: "No such thing here.",
              409: "The case's (or report's, or account's) state forbids it now.",
              413: "The body is too large.", 415: "The stored file is of a type that is not served.",
              422: "The request is well-formed JSON but breaks a rule; `details` names the fields.",
              429: "Too many requests from this address (the public verify API: 60 a minute); `Retry-After` says "
                   "when to try again.",
              502: "The county refused the sync.", 503: "The county cannot be reached now; try later."}


def obj(required: Iterable[str] = (), **properties: Schema) -> Schema:
    """An open JSON object with these ``properties``, the ``required`` ones always present."""
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def operation(summary: str, *, response: Schema | None = None, status: int = 200, body: Schema | None = None,
              errors: Iterable[int] = (401, 404, 422), query: dict[str, Schema] | None = None,
              path: dict[str, Schema] | None = None, auth: bool = True, description: str = "",
              headers: dict[str, Schema] | None = None, tags: Iterable[str] = ()) -> dict[str, Any]:
    """One operation: its ``summary``, path and query parameters, JSON ``body`` (required when given),
    the success ``status`` with its ``response`` schema, and the JSON error answers ``errors``."""
    op: dict[str, Any] = {"summary": summary, "responses": {str(status): {
        "description": "OK", "content": {"application/json": {"schema": response or OBJECT}}}}}
    if description:
        op["description"] = description
    if tags:
        op["tags"] = list(tags)
    params = [{"name": k, "in": "path", "required": True, "schema": v} for k, v in (path or {}).items()]
    params += [{"name": k, "in": "query", "required": False, "schema": v} for k, v in (query or {}).items()]
    params += [{"name": k, "in": "header", "required": False, "schema": v} for k, v in (headers or {}).items()]
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        errors = sorted({400, *errors})
    if auth:
        errors = sorted({401, *errors})
    else:
        op["security"] = []
    for code in errors:
        op["responses"][str(code)] = {"description": ERROR_TEXT.get(code, "Refused."),
                                      "content": {"application/json": {"schema": ref("Error")}}}
    return op


def document(title: str, description: str, operations: dict[tuple[str, str], dict[str, Any]],
             schemas: dict[str, Schema] | None = None) -> dict[str, Any]:
    """The whole OpenAPI document of one app: ``operations`` keyed by (method, path)."""
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), op in operations.items():
        paths.setdefault(path, {})[method.lower()] = op
    return {"openapi": OPENAPI,
            "info": {"title": title, "version": "1", "description": description},
            "paths": paths,
            "components": {"schemas": {"Error": ERROR, **(schemas or {})},
                           "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                          "description": "An API token: `lastmile user add` or "
                                                                         "the Accounts page prints it once."}}},
            "security": [{"bearer": []}]}


def route(doc: dict[str, Any]) -> Route:
    """``GET /openapi.json``: the document, to anyone (it holds no secret)."""
    async def serve(request: Request) -> Response:
        return JSONResponse(doc, headers={"cache-control": "no-cache"})
    return Route("/openapi.json", serve)


def mounted_api(routes: Iterable[BaseRoute]) -> set[tuple[str, str]]:
    """(method, path) of every mounted API route (``/api/…`` and ``/openapi.json``), paths in
    OpenAPI's form (``{action:str}`` → ``{action}``)."""
    found = set()
    for r in routes:
        if isinstance(r, Route) and (r.path.startswith("/api/") or r.path == "/openapi.json"):
            for method in r.methods or ():
                if method != "HEAD":
                    found.add((method, re.sub(r"\{(\w+):\w+\}", r"{\1}", r.path)))
    return found


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """(method, path) of every operation a document describes."""
    return {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
