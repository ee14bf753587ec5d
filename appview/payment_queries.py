"""Public payment queries: ``fm.openmusic.payment.getTips`` and ``payment.getSettlement``
(views from ``fm.openmusic.payment.defs``). A settlement is shown only once its signature and its
match with the tip were verified (``payments.broker.SettlementVerifier``); tips from accounts
that are not active are not shown."""

from __future__ import annotations

import json
from typing import Any

from appview.views import ACTIVE, ViewContext, resolve_actor
from appview.xrpc import decode_cursor, encode_cursor, invalid, not_found
from core.lexicons import SETTLEMENT, TIP, is_track_uri

_SETTLEMENT_COLS = "s.uri, s.cid, s.did, s.status, s.reason, s.amount, s.currency, s.recipients, s.settled_at, r.json"


def settlement_view(row: Any) -> dict[str, Any]:
    """``#settlementView`` from a row of ``_SETTLEMENT_COLS``."""
    uri, cid, broker, status, reason, amount, currency, recipients, settled_at, raw = row
    view = {"uri": uri, "cid": cid, "broker": broker, "status": status, "amount": amount, "currency": currency,
            "recipients": json.loads(recipients), "verified": True, "settledAt": settled_at, "record": json.loads(raw)}
    if reason:
        view["reason"] = reason
    return view


async def _settlements(ctx: ViewContext, tip_uris: list[str]) -> dict[str, dict[str, Any]]:
    if not tip_uris:
        return {}
    marks = ",".join("?" * len(tip_uris))
    cur = await ctx.db.execute(
        f"SELECT s.tip_uri, {_SETTLEMENT_COLS} FROM settlement s JOIN record r ON r.uri = s.uri "
        f"WHERE s.tip_uri IN ({marks}) AND s.verified = 1 ORDER BY s.settled_at", tip_uris)
    return {row[0]: settlement_view(row[1:]) for row in await cur.fetchall()}  # the latest wins


def _tip_view(row: Any) -> dict[str, Any]:
    uri, cid, did, subject, track_uri, amount, currency, message, created_at = row[:9]
    view = {"uri": uri, "cid": cid, "payer": did, "subject": subject, "amount": amount, "currency": currency,
            "createdAt": created_at}
    if track_uri:
        view["track"] = track_uri
    if message:
        view["message"] = message
    return view


_TIP_COLS = "t.uri, t.cid, t.did, t.subject, t.track_uri, t.amount, t.currency, t.message, t.created_at, t.sort_at"


async def get_tips(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.payment.getTips: by ``artist`` (DID or handle), ``track`` (AT-URI) or ``payer`` (who
    gave them), newest first."""
    if sum(bool(p.get(k)) for k in ("artist", "track", "payer")) != 1:
        raise invalid("give exactly one of artist, track or payer")
    if p.get("track"):
        if not is_track_uri(p["track"]):
            raise invalid(f"{p['track']} is not a track AT-URI")
        where, key = "t.track_uri = ?", p["track"]
    elif p.get("payer"):
        where, key = "t.did = ?", await resolve_actor(ctx, p["payer"])
    else:
        where, key = "t.subject = ?", await resolve_actor(ctx, p["artist"])
    args: list[Any] = [key]
    cond = ""
    if after := decode_cursor(p.get("cursor"), (str, str)):
        cond = "AND (t.sort_at < ? OR (t.sort_at = ? AND t.uri < ?))"
        args += [after[0], after[0], after[1]]
    cur = await ctx.db.execute(
        f"SELECT {_TIP_COLS} FROM tip t LEFT JOIN actor a ON a.did = t.did WHERE {where} AND {ACTIVE} {cond} "
        "ORDER BY t.sort_at DESC, t.uri DESC LIMIT ?", [*args, p["limit"] + 1])
    rows = await cur.fetchall()
    page = rows[:p["limit"]]
    settlements = await _settlements(ctx, [r[0] for r in page])
    tips = []
    for row in page:
        view = _tip_view(row)
        if row[0] in settlements:
            view["settlement"] = settlements[row[0]]
        tips.append(view)
    cur = await ctx.db.execute(
        f"SELECT COALESCE(SUM(t.amount), 0), MIN(t.currency) FROM tip t LEFT JOIN actor a ON a.did = t.did "
        f"WHERE {where} AND {ACTIVE} AND t.uri IN (SELECT tip_uri FROM settlement WHERE verified = 1 "
        "AND status = 'settled')", [key])
    total, currency = await cur.fetchone()
    out: dict[str, Any] = {"tips": tips, "totalSettled": int(total), "currency": (currency or "USD").upper()}
    if len(rows) > p["limit"]:
        out["cursor"] = encode_cursor(page[-1][9], page[-1][0])
    return out


async def get_settlement(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.payment.getSettlement: by the tip's AT-URI or the settlement's own."""
    uri = p["uri"]
    if f"/{TIP}/" in uri:
        cond = "s.tip_uri = ?"
    elif f"/{SETTLEMENT}/" in uri:
        cond = "s.uri = ?"
    else:
        raise invalid(f"{uri} is neither a tip nor a settlement AT-URI")
    cur = await ctx.db.execute(
        f"SELECT {_SETTLEMENT_COLS}, s.tip_uri FROM settlement s JOIN record r ON r.uri = s.uri "
        f"WHERE {cond} AND s.verified = 1 ORDER BY s.settled_at DESC LIMIT 1", (uri,))
    row = await cur.fetchone()
    if not row:
        raise not_found("NotFound", f"no verified settlement of {uri} is indexed")
    out: dict[str, Any] = {"settlement": settlement_view(row[:10])}
    cur = await ctx.db.execute(f"SELECT {_TIP_COLS} FROM tip t WHERE t.uri = ?", (row[10],))
    tip = await cur.fetchone()
    if tip:
        out["tip"] = _tip_view(tip)
    return out


#: The payment queries, served beside ``appview.queries.QUERIES`` (``appview.app``).
PAYMENT_QUERIES = {"fm.openmusic.payment.getTips": get_tips, "fm.openmusic.payment.getSettlement": get_settlement}
