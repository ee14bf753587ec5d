"""The AppView's HTTP app (Starlette): ``/xrpc/{nsid}``, ``/audio/{did}/{cid}``,
``/image/{did}/{cid}``, ``/health``, and at ``/`` a pointer to them (the web app's pages are
mounted in front of these by the runtime)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response

from appview import copyright, metrics
from appview.analytics import ANALYTICS, analytics_query
from appview.blobs import BlobError, blob_response
from appview.moderation import MODERATION_METHODS, moderation_method, moderation_routes
from appview.notifications import NOTIFICATION_METHODS, notification_method
from appview.payment_methods import PAYMENT_METHODS, payment_method, stripe_webhook
from appview.payment_queries import PAYMENT_QUERIES
from appview.queries import QUERIES
from appview.views import accepted_labelers
from appview.xrpc import BodyLimit, XrpcError, head_response, parse_params

if TYPE_CHECKING:
    from appview.deps import AppViewDeps

log = logging.getLogger("openmusic.appview")
#: Request-body limits, bytes, per route (``route(..., max_body=)``): XRPC procedures take small JSON
#: inputs; Stripe's webhook events are a few kB (256 KiB is generous). Routes that read no body get
#: the XRPC limit too, so a declared huge body is refused at once.
XRPC_MAX_BODY = 64 * 1024
WEBHOOK_MAX_BODY = 256 * 1024
#: The firehose counts as current while its last event arrived less than this many seconds after it was sent.
MAX_LAG_S = 60


def create_app(rt: AppViewDeps, not_found: Callable[[Request, Exception], Awaitable[Response]] | None = None) -> Starlette:
    """Build the Starlette app over the started parts ``rt`` (``appview.deps.AppViewDeps``). A path
    nothing serves answers 404 ``{"error": "NotFound", "message"}`` (405 for a method a route does not
    take), or whatever ``not_found(request, exc)`` answers (the web app's page for browsers)."""

    async def xrpc(request: Request) -> Response:
        nsid = request.path_params["nsid"]
        if nsid in PAYMENT_METHODS:
            return await payment_method(rt, nsid, request)
        if nsid in ANALYTICS:
            return await analytics_query(rt, nsid, request)
        if nsid in NOTIFICATION_METHODS:
            return await notification_method(rt, nsid, request)
        if nsid in MODERATION_METHODS:
            return await moderation_method(rt, nsid, request)
        handler = QUERIES.get(nsid) or PAYMENT_QUERIES.get(nsid)
        if handler is None:
            return XrpcError(501, "MethodNotImplemented", f"{nsid} is not served here").response()
        if request.method not in ("GET", "HEAD"):
            return XrpcError(405, "InvalidRequest", f"{nsid} is a query: use GET").response()
        asked = parse_accept_labelers(request.headers.get("atproto-accept-labelers"))
        token = accepted_labelers.set(None if asked is None else tuple(asked))
        try:
            params = parse_params(nsid, request)
            response = JSONResponse(await handler(rt.views, params))
            response.headers["atproto-content-labelers"] = ", ".join(rt.views.accepted())
            return head_response(response) if request.method == "HEAD" else response
        except XrpcError as exc:
            return exc.response()
        except Exception:
            log.exception("%s failed", nsid)
            return XrpcError(500, "InternalServerError", "internal error").response()
        finally:
            accepted_labelers.reset(token)

    async def blob(request: Request, kind: str) -> Response:
        did, cid = request.path_params["did"], request.path_params["cid"]
        found = await rt.blob_source(did, cid, kind)
        if found is None:
            return XrpcError(404, "NotFound", f"no {kind} {cid} of an active account {did} is indexed").response()
        mime, pds = found
        if kind == "audio" and await copyright.audio_blocked(rt.reader, did, cid):
            return XrpcError(451, "AudioTakenDown", "this audio is taken down after a copyright claim "
                                                    "(label audio-takedown)").response()
        if not pds:
            return XrpcError(502, "UpstreamFailure", f"the PDS of {did} is not known").response()
        try:
            path = await rt.blobs.get(did, cid, pds)
        except BlobError as exc:
            return XrpcError(exc.status, exc.error, str(exc)).response()
        # The declared type only when it is one allowed type of this kind; a malformed Range is ignored.
        return blob_response(path, mime, kind)

    async def audio(request: Request) -> Response:
        return await blob(request, "audio")

    async def image(request: Request) -> Response:
        return await blob(request, "image")

    registry, collector = metrics.build(rt)

    async def metrics_page(request: Request) -> Response:
        return Response(await metrics.render(rt, registry, collector), media_type=metrics.CONTENT_TYPE)

    async def health(request: Request) -> Response:
        """200 when the firehose is connected and current (under ``MAX_LAG_S`` behind), else 503.

        Lag is derived (``ConsumerStatus.lag``): 0 on a live connection with nothing waiting, however
        long the stream has been quiet. Also shown: host history resets (``FutureCursor``), resync
        failures (repos failing, the last error), the indexer's rejections by reason, and with labelers
        configured each label stream's state and the labels applied and skipped by reason (``labels``)."""
        from datetime import UTC, datetime

        def iso(epoch: float | None) -> str | None:
            return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")

        st = rt.consumer.status if rt.consumer else None
        body: dict = {"status": "ok", "firehose": None}
        if st:
            lag = st.lag()
            current = st.connected and (lag is None or lag < MAX_LAG_S)
            body["status"] = "ok" if current else "degraded"
            body["firehose"] = {"url": rt.settings.subscribe_url, "connected": st.connected, "current": current,
                                "lagSeconds": None if lag is None else round(lag, 3), "lastSeq": st.last_seq,
                                "appliedSeq": st.applied_seq, "backlog": st.backlog, "frames": st.frames,
                                "badFrames": st.bad_frames, "lastError": st.last_error,
                                "hostResets": st.host_resets, "lastHostReset": iso(st.last_host_reset_at)}
        if rt.resyncer:
            body["resync"] = {"done": rt.resyncer.done, "failed": rt.resyncer.failed, "pending": rt.resyncer.pending,
                              "failing": len(rt.resyncer.failing), "lastError": rt.resyncer.last_error}
        if rt.indexer:
            body["indexer"] = dict(rt.indexer.counters) | {"rejected": dict(rt.indexer.rejections)}
        if rt.verifier:
            body["verification"] = dict(rt.verifier.counters)
        label_health = getattr(rt, "label_health", None)
        if label_health is not None and (labels := label_health()) is not None:
            body["labels"] = labels  # each labeler's stream, labels applied and skipped by reason
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    async def webhook(request: Request) -> Response:
        return await stripe_webhook(rt, request)

    async def did_json(request: Request) -> Response:
        """Our did:web document (``rt.did_document()``, the runtime's, which the feed generator serves
        too); 404 when our service DID is not the did:web of this host."""
        doc = rt.did_document()
        if doc is None:
            return XrpcError(404, "NotFound", "this AppView publishes no did:web document "
                                              "(its service DID is not the did:web of this host)").response()
        return JSONResponse(doc)

    async def index(request: Request) -> Response:
        """``/`` when the web app is off (``OPENMUSIC_WEB_ENABLED=0``; otherwise its home page is served)."""
        return JSONResponse({"service": "Open Music AppView", "xrpc": "/xrpc/{nsid}", "health": "/health",
                             "lexicons": "fm.openmusic.*"})

    # Other players call us from their own origins; the API is public and read-only.
    cors = Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "HEAD", "POST"],
                      allow_headers=["Range", "Content-Type", "Authorization", "atproto-accept-labelers"],
                      expose_headers=["Content-Range", "Content-Length", "Accept-Ranges", "atproto-content-labelers"])
    async def missing(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        if status == 405:
            return XrpcError(405, "InvalidRequest", f"{request.method} is not allowed on {request.url.path[:200]}").response()
        return XrpcError(404, "NotFound", f"nothing is served at {request.url.path[:200]}").response()

    async def unknown_path(request: Request, exc: Exception) -> Response:
        if not_found is not None and getattr(exc, "status_code", 404) == 404:
            return await not_found(request, exc)
        return await missing(request, exc)

    return Starlette(middleware=[cors], exception_handlers={404: unknown_path, 405: missing}, routes=[
        route("/", index),
        route("/health", health),
        route("/metrics", metrics_page),
        route("/xrpc/_health", health),
        *moderation_routes(rt),
        route("/xrpc/{nsid}", xrpc, methods=["GET", "POST"]),
        route("/.well-known/did.json", did_json),
        route("/stripe/webhook", webhook, methods=["POST"], max_body=WEBHOOK_MAX_BODY),
        route("/audio/{did}/{cid}", audio, methods=["GET", "HEAD"]),
        route("/image/{did}/{cid}", image, methods=["GET", "HEAD"]),
    ])


def parse_accept_labelers(header: str | None) -> list[str] | None:
    """The labeler DIDs of an ``atproto-accept-labelers`` header (atproto XRPC spec: comma-separated
    DIDs, each optionally followed by ``;redact``-style parameters, which are dropped), at most 20;
    None when the header is absent."""
    if header is None:
        return None
    dids = [part.split(";")[0].strip() for part in header.split(",")]
    return [d for d in dict.fromkeys(dids) if d.startswith("did:")][:20]


def route(path: str, endpoint: Callable[[Request], Awaitable[Response]], methods: list[str] | None = None,
          max_body: int = XRPC_MAX_BODY) -> Route:
    """A ``Route`` whose request body is limited to ``max_body`` bytes (``BodyLimit``: 413
    ``PayloadTooLarge``, checked on ``Content-Length`` and counted while streaming). Forms or uploads
    added later pass their own ``max_body``. GET routes answer HEAD too."""
    return Route(path, BodyLimit(request_response(endpoint), max_body), methods=methods or ["GET"],
                 name=endpoint.__name__)
