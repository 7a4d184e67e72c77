"""The station's side of decision documents: the county's written decision as it signed it (read
from the stored ``case.decided`` event), the result documents it lists (downloaded in the sync
pass, resumably, and counted only once they verify against the signed list), and the list of
documents a case has for the pages and the API (PROTOCOL.md §7 "Result documents").

A result document is received exactly when ``DATA/docs/<sha256>.sealed`` exists: it is renamed into
place only after it decrypted with the station's key and hashed to the digest the signed decision
lists (sync/docs.py). It stays sealed to the station's key on disk. Blocking: call from threads.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from crypto import envelope
from crypto.errors import CryptoError
from crypto.keys import Identity
from node.services import sittings as bundles
from node.services import verify as doc_verify
from sync import docs, log
from sync.law import decisions
from sync.law.errors import RuleError
from sync.law.transitions import Status

if TYPE_CHECKING:
    from node.services.desk import Desk

logger = logging.getLogger("lastmile.node")

#: the station's own document of each intake decision (templates/node/document.html)
INTAKE_DOCUMENT = {"application.accepted": "receipt", "application.correction_notice": "correction_notice",
                   "application.refused": "refusal"}


def folder(st: Desk) -> Path:
    return st.settings.data / "docs"


def decision_event(st: Desk, app: dict[str, Any]) -> log.Event | None:
    """The county's ``case.decided`` event the application's row shows (the latest for it that was
    applied), as the county signed it; None if undecided."""
    if not app.get("decision"):
        return None
    with st.store.lock:
        rows = st.store.conn.execute(
            "SELECT seq, body FROM _sync_events WHERE stream = ? AND kind = 'case.decided'"
            " AND json_extract(body, '$.id') = ? ORDER BY seq DESC", (log.down(st.code), app["id"])).fetchall()
        for seq, raw in rows:
            body = json.loads(raw)
            if body.get("at") == app.get("decided_at") and body.get("decision") == app.get("decision"):
                return log.get(st.store.conn, log.down(st.code), seq)
    return None


def decision_body(st: Desk, app: dict[str, Any]) -> dict[str, Any] | None:
    """The body of the county's decision the application's row shows (``decision_event``); None if undecided."""
    ev = decision_event(st, app)
    return dict(ev.body) if ev is not None else None


def received(st: Desk, sha: str) -> bool:
    return decisions.SHA.fullmatch(sha) is not None and (folder(st) / f"{sha}.sealed").exists()


def pending(st: Desk) -> list[dict[str, Any]]:
    """Result documents of applied decisions that have not arrived yet, oldest decision first."""
    with st.store.lock:
        rows = st.store.conn.execute(
            "SELECT e.body FROM _sync_events e JOIN applications a ON a.id = json_extract(e.body, '$.id')"
            " WHERE e.stream = ? AND e.kind = 'case.decided' AND json_extract(e.body, '$.attachments') IS NOT NULL"
            " AND a.decided_at = json_extract(e.body, '$.at') ORDER BY e.seq", (log.down(st.code),)).fetchall()
    out, seen = [], set()
    for (raw,) in rows:
        body = json.loads(raw)
        for a in body.get("attachments") or []:
            if a["sha256"] not in seen and not received(st, a["sha256"]):
                seen.add(a["sha256"])
                out.append({**a, "app_id": body["id"]})
    return out


def held_identities(st: Desk) -> list[Identity]:
    """The station's current identity and the retired ones (a key rotation after the county sealed)."""
    out = [st.me]
    retired = st.settings.data / "keys.retired"
    if retired.is_dir():
        for d in sorted(retired.iterdir()):
            try:
                out.append(Identity.load(d))
            except (OSError, ValueError, CryptoError):
                continue
    return out


def fetch_pending(st: Desk, http: httpx.Client, url: str | None = None) -> int:
    """Download the result documents still coming; return how many arrived. A document the county
    refuses or that does not verify keeps its error (``doc_error/<sha>`` in the sync state) and stays
    "still coming"; the next goes on. A link failure (Retryable) stops the pass."""
    skew = int(st.store.sync_status("clock_skew_s") or 0)
    got = 0
    for a in pending(st):
        sha = a["sha256"]
        try:
            docs.download(http, url or st.county.url, me=st.me, held=held_identities(st), station=st.code,
                          sha=sha, size=int(a["size"]), folder=folder(st), clock=lambda: time.time() - skew)
        except docs.DocRefused as exc:
            logger.warning("result document %s of %s refused: %s", sha[:12], a["app_id"], exc)
            with st.store.transaction() as db:
                log.set_status(db, f"{docs.DOC_ERROR}{sha}", f"{exc.code}: {exc}"[:500])
            continue
        with st.store.transaction() as db:
            if log.get_status(db, f"{docs.DOC_ERROR}{sha}"):
                log.set_status(db, f"{docs.DOC_ERROR}{sha}", "")
        got += 1
    return got


def attachment(st: Desk, app: dict[str, Any], sha: str) -> tuple[dict[str, Any], bytes] | None:
    """A received result document of the application's decision: (its listing, its bytes). The type
    it is served as is the one the signed decision lists, checked against the bytes."""
    body = decision_body(st, app) or {}
    listed = next((a for a in body.get("attachments") or [] if a.get("sha256") == sha), None)
    if listed is None or not received(st, sha):
        return None
    sealed = (folder(st) / f"{sha}.sealed").read_bytes()
    data = envelope.open_blob(sealed, recipient=held_identities(st), digest=sha)
    if docs.sniff(data) != listed.get("mime"):
        logger.warning("result document %s of %s is not the %s its decision lists; not served", sha[:12],
                       app["id"], listed.get("mime"))
        return None
    return listed, data


def errors(st: Desk) -> dict[str, str]:
    with st.store.lock:
        rows = st.store.conn.execute("SELECT name, value FROM _sync_status WHERE name LIKE ? AND value != ''",
                                     (docs.DOC_ERROR + "%",)).fetchall()
    return {str(r[0])[len(docs.DOC_ERROR):]: str(r[1]) for r in rows}


def listing(st: Desk, app: dict[str, Any]) -> list[dict[str, Any]]:
    """The documents of a case, for the page and the API: the station's own intake document, the
    sitting's receipt (一件事一次办), the county's written decision or correction request, and each
    result document with whether it has arrived. Each printed one with the ``qr_text`` and
    ``verify_code`` it prints (node/services/verify.py)."""
    base = f"/applications/{app['id']}"
    out = [{"kind": INTAKE_DOCUMENT.get(app["kind"], "receipt"), "name": "", "url": f"{base}/document",
            "complete": True, **doc_verify.intake_printed(st, app)}]
    if isinstance(app["body"], dict) and app["body"].get("bundle"):
        out.append({"kind": "bundle_receipt", "name": "", "url": f"{base}/bundle-receipt", "complete": True,
                    **doc_verify.bundle_printed(st, bundles.sitting_of(st, app))})
    ev = decision_event(st, app)
    if ev is None:
        return out
    body = ev.body
    if body["decision"] in ("approve", "reject"):
        out.append({"kind": "approval_notice" if body["decision"] == "approve" else "rejection_decision",
                    "name": "", "url": f"{base}/decision-document", "complete": True,
                    **doc_verify.decision_printed(st, app, ev)})
    elif app["status"] == Status.CORRECTION_REQUESTED:
        out.append({"kind": "correction_request", "name": "", "url": f"{base}/correction-notice", "complete": True,
                    **doc_verify.decision_printed(st, app, ev)})
    for a in body.get("attachments") or []:
        out.append({"kind": "attachment", "name": a["name"], "url": f"{base}/attachments/{a['sha256']}",
                    "complete": received(st, a["sha256"]), "sha256": a["sha256"], "mime": a["mime"],
                    "size": a["size"]})
    return out


def decision_json(st: Desk, app: dict[str, Any]) -> dict[str, Any] | None:
    """The ``decision`` object of the application API."""
    if not app.get("decision"):
        return None
    body = decision_body(st, app) or {}
    return {"decision": app["decision"], "note": app["decision_note"], "reason": body.get("reason"),
            "basis": body.get("basis"), "appeal": body.get("appeal"), "by": app["decided_by"], "at": app["decided_at"],
            "county_key": st.store.decision_key(log.down(st.code), app["id"]),
            "attachments": [{**a, "complete": received(st, a["sha256"])} for a in body.get("attachments") or []]}


def waiting(st: Desk) -> list[dict[str, Any]]:
    """The result documents still coming, for the sync panel and ``/api/v1/status``: ``app_id``,
    ``receipt_no``, ``name``, ``sha256``, ``size`` and ``error`` (the last refusal, or "")."""
    errs = errors(st)
    out = []
    for a in pending(st):
        app = st.store.application(a["app_id"]) or {}
        out.append({"app_id": a["app_id"], "receipt_no": app.get("receipt_no", ""), "name": a["name"],
                    "sha256": a["sha256"], "size": a["size"], "error": errs.get(a["sha256"], "")})
    return out


def catalog_appeal(st: Desk) -> dict[str, Any] | None:
    """The appeal block of the station's catalogue if it is a valid one; None for an older catalogue
    without one (or a malformed one): the documents then print the generic wording and say so."""
    try:
        return decisions.check_appeal(st.store.catalog().get("appeal"))
    except RuleError:
        return None
