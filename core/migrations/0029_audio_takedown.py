"""Finding taken-down audio fast (issue 14, copyright cases): a partial index of the labels whose
value is ``audio-takedown``, so a page of track views asks which of its tracks' audio is down
without scanning every label. Runs on SQLite and PostgreSQL alike (as every migration from here on)."""

from yoyo import step

__depends__ = {"0028_postgresql_baseline"}

steps = [
    step("CREATE INDEX label_audio_takedown ON label (uri) WHERE val = 'audio-takedown'",
         "DROP INDEX label_audio_takedown"),
]
