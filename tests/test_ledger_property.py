"""Property-based test of the ledger (hypothesis): random sequences of credit purchases, tips,
refunds, disputes, duplicate and reordered Stripe events and restarts (a connection dropped with
its transaction unfinished). After every step the books balance, no credit is created or lost, and
each PaymentIntent's net in the ledger equals what the modelled Stripe holds for it.

Stripe is a model here (this is a unit of the ledger rules); the same code paths run against
localstripe in ``test_payments_e2e.py``."""

from __future__ import annotations

import sqlite3

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import db
from payments import attest, credit, ledger, settle

FANS = ["did:plc:fan1", "did:plc:fan2"]
ARTIST = "did:plc:artist"
BROKER = settle.Broker("did:plc:broker", attest.Signer(attest.new_secret(), "did:web:test#attestation"), "salt")
POLICY = settle.Policy()
TIP_CID = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"

step = st.one_of(
    st.tuples(st.just("buy"), st.sampled_from(FANS), st.integers(100, 5000)),
    st.tuples(st.just("tip"), st.sampled_from(FANS), st.integers(1, 3000)),
    st.tuples(st.just("refund"), st.integers(0, 20), st.integers(1, 5000)),
    st.tuples(st.just("dispute"), st.integers(0, 20), st.just(0)),
    st.tuples(st.just("redeliver"), st.integers(0, 20), st.just(0)),
    st.tuples(st.just("refund_tip"), st.integers(0, 40), st.just(0)),
    st.tuples(st.just("crash"), st.just(""), st.just(0)),
)


def open_db(path: str) -> sqlite3.Connection:
    conn = db.connect_sync(path)
    return conn


def seed_artist(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT OR IGNORE INTO actor (did, active) VALUES (?, 1)", (ARTIST,))
    conn.execute("INSERT OR IGNORE INTO track (uri, did, rkey, cid, title, duration_ms, audio_cid, audio_mime, created_at, "
                 "sort_at, indexed_at) VALUES ('at://did:plc:artist/fm.openmusic.catalog.track/3k', ?, '3k', 'c', 't', 1, "
                 "'a', 'audio/wav', 'x', 'x', 'x')", (ARTIST,))
    for fan in FANS:
        conn.execute("INSERT OR IGNORE INTO actor (did, active) VALUES (?, 1)", (fan,))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(step, min_size=1, max_size=40))
def test_ledger_always_balances_and_matches_stripe(tmp_path_factory, steps):
    path = str(tmp_path_factory.mktemp("ledger") / "l.sqlite")
    db.migrate(path)
    conn = open_db(path)
    seed_artist(conn)
    stripe_pis: list[dict] = []            # the modelled Stripe: PaymentIntents ...
    stripe_refunds: dict[str, list] = {}  # ... their refunds
    disputes: dict[str, dict] = {}
    tips: list[str] = []
    for i, (kind, who, amount) in enumerate(steps):
        if kind == "buy":
            pi = {"id": f"pi_{i}", "amount": amount, "currency": "usd", "status": "succeeded",
                  "metadata": {"purpose": credit.PURPOSE, "did": who}}
            stripe_pis.append(pi)
            stripe_refunds[pi["id"]] = []
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                credit.sync_purchase(conn, pi, [])
        elif kind == "tip" and stripe_pis:
            uri = f"at://{who}/fm.openmusic.payment.tip/3t{i:011d}"
            conn.execute("INSERT INTO tip (uri, did, rkey, cid, subject, amount, currency, created_at, sort_at, indexed_at) "
                         "VALUES (?,?,?,?,?,?,?,?,?,?)", (uri, who, f"3t{i}", TIP_CID, ARTIST, amount, "USD", "x", "x", "x"))
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                status = settle.settle_tip(conn, uri, POLICY, BROKER, "2026-11-22T00:00:00.000Z")
            if status == settle.SETTLED:  # only from credit that was there
                assert ledger.balance(conn, ledger.credit(who), "USD") >= 0
            tips.append(uri)
        elif kind in ("refund", "dispute", "redeliver") and stripe_pis:
            pi = stripe_pis[who % len(stripe_pis)]
            left = credit.expected_net(pi, stripe_refunds[pi["id"]])
            if kind == "refund" and left > 0:
                stripe_refunds[pi["id"]].append({"id": f"re_{i}", "amount": min(amount, left), "status": "succeeded"})
            elif kind == "dispute" and left > 0 and pi["id"] not in disputes:
                disputes[pi["id"]] = {"id": f"dp_{i}", "amount": left, "payment_intent": pi["id"]}
            with conn:  # a (re)delivered event: the ledger syncs to Stripe's state, dupes change nothing
                conn.execute("BEGIN IMMEDIATE")
                credit.sync_purchase(conn, pi, stripe_refunds[pi["id"]])
                if pi["id"] in disputes:
                    credit.apply_dispute(conn, disputes[pi["id"]])
        elif kind == "refund_tip" and tips:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                settle.refund_tip(conn, tips[who % len(tips)], BROKER, "2026-11-22T01:00:00.000Z")
        elif kind == "crash":
            conn.execute("BEGIN IMMEDIATE")
            ledger.post(conn, f"half-done-{i}", "test", "USD", [(ledger.HOLDING, -5), (ledger.credit(FANS[0]), 5)])
            conn.close()  # the process dies mid-transaction: SQLite rolls it back
            conn = open_db(path)
            assert not ledger.posted(conn, f"half-done-{i}")

        assert ledger.check(conn) == []
        # Money in = money held by listeners and artists: nothing created or lost.
        held = -ledger.balance(conn, ledger.HOLDING, "USD")
        owed = conn.execute("SELECT COALESCE(SUM(amount), 0) FROM ledger_entry WHERE account != ?",
                            (ledger.HOLDING,)).fetchone()[0]
        assert held == owed
        for pi in stripe_pis:
            expected = credit.expected_net(pi, stripe_refunds[pi["id"]])
            if pi["id"] in disputes:
                expected -= disputes[pi["id"]]["amount"]
            assert credit.ledger_net(conn, pi["id"]) == expected
        # A tip settles at most once, and only from credit that was there.
        rows = conn.execute("SELECT idem_key, COUNT(*) FROM ledger_txn GROUP BY idem_key HAVING COUNT(*) > 1").fetchall()
        assert rows == []
    conn.close()


def test_split_amount_never_creates_or_loses_a_cent():
    @given(st.integers(0, 10**7), st.lists(st.integers(1, 10000), min_size=1, max_size=8))
    def check(amount, weights):
        total = sum(weights)
        bps = [w * 10000 // total for w in weights]
        bps[0] += 10000 - sum(bps)
        parts = settle.split_amount(amount, [(f"did:plc:{i}", b) for i, b in enumerate(bps)])
        assert sum(a for _, a in parts) == amount
        assert all(abs(a - amount * b / 10000) < 1 for (_, a), b in zip(parts, bps, strict=True))
    check()


def test_post_refuses_unbalanced_or_float_postings():
    conn = sqlite3.connect(":memory:")
    import pytest

    for postings in ([("a", 5), ("b", -4)], [("a", 0.5), ("b", -0.5)]):
        with pytest.raises(ledger.LedgerError):
            ledger.post(conn, "k", "test", "USD", postings)


def test_a_tip_to_oneself_is_refused():
    """An artist tipping themself would turn bought credit into earnings that are paid out."""
    me = "did:plc:" + "a" * 24
    tip = {"did": me, "subject": me, "amount": 500, "currency": "USD", "track_uri": None}
    assert settle.decide(None, tip, POLICY, "2026-11-29") == (settle.REJECTED, "self_tip", [])
