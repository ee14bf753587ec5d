"""``openmusic publish`` as a creator runs it: tagged audio files on disk, an app password in the
environment, the creator's own PDS. The AppView then serves what it wrote."""

from __future__ import annotations

import os
import subprocess
import sys

from mutagen.id3 import TBPM, TCON, TIT2, TRCK
from mutagen.wave import WAVE

from core.publish import read_audio
from devkit.media import cover_png, tune_wav
from tests.conftest import eventually
from tests.test_e2e import ok


def tagged_wav(path, seed: int, title: str, number: int) -> None:
    path.write_bytes(tune_wav(seed, seconds=3))
    audio = WAVE(path)
    audio.add_tags()
    audio.tags.add(TIT2(encoding=3, text=title))
    audio.tags.add(TCON(encoding=3, text="Ambient"))
    audio.tags.add(TRCK(encoding=3, text=f"{number}/2"))
    audio.tags.add(TBPM(encoding=3, text="96"))
    audio.save()


def test_read_audio_reads_duration_and_tags(tmp_path):
    path = tmp_path / "a.wav"
    tagged_wav(path, 1, "Tagged Title", 2)
    info = read_audio(path)
    assert (info.duration_ms, info.mime_type, info.title, info.genre, info.track_number, info.bpm) == (
        3000, "audio/wav", "Tagged Title", "Ambient", 2, 96)


async def test_publish_cli_writes_profile_album_and_tracks(appview, net, tmp_path):
    net.create_account("cli-artist.test", "cli-password-123")
    a, b = tmp_path / "one.wav", tmp_path / "two.wav"
    tagged_wav(a, 21, "Dawn Chorus", 1)
    tagged_wav(b, 22, "Dusk Chorus", 2)
    (tmp_path / "cover.png").write_bytes(cover_png(5, "EP"))
    env = dict(os.environ, OPENMUSIC_PASSWORD="cli-password-123")
    out = subprocess.run(
        [sys.executable, "-m", "openmusic.cli", "publish", "--pds", net.pds_url, "--handle", "cli-artist.test",
         "--display-name", "CLI Artist", "--bio", "from the terminal", "--album", "Choruses",
         "--artwork", str(tmp_path / "cover.png"), "--ai-level", "human", str(a), str(b)],
        env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    uris = out.stdout.split()
    assert [u.split("/")[3] for u in uris] == ["fm.openmusic.actor.profile", "fm.openmusic.catalog.track",
                                               "fm.openmusic.catalog.track", "fm.openmusic.catalog.album"]
    assert "cli-password-123" not in out.stdout + out.stderr

    # the album can be indexed a moment before its tracks' views are complete (seen once under CI load)
    album = (await eventually(lambda: ok(appview, "fm.openmusic.catalog.getAlbum", uri=uris[3]),
                              until=lambda got: len(got["album"]["tracks"]) == 2))["album"]
    assert [t["title"] for t in album["tracks"]] == ["Dawn Chorus", "Dusk Chorus"]
    assert album["artist"]["displayName"] == "CLI Artist" and album["artist"]["handle"] == "cli-artist.test"
    first = album["tracks"][0]
    assert first["durationMs"] == 3000 and first["genre"] == "Ambient" and first["aiLevel"] == "human"
    assert first["record"]["bpm"] == 96 and first["album"]["uri"] == uris[3]
    cover = await appview.http_client.get(first["artworkUrl"])
    assert cover.status_code == 200 and cover.headers["content-type"] == "image/png"
    assert cover.content == (tmp_path / "cover.png").read_bytes()


def test_publish_cli_errors_are_clear(net, tmp_path):
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"hello")
    env = dict(os.environ, OPENMUSIC_PASSWORD="wrong-password")
    out = subprocess.run([sys.executable, "-m", "openmusic.cli", "publish", "--pds", net.pds_url, "--handle",
                          "nobody-at-all.test", str(bad)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "createSession failed (401)" in out.stderr and "Traceback" not in out.stderr
    env.pop("OPENMUSIC_PASSWORD")
    out = subprocess.run([sys.executable, "-m", "openmusic.cli", "publish", "--pds", net.pds_url, "--handle", "x.test",
                          str(bad)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "OPENMUSIC_PASSWORD" in out.stderr
