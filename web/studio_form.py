"""The studio's track and album forms as data: what the form fields say -> the fields of an
``fm.openmusic.catalog.track`` / ``catalog.album`` record, and a record -> the form's values (to edit
it). Pure functions, no I/O: handles are resolved by the caller (``web.studio``), which passes
``resolve`` results in. Every refusal is a ``FormProblem`` whose message is shown above the form."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from web.people import names

#: The AI disclosure's levels (``fm.openmusic.catalog.track#aiDisclosure``), in the form's order.
AI_LEVELS = ("human", "assisted", "generated")
#: The licences the form offers (the lexicon's ``knownValues``).
LICENSES = ("all-rights-reserved", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0",
            "cc-by-nd-4.0", "cc0-1.0")
#: Split rows the form shows when none are filled in (the script adds more; the lexicon allows 20).
SPLIT_ROWS = 3
MAX_SPLITS = 20
#: Basis points in 100 %.
WHOLE_BPS = 10_000
Gettext = Callable[[str], str]
_LIST_SPLIT = re.compile(r"[,\n]")


class FormProblem(ValueError):
    """A field the record cannot take: ``str()`` says which and why, in words for the person."""


@dataclass
class SplitRow:
    """One row of the splits editor: who (handle or DID, as typed) and their share, percent as typed."""

    who: str = ""
    percent: str = ""


@dataclass
class TrackForm:
    """The track form's values as strings (what the page shows again after a refusal)."""

    title: str = ""
    genre: str = ""
    moods: str = ""
    tags: str = ""
    bpm: str = ""
    isrc: str = ""
    release_date: str = ""
    description: str = ""
    explicit: bool = False
    license: str = ""
    featured: str = ""
    ai_level: str = ""
    ai_tools: str = ""
    ai_note: str = ""
    purchase_url: str = ""
    splits: list[SplitRow] = field(default_factory=list)
    audio_blob: str = ""       # the uploaded audio's blob ref, JSON (from ``POST /studio/upload``)
    artwork_blob: str = ""
    remove_artwork: bool = False
    duration_ms: str = ""      # read from the audio when it was uploaded
    swap: str = ""             # the CID of the record being edited ("" for a new track)
    key: str = ""              # the new record's key (a TID), so sending the form twice writes once
    again_ok: bool = False     # publish audio this account already published, knowingly
    duplicate_of: str = ""     # the record key of the track that has the same audio (set by the check)

    @classmethod
    def from_fields(cls, fields: dict[str, list[str]]) -> TrackForm:
        """The form as sent (``name -> values``)."""
        def one(name: str) -> str:
            return (fields.get(name) or [""])[0].strip()
        whos, percents = fields.get("splitWho", []), fields.get("splitPercent", [])
        rows = [SplitRow(w.strip(), p.strip()) for w, p in zip(whos, percents, strict=False)]
        return cls(title=one("title"), genre=one("genre"), moods=one("moods"), tags=one("tags"), bpm=one("bpm"),
                   isrc=one("isrc"), release_date=one("releaseDate"), description=one("description"),
                   explicit=one("explicit") == "1", license=one("license"), featured=one("featured"),
                   ai_level=one("aiLevel"), ai_tools=one("aiTools"), ai_note=one("aiNote"),
                   purchase_url=one("purchaseUrl"), splits=[r for r in rows if r.who or r.percent],
                   audio_blob=one("audioBlob"), artwork_blob=one("artworkBlob"),
                   remove_artwork=one("removeArtwork") == "1", duration_ms=one("durationMs"),
                   swap=one("swap"), key=one("key"), again_ok=one("againOk") == "1")

    @classmethod
    def from_record(cls, value: dict[str, Any], handles: dict[str, str], swap: str) -> TrackForm:
        """A published record's values (``handles``: DID -> handle, to show people by handle)."""
        ai = value.get("aiDisclosure") if isinstance(value.get("aiDisclosure"), dict) else {}

        def who(did: str) -> str:
            return handles.get(did) or did
        return cls(
            title=str(value.get("title") or ""), genre=str(value.get("genre") or ""),
            moods=", ".join(value.get("moods") or []), tags=", ".join(value.get("tags") or []),
            bpm=str(value.get("bpm") or ""), isrc=str(value.get("isrc") or ""),
            release_date=str(value.get("releaseDate") or "")[:10], description=str(value.get("description") or ""),
            explicit=value.get("explicit") is True, license=str(value.get("license") or ""),
            featured=", ".join(who(d) for d in value.get("featuredArtists") or []),
            ai_level=str(ai.get("level") or ""), ai_tools=", ".join(ai.get("tools") or []),
            ai_note=str(ai.get("note") or ""), purchase_url=str(value.get("purchaseUrl") or ""),
            splits=[SplitRow(who(s.get("did", "")), bps_to_percent(s.get("shareBps", 0)))
                    for s in value.get("splits") or [] if isinstance(s, dict)],
            audio_blob=json.dumps(value["audio"]) if isinstance(value.get("audio"), dict) else "",
            artwork_blob=json.dumps(value["artwork"]) if isinstance(value.get("artwork"), dict) else "",
            duration_ms=str(value.get("duration") or ""), swap=swap)

    def people(self) -> list[str]:
        """Every handle or DID the form names (featured artists, then split rows), to resolve."""
        return [*names(self.featured), *(r.who.lstrip("@") for r in self.splits if r.who)]

    def shown_splits(self) -> list[SplitRow]:
        """The rows to show: those filled in, then blank ones up to ``SPLIT_ROWS``."""
        return [*self.splits, *(SplitRow() for _ in range(max(0, SPLIT_ROWS - len(self.splits))))]


def words(text: str, most: int, longest: int, what: str, _: Gettext) -> list[str]:
    """A comma-separated list (moods, tags, AI tools): each trimmed, empty ones dropped, once each.
    Raises ``FormProblem`` over ``most`` items or an item over ``longest`` characters."""
    items = list(dict.fromkeys(w.strip() for w in _LIST_SPLIT.split(text) if w.strip()))
    if len(items) > most:
        raise FormProblem(_("%(what)s: at most %(most)s, separated by commas.") % {"what": what, "most": most})
    for item in items:
        if len(item) > longest:
            raise FormProblem(_("%(what)s: each at most %(longest)s characters (%(item)s… is longer).")
                              % {"what": what, "longest": longest, "item": item[:20]})
    return items


def percent_to_bps(text: str, _: Gettext) -> int:
    """``"33.33"`` (percent, at most two decimals; ``,`` taken as the decimal point) -> 3333 basis points.
    Raises ``FormProblem`` for anything else, zero, or over 100."""
    try:
        value = Decimal(text.replace(",", ".").rstrip("%").strip())
    except InvalidOperation:
        raise FormProblem(_("A share must be a percentage such as 50 or 33.33, not %(text)s.") % {"text": repr(text[:20])}) from None
    bps = value * 100
    if not value.is_finite() or bps != bps.to_integral_value() or not 0 < bps <= WHOLE_BPS:
        raise FormProblem(_("A share must be more than 0 and at most 100, with at most two decimals, not %(text)s.")
                          % {"text": repr(text[:20])})
    return int(bps)


def bps_to_percent(bps: object) -> str:
    """3333 -> ``"33.33"``; 5000 -> ``"50"``."""
    if not isinstance(bps, int):
        return ""
    whole, rest = divmod(bps, 100)
    return f"{whole}.{rest:02d}".rstrip("0").rstrip(".") if rest else str(whole)


def blob_ref(text: str, what: str, _: Gettext) -> dict[str, Any] | None:
    """A blob ref in its JSON form (``{"$type": "blob", "ref": {"$link"}, "mimeType", "size"}``) from a
    hidden field, or None when empty. Raises ``FormProblem`` for anything else (the lexicon check
    that follows checks the type and size)."""
    if not text:
        return None
    try:
        ref = json.loads(text)
    except ValueError:
        ref = None
    if not (isinstance(ref, dict) and ref.get("$type") == "blob" and isinstance(ref.get("ref"), dict)
            and isinstance(ref["ref"].get("$link"), str) and isinstance(ref.get("mimeType"), str)
            and isinstance(ref.get("size"), int)):
        raise FormProblem(_("The %(what)s upload could not be read: upload the file again.") % {"what": what})
    return {"$type": "blob", "ref": {"$link": ref["ref"]["$link"]}, "mimeType": ref["mimeType"], "size": ref["size"]}


def track_fields(form: TrackForm, dids: dict[str, str], owner: str, _: Gettext) -> dict[str, Any]:
    """The record fields the form sets (``None`` for those it clears), given ``dids``: each name of
    ``form.people()`` -> its DID (the caller refuses unknown ones first). ``owner``: the creator's DID
    (a split naming nobody else may give them less than 100 %). Raises ``FormProblem``."""
    if not form.title:
        raise FormProblem(_("Give the track a title."))
    if len(form.title) > 256:
        raise FormProblem(_("The title may be at most 256 characters."))
    out: dict[str, Any] = {"title": form.title}
    if len(form.genre) > 64:
        raise FormProblem(_("The genre may be at most 64 characters."))
    out["genre"] = form.genre or None
    out["moods"] = words(form.moods, 10, 32, _("Moods"), _) or None
    out["tags"] = words(form.tags, 20, 64, _("Tags"), _) or None
    out["bpm"] = None
    if form.bpm:
        if not form.bpm.isdigit() or not 1 <= int(form.bpm) <= 1000:
            raise FormProblem(_("BPM is a whole number from 1 to 1000."))
        out["bpm"] = int(form.bpm)
    isrc = form.isrc.replace("-", "").upper()
    if isrc and not re.fullmatch(r"[A-Z]{2}[A-Z0-9]{3}\d{7}", isrc):
        raise FormProblem(_("An ISRC has 12 characters, such as USRC17607839 (the dashes are optional)."))
    out["isrc"] = isrc or None
    out["releaseDate"] = None
    if form.release_date:
        try:
            out["releaseDate"] = date.fromisoformat(form.release_date).isoformat() + "T00:00:00.000Z"
        except ValueError:
            raise FormProblem(_("The release date must be a date (YYYY-MM-DD).")) from None
    if len(form.description) > 3000:
        raise FormProblem(_("The description may be at most 3000 characters."))
    out["description"] = form.description or None
    out["explicit"] = True if form.explicit else None
    if form.license and form.license not in LICENSES:
        raise FormProblem(_("Choose a licence from the list."))
    out["license"] = form.license or None
    featured = [dids[n] for n in names(form.featured)]
    if len(featured) > 20:
        raise FormProblem(_("At most 20 featured artists."))
    out["featuredArtists"] = list(dict.fromkeys(featured)) or None
    out["aiDisclosure"] = None
    if form.ai_level:
        if form.ai_level not in AI_LEVELS:
            raise FormProblem(_("Choose how much AI was involved from the list."))
        ai: dict[str, Any] = {"level": form.ai_level}
        if tools := words(form.ai_tools, 20, 64, _("AI tools"), _):
            ai["tools"] = tools
        if form.ai_note:
            if len(form.ai_note) > 1000:
                raise FormProblem(_("The AI note may be at most 1000 characters."))
            ai["note"] = form.ai_note
        out["aiDisclosure"] = ai
    elif form.ai_tools or form.ai_note:
        raise FormProblem(_("Say how much AI was involved before naming tools or adding a note."))
    out["splits"] = splits(form.splits, dids, owner, _)
    out["purchaseUrl"] = purchase_url(form.purchase_url, _)
    return out


def splits(rows: list[SplitRow], dids: dict[str, str], owner: str, _: Gettext) -> list[dict[str, Any]] | None:
    """The splits editor's rows -> ``[{"did", "shareBps"}]`` summing to 10000, or None when no row is
    filled in (all the money goes to the creator). Raises ``FormProblem``: a row without a person or
    a share, the same person twice, more than ``MAX_SPLITS``, or shares not adding up to 100 %."""
    if not rows:
        return None
    if len(rows) > MAX_SPLITS:
        raise FormProblem(_("At most %(n)s people can share a track.") % {"n": MAX_SPLITS})
    out: list[dict[str, Any]] = []
    for row in rows:
        if not row.who or not row.percent:
            raise FormProblem(_("Each split row needs both a handle and a share."))
        did = dids[row.who.lstrip("@")]
        if any(s["did"] == did for s in out):
            raise FormProblem(_("@%(who)s is named twice in the splits.") % {"who": row.who.lstrip("@")})
        out.append({"did": did, "shareBps": percent_to_bps(row.percent, _)})
    total = sum(s["shareBps"] for s in out)
    if total != WHOLE_BPS:
        raise FormProblem(_("The shares add up to %(total)s %%; they must add up to 100 %%.") % {"total": bps_to_percent(total)})
    if out == [{"did": owner, "shareBps": WHOLE_BPS}]:
        return None  # the default, said explicitly: keep the record plain
    return out


def purchase_url(text: str, _: Gettext) -> str | None:
    """An https store address (at most 2000 characters), or None when empty. Raises ``FormProblem``."""
    if not text:
        return None
    if len(text) > 2000 or not re.fullmatch(r"https://[^\s/?#]+\.[^\s/?#]+(/\S*)?", text):
        raise FormProblem(_("The purchase link must be an https address of a store, such as https://example.com/buy."))
    return text


def apply(value: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``value`` (a record) with ``changes`` set, and the fields they map to ``None`` removed."""
    out = dict(value)
    for key, new in changes.items():
        if new is None:
            out.pop(key, None)
        else:
            out[key] = new
    return out
