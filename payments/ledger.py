"""The double-entry ledger (AppView database tables ``ledger_txn`` and ``ledger_entry``).

A transaction is a set of postings ``(account, amount)`` in one currency that sums to zero, with an
idempotency key: posting the same key twice changes nothing. Balances are never stored, only
derived from entries. Amounts are integers in minor units (cents for USD); a positive balance on
``credit:`` and ``earnings:`` accounts is money we owe that person.

Accounts:
  - ``stripe:holding``: the counterpart of money that came in or went out through Stripe (negative
    while we hold money received);
  - ``credit:{did}``: a listener's prepaid credit, spent on tips;
  - ``earnings:{did}``: what tips brought an artist (paid out by part 2 of the money work).

Functions take a ``sqlite3.Connection`` and run inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from core.db import now_iso

HOLDING = "stripe:holding"


def credit(did: str) -> str:
    """A listener's credit account."""
    return f"credit:{did}"


def earnings(did: str) -> str:
    """An artist's earnings account."""
    return f"earnings:{did}"


class LedgerError(ValueError):
    """A transaction that would break the books (does not sum to zero, float amounts, empty)."""


def post(tx: sqlite3.Connection, idem_key: str, kind: str, currency: str,
         postings: Iterable[tuple[str, int]], ref: str | None = None, memo: str | None = None) -> bool:
    """Post one balanced transaction once. Returns False (and writes nothing) when ``idem_key`` was
    already posted. Zero postings are dropped. Raises ``LedgerError`` when the postings are not
    integers or do not sum to zero."""
    rows = [(account, amount) for account, amount in postings if amount != 0]
    if any(type(amount) is not int for _, amount in rows):
        raise LedgerError(f"{idem_key}: amounts must be integers in minor units")
    if sum(amount for _, amount in rows) != 0:
        raise LedgerError(f"{idem_key}: postings sum to {sum(a for _, a in rows)}, not 0")
    cur = tx.execute("INSERT INTO ledger_txn (idem_key, kind, ref, memo, created_at) VALUES (?,?,?,?,?) "
                     "ON CONFLICT (idem_key) DO NOTHING RETURNING id", (idem_key, kind, ref, memo, now_iso()))
    created = cur.fetchall()  # read to the end, so the statement is finished
    if not created:  # the key was posted before: nothing to do
        return False
    txn_id = created[0][0]
    tx.executemany("INSERT INTO ledger_entry (txn_id, account, currency, amount) VALUES (?,?,?,?)",
                   [(txn_id, account, currency, amount) for account, amount in rows])
    return True


def posted(tx: sqlite3.Connection, idem_key: str) -> bool:
    """True if a transaction with ``idem_key`` exists."""
    return tx.execute("SELECT 1 FROM ledger_txn WHERE idem_key = ?", (idem_key,)).fetchone() is not None


#: SQL for one account's balance (params: account, currency); also used by the async readers.
BALANCE_SQL = "SELECT COALESCE(SUM(amount), 0) FROM ledger_entry WHERE account = ? AND currency = ?"


def balance(tx: sqlite3.Connection, account: str, currency: str) -> int:
    """The balance of ``account`` in ``currency`` (minor units), derived from its entries."""
    return int(tx.execute(BALANCE_SQL, (account, currency)).fetchone()[0])


def reverse(tx: sqlite3.Connection, original_key: str, idem_key: str, kind: str, fraction: tuple[int, int] = (1, 1),
            ref: str | None = None, memo: str | None = None) -> bool:
    """Post the reversal of the transaction ``original_key`` (all of it, or ``fraction`` = (num, den)
    of it, rounded so the reversal still sums to zero) once, under ``idem_key``. Returns False when
    already reversed; raises ``LedgerError`` when ``original_key`` was never posted."""
    row = tx.execute("SELECT id FROM ledger_txn WHERE idem_key = ?", (original_key,)).fetchone()
    if not row:
        raise LedgerError(f"nothing posted under {original_key}")
    entries = tx.execute("SELECT account, currency, amount FROM ledger_entry WHERE txn_id = ? ORDER BY rowid",
                         (row[0],)).fetchall()
    currency = entries[0][1]
    num, den = fraction
    postings = [(account, -(amount * num // den)) for account, _, amount in entries]
    postings[0] = (postings[0][0], postings[0][1] - sum(a for _, a in postings))  # rounding to the first
    return post(tx, idem_key, kind, currency, postings, ref=ref, memo=memo)


def check(tx: sqlite3.Connection) -> list[str]:
    """The ledger's invariants; returns the problems found (empty when the books are sound):
    every transaction sums to zero per currency, every entry belongs to a transaction, every amount
    is an integer, and so the whole ledger sums to zero per currency."""
    problems = []
    for txn_id, key, currency, total in tx.execute(
            "SELECT t.id, t.idem_key, e.currency, SUM(e.amount) FROM ledger_txn t JOIN ledger_entry e ON e.txn_id = t.id "
            "GROUP BY t.id, e.currency HAVING SUM(e.amount) != 0"):
        problems.append(f"transaction {txn_id} ({key}) sums to {total} {currency}")
    (orphans,) = tx.execute("SELECT COUNT(*) FROM ledger_entry WHERE txn_id NOT IN (SELECT id FROM ledger_txn)").fetchone()
    if orphans:
        problems.append(f"{orphans} entries belong to no transaction")
    (non_int,) = tx.execute("SELECT COUNT(*) FROM ledger_entry WHERE typeof(amount) != 'integer'").fetchone()
    if non_int:
        problems.append(f"{non_int} entries are not integers")
    for currency, total in tx.execute("SELECT currency, SUM(amount) FROM ledger_entry GROUP BY currency HAVING SUM(amount) != 0"):
        problems.append(f"the ledger sums to {total} {currency}, not 0")
    return problems


def summary(tx: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """Totals per account kind and currency: ``{"USD": {"stripe:holding": -1000, "credit": 700, ...}}``."""
    out: dict[str, dict[str, int]] = {}
    for currency, kind, total in tx.execute(
            "SELECT currency, CASE WHEN instr(account, 'did:') THEN substr(account, 1, instr(account, 'did:') - 2) "
            "ELSE account END AS kind, SUM(amount) FROM ledger_entry GROUP BY currency, kind ORDER BY currency, kind"):
        out.setdefault(currency, {})[kind] = int(total)
    return out
