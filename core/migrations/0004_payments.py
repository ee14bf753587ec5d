"""Payments, part 1: the double-entry ledger, credit purchases, Stripe events, tips (indexed from
listeners' repos), the broker's settlement outbox, settlement records (indexed from brokers'
repos) and service-auth nonces. All money is INTEGER minor units."""

from yoyo import step

__depends__ = {"0003_stats_for_every_track"}

steps = [
    # One money movement. ``idem_key`` makes it happen at most once (a Stripe object ID, a tip AT-URI).
    step("""CREATE TABLE ledger_txn (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        idem_key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        ref TEXT,
        memo TEXT,
        created_at TEXT NOT NULL)"""),
    # Its postings: they sum to zero per transaction (and so over the whole ledger).
    step("""CREATE TABLE ledger_entry (
        txn_id INTEGER NOT NULL REFERENCES ledger_txn(id),
        account TEXT NOT NULL,
        currency TEXT NOT NULL,
        amount INTEGER NOT NULL)"""),
    step("CREATE INDEX ledger_entry_account ON ledger_entry(account, currency)"),
    step("CREATE INDEX ledger_entry_txn ON ledger_entry(txn_id)"),
    # Our side of each Stripe PaymentIntent for credit (private: raw Stripe IDs stay here).
    step("""CREATE TABLE credit_purchase (
        payment_intent TEXT PRIMARY KEY,
        did TEXT NOT NULL,
        customer TEXT,
        amount INTEGER NOT NULL,
        currency TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL)"""),
    step("CREATE INDEX credit_purchase_did ON credit_purchase(did)"),
    step("""CREATE TABLE stripe_customer (
        did TEXT PRIMARY KEY,
        customer TEXT NOT NULL UNIQUE)"""),
    step("""CREATE TABLE stripe_event (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        object_id TEXT,
        received_at TEXT NOT NULL)"""),
    # fm.openmusic.payment.tip records, as indexed.
    step("""CREATE TABLE tip (
        uri TEXT PRIMARY KEY,
        did TEXT NOT NULL,
        rkey TEXT NOT NULL,
        cid TEXT NOT NULL,
        subject TEXT NOT NULL,
        track_uri TEXT,
        track_cid TEXT,
        amount INTEGER NOT NULL,
        currency TEXT NOT NULL,
        message TEXT,
        created_at TEXT NOT NULL,
        sort_at TEXT NOT NULL,
        indexed_at TEXT NOT NULL)"""),
    step("CREATE INDEX tip_subject ON tip(subject, sort_at DESC, uri)"),
    step("CREATE INDEX tip_track ON tip(track_uri, sort_at DESC, uri)"),
    # The broker's decision on each tip it saw (kept when the tip is deleted), and its outbox:
    # ``record`` is the signed settlement record, ``published_cid`` set once it is in the broker repo.
    step("""CREATE TABLE broker_settlement (
        tip_uri TEXT PRIMARY KEY,
        tip_cid TEXT NOT NULL,
        rkey TEXT NOT NULL UNIQUE,
        payer TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        amount INTEGER NOT NULL,
        currency TEXT NOT NULL,
        record TEXT NOT NULL,
        published_cid TEXT,
        published_at TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        settled_at TEXT NOT NULL)"""),
    step("CREATE INDEX broker_settlement_unpublished ON broker_settlement(published_cid) WHERE published_cid IS NULL"),
    # fm.openmusic.payment.settlement records, as indexed from trusted brokers' repos.
    # ``verified``: NULL not yet checked, 1 signature and tip match checked, 0 failed (``verify_error``).
    step("""CREATE TABLE settlement (
        uri TEXT PRIMARY KEY,
        did TEXT NOT NULL,
        rkey TEXT NOT NULL,
        cid TEXT NOT NULL,
        tip_uri TEXT NOT NULL,
        tip_cid TEXT NOT NULL,
        payer TEXT NOT NULL,
        subject TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        amount INTEGER NOT NULL,
        currency TEXT NOT NULL,
        recipients TEXT NOT NULL,
        settled_at TEXT NOT NULL,
        verified INTEGER,
        verify_error TEXT,
        indexed_at TEXT NOT NULL)"""),
    step("CREATE INDEX settlement_tip ON settlement(tip_uri)"),
    step("CREATE INDEX settlement_unverified ON settlement(verified) WHERE verified IS NULL"),
    # Service-auth JWT nonces seen (replay protection until they expire).
    step("""CREATE TABLE auth_jti (
        jti TEXT PRIMARY KEY,
        exp INTEGER NOT NULL)"""),
]
