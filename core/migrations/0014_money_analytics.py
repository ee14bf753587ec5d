"""The money analytics (``fm.openmusic.analytics.getRevenue``, ``getConversion``, ``getOverview``,
issue 12) without scanning the ledger or every invoice:

- ``ledger_day`` (UTC day of the transaction's ``created_at``, its ``kind``, currency, account
  class): the sum of the postings and how many there were. The class is the account without its
  DID (``credit``, ``earnings``, ``subscription``), or the whole name for the accounts that have
  none (``platform:revenue``, ``ads:pool``, ``payouts:pending``, ``stripe:holding``), as
  ``payments.ledger.summary`` groups them. A trigger keeps it in the same transaction as each
  posting; the ledger is append-only (``payments.ledger`` corrects by posting a reversal), so an
  insert trigger is all it takes, and the backfill below makes it equal a recount from the start.
- Two partial indexes on the paid invoices (the record of who held a paid tier when), both covering
  what is read: by listener and service-period start (each listener's first paid period:
  conversions), and by service-period end (who held a paid tier at an instant, and for how much:
  subscribers, MRR, who was free when a period began)."""

from yoyo import step

__depends__ = {"0013_purchase_clicks"}

#: An account's class (``payments.ledger.summary``'s grouping), of a column or trigger row ``{a}``.
CLASS = "CASE WHEN instr({a}, 'did:') THEN substr({a}, 1, instr({a}, 'did:') - 2) ELSE {a} END"

steps = [
    step("""CREATE TABLE ledger_day (
        day TEXT NOT NULL,
        kind TEXT NOT NULL,
        currency TEXT NOT NULL,
        account TEXT NOT NULL,
        amount INTEGER NOT NULL DEFAULT 0,
        entries INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (day, kind, currency, account)
    ) WITHOUT ROWID""", "DROP TABLE ledger_day"),
    step(f"""CREATE TRIGGER ledger_day_post AFTER INSERT ON ledger_entry BEGIN
        INSERT INTO ledger_day (day, kind, currency, account, amount, entries)
        SELECT substr(t.created_at, 1, 10), t.kind, NEW.currency, {CLASS.format(a='NEW.account')}, NEW.amount, 1
        FROM ledger_txn t WHERE t.id = NEW.txn_id
        ON CONFLICT (day, kind, currency, account) DO UPDATE SET amount = amount + excluded.amount,
            entries = entries + 1;
    END""", "DROP TRIGGER ledger_day_post"),
    step(f"""INSERT INTO ledger_day (day, kind, currency, account, amount, entries)
        SELECT substr(t.created_at, 1, 10), t.kind, e.currency, {CLASS.format(a='e.account')} AS cls, SUM(e.amount),
            COUNT(*)
        FROM ledger_entry e JOIN ledger_txn t ON t.id = e.txn_id GROUP BY 1, 2, 3, 4"""),
    step("CREATE INDEX subscription_invoice_paid_did ON subscription_invoice(did, period_start) WHERE status = 'paid'",
         "DROP INDEX subscription_invoice_paid_did"),
    step("CREATE INDEX subscription_invoice_paid_end ON subscription_invoice(period_end, period_start, did, currency, "
         "amount_paid) WHERE status = 'paid'", "DROP INDEX subscription_invoice_paid_end"),
]
