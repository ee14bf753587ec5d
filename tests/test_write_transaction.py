"""core.db.write_transaction: commit, rollback, and a failed ROLLBACK never hides the block's error."""

from __future__ import annotations

import asyncio

import aiosqlite
import pytest

from core.db import write_transaction


async def _open(tmp_path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(tmp_path / "t.sqlite", isolation_level=None)
    await conn.execute("CREATE TABLE t (x INTEGER)")
    return conn


async def _count(conn: aiosqlite.Connection) -> int:
    cur = await conn.execute("SELECT COUNT(*) FROM t")
    return (await cur.fetchone())[0]


def test_commits_and_rolls_back(tmp_path):
    async def main() -> None:
        conn = await _open(tmp_path)
        try:
            async with write_transaction(conn):
                await conn.execute("INSERT INTO t VALUES (1)")
            assert await _count(conn) == 1
            with pytest.raises(ValueError):
                async with write_transaction(conn):
                    await conn.execute("INSERT INTO t VALUES (2)")
                    raise ValueError("boom")
            assert await _count(conn) == 1
            assert not conn.in_transaction
        finally:
            await conn.close()

    asyncio.run(main())


def test_a_failed_rollback_keeps_the_original_error(tmp_path):
    """The block ended the transaction itself, so ROLLBACK fails ('no transaction is active'): the
    caller still sees the block's own error (a cancellation stays a cancellation)."""
    async def main() -> None:
        conn = await _open(tmp_path)
        try:
            with pytest.raises(asyncio.CancelledError):
                async with write_transaction(conn):
                    await conn.execute("COMMIT")
                    raise asyncio.CancelledError
            with pytest.raises(KeyError):
                async with write_transaction(conn):
                    await conn.execute("ROLLBACK")
                    raise KeyError("k")
        finally:
            await conn.close()

    asyncio.run(main())


def test_the_sync_twin_commits_and_rolls_back(tmp_path):
    """core.db.sync_write_transaction on a connect_sync connection: the same contract."""
    from core.db import connect_sync, sync_write_transaction

    conn = connect_sync(str(tmp_path / "s.sqlite"))
    try:
        conn.execute("CREATE TABLE t (x INTEGER)")
        with sync_write_transaction(conn):
            conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(ValueError, match="after the insert"), sync_write_transaction(conn):
            conn.execute("INSERT INTO t VALUES (2)")
            raise ValueError("after the insert")
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
        assert not conn.in_transaction
    finally:
        conn.close()
