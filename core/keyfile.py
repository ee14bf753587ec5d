"""Development key files made once, safely when several processes start together (``openmusic run
--role`` starts an indexer and API processes on one data folder)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def read_or_create(path: Path, make: Callable[[], str]) -> tuple[str, bool]:
    """The text of the file ``path``; when it is missing, ``make()``'s text written there first (mode
    0600). Returns (text, whether this call created it). The file appears whole or not at all: the
    text goes to a temporary file in the same folder, fsynced, then is hard-linked into place, and a
    process that loses the race reads the winner's file. Raises ``OSError`` when the folder cannot be
    written."""
    if path.exists():
        return path.read_text(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:  # mkstemp makes it 0600
            out.write(make())
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
            created = True
        except FileExistsError:
            created = False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path.read_text(), created
