"""A human-readable reference of our lexicons, generated from their JSON (``lexicons/fm/openmusic``,
the files ``core.lexicons`` validates with and ``core.lexicon_publish`` publishes; the other apps'
lexicons kept beside them are not ours to document).

- ``GET /lexicons``: every NSID, grouped by namespace (``fm.openmusic.catalog``...), with its kind
  (record, query, procedure, subscription, permission set, definitions) and description.
- ``GET /lexicons/{nsid}``: one lexicon: each definition (``main`` first) with, for a record, its
  key and fields; for an object, its fields; for a query or procedure, its parameters, input and
  output (encoding and schema) and errors; for a subscription, its message; for a permission set,
  its permissions. Each field shows its type, whether it is required or nullable, its constraints
  (format, lengths, graphemes, bounds, accepted types, sizes, default, const, enum), its
  ``knownValues`` and description. A ``ref`` or ``union`` member links to the page and anchor of the
  definition it names when it is one of ours (``#name`` within the page); other lexicons
  (``com.atproto.*``) are named, not linked. The document's JSON is at the end. An NSID we do not
  have: a 404 page.

Lexicon spec (atproto.com/specs/lexicon): type names, field constraints, ``ref`` syntax
(``nsid``, ``nsid#name``, ``#name``). No script; the pages read no database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from core.lexicon_publish import OUR_LEXICONS
from core.lexicons import load_documents
from web import csrf

if TYPE_CHECKING:
    from web.app import WebApp

#: Field keys shown as constraints, in this order (lexicon spec, "Field Type Definitions").
CONSTRAINTS = ("format", "minLength", "maxLength", "minGraphemes", "maxGraphemes", "minimum", "maximum",
               "accept", "maxSize", "default", "const", "enum")
#: Definition kinds in the order the index names them.
KINDS = ("record", "query", "procedure", "subscription", "permission-set", "token", "object")


@dataclass
class Link:
    """A reference as shown: ``text`` (the ref as written, made absolute) and ``href`` (None when the
    lexicon is not ours)."""

    text: str
    href: str | None


@dataclass
class TypeView:
    """One schema, for display. ``kind`` is the lexicon type (``string``, ``ref``, ``union``...);
    ``refs`` the ref or union members; ``items`` an array's item type; ``fields`` an object's or a
    params' properties; ``constraints`` ``(name, value as text)`` pairs; ``known`` ``knownValues``;
    ``closed`` a closed union."""

    kind: str
    description: str = ""
    refs: list[Link] = field(default_factory=list)
    items: TypeView | None = None
    fields: list[FieldView] = field(default_factory=list)
    constraints: list[tuple[str, str]] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    closed: bool = False


@dataclass
class FieldView:
    """A named property: ``required`` and ``nullable`` as the enclosing object says."""

    name: str
    type: TypeView
    required: bool = False
    nullable: bool = False


@dataclass
class BodyView:
    """A query's output or a procedure's input/output: its ``encoding`` and optional ``schema``."""

    encoding: str
    description: str = ""
    schema: TypeView | None = None


@dataclass
class DefView:
    """One definition of a lexicon. ``anchor`` is its fragment (``main`` or the def name); ``kind``
    its type; ``key`` a record's key type; ``fields`` a record's or object's properties;
    ``parameters`` a query's, procedure's or subscription's; ``input``, ``output``, ``message``,
    ``errors`` ``(name, description)``; ``permissions`` a permission set's, as text; ``schema`` the
    definition itself when it is a plain type (string, array, token...)."""

    name: str
    kind: str
    description: str = ""
    key: str = ""
    fields: list[FieldView] = field(default_factory=list)
    parameters: list[FieldView] = field(default_factory=list)
    input: BodyView | None = None
    output: BodyView | None = None
    message: TypeView | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)
    permissions: list[str] = field(default_factory=list)
    title: str = ""
    schema: TypeView | None = None

    @property
    def anchor(self) -> str:
        return self.name


@dataclass
class LexiconView:
    """A whole lexicon document for its page: ``nsid``, ``kind`` (its main definition's type, or
    ``defs`` without one), ``description``, ``defs`` (``main`` first) and the document's ``json``."""

    nsid: str
    kind: str
    description: str
    defs: list[DefView]
    json: str

    @property
    def namespace(self) -> str:
        return self.nsid.rsplit(".", 1)[0]

    @property
    def summary(self) -> str:
        """The description's first sentence (the index shows it)."""
        head, dot, rest = self.description.partition(". ")
        return head + "." if dot and rest else self.description


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class Reference:
    """The reference built from lexicon documents ``docs`` (NSID -> document); ``ours`` are the NSIDs
    that get pages. ``view(nsid)`` and ``index()`` give what the templates show."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = {d["id"]: d for d in docs if isinstance(d, dict) and isinstance(d.get("id"), str)}

    @classmethod
    def from_directory(cls, directory: Path = OUR_LEXICONS) -> Reference:
        """The reference of every lexicon file under ``directory``. Raises ``ValueError`` on bad JSON."""
        return cls(load_documents(directory))

    # -- refs --------------------------------------------------------------------------------------
    def link(self, ref: str, nsid: str) -> Link:
        """The ``Link`` of ``ref`` as written in lexicon ``nsid`` (``#name`` is local)."""
        target = f"{nsid}{ref}" if ref.startswith("#") else ref
        doc_id, _, name = target.partition("#")
        if doc_id not in self.docs:
            return Link(target, None)
        if doc_id == nsid:
            return Link(target, f"#{name or 'main'}")
        return Link(target, f"/lexicons/{doc_id}" + (f"#{name}" if name else ""))

    # -- types -------------------------------------------------------------------------------------
    def type_view(self, schema: Any, nsid: str) -> TypeView:
        """The ``TypeView`` of a field schema found in lexicon ``nsid``. Odd shapes show as ``unknown``."""
        if not isinstance(schema, dict):
            return TypeView("unknown")
        kind = str(schema.get("type", "unknown"))
        view = TypeView(kind, description=_text(schema.get("description", "")))
        view.constraints = [(k, _text(schema[k])) for k in CONSTRAINTS if k in schema]
        known = schema.get("knownValues")
        if isinstance(known, list):
            view.known = [self.link(v, nsid).text if isinstance(v, str) and "#" in v else _text(v) for v in known]
        if kind == "ref" and isinstance(schema.get("ref"), str):
            view.refs = [self.link(schema["ref"], nsid)]
        elif kind == "union":
            view.refs = [self.link(r, nsid) for r in schema.get("refs", []) if isinstance(r, str)]
            view.closed = schema.get("closed") is True
        elif kind == "array":
            view.items = self.type_view(schema.get("items"), nsid)
            view.constraints = [(k.replace("Length", "Items"), v) if k in ("minLength", "maxLength") else (k, v)
                                for k, v in view.constraints]
        elif kind in ("object", "params"):
            view.fields = self.fields(schema, nsid)
        return view

    def fields(self, schema: Any, nsid: str) -> list[FieldView]:
        """The properties of an ``object`` or ``params`` schema, in the document's order."""
        if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
            return []
        required = set(schema.get("required") or [])
        nullable = set(schema.get("nullable") or [])
        return [FieldView(name, self.type_view(prop, nsid), name in required, name in nullable)
                for name, prop in schema["properties"].items()]

    def body(self, schema: Any, nsid: str) -> BodyView | None:
        if not isinstance(schema, dict):
            return None
        inner = schema.get("schema")
        return BodyView(str(schema.get("encoding", "")), _text(schema.get("description", "")),
                        self.type_view(inner, nsid) if isinstance(inner, dict) else None)

    def def_view(self, name: str, schema: Any, nsid: str) -> DefView:
        """The ``DefView`` of definition ``name`` of lexicon ``nsid``."""
        if not isinstance(schema, dict):
            return DefView(name, "unknown")
        kind = str(schema.get("type", "unknown"))
        view = DefView(name, kind, description=_text(schema.get("description", "")))
        if kind == "record":
            view.key = _text(schema.get("key", ""))
            view.fields = self.fields(schema.get("record"), nsid)
        elif kind == "object":
            view.fields = self.fields(schema, nsid)
        elif kind in ("query", "procedure", "subscription"):
            view.parameters = self.fields(schema.get("parameters"), nsid)
            view.input = self.body(schema.get("input"), nsid)
            view.output = self.body(schema.get("output"), nsid)
            message = schema.get("message")
            if isinstance(message, dict) and isinstance(message.get("schema"), dict):
                view.message = self.type_view(message["schema"], nsid)
            view.errors = [(_text(e.get("name", "")), _text(e.get("description", "")))
                           for e in schema.get("errors", []) if isinstance(e, dict)]
        elif kind == "permission-set":
            view.title = _text(schema.get("title", ""))
            view.description = view.description or _text(schema.get("detail", ""))
            view.permissions = [self.permission(p) for p in schema.get("permissions", []) if isinstance(p, dict)]
        else:
            view.schema = self.type_view(schema, nsid)
        return view

    @staticmethod
    def permission(p: dict[str, Any]) -> str:
        """One permission of a permission set as text: ``repo: a, b`` / ``rpc: m (aud)``."""
        resource = _text(p.get("resource", ""))
        parts = [_text(v) for k in ("collection", "lxm") for v in (p.get(k) or [])]
        text = f"{resource}: {', '.join(parts)}" if parts else resource
        if p.get("aud"):
            text += f" (aud {_text(p['aud'])})"
        if p.get("action"):
            text += f" [{', '.join(_text(a) for a in p['action'])}]"
        return text

    # -- pages -------------------------------------------------------------------------------------
    def view(self, nsid: str) -> LexiconView | None:
        """The page of ``nsid``, or None when it is not one of ours."""
        doc = self.docs.get(nsid)
        if doc is None:
            return None
        defs = doc.get("defs") if isinstance(doc.get("defs"), dict) else {}
        names = sorted(defs, key=lambda n: (n != "main", list(defs).index(n)))
        main = defs.get("main") if isinstance(defs.get("main"), dict) else {}
        return LexiconView(nsid, str(main.get("type", "defs")) if main else "defs",
                           _text(doc.get("description") or main.get("description") or main.get("detail") or ""),
                           [self.def_view(n, defs[n], nsid) for n in names],
                           json.dumps(doc, indent=2, ensure_ascii=False))

    def index(self) -> list[tuple[str, list[LexiconView]]]:
        """Every lexicon, grouped by namespace (sorted), each group sorted by NSID."""
        groups: dict[str, list[LexiconView]] = {}
        for nsid in sorted(self.docs):
            view = self.view(nsid)
            assert view is not None
            groups.setdefault(view.namespace, []).append(view)
        return sorted(groups.items())


class LexiconPages:
    """``/lexicons`` and ``/lexicons/{nsid}`` over a ``WebApp``; the reference is built once, when
    first asked for."""

    def __init__(self, web: WebApp, directory: Path = OUR_LEXICONS) -> None:
        self.web = web
        self.directory = directory
        self._reference: Reference | None = None

    @property
    def reference(self) -> Reference:
        if self._reference is None:
            self._reference = Reference.from_directory(self.directory)
        return self._reference

    def routes(self) -> list[BaseRoute]:
        return [Route("/lexicons", self.index, methods=["GET"]),
                Route("/lexicons/{nsid}", self.lexicon, methods=["GET"])]

    async def _viewer(self, request: Request) -> dict[str, Any]:
        user = await self.web.user_session(request.cookies.get("om_session"))
        token = None
        if user is not None:
            assert self.web.sealer is not None
            token = csrf.token(self.web.sealer.csrf_key, f"session:{user.key}")
        return {"user": user, "csrf_field": csrf.FIELD, "csrf_token": token}

    async def index(self, request: Request) -> Response:
        """GET /lexicons: every NSID by namespace."""
        return self.web.render("lexicons.html", groups=self.reference.index(), **await self._viewer(request))

    async def lexicon(self, request: Request) -> Response:
        """GET /lexicons/{nsid}: one lexicon's page; 404 for an NSID we do not have."""
        viewer = await self._viewer(request)
        view = self.reference.view(request.path_params["nsid"])
        if view is None:
            _ = self.web.templates.gettext
            return self.web.error_page(404, _("No such lexicon"),
                                       _("We publish no lexicon with this NSID. The list of our lexicons is at /lexicons."),
                                       user=viewer["user"])
        return self.web.render("lexicon.html", lexicon=view, **viewer)


def routes(web: WebApp) -> list[BaseRoute]:
    """``/lexicons`` and ``/lexicons/{nsid}``, to put beside ``web.app.routes``."""
    return LexiconPages(web).routes()


__all__ = ["LexiconPages", "LexiconView", "Reference", "routes"]
