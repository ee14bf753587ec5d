"""Creators publish from their own PDS: upload the audio and artwork as blobs and write
``fm.openmusic.catalog.track`` / ``catalog.album`` / ``actor.profile`` records there
(``com.atproto.server.createSession``, ``com.atproto.repo.uploadBlob``, ``createRecord``, ``putRecord``).
Nothing is uploaded to the AppView."""

from __future__ import annotations

import io
import mimetypes
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import mutagen

from core.lexicons import ALBUM, LIKE, PLAY, PROFILE, TIP, TRACK, from_json, validate_record


class PublishError(RuntimeError):
    """The PDS refused a call, or the input file is unusable. ``str()`` says which and why."""


def now_iso() -> str:
    """Current UTC time, atproto datetime format."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class StrongRef:
    """``com.atproto.repo.strongRef``: a record's AT-URI and CID."""

    uri: str
    cid: str

    def as_dict(self) -> dict[str, str]:
        return {"uri": self.uri, "cid": self.cid}


class PdsClient:
    """A logged-in XRPC session on one PDS. ``did`` and ``handle`` are the account's.

    Raises ``PublishError`` on any non-2xx answer (with the PDS's XRPC error name and message).
    """

    def __init__(self, pds_url: str, identifier: str, password: str, timeout: float = 60.0) -> None:
        self.pds_url = pds_url.rstrip("/")
        self.http = httpx.Client(base_url=self.pds_url, timeout=timeout)
        session = self._call("POST", "com.atproto.server.createSession",
                             json={"identifier": identifier, "password": password}, auth=False)
        self.did: str = session["did"]
        self.handle: str = session["handle"]
        self._token: str = session["accessJwt"]

    def _call(self, method: str, nsid: str, auth: bool = True, **kwargs: Any) -> dict[str, Any]:
        headers = kwargs.pop("headers", {})
        if auth:
            headers["authorization"] = f"Bearer {self._token}"
        try:
            resp = self.http.request(method, f"/xrpc/{nsid}", headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise PublishError(f"{nsid}: cannot reach {self.pds_url}: {exc}") from exc
        if resp.status_code >= 300:
            try:
                body = resp.json()
                detail = f"{body.get('error')}: {body.get('message')}"
            except ValueError:
                detail = resp.text[:200]
            raise PublishError(f"{nsid} failed ({resp.status_code}) {detail}")
        return resp.json() if resp.content else {}

    def upload_blob(self, data: bytes, mime_type: str) -> dict[str, Any]:
        """Upload bytes; returns the blob object (JSON form) to put in a record."""
        return self._call("POST", "com.atproto.repo.uploadBlob", content=data,
                          headers={"content-type": mime_type})["blob"]

    def create_record(self, collection: str, record: dict[str, Any], rkey: str | None = None) -> StrongRef:
        """Write a new record (validated against our lexicon first). Returns its strongRef."""
        record = {"$type": collection, **record}
        validate_record(collection, from_json(record))
        body: dict[str, Any] = {"repo": self.did, "collection": collection, "record": record}
        if rkey:
            body["rkey"] = rkey
        out = self._call("POST", "com.atproto.repo.createRecord", json=body)
        return StrongRef(out["uri"], out["cid"])

    def put_record(self, collection: str, rkey: str, record: dict[str, Any]) -> StrongRef:
        """Create or replace the record at ``collection/rkey``. Returns its strongRef."""
        record = {"$type": collection, **record}
        validate_record(collection, from_json(record))
        out = self._call("POST", "com.atproto.repo.putRecord",
                         json={"repo": self.did, "collection": collection, "rkey": rkey, "record": record})
        return StrongRef(out["uri"], out["cid"])

    def delete_record(self, collection: str, rkey: str) -> None:
        """Delete ``collection/rkey`` from the repo."""
        self._call("POST", "com.atproto.repo.deleteRecord",
                   json={"repo": self.did, "collection": collection, "rkey": rkey})

    def service_auth(self, aud: str, lxm: str) -> str:
        """A service-auth JWT minted by the PDS (``com.atproto.server.getServiceAuth``) for calling
        ``lxm`` on the service ``aud`` (a DID, optionally with its service fragment)."""
        return self._call("GET", "com.atproto.server.getServiceAuth", params={"aud": aud, "lxm": lxm})["token"]

    def close(self) -> None:
        self.http.close()


@dataclass
class AudioInfo:
    """What we read from an audio file: ``duration_ms``, ``mime_type``, ``format`` (mutagen's class:
    ``MP3``, ``FLAC``, ``OggVorbis``, ``OggOpus``, ``WAVE``, ``MP4``...) and tags (may be None)."""

    duration_ms: int
    mime_type: str
    format: str = ""
    title: str | None = None
    genre: str | None = None
    track_number: int | None = None
    bpm: int | None = None
    isrc: str | None = None


def _tag(audio: Any, *keys: str) -> str | None:
    tags = getattr(audio, "tags", None)
    if not tags:
        return None
    for key in keys:
        try:
            value = tags.get(key)
        except (KeyError, ValueError, TypeError):
            value = None
        if value:
            text = value.text[0] if hasattr(value, "text") else (value[0] if isinstance(value, list) else value)
            return str(text).strip() or None
    return None


def read_audio(source: Path | bytes, name: str = "") -> AudioInfo:
    """Duration (ms), mime type and common tags (ID3, Vorbis, MP4) of an audio file, given as a path
    or as its bytes (``name``: the file's name, for messages and the type when the tags name none).
    Raises ``PublishError``."""
    label = str(source) if isinstance(source, Path) else (name or "the file")
    try:
        audio = mutagen.File(source if isinstance(source, Path) else io.BytesIO(source))
    except mutagen.MutagenError as exc:
        raise PublishError(f"{label}: cannot read audio: {exc}") from exc
    if audio is None or not getattr(audio, "info", None) or not audio.info.length:
        raise PublishError(f"{label}: not a recognised audio file")
    mime = next((m for m in getattr(audio, "mime", []) if m.startswith("audio/") and "x-" not in m), None)
    mime = mime or mimetypes.guess_type(source.name if isinstance(source, Path) else name)[0] or "audio/mpeg"
    number = _tag(audio, "TRCK", "tracknumber", "trkn")
    bpm = _tag(audio, "TBPM", "bpm", "tmpo")
    return AudioInfo(
        duration_ms=max(1, round(audio.info.length * 1000)), mime_type=mime, format=type(audio).__name__,
        title=_tag(audio, "TIT2", "title", "\xa9nam"), genre=_tag(audio, "TCON", "genre", "\xa9gen"),
        track_number=int(number.split("/")[0]) if number and number.split("/")[0].isdigit() else None,
        bpm=int(float(bpm)) if bpm and bpm.replace(".", "", 1).isdigit() else None,
        isrc=_tag(audio, "TSRC", "isrc"))


def image_mime(path: Path) -> str:
    """Mime type of an artwork file from its name (png, jpeg or webp). Raises ``PublishError``."""
    mime = mimetypes.guess_type(path.name)[0]
    if mime not in ("image/png", "image/jpeg", "image/webp"):
        raise PublishError(f"{path}: artwork must be PNG, JPEG or WebP")
    return mime


def publish_track(client: PdsClient, audio_path: Path, *, title: str | None = None,
                  artwork: dict[str, Any] | None = None, album: StrongRef | None = None,
                  extra: dict[str, Any] | None = None) -> StrongRef:
    """Upload ``audio_path`` and write a track record. Title defaults to the file's tag, then its name.

    ``artwork`` is an uploaded blob; ``extra`` adds/overrides record fields (genre, splits,
    aiDisclosure...). Returns the track's strongRef.
    """
    info = read_audio(audio_path)
    blob = client.upload_blob(audio_path.read_bytes(), info.mime_type)
    record: dict[str, Any] = {"title": title or info.title or audio_path.stem, "audio": blob,
                              "duration": info.duration_ms, "createdAt": now_iso()}
    for key, value in (("genre", info.genre), ("trackNumber", info.track_number), ("bpm", info.bpm),
                       ("isrc", info.isrc)):
        if value:
            record[key] = value
    if artwork:
        record["artwork"] = artwork
    if album:
        record["album"] = album.as_dict()
    record.update(extra or {})
    return client.create_record(TRACK, record)


def publish_album(client: PdsClient, title: str, tracks: list[StrongRef], *, rkey: str | None = None,
                  artwork: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> StrongRef:
    """Write (or with ``rkey``, replace) an album record listing ``tracks`` in order."""
    record: dict[str, Any] = {"title": title, "tracks": [t.as_dict() for t in tracks], "createdAt": now_iso()}
    if artwork:
        record["artwork"] = artwork
    record.update(extra or {})
    if rkey:
        return client.put_record(ALBUM, rkey, record)
    return client.create_record(ALBUM, record)


def publish_profile(client: PdsClient, display_name: str, *, description: str | None = None,
                    roles: list[str] | None = None, avatar: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> StrongRef:
    """Write the account's ``fm.openmusic.actor.profile`` (rkey ``self``)."""
    record: dict[str, Any] = {"displayName": display_name, "roles": roles or ["listener"], "createdAt": now_iso()}
    if description:
        record["description"] = description
    if avatar:
        record["avatar"] = avatar
    record.update(extra or {})
    return client.put_record(PROFILE, "self", record)


def record_play(client: PdsClient, track: StrongRef, listened_ms: int, *, completed: bool = False,
                segments: list[tuple[int, int]] | None = None, client_name: str = "openmusic-cli/0.1",
                country: str | None = None) -> StrongRef:
    """Write a ``fm.openmusic.listen.play`` record in the listener's repo (what a player does);
    ``country``: the listener's opt-in ISO 3166-1 alpha-2 code."""
    record: dict[str, Any] = {"track": track.as_dict(), "createdAt": now_iso(), "listenedMs": listened_ms,
                              "completed": completed, "client": client_name}
    if segments:
        record["segments"] = [{"startMs": a, "endMs": b} for a, b in segments]
    if country:
        record["country"] = country
    return client.create_record(PLAY, record)


def like(client: PdsClient, subject: StrongRef) -> StrongRef:
    """Write a ``fm.openmusic.social.like`` of a track or album."""
    return client.create_record(LIKE, {"subject": subject.as_dict(), "createdAt": now_iso()})


def tip(client: PdsClient, artist_did: str, amount: int, currency: str = "USD", *, track: StrongRef | None = None,
        message: str | None = None) -> StrongRef:
    """Write a ``fm.openmusic.payment.tip`` of ``amount`` minor units to ``artist_did`` (for ``track``)
    in the listener's repo; a broker settles it from the listener's credit."""
    record: dict[str, Any] = {"subject": artist_did, "amount": amount, "currency": currency, "createdAt": now_iso()}
    if track:
        record["track"] = track.as_dict()
    if message:
        record["message"] = message
    return client.create_record(TIP, record)
