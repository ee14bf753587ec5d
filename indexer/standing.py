"""Whose listening counts (issue 14): the one rule for every figure and every payout.

**The rule.** An account's plays (its streams and the seconds heard), likes, votes, reviews and
follows count while the account is *in standing*: active (``actor.active`` = 1: no firehose
``#account`` event said it is takendown, suspended, deactivated or deleted; atproto account spec)
and not taken down by a label (``actor.hidden`` < 2: no ``!takedown`` or ``!suspend`` in force from
a configured labeler or our own, ``indexer.labels``). An account we hold no ``actor`` row for is in
standing. While an account is out of standing everything it did counts for nothing, anywhere: track
stats (``getTrackStats``), charts and trending, the artist analytics, the recommendation model and
the distribution of a period's money (``payments.period``). When it comes back (the label is negated
or expires, the account is reactivated) all of it counts again, as it is then; a period closed
meanwhile stays as it was closed.

It is applied in one of two ways, both from here:

- **at query time**, on raw rows (``play``, ``listener_day``, ``tip``, the analytics listeners):
  ``IN_STANDING`` (SQL on the account's ``actor`` row, aliased ``a`` and LEFT JOINed) or
  ``in_standing(alias)``, and ``did_in_standing(expr)`` where no ``actor`` row is joined (a
  primary-key look-up per row: for a few rows). Over many listeners, count them all and subtract
  those of ``OUT_OF_STANDING_SQL`` (the accounts out of standing, few, from a partial index).
  ``appview.views.ACTIVE`` states the same rule for the accounts the views show.
- **in the aggregates the indexer keeps incrementally** (``track_stats``, ``track_listener``, the
  analytics rollups ``track_day``, ``track_day_listener``, ``track_second``, and the
  ``vote``/``review``/``follow`` ``_current`` and ``_count`` tables): these hold exactly the records
  of the accounts whose ``actor.counted`` is 1 (migration 0026). Every code path that adds or takes
  away one record checks ``is_counted`` first, and ``indexer.stats.refresh_account`` moves a whole
  account in or out, flipping ``counted`` in the same transaction, so the aggregates never drift
  from the records whatever the order of events. ``counted`` follows the rule: on a firehose
  ``#account`` event in the indexer's own transaction (``indexer.core`` -> ``stats.count_account``),
  and on a label change right after the label store commits (``indexer.labels`` ->
  ``stats.catch_up_async``; the store's sweep every few seconds and its ``open`` at start catch up
  on anything a crash left behind). ``COUNTED`` is that membership in SQL, for the recounts that
  check the aggregates (``indexer.rollups.check``).
"""

from __future__ import annotations

import sqlite3

#: SQL: the account of the ``actor`` row ``a`` (LEFT JOINed: no row is in standing) is in standing.
IN_STANDING = "COALESCE(a.active, 1) = 1 AND COALESCE(a.hidden, 0) < 2"
#: SQL on an ``actor`` row without alias: the rule, as migration 0026's partial index spells it.
RULE = "(active = 1 AND hidden < 2)"
#: SQL on ``actor`` rows without alias: out of standing, as migration 0026's partial index
#: ``actor_out_of_standing`` spells it.
OUT_OF_STANDING = f"NOT {RULE}"
#: SQL: the DIDs (column ``did``) of the accounts out of standing, read from that (small) index.
OUT_OF_STANDING_SQL = f"SELECT did FROM actor WHERE {OUT_OF_STANDING}"
#: SQL on ``actor`` rows without alias: accounts whose ``counted`` flag differs from the rule (those
#: ``stats.catch_up`` moves). Written exactly as the WHERE of migration 0026's partial index
#: ``actor_counted_stale``, so that finding them reads that (nearly always empty) index.
STALE = f"counted <> {RULE}"
#: SQL: the account of the ``actor`` row ``a`` (LEFT JOINed) is in the incremental aggregates.
COUNTED = "COALESCE(a.counted, 1) = 1"


def in_standing(alias: str = "a") -> str:
    """``IN_STANDING`` for the ``actor`` row aliased ``alias`` (LEFT JOINed)."""
    return IN_STANDING.replace("a.", f"{alias}.")


def did_in_standing(did_sql: str) -> str:
    """SQL: the account whose DID is the SQL expression ``did_sql`` (say ``p.did``) is in standing,
    for queries that join no ``actor`` row: one primary-key look-up per row."""
    return (f"NOT EXISTS (SELECT 1 FROM actor sa WHERE sa.did = {did_sql} "
            f"AND (sa.active <> 1 OR sa.hidden >= 2))")


def is_counted(tx: sqlite3.Connection, did: str) -> bool:
    """Whether ``did``'s records are in the incremental aggregates (``actor.counted``; an account
    with no ``actor`` row is). What every path adding or taking away one record checks."""
    row = tx.execute("SELECT counted FROM actor WHERE did = ?", (did,)).fetchone()
    return row is None or bool(row[0])
