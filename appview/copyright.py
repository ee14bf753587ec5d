"""Copyright claims (issue 14, "A copyright report takes the audio down until a counter-notice; both
sides are notified"), modelled on the notice-and-counter-notice process most hosts follow (for
example 17 U.S.C. § 512(c) and (g)):

1. **Claim.** A listener reports a track with ``fm.openmusic.moderation.defs#reasonCopyright``
   (``appview.moderation.create_report``). An operator who finds the claim complete opens a case
   from the moderation queue (``open_case``): our labeler issues ``audio-takedown`` on the track, so
   its audio stops being served (``audio_blocked``: HTTP 451) while the track, its page and its
   history stay. The artist and the claimant are notified (``appview.notifications``, reason
   ``copyrightClaim``).
2. **Counter-notice.** The artist may answer with a statement (``counter_notice``). The audio comes
   back ``RESTORE_AFTER_DAYS`` days later unless the claimant shows the operator they went to court:
   the label is issued again with ``exp`` at that time, so the return needs no job of ours and other
   AppViews following our labeler see the same date. Both sides are notified (``copyrightCounter``).
3. **Close.** An operator restores the audio early (the claim withdrawn or wrong: the label is
   negated, ``restored``) or upholds the claim after a counter-notice (the claimant went to court:
   the label is issued again without ``exp``, ``upheld``). Both sides are notified
   (``copyrightRestored``, ``copyrightUpheld``); a case whose ``restore_at`` passed notifies
   ``copyrightRestored`` at that time.

Every step writes the audit log (``moderation_action``: ``copyright``, ``counter-notice``,
``restore-audio``, ``uphold``). Cases are in ``copyright_case`` (migration ``0025_copyright``).
Any configured labeler's ``audio-takedown`` blocks the audio too, not only ours.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from appview.moderation import record_action
from core.db import now_iso, write_transaction
from firehose.labels import LabelError
from indexer.audio_takedown import AUDIO_DOWN_SQL, AUDIO_TAKEDOWN
from indexer.labeler_issue import LabelIssuer

#: The report reason a case answers.
REASON_COPYRIGHT = "fm.openmusic.moderation.defs#reasonCopyright"
#: Days between a counter-notice and the audio's return (§ 512(g)(2)(C): 10 to 14 business days).
RESTORE_AFTER_DAYS = 14
#: Shortest and longest counter-notice statement, characters.
MIN_STATEMENT_CHARS = 20
MAX_STATEMENT_CHARS = 5000
#: A case's states; ``down`` and ``countered`` are open.
STATUSES = ("down", "countered", "restored", "upheld")

class CopyrightError(ValueError):
    """A step the case cannot take (no open copyright report, a case already open, not the artist,
    a statement too short, a case in the wrong state)."""


def _at(now: datetime | None = None) -> str:
    when = now or datetime.now(UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def audio_blocked(db: Any, did: str, cid: str) -> bool:
    """Whether the audio blob ``cid`` of ``did`` belongs to a track whose audio is taken down
    (``indexer.audio_takedown.AUDIO_DOWN_SQL``): then no track of that account serves it, so a
    re-upload of the same file in a new record stays down too."""
    cur = await db.execute(f"SELECT 1 FROM track t WHERE t.did = ? AND t.audio_cid = ? AND "
                           f"{AUDIO_DOWN_SQL.format(alias='t')} LIMIT 1", (did, cid))
    return await cur.fetchone() is not None


async def audio_down_uris(db: Any, uris: list[str]) -> set[str]:
    """Which of the tracks ``uris`` cannot be played: their audio blob is taken down
    (``audio_blocked``'s rule, for a page of views in one statement; the partial index
    ``label_audio_takedown`` keeps it to the few labels of that value)."""
    if not uris:
        return set()
    marks = ",".join("?" * len(uris))
    cur = await db.execute(f"SELECT t.uri FROM track t WHERE t.uri IN ({marks}) AND {AUDIO_DOWN_SQL.format(alias='t')}",
                           uris)
    return {row[0] for row in await cur.fetchall()}


def audio_down(view: dict[str, Any]) -> bool:
    """Whether a track view cannot be played: ``audioTakenDown`` (``appview.views.track_views``), or
    a label ``audio-takedown`` not negated among its ``labels``."""
    if view.get("audioTakenDown"):
        return True
    return any(isinstance(lab, dict) and lab.get("val") == AUDIO_TAKEDOWN and not lab.get("neg")
               for lab in view.get("labels") or [])


def _case(row: Any) -> dict[str, Any]:
    (cid, track, artist, claimant, claim, reports, opened_at, opened_by, status, counter, countered_at,
     restore_at, closed_at) = tuple(row)[:13]
    return {"id": cid, "track": track, "artist": artist, "claimant": claimant, "claim": claim,
            "reports": json.loads(reports or "[]"), "openedAt": opened_at, "openedBy": opened_by, "status": status,
            "counterNotice": counter, "counteredAt": countered_at, "restoreAt": restore_at, "closedAt": closed_at,
            "audioDown": status == "upheld" or status == "down" or (status == "countered" and (restore_at or "") > _at())}


_COLUMNS = ("id, track, artist, claimant, claim, reports, opened_at, opened_by, status, counter_notice, "
            "countered_at, restore_at, closed_at")


async def get_case(db: Any, case_id: int) -> dict[str, Any] | None:
    """One case as ``{id, track, artist, claimant, claim, reports, openedAt, openedBy, status,
    counterNotice, counteredAt, restoreAt, closedAt, audioDown}``, or None."""
    cur = await db.execute(f"SELECT {_COLUMNS} FROM copyright_case WHERE id = ?", (case_id,))
    row = await cur.fetchone()
    return _case(row) if row else None


async def cases(db: Any, *, track: str | None = None, party: str | None = None, open_only: bool = False,
                limit: int = 50) -> list[dict[str, Any]]:
    """Cases, newest first: of the track ``track``, where ``party`` (a DID) is the artist or the
    claimant, with ``open_only`` only those still holding the audio (``down``, ``countered``,
    ``upheld``: an upheld claim can still be lifted). Each as ``get_case`` gives it, with
    ``title`` (the track's) and the parties' handles (``artistHandle``, ``claimantHandle``)."""
    conds, args = [], []
    if track:
        conds.append("c.track = ?")
        args.append(track)
    if party:
        conds.append("(c.artist = ? OR c.claimant = ?)")
        args += [party, party]
    if open_only:
        conds.append("c.status IN ('down', 'countered', 'upheld')")
    where = f"WHERE {' AND '.join(conds)}" if conds else ""
    cols = ", ".join(f"c.{c.strip()}" for c in _COLUMNS.split(","))
    cur = await db.execute(
        f"SELECT {cols}, t.title, aa.handle, ac.handle FROM copyright_case c LEFT JOIN track t ON t.uri = c.track "
        f"LEFT JOIN actor aa ON aa.did = c.artist LEFT JOIN actor ac ON ac.did = c.claimant {where} "
        "ORDER BY c.id DESC LIMIT ?", (*args, limit))
    out = []
    for row in await cur.fetchall():
        case = _case(row)
        case |= {"title": row[13], "artistHandle": row[14], "claimantHandle": row[15]}
        out.append(case)
    return out


async def open_case(issuer: LabelIssuer, operator: str, track: str, note: str | None = None) -> dict[str, Any]:
    """Open a case on ``track`` (an indexed track's AT-URI) for its open copyright reports, by
    ``operator`` (a DID the caller checked): take its audio down (our ``audio-takedown``), close
    those reports (``actioned``), write the audit log. The claimant is the sender of the oldest of
    them; the claim, their text. Returns the case (``get_case``). Raises ``CopyrightError`` when the
    track has no open copyright report, is not indexed, or has an open case already."""
    conn = issuer.conn
    async with issuer.lock:
        cur = await conn.execute("SELECT did FROM track WHERE uri = ?", (track,))
        row = await cur.fetchone()
        if row is None:
            raise CopyrightError("this track is not indexed")
        artist = row[0]
        cur = await conn.execute("SELECT id, reporter, reason FROM report WHERE subject = ? AND status = 'open' "
                                 "AND reason_type = ? ORDER BY id", (track, REASON_COPYRIGHT))
        reports = [tuple(r) for r in await cur.fetchall()]
        if not reports:
            raise CopyrightError("there is no open copyright report on this track")
        cur = await conn.execute("SELECT 1 FROM copyright_case WHERE track = ? AND status IN ('down', 'countered', "
                                 "'upheld')", (track,))
        if await cur.fetchone() is not None:
            raise CopyrightError("this track has an open copyright case already")
        try:
            seq, _label = await issuer.issue_locked(track, AUDIO_TAKEDOWN)
        except LabelError as exc:
            raise CopyrightError(str(exc)) from exc
        at = now_iso()
        ids = [r[0] for r in reports]
        note = (note or "").strip()[:MAX_STATEMENT_CHARS] or None
        async with write_transaction(conn):
            cur = await conn.execute(
                "INSERT INTO copyright_case (track, artist, claimant, claim, reports, opened_at, opened_by, status) "
                "VALUES (?,?,?,?,?,?,?, 'down') RETURNING id", (track, artist, reports[0][1], reports[0][2],
                                                                  json.dumps(ids), at, operator))
            case_id = int((await cur.fetchall())[0][0])
            action = await record_action(conn, operator, track, "copyright", AUDIO_TAKEDOWN, note, ids, seq, at)
            marks = ",".join("?" * len(ids))
            await conn.execute(f"UPDATE report SET status = 'actioned', action_id = ? WHERE id IN ({marks})",
                               (action, *ids))
    case = await get_case(conn, case_id)
    assert case is not None
    return case


async def counter_notice(issuer: LabelIssuer, artist: str, case_id: int, statement: str,
                         now: datetime | None = None, days: int = RESTORE_AFTER_DAYS) -> dict[str, Any]:
    """The artist's counter-notice on case ``case_id``: ``artist`` (the signed-in DID) must be the
    case's artist and the case ``down``; ``statement`` (``MIN_STATEMENT_CHARS`` to
    ``MAX_STATEMENT_CHARS``) says why the claim is wrong. The audio returns ``days`` days after
    ``now``: the label is issued again with that ``exp``. Returns the case. Raises
    ``CopyrightError``."""
    statement = (statement or "").strip()
    if len(statement) < MIN_STATEMENT_CHARS:
        raise CopyrightError(f"the statement needs at least {MIN_STATEMENT_CHARS} characters")
    if len(statement) > MAX_STATEMENT_CHARS:
        raise CopyrightError(f"the statement is longer than {MAX_STATEMENT_CHARS} characters")
    conn = issuer.conn
    async with issuer.lock:
        case = await get_case(conn, case_id)
        if case is None or case["artist"] != artist:
            raise CopyrightError("there is no such copyright case on your tracks")
        if case["status"] != "down":
            raise CopyrightError("this case takes no counter-notice now")
        moment = now or datetime.now(UTC)
        at, restore_at = _at(moment), _at(moment + timedelta(days=days))
        try:
            seq, _label = await issuer.issue_locked(case["track"], AUDIO_TAKEDOWN, exp=restore_at)
        except LabelError as exc:
            raise CopyrightError(str(exc)) from exc
        async with write_transaction(conn):
            await conn.execute("UPDATE copyright_case SET status = 'countered', counter_notice = ?, countered_at = ?, "
                               "restore_at = ? WHERE id = ?", (statement, at, restore_at, case_id))
            await record_action(conn, artist, case["track"], "counter-notice", AUDIO_TAKEDOWN, None, [], seq, at)
    case = await get_case(conn, case_id)
    assert case is not None
    return case


async def close_case(issuer: LabelIssuer, operator: str, case_id: int, outcome: str,
                     note: str | None = None) -> dict[str, Any]:
    """An operator closes case ``case_id``: ``outcome`` ``restored`` (the audio comes back now: our
    label negated; from ``down``, ``countered`` or ``upheld``, when a court or the claimant lifts
    it) or ``upheld`` (after a counter-notice, the
    claimant went to court: the label issued again without ``exp``). Writes the audit log
    (``restore-audio``, ``uphold``). Returns the case. Raises ``CopyrightError`` for an unknown
    outcome, a case not open, or upholding a case with no counter-notice."""
    if outcome not in ("restored", "upheld"):
        raise CopyrightError(f"unknown outcome {outcome[:40]!r}: restored or upheld")
    conn = issuer.conn
    async with issuer.lock:
        case = await get_case(conn, case_id)
        if case is None or case["status"] not in ("down", "countered", "upheld"):
            raise CopyrightError("this copyright case is not open")
        if outcome == "upheld" and case["status"] == "upheld":
            raise CopyrightError("this claim is upheld already")
        if outcome == "upheld" and case["status"] != "countered":
            raise CopyrightError("a claim is upheld only after a counter-notice; the audio is down already")
        try:
            seq, _label = await issuer.issue_locked(case["track"], AUDIO_TAKEDOWN, neg=outcome == "restored")
        except LabelError as exc:
            raise CopyrightError(str(exc)) from exc
        at = now_iso()
        note = (note or "").strip()[:MAX_STATEMENT_CHARS] or None
        async with write_transaction(conn):
            await conn.execute("UPDATE copyright_case SET status = ?, closed_at = ? WHERE id = ?",
                               (outcome, at, case_id))
            await record_action(conn, operator, case["track"], "restore-audio" if outcome == "restored" else "uphold",
                                AUDIO_TAKEDOWN, note, [], seq, at)
    case = await get_case(conn, case_id)
    assert case is not None
    return case
