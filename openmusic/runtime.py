"""Wires the parts together: firehose consumer -> indexer -> SQLite <- AppView.

A process plays one role (``Settings.role``, ``openmusic run --role``; ``core.config.ROLES``):

- ``api``: ``start_api``, then ``serve``: the AppView, the web app and the feed generator over the
  database; no firehose, resync, label streams, payment workers or periodic jobs.
- ``indexer``: ``serve_indexer`` (``/health`` and ``/metrics`` only) at once; once it leads
  (``core.leader``), ``start_indexing``: the firehose consumer and indexer, resync, the identity
  refresher, the label store's sweeps and streams, the payment broker and the settlement verifier,
  the reputation refresh.
- ``all`` (the default): both in one process, indexing once it leads.

``run(stop)`` plays the role. One process leads at a time: a standby waits for the lock, then starts
from the durable cursor. ``start()`` starts everything at once without an election: for tools and
tests that own their database. On PostgreSQL the lock is an advisory lock of a session of its own
(``core.leader.PgLeadership``), and the leader's writer checks before each COMMIT that the lock is
still its own (``Indexer.fence``): a leader whose session was lost cannot commit after a standby
took over. The broker's outbox and the settlement verifier are leader-only (``start_indexing``);
payout runs and period closes take a lock of their own (``payments.service.Payments.once``).

The AppView's reader pool reads ``Settings.database_read`` (a read replica when
``OPENMUSIC_DATABASE_READ_URL`` is set); every write goes to the primary.

What an ``api`` process still writes, each on a connection of its own: the web app's OAuth requests
and sessions, notification ``seenAt``, purchase clicks and teal.fm opt-ins (``WebApp.conn``);
``createReport`` reports, ``updateSeen`` and the service-auth replay guard (``ServiceAuth.db``); the
moderation queue's labels, actions and report states (``LabelIssuer.conn``); the payments taken on
requests (Stripe webhooks, credit purchases, card setups, subscriptions: the ledger and the broker's
outbox, which the leader publishes) and the search text of an artist whose handle a request found
changed (``writer``, an ``Indexer`` used only to write); the identities refreshed on demand
(``IdentityService.conn``). SQLite in WAL lets several processes write, one transaction at a time:
each write waits for the others up to the connections' ``busy_timeout`` (10 s, ``core.db``). The
indexer's batches are short transactions, so those waits are short too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import aiosqlite
import httpx
import uvicorn

from appview import charts, recommend, reputation
from appview.blobs import BlobStore
from appview.views import ViewContext
from core import db
from core.config import ROLES, Settings
from core.identity import IdentityResolver, IdentityService
from core.leader import Leadership, leadership_for
from core.publish import PdsClient
from firehose.consumer import FirehoseConsumer
from firehose.labels import LabelConsumer
from firehose.verify import Verifier
from indexer import partitions
from indexer import settlement as settlement_indexer
from indexer import share as share_indexer
from indexer.core import Indexer
from indexer.labeler_issue import LabelIssuer, add_to_document, load_key
from indexer.labels import LabelStore
from indexer.resync import Resyncer
from payments.auth import ServiceAuth
from payments.broker import BrokerWorker, SettlementVerifier
from payments.service import Payments

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from feedgen.app import FeedGenerator

log = logging.getLogger("openmusic")
#: Seconds between the leader's checks that it still holds the lock (``Leadership.holding``).
LEADERSHIP_CHECK_S = 2.0


#: Seconds ``Runtime.stop`` waits for each part before going on without it.
STOP_PART_S = 15.0


async def _bounded(aw, what: str, limit_s: float = STOP_PART_S) -> None:
    """Await ``aw`` (a part being stopped) for at most ``limit_s`` seconds; a timeout is logged, the
    part's errors and cancellation are swallowed, never raised: one stuck part must not hold up the
    rest of a shutdown."""
    try:
        await asyncio.wait_for(aw, limit_s)
    except TimeoutError:
        log.warning("stopping %s took over %.0f s; going on without it", what, limit_s)
    except (asyncio.CancelledError, Exception):
        pass


class Runtime:
    """All long-lived parts of a running AppView. Attributes are set by ``start_api`` /
    ``start_indexing`` (``start``: both); those of a part not started stay None. ``role``: one of
    ``ROLES`` (default ``settings.role``); raises ``ValueError`` for another."""

    def __init__(self, settings: Settings, role: str | None = None) -> None:
        self.settings = settings
        self.role = role or settings.role
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")
        self.http: httpx.AsyncClient | None = None
        #: the writer connection of this process (an ``Indexer`` that only indexes once ``indexer`` is it)
        self.writer: Indexer | None = None
        #: set by ``start_indexing``: the firehose's indexer (the same object as ``writer``)
        self.indexer: Indexer | None = None
        self.consumer: FirehoseConsumer | None = None
        self.verifier: Verifier | None = None
        self.resyncer: Resyncer | None = None
        self.payments: Payments | None = None
        self.auth: ServiceAuth | None = None
        self.broker_worker: BrokerWorker | None = None
        self.settlement_verifier: SettlementVerifier | None = None
        #: the broker repo's PDS session (payments on), handed to the broker worker
        self._broker_client: PdsClient | None = None
        #: the label store and one consumer per configured labeler (``Settings.labelers``; none: None, [])
        self.labels: LabelStore | None = None
        self.label_consumers: list[LabelConsumer] = []
        #: our own labeler (``indexer.labeler_issue``): the moderation queue's labels; set by ``start_api``
        self.label_issuer: LabelIssuer | None = None
        #: the Bluesky feed generator (``feed_generator``); set by ``start_api``
        self.feeds: FeedGenerator | None = None
        #: the leader lock of ``run`` (roles ``indexer`` and ``all``); None otherwise
        self.leadership: Leadership | None = None
        self._opened = False
        self._tasks: list[asyncio.Task[None]] = []
        self._conns: list[aiosqlite.Connection] = []
        self._pools: list[db.ReaderPool] = []

    async def start(self, firehose: bool = True) -> None:
        """Everything in this process at once, without an election (``start_api`` then
        ``start_indexing``), whatever ``role`` says: for tools and tests that own their database.
        Raises on a bad database."""
        await self.start_api()
        await self.start_indexing(firehose)

    async def _open(self, readers: int) -> None:
        """The parts every role needs (once): migrate, the HTTP client, the readers (``readers``
        connections), the identity service (refreshes on demand), the writer, and with payments
        configured the broker's PDS session and ``Payments``. Raises on a bad database, and
        ``PublishError`` when the broker account cannot log in."""
        if self._opened:
            return
        self._opened = True
        s = self.settings
        s.ensure_dirs()
        db.migrate(s.database)
        share_indexer.configure(s.share_sites)  # Bluesky posts linking these sites' pages are indexed
        self.http = httpx.AsyncClient(follow_redirects=False, headers={"user-agent": "openmusic-appview/0.1"})
        self.identity_conn = await self._connect()
        self.reader = await db.ReaderPool.open(s.database_read, readers)  # a replica when one is set
        self._pools.append(self.reader)
        self.identity = IdentityService(s, self.identity_conn, IdentityResolver(s, self.http))
        self.writer = Indexer(s.database, s.cursor_source)
        await self.writer.open()
        self.identity.on_handle_change = self.writer.reindex_artist
        trusted = {d.strip() for d in s.trusted_brokers.split(",") if d.strip()}
        if s.payments_enabled:
            client = await asyncio.to_thread(PdsClient, s.broker_pds_url, s.broker_handle, s.broker_password)
            self._broker_client = client
            self.payments = Payments(s, self.writer, client.did)
            trusted.add(client.did)
            log.info("payments on: broker repo %s, service %s", client.did, self.payments.service_did)
        settlement_indexer.TRUSTED_BROKERS.update(trusted)

    async def start_api(self) -> None:
        """The request side: readers, blobs, views, service auth (payments and analytics take it with
        or without payments), our labeler's issuer, the feed generator, and the recommendation model
        built in the background. Raises on a bad database, ``PublishError`` (broker login) and
        ``ValueError`` (a malformed labeler key)."""
        s = self.settings
        await self._open(s.db_readers)
        own = s.service_did_resolved
        self.blobs = BlobStore(s.blob_cache_dir, self.http, s.allow_private_hosts, s.max_blob_bytes,
                               cache_max_bytes=s.blob_cache_max_bytes)
        # our own labeler's labels travel in views too, after the configured labelers'
        self.views = ViewContext(self.reader, self.identity, s.base_url,
                                 labelers=[*[d for d in s.labeler_dids if d != own], own])
        self.auth = ServiceAuth(own, self.identity.signing_key, await self._connect())
        self.label_issuer = LabelIssuer(await self._connect(), own, load_key(s.label_key, s.label_key_path))
        await self.label_issuer.open()
        self.feeds = self.feed_generator()
        # build the recommendation model now, so that the first "More like this" does not wait for it
        self._tasks.append(asyncio.create_task(self._warm_recommendations(), name="recommendations"))

    async def start_indexing(self, firehose: bool = True) -> None:
        """The work that must happen once per database (call it only while leading, or owning the
        database): commit verification, the indexer's state and the resync of repos owed one, the
        payment broker and the settlement verifier, the identity refresher, the reputation refresh and
        the charts' totals (``appview.charts.keep_chart_totals``) and the recommendation model
        (``appview.recommend.keep_model``),
        the label store (sweeps, a stream per configured labeler), and with ``firehose`` the
        consumer, from the durable cursor. Raises on a bad database and ``ValueError`` (labeler key)."""
        s = self.settings
        await self._open(1)
        assert self.writer is not None
        self.indexer = indexer = self.writer
        self.verifier = Verifier(self.identity, workers=s.verify_workers) if s.verify_commits else None
        if self.verifier:
            await self.verifier.start()
        indexer.verifier = self.verifier
        indexer.on_new_did = self.identity.schedule
        self.resyncer = Resyncer(indexer, self.identity, self.http, s.allow_private_hosts)
        indexer.on_desync = self.resyncer.schedule
        for did in await indexer.load_state():
            self.resyncer.schedule(did)
        if self.payments is not None:
            self.broker_worker = BrokerWorker(indexer, self.payments.broker, self.payments.policy,
                                              (s.broker_pds_url, s.broker_handle, s.broker_password),
                                              self._broker_client)
            self._tasks.append(asyncio.create_task(self.broker_worker.run(), name="broker"))
        if settlement_indexer.TRUSTED_BROKERS:
            self.settlement_verifier = SettlementVerifier(indexer, self.identity.resolver)
            self._tasks.append(asyncio.create_task(self.settlement_verifier.run(), name="settlement-verifier"))
        self._tasks.append(asyncio.create_task(self.identity.run(), name="identity"))
        self._tasks.append(asyncio.create_task(self.resyncer.run(), name="resync"))
        # the reputation signals that need history (farms, consensus, listening days): every 10 minutes
        self._tasks.append(asyncio.create_task(reputation.run_periodically(await self._connect()), name="reputation"))
        # the charts' totals (trending, top of a period), for every replica: every minute or more
        totals_ctx = ViewContext(await self._connect(), self.identity, s.base_url)
        # (their writes, like the indexer's batches, check the leader lock before COMMIT: indexer.fence)
        self._tasks.append(asyncio.create_task(charts.keep_chart_totals(totals_ctx, s.database, fence=indexer.fence),
                                               name="chart-totals"))
        # the recommendation model, built once for every replica (each reads the stored one)
        self._tasks.append(asyncio.create_task(recommend.keep_model(s.database, indexer.fence), name="recommend-model"))
        # PostgreSQL: the months of play partitions ahead, and ANALYZE play, now and daily (SQLite: nothing)
        self._tasks.append(asyncio.create_task(partitions.run_periodically(indexer), name="partitions"))
        await self.identity.refresh_stale()
        await self._start_labels()
        if firehose:
            self.consumer = FirehoseConsumer(s.subscribe_url, indexer, indexer.selection,
                                             batch_size=s.firehose_batch_size,
                                             start_cursor=None if s.start_cursor < 0 else s.start_cursor,
                                             tracked=indexer.is_tracked)
            self._tasks.append(asyncio.create_task(self._consume(), name="firehose"))

    async def run(self, stop: asyncio.Event, firehose: bool = True) -> int:
        """Play ``role`` until ``stop`` is set or the HTTP server ends (uvicorn ends it on SIGINT and
        SIGTERM): ``api`` serves at once; ``indexer`` serves ``/health`` at once (``indexer_app``),
        waits for the leader lock (``core.leader``), then indexes; ``all`` serves the AppView at once
        and indexes once it leads. Everything is stopped, and the lock released, before it returns.
        Returns the exit status: 0, or 1 when the leader lock was lost or the server failed. Raises
        what start-up raises."""
        tasks: dict[str, asyncio.Task[Any]] = {}
        elected: asyncio.Task[None] | None = None
        status = 0
        try:
            if self.role == "indexer":
                await self._open(1)
                tasks["http"] = asyncio.create_task(self._serve_app(self.indexer_app()), name="http")
            else:
                await self.start_api()
                tasks["http"] = asyncio.create_task(self.serve(), name="http")
            tasks["stop"] = asyncio.create_task(stop.wait(), name="stop")
            if self.role != "api":
                self.leadership = leadership_for(self.settings)
                elected = asyncio.create_task(self.leadership.wait(), name="election")
                done, _ = await asyncio.wait({elected, *tasks.values()}, return_when=asyncio.FIRST_COMPLETED)
                if elected in done:
                    elected.result()  # raises when the lock file cannot be opened
                    if not stop.is_set() and not tasks["http"].done():
                        assert self.writer is not None
                        # PostgreSQL: a batch (or ledger write) of a leader whose lock is gone never commits
                        self.writer.fence = self.leadership.commit_fence()
                        await self.start_indexing(firehose)
                        tasks["leadership"] = asyncio.create_task(self._watch_leadership(), name="leadership")
            done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
            http = tasks["http"]
            if "leadership" in tasks and tasks["leadership"] in done:
                status = 1
            elif http in done and not http.cancelled() and http.exception() is not None:
                log.error("the HTTP server failed: %r", http.exception())
                status = 1
        finally:
            waiting = [*tasks.values(), *([elected] if elected is not None else [])]
            for task in waiting:
                task.cancel()
            for task in waiting:
                with contextlib.suppress(asyncio.CancelledError, Exception, SystemExit):
                    await task
            await self.stop()
            if self.leadership is not None:
                await self.leadership.release()
        return status

    async def _watch_leadership(self) -> None:
        """Return when the leader lock is lost (``run`` then stops the process: exit status 1)."""
        assert self.leadership is not None
        while True:
            await asyncio.sleep(LEADERSHIP_CHECK_S)
            if not await self.leadership.holding():
                break
        log.critical("%s: the leader lock is lost; stopping before anything more is written", self.leadership.name)

    def indexer_app(self) -> ASGIApp:
        """The ``indexer`` role's HTTP app, for a process manager: while another process leads,
        ``GET /health`` answers 200 ``{"status": "standby", "role", "leader": {pid, host, since} or
        null}``; once this process leads, ``/health``, ``/xrpc/_health`` and ``/metrics`` are the
        AppView's (``appview.app``: firehose, resync, indexer and label figures; 503 when the
        firehose is behind). Anything else: 404."""
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route

        from appview.app import create_app

        appview = create_app(self)
        leading_paths = {"/health", "/xrpc/_health", "/metrics"}

        async def standby(request: Request) -> Response:
            holder = self.leadership.holder() if self.leadership is not None else None
            return JSONResponse({"status": "standby", "role": self.role, "leader": holder})

        async def missing(request: Request, exc: Exception) -> Response:
            return JSONResponse({"error": "NotFound", "message": "an indexer serves /health only"}, status_code=404)

        waiting = Starlette(routes=[Route("/health", standby), Route("/xrpc/_health", standby)],
                            exception_handlers={404: missing, 405: missing})

        async def app(scope: Any, receive: Any, send: Any) -> None:
            leading = self.indexer is not None and scope["type"] == "http" and scope["path"] in leading_paths
            await (appview if leading else waiting)(scope, receive, send)
        return app

    def label_health(self) -> dict | None:
        """The label consumers for ``/health``: per labeler its stream's status, and the counters of
        labels applied and skipped by reason (``indexer.labels``); None when no labeler is configured."""
        if self.labels is None or not self.label_consumers:
            return None
        return {"labelers": [{"did": c.did, "endpoint": c.status.endpoint, "connected": c.status.connected,
                              "lastSeq": c.status.last_seq, "frames": c.status.frames,
                              "lastError": c.status.last_error} for c in self.label_consumers],
                "counters": dict(self.labels.counters)}

    async def _start_labels(self) -> None:
        """The label store (it keeps ``hidden`` flags in step with the configured labelers and our own,
        and sweeps expired labels) and a ``LabelConsumer`` per configured labeler. Our own labels are
        issued by ``label_issuer`` (``start_api``) and applied as they are issued."""
        s = self.settings
        own = s.service_did_resolved
        self.labels = LabelStore(await self._connect(), [own, *[d for d in s.labeler_dids if d != own]])
        await self.labels.open()
        self._tasks.append(asyncio.create_task(self.labels.run_sweeps(), name="label-sweep"))
        for did in s.labeler_dids:
            if did == own:
                continue  # our own labels are applied as they are issued
            consumer = LabelConsumer(did, self.identity.resolver, self.labels, s.allow_private_hosts)
            self.label_consumers.append(consumer)
            self._tasks.append(asyncio.create_task(consumer.run(), name=f"labels {did}"))

    async def _warm_recommendations(self) -> None:
        try:
            await recommend.model(self.views)
        except Exception:
            log.exception("building the recommendation model failed; the first request will try again")

    async def _connect(self) -> aiosqlite.Connection:
        conn = await db.connect(self.settings.database)
        self._conns.append(conn)
        return conn

    async def _consume(self) -> None:
        assert self.consumer is not None
        try:
            await self.consumer.run()
        except Exception:
            log.exception("firehose consumer stopped on an error; the cursor holds the last applied event")
            raise

    async def blob_source(self, did: str, cid: str, kind: str) -> tuple[str, str | None] | None:
        """(mime type, PDS URL) of a blob that an active account's indexed record references as
        ``kind`` (``audio`` or ``image``), or None. Only referenced blobs are served: the AppView is
        not an open proxy for arbitrary PDS blobs. Records and accounts taken down by a label
        (``hidden`` 2, ``indexer.labels``) reference nothing."""
        if kind == "audio":
            sql = "SELECT audio_mime FROM track WHERE did = ?1 AND audio_cid = ?2 AND hidden < 2 LIMIT 1"
        else:
            sql = ("SELECT artwork_mime FROM track WHERE did = ?1 AND artwork_cid = ?2 AND hidden < 2 "
                   "UNION ALL SELECT artwork_mime FROM album WHERE did = ?1 AND artwork_cid = ?2 AND hidden < 2 "
                   "UNION ALL SELECT avatar_mime FROM profile WHERE did = ?1 AND avatar_cid = ?2 "
                   "UNION ALL SELECT banner_mime FROM profile WHERE did = ?1 AND banner_cid = ?2 "
                   "UNION ALL SELECT artwork_mime FROM playlist WHERE did = ?1 AND artwork_cid = ?2 AND hidden < 2 "
                   "LIMIT 1")
        cur = await self.reader.execute(sql, (did, cid))
        row = await cur.fetchone()
        if not row:
            return None
        cur = await self.reader.execute("SELECT active, pds, hidden FROM actor WHERE did = ?", (did,))
        actor = await cur.fetchone()
        if actor and (not actor[0] or (actor[2] or 0) >= 2):
            return None
        pds = actor[1] if actor else None
        if not pds:
            await self.identity.refresh(did)
            cur = await self.reader.execute("SELECT pds FROM actor WHERE did = ?", (did,))
            pds = (await cur.fetchone() or [None])[0]
        return row[0], pds

    async def serve(self) -> None:
        """Run the HTTP server until cancelled: the AppView (``appview.app``), and unless
        ``OPENMUSIC_WEB_ENABLED=0`` the web app's pages and sign-in (``web``) on the same origin, its
        routes first (``/`` is the web app's home). Raises ``KeyConfigError``/``ClientConfigError``
        (``web``) when the web app's secrets are missing outside local development."""
        from starlette.applications import Starlette
        from starlette.routing import Mount

        from appview.app import create_app
        from web import WebApp, WebSettings
        from web import middleware as web_middleware
        from web import routes as web_routes

        web_settings = WebSettings.from_env()
        web = WebApp(self.settings, web_settings, views=self.views) if web_settings.web_enabled else None
        if web is not None:
            web.label_issuer = self.label_issuer  # the moderation queue issues our labels (web.moderation)
        app = create_app(self, not_found=web.not_found if web is not None else None)
        assert self.feeds is not None, "start_api() first"
        feeds = self.feeds.routes()
        if web is not None:
            await web.start()
            web.attach_api(app)
            app = Starlette(routes=[*web_routes(web), *feeds, Mount("", app=app)], middleware=web_middleware(web))
        else:
            app = Starlette(routes=[*feeds, Mount("", app=app)])
        try:
            await self._serve_app(app)
        finally:
            if web is not None:
                await web.stop()

    async def _serve_app(self, app: ASGIApp) -> None:
        """Serve ``app`` under uvicorn on ``Settings.host``:``port`` until it stops (on SIGINT or SIGTERM)
        or the task is cancelled."""
        config = uvicorn.Config(app, host=self.settings.host, port=self.settings.port,
                                log_level=self.settings.log_level.lower(), access_log=False, lifespan="off")
        await uvicorn.Server(config).serve()

    def feed_generator(self) -> FeedGenerator:
        """A Bluesky feed generator (``feedgen.app.FeedGenerator``) over this runtime's index: its DID
        ``Settings.feedgen_did_resolved``, feeds published by ``Settings.feedgen_publisher``,
        service-auth checked like ours (``ServiceAuth``, its own audience), and our did:web document
        (``did_document``) under its ``#bsky_fg`` service. ``start_api`` keeps one as ``feeds``."""
        from feedgen.app import FeedGenerator

        s = self.settings
        assert self.auth is not None, "start_api() first"
        auth = ServiceAuth(s.feedgen_did_resolved, self.identity.signing_key, self.auth.db)
        return FeedGenerator(s.feedgen_did_resolved, s.feedgen_publisher, s.base_url, self.reader.execute, auth,
                             base_document=self.did_document)

    def did_document(self) -> dict[str, Any] | None:
        """Our did:web document, which ``/.well-known/did.json`` serves (the AppView's route and the
        feed generator's), or None (404) when our service DID (``Settings.service_did_resolved``) is
        not the did:web of our own host (``Settings.base_url``; a port as ``%3A``). It holds payments'
        document when payments are on (``Payments.did_document``: the ``#attestation`` key, the
        broker repo in ``alsoKnownAs``, the ``#openmusic_appview`` service), else our
        ``#openmusic_appview`` service alone (PDSes proxy to it; notifications and analytics take
        service auth); our labeler's ``#atproto_label`` key and ``#atproto_labeler`` service when its
        issuer runs (``start_api``; ``indexer.labeler_issue.add_to_document``); and, when the feed
        generator's DID is ours too, its ``#bsky_fg`` service (``FeedGenerator.service_entry``)."""
        from payments.auth import SERVICE_ID

        s = self.settings
        own = s.service_did_resolved
        host = s.base_url.split("://", 1)[-1].split("/")[0]
        if own != "did:web:" + host.replace(":", "%3A"):
            return None
        if self.payments is not None:
            doc = self.payments.did_document()
        else:
            doc = {"@context": ["https://www.w3.org/ns/did/v1"], "id": own,
                   "service": [{"id": f"#{SERVICE_ID}", "type": "OpenMusicAppView", "serviceEndpoint": s.base_url}]}
        if self.label_issuer is not None:
            doc = add_to_document(doc, own, self.label_issuer.key, s.base_url)
        if self.feeds is not None and self.feeds.did == own:
            entry = self.feeds.service_entry()
            doc = {**doc, "service": [*[e for e in doc.get("service", []) if e.get("id") != entry["id"]], entry]}
        return doc

    async def stop(self) -> None:
        """Stop the consumer (flushing its batch), the label consumers, the tasks and the connections;
        whatever was started (safe after a start-up that failed half-way)."""
        if self.consumer:
            self.consumer.stop()
        for label_consumer in self.label_consumers:
            label_consumer.stop()
        for task in self._tasks:
            if task.get_name() == "firehose":
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(task, timeout=10)
            task.cancel()
        for task in self._tasks:
            await _bounded(task, f"task {task.get_name()}")
        for conn in self._conns:
            await _bounded(conn.close(), "a database connection")
        for pool in self._pools:
            await _bounded(pool.close(), "the reader pool")
        if self.payments:
            await _bounded(self.payments.close(), "payments")
        if self.writer:
            await _bounded(self.writer.close(), "the indexer's writer")
        if self.verifier:
            await _bounded(asyncio.to_thread(self.verifier.close), "the commit verifier")
        if self.http is not None:
            await _bounded(self.http.aclose(), "the HTTP client")
