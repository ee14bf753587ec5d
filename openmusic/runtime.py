"""Wires the parts together in one process: firehose consumer -> indexer -> SQLite <- AppView.

``Runtime.start()`` migrates the database, opens connections (indexer writer, identity writer, the
AppView's pool of ``Settings.db_readers`` readers), and starts the consumer and the identity
refresher as tasks; ``serve()`` runs the AppView under uvicorn until stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import aiosqlite
import httpx
import uvicorn

from appview import recommend, reputation
from appview.blobs import BlobStore
from appview.views import ViewContext
from core import db
from core.config import Settings
from core.identity import IdentityResolver, IdentityService
from core.publish import PdsClient
from firehose.consumer import FirehoseConsumer
from firehose.labels import LabelConsumer
from firehose.verify import Verifier
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
    from feedgen.app import FeedGenerator

log = logging.getLogger("openmusic")


class Runtime:
    """All long-lived parts of a running AppView. Attributes are set by ``start``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer: FirehoseConsumer | None = None
        self.indexer: Indexer | None = None
        self.verifier: Verifier | None = None
        self.payments: Payments | None = None
        self.auth: ServiceAuth | None = None
        self.broker_worker: BrokerWorker | None = None
        #: the label store and one consumer per configured labeler (``Settings.labelers``; none: None, [])
        self.labels: LabelStore | None = None
        self.label_consumers: list[LabelConsumer] = []
        #: our own labeler (``indexer.labeler_issue``): the moderation queue's labels; set by ``start``
        self.label_issuer: LabelIssuer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._conns: list[aiosqlite.Connection] = []
        self._pools: list[db.ReaderPool] = []

    async def start(self, firehose: bool = True) -> None:
        """Migrate, connect, and (with ``firehose``) start consuming. Raises on a bad database."""
        s = self.settings
        s.ensure_dirs()
        db.migrate(s.db_path)
        share_indexer.configure(s.share_sites)  # Bluesky posts linking these sites' pages are indexed
        self.http = httpx.AsyncClient(follow_redirects=False, headers={"user-agent": "openmusic-appview/0.1"})
        self.identity_conn = await self._connect()
        self.reader = await db.ReaderPool.open(s.db_path, s.db_readers)
        self._pools.append(self.reader)
        self.identity = IdentityService(s, self.identity_conn, IdentityResolver(s, self.http))
        self.blobs = BlobStore(s.blob_cache_dir, self.http, s.allow_private_hosts, s.max_blob_bytes,
                               cache_max_bytes=s.blob_cache_max_bytes)
        # our own labeler's labels travel in views too, after the configured labelers'
        own = s.service_did_resolved
        self.views = ViewContext(self.reader, self.identity, s.base_url,
                                 labelers=[*[d for d in s.labeler_dids if d != own], own])
        self.verifier = Verifier(self.identity, workers=s.verify_workers) if s.verify_commits else None
        if self.verifier:
            await self.verifier.start()
        self.indexer = Indexer(s.db_path, s.cursor_source, on_new_did=self.identity.schedule, verifier=self.verifier)
        await self.indexer.open()
        self.identity.on_handle_change = self.indexer.reindex_artist
        self.resyncer = Resyncer(self.indexer, self.identity, self.http, s.allow_private_hosts)
        self.indexer.on_desync = self.resyncer.schedule
        for did in await self.indexer.load_state():
            self.resyncer.schedule(did)
        await self._start_payments()
        self._tasks.append(asyncio.create_task(self.identity.run(), name="identity"))
        self._tasks.append(asyncio.create_task(self.resyncer.run(), name="resync"))
        # the reputation signals that need history (farms, consensus, listening days): every 10 minutes
        self._tasks.append(asyncio.create_task(reputation.run_periodically(await self._connect()), name="reputation"))
        # build the recommendation model now, so that the first "More like this" does not wait for it
        self._tasks.append(asyncio.create_task(self._warm_recommendations(), name="recommendations"))
        await self.identity.refresh_stale()
        await self._start_labels()
        if firehose:
            self.consumer = FirehoseConsumer(s.subscribe_url, self.indexer, self.indexer.selection,
                                             batch_size=s.firehose_batch_size,
                                             start_cursor=None if s.start_cursor < 0 else s.start_cursor,
                                             tracked=self.indexer.is_tracked)
            self._tasks.append(asyncio.create_task(self._consume(), name="firehose"))

    async def _start_payments(self) -> None:
        """Always: the service-auth verifier (payments and analytics) and indexing settlements from
        trusted brokers. With payments configured: log in to the broker's repo, build ``Payments`` and
        start the broker.
        Raises ``PublishError`` when the broker account cannot log in."""
        s = self.settings
        assert self.indexer is not None
        trusted = {d.strip() for d in s.trusted_brokers.split(",") if d.strip()}
        # service-auth JWTs are verified with or without payments: analytics needs them too
        self.auth = ServiceAuth(s.service_did_resolved, self.identity.signing_key, await self._connect())
        if s.payments_enabled:
            client = await asyncio.to_thread(PdsClient, s.broker_pds_url, s.broker_handle, s.broker_password)
            self.payments = Payments(s, self.indexer, client.did)
            self.broker_worker = BrokerWorker(self.indexer, self.payments.broker, self.payments.policy,
                                              (s.broker_pds_url, s.broker_handle, s.broker_password), client)
            trusted.add(client.did)
            self._tasks.append(asyncio.create_task(self.broker_worker.run(), name="broker"))
            log.info("payments on: broker repo %s, service %s", client.did, self.payments.service_did)
        settlement_indexer.TRUSTED_BROKERS.update(trusted)
        if trusted:
            self.settlement_verifier = SettlementVerifier(self.indexer, self.identity.resolver)
            self._tasks.append(asyncio.create_task(self.settlement_verifier.run(), name="settlement-verifier"))

    async def _start_labels(self) -> None:
        """The label store (always: it keeps ``hidden`` flags in step with the configured labelers and
        our own, and sweeps expired labels), our own labeler (``LabelIssuer``, its key from
        ``Settings.label_key`` or ``label_key_path``) and a ``LabelConsumer`` per configured labeler.
        Raises ``ValueError`` when the labeler key is malformed."""
        s = self.settings
        own = s.service_did_resolved
        self.labels = LabelStore(await self._connect(), [own, *[d for d in s.labeler_dids if d != own]])
        await self.labels.open()
        self.label_issuer = LabelIssuer(await self._connect(), own, load_key(s.label_key, s.label_key_path))
        await self.label_issuer.open()
        self._tasks.append(asyncio.create_task(self.labels.run_sweeps(), name="label-sweep"))
        for did in s.labeler_dids:
            if did == own:
                continue  # our own labels are applied as they are issued
            consumer = LabelConsumer(did, self.identity.resolver, self.labels, s.allow_private_hosts)
            self.label_consumers.append(consumer)
            self._tasks.append(asyncio.create_task(consumer.run(), name=f"labels {did}"))

    def label_health(self) -> dict | None:
        """The label consumers for ``/health``: per labeler its stream's status, and the counters of
        labels applied and skipped by reason (``indexer.labels``); None when no labeler is configured."""
        if self.labels is None or not self.label_consumers:
            return None
        return {"labelers": [{"did": c.did, "endpoint": c.status.endpoint, "connected": c.status.connected,
                              "lastSeq": c.status.last_seq, "frames": c.status.frames,
                              "lastError": c.status.last_error} for c in self.label_consumers],
                "counters": dict(self.labels.counters)}

    async def _warm_recommendations(self) -> None:
        try:
            await recommend.model(self.views)
        except Exception:
            log.exception("building the recommendation model failed; the first request will try again")

    async def _connect(self) -> aiosqlite.Connection:
        conn = await db.connect(self.settings.db_path)
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
        feeds = self.feed_generator().routes()
        if web is not None:
            await web.start()
            web.attach_api(app)
            app = Starlette(routes=[*web_routes(web), *feeds, Mount("", app=app)], middleware=web_middleware(web))
        else:
            app = Starlette(routes=[*feeds, Mount("", app=app)])
        config = uvicorn.Config(app, host=self.settings.host, port=self.settings.port,
                                log_level=self.settings.log_level.lower(), access_log=False, lifespan="off")
        server = uvicorn.Server(config)
        try:
            await server.serve()
        finally:
            if web is not None:
                await web.stop()

    def feed_generator(self) -> FeedGenerator:
        """The Bluesky feed generator (``feedgen.app.FeedGenerator``) over this runtime's index: its
        DID ``Settings.feedgen_did_resolved``, feeds published by ``Settings.feedgen_publisher``,
        service-auth checked like ours (``ServiceAuth``, its own audience), and the did:web document
        shared with payments when both are ours."""
        from feedgen.app import FeedGenerator
        from payments.auth import SERVICE_ID, ServiceAuth

        s = self.settings
        assert self.auth is not None, "start() first"
        auth = ServiceAuth(s.feedgen_did_resolved, self.identity.signing_key, self.auth.db)
        payments = self.payments
        issuer = self.label_issuer

        def base_document() -> dict:
            """Payments' did:web document, or without payments one with our AppView service alone
            (notifications and analytics take service auth, and PDSes proxy to ``#openmusic_appview``);
            with our labeler's ``#atproto_label`` key and ``#atproto_labeler`` service added."""
            if payments is not None:
                doc = payments.did_document()
            else:
                doc = {"@context": ["https://www.w3.org/ns/did/v1"], "id": s.service_did_resolved,
                       "service": [{"id": f"#{SERVICE_ID}", "type": "OpenMusicAppView", "serviceEndpoint": s.base_url}]}
            if issuer is not None:
                doc = add_to_document(doc, s.service_did_resolved, issuer.key, s.base_url)
            return doc
        return FeedGenerator(s.feedgen_did_resolved, s.feedgen_publisher, s.base_url, self.reader.execute, auth,
                             base_document=base_document)

    async def stop(self) -> None:
        """Stop the consumer (flushing its batch), the label consumers, the tasks and the connections."""
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
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for conn in self._conns:
            await conn.close()
        for pool in self._pools:
            await pool.close()
        if self.payments:
            await self.payments.close()
        if self.indexer:
            await self.indexer.close()
        if self.verifier:
            await asyncio.to_thread(self.verifier.close)
        await self.http.aclose()
