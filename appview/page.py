"""A plain HTML index of the newest tracks with players, so a person can see and hear the catalog."""

from __future__ import annotations

from html import escape

from appview.queries import search_tracks
from appview.views import ViewContext


async def render_index(ctx: ViewContext, limit: int = 50) -> str:
    """HTML for ``/``: the newest ``limit`` tracks, each with artwork and an ``<audio>`` player."""
    result = await search_tracks(ctx, {"sort": "recent", "limit": limit})
    items = []
    for t in result["tracks"]:
        art = f'<img src="{escape(t["artworkUrl"])}" alt="" width="64" height="64">' if t.get("artworkUrl") else ""
        artist = t["artist"].get("displayName") or t["artist"]["handle"]
        meta = " · ".join(escape(x) for x in (t.get("genre") or "", t.get("aiLevel") or "") if x)
        items.append(
            f'<li>{art}<div><b>{escape(t["title"])}</b> — {escape(artist)} '
            f'<small>@{escape(t["artist"]["handle"])} {meta} · {t["plays"]} plays · {t["likes"]} likes</small><br>'
            f'<audio controls preload="none" src="{escape(t["audioUrl"])}"></audio></div></li>')
    body = "\n".join(items) or "<li>No tracks indexed yet.</li>"
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Open Music</title>
<style>body{{font-family:system-ui,sans-serif;max-width:760px;margin:2em auto;padding:0 1em}}
li{{display:flex;gap:12px;align-items:center;margin:10px 0}} ul{{list-style:none;padding:0}}
small{{color:#666}} img{{border-radius:6px}}</style></head><body>
<h1>Open Music</h1><p>Newest tracks indexed from the firehose. The XRPC API is under
<code>/xrpc/fm.openmusic.*</code>; see <a href="/health">/health</a>.</p><ul>{body}</ul></body></html>"""
