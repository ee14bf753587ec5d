"""Demo playlists (issue 13): written through the PDS's own API, as a listener's client would.

``seed_playlists(owner, collaborator, tracks)`` makes two playlists in ``owner``'s repo
(``fm.openmusic.catalog.playlist``): "Late Night Drive" (every third track, with ``collaborator``
listed as a collaborator) and "Quiet Corners" (the first four tracks, in reverse); then
``collaborator`` adds two tracks to the first with ``fm.openmusic.catalog.playlistItem`` records in
its own repo, which the playlist page shows after the owner's. For ``devkit.seed`` (e.g. River as
owner and Sam as collaborator, with the seeded tracks)."""

from __future__ import annotations

from typing import Any

from core.lexicons import PLAYLIST, PLAYLIST_ITEM
from core.publish import PdsClient, StrongRef, now_iso


def seed_playlists(owner: PdsClient, collaborator: PdsClient, tracks: list[StrongRef],
                   log: Any = print) -> list[StrongRef]:
    """Write the demo playlists and the collaborator's items (module docstring); returns the
    playlists' strongRefs. Needs at least 4 tracks. Raises what ``PdsClient`` raises."""
    if len(tracks) < 4:
        raise ValueError("the demo playlists need at least 4 tracks")
    made = []
    for title, description, picked, collaborators in (
            ("Late Night Drive", "Slow lights and long roads.", tracks[::3], [collaborator.did]),
            ("Quiet Corners", "For reading, or not.", list(reversed(tracks[:4])), [])):
        record: dict[str, Any] = {"$type": PLAYLIST, "title": title, "description": description,
                                  "items": [{"track": t.as_dict()} for t in picked], "createdAt": now_iso()}
        if collaborators:
            record["collaborators"] = collaborators
        ref = owner.create_record(PLAYLIST, record)
        made.append(ref)
        log(f"  playlist {title!r} by {owner.handle}: {ref.uri}")
    for track in (tracks[1], tracks[2]):
        collaborator.create_record(PLAYLIST_ITEM, {"$type": PLAYLIST_ITEM, "subject": made[0].uri,
                                                   "track": track.as_dict(), "createdAt": now_iso()})
    log(f"  {collaborator.handle} added 2 tracks to 'Late Night Drive'")
    return made
