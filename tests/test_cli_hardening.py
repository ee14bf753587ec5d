"""The ``openmusic`` command refuses what would hurt: a second demo on the same data or ports, and
state-reading commands on a database that does not exist. ``verify-settlement`` takes a tip's
AT-URI, ``payouts explain`` a handle, and every help text is plain. All in-process, no network."""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shlex
import socket
import sqlite3

import pytest

from core.db import migrate
from core.publish import StrongRef
from devkit.seed import SeedResult
from openmusic import cli
from payments.settle import settlement_rkey

TIP = "at://did:plc:payer0000000000000000000/fm.openmusic.payment.tip/3kabcdefghij2"
BROKER = "did:plc:broker000000000000000000"


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
    from devkit import connect_stub, demo_payments, devnet

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
    ["verify-settlement", TIP],
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
    if argv[0] == "verify-settlement" and how == "default":
        # no database named and none at the default: it says what a tip needs
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "--broker" in err and "--db-path" in err and "OPENMUSIC_DB_PATH" in err
        assert _files(tmp_path) == []
        return
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


# --- item 5: verify-settlement takes a tip's AT-URI ---------------------------------------------------

@pytest.fixture
def verified(monkeypatch):
    """Replace the network part: record what verify_settlement was asked."""
    import payments.verify

    calls: list[tuple[str, str | None, bool]] = []

    async def fake(uri, resolver, http, allow_private=False, tip_uri=None):
        calls.append((uri, tip_uri, allow_private))
        return ["checked"]

    monkeypatch.setattr(payments.verify, "verify_settlement", fake)
    return calls


def test_verify_settlement_derives_a_tips_settlement_with_broker(verified, capsys):
    assert cli.main(["verify-settlement", TIP, "--broker", BROKER, "--allow-private-hosts"]) == 0
    want = f"at://{BROKER}/fm.openmusic.payment.settlement/{settlement_rkey(TIP)}"
    assert verified == [(want, TIP, True)]
    assert "VERIFIED" in capsys.readouterr().out
    assert cli.main(["verify-settlement", TIP, "--broker", "openmusic-broker.test"]) == 2
    assert "DID" in capsys.readouterr().err


def test_verify_settlement_finds_a_tips_settlement_in_the_database(tmp_path, verified, capsys):
    db = str(tmp_path / "om.sqlite")
    migrate(db)
    settlement = f"at://{BROKER}/fm.openmusic.payment.settlement/{settlement_rkey(TIP)}"
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO settlement (uri, did, rkey, cid, tip_uri, tip_cid, payer, subject, status, amount, "
                 "currency, recipients, settled_at, verified, indexed_at) VALUES (?, ?, ?, 'bafy', ?, 'bafy', "
                 "'did:plc:payer', 'did:plc:artist', 'settled', 50, 'USD', '[]', '2026-01-01T00:00:00Z', 1, "
                 "'2026-01-01T00:00:00Z')", (settlement, BROKER, settlement_rkey(TIP), TIP))
    conn.commit()
    conn.close()
    assert cli.main(["verify-settlement", TIP, "--db-path", db]) == 0
    assert verified == [(settlement, TIP, False)]
    other = TIP[:-1] + "3"
    assert cli.main(["verify-settlement", other, "--db-path", db]) == 2
    assert "no settlement of" in capsys.readouterr().err
    assert cli.main(["verify-settlement", settlement]) == 0  # a settlement's own URI needs nothing more
    assert verified[-1] == (settlement, None, False)


async def test_verify_settlement_refuses_another_tips_settlement(monkeypatch):
    """Given a tip, a settlement of another tip (right key or not) does not verify."""
    import payments.verify as verify

    async def get_record(_resolver, _http, uri, _allow):
        return {"cid": "bafy", "value": {"tip": {"uri": TIP[:-1] + "3", "cid": "bafy"}, "payer": "did:plc:p"}}

    async def keys(*_a):
        return []

    monkeypatch.setattr(verify, "_get_record", get_record)
    monkeypatch.setattr(verify, "validate_record", lambda *_a: None)
    monkeypatch.setattr(verify, "broker_keys", keys)
    monkeypatch.setattr(verify.attest, "verified_by", lambda *_a: ("did:web:example#attestation", "badge.blue"))
    resolver = argparse.Namespace(document=None)
    with pytest.raises(verify.NotVerified, match="not " + TIP):
        await verify.verify_settlement(verify.settlement_uri(BROKER, TIP), resolver, None, tip_uri=TIP)


def _banner(plays: int = 1, tracks: int = 1) -> str:
    result = SeedResult(dids={"aurora-tide.test": "did:plc:aurora"},
                        tracks=[StrongRef("at://did:plc:aurora/fm.openmusic.catalog.track/3k1", "bafy")],
                        albums=[StrongRef("at://did:plc:aurora/fm.openmusic.catalog.album/3k2", "bafy")])
    earnings = {"artist": "did:plc:aurora", "currency": "USD", "total": 0, "balance": 0, "lines": [],
                "bySource": {"subscriptions": 0, "ads": 0, "tips": 0}}
    return cli._demo_banner("http://localhost:8080", result, tracks, plays, TIP,
                            f"at://{BROKER}/fm.openmusic.payment.payout/3k3", earnings, pds="http://localhost:4001",
                            plc="http://localhost:4000", broker=BROKER, db_path="data/demo/openmusic.sqlite")


def test_demo_banner_prints_commands_that_parse_as_printed():
    banner = _banner()
    commands = {}
    for line in banner.splitlines():
        words = shlex.split(line.strip()) if ".venv/bin/openmusic" in line else []
        if words:
            argv = words[words.index(".venv/bin/openmusic") + 1:]
            commands[argv[0]] = cli.build_parser().parse_args(argv)
    verify = commands["verify-settlement"]
    assert (verify.uri, verify.broker, verify.plc_url, verify.allow_private_hosts) == (
        TIP, BROKER, "http://localhost:4000", True)
    assert commands["payouts"].artist == "aurora-tide.test"
    assert commands["publish"].pds == "http://localhost:4001"
    assert "demo-password-1234" in banner and "sam-hears.test" in banner


# --- item 6: payouts explain takes a handle --------------------------------------------------------

def _earnings_db(tmp_path) -> str:
    db = str(tmp_path / "om.sqlite")
    migrate(db)
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO actor (did, handle, handle_verified, active) VALUES "
                 "('did:plc:aurora', 'aurora-tide.test', 1, 1)")
    conn.execute("INSERT INTO earning_line (txn, period, kind, artist, amount, currency, source) VALUES "
                 "('tip:1', '2026-01', 'tip', 'did:plc:aurora', 250, 'USD', 'a tip')")
    conn.commit()
    conn.close()
    return db


def test_payouts_explain_takes_a_handle_or_a_did(tmp_path, capsys):
    db = _earnings_db(tmp_path)
    assert cli.main(["payouts", "explain", "aurora-tide.test", "--db-path", db]) == 0
    by_handle = capsys.readouterr().out
    assert "did:plc:aurora: earned 250" in by_handle and "a tip" in by_handle
    assert cli.main(["payouts", "explain", "@Aurora-Tide.test", "--db-path", db]) == 0
    assert capsys.readouterr().out == by_handle
    assert cli.main(["payouts", "explain", "did:plc:aurora", "--db-path", db]) == 0
    assert capsys.readouterr().out == by_handle


def test_payouts_explain_names_an_unknown_handle(tmp_path, capsys):
    db = _earnings_db(tmp_path)
    # a resolver that answers nothing (connection refused): the handle is unknown here and there
    rc = cli.main(["payouts", "explain", "nobody-here.test", "--db-path", db,
                   "--handle-resolver-url", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert rc == 1 and "unknown artist nobody-here.test" in err and "Traceback" not in err


# --- item 8: plain help, only the flags used, plurals ------------------------------------------------

def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*prefix, name))


ALL_COMMANDS = list(_commands(cli.build_parser()))


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "openmusic")
def test_every_help_runs_and_is_plain_text(path, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([*path, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: openmusic") and "``" not in out


def test_each_subcommand_has_only_the_flags_it_uses():
    def flags(*path: str) -> set[str]:
        parser = cli.build_parser()
        for name in path:
            parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        return {opt for a in parser._actions for opt in a.option_strings}

    assert flags("ledger", "check") == {"-h", "--help", "--db-path", "--log-level"}
    assert flags("migrate") == {"-h", "--help", "--db-path"}
    assert "--firehose-url" in flags("run") and "--start-cursor" in flags("backfill")
    for path in [("ledger", "reconcile"), ("payouts", "run"), ("payouts", "explain"), ("verify-settlement",)]:
        assert not {"--firehose-url", "--start-cursor", "--port", "--host", "--blob-cache-dir"} & flags(*path), path
    assert "--amount" not in flags("payouts", "run") and "--dry-run" not in flags("ledger", "check")


def test_counts_agree_in_number():
    assert (cli._plural(1, "play"), cli._plural(2, "play"), cli._plural(0, "track")) == ("1 play", "2 plays", "0 tracks")
    assert "1 track and 1 play indexed" in _banner(plays=1, tracks=1)
    assert "12 tracks and 30 plays" in _banner(plays=30, tracks=12)
