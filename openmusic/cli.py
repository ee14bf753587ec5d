"""The openmusic command.

  openmusic run                firehose + indexer + AppView in one process (defaults: the public network);
                               --role api|indexer for one side, several processes on one database
  openmusic cluster            PostgreSQL, 2 indexers (leader + standby), API replicas behind a proxy, as processes
  openmusic demo               local reference PDS + PLC, a seeded demo catalog, and the AppView on its firehose
  openmusic backfill           import the repos that already hold music (verified CARs), then go on live
  openmusic publish            upload audio to your own PDS and write track / album records
  openmusic lexicons publish   publish our lexicons as com.atproto.lexicon.schema records
  openmusic ledger             check the books, reconcile them with Stripe, refund credit or tips
  openmusic payouts            close a period, enter ad revenue, pay artists out, explain an artist's earnings
  openmusic analytics          check the analytics rollups against a recount of the plays, or rebuild them
  openmusic verify-settlement  check a settlement record from the network alone (PDSes, DID documents)
  openmusic migrate            apply database migrations
  openmusic db partitions      PostgreSQL: list play's monthly partitions, create months ahead, ANALYZE
  openmusic devnet             install or start the local reference PDS + PLC

Each flag that names a setting also reads OPENMUSIC_<NAME> from the environment (flags win).
Commands that read an AppView's state (ledger, payouts, analytics) refuse a database that does not exist.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.config import ROLES, Settings

#: Every setting flag: name -> (flag, argparse keywords). Each subcommand takes only those it uses.
_SETTING_FLAGS: dict[str, tuple[str, dict]] = {
    "firehose_url": ("--firehose-url", {"help": "relay or PDS to subscribe to (OPENMUSIC_FIREHOSE_URL)"}),
    "plc_url": ("--plc-url", {"help": "did:plc directory (OPENMUSIC_PLC_URL)"}),
    "db_path": ("--db-path", {"help": "SQLite file (OPENMUSIC_DB_PATH; default data/openmusic.sqlite)"}),
    "blob_cache_dir": ("--blob-cache-dir", {"help": "verified blob cache (OPENMUSIC_BLOB_CACHE_DIR)"}),
    "host": ("--host", {"help": "bind address (OPENMUSIC_HOST)"}),
    "port": ("--port", {"type": int, "help": "HTTP port (OPENMUSIC_PORT)"}),
    "public_url": ("--public-url", {"help": "base URL clients use; it names the service DID "
                                            "(OPENMUSIC_PUBLIC_URL)"}),
    "handle_resolver_url": ("--handle-resolver-url",
                            {"help": "XRPC service for resolveHandle (OPENMUSIC_HANDLE_RESOLVER_URL)"}),
    "allow_private_hosts": ("--allow-private-hosts",
                            {"action": "store_true", "default": None,
                             "help": "let outbound fetches reach loopback/private hosts (local dev only; "
                                     "OPENMUSIC_ALLOW_PRIVATE_HOSTS)"}),
    "start_cursor": ("--start-cursor", {"type": int, "help": "seq to start from when no cursor is stored: "
                                                             "-1 live head (default), 0 everything"}),
    "log_level": ("--log-level", {"help": "DEBUG, INFO, WARNING (OPENMUSIC_LOG_LEVEL)"}),
}
#: What ``run`` and ``backfill`` use: all of them.
SERVER_FLAGS = tuple(_SETTING_FLAGS)
#: What commands that start the AppView's parts without serving (payments) use: the database, identity
#: resolution (DID documents, handles), and the public URL that names the service DID signing records.
STATE_FLAGS = ("db_path", "plc_url", "handle_resolver_url", "allow_private_hosts", "public_url", "log_level")


def _add_settings_flags(p: argparse.ArgumentParser, names: tuple[str, ...] = SERVER_FLAGS) -> None:
    """Add the flags of the settings ``names`` (keys of ``_SETTING_FLAGS``) to ``p``."""
    for name in names:
        flag, kwargs = _SETTING_FLAGS[name]
        p.add_argument(flag, dest=name, **kwargs)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(**{k: getattr(args, k, None) for k in _SETTING_FLAGS})


def _plural(n: int, word: str, plural: str | None = None) -> str:
    """``1 play``, ``2 plays``: ``n`` and ``word`` agreed in number."""
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _database_problem(path: str) -> str | None:
    """None when ``path`` is an Open Music database (an SQLite file with our migrations applied),
    else what is wrong with it. Opens it read-only: never creates or changes anything."""
    import sqlite3

    file = Path(path)
    if not file.exists():
        return f"there is no database at {path}"
    if not file.is_file():
        return f"{path} is not a file"
    try:
        conn = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)
        try:
            ours = conn.execute("SELECT 1 FROM sqlite_master WHERE name = '_yoyo_migration'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"{path} is not an SQLite database ({exc})"
    return None if ours else f"{path} is not an Open Music database (no migrations were ever applied to it)"


def _require_database(args: argparse.Namespace, settings: Settings) -> bool:
    """For commands that read an AppView's state: True when ``settings.db_path`` is an existing
    Open Music database; otherwise print why and how to name one, and return False."""
    problem = _database_problem(settings.db_path)
    if problem is None:
        return True
    if getattr(args, "db_path", None):
        source = "given with --db-path"
    elif os.environ.get("OPENMUSIC_DB_PATH"):
        source = "from OPENMUSIC_DB_PATH"
    else:
        source = "the default; neither --db-path nor OPENMUSIC_DB_PATH is set"
    print(f"error: {problem} ({source}). This command reads an AppView's state: point --db-path or "
          "OPENMUSIC_DB_PATH at the database `openmusic run` (or the demo) writes. Nothing was created.",
          file=sys.stderr)
    return False


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("yoyo").setLevel(logging.WARNING)
    logging.getLogger("lexrpc").setLevel(logging.WARNING)


async def _run_until_signal(settings: Settings, firehose: bool = True, on_ready=None) -> None:
    from openmusic.runtime import Runtime

    rt = Runtime(settings)
    await rt.start(firehose=firehose)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    server = asyncio.create_task(rt.serve())
    try:
        if on_ready:
            await on_ready(rt)
        await asyncio.wait({server, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError, SystemExit):
            await server
        await rt.stop()


def cmd_run(args: argparse.Namespace) -> int:
    """``openmusic run [--role all|api|indexer]``: play the role (``Runtime.run``) until SIGINT or
    SIGTERM. Exit status 0; 1 when the leader lock was lost or the server failed; 2 for an unknown
    role (``OPENMUSIC_ROLE``)."""
    settings = _settings(args)
    if args.role:
        settings.role = args.role
    if settings.role not in ROLES:
        print(f"error: the role must be one of {', '.join(ROLES)} (--role or OPENMUSIC_ROLE), got {settings.role!r}",
              file=sys.stderr)
        return 2
    _logging(settings.log_level)
    log = logging.getLogger("openmusic")
    if settings.role == "indexer":
        log.info("indexer: /health on %s, firehose %s", settings.base_url, settings.subscribe_url)
    elif settings.role == "api":
        log.info("AppView (api role, no indexing) on %s", settings.base_url)
    else:
        log.info("AppView on %s, firehose %s", settings.base_url, settings.subscribe_url)
    return asyncio.run(_run_role(settings, firehose=not args.no_firehose))


async def _run_role(settings: Settings, firehose: bool) -> int:
    """``Runtime(settings).run`` until SIGINT or SIGTERM; returns its exit status."""
    from openmusic.runtime import Runtime

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return await Runtime(settings).run(stop, firehose=firehose)


def cmd_cluster(args: argparse.Namespace) -> int:
    """``openmusic cluster``: the compose profile ``cluster`` as processes here (``openmusic.cluster``)
    until SIGINT or SIGTERM. Exit status 0; 1 when the start-up failed; 2 for bad numbers."""
    from openmusic import cluster

    if args.replicas < 1 or args.indexers < 1 or not 0 < args.port < 65536 - args.replicas - args.indexers:
        print("error: --replicas and --indexers must be at least 1, and the ports must fit under 65536",
              file=sys.stderr)
        return 2
    given = {name: getattr(args, name, None) for name in CLUSTER_FLAGS}
    env = {f"OPENMUSIC_{k.upper()}": ("true" if v is True else str(v)) for k, v in given.items() if v is not None}
    options = cluster.Options(host=args.host, port=args.port, replicas=args.replicas, indexers=args.indexers,
                              data_dir=args.data_dir, proxy=args.proxy, sqlite=args.sqlite, settings_env=env,
                              database_url=args.database_url or os.environ.get("OPENMUSIC_DATABASE_URL", ""))
    return cluster.run(options, out=lambda line: print(line, flush=True))


#: The settings ``openmusic cluster`` passes on to its processes (the rest: its own flags).
CLUSTER_FLAGS = ("firehose_url", "plc_url", "public_url", "handle_resolver_url", "allow_private_hosts",
                 "start_cursor", "log_level")


def cmd_backfill(args: argparse.Namespace) -> int:
    from indexer.backfill import Backfill

    settings = _settings(args)
    _logging(settings.log_level)
    source = args.source or settings.firehose_url
    failed = False

    async def backfill(rt) -> None:
        nonlocal failed
        job = Backfill(rt.indexer, rt.http, source, settings.allow_private_hosts)
        lister = asyncio.create_task(job.run())
        while True:
            await asyncio.sleep(1 if not lister.done() else 0.5)
            cur = await rt.reader.execute(
                "SELECT COUNT(*), SUM(next_attempt IS NOT NULL) FROM repo_state WHERE status = 'desynchronized'")
            owed, waiting = await cur.fetchone()
            waiting = waiting or 0
            print(f"backfill {job.source}: listed {_plural(job.listed, 'repo')}, found {job.found} with music; "
                  f"imported {rt.resyncer.done}, failed {rt.resyncer.failed}, to go {owed - waiting}"
                  + (f", {waiting} waiting to retry" if waiting else ""), flush=True)
            if lister.done():
                if lister.exception():
                    failed = True
                    print(f"error: {lister.exception()}", file=sys.stderr)
                    break
                if owed - waiting == 0 and rt.resyncer.pending == 0:
                    print("backfill done: the live firehose carries on from here", flush=True)
                    break
        if args.exit_when_done or failed:
            os.kill(os.getpid(), signal.SIGTERM)

    asyncio.run(_run_until_signal(settings, on_ready=backfill))
    return 1 if failed else 0


async def _with_runtime(settings: Settings, work):
    """Start the request side of the AppView (``Runtime.start_api``: payments, no firehose, broker,
    resync or periodic jobs, so it runs safely beside a leading indexer), await ``work(rt)``, stop."""
    from openmusic.runtime import Runtime

    rt = Runtime(settings)
    await rt.start_api()
    try:
        return await work(rt)
    finally:
        await rt.stop()


def cmd_ledger(args: argparse.Namespace) -> int:
    """openmusic ledger check | reconcile | refund-purchase | refund-tip."""
    from core.db import connect_sync, migrate
    from payments import ledger

    settings = _settings(args)
    if not _require_database(args, settings):
        return 2
    _logging(settings.log_level)
    if args.action == "check":
        migrate(settings.db_path)
        conn = connect_sync(settings.db_path)
        problems = ledger.check(conn)
        (txns,) = conn.execute("SELECT COUNT(*) FROM ledger_txn").fetchone()
        print(f"{_plural(txns, 'ledger transaction')} in {settings.db_path}")
        for currency, kinds in ledger.summary(conn).items():
            print(f"  {currency}: " + ", ".join(f"{k} {v:+d}" for k, v in kinds.items()) + " (minor units)")
        for problem in problems:
            print(f"PROBLEM: {problem}")
        print("the books balance" if not problems else _plural(len(problems), "problem"))
        return 1 if problems else 0
    if not settings.payments_enabled:
        print("payments are not configured: set OPENMUSIC_STRIPE_API_KEY, OPENMUSIC_STRIPE_WEBHOOK_SECRET, "
              "OPENMUSIC_BROKER_PDS_URL, OPENMUSIC_BROKER_HANDLE, OPENMUSIC_BROKER_PASSWORD, "
              "OPENMUSIC_ATTESTATION_KEY", file=sys.stderr)
        return 2

    async def work(rt) -> int:
        if args.action == "reconcile":
            report = await rt.payments.reconcile(repair=not args.dry_run)
            print(f"checked {report.checked} credit PaymentIntents and subscriptions on Stripe; "
                  f"{'would repair' if args.dry_run else 'posted'} "
                  f"{_plural(report.repaired, 'missing ledger transaction')}")
            for problem in report.problems:
                print(f"MISMATCH: {problem}")
            return 1 if report.problems else 0
        if args.action == "refund-purchase":
            refund = await rt.payments.refund_purchase(args.target, args.amount)
            print(f"refunded {refund['amount']} {refund['currency'].upper()} of {args.target}")
            return 0
        done = await rt.payments.refund_tip(args.target)
        print("refunded; the settlement record will be republished as refunded" if done
              else f"{args.target} is not a settled tip")
        return 0 if done else 1

    from payments.service import PaymentError

    try:
        return asyncio.run(_with_runtime(settings, work))
    except PaymentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_analytics(args: argparse.Namespace) -> int:
    """openmusic analytics check | rebuild: the rollups of ``indexer.rollups`` against a recount of
    the play rows (exit 1 on a difference), or recounted into place."""
    from core.db import connect_sync, migrate
    from indexer import rollups

    settings = _settings(args)
    if not _require_database(args, settings):
        return 2
    _logging(settings.log_level)
    migrate(settings.db_path)
    conn = connect_sync(settings.db_path)
    try:
        started = time.perf_counter()
        if args.action == "check":
            conn.execute("BEGIN")  # one snapshot: plays indexed meanwhile are not half counted
            try:
                (plays,) = conn.execute("SELECT COUNT(*) FROM play").fetchone()
                differing, lines = rollups.check(conn)
            finally:
                conn.execute("ROLLBACK")
            print(f"{_plural(plays, 'play')} recounted in {settings.db_path} ({time.perf_counter() - started:.1f} s)")
            for line in lines:
                print(f"DIFFERENT: {line}")
            wrong = {table: n for table, n in differing.items() if n}
            if not wrong:
                print("the analytics rollups match the recount")
                return 0
            print("; ".join(f"{table}: {_plural(n, 'row')} differ" for table, n in wrong.items())
                  + ". `openmusic analytics rebuild` recounts them into place.")
            return 1
        conn.execute("BEGIN IMMEDIATE")
        try:
            counts = rollups.rebuild(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        print(f"rebuilt the analytics rollups of {settings.db_path} in {time.perf_counter() - started:.1f} s: "
              + ", ".join(f"{table} {_plural(n, 'row')}" for table, n in counts.items()))
        return 0
    finally:
        conn.close()


def cmd_payouts(args: argparse.Namespace) -> int:
    """openmusic payouts close PERIOD | ad-revenue PERIOD --amount N | run | explain ARTIST [--month P]."""
    settings = _settings(args)
    if not _require_database(args, settings):
        return 2
    _logging(settings.log_level)
    if args.action == "explain":
        from core.db import connect_sync, migrate
        from devkit.demo_payments import explain
        from payments.earnings import earnings

        migrate(settings.db_path)
        artist = asyncio.run(_artist_did(settings, args.artist))
        if artist is None:
            print(f"error: unknown artist {args.artist}: no account with that handle is known in "
                  f"{settings.db_path}, and it does not resolve to one; give the artist's handle as indexed, "
                  "or their DID", file=sys.stderr)
            return 1
        try:
            view = earnings(connect_sync(settings.db_path), artist, settings.currency.upper(), args.month, 500, None)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print("\n".join(explain(view)))
        return 0
    if not settings.payments_enabled:
        print("payments are not configured (see the README's Money section)", file=sys.stderr)
        return 2

    async def work(rt) -> int:
        if args.action == "close":
            r = await rt.payments.close_period(args.period)
            print(f"{r.period}: split {r.invoices} subscriber invoice(s), {r.waiting} still in service; "
                  f"ad pool {'split' if r.ads else 'not split (none entered, or the period has not ended)'}; "
                  f"{r.to_artists} to artists, {r.to_platform} to the platform (minor units of {settings.currency})")
            return 0
        if args.action == "ad-revenue":
            if args.amount is None:
                print("ad-revenue needs --amount (minor units)", file=sys.stderr)
                return 2
            done = await rt.payments.enter_ad_revenue(args.period, args.amount)
            print(f"ad pool of {args.period}: {args.amount} {settings.currency}" if done
                  else f"{args.period} already has an ad pool; it is entered once")
            return 0 if done else 1
        counts = await rt.payments.run_payouts()
        print(f"payouts: {counts['opened']} opened, {counts['paid']} paid, {counts['failed']} refused by Stripe "
              f"(returned to earnings), {counts['waiting']} to retry")
        return 0

    from payments.errors import PaymentError

    try:
        return asyncio.run(_with_runtime(settings, work))
    except (PaymentError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _artist_did(settings: Settings, actor: str) -> str | None:
    """A DID as given; a handle resolved the way the XRPC queries resolve their ``actor`` and ``artist``
    parameters (``appview.views.resolve_actor``: the database's actor table, else the network), or
    None when no account known to the database has it."""
    if actor.startswith("did:"):
        return actor
    import httpx

    from appview.views import ViewContext, resolve_actor
    from appview.xrpc import XrpcError
    from core.db import connect
    from core.identity import IdentityResolver, IdentityService

    conn = await connect(settings.db_path)
    try:
        async with httpx.AsyncClient() as http:
            identity = IdentityService(settings, conn, IdentityResolver(settings, http))
            try:
                return await resolve_actor(ViewContext(conn, identity, settings.base_url), actor, require_active=False)
            except XrpcError:
                return None
    finally:
        await conn.close()


def cmd_verify_settlement(args: argparse.Namespace) -> int:
    """openmusic verify-settlement AT-URI: check a settlement (given by its own AT-URI or its tip's)
    from the network alone."""
    import httpx

    from core.identity import IdentityError, IdentityResolver
    from payments.verify import NotVerified, is_tip_uri, verify_settlement

    settings = _settings(args)
    uri, tip_uri = args.uri, None
    if is_tip_uri(uri):
        tip_uri = uri
        uri = _settlement_of_tip(args, settings, tip_uri)
        if uri is None:
            return 2
        print(f"the settlement of {tip_uri} is {uri}")

    async def go() -> int:
        async with httpx.AsyncClient() as http:
            try:
                lines = await verify_settlement(uri, IdentityResolver(settings, http), http,
                                                settings.allow_private_hosts, tip_uri=tip_uri)
            except (NotVerified, IdentityError, httpx.HTTPError) as exc:
                print(f"NOT VERIFIED: {exc}")
                return 1
        for line in lines:
            print(f"ok  {line}")
        print("VERIFIED")
        return 0

    return asyncio.run(go())


def _settlement_of_tip(args: argparse.Namespace, settings: Settings, tip_uri: str) -> str | None:
    """The settlement AT-URI of ``tip_uri``: derived from the tip with ``--broker``, else the one an
    AppView database indexed for it (read-only). None, with the reason printed, when neither says."""
    import sqlite3

    from payments.verify import settlement_uri

    if args.broker:
        if not args.broker.startswith("did:"):
            print(f"error: --broker takes the broker repo's DID, not {args.broker!r}", file=sys.stderr)
            return None
        return settlement_uri(args.broker, tip_uri)
    if not args.db_path and not os.environ.get("OPENMUSIC_DB_PATH") and not Path(settings.db_path).exists():
        print(f"error: {tip_uri} is a tip; to find its settlement give --broker DID (the broker repo that "
              "settles it: the settlement's key is derived from the tip) or --db-path / OPENMUSIC_DB_PATH "
              "(an AppView database that indexed it). Or give the settlement's own AT-URI.", file=sys.stderr)
        return None
    if not _require_database(args, settings):
        return None
    conn = sqlite3.connect(f"{Path(settings.db_path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT uri FROM settlement WHERE tip_uri = ? ORDER BY verified = 1 DESC, settled_at DESC "
                           "LIMIT 1", (tip_uri,)).fetchone()
    finally:
        conn.close()
    if row is None:
        print(f"error: {settings.db_path} holds no settlement of {tip_uri} (not settled yet, or not indexed "
              "there); with --broker DID the settlement is looked up on the broker's PDS instead", file=sys.stderr)
        return None
    return row[0]


def cmd_migrate(args: argparse.Namespace) -> int:
    from core.db import migrate, shown_target

    settings = _settings(args)
    print(f"applied {_plural(migrate(settings.database), 'migration')} to {shown_target(settings.database)}")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    """openmusic db partitions [--through YYYY-MM] [--since YYYY-MM] [--analyze]: on PostgreSQL,
    create the monthly partitions of ``play`` through a month (default: ``AHEAD_MONTHS`` after this
    one), moving rows out of ``play_before`` / ``play_after`` (``indexer.partitions``), optionally ``ANALYZE play``,
    then list the months. Exit 2 on SQLite (which has no partitions)."""
    from core.db import connect_sync, is_postgres, migrate, shown_target
    from indexer import partitions

    settings = _settings(args)
    target = settings.database
    if not is_postgres(target):
        print("error: play is partitioned on PostgreSQL only (set OPENMUSIC_DATABASE_URL)", file=sys.stderr)
        return 2
    _logging(settings.log_level)
    migrate(target)
    through = args.through or partitions.add_months(partitions.current_month(), partitions.AHEAD_MONTHS)
    conn = connect_sync(target)
    try:
        conn.execute("BEGIN IMMEDIATE")  # the write lock: the indexer's batches wait for it
        try:
            created = partitions.ensure_months(conn, through, since=args.since)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        months = partitions.months(conn)
        before = conn.execute(f"SELECT count(*) FROM {partitions.BEFORE_PARTITION}").fetchone()[0]
        after = conn.execute(f"SELECT count(*) FROM {partitions.AFTER_PARTITION}").fetchone()[0]
    finally:
        conn.close()
    if args.analyze:
        partitions.analyze(target)
    print(f"{shown_target(target)}: created {', '.join(created) or 'no partition'}; play has "
          f"{_plural(len(months), 'month')} ({months[0] if months else '-'} .. {months[-1] if months else '-'}) "
          f", {_plural(before, 'row')} before them ({partitions.BEFORE_PARTITION}) and {_plural(after, 'row')} "
          f"after them ({partitions.AFTER_PARTITION})"
          f"{'; analyzed' if args.analyze else ''}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from core.publish import (
        PdsClient,
        PublishError,
        image_mime,
        publish_album,
        publish_profile,
        publish_track,
    )

    password = args.password or os.environ.get("OPENMUSIC_PASSWORD")
    if not args.audio and not args.display_name:
        print("error: give audio files to publish, or --display-name to write your profile", file=sys.stderr)
        return 2
    if not password:
        print("error: give an app password with OPENMUSIC_PASSWORD (preferred) or --password", file=sys.stderr)
        return 2
    try:
        client = PdsClient(args.pds, args.handle, password)
        if args.display_name:
            avatar = None
            if args.avatar:
                av = Path(args.avatar)
                avatar = client.upload_blob(av.read_bytes(), image_mime(av))
            ref = publish_profile(client, args.display_name, description=args.bio, roles=args.role or ["artist"],
                                  avatar=avatar)
            print(ref.uri)
        artwork = None
        if args.artwork:
            art = Path(args.artwork)
            artwork = client.upload_blob(art.read_bytes(), image_mime(art))
        extra: dict = {}
        if args.genre:
            extra["genre"] = args.genre
        if args.tag:
            extra["tags"] = args.tag
        if args.ai_level:
            extra["aiDisclosure"] = {"level": args.ai_level}
        if args.description:
            extra["description"] = args.description
        album = publish_album(client, args.album, [], artwork=artwork) if args.album else None
        refs = []
        for i, path in enumerate(args.audio):
            title = args.title if (args.title and len(args.audio) == 1) else None
            track_extra = dict(extra, trackNumber=i + 1) if album else extra
            ref = publish_track(client, Path(path), title=title, artwork=artwork, album=album, extra=track_extra)
            refs.append(ref)
            print(ref.uri)
        if album:
            final = publish_album(client, args.album, refs, rkey=album.uri.rsplit("/", 1)[1], artwork=artwork)
            print(final.uri)
    except (PublishError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_feeds(args: argparse.Namespace) -> int:
    """``openmusic feeds publish``: write our Bluesky feeds' ``app.bsky.feed.generator`` records in the
    publisher's repo (``feedgen.publish.publish_feeds``); prints their AT-URIs."""
    from core.publish import PdsClient, PublishError
    from feedgen.publish import publish_feeds

    password = args.password or os.environ.get("OPENMUSIC_PASSWORD")
    if not password:
        print("error: give --password or set OPENMUSIC_PASSWORD", file=sys.stderr)
        return 2
    try:
        client = PdsClient(args.pds, args.handle, password)
        uris = publish_feeds(client, _settings(args).feedgen_did_resolved)
    except PublishError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(uris))
    print(f"serve them with OPENMUSIC_FEEDGEN_PUBLISHER_DID={client.did} (or make it the first operator DID)")
    return 0


def cmd_lexicons(args: argparse.Namespace) -> int:
    """``openmusic lexicons publish``: write every lexicon under ``lexicons/`` as a
    ``com.atproto.lexicon.schema`` record in the publisher's repo (``core.lexicon_publish``), only
    what changed; prints what it did and the ``_lexicon`` DNS TXT records to add."""
    from core.lexicon_publish import publish_lexicons
    from core.publish import PdsClient, PublishError

    password = args.password or os.environ.get("OPENMUSIC_PASSWORD")
    if not password:
        print("error: give --password or set OPENMUSIC_PASSWORD", file=sys.stderr)
        return 2
    try:
        client = PdsClient(args.pds, args.handle, password)
        report = publish_lexicons(client, prune=args.prune, dry_run=args.dry_run)
    except (PublishError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    would = "would be " if args.dry_run else ""
    for verb, nsids in (("created", report.created), ("updated", report.updated), ("deleted", report.deleted)):
        for nsid in nsids:
            print(f"{would}{verb} at://{report.did}/com.atproto.lexicon.schema/{nsid}")
    for nsid in report.stale:
        if nsid not in report.deleted:
            print(f"stale (no file; --prune deletes it) at://{report.did}/com.atproto.lexicon.schema/{nsid}")
    print(f"{_plural(len(report.unchanged), 'lexicon')} unchanged, "
          f"{len(report.created)} {would}created, {len(report.updated)} {would}updated")
    print("DNS TXT records that make this repo the lexicons' authority (one per NSID group; "
          "resolvers do not walk up the DNS tree):")
    for name, value in report.dns:
        print(f'  {name}  TXT  "{value}"')
    return 0


def cmd_devnet(args: argparse.Namespace) -> int:
    from devkit import devnet

    devnet.install()
    if args.action == "install":
        return 0
    with devnet.Devnet(pds_port=args.pds_port, plc_port=args.plc_port) as net:
        print(json.dumps({"pds": net.pds_url, "plc": net.plc_url, "firehose": net.firehose_url}), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


class DemoBusy(Exception):
    """Another demo holds the data directory, or a port the demo needs is taken; ``str()`` says which."""


def lock_data_dir(data: Path):
    """Take the demo's exclusive lock on ``data``: ``flock`` on ``<data>.lock`` beside it (not inside:
    the directory is wiped). Returns the open lock file; the lock lasts while it is open (the process's
    life). Raises ``DemoBusy`` naming the process that holds it."""
    import fcntl

    path = data.parent / f"{data.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(path, "a+")  # noqa: SIM115 - held open for the life of the demo
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip()
        lock.close()
        raise DemoBusy(f"another openmusic demo is running on {data} (it holds {path}"
                       + (f", process {holder}" if holder else "") + "); stop it first, or give this one "
                       "another --data-dir and --port") from None
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def check_port_free(host: str, port: int, what: str) -> None:
    """Raise ``DemoBusy`` unless ``port`` can be bound on ``host`` now (every address ``host`` names),
    the way a server binds it (``SO_REUSEADDR``, so only a socket in use counts)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise DemoBusy(f"cannot bind {what} on {host}: {exc}") from None
    for family, kind, proto, _name, addr in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and addr[0] == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # as localstripe binds it
            try:
                sock.bind(addr)
            except OSError as exc:
                raise DemoBusy(f"port {port} ({what}) is in use on {host} ({exc.strerror}): is another "
                               "openmusic demo running? Stop it, or give this one another --port "
                               f"(the demo uses --port, --port + 1 and --port + 2)") from None


def demo_preflight(args: argparse.Namespace):
    """Before the demo deletes or starts anything: take the data directory's lock and check that its
    three ports are free. Returns the lock file (keep it open). Raises ``DemoBusy``."""
    lock = lock_data_dir(Path(args.data_dir))
    try:
        check_port_free(args.host, args.port, "the AppView and web app")
        check_port_free("::" if _has_dual_stack() else "0.0.0.0", args.port + 1, "localstripe")
        check_port_free("127.0.0.1", args.port + 2, "the Stripe Connect stub")
    except DemoBusy:
        lock.close()
        raise
    return lock


def _has_dual_stack() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            return True
    except OSError:
        return False


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        lock = demo_preflight(args)  # first: a second demo must not wipe the first one's data
    except DemoBusy as exc:
        print(f"error: {exc}. Nothing was deleted or started.", file=sys.stderr)
        return 1
    try:
        return _run_demo(args)
    finally:
        lock.close()


def _run_demo(args: argparse.Namespace) -> int:
    from devkit import devnet
    from devkit.connect_stub import serve_in_thread
    from devkit.demo_payments import create_monthly_price, demo_subscription_and_payout, start_localstripe
    from devkit.seed import seed
    from payments.attest import new_secret

    devnet.install()
    data = Path(args.data_dir)
    shutil.rmtree(data, ignore_errors=True)  # the devnet's PLC lives in memory: every demo starts fresh
    print("starting the local reference PDS + PLC, and localstripe ...", flush=True)
    stripe_port = args.port + 1
    stripe_proc = start_localstripe(stripe_port)
    stub_server = None
    try:
        _stub, stub_server = serve_in_thread(args.port + 2)  # Stripe Connect, which localstripe lacks
        price = create_monthly_price(f"http://127.0.0.1:{stripe_port}", "plan_openmusic_plus", 999, "USD", "Plus")
        with devnet.Devnet() as net:
            net.create_account("openmusic-broker.test", "broker-password-1234")
            operator = net.create_account(DEMO_OPERATOR, DEMO_PASSWORD)  # sees /dashboard/operator
            # atproto accepts a did:web with a port only on localhost: the service DID is did:web:localhost%3A<port>.
            public = f"http://localhost:{args.port}" if args.host in ("127.0.0.1", "localhost") else None
            settings = Settings.from_env(
                firehose_url=net.firehose_url, plc_url=net.plc_url, handle_resolver_url=net.pds_url,
                allow_private_hosts=True, start_cursor=0, db_path=str(data / "openmusic.sqlite"),
                blob_cache_dir=str(data / "blobs"), port=args.port, host=args.host, log_level=args.log_level,
                public_url=public, stripe_api_key="sk_test_openmusic", stripe_api_base=f"http://127.0.0.1:{stripe_port}",
                stripe_webhook_secret="whsec_openmusic_demo", broker_pds_url=net.pds_url,
                broker_handle="openmusic-broker.test", broker_password="broker-password-1234",
                attestation_key=new_secret(), processor_ref_salt=new_secret(),
                tiers=json.dumps([{"id": "plus", "name": "Plus", "monthlyPrice": 999, "stripePrice": price}]),
                stripe_connect_api_base=f"http://127.0.0.1:{args.port + 2}", payout_threshold=100,
                operator_dids=operator.did)
            _logging(settings.log_level)

            async def ready(rt) -> None:
                print(f"PDS {net.pds_url}  PLC {net.plc_url}  Stripe (localstripe) {settings.stripe_api_base}  "
                      f"AppView {settings.base_url}", flush=True)
                print("seeding the demo catalog through the PDS API ...", flush=True)
                result = await asyncio.to_thread(seed, net)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    cur = await rt.reader.execute("SELECT (SELECT COUNT(*) FROM track), (SELECT COUNT(*) FROM play)")
                    tracks, plays = await cur.fetchone()
                    if tracks >= len(result.tracks) and plays >= result.plays:
                        break
                    await asyncio.sleep(0.2)
                print("a listener buys credit through Stripe and tips an artist and a song ...", flush=True)
                tip_uri = await _demo_tips(rt, net, result)
                print("a listener subscribes and plays; the month closes; the artist is paid out ...", flush=True)
                payout_uri, aurora = await demo_subscription_and_payout(rt, net, result)
                print(_demo_banner(settings.base_url, result, tracks, plays, tip_uri, payout_uri, aurora,
                                   pds=net.pds_url, plc=net.plc_url, broker=rt.payments.broker.did,
                                   db_path=settings.db_path), flush=True)
                if args.exit_after_seed:
                    os.kill(os.getpid(), signal.SIGTERM)

            asyncio.run(_run_until_signal(settings, on_ready=ready))
    finally:
        stripe_proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            stripe_proc.wait(timeout=10)
        if stub_server is not None:
            stub_server.should_exit = True
    return 0


async def _demo_tips(rt, net, result) -> str:
    """River (a seeded listener) buys $20.00 of credit the way a client does (service-auth JWT from
    their PDS, Stripe.js's confirm) and tips Aurora Tide $3.00 and one of her songs $0.50. Returns
    the song tip's AT-URI once its settlement is indexed and verified."""
    import httpx

    from core.publish import PdsClient, tip
    from devkit.demo_payments import pay_with_test_card, register_webhook

    s = rt.settings
    await asyncio.to_thread(register_webhook, s.stripe_api_base, f"{s.base_url}/stripe/webhook", s.stripe_webhook_secret)
    river = await asyncio.to_thread(PdsClient, net.pds_url, "river-listens.test", "demo-password-1234")
    nsid = "fm.openmusic.payment.createCreditPurchase"
    token = await asyncio.to_thread(river.service_auth, rt.payments.service_did, nsid)
    async with httpx.AsyncClient(base_url=s.base_url, timeout=30) as http:
        resp = await http.post(f"/xrpc/{nsid}", json={"amount": 2000}, headers={"authorization": f"Bearer {token}"})
        resp.raise_for_status()
        await asyncio.to_thread(pay_with_test_card, s.stripe_api_base, resp.json()["paymentIntent"])
    aurora = result.dids["aurora-tide.test"]
    song = next(t for t in result.tracks if t.uri.startswith(f"at://{aurora}/"))
    for _ in range(100):  # the credit arrives with Stripe's signed webhook
        if (await rt.payments.balance(river.did))["credit"] >= 2000:
            break
        await asyncio.sleep(0.1)
    await asyncio.to_thread(tip, river, aurora, 300, message="Loved the set!")
    song_tip = await asyncio.to_thread(tip, river, aurora, 50, track=song)
    for _ in range(300):
        cur = await rt.reader.execute("SELECT 1 FROM settlement WHERE tip_uri = ? AND verified = 1", (song_tip.uri,))
        if await cur.fetchone():
            break
        await asyncio.sleep(0.1)
    return song_tip.uri


#: The demo's accounts (``devkit.seed``; the broker and the operator are made by ``cmd_demo``) and their password.
DEMO_PASSWORD = "demo-password-1234"
DEMO_OPERATOR = "ops-desk.test"


def _demo_banner(base: str, result, tracks: int, plays: int, tip_uri: str, payout_uri: str, earnings: dict, *,
                 pds: str, plc: str, broker: str, db_path: str) -> str:
    """What the demo prints once it is ready: where things are and commands that work on it as printed."""
    from devkit.demo_payments import explain
    from devkit.seed import ARTISTS, LISTENERS, MANAGER

    artist = "aurora-tide.test"
    t = result.tracks[0].uri
    album = result.albums[0].uri if result.albums else ""
    cli = ".venv/bin/openmusic"
    web = base.replace("://localhost:", "://127.0.0.1:")  # the OAuth loopback client's redirect is on 127.0.0.1
    lines = [
        "", f"Open Music AppView is up: {_plural(tracks, 'track')} and {_plural(plays, 'play')} indexed from the "
        "PDS firehose.",
        f"  Browse and listen:  {web}/", f"  Health:             {base}/health",
        f"  Sign in:            {web}/login  (a listener's handle, e.g. kim-plays.test; plays and likes go to "
        f"their own PDS)",
        f"  Wallet:             {web}/wallet  (buy credit with the test card 4242 4242 4242 4242, tip from a "
        f"track or artist page, subscribe)",
        f"  Local PDS:          {pds}   PLC: {plc}   (random ports, new each run)",
        f"  Demo accounts (password {DEMO_PASSWORD}): artists " + ", ".join(a["handle"] for a in ARTISTS)
        + "; listeners " + ", ".join(h for h, _name in LISTENERS) + f"; manager {MANAGER[0]} (of {MANAGER[2]}); "
        f"operator {DEMO_OPERATOR}",
        f"  Studio:             {web}/studio  (signed in as an artist: upload a song from the browser to your PDS)",
        f"  Dashboards:         {web}/dashboard  (artist), {web}/dashboard/manager, {web}/dashboard/operator",
        "", "Try:",
        f"  curl '{base}/xrpc/fm.openmusic.catalog.searchTracks?q=neon'",
        f"  curl '{base}/xrpc/fm.openmusic.catalog.searchTracks?sort=plays&limit=5'",
        f"  curl '{base}/xrpc/fm.openmusic.catalog.getArtistTracks?actor={artist}'",
        f"  curl '{base}/xrpc/fm.openmusic.catalog.getTrack?uri={t}'",
        f"  curl '{base}/xrpc/fm.openmusic.listen.getTrackStats?uri={t}'",
        f"  curl '{base}/xrpc/fm.openmusic.catalog.getAlbum?uri={album}'",
        f"  curl '{base}/xrpc/fm.openmusic.actor.getProfile?actor={artist}'",
        f"  curl '{base}/xrpc/fm.openmusic.listen.getPlays?actor=river-listens.test'",
        "Publish a track as a demo artist from the command line too (any audio file; it shows up within seconds):",
        f"  OPENMUSIC_PASSWORD={DEMO_PASSWORD} {cli} publish --pds {pds} --handle {artist} song.mp3",
        "", "Money (Stripe is localstripe here): river-listens.test bought credit and tipped; the broker settled it",
        "and wrote signed settlement records in its own repo (openmusic-broker.test), verifiable by anyone:",
        f"  curl '{base}/xrpc/fm.openmusic.payment.getTips?artist={artist}'",
        f"  curl '{base}/xrpc/fm.openmusic.payment.getSettlement?uri={tip_uri}'",
        f"  curl '{base}/.well-known/did.json'      # the key that signs settlements",
        "Verify the song tip's settlement from the network alone (the broker's and River's PDS, DID documents):",
        f"  {cli} verify-settlement {tip_uri} --broker {broker} --plc-url {plc} --allow-private-hosts",
        f"  {cli} ledger check --db-path {db_path}",
        "", "Subscriptions and payouts: sam-hears.test subscribed to Plus and played two of Aurora's songs (paid",
        "streams); the demo closed Sam's month early and paid Aurora out through Stripe Connect (a stub here).",
        "The signed payout record, in the broker's repo:",
        f"  curl '{pds}/xrpc/com.atproto.repo.getRecord?repo={payout_uri[5:].split('/')[0]}"
        f"&collection=fm.openmusic.payment.payout&rkey={payout_uri.rsplit('/', 1)[-1]}'",
        "and what it covers, line by line down to the seconds heard (payment.getEarnings, as Aurora sees it):",
        *explain(earnings),
        f"  {cli} payouts explain {artist} --db-path {db_path}",
        "", "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of the openmusic command: each subcommand (and each ledger and payouts
    action) takes only the flags it uses."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="openmusic", description=__doc__, formatter_class=raw)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", help="firehose + indexer + AppView, or one role of them",
                       description="Consume the firehose, index it, and serve the AppView over HTTP. With "
                       "--role: all (default) does both, indexing while it leads; api serves the AppView, web "
                       "app and feeds from the database; indexer indexes while it leads and serves /health. "
                       "One process leads at a time (a lock beside the database); the others stand by.")
    _add_settings_flags(p)
    p.add_argument("--role", choices=ROLES,
                   help="what this process does (OPENMUSIC_ROLE; default all)")
    p.add_argument("--no-firehose", action="store_true", help="serve the database without consuming")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("cluster", help="PostgreSQL, 2 indexers, API replicas behind a proxy, as processes here",
                       description="Start the topology of `docker compose --profile cluster` as processes on this "
                       "machine: PostgreSQL (OPENMUSIC_DATABASE_URL, else a throwaway cluster from the machine's "
                       "initdb/pg_ctl), `openmusic migrate` once, the indexers (--role indexer: one leads, the others "
                       "stand by) and the API replicas (--role api) on the ports after --port, and a round-robin "
                       "proxy on --port (nginx with deploy/nginx.conf when installed, else a Python one). Prints "
                       "where everything is; a process that exits is started again; Ctrl-C or SIGTERM stops them all.")
    _add_settings_flags(p, CLUSTER_FLAGS)
    p.add_argument("--host", default="127.0.0.1", help="the proxy's bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080,
                   help="the proxy's port (default 8080); the replicas, then the indexers take the next ones")
    p.add_argument("--replicas", type=int, default=2, help="API processes (default 2)")
    p.add_argument("--indexers", type=int, default=2, help="indexer processes: a leader and standbys (default 2)")
    p.add_argument("--data-dir", default="data/cluster",
                   help="shared by every process: key files, blob cache, logs/, cluster.json (default data/cluster)")
    p.add_argument("--database-url", help="PostgreSQL to use (default OPENMUSIC_DATABASE_URL, else a throwaway one)")
    p.add_argument("--sqlite", action="store_true", help="one SQLite file in the data folder instead of PostgreSQL")
    p.add_argument("--proxy", choices=("auto", "nginx", "python"), default="auto",
                   help="the reverse proxy (default auto: nginx when installed, else Python)")
    p.set_defaults(func=cmd_cluster)
    p = sub.add_parser("backfill", help="import the repos that already hold music, then go on live",
                       description="Find the repos that already hold music, import them (verified CARs) "
                       "while serving the AppView, then carry on with the live firehose.")
    _add_settings_flags(p)
    p.add_argument("--source", help="relay or PDS to list repos from (default: the firehose host)")
    p.add_argument("--exit-when-done", action="store_true", help="stop once every repo found is imported")
    p.set_defaults(func=cmd_backfill)

    payments_env = ("Payment settings (Stripe, the broker account, the attestation key) come from "
                    "OPENMUSIC_* variables (see the README's Money section).")
    p = sub.add_parser("ledger", help="check the books, reconcile with Stripe, refund",
                       description="The books of an AppView's database. " + payments_env)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("check", help="check the ledger's invariants (exit 1 on a problem)",
                           description="Check that every ledger transaction and the whole ledger sum to zero "
                           "(exit 1 on a problem).")
    _add_settings_flags(a, ("db_path", "log_level"))
    a = actions.add_parser("reconcile", help="compare Stripe with the ledger and post what is missing",
                           description="Compare every credit PaymentIntent and subscription invoice on Stripe "
                           "with the ledger and post what is missing. " + payments_env)
    a.add_argument("--dry-run", action="store_true", help="report only, post nothing")
    _add_settings_flags(a, STATE_FLAGS)
    a = actions.add_parser("refund-purchase", help="refund credit through Stripe",
                           description="Refund a credit purchase through Stripe. " + payments_env)
    a.add_argument("target", metavar="PAYMENT_INTENT", help="the credit purchase's PaymentIntent ID")
    a.add_argument("--amount", type=int, help="minor units to refund (default: all)")
    _add_settings_flags(a, STATE_FLAGS)
    a = actions.add_parser("refund-tip", help="move a settled tip back to the payer's credit",
                           description="Move a settled tip back to the payer's credit; its settlement record is "
                           "republished as refunded. " + payments_env)
    a.add_argument("target", metavar="TIP_URI", help="the tip's AT-URI")
    _add_settings_flags(a, STATE_FLAGS)
    p.set_defaults(func=cmd_ledger)

    p = sub.add_parser("payouts", help="close a period, enter ad revenue, pay artists out, explain earnings",
                       description="Periods and payouts of an AppView's database. PERIOD is YYYY-MM (UTC). "
                       + payments_env)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("close", help="split a period's subscription fees and ad pool",
                           description="Split each subscriber's net fee of the period (service period ended) "
                           "among the tracks they streamed, and the ad pool by free-tier listening. Running it "
                           "again, or before the period has ended, changes nothing. " + payments_env)
    a.add_argument("period", metavar="PERIOD", help="YYYY-MM")
    _add_settings_flags(a, STATE_FLAGS)
    a = actions.add_parser("ad-revenue", help="enter a period's ad revenue, once",
                           description="Enter the period's ad revenue (minor units), once. " + payments_env)
    a.add_argument("period", metavar="PERIOD", help="YYYY-MM")
    a.add_argument("--amount", type=int, required=True, help="minor units")
    _add_settings_flags(a, STATE_FLAGS)
    a = actions.add_parser("run", help="pay every artist above the threshold through Stripe Connect",
                           description="Pay every artist whose earnings reach OPENMUSIC_PAYOUT_THRESHOLD through "
                           "Stripe Connect, with a signed payout record. Safe to schedule and to run again: "
                           "nothing is paid twice. " + payments_env)
    _add_settings_flags(a, STATE_FLAGS)
    a = actions.add_parser("explain", help="an artist's earnings line by line",
                           description="An artist's earnings line by line, down to the seconds heard, from the "
                           "database; a handle is resolved as the XRPC queries resolve one (the database's "
                           "accounts first, then the network).")
    a.add_argument("artist", metavar="ARTIST", help="the artist's handle or DID")
    a.add_argument("--month", help="only this period (YYYY-MM)")
    _add_settings_flags(a, ("db_path", "plc_url", "handle_resolver_url", "allow_private_hosts", "log_level"))
    p.set_defaults(func=cmd_payouts)

    p = sub.add_parser("analytics", help="check the analytics rollups against the plays, or rebuild them",
                       description="The analytics rollups of an AppView's database (per track and day, per "
                       "listener and country, per second of each track), which the indexer keeps as plays come.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("check", help="recount the rollups from the plays and report any difference (exit 1)",
                           description="Recount every rollup from the play rows, in one snapshot, and compare: "
                           "each difference is printed, and the exit code is 1 when there is one. Changes nothing.")
    _add_settings_flags(a, ("db_path", "log_level"))
    a = actions.add_parser("rebuild", help="recount the rollups from the plays into place",
                           description="Delete the rollups and recount them from the play rows in one transaction. "
                           "A running AppView's indexer waits for it (and retries its batch if it waits too long).")
    _add_settings_flags(a, ("db_path", "log_level"))
    p.set_defaults(func=cmd_analytics)

    p = sub.add_parser(
        "verify-settlement", help="verify a settlement record from the network alone", formatter_class=raw,
        description="Check a settlement record from the network alone: fetch it from the broker's PDS, check "
        "its signature\nagainst the signer's DID document, fetch the tip from the payer's PDS and check that "
        "they agree.\n\n"
        "URI is the settlement's AT-URI, or its tip's. For a tip, the settlement is found with --broker DID (its\n"
        "record key is derived from the tip: nothing but the network is read), or else in the AppView database\n"
        "given by --db-path / OPENMUSIC_DB_PATH (only to find the settlement's AT-URI; the checks still read\n"
        "the network alone).\n\n"
        "On a local network (the demo) give its PLC with --plc-url and --allow-private-hosts, as the demo's\n"
        "banner prints them.")
    p.add_argument("uri", metavar="URI", help="at://<broker DID>/fm.openmusic.payment.settlement/<rkey>, or "
                   "at://<payer DID>/fm.openmusic.payment.tip/<rkey>")
    p.add_argument("--broker", metavar="DID", help="with a tip's URI: the DID of the broker repo that settles it")
    _add_settings_flags(p, ("db_path", "plc_url", "allow_private_hosts"))
    p.set_defaults(func=cmd_verify_settlement)
    p = sub.add_parser("migrate", help="apply database migrations",
                       description="Apply pending migrations to the database (creating it if missing).")
    _add_settings_flags(p, ("db_path",))
    p.set_defaults(func=cmd_migrate)
    p = sub.add_parser("db", help="database upkeep (PostgreSQL: play's monthly partitions)",
                       description="Upkeep of a PostgreSQL database: the monthly partitions of play.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("partitions", help="create play's months through a month, then list them",
                           description="Create the monthly partitions of play from --since (default: the "
                                       "oldest partition) through --through (default: 3 months ahead), moving "
                                       "their rows out of play_before or play_after, then list them. The running indexer "
                                       "does this daily; this is for catching up or going further.")
    a.add_argument("--through", metavar="YYYY-MM", help="the last month to create (default: 3 months ahead)")
    a.add_argument("--since", metavar="YYYY-MM", help="the first month to create (default: the oldest partition)")
    a.add_argument("--analyze", action="store_true", help="then ANALYZE play (the parent's statistics)")
    _add_settings_flags(a, ("db_path", "log_level"))
    a.set_defaults(func=cmd_db)
    p = sub.add_parser("publish", help="publish audio from your own PDS",
                       description="Upload audio (and artwork) as blobs to your own PDS and write "
                       "fm.openmusic.catalog.track records (and an album, and your profile). Prints the "
                       "AT-URIs written.")
    p.add_argument("--pds", required=True, help="your PDS URL, e.g. https://bsky.social")
    p.add_argument("--handle", required=True, help="your handle or DID")
    p.add_argument("--password", help="app password (better: OPENMUSIC_PASSWORD in the environment)")
    p.add_argument("--title", help="track title (one file only; default: the file's tag or name)")
    p.add_argument("--album", help="also write an album with this title listing the tracks in order")
    p.add_argument("--artwork", help="PNG/JPEG/WebP cover for the tracks (and album)")
    p.add_argument("--genre")
    p.add_argument("--tag", action="append", help="repeatable")
    p.add_argument("--description")
    p.add_argument("--ai-level", choices=["human", "assisted", "generated"], help="AI disclosure")
    p.add_argument("--display-name", help="also write your fm.openmusic.actor.profile with this name")
    p.add_argument("--bio", help="profile description (with --display-name)")
    p.add_argument("--avatar", help="profile picture, PNG/JPEG/WebP (with --display-name)")
    p.add_argument("--role", action="append", choices=["artist", "listener", "manager"],
                   help="profile role, repeatable (with --display-name; default artist)")
    p.add_argument("audio", nargs="*", help="audio files (MP3, FLAC, Ogg, WAV, M4A...)")
    p.set_defaults(func=cmd_publish)
    p = sub.add_parser("feeds", help="publish our Bluesky feeds (app.bsky.feed.generator records)",
                       description="Write the app.bsky.feed.generator records of the feed generator's feeds "
                       "(fresh, artists-you-follow) in the publisher's repo, naming our feed generator's DID "
                       "(OPENMUSIC_FEEDGEN_DID, default our did:web). Publishing again updates them.")
    p.add_argument("action", choices=["publish"])
    p.add_argument("--pds", required=True, help="the publisher's PDS URL")
    p.add_argument("--handle", required=True, help="the publisher's handle or DID")
    p.add_argument("--password", help="app password (better: OPENMUSIC_PASSWORD in the environment)")
    p.add_argument("--public-url", dest="public_url", help="this AppView's public URL (default OPENMUSIC_PUBLIC_URL)")
    p.set_defaults(func=cmd_feeds)
    p = sub.add_parser("lexicons", help="publish our lexicons as com.atproto.lexicon.schema records",
                       description="Write every lexicon under lexicons/fm/openmusic/ as a com.atproto.lexicon.schema record "
                       "(record key: its NSID) in the publisher's repo, the lexicon authority of fm.openmusic.*. "
                       "Only new or changed lexicons are written; running it again changes nothing. Prints what "
                       "it did and the _lexicon.<authority> DNS TXT records (did=<DID>) the operator adds.")
    p.add_argument("action", choices=["publish"])
    p.add_argument("--pds", required=True, help="the publisher's PDS URL")
    p.add_argument("--handle", required=True, help="the publisher's handle or DID")
    p.add_argument("--password", help="app password (better: OPENMUSIC_PASSWORD in the environment)")
    p.add_argument("--dry-run", action="store_true", help="compare and report only, write nothing")
    p.add_argument("--prune", action="store_true", help="also delete fm.openmusic.* schema records that have no file")
    p.set_defaults(func=cmd_lexicons)
    p = sub.add_parser("devnet", help="the local reference PDS + PLC (npm @atproto/dev-env)",
                       description="install: fetch Node 22 and the reference PDS + PLC into devnet/. start: run "
                       "them on loopback and print their URLs as JSON.")
    p.add_argument("action", choices=["install", "start"])
    p.add_argument("--pds-port", type=int, default=2583, help="start: the PDS's port (default 2583)")
    p.add_argument("--plc-port", type=int, default=2582, help="start: the PLC's port (default 2582)")
    p.set_defaults(func=cmd_devnet)
    p = sub.add_parser("demo", help="local network + seeded catalog + AppView",
                       description="Start a local reference PDS + PLC (random ports), localstripe on --port + 1, "
                       "the Stripe Connect stub on --port + 2, seed a demo catalog and its payments, and serve "
                       "the AppView on --port. Refuses to start while another demo holds the data directory or "
                       "a port is taken.")
    p.add_argument("--host", default="127.0.0.1", help="the AppView's bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080,
                   help="the AppView's port (default 8080); localstripe and the Connect stub take the next two")
    p.add_argument("--data-dir", default="data/demo",
                   help="wiped at start (default data/demo); locked while the demo runs (<data-dir>.lock)")
    p.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default WARNING)")
    p.add_argument("--exit-after-seed", action="store_true", help="stop once the catalog is indexed (smoke test)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``openmusic`` console script. Returns the exit code."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
