"""The ``openmusic`` command refuses what would hurt: a second demo on the same data or ports, and
state-reading commands on a database that does not exist. All in-process, no network."""

from __future__ import annotations

import contextlib
import os
import random
import socket

import pytest

from openmusic import cli
from openmusic.db import migrate

TIP = "at://did:plc:payer0000000000000000000/fm.openmusic.payment.tip/3kabcdefghij2"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    """No OPENMUSIC_* setting leaks in from the environment; the working directory is empty."""
    for name in list(os.environ):
        if name.startswith("OPENMUSIC_") and name != "OPENMUSIC_TEST_SESSION":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _free_port_trio() -> int:
    """A port p with p, p + 1 and p + 2 free on loopback now."""
    for _ in range(200):
        base = random.randrange(20000, 60000)
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + 3):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise AssertionError("no three free ports in a row")


@pytest.fixture
def nothing_starts(monkeypatch):
    """The demo must refuse before it installs or starts anything: those calls fail the test."""
    from openmusic import connect_stub, demo_payments, devnet

    def forbidden(*_a, **_k):
        raise AssertionError("the demo started something before refusing")

    monkeypatch.setattr(devnet, "install", forbidden)
    monkeypatch.setattr(devnet, "Devnet", forbidden)
    monkeypatch.setattr(demo_payments, "start_localstripe", forbidden)
    monkeypatch.setattr(connect_stub, "serve_in_thread", forbidden)


def _demo_data(tmp_path):
    data = tmp_path / "demo"
    data.mkdir()
    (data / "marker").write_text("the first demo's data")
    return data


# --- item 2: a second demo destroys nothing -----------------------------------------------------------

def test_second_demo_refuses_while_the_first_holds_the_data_dir(tmp_path, capsys, nothing_starts):
    data = _demo_data(tmp_path)
    first = cli.lock_data_dir(data)  # what the first demo holds for its life
    try:
        rc = cli.main(["demo", "--data-dir", str(data), "--port", str(_free_port_trio())])
        err = capsys.readouterr().err
        assert rc == 1
        assert "another openmusic demo is running" in err and f"process {os.getpid()}" in err
        assert "Nothing was deleted" in err
        assert (data / "marker").read_text() == "the first demo's data"
    finally:
        first.close()
    assert (tmp_path / "demo.lock").exists() and not (data / "demo.lock").exists()  # beside, not inside
    cli.lock_data_dir(data).close()  # released with the first demo: the next one may start


@pytest.mark.parametrize("offset, what", [(0, "the AppView"), (1, "localstripe"), (2, "Stripe Connect stub")])
def test_demo_refuses_a_taken_port_before_deleting_anything(tmp_path, capsys, nothing_starts, offset, what):
    data = _demo_data(tmp_path)
    base = _free_port_trio()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + offset))
        taken.listen()
        rc = cli.main(["demo", "--data-dir", str(data), "--port", str(base)])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"port {base + offset}" in err and what in err
    assert (data / "marker").read_text() == "the first demo's data"
    cli.lock_data_dir(data).close()  # the refused demo let go of its lock


# --- item 4: state-reading commands refuse a missing database --------------------------------------

READERS = [
    ["ledger", "check"],
    ["ledger", "reconcile", "--dry-run"],
    ["ledger", "refund-purchase", "pi_123"],
    ["ledger", "refund-tip", TIP],
    ["payouts", "close", "2026-01"],
    ["payouts", "ad-revenue", "2026-01", "--amount", "500"],
    ["payouts", "run"],
    ["payouts", "explain", "did:plc:artist00000000000000000"],
    ["payouts", "explain", "aurora-tide.test"],
]


def _files(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("argv", READERS, ids=" ".join)
@pytest.mark.parametrize("how", ["default", "flag", "env"])
def test_state_commands_refuse_a_missing_database(tmp_path, capsys, monkeypatch, argv, how):
    extra: list[str] = []
    path = "data/openmusic.sqlite"
    if how == "flag":
        path = str(tmp_path / "wrong" / "place.sqlite")
        extra = ["--db-path", path]
    elif how == "env":
        path = str(tmp_path / "elsewhere.sqlite")
        monkeypatch.setenv("OPENMUSIC_DB_PATH", path)
    rc = cli.main(argv + extra)
    captured = capsys.readouterr()
    assert rc == 2
    assert path in captured.err and "--db-path" in captured.err and "OPENMUSIC_DB_PATH" in captured.err
    assert "the books balance" not in captured.out
    assert _files(tmp_path) == []  # no database, no data/ folder


def test_state_commands_refuse_a_file_that_is_not_our_database(tmp_path, capsys):
    (tmp_path / "empty.sqlite").write_bytes(b"")
    (tmp_path / "text.sqlite").write_text("not a database at all" * 10)
    for name in ("empty.sqlite", "text.sqlite"):
        before = (tmp_path / name).read_bytes()
        assert cli.main(["ledger", "check", "--db-path", name]) == 2
        assert "not" in capsys.readouterr().err
        assert (tmp_path / name).read_bytes() == before
    assert _files(tmp_path) == ["empty.sqlite", "text.sqlite"]


def test_ledger_check_still_reads_a_real_database(tmp_path, capsys):
    migrate(str(tmp_path / "om.sqlite"))
    assert cli.main(["ledger", "check", "--db-path", "om.sqlite"]) == 0
    out = capsys.readouterr().out
    assert "0 ledger transactions in om.sqlite" in out and "the books balance" in out
