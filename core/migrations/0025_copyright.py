"""Copyright cases (issue 14, "A copyright report takes the audio down until a counter-notice; both
sides are notified").

``copyright_case`` is one claim against one track, opened by an operator from the moderation queue
when they act on a ``fm.openmusic.moderation.defs#reasonCopyright`` report: ``id``; ``track`` (the
track's AT-URI), ``artist`` (the DID whose repo holds it) and ``claimant`` (the DID of the report's
sender); ``claim`` (the report's text, or NULL); ``reports`` (a JSON array of the report ids it
closed); ``opened_at`` and ``opened_by`` (the operator's DID); ``status``: ``down`` (the audio is
taken down), ``countered`` (the artist filed a counter-notice: the audio returns at ``restore_at``
unless the claimant shows the operator they went to court), ``restored`` (the operator restored it
early, or the claim was withdrawn) or ``upheld`` (the operator kept it down after a counter-notice);
``counter_notice`` (the artist's statement) and ``countered_at``; ``restore_at``; ``closed_at``.

The audio itself is taken down by our labeler's ``audio-takedown`` label on the track (so other
AppViews that follow our labeler can honour it too): the case only records the process. The label
is issued when the case opens, re-issued with ``exp`` = ``restore_at`` on a counter-notice, negated
when the operator restores the audio, and issued again without ``exp`` when they uphold the claim.
"""

from yoyo import step

__depends__ = {"0024_reports"}

steps = [
    step("""CREATE TABLE copyright_case (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        track TEXT NOT NULL,
        artist TEXT NOT NULL,
        claimant TEXT NOT NULL,
        claim TEXT,
        reports TEXT NOT NULL DEFAULT '[]',
        opened_at TEXT NOT NULL,
        opened_by TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'down',
        counter_notice TEXT,
        countered_at TEXT,
        restore_at TEXT,
        closed_at TEXT)""", "DROP TABLE copyright_case"),
    step("CREATE INDEX copyright_case_track ON copyright_case (track, opened_at)"),
    step("CREATE INDEX copyright_case_artist ON copyright_case (artist, opened_at)"),
    step("CREATE INDEX copyright_case_claimant ON copyright_case (claimant, opened_at)"),
]
