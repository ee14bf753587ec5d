"""Tips by who gave them (``fm.openmusic.payment.getTips?payer=``: a listener's page lists the artists
and songs they tipped), newest first like the other tip lists."""

from yoyo import step

__depends__ = {"0009_web_sessions"}

steps = [
    step("CREATE INDEX tip_payer ON tip(did, sort_at DESC, uri)", "DROP INDEX tip_payer"),
]
