"""A purchase-link click counts once per clicker, track and UTC day: ``purchase_click_seen`` holds a
keyed hash of who clicked (the signed-in DID, or the address of a visitor who is not signed in) for
the current day only; older days are deleted as new clicks come. The counts stay in ``purchase_click``."""

from yoyo import step

__depends__ = {"0014_money_analytics"}

steps = [
    step("""CREATE TABLE purchase_click_seen (
        day TEXT NOT NULL,
        track_uri TEXT NOT NULL,
        who TEXT NOT NULL,
        PRIMARY KEY (day, track_uri, who)
    ) WITHOUT ROWID""", "DROP TABLE purchase_click_seen"),
]
