"""The AppView's HTTP app (Starlette): ``/xrpc/{nsid}``, ``/audio/{did}/{cid}``,
``/image/{did}/{cid}``, ``/health`` and a small HTML index at ``/``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from appview import metrics
from appview.blobs import BlobError
from appview.page import render_index
from appview.payment_methods import PAYMENT_METHODS, payment_method, stripe_webhook
from appview.queries import QUERIES
from appview.xrpc import XrpcError, parse_params

if TYPE_CHECKING:
    from openmusic.runtime import Runtime

log = logging.getLogger("openmusic.appview")
IMMUTABLE = "public, max-age=31536000, immutable"
#: The firehose counts as current while its last event arrived less than this many seconds after it was sent.
MAX_LAG_S = 60


def create_app(rt: Runtime) -> Starlette:
    """Build the Starlette app over a started ``Runtime``."""

    async def xrpc(request: Request) -> Response:
        nsid = request.path_params["nsid"]
        if nsid in PAYMENT_METHODS:
            return await payment_method(rt, nsid, request)
        handler = QUERIES.get(nsid)
        if handler is None:
            return XrpcError(501, "MethodNotImplemented", f"{nsid} is not served here").response()
        if request.method != "GET":
            return XrpcError(405, "InvalidRequest", f"{nsid} is a query: use GET").response()
        try:
            params = parse_params(nsid, request)
            return JSONResponse(await handler(rt.views, params))
        except XrpcError as exc:
            return exc.response()
        except Exception:
            log.exception("%s failed", nsid)
            return XrpcError(500, "InternalServerError", "internal error").response()

    async def blob(request: Request, kind: str) -> Response:
        did, cid = request.path_params["did"], request.path_params["cid"]
        found = await rt.blob_source(did, cid, kind)
        if found is None:
            return XrpcError(404, "NotFound", f"no {kind} {cid} of an active account {did} is indexed").response()
        mime, pds = found
        if not pds:
            return XrpcError(502, "UpstreamFailure", f"the PDS of {did} is not known").response()
        try:
            path = await rt.blobs.get(did, cid, pds)
        except BlobError as exc:
            return XrpcError(exc.status, exc.error, str(exc)).response()
        return FileResponse(path, media_type=mime, headers={
            "Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff", "Accept-Ranges": "bytes"})

    async def audio(request: Request) -> Response:
        return await blob(request, "audio")

    async def image(request: Request) -> Response:
        return await blob(request, "image")

    registry, collector = metrics.build(rt)

    async def metrics_page(request: Request) -> Response:
        return Response(await metrics.render(rt, registry, collector), media_type=metrics.CONTENT_TYPE)

    async def health(request: Request) -> Response:
        """200 when the firehose is connected and current (under ``MAX_LAG_S`` behind), else 503."""
        st = rt.consumer.status if rt.consumer else None
        body: dict = {"status": "ok", "firehose": None}
        if st:
            current = st.connected and (st.lag_s is None or st.lag_s < MAX_LAG_S)
            body["status"] = "ok" if current else "degraded"
            body["firehose"] = {"url": rt.settings.subscribe_url, "connected": st.connected, "current": current,
                                "lagSeconds": st.lag_s, "lastSeq": st.last_seq, "frames": st.frames,
                                "badFrames": st.bad_frames, "lastError": st.last_error}
        if rt.resyncer:
            body["resync"] = {"done": rt.resyncer.done, "failed": rt.resyncer.failed, "pending": rt.resyncer.pending}
        if rt.indexer:
            body["indexer"] = dict(rt.indexer.counters) | {"rejected": dict(rt.indexer.rejections)}
        if rt.verifier:
            body["verification"] = dict(rt.verifier.counters)
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    async def webhook(request: Request) -> Response:
        return await stripe_webhook(rt, request)

    async def did_json(request: Request) -> Response:
        if rt.payments is None:
            return XrpcError(404, "NotFound", "this AppView publishes no did:web document (payments are off)").response()
        return JSONResponse(rt.payments.did_document())

    async def index(request: Request) -> Response:
        return HTMLResponse(await render_index(rt.views))

    # Other players call us from their own origins; the API is public and read-only.
    cors = Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "HEAD", "POST"],
                      allow_headers=["Range", "Content-Type", "Authorization", "atproto-accept-labelers"],
                      expose_headers=["Content-Range", "Content-Length", "Accept-Ranges"])
    return Starlette(middleware=[cors], routes=[
        Route("/", index),
        Route("/health", health),
        Route("/metrics", metrics_page),
        Route("/xrpc/_health", health),
        Route("/xrpc/{nsid}", xrpc, methods=["GET", "POST"]),
        Route("/.well-known/did.json", did_json),
        Route("/stripe/webhook", webhook, methods=["POST"]),
        Route("/audio/{did}/{cid}", audio, methods=["GET", "HEAD"]),
        Route("/image/{did}/{cid}", image, methods=["GET", "HEAD"]),
    ])
