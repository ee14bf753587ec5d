"""Copyright cases in units (``appview.copyright``, issue 14: "A copyright report takes the audio
down until a counter-notice; both sides are notified").

Proves: a case opens only on a track with an open copyright report, closes those reports and
audits the step; the audio blob is refused (``audio_blocked``) while the track stays listed, its
view carrying our ``audio-takedown`` label; a second case on the same track is refused while one
is open; the artist is notified with the claimant as author and the claimant the other way round;
a counter-notice is refused from anyone but the artist, when too short, or twice, and re-issues the
label with an expiry ``RESTORE_AFTER_DAYS`` ahead, notifying the claimant; once that time passes the
audio is served again with no job run, and both sides get ``copyrightRestored``; an operator can
restore early (a negation) or uphold after a counter-notice (a label with no expiry), never uphold
before one; every step is in the audit log. A play indexed while the audio is down earns nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from appview import copyright, queries
from appview.copyright import CopyrightError, audio_blocked, close_case, counter_notice, open_case
from appview.moderation import audit_log, create_report
from appview.notifications import list_notifications, unread_count
from core.db import now_iso
from tests.records import DID, LISTENER, play
from tests.test_indexer_units import PLAY, commit, create, rkey
from tests.test_reports import COPYRIGHT, SPAM, T1, T2, env, ref  # noqa: F401  (env is a fixture)

OPERATOR = "did:plc:operatoroperatoroperato"


async def audio_of(ctx, uri: str) -> str:
    cur = await ctx.conn.execute("SELECT audio_cid FROM track WHERE uri = ?", (uri,))
    return (await cur.fetchone())[0]


async def reasons(ctx, did: str) -> list[tuple[str, str]]:
    got = await list_notifications(ctx.views, did, {"limit": 50})
    return [(n["reason"], n["author"]["did"]) for n in got["notifications"]]


async def test_claim_takes_the_audio_down_and_notifies_both_sides(env):  # noqa: F811
    with pytest.raises(CopyrightError, match="no open copyright report"):
        await open_case(env.issuer, OPERATOR, T1)
    await create_report(env.conn, LISTENER, {"reasonType": SPAM, "subject": ref(T1)})
    with pytest.raises(CopyrightError, match="no open copyright report"):  # spam is not a claim
        await open_case(env.issuer, OPERATOR, T1)
    claim = await create_report(env.conn, LISTENER, {"reasonType": COPYRIGHT, "subject": ref(T1),
                                                     "reason": "my recording"})
    audio = await audio_of(env, T1)
    assert not await audio_blocked(env.conn, DID, audio)

    case = await open_case(env.issuer, OPERATOR, T1, note="matches the master")
    assert (case["status"], case["artist"], case["claimant"], case["claim"]) == ("down", DID, LISTENER, "my recording")
    assert case["reports"] == [claim["id"]] and case["audioDown"]
    assert await audio_blocked(env.conn, DID, audio)
    # the fixture's second track reuses the same file: a re-upload in a new record stays down too,
    # and its view says so, though the label is on the first
    assert await audio_of(env, T2) == audio and await audio_blocked(env.conn, DID, await audio_of(env, T2))
    again = (await queries.get_track(env.views, {"uri": T2}))["track"]
    assert again["audioTakenDown"] is True and "labels" not in again and copyright.audio_down(again)
    assert not await audio_blocked(env.conn, LISTENER, audio)  # the same file in another account's repo
    view = (await queries.get_track(env.views, {"uri": T1}))["track"]  # the track itself stays
    assert copyright.audio_down(view) and [lb["val"] for lb in view["labels"]] == ["audio-takedown"]
    cur = await env.conn.execute("SELECT reason_type, status FROM report ORDER BY id")
    assert [tuple(r) for r in await cur.fetchall()] == [(SPAM, "open"), (COPYRIGHT, "actioned")]
    with pytest.raises(CopyrightError, match="open copyright case already"):
        await create_report(env.conn, LISTENER, {"reasonType": COPYRIGHT, "subject": ref(T1)})
        await open_case(env.issuer, OPERATOR, T1)

    assert await reasons(env, DID) == [("copyrightClaim", LISTENER)]
    assert await reasons(env, LISTENER) == [("copyrightClaim", DID)]
    assert (await unread_count(env.views, DID))["count"] == 1
    log = await audit_log(env.conn)
    assert (log[0]["action"], log[0]["val"], log[0]["note"], log[0]["reports"]) == (
        "copyright", "audio-takedown", "matches the master", [claim["id"]])


async def test_counter_notice_brings_the_audio_back_after_the_wait(env):  # noqa: F811
    await create_report(env.conn, LISTENER, {"reasonType": COPYRIGHT, "subject": ref(T1)})
    case = await open_case(env.issuer, OPERATOR, T1)
    statement = "I wrote and recorded this song myself in 2019."
    with pytest.raises(CopyrightError, match="no such copyright case"):
        await counter_notice(env.issuer, LISTENER, case["id"], statement)
    with pytest.raises(CopyrightError, match="at least"):
        await counter_notice(env.issuer, DID, case["id"], "it is mine")
    # sent 15 days ago: the 14 days have passed, so the audio is back now without any job
    sent = datetime.now(UTC) - timedelta(days=15)
    countered = await counter_notice(env.issuer, DID, case["id"], statement, now=sent)
    assert countered["status"] == "countered" and countered["counterNotice"] == statement
    assert countered["restoreAt"].startswith((sent + timedelta(days=14)).strftime("%Y-%m-%dT%H:%M"))
    cur = await env.conn.execute("SELECT exp FROM label WHERE uri = ? AND val = 'audio-takedown'", (T1,))
    assert (await cur.fetchone())[0] == countered["restoreAt"]
    assert not countered["audioDown"] and not await audio_blocked(env.conn, DID, await audio_of(env, T1))
    with pytest.raises(CopyrightError, match="no counter-notice now"):
        await counter_notice(env.issuer, DID, case["id"], statement)
    # (the counter-notice is dated back, so the claim is the newest here)
    assert sorted(await reasons(env, LISTENER)) == [("copyrightClaim", DID), ("copyrightCounter", DID),
                                                    ("copyrightRestored", DID)]
    assert sorted(await reasons(env, DID)) == [("copyrightClaim", LISTENER), ("copyrightRestored", LISTENER)]


async def test_a_fresh_counter_notice_keeps_the_audio_down_until_the_operator_decides(env):  # noqa: F811
    await create_report(env.conn, LISTENER, {"reasonType": COPYRIGHT, "subject": ref(T1)})
    case = await open_case(env.issuer, OPERATOR, T1)
    with pytest.raises(CopyrightError, match="only after a counter-notice"):
        await close_case(env.issuer, OPERATOR, case["id"], "upheld")
    await counter_notice(env.issuer, DID, case["id"], "I own every right to this recording.")
    audio = await audio_of(env, T1)
    assert await audio_blocked(env.conn, DID, audio)  # 14 days to go
    upheld = await close_case(env.issuer, OPERATOR, case["id"], "upheld", note="court filing seen")
    assert upheld["status"] == "upheld" and upheld["audioDown"] and await audio_blocked(env.conn, DID, audio)
    cur = await env.conn.execute("SELECT exp, neg FROM label WHERE uri = ? AND val = 'audio-takedown'", (T1,))
    assert tuple(await cur.fetchone()) == (None, 0)
    with pytest.raises(CopyrightError, match="upheld already"):
        await close_case(env.issuer, OPERATOR, case["id"], "upheld")
    assert ("copyrightUpheld", DID) in await reasons(env, LISTENER)
    assert [c["id"] for c in await copyright.cases(env.conn, open_only=True)] == [case["id"]]
    # a court lifts it later: the operator restores the audio from the upheld case
    lifted = await close_case(env.issuer, OPERATOR, case["id"], "restored")
    assert lifted["status"] == "restored" and not await audio_blocked(env.conn, DID, audio)
    with pytest.raises(CopyrightError, match="not open"):
        await close_case(env.issuer, OPERATOR, case["id"], "restored")
    assert await copyright.cases(env.conn, open_only=True) == []
    assert [x["action"] for x in await audit_log(env.conn)] == ["restore-audio", "uphold", "counter-notice", "copyright"]


async def test_operator_restores_early(env):  # noqa: F811
    await create_report(env.conn, LISTENER, {"reasonType": COPYRIGHT, "subject": ref(T2)})
    case = await open_case(env.issuer, OPERATOR, T2)
    audio = await audio_of(env, T2)
    assert await audio_blocked(env.conn, DID, audio)
    with pytest.raises(CopyrightError, match="unknown outcome"):
        await close_case(env.issuer, OPERATOR, case["id"], "forgotten")
    restored = await close_case(env.issuer, OPERATOR, case["id"], "restored")
    assert restored["status"] == "restored" and not restored["audioDown"]
    assert not await audio_blocked(env.conn, DID, audio)
    view = (await queries.get_track(env.views, {"uri": T2}))["track"]
    assert not copyright.audio_down(view) and "audioTakenDown" not in view
    assert await reasons(env, DID) == [("copyrightRestored", LISTENER), ("copyrightClaim", LISTENER)]
    # a new claim on the same track can open a new case once the first is closed
    await create_report(env.conn, LISTENER, {"reasonType": COPYRIGHT, "subject": ref(T2)})
    again = await open_case(env.issuer, OPERATOR, T2)
    assert again["id"] != case["id"] and await audio_blocked(env.conn, DID, audio)


async def test_plays_while_the_audio_is_down_earn_nothing(env):  # noqa: F811
    """A play indexed while its track's audio is taken down is no stream; one indexed after the
    audio is back is (its decision is made once, when indexed)."""
    await create_report(env.conn, LISTENER, {"reasonType": COPYRIGHT, "subject": ref(T1)})
    case = await open_case(env.issuer, OPERATOR, T1)
    await env.ix.apply([commit(10, LISTENER, 1, create(PLAY, rkey(101), play(T1, "bafyreia", 90_000, createdAt=now_iso())))], 10)
    await close_case(env.issuer, OPERATOR, case["id"], "restored")
    await env.ix.apply([commit(11, LISTENER, 2, create(PLAY, rkey(102), play(T1, "bafyreia", 90_000, createdAt=now_iso())))], 11)
    cur = await env.conn.execute("SELECT uri, stream FROM play ORDER BY uri")
    assert [r[1] for r in await cur.fetchall()] == [0, 1]
