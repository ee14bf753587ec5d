"""Sample teal.fm and plyr.fm records, in the shapes their writers produce (atproto data model).

Sources: teal.fm's lexicons (teal-fm/teal ``lexicons/fm.teal/feed/play.json`` at ``bb80aca``; the
alpha one at ``f661868``), plyr.fm's writers (zzstoatzz/plyr.fm ``b156152f``:
``backend/src/backend/_internal/atproto/records/fm_teal/play.py`` ``build_teal_play_record``,
``.../fm_plyr/track.py`` ``build_track_record``), and the writers' differences recorded in
/work/shared/reference/music-lexicons-and-payments.md A.3 (piper: legacy namespace, bare-UUID
MBIDs, ``originUrl``/``musicServiceBaseDomain``, deprecated ``artistNames``; Rocksky: ``mbid:``
prefixes, ISRC). Each builder returns a fresh dict; ``extra`` overrides or adds fields.
"""

from __future__ import annotations

from typing import Any

from tests.records import AUDIO

TEAL = "fm.teal.feed.play"
TEAL_ALPHA = "fm.teal.alpha.feed.play"
PLYR = "fm.plyr.track"
PLAYED = "2026-11-01T12:00:00Z"


def plyr_scrobble(track: str = "Neon Harbor", artist: str = "Ada", **extra: Any) -> dict[str, Any]:
    """An ``fm.teal.feed.play`` as plyr.fm writes it (``build_teal_play_record``)."""
    rec = {"$type": TEAL, "trackName": track, "artists": [{"artistName": artist}],
           "musicServiceUri": "https://plyr.fm", "submissionClientAgent": "plyr.fm/1.0", "playedTime": PLAYED,
           "duration": 180, "releaseName": "Harbor Lights", "originUri": "https://plyr.fm/track/42"}
    rec.update(extra)
    return rec


def rocksky_scrobble(track: str = "Neon Harbor", artist: str = "Ada", **extra: Any) -> dict[str, Any]:
    """An ``fm.teal.feed.play`` as Rocksky writes it: ``mbid:``-prefixed MusicBrainz IDs, ISRC."""
    rec = {"$type": TEAL, "trackName": track,
           "artists": [{"artistName": artist, "artistMbId": "mbid:5b11f4ce-a62d-471e-81fc-a69a8278c7da"}],
           "recordingMbId": "mbid:0f42ab32-22cd-4dcf-927b-a8d9a183d68b",
           "releaseMbId": "mbid:4b1b3bc6-2c4f-4a4f-9b8e-2d0d5a8c1f7e", "releaseName": "Harbor Lights",
           "isrc": "USRC17607839", "duration": 180, "musicServiceUri": "https://rocksky.app",
           "submissionClientAgent": "app.rocksky/1.0.0", "playedTime": PLAYED}
    rec.update(extra)
    return rec


def piper_alpha_scrobble(track: str = "Neon Harbor", artist: str = "Ada", **extra: Any) -> dict[str, Any]:
    """An ``fm.teal.alpha.feed.play`` as piper writes it: bare-UUID MBIDs, the deprecated
    ``artistNames``/``artistMbIds``, ``originUrl`` and ``musicServiceBaseDomain``."""
    rec = {"$type": TEAL_ALPHA, "trackName": track, "artistNames": [artist],
           "artistMbIds": ["5b11f4ce-a62d-471e-81fc-a69a8278c7da"],
           "recordingMbId": "0f42ab32-22cd-4dcf-927b-a8d9a183d68b", "releaseName": "Harbor Lights",
           "duration": 180, "originUrl": "https://open.spotify.com/track/4uLU6hMCjMI75M1A2tKUQC",
           "musicServiceBaseDomain": "spotify.com", "submissionClientAgent": "piper/v0.0.1", "playedTime": PLAYED}
    rec.update(extra)
    return rec


def plyr_track(title: str = "Tidal Static", artist: str = "Ada", blob: Any = AUDIO, **extra: Any) -> dict[str, Any]:
    """An ``fm.plyr.track`` with its audio as a blob in the creator's PDS (``build_track_record``
    with ``audio_blob``; ``audioUrl`` omitted, as plyr does when the blob is present)."""
    rec: dict[str, Any] = {"$type": PLYR, "title": title, "artist": artist, "fileType": "mp3",
                           "createdAt": "2026-11-01T11:00:00.000000Z", "duration": 3, "album": "Shoreline",
                           "description": "Recorded on the pier.",
                           "audioBlob": {"$type": "blob", "ref": blob, "mimeType": "audio/mpeg", "size": 48000}}
    rec.update(extra)
    return rec


def plyr_url_track(title: str = "Elsewhere", artist: str = "Ada", **extra: Any) -> dict[str, Any]:
    """An ``fm.plyr.track`` whose audio is only a URL on plyr's CDN (no blob): not indexed here."""
    rec = {"$type": PLYR, "title": title, "artist": artist, "fileType": "mp3", "createdAt": "2026-11-01T11:00:00Z",
           "duration": 200, "audioUrl": "https://audio.plyr.fm/audio/abc123.mp3",
           "imageUrl": "https://images.plyr.fm/abc123.jpg"}
    rec.update(extra)
    return rec
