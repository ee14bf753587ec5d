"""Payments, part 2: streams (plays that count, paid or free), subscriptions through Stripe
Billing, the period close (user-centric shares of subscription fees, the ad pool), earning lines
that explain every cent, Stripe Connect payout accounts, payouts, and a generic outbox for the
broker's signed records (subscriptions, payouts). All money is INTEGER minor units."""

from yoyo import step

__depends__ = {"0005_search_key"}


def classify_existing(conn) -> None:
    """Decide the plays indexed before streams existed (no subscriptions yet: all free)."""
    from indexer.streams import DAILY_CAP, threshold_ms

    cur = conn.cursor()
    cur.execute("SELECT p.uri, p.did, p.track_uri, p.sort_at, p.listened_ms, t.duration_ms FROM play p "
                "LEFT JOIN track t ON t.uri = p.track_uri ORDER BY p.did, p.track_uri, p.sort_at, p.uri")
    updates, counted, per_track = [], {}, {}
    for uri, did, track_uri, sort_at, listened, duration in cur.fetchall():
        if listened < threshold_ms(duration):
            continue
        day = (did, track_uri, sort_at[:10])
        if counted.get(day, 0) >= DAILY_CAP:
            continue
        counted[day] = counted.get(day, 0) + 1
        per_track[track_uri] = per_track.get(track_uri, 0) + 1
        updates.append((min(listened, duration) if duration else listened, uri))
    cur.executemany("UPDATE play SET stream = 1, stream_ms = ? WHERE uri = ?", updates)
    cur.executemany("UPDATE track_stats SET free_streams = ? WHERE track_uri = ?",
                    [(n, t) for t, n in per_track.items()])


steps = [
    step("ALTER TABLE play ADD COLUMN stream INTEGER NOT NULL DEFAULT 0"),
    step("ALTER TABLE play ADD COLUMN paid INTEGER NOT NULL DEFAULT 0"),
    step("ALTER TABLE play ADD COLUMN stream_ms INTEGER NOT NULL DEFAULT 0"),
    step("ALTER TABLE track_stats ADD COLUMN paid_streams INTEGER NOT NULL DEFAULT 0"),
    step("ALTER TABLE track_stats ADD COLUMN free_streams INTEGER NOT NULL DEFAULT 0"),
    step("CREATE INDEX play_listener_track ON play(did, track_uri, sort_at)"),
    step("CREATE INDEX play_streams ON play(sort_at) WHERE stream = 1"),
    step(classify_existing),
    # Stripe Billing subscriptions, as Stripe last told us (webhooks are triggers; we fetch the object).
    step("""CREATE TABLE subscription (
        id TEXT PRIMARY KEY,
        did TEXT NOT NULL,
        tier TEXT NOT NULL,
        status TEXT NOT NULL,
        period_start TEXT,
        period_end TEXT,
        cancel_at_period_end INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL)"""),
    step("CREATE INDEX subscription_did ON subscription(did, updated_at)"),
    # Each paid invoice is one service period: the plays in it are paid streams, and its net fee is
    # split at the period close (``distributed_txn`` = the ledger key once done).
    step("""CREATE TABLE subscription_invoice (
        id TEXT PRIMARY KEY,
        subscription TEXT NOT NULL,
        did TEXT NOT NULL,
        tier TEXT NOT NULL,
        status TEXT NOT NULL,
        period_start TEXT NOT NULL,
        period_end TEXT NOT NULL,
        amount_paid INTEGER NOT NULL,
        fee INTEGER NOT NULL DEFAULT 0,
        currency TEXT NOT NULL,
        paid_at TEXT,
        distributed_txn TEXT,
        updated_at TEXT NOT NULL)"""),
    step("CREATE INDEX subscription_invoice_did ON subscription_invoice(did, period_start)"),
    step("CREATE INDEX subscription_invoice_open ON subscription_invoice(period_end) WHERE distributed_txn IS NULL"),
    # The ad revenue the operator enters for a period (YYYY-MM), split by free-tier listening at close.
    step("""CREATE TABLE ad_pool (
        period TEXT PRIMARY KEY,
        amount INTEGER NOT NULL,
        currency TEXT NOT NULL,
        entered_at TEXT NOT NULL,
        distributed_txn TEXT)"""),
    # Why each earning happened, down to the track and milliseconds; ``txn`` is the ledger key.
    step("""CREATE TABLE earning_line (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        txn TEXT NOT NULL,
        period TEXT NOT NULL,
        kind TEXT NOT NULL,
        artist TEXT NOT NULL,
        track_uri TEXT,
        listened_ms INTEGER,
        pool_ms INTEGER,
        pool INTEGER,
        share_bps INTEGER,
        amount INTEGER NOT NULL,
        currency TEXT NOT NULL,
        source TEXT)"""),
    step("CREATE INDEX earning_line_artist ON earning_line(artist, period, id)"),
    step("CREATE INDEX earning_line_txn ON earning_line(txn)"),
    # Stripe Connect accounts that receive payouts.
    step("""CREATE TABLE payout_account (
        did TEXT PRIMARY KEY,
        account TEXT NOT NULL UNIQUE,
        payouts_enabled INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL)"""),
    # One payout: reserved in the ledger first (status 'pending'), then transferred with the row's id as
    # the idempotency key, then 'paid'. A crash anywhere is finished by the next run.
    step("""CREATE TABLE payout (
        id TEXT PRIMARY KEY,
        did TEXT NOT NULL,
        payee TEXT NOT NULL,
        account TEXT NOT NULL,
        period TEXT NOT NULL,
        amount INTEGER NOT NULL,
        currency TEXT NOT NULL,
        covers TEXT NOT NULL,
        status TEXT NOT NULL,
        transfer TEXT,
        rkey TEXT NOT NULL UNIQUE,
        last_error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL)"""),
    step("CREATE INDEX payout_did ON payout(did, created_at)"),
    step("CREATE INDEX payout_pending ON payout(status) WHERE status = 'pending'"),
    # Signed records the broker writes to its repo besides settlements (subscriptions, payouts).
    step("""CREATE TABLE broker_outbox (
        collection TEXT NOT NULL,
        rkey TEXT NOT NULL,
        record TEXT NOT NULL,
        published_cid TEXT,
        published_at TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (collection, rkey))"""),
    step("CREATE INDEX broker_outbox_unpublished ON broker_outbox(updated_at) WHERE published_cid IS NULL"),
]
