"""Reports, the operator's moderation queue, and our labeler's XRPC endpoints (issue 14, "Reports").

- ``com.atproto.moderation.createReport`` (procedure; service-auth JWT with ``lxm`` = the method,
  verified like ``appview.notifications``' methods: the reporter is the token's issuer): input
  ``{reasonType, reason?, subject}``, where ``reasonType`` is one of ``REASONS`` (the
  ``com.atproto.moderation.defs`` tokens and ours, ``fm.openmusic.moderation.defs#reasonCopyright``
  and ``#reasonMisleadingAi``) and ``subject`` an account (``com.atproto.admin.defs#repoRef``:
  ``{did}``) or a track, album or playlist (``com.atproto.repo.strongRef``: ``{uri, cid}``) that we
  index. Output as the lexicon says: ``{id, reasonType, reason?, subject, reportedBy, createdAt}``.
  Anything else: 400 ``InvalidRequest`` saying what is wrong. Stored in ``report`` (migration
  ``0024_reports``). The web app calls ``create_report`` in-process with the signed-in DID.
- ``com.atproto.label.queryLabels`` (query, public): ``uriPatterns`` (required; exact or a prefix
  ending in ``*``), ``sources`` (our DID or nothing matches), ``limit`` (1-250, default 50),
  ``cursor``: the current state of our labels on those subjects (``indexer.labeler_issue.query``),
  ``sig`` as ``{"$bytes"}``.
- ``com.atproto.label.subscribeLabels`` (WebSocket, event-stream spec): with ``cursor`` the labels
  issued after it, one ``#labels`` frame ``{seq, labels: [label]}`` each, then live; without, live
  only; a cursor past our newest label: a ``FutureCursor`` error frame, then close.
- The queue (``open_subjects``, ``audit_log``) and its actions (``moderate``: take down, label,
  negate a label we issued, dismiss), each writing one ``moderation_action`` row; for
  ``web.moderation``, which checks that the caller is an operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import cbrrr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from appview.xrpc import XrpcError, decode_cursor, encode_cursor, invalid
from core.db import now_iso, write_transaction
from core.identity import valid_did
from core.lexicons import ALBUM, PLAYLIST, PLYR_TRACK, TRACK
from firehose.labels import LabelError
from indexer import labeler_issue
from indexer.labeler_issue import ISSUABLE, LabelIssuer
from payments.auth import AuthError

if TYPE_CHECKING:
    from appview.deps import AppViewDeps

log = logging.getLogger("openmusic.appview")
CREATE_REPORT = "com.atproto.moderation.createReport"
QUERY_LABELS = "com.atproto.label.queryLabels"
SUBSCRIBE_LABELS = "com.atproto.label.subscribeLabels"
REPO_REF = "com.atproto.admin.defs#repoRef"
STRONG_REF = "com.atproto.repo.strongRef"
#: The report reasons we take: com.atproto.moderation.defs#reasonType's known values, and ours
#: (lexicon fm.openmusic.moderation.defs).
REASONS = tuple(f"com.atproto.moderation.defs#{r}" for r in (
    "reasonSpam", "reasonViolation", "reasonMisleading", "reasonSexual", "reasonRude", "reasonOther",
    "reasonAppeal")) + ("fm.openmusic.moderation.defs#reasonCopyright", "fm.openmusic.moderation.defs#reasonMisleadingAi")
#: Characters of a report's text (the lexicon's maxGraphemes).
MAX_REASON_CHARS = 2000
#: Reportable record collections -> (the kind, the table indexing it).
KINDS = {TRACK: ("track", "track"), PLYR_TRACK: ("track", "track"), ALBUM: ("album", "album"),
         PLAYLIST: ("playlist", "playlist")}
#: The queue's actions.
ACTIONS = ("takedown", "label", "negate", "dismiss")
#: Subjects per page of the queue; actions shown in the audit log.
QUEUE_PAGE = 20
AUDIT_SHOWN = 50
#: Seconds a subscribeLabels stream waits for a new label before looking in the table again
#: (labels issued by another process appear within this).
POLL_S = 1.0


class ModerationError(ValueError):
    """An action the queue cannot take (unknown action or label, no open report, nothing to negate)."""


# -- reports ---------------------------------------------------------------------------------------

async def subject_of(db: Any, subject: Any) -> tuple[str, str | None, str]:
    """A createReport ``subject`` -> (DID or AT-URI, cid or None, kind: ``account``, ``track``,
    ``album``, ``playlist``), checked against the index. Raises 400 ``InvalidRequest``."""
    if not isinstance(subject, dict):
        raise invalid("subject must be a com.atproto.admin.defs#repoRef or a com.atproto.repo.strongRef")
    kind = subject.get("$type")
    if kind == REPO_REF or (kind is None and "did" in subject):
        did = subject.get("did")
        if not isinstance(did, str) or not valid_did(did):
            raise invalid("subject.did must be a DID")
        cur = await db.execute("SELECT 1 FROM actor WHERE did = ?", (did,))
        if await cur.fetchone() is None:
            raise invalid(f"the account {did[:100]} is not known here")
        return did, None, "account"
    if kind == STRONG_REF or (kind is None and "uri" in subject):
        uri, cid = subject.get("uri"), subject.get("cid")
        if not isinstance(uri, str) or not isinstance(cid, str) or not uri.startswith("at://"):
            raise invalid("a strongRef subject needs an AT-URI uri and a cid")
        parts = uri[len("at://"):].split("/")
        if len(parts) != 3 or parts[1] not in KINDS:
            raise invalid("only a track, an album or a playlist can be reported (or an account, as a repoRef)")
        name, table = KINDS[parts[1]]
        cur = await db.execute(f"SELECT 1 FROM {table} WHERE uri = ?", (uri,))
        if await cur.fetchone() is None:
            raise invalid(f"the {name} {uri[:200]} is not indexed here")
        return uri, cid, name
    raise invalid(f"unknown subject type {str(kind)[:100]!r}: a repoRef or a strongRef")


async def create_report(conn: Any, reporter: str, body: Any, now: str | None = None) -> dict[str, Any]:
    """``com.atproto.moderation.createReport`` for ``reporter`` (a DID, already authenticated), over a
    writer connection ``conn`` that autocommits. ``body``: the input object. Returns the output
    ``{id, reasonType, reason?, subject, reportedBy, createdAt}``. Raises 400 ``InvalidRequest`` for
    an unknown reason, a reason text over ``MAX_REASON_CHARS``, a subject that is neither kind or
    that we do not index."""
    if not isinstance(body, dict):
        raise invalid("the input must be an object")
    reason_type = body.get("reasonType")
    if reason_type not in REASONS:
        raise invalid(f"unknown reasonType {str(reason_type)[:100]!r}: one of {', '.join(REASONS)}")
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise invalid("reason must be a string")
    reason = (reason or "").strip() or None
    if reason and len(reason) > MAX_REASON_CHARS:
        raise invalid(f"reason is longer than {MAX_REASON_CHARS} characters")
    uri, cid, kind = await subject_of(conn, body.get("subject"))
    now = now or labeler_issue.atproto_now()
    cur = await conn.execute(
        "INSERT INTO report (reporter, reason_type, reason, subject, subject_cid, subject_kind, created_at) "
        "VALUES (?,?,?,?,?,?,?) RETURNING id", (reporter, reason_type, reason, uri, cid, kind, now))
    report_id = (await cur.fetchall())[0][0]
    subject = {"$type": REPO_REF, "did": uri} if kind == "account" else {"$type": STRONG_REF, "uri": uri, "cid": cid}
    out: dict[str, Any] = {"id": report_id, "reasonType": reason_type, "subject": subject,
                           "reportedBy": reporter, "createdAt": now}
    if reason:
        out["reason"] = reason
    return out


# -- the queue -------------------------------------------------------------------------------------

async def describe(db: Any, uri: str) -> dict[str, Any]:
    """What the queue shows of a subject: ``{uri, kind, title, did, handle, hidden}`` (``title``: the
    record's title or the account's display name; ``hidden``: the label level in force; None when
    not indexed any more). Read from the tables, not the views: taken-down subjects stay visible here."""
    if uri.startswith("did:"):
        did, kind, title, hidden = uri, "account", None, None
        cur = await db.execute("SELECT p.display_name, a.hidden FROM actor a LEFT JOIN profile p ON p.did = a.did "
                               "WHERE a.did = ?", (uri,))
        if row := await cur.fetchone():
            title, hidden = row[0], row[1]
    else:
        parts = uri[len("at://"):].split("/")
        did = parts[0]
        kind, table = KINDS.get(parts[1] if len(parts) > 1 else "", ("record", ""))
        title = hidden = None
        if table:
            cur = await db.execute(f"SELECT title, hidden FROM {table} WHERE uri = ?", (uri,))
            if row := await cur.fetchone():
                title, hidden = row[0], row[1]
    cur = await db.execute("SELECT handle FROM actor WHERE did = ?", (did,))
    row = await cur.fetchone()
    return {"uri": uri, "kind": kind, "title": title, "did": did, "handle": row[0] if row else None, "hidden": hidden}


async def open_subjects(db: Any, src: str, cursor: str | None = None, limit: int = QUEUE_PAGE) -> dict[str, Any]:
    """The queue: subjects with open reports, the most recently reported first, ``limit`` a page
    (``cursor`` from the previous page). Returns ``{subjects: [{subject (describe), reports: [{id,
    reporter, reporterHandle, reasonType, reason, createdAt}], labels: [our labels in force]}],
    cursor?}``. Raises 400 ``InvalidRequest`` for a malformed cursor."""
    after = decode_cursor(cursor, (str, str))
    cond, args = ("HAVING (MAX(created_at), subject) < (?, ?)", [after[0], after[1]]) if after else ("", [])
    cur = await db.execute(f"SELECT subject, MAX(created_at) AS latest FROM report WHERE status = 'open' "
                           f"GROUP BY subject {cond} ORDER BY latest DESC, subject DESC LIMIT ?", (*args, limit + 1))
    rows = [tuple(r) for r in await cur.fetchall()]
    page = rows[:limit]
    subjects = []
    for uri, _latest in page:
        cur = await db.execute(
            "SELECT r.id, r.reporter, a.handle, r.reason_type, r.reason, r.created_at FROM report r "
            "LEFT JOIN actor a ON a.did = r.reporter WHERE r.status = 'open' AND r.subject = ? "
            "ORDER BY r.created_at DESC, r.id DESC LIMIT 100", (uri,))
        reports = [{"id": r[0], "reporter": r[1], "reporterHandle": r[2], "reasonType": r[3], "reason": r[4],
                    "createdAt": r[5]} for r in await cur.fetchall()]
        subjects.append({"subject": await describe(db, uri), "reports": reports,
                         "labels": await labeler_issue.in_force(db, src, uri)})
    out: dict[str, Any] = {"subjects": subjects}
    if len(rows) > limit:
        out["cursor"] = encode_cursor(page[-1][1], page[-1][0])
    return out


async def labelled_subjects(db: Any, src: str) -> list[dict[str, Any]]:
    """Subjects carrying a label we issued that is in force (newest first, at most 200 labels), so
    an operator can take one back: ``[{subject (describe), labels: [{seq, uri, val, cts}]}]``."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for label in await labeler_issue.in_force(db, src):
        grouped.setdefault(label["uri"], []).append(label)
    return [{"subject": await describe(db, uri), "labels": labels} for uri, labels in grouped.items()]


async def audit_log(db: Any, limit: int = AUDIT_SHOWN) -> list[dict[str, Any]]:
    """The newest ``limit`` moderation actions: ``[{id, operator, operatorHandle, at, subject,
    action, val, note, reports: [report id]}]``."""
    cur = await db.execute(
        "SELECT m.id, m.operator, a.handle, m.at, m.subject, m.action, m.val, m.note, m.reports "
        "FROM moderation_action m LEFT JOIN actor a ON a.did = m.operator ORDER BY m.id DESC LIMIT ?", (limit,))
    return [{"id": r[0], "operator": r[1], "operatorHandle": r[2], "at": r[3], "subject": r[4], "action": r[5],
             "val": r[6], "note": r[7], "reports": json.loads(r[8] or "[]")} for r in await cur.fetchall()]


async def record_action(conn: Any, operator: str, subject: str, action: str, val: str | None, note: str | None,
                        reports: list[int], label_seq: int | None, at: str) -> int:
    """Write one row of the audit log (``moderation_action``, migration 0024) on ``conn``, inside the
    caller's transaction; returns its id. Used by ``moderate`` and ``appview.copyright``."""
    cur = await conn.execute(
        "INSERT INTO moderation_action (operator, at, subject, action, val, note, reports, label_seq) "
        "VALUES (?,?,?,?,?,?,?,?) RETURNING id", (operator, at, subject, action, val, note, json.dumps(reports),
                                                 label_seq))
    return int((await cur.fetchall())[0][0])


async def moderate(issuer: LabelIssuer, operator: str, subject: str, action: str, val: str | None = None,
                   note: str | None = None) -> dict[str, Any]:
    """One operator action on ``subject`` (a DID or an AT-URI), by ``operator`` (a DID the caller
    checked is an operator), written to the audit log (``moderation_action``):

    - ``takedown``: our ``!takedown`` label; closes the subject's open reports (``actioned``);
    - ``label``: our label ``val`` (one of ``ISSUABLE``); closes them too;
    - ``negate``: takes back our label ``val`` in force on the subject (a negation; the subject
      comes back when nothing else hides it); leaves open reports open;
    - ``dismiss``: closes the open reports (``dismissed``) without a label.

    Labels are issued through ``issuer`` (signed, stored, applied at once). Returns the action row
    (as ``audit_log`` shows it). Raises ``ModerationError`` for an unknown action or label, a
    dismissal with no open report, or a negation of a label not in force."""
    if action not in ACTIONS:
        raise ModerationError(f"unknown action {action[:40]!r}")
    if not (valid_did(subject) or subject.startswith("at://")):
        raise ModerationError("the subject is neither an account nor a record")
    conn = issuer.conn
    async with issuer.lock:  # every write on the issuer's connection, one at a time
        cur = await conn.execute("SELECT id FROM report WHERE subject = ? AND status = 'open' ORDER BY id", (subject,))
        open_ids = [r[0] for r in await cur.fetchall()]
        seq = None
        if action == "takedown":
            val = "!takedown"
        elif action == "dismiss":
            val = None
            if not open_ids:
                raise ModerationError("there is no open report on this subject to dismiss")
        elif val not in ISSUABLE:
            raise ModerationError(f"unknown label {str(val)[:40]!r}: one of {', '.join(ISSUABLE)}")
        if action == "negate":
            if not any(lab["val"] == val for lab in await labeler_issue.in_force(conn, issuer.did, subject)):
                raise ModerationError(f"we have no label {val} in force on this subject")
            open_ids = []
        if val is not None:
            try:
                seq, _label = await issuer.issue_locked(subject, val, neg=action == "negate")
            except LabelError as exc:
                raise ModerationError(str(exc)) from exc
        at = now_iso()
        note = (note or "").strip()[:MAX_REASON_CHARS] or None
        async with write_transaction(conn):
            action_id = await record_action(conn, operator, subject, action, val, note, open_ids, seq, at)
            if open_ids:
                marks = ",".join("?" * len(open_ids))
                await conn.execute(f"UPDATE report SET status = ?, action_id = ? WHERE id IN ({marks})",
                                   ("dismissed" if action == "dismiss" else "actioned", action_id, *open_ids))
    return {"id": action_id, "operator": operator, "at": at, "subject": subject, "action": action, "val": val,
            "note": note, "reports": open_ids, "labelSeq": seq}


# -- over XRPC -------------------------------------------------------------------------------------

def _src(rt: AppViewDeps) -> str:
    return rt.settings.service_did_resolved


async def _create_report(rt: AppViewDeps, request: Request) -> Response:
    if rt.auth is None:
        raise XrpcError(501, "MethodNotImplemented", "this AppView verifies no service-auth JWTs")
    caller = await rt.auth.verify(request.headers.get("authorization"), CREATE_REPORT)
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise invalid("the input must be application/json")
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError) as exc:
        raise invalid("the input is not JSON") from exc
    return JSONResponse(await create_report(rt.auth.db, caller, body))


async def _query_labels(rt: AppViewDeps, request: Request) -> Response:
    q = request.query_params
    patterns = q.getlist("uriPatterns")
    if not patterns or any(not p or len(p) > 8192 for p in patterns) or len(patterns) > 100:
        raise invalid("uriPatterns is required: 1 to 100 AT-URIs or DIDs, each exact or ending in *")
    sources = q.getlist("sources")
    try:
        limit = int(q.get("limit", "50"))
        cursor = int(q.get("cursor") or 0)
    except ValueError as exc:
        raise invalid("limit and cursor must be integers") from exc
    if not 1 <= limit <= 250 or cursor < 0:
        raise invalid("limit must be 1 to 250 and cursor not negative")
    src = _src(rt)
    found = [] if sources and src not in sources else await labeler_issue.query(rt.reader, src, patterns, cursor, limit)
    out: dict[str, Any] = {"labels": [labeler_issue.label_json(label) for _seq, label in found]}
    if len(found) == limit:
        out["cursor"] = str(found[-1][0])
    return JSONResponse(out)


#: nsid -> (HTTP method, handler(runtime, request) -> response)
MODERATION_METHODS: dict[str, tuple[str, Callable[[AppViewDeps, Request], Awaitable[Response]]]] = {
    CREATE_REPORT: ("POST", _create_report),
    QUERY_LABELS: ("GET", _query_labels),
}


async def moderation_method(rt: AppViewDeps, nsid: str, request: Request) -> Response:
    """Serve ``createReport`` (POST, service auth: 401 ``AuthRequired``/``InvalidToken``/
    ``ExpiredToken``) or ``queryLabels`` (GET or HEAD); another HTTP method: 405. Errors as XRPC
    error bodies."""
    try:
        method, handler = MODERATION_METHODS[nsid]
        if request.method != method and not (method == "GET" and request.method == "HEAD"):
            raise XrpcError(405, "InvalidRequest", f"{nsid} takes {method}")
        return await handler(rt, request)
    except AuthError as exc:
        resp = XrpcError(401, exc.error, str(exc)).response()
        resp.headers["WWW-Authenticate"] = 'Bearer realm="openmusic"'
        return resp
    except XrpcError as exc:
        return exc.response()
    except Exception:
        log.exception("%s failed", nsid)
        return XrpcError(500, "InternalServerError", "internal error").response()


def frame(header: dict[str, Any], body: dict[str, Any]) -> bytes:
    """One event-stream frame: the DAG-CBOR header, then the body."""
    return cbrrr.encode_dag_cbor(header) + cbrrr.encode_dag_cbor(body)


async def subscribe_labels(rt: AppViewDeps, ws: WebSocket) -> None:
    """``com.atproto.label.subscribeLabels`` (module docstring). Ends when the client goes away."""
    await ws.accept()
    src = _src(rt)
    raw = ws.query_params.get("cursor")
    newest = await labeler_issue.last_seq(rt.reader, src)
    if raw is not None and not raw.isdigit():
        await ws.send_bytes(frame({"op": -1}, {"error": "InvalidRequest", "message": "cursor must be an integer"}))
        await ws.close()
        return
    cursor = newest if raw is None else int(raw)
    if cursor > newest:
        await ws.send_bytes(frame({"op": -1}, {"error": "FutureCursor", "message": "cursor is ahead of our labels"}))
        await ws.close()
        return
    closed = asyncio.ensure_future(ws.receive())
    try:
        while not closed.done():
            for seq, label in await labeler_issue.issued_after(rt.reader, src, cursor):
                await ws.send_bytes(frame({"op": 1, "t": "#labels"}, {"seq": seq, "labels": [label]}))
                cursor = seq
            waiter = asyncio.ensure_future(labeler_issue.wait_for_new(POLL_S))
            await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if closed.done():
                if closed.result().get("type") == "websocket.disconnect":
                    break
                closed = asyncio.ensure_future(ws.receive())  # a client's stray message: ignored
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        closed.cancel()
        with contextlib.suppress(Exception):
            await ws.close()


def moderation_routes(rt: AppViewDeps) -> list[BaseRoute]:
    """The WebSocket route of ``subscribeLabels`` (the queries and procedures go through ``/xrpc/{nsid}``)."""
    async def endpoint(ws: WebSocket) -> None:
        await subscribe_labels(rt, ws)
    return [WebSocketRoute(f"/xrpc/{SUBSCRIBE_LABELS}", endpoint)]
