"""Server render time and first-visit weight of the web app's pages, on ``bench.queries``' database
(100,000 tracks by 2,000 artists, 1,000,000 plays; ``bench/data/queries.sqlite``, built with
``bench.queries.build`` unless one of the same sizes is there, as ``bench.http`` does).

1. Render time, p50 / p99 (ms), of each page, signed out: ``/``, ``/search?q=<word>``,
   ``/search?q=<two words>``, ``/search?q=<word>&sort=plays`` (the search page's "Most played"),
   ``/track/{did}/{rkey}``, ``/artist/{handle}`` and, when the database has
   albums, ``/album/{did}/{rkey}``. The app is composed as ``Runtime.serve`` does (the web app's routes,
   then the AppView mounted at ``""``, with the web app's middleware) and driven in-process over httpx's
   ``ASGITransport``, one request at a time. Each request's time is also split into the XRPC handlers
   the page calls (``Pages.query``: SQL and hydration) and the template (``WebApp.render``: Jinja2 and
   the response); the rest is routing, middleware and the transport. Target: p99 < 50 ms a page.
2. Bytes of a first visit to ``/`` without audio and artwork: the HTML, then every ``<link>`` and
   ``<script src>`` on our origin, the CSS's ``url()`` and ``@import``, the JS's static imports, the
   manifest's icons, a registered service worker and its precache list (fetched again: it installs
   with ``cache: "reload"``), recursively (and ``/favicon.ico`` when no icon is linked); bodies as
   served and gzip-compressed (level 6), totals without and with the precache. Target: < 150 KB.

    python -m bench.web_render [--tracks 100000] [--plays 1000000] [--requests 1000] [--db PATH]
                               [--rebuild] [--profile]

``--profile`` runs the slowest page (by p99) again under cProfile and prints its top functions (the
event loop's thread only: SQLite runs in aiosqlite's threads and shows as time waiting).
The web app's session key is a development key generated into a temporary directory (the app itself
would write it beside the database); nobody signs in, so no PDS is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import gzip
import io
import json
import os
import pstats
import random
import re
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from bench.firehose import cpu_model
from bench.http import ensure_db
from bench.queries import WORDS
from bench.record import DATA
from core.config import Settings

#: Loopback: the web app's cookies are not Secure and it may use a development session key.
BASE = "http://127.0.0.1:8080"
TARGET_P99_MS = 50.0
TARGET_BYTES = 150 * 1024
#: ``<link rel>`` values a browser fetches on a first visit (not ``alternate``, ``canonical``, ...).
FETCHED_RELS = {"stylesheet", "icon", "shortcut", "apple-touch-icon", "mask-icon", "manifest", "preload",
                "modulepreload", "prefetch"}
CSS_REFS = re.compile(r"""@import\s+(?:url\()?\s*["']?([^"')\s;]+)|url\(\s*["']?([^"')]+?)["']?\s*\)""", re.I)
SW_REGISTER = re.compile(r"""serviceWorker\s*\.\s*register\(\s*["']([^"']+)["']""")
JS_IMPORTS = re.compile(r"""(?:^|[;\s])(?:import|export)\s[^"';]*?from\s*["']([^"']+)["']|"""
                        r"""(?:^|[;\s])import\s*\(?\s*["']([^"']+)["']""", re.M)


@dataclass
class Splits:
    """Milliseconds spent in the current request's XRPC handlers and template rendering."""

    query: float = 0.0
    render: float = 0.0


@dataclass
class PageTimes:
    """Per-request samples of one page (ms), and what its last response looked like."""

    total: list[float] = field(default_factory=list)
    query: list[float] = field(default_factory=list)
    render: list[float] = field(default_factory=list)
    html_bytes: int = 0
    tracks_listed: int = 0


def sample_keys(path: Path) -> dict[str, list[str]]:
    """Tracks, artists' handles and albums to ask for, from the database."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {
            "tracks": [r[0] for r in conn.execute("SELECT uri FROM track ORDER BY random() LIMIT 5000")],
            "artists": [r[0] for r in conn.execute(
                "SELECT a.handle FROM actor a WHERE a.did IN (SELECT DISTINCT did FROM track LIMIT 1000)")],
            "albums": [r[0] for r in conn.execute("SELECT uri FROM album ORDER BY random() LIMIT 1000")],
        }
    finally:
        conn.close()


def at_path(uri: str) -> str:
    """``at://did/collection/rkey`` -> ``did/rkey`` (the pages' path form)."""
    did, _, rkey = uri.removeprefix("at://").split("/", 2)
    return f"{did}/{rkey}"


def quantiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) of ``samples``."""
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return q[49], q[98]


class App:
    """The AppView and the web app on one database, composed as ``Runtime.serve`` does."""

    def __init__(self, db_path: Path, tmp: Path) -> None:
        self.settings = Settings(db_path=str(db_path), blob_cache_dir=str(tmp / "blobs"), host="127.0.0.1",
                                 port=8080, allow_private_hosts=True, verify_commits=False, log_level="WARNING")
        self.tmp = tmp
        self.splits = Splits()

    async def start(self) -> Any:
        """Start the runtime (no firehose) and the web app; returns the ASGI app."""
        from starlette.applications import Starlette
        from starlette.routing import Mount

        from appview.app import create_app
        from openmusic.runtime import Runtime
        from web import WebApp, WebSettings
        from web import middleware as web_middleware
        from web import routes as web_routes
        from web.sealing import DEV_KEY_FILE, load_keys

        self.rt = Runtime(self.settings)
        await self.rt.start(firehose=False)
        load_keys("", self.settings.allow_private_hosts, self.tmp)  # dev mode: a key in tmp, not beside the db
        key = (self.tmp / DEV_KEY_FILE).read_text().strip()
        self.web = WebApp(self.settings, WebSettings(session_key=key), views=self.rt.views)
        await self.web.start()
        routes = web_routes(self.web)
        self._instrument(routes)
        return Starlette(routes=[*routes, Mount("", app=create_app(self.rt))], middleware=web_middleware(self.web))

    def _instrument(self, routes: list[Any]) -> None:
        """Time ``Pages.query`` and ``WebApp.render`` (instance attributes wrap the bound methods)."""
        pages = next(r.endpoint.__self__ for r in routes if getattr(r, "path", None) == "/")
        query: Callable[..., Awaitable[dict[str, Any]]] = pages.query
        render: Callable[..., Any] = self.web.render

        @functools.wraps(query)
        async def timed_query(nsid: str, **params: object) -> dict[str, Any]:
            start = time.perf_counter()
            try:
                return await query(nsid, **params)
            finally:
                self.splits.query += (time.perf_counter() - start) * 1000

        @functools.wraps(render)
        def timed_render(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return render(*args, **kwargs)
            finally:
                self.splits.render += (time.perf_counter() - start) * 1000

        pages.query = timed_query
        self.web.render = timed_render  # type: ignore[method-assign]

    async def stop(self) -> None:
        await self.web.stop()
        await self.rt.stop()


def page_cases(keys: dict[str, list[str]], rng: random.Random) -> dict[str, Callable[[], str]]:
    """Page name -> a function drawing the next URL to ask for."""
    cases: dict[str, Callable[[], str]] = {
        "/": lambda: "/",
        "/search?q=<word>": lambda: f"/search?q={rng.choice(WORDS)}",
        "/search?q=<2 words>": lambda: f"/search?q={rng.choice(WORDS)}+{rng.choice(WORDS)}",
        "/search?q=<word>&sort=plays": lambda: f"/search?q={rng.choice(WORDS)}&sort=plays",
        "/track/{did}/{rkey}": lambda: f"/track/{at_path(rng.choice(keys['tracks']))}",
        "/artist/{handle}": lambda: f"/artist/{rng.choice(keys['artists'])}",
    }
    if keys["albums"]:
        cases["/album/{did}/{rkey}"] = lambda: f"/album/{at_path(rng.choice(keys['albums']))}"
    return cases


async def time_pages(app: App, client: httpx.AsyncClient, cases: dict[str, Callable[[], str]],
                     requests: int) -> dict[str, PageTimes]:
    """Warm each page up (50 requests), then time ``requests`` of it, one at a time."""
    results: dict[str, PageTimes] = {}
    for name, make in cases.items():
        for _ in range(50):
            resp = await get(client, make())
            assert resp.status_code == 200, (name, resp.status_code, resp.text[:500])
        times = PageTimes()
        for _ in range(requests):
            url = make()
            app.splits = Splits()
            start = time.perf_counter()
            resp = await get(client, url)
            times.total.append((time.perf_counter() - start) * 1000)
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html"), (url, resp.text)
            times.query.append(app.splits.query)
            times.render.append(app.splits.render)
        times.html_bytes = len(resp.content)
        times.tracks_listed = resp.text.count('<li class="track">')
        results[name] = times
    return results


async def profile_page(client: httpx.AsyncClient, make: Callable[[], str], requests: int) -> str:
    """cProfile of ``requests`` requests of one page: the top functions by own and cumulative time."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(requests):
        await get(client, make())
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(12)
    stats.sort_stats("cumulative").print_stats(r"(pages|app|queries|views|environment|runtime)\.py", 14)
    return out.getvalue()


class Refs(HTMLParser):
    """What a page makes the browser fetch: ``<link>`` of the fetched kinds and ``<script src>``."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "link" and a.get("href") and FETCHED_RELS & set(a.get("rel", "").lower().split()):
            if a.get("as", "").lower() not in ("audio", "image", "video"):
                self.refs.append(a["href"])
        elif tag == "script" and a.get("src"):
            self.refs.append(a["src"])


def precached(script: str) -> list[str]:
    """Paths in a service worker's array literals (its precache list): string literals, and names
    bound by ``const NAME = "..."``."""
    consts = dict(re.findall(r"""const\s+(\w+)\s*=\s*["'](/[^"']*)["']""", script))
    found = []
    for body in re.findall(r"\[([^\[\]]*)\]", script):
        for literal, name in re.findall(r"""["'](/[^"']*)["']|\b([A-Z_][A-Z0-9_]*)\b""", body):
            path = literal or consts.get(name, "")
            if path and path not in found:
                found.append(path)
    return found


def references(url: str, ctype: str, body: bytes, via: str) -> list[tuple[str, str]]:
    """(absolute URL, how it is reached) of what ``body`` (HTML, CSS, JS, a service worker or a web
    app manifest) makes the browser fetch."""
    text = body.decode("utf-8", "replace")
    if via == "sw register":
        found = [(ref, "sw precache") for ref in precached(text)]
    elif "html" in ctype:
        parser = Refs()
        parser.feed(text)
        found = [(ref, "html") for ref in parser.refs]
    elif "css" in ctype:
        found = [(a or b, "css") for a, b in CSS_REFS.findall(text)]
    elif "javascript" in ctype:
        found = [(a or b, "js import") for a, b in JS_IMPORTS.findall(text) if (a or b).startswith(("/", "./", "../"))]
        found += [(ref, "sw register") for ref in SW_REGISTER.findall(text)]
    elif "manifest" in ctype:
        try:
            found = [(icon["src"], "manifest icon") for icon in json.loads(text).get("icons", []) if "src" in icon]
        except (ValueError, AttributeError, TypeError):
            found = []
    else:
        found = []
    return [(urljoin(url, ref.strip()), how) for ref, how in found if not ref.strip().startswith(("data:", "#"))]


@dataclass
class Fetched:
    """One response of the first visit."""

    path: str
    via: str
    status: int
    ctype: str
    size: int
    size_gz: int


async def first_visit(client: httpx.AsyncClient) -> tuple[list[Fetched], str]:
    """Fetch ``/`` and, breadth first, what it pulls in on our origin. A service worker's precache
    list is fetched again even when already fetched (browsers install it with ``cache: "reload"``).
    Returns the responses and the Content-Encoding the server chose for the HTML."""
    origin = urlsplit(BASE).netloc
    queue: list[tuple[str, str]] = [(f"{BASE}/", "page")]
    seen: set[str] = set()
    precache: set[str] = set()
    rows: list[Fetched] = []
    encoding = "identity"
    while queue:
        url, via = queue.pop(0)
        if urlsplit(url).netloc != origin or (via == "sw precache" and url in precache) or \
                (via != "sw precache" and url in seen):
            continue
        (precache if via == "sw precache" else seen).add(url)
        resp = await get(client, url, headers={"accept-encoding": "gzip, deflate, br"})
        ctype = resp.headers.get("content-type", "").split(";")[0]
        body = resp.content
        rows.append(Fetched(urlsplit(url).path, via, resp.status_code, ctype, len(body),
                            len(gzip.compress(body, 6, mtime=0))))
        refs = references(url, ctype, body, via)
        queue.extend(refs)
        if via == "page":
            encoding = resp.headers.get("content-encoding", "identity")
            if not any(how == "html" and "icon" in ref for ref, how in refs):
                queue.append((f"{BASE}/favicon.ico", "implicit"))
    return rows, encoding


async def get(client: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    """``client.get``, failing instead of hanging when the app does not answer in 30 s."""
    return await asyncio.wait_for(client.get(url, **kwargs), timeout=30)


async def run(db_path: Path, requests: int, profile: bool) -> None:
    """Time the pages, weigh the first visit, print the tables."""
    db_mb = db_path.stat().st_size / 1e6  # noqa: ASYNC240 (once, before serving)
    keys = sample_keys(db_path)
    rng = random.Random(2)
    with tempfile.TemporaryDirectory(prefix="om-web-bench-") as tmp:
        app = App(db_path, Path(tmp))
        asgi = await app.start()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url=BASE) as client:
            cases = page_cases(keys, rng)
            started = time.perf_counter()
            results = await time_pages(app, client, cases, requests)
            elapsed = time.perf_counter() - started
            rows, encoding = await first_visit(client)
            slowest = max(results, key=lambda n: quantiles(results[n].total)[1])
            report = await profile_page(client, cases[slowest], min(requests, 300)) if profile else ""
        await app.stop()

    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} cores; database {db_path} "
          f"({db_mb:.0f} MB)")
    print(f"\nrender time, {requests} requests a page after 50 to warm up, signed out, in-process ASGI "
          f"({elapsed:.0f}s); ms")
    print(f"{'page':28} {'p50':>7} {'p99':>7} {'query p50':>10} {'query p99':>10} {'tmpl p50':>9} "
          f"{'tmpl p99':>9} {'HTML B':>8} {'items':>6}  p99<{TARGET_P99_MS:.0f}ms")
    for name, t in results.items():
        p50, p99 = quantiles(t.total)
        q50, q99 = quantiles(t.query)
        r50, r99 = quantiles(t.render)
        print(f"{name:28} {p50:7.2f} {p99:7.2f} {q50:10.2f} {q99:10.2f} {r50:9.2f} {r99:9.2f} "
              f"{t.html_bytes:8,} {t.tracks_listed:6}  {'ok' if p99 < TARGET_P99_MS else 'OVER'}")
    if not keys["albums"]:
        print("/album/{did}/{rkey}: skipped, the bench database has no albums")
    print("(query: the page's XRPC handlers, Pages.query; tmpl: WebApp.render; items: tracks listed)")

    print(f"\nfirst visit to /, without audio and artwork (the server sent the HTML as {encoding}):")
    print(f"{'resource':32} {'via':14} {'status':>6} {'type':26} {'bytes':>8} {'gzip -6':>8}")
    for r in rows:
        print(f"{r.path:32} {r.via:14} {r.status:6} {r.ctype:26} {r.size:8,} {r.size_gz:8,}")
    page = [r for r in rows if r.via != "sw precache"]
    for label, subset in (("page and what it loads", page), ("+ service worker precache", rows)):
        raw, packed = sum(r.size for r in subset), sum(r.size_gz for r in subset)
        verdict = "ok" if raw < TARGET_BYTES else "OVER"
        print(f"{'total: ' + label:32} {'':14} {'':6} {'':26} {raw:8,} {packed:8,}  "
              f"< {TARGET_BYTES // 1024} KB uncompressed: {verdict}")
    if report:
        print(f"\ncProfile of {slowest} ({min(requests, 300)} requests):\n{report}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=100_000)
    ap.add_argument("--plays", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=1000, help="timed requests a page")
    ap.add_argument("--db", default=str(DATA / "queries.sqlite"))
    ap.add_argument("--rebuild", action="store_true", help="build the database even when one is there")
    ap.add_argument("--profile", action="store_true", help="cProfile the slowest page")
    args = ap.parse_args()
    path = Path(args.db)
    started = time.perf_counter()
    ensure_db(path, args.tracks, args.plays, args.rebuild)
    print(f"database ready in {time.perf_counter() - started:.0f}s", flush=True)
    asyncio.run(run(path, args.requests, args.profile))


if __name__ == "__main__":
    main()
