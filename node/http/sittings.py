"""Thin handlers of 一件事一次办 (node/services/sittings.py): the one form of a bundle, its submission, the
sitting's receipt, and ``POST /api/v1/applications`` with ``items``."""

from __future__ import annotations

import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from node.http import errors as apierrors
from node.services import sittings
from node.services import cases
from node.services import idem
from node.services import verify as doc_verify
from node.station import Station
from node.http.common import (FORM, printed_qr, replayed, agent, api_scans, app_json, application_of, form_scans,
                        form_submission, station)
from templates import N_, csrf_token, gettext_for, locale_of, render
from templates.web import api_error, upload_form

logger = logging.getLogger("lastmile.node")


def _bundle_form(st: Station, code: str) -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, Any]]:
    found = sittings.bundle(st, code)
    return found, sittings.merged(found["item_list"]) if found else {}, st.department_names()


async def _page(request: Request, st: Station, code: str, status: int = 200, form: dict[str, Any] | None = None,
                error: sittings.BundleError | None = None, token: str | None = None) -> Response:
    found, merged, departments = await run_in_threadpool(_bundle_form, st, code)
    if found is None:
        raise HTTPException(404, N_("This station does not offer this bundle."))
    return render(request, "node/bundle.html", status, st=st, bundle=found, merged=merged, departments=departments,
                  form=form or {}, errors=error.flat() if error else {}, error=error,
                  submit_token=token or idem.new_form_token(csrf_token(request)))


async def bundle_form(request: Request) -> Response:
    """``/bundle/{code}``: the one form of a sitting (applicant once, each item's fields, materials once)."""
    agent(request)
    return await _page(request, station(request), request.path_params["code"])


async def bundle_submit(request: Request) -> Response:
    user = agent(request)
    st = station(request)
    code = request.path_params["code"]
    async with upload_form(request) as form:
        token, first = await form_submission(request, st, user, form)
        if first is not None:       # a double click, the back button: the receipt of the first submission
            return RedirectResponse(f"/applications/{first['app_id']}/bundle-receipt", 303)
        data: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str) and k != "materials"}
        data["materials"] = form.getlist("materials")
        found = await run_in_threadpool(sittings.bundle, st, code)
        if found is None:
            raise HTTPException(404, N_("This station does not offer this bundle."))
        try:
            attached = await form_scans(form)
            apps = await run_in_threadpool(
                lambda: sittings.take(st, [(c, data) for c in found["items"]], str(form.get("decision", "")),
                                     user["name"], attached, code=code,
                                     within=idem.claimer(FORM + user["username"], token, "form")))
        except idem.Replay as again:
            return RedirectResponse(f"/applications/{again.row['app_id']}/bundle-receipt", 303)
        except cases.IntakeError as exc:        # a scan refused (node/services/scans.py)
            logger.info("bundle %s refused at %s: %s", code, st.code, exc)
            return await _page(request, st, code, 422, data, sittings.BundleError(exc.errors), token)
        except sittings.BundleError as exc:
            logger.info("bundle %s refused at %s: %s", code, st.code, exc)
            return await _page(request, st, code, 422, data, exc, token)
    return RedirectResponse(f"/applications/{apps[0]['id']}/bundle-receipt", 303)


def _receipt_context(st: Station, app: dict[str, Any]) -> dict[str, Any]:
    sitting = sittings.sitting_of(st, app)
    code = (app["body"].get("bundle") or {}).get("code")
    named = sittings.bundle(st, code) if code else None
    received: dict[str, dict[str, Any]] = {}
    for a in sitting:
        for m in a["body"]["materials"]:
            if m.get("received"):
                received.setdefault(m["code"], m)
    return {"sitting": sitting, "named": named, "received": list(received.values()),
            "departments": st.department_names(), "contact": st.contact(),
            "items": {a["item_code"]: st.item(a["item_code"]) for a in sitting},
            **printed_qr(doc_verify.bundle_printed(st, sitting))}


async def bundle_receipt(request: Request) -> Response:
    """The sitting's 受理回执: every item with its receipt number, department and promised date."""
    st, app = await application_of(request)
    if not app["body"].get("bundle"):
        return RedirectResponse(f"/applications/{app['id']}/document", 303)
    context = await run_in_threadpool(_receipt_context, st, app)
    return render(request, "node/bundle_receipt.html", official=True, st=st, app=app, body=app["body"], **context)


# JSON API ----------------------------------------------------------------------
APPLICANT_KEYS = ("name", "id_number", "phone", "address")


def _details(exc: sittings.BundleError, gettext: Any) -> dict[str, str]:
    """The errors named as the API's own fields: ``applicant.id_number``, ``items[1].fields.birth_date`` …"""
    details = apierrors.api_names(exc.common, gettext)
    for n, errors in enumerate(exc.per_item):
        for k, v in errors.items():
            name = (f"items[{n}].fields.{k[2:]}" if k.startswith("f_") else f"items[{n}]" if k == "application"
                    else "reason" if k == "reason" else f"items[{n}].{k}")
            details[name] = gettext(v)
    for n, names in enumerate(exc.missing):
        if names and f"items[{n}].materials" in details:
            details[f"items[{n}].materials"] += " " + gettext(N_("Missing: %(names)s.")) % {"names": "、".join(names)}
    return details


async def api_create(request: Request, user: dict[str, Any], payload: dict[str, Any], key: str | None) -> Response:
    """``POST /api/v1/applications`` with ``items``: ``{"items": [{"item", "fields"}], "bundle": code or
    null, "applicant", "materials", "scans", "decision", "reason"}`` → 201 ``{"bundle_id", "bundle",
    "applications": [...], "receipt_url"}``, one case per item; 422 naming ``items[n]…`` otherwise."""
    st = station(request)
    _ = gettext_for(locale_of(request))
    scope, fingerprint = "api:" + user["username"], idem.fingerprint(payload)
    first = await run_in_threadpool(idem.find, st.store, scope, key) if key is not None else None
    if first is not None:
        return await run_in_threadpool(replayed, request, st, first, fingerprint)
    items, code = payload.get("items"), payload.get("bundle")
    shape: dict[str, str] = {}
    if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("item"), str)
                                              and isinstance(i.get("fields", {}), dict) for i in items):
        shape["items"] = "a list of {item: code, fields: {...}}"
    if code is not None and not isinstance(code, str):
        shape["bundle"] = "a bundle code or null"
    applicant = payload.get("applicant", {})
    materials = payload.get("materials", [])
    if not isinstance(applicant, dict):
        shape["applicant"] = "an object {name, id_number, phone, address}"
    if not isinstance(materials, list) or not all(isinstance(m, str) for m in materials):
        shape["materials"] = "a list of material codes"
    if shape:
        logger.info("bundle API request refused: %s", shape)
        return api_error(422, "invalid", "; ".join(f"{k}: {v}" for k, v in shape.items()), shape)
    assert isinstance(items, list)
    if code is not None:
        found = await run_in_threadpool(sittings.bundle, st, code)
        if found is None or sorted(found["items"]) != sorted(i["item"] for i in items):
            message = _(N_("This station does not offer this bundle, or its items differ from the bundle's."))
            return api_error(422, "invalid", message, {"bundle": message})
    attached = await api_scans(request, payload)
    if isinstance(attached, Response):
        return attached
    common = {**{k: applicant.get(k, "") for k in APPLICANT_KEYS}, "materials": materials,
              "reason": payload.get("reason", "")}
    entries = [(i["item"], {**common, **{"f_" + k: v for k, v in i.get("fields", {}).items()}}) for i in items]

    def answer(first_id: str) -> dict[str, Any]:
        first_app = st.store.application(first_id) or {"body": {}}
        link = sittings.link_json(first_app["body"])
        apps = [st.store.application(i) for i in [first_id, *link["bundle_cases"]]]
        return {"bundle_id": link["bundle_id"], "bundle": link["bundle_code"],
                "applications": [app_json(st, a) for a in apps if a is not None],
                "receipt_url": f"/applications/{first_id}/bundle-receipt"}

    remember = None if key is None else idem.claimer(scope, key, fingerprint, answer)
    try:
        apps = await run_in_threadpool(lambda: sittings.take(st, entries, str(payload.get("decision", "")),
                                                            user["name"], attached, code=code, within=remember))
    except idem.Replay as exc:
        return await run_in_threadpool(replayed, request, st, exc.row, fingerprint)
    except sittings.BundleError as exc:
        details = _details(exc, _)
        logger.info("bundle API request refused at %s: %s", st.code, details)
        return api_error(422, "invalid", " ".join(dict.fromkeys(details.values())), details)
    return JSONResponse(await run_in_threadpool(answer, apps[0]["id"]), 201)
