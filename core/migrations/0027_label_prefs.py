"""Viewers' content-label preferences (issue 14: "the web app blurs or warns by the viewer's
preferences"), as Bluesky's ``contentLabelPref`` has them: ``label_pref`` holds one row per signed-in
account (``did``) and label value (``val``: ``porn``, ``sexual``, ``nudity``, ``graphic-media``,
``ai-undisclosed``) whose ``visibility`` is not the default: ``show`` (no warning), ``warn`` (the
artwork covered until asked; the default) or ``hide`` (left out of lists; a direct page still warns);
``updated_at``. Read by ``web.label_prefs``.
"""

from yoyo import step

__depends__ = {"0026_suspended"}

steps = [
    step("""CREATE TABLE label_pref (
        did TEXT NOT NULL,
        val TEXT NOT NULL,
        visibility TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (did, val))""", "DROP TABLE label_pref"),
]
