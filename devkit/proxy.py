"""A small round-robin reverse proxy for the API replicas, for machines without nginx (issue 15:
``openmusic cluster``). It does what deploy/nginx.conf does, in Python (uvicorn + httpx + websockets):

- Requests go to the backends in turn (round robin), skipping those marked down.
- A backend is marked down when a connection to it fails (the request then goes to the next one, as
  nginx's ``proxy_next_upstream error timeout``: it was never sent, so any method may be retried), or
  when its ``GET /health`` does not answer 200; every backend's ``/health`` is asked every
  ``interval_s`` seconds, and one that answers 200 again is back in turn. With every backend down,
  each is tried anyway (as nginx does).
- The request body is read whole (bounded by ``max_body``, 413 past it); the response is streamed.
  ``Host`` is passed on as the client sent it, with ``X-Forwarded-For`` and ``X-Forwarded-Proto``;
  each response says which backend served it in ``X-Served-By`` (``host:port``, as nginx's
  ``$upstream_addr``).
- WebSocket requests (``com.atproto.label.subscribeLabels``) are passed through to one backend.

Run: ``python -m devkit.proxy --listen 127.0.0.1:8080 --backend 127.0.0.1:8081 --backend 127.0.0.1:8082``.
It stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

log = logging.getLogger("openmusic.proxy")
#: Headers that belong to one connection (RFC 9110 section 7.6.1), never passed on.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "trailers", "transfer-encoding", "upgrade", "proxy-connection"}
#: Headers httpx adds on its own when the client did not send them; removed again.
HTTPX_DEFAULTS = ("accept", "accept-encoding", "user-agent")


@dataclass
class Backend:
    """One upstream server: ``addr`` is ``host:port``; ``up`` is False while it is marked down;
    ``served`` counts the responses it gave through the proxy."""

    addr: str
    up: bool = True
    served: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.addr}"


class Proxy:
    """The proxy as an ASGI app over ``backends`` (``host:port`` strings). ``health_path``: what the
    health checks ask; ``interval_s``: seconds between rounds of checks; ``max_body``: the largest
    request body, bytes; ``timeout_s``: seconds to wait for a backend's response to start."""

    def __init__(self, backends: list[str], health_path: str = "/health", interval_s: float = 1.0,
                 max_body: int = 16 * 1024 * 1024, timeout_s: float = 60.0) -> None:
        if not backends:
            raise ValueError("a proxy needs at least one backend")
        self.backends = [Backend(b) for b in backends]
        self.health_path, self.interval_s, self.max_body = health_path, interval_s, max_body
        self._turn = itertools.count()
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=2.0), follow_redirects=False,
                                      limits=httpx.Limits(max_keepalive_connections=32))

    def order(self) -> list[Backend]:
        """The backends to try for the next request: the up ones from the next in turn, then the down
        ones (tried only when no up one answers)."""
        n = next(self._turn)
        ring = self.backends[n % len(self.backends):] + self.backends[:n % len(self.backends)]
        return [b for b in ring if b.up] + [b for b in ring if not b.up]

    async def check(self) -> None:
        """One round of health checks: each backend is up iff ``GET health_path`` answers 200 within 2 s."""
        async def one(b: Backend) -> None:
            try:
                resp = await self.http.get(b.url + self.health_path, timeout=2.0)
                up = resp.status_code == 200
            except httpx.HTTPError:
                up = False
            if up != b.up:
                log.warning("backend %s is %s", b.addr, "up" if up else "down")
            b.up = up
        await asyncio.gather(*(one(b) for b in self.backends))

    async def watch(self) -> None:
        """Health checks every ``interval_s`` seconds until cancelled."""
        while True:
            await self.check()
            await asyncio.sleep(self.interval_s)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            response = await self.forward(Request(scope, receive))
            await response(scope, receive, send)
        elif scope["type"] == "websocket":
            await self.tunnel(scope, receive, send)

    def _headers(self, request: Request) -> list[tuple[str, str]]:
        client = request.client.host if request.client else ""
        forwarded = request.headers.get("x-forwarded-for")
        headers = [(k, v) for k, v in request.headers.items()
                   if k not in HOP_BY_HOP and k not in ("content-length", "x-forwarded-for", "x-forwarded-proto")]
        headers.append(("x-forwarded-for", f"{forwarded}, {client}" if forwarded else client))
        headers.append(("x-forwarded-proto", request.url.scheme))
        return headers

    async def forward(self, request: Request) -> Response:
        """Send ``request`` to the next backend in turn (the next one when a connection fails);
        return its response, streamed. 413 for a body over ``max_body``; 502 when no backend can be
        reached; 504 when the one reached does not answer within ``timeout_s``."""
        body = b""
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > self.max_body:
                    return PlainTextResponse("request body too large", status_code=413)
        except ClientDisconnect:
            return PlainTextResponse("client went away", status_code=400)
        path = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string") or b""
        target = path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        headers = self._headers(request)
        sent = {k for k, _ in headers}
        for backend in self.order():
            req = self.http.build_request(request.method, backend.url + target, headers=headers, content=body)
            for name in HTTPX_DEFAULTS:
                if name not in sent:
                    del req.headers[name]
            try:
                resp = await self.http.send(req, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if backend.up:
                    log.warning("backend %s is down (%s); trying the next", backend.addr, type(exc).__name__)
                backend.up = False
                continue
            except httpx.TimeoutException:
                return PlainTextResponse("the backend did not answer in time", status_code=504)
            except httpx.HTTPError as exc:
                return PlainTextResponse(f"the backend failed: {type(exc).__name__}", status_code=502)
            backend.served += 1
            out = [(k, v) for k, v in resp.headers.multi_items() if k.lower() not in HOP_BY_HOP]
            out.append(("x-served-by", backend.addr))
            response = StreamingResponse(resp.aiter_raw(), status_code=resp.status_code,
                                         background=BackgroundTask(resp.aclose))
            response.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in out]
            return response
        return PlainTextResponse("no backend could be reached", status_code=502)

    async def tunnel(self, scope: Any, receive: Any, send: Any) -> None:
        """Pass a WebSocket through to the first backend that accepts it (messages both ways, until
        either side closes); close with 1011 when none does."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        first = await receive()
        if first["type"] != "websocket.connect":
            return
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = scope.get("query_string") or b""
        target = path + ("?" + query.decode("latin-1") if query else "")
        upstream = None
        for backend in self.order():
            try:
                upstream = await connect(f"ws://{backend.addr}{target}", open_timeout=5, max_size=None)
                break
            except (OSError, InvalidHandshake, TimeoutError):
                continue
        if upstream is None:
            await send({"type": "websocket.close", "code": 1011})
            return
        await send({"type": "websocket.accept", "headers": [(b"x-served-by", backend.addr.encode())]})

        async def down() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for message in upstream:
                    key = "bytes" if isinstance(message, bytes) else "text"
                    await send({"type": "websocket.send", key: message})

        async def up() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes") if message.get("bytes") is not None else message.get("text")
                if data is not None:
                    with contextlib.suppress(ConnectionClosed):
                        await upstream.send(data)

        tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await upstream.close()
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": 1000})

    async def aclose(self) -> None:
        await self.http.aclose()


async def serve(listen: str, backends: list[str], interval_s: float = 1.0) -> None:
    """Serve the proxy on ``listen`` (``host:port``) until SIGINT or SIGTERM (uvicorn's handlers)."""
    host, _, port = listen.rpartition(":")
    proxy = Proxy(backends, interval_s=interval_s)
    await proxy.check()
    watcher = asyncio.create_task(proxy.watch())
    config = uvicorn.Config(proxy, host=host or "127.0.0.1", port=int(port), log_level="warning", access_log=False,
                            lifespan="off", ws="websockets")
    try:
        await uvicorn.Server(config).serve()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await proxy.aclose()


def main(argv: list[str] | None = None) -> int:
    """``python -m devkit.proxy --listen HOST:PORT --backend HOST:PORT ...``. Returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m devkit.proxy", description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", required=True, help="host:port to serve on")
    p.add_argument("--backend", action="append", required=True, help="host:port of a backend (repeat)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between health checks (default 1)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args.listen, args.backend, args.interval))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
