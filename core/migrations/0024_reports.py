"""Moderation, step 2 (issue 14): our own labeler, reports and the operator's moderation queue.

``issued_label`` holds every label our labeler issued, in the order issued: ``seq`` (the
``com.atproto.label.subscribeLabels`` sequence number, from 1, never reused), and the label as
signed (``com.atproto.label.defs#label``): ``src`` (our service DID), ``uri`` (a DID or an AT-URI),
``val``, ``cid`` (NULL: any version), ``neg`` (1: a negation), ``cts`` and ``exp`` (atproto
datetimes, ``YYYY-MM-DDTHH:MM:SS.mmmZ``; ``exp`` NULL: never), ``ver`` and ``sig`` (64 bytes,
k256 compact r||s over the DAG-CBOR of the label without ``sig``). A row is never changed: taking a
label back is a new row with ``neg = 1``. The same labels go through the label store (``label``,
migration 0023) too, so they apply to our own index at once.

``report`` holds the reports received by ``com.atproto.moderation.createReport`` (from the XRPC
method or the web app's form): ``id``, ``reporter`` (the DID that sent it), ``reason_type`` (a
``com.atproto.moderation.defs#reason*`` or ``fm.openmusic.moderation.defs#reason*`` token),
``reason`` (the reporter's text, or NULL), the subject: ``subject`` (a DID for an account, an
AT-URI for a track, album or playlist), ``subject_cid`` (the record version reported, or NULL) and
``subject_kind`` (``account``, ``track``, ``album``, ``playlist``); ``created_at``; ``status``
(``open``, then ``actioned`` or ``dismissed``) and ``action_id``: the ``moderation_action`` that
closed it.

``moderation_action`` is the audit log of the operators' actions, never changed: ``id``,
``operator`` (DID), ``at``, ``subject``, ``action`` (``takedown``, ``label``, ``negate``,
``dismiss``), ``val`` (the label issued or negated, NULL for a dismissal), ``note`` (the
operator's text or NULL), ``reports`` (a JSON array of the report ids it closed) and ``label_seq``
(the ``issued_label`` row it wrote, or NULL).
"""

from yoyo import step

__depends__ = {"0023_labels"}

steps = [
    step("""CREATE TABLE issued_label (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        src TEXT NOT NULL,
        uri TEXT NOT NULL,
        val TEXT NOT NULL,
        cid TEXT,
        neg INTEGER NOT NULL DEFAULT 0,
        cts TEXT NOT NULL,
        exp TEXT,
        ver INTEGER NOT NULL DEFAULT 1,
        sig BLOB NOT NULL)""", "DROP TABLE issued_label"),
    step("CREATE INDEX issued_label_uri ON issued_label (uri, val, seq)"),
    step("""CREATE TABLE report (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        reporter TEXT NOT NULL,
        reason_type TEXT NOT NULL,
        reason TEXT,
        subject TEXT NOT NULL,
        subject_cid TEXT,
        subject_kind TEXT NOT NULL,
        created_at TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'open',
        action_id INTEGER)""", "DROP TABLE report"),
    step("CREATE INDEX report_open ON report (status, subject, created_at)"),
    step("""CREATE TABLE moderation_action (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        operator TEXT NOT NULL,
        at TEXT NOT NULL,
        subject TEXT NOT NULL,
        action TEXT NOT NULL,
        val TEXT,
        note TEXT,
        reports TEXT NOT NULL DEFAULT '[]',
        label_seq INTEGER)""", "DROP TABLE moderation_action"),
]
