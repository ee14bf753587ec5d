"""The layering rule, checked on the source: nothing imports upward, and no modules import each
other in a circle.

Layers, bottom to top: the shared core (``core``: config, db, errors, identity, lexicons,
netguard, mediatype, publish, migrations) -> ``firehose`` -> ``indexer`` -> ``payments`` ->
``appview`` -> ``web`` and ``feedgen`` -> the demo and test kit (``devkit``) -> the composition root
(``openmusic``: the CLI and the runtime).
A module may import its own layer and those below. Imports under ``if TYPE_CHECKING:`` count for the
layers (a type names a layer too) but not for cycles (they never run)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "devkit", "openmusic", "firehose", "indexer", "payments", "appview", "web", "feedgen")
RANK = {"core": 0, "firehose": 1, "indexer": 2, "payments": 3, "appview": 4, "web": 5, "feedgen": 5,
        "devkit": 6, "root": 7}
#: Known upward imports, each with its reason. Migrations that recompute derived data (search keys,
#: streams, stats) call the indexer's own functions, so that a migrated database equals a re-indexed one.
ALLOWED = {
    ("core.migrations.0005_search_key", "indexer.search"),
    ("core.migrations.0006_streams_and_subscriptions", "indexer.streams"),
    ("core.migrations.0008_stream_eligibility", "indexer.streams"),
    ("core.migrations.0008_stream_eligibility", "indexer.stats"),
    ("core.migrations.0008_stream_eligibility", "indexer"),
}


def layer(module: str) -> str:
    top = module.split(".")[0]
    return {"core": "core", "devkit": "devkit", "openmusic": "root"}.get(top, top)


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported module, whether under ``if TYPE_CHECKING``) for each import of ``path``."""
    tree = ast.parse(path.read_text())
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            guarded |= {id(n) for child in node.body for n in ast.walk(child)}
    out = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                out.append((name, id(node) in guarded))
    return out


def graph() -> dict[str, list[tuple[str, bool]]]:
    mods = modules()
    return {m: imports(p, set(mods)) for m, p in mods.items()}


def test_nothing_imports_upward():
    upward = sorted((m, n) for m, deps in graph().items() for n, _ in deps
                    if RANK[layer(n)] > RANK[layer(m)] and (m, n) not in ALLOWED)
    assert not upward, "imports from a higher layer: " + ", ".join(f"{m} -> {n}" for m, n in upward)


def test_production_never_imports_the_demo_kit():
    used = sorted((m, n) for m, deps in graph().items() for n, _ in deps
                  if layer(n) == "devkit" and layer(m) not in ("devkit", "root"))
    assert not used, used


def test_no_import_cycles():
    edges = {m: {n for n, typing_only in deps if not typing_only and n != m} for m, deps in graph().items()}
    # a package's __init__ importing its own modules is how it re-exports them, not a cycle
    for m in edges:
        edges[m] = {n for n in edges[m] if not (n.startswith(m + ".") and (ROOT / m.replace(".", "/")).is_dir())}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_an_upward_import(tmp_path):
    bad = tmp_path / "mod.py"
    bad.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from web.app import WebApp\n"
                   "from appview.queries import QUERIES\n")
    found = imports(bad, set(modules()))
    assert ("web.app", True) in found and ("appview.queries", False) in found
    assert RANK[layer("web.app")] > RANK[layer("indexer.core")]
