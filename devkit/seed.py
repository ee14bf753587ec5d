"""Seeds a demo catalog on a PDS through its own API (the same calls a creator's or listener's
client makes): 3 artists with profiles, 2 albums, 12 tracks with generated audio and artwork,
3 listeners with plays (two of them with a country), likes, votes (after listening) and follows, two
playlists (River's, one with Sam as a collaborator: ``devkit.demo_playlists``), and a manager of the
first artist. Needs a PDS that lets anyone create accounts (the local devnet)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.lexicons import FOLLOW, VOTE
from core.publish import (
    PdsClient,
    StrongRef,
    like,
    now_iso,
    publish_album,
    publish_profile,
    publish_track,
    record_play,
)
from devkit.demo_playlists import seed_playlists
from devkit.devnet import Devnet
from devkit.media import cover_png, tune_wav

ARTISTS = [
    {"handle": "aurora-tide.test", "name": "Aurora Tide", "about": "Synth tides from the north coast.",
     "album": "Night Drive", "genre": "Synthwave", "ai": "human",
     "tracks": ["Neon Harbor", "Midnight Overpass", "Glass Lanterns", "Coastline Loop"]},
    {"handle": "moss-quartet.test", "name": "Moss Quartet", "about": "Four friends, one small room.",
     "album": "Small Rooms", "genre": "Jazz", "ai": "assisted",
     "tracks": ["Blue Kettle", "Rainy Tuesday", "Walking Bass Home", "Late Set"]},
    {"handle": "pixel-choir.test", "name": "Pixel Choir", "about": "Chiptune singles, made with help.",
     "album": None, "genre": "Chiptune", "ai": "generated",
     "tracks": ["Boss Level", "Save Point", "Extra Life", "Credits Roll"]},
]
LISTENERS = [("river-listens.test", "River"), ("sam-hears.test", "Sam"), ("kim-plays.test", "Kim")]
#: Where each listener says they listen from (the plays' opt-in ``country``; Kim's plays carry none).
COUNTRIES = {"river-listens.test": "NO", "sam-hears.test": "ES"}
#: A manager whom Aurora Tide names and who names her back (both sides agree: ``payments.managers``).
MANAGER = ("max-manages.test", "Max Manages", "aurora-tide.test")


@dataclass
class SeedResult:
    """What was written: handles -> DIDs, track and album strongRefs, counts of plays and likes."""

    dids: dict[str, str] = field(default_factory=dict)
    tracks: list[StrongRef] = field(default_factory=list)
    albums: list[StrongRef] = field(default_factory=list)
    plays: int = 0
    likes: int = 0
    votes: int = 0
    follows: int = 0
    playlists: list[StrongRef] = field(default_factory=list)


def seed(net: Devnet, password: str = "demo-password-1234", log: Any = print) -> SeedResult:
    """Create the demo accounts and records on ``net``'s PDS. Returns a ``SeedResult``."""
    out = SeedResult()
    work = Path(tempfile.mkdtemp(prefix="openmusic-seed-"))
    listener_dids = []
    for i, (handle, name) in enumerate(LISTENERS):
        acct = net.create_account(handle, password)
        out.dids[handle] = acct.did
        listener_dids.append(acct.did)
        client = PdsClient(net.pds_url, handle, password)
        avatar = client.upload_blob(cover_png(900 + i, name, 128), "image/png")
        publish_profile(client, name, roles=["listener"], avatar=avatar)
        client.close()
    manager_handle, manager_name, managed = MANAGER
    manager = net.create_account(manager_handle, password)
    out.dids[manager_handle] = manager.did
    n = 0
    for a_i, art in enumerate(ARTISTS):
        acct = net.create_account(art["handle"], password)
        out.dids[art["handle"]] = acct.did
        client = PdsClient(net.pds_url, art["handle"], password)
        avatar = client.upload_blob(cover_png(100 + a_i, art["name"], 128), "image/png")
        extra_profile: dict[str, Any] = {
            "location": "Earth", "links": [{"uri": f"https://{art['handle']}.example", "label": "site"}]}
        if art["handle"] == managed:
            extra_profile["managers"] = [manager.did]
        publish_profile(client, art["name"], description=art["about"], roles=["artist"], avatar=avatar,
                        extra=extra_profile)
        cover = client.upload_blob(cover_png(200 + a_i, art["album"] or art["name"]), "image/png")
        album_ref = None
        if art["album"]:
            album_ref = publish_album(client, art["album"], [], artwork=cover, extra={"genre": art["genre"]})
        refs = []
        for t_i, title in enumerate(art["tracks"]):
            n += 1
            wav = work / f"track{n}.wav"
            wav.write_bytes(tune_wav(n, seconds=6 + (n % 5)))
            art_blob = cover if album_ref else client.upload_blob(cover_png(300 + n, title), "image/png")
            splits = [{"did": acct.did, "shareBps": 10000}]
            if a_i == 1:  # the quartet shares with its first listener, who co-wrote one tune
                splits = [{"did": acct.did, "shareBps": 7500}, {"did": listener_dids[0], "shareBps": 2500}]
            extra: dict[str, Any] = {
                "genre": art["genre"], "trackNumber": t_i + 1, "moods": ["calm" if n % 2 else "upbeat"],
                "tags": [art["genre"].lower(), "demo"], "explicit": False, "license": "cc-by-4.0",
                "aiDisclosure": {"level": art["ai"], **({"tools": ["melody-helper"]} if art["ai"] != "human" else {})},
                "splits": splits, "description": f"{title} by {art['name']}."}
            ref = publish_track(client, wav, title=title, artwork=art_blob, album=album_ref, extra=extra)
            refs.append(ref)
            log(f"  published {title!r} by {art['name']}: {ref.uri}")
        out.tracks += refs
        if album_ref:
            rkey = album_ref.uri.rsplit("/", 1)[1]
            out.albums.append(publish_album(client, art["album"], refs, rkey=rkey, artwork=cover,
                                            extra={"genre": art["genre"]}))
        client.close()
    client = PdsClient(net.pds_url, manager_handle, password)
    publish_profile(client, manager_name, roles=["manager"], extra={"manages": [out.dids[managed]]})
    client.close()
    clients = {}
    for i, (handle, _name) in enumerate(LISTENERS):
        client = clients[handle] = PdsClient(net.pds_url, handle, password)
        for j, track in enumerate(out.tracks):
            if (i + j) % 3 == 0 or j < 2:
                full = 6000 + ((j + 1) % 5) * 1000
                heard = full if (i + j) % 2 == 0 else full // 2
                record_play(client, track, heard, completed=heard == full, segments=[(0, heard)],
                            country=COUNTRIES.get(handle))
                out.plays += 1
                if j % 2 == 0 or i == 0:  # a vote after listening: up, but Kim dislikes every fourth
                    direction = "down" if i == 2 and j % 4 == 0 else "up"
                    client.create_record(VOTE, {"subject": track.as_dict(), "direction": direction,
                                                "createdAt": now_iso()})
                    out.votes += 1
            if (i * 5 + j) % 4 == 0:
                like(client, track)
                out.likes += 1
        for artist in dict.fromkeys(t.uri.split("/")[2] for t in out.tracks[i::2]):  # follow a few artists
            client.create_record(FOLLOW, {"subject": artist, "createdAt": now_iso()})
            out.follows += 1
    river, sam = clients[LISTENERS[0][0]], clients[LISTENERS[1][0]]
    out.playlists = seed_playlists(river, sam, out.tracks, log=log)
    for client in clients.values():
        client.close()
    return out
