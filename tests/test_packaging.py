"""The Docker image and docker-compose.yml ship the whole package (no Docker daemon needed: these
tests read pyproject.toml, the Dockerfile, .dockerignore and docker-compose.yml as Docker and
setuptools would).

- Every top-level Python package of the repo is shipped (``[tool.setuptools.packages.find]``) or
  deliberately not (``NOT_SHIPPED``), and shipped code never imports an unshipped one.
- Every file under a shipped package reaches the wheel (a module of a found package, or
  ``[tool.setuptools.package-data]``).
- ``.dockerignore`` keeps all of it (and the build's inputs) in the build context and leaves local
  state out; the Dockerfile's build stage copies each of those files to where ``pip wheel .`` reads
  it; the runtime stage installs the wheels and provides what the code reads outside its packages.
- docker-compose.yml: builds from the repo root, its inline devnet image copies what
  ``devnet/network.mjs`` and ``devnet/install.sh`` need, its settings exist, its volumes are declared.
"""

from __future__ import annotations

import ast
import copy
import fnmatch
import json
import posixpath
import re
import shlex
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from core.config import Settings
from web.settings import WebSettings

ROOT = Path(__file__).resolve().parent.parent
#: Top-level Python packages that are deliberately not in the distribution (nor the image).
NOT_SHIPPED = {"tests": "the test suite", "bench": "benchmarks, run from a checkout"}
#: Directories outside any package that shipped code reads at run time (``Path(__file__).parent.parent
#: / name``): the image must provide them, at the path the environment variable names.
RUNTIME_DIRS = {"lexicons": "OPENMUSIC_LEXICON_DIR"}
#: ... and those it may read only from a checkout (``openmusic devnet`` / ``demo``, not in the image;
#: ``openmusic cluster`` reads deploy/nginx.conf only to run nginx, which the image lacks).
CHECKOUT_ONLY_DIRS = {"devnet", "deploy"}
#: Files the build itself reads (pyproject's readme; the license).
BUILD_INPUTS = ["pyproject.toml", "README.md", "LICENSE"]
#: Local state that must stay out of the build context (a path inside each).
LOCAL_STATE = [".venv/bin/python", "devnet/node_modules/@atproto/dev-env/package.json", "devnet/.node22/bin/node",
               "data/openmusic.sqlite", "bench/data/stream.bin", ".git/HEAD", "openmusic/__pycache__/cli.cpython-311.pyc",
               "openmusic.egg-info/PKG-INFO", "x.sqlite", ".env"]


def skip_dir(name: str) -> bool:
    return name.startswith(".") or name == "__pycache__" or name == "node_modules"


# --- setuptools' view -----------------------------------------------------------------------------

def setuptools_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def shipped_packages() -> dict[str, Path]:
    """``[tool.setuptools.packages.find]`` as setuptools applies it in pyproject.toml (namespace
    packages on by default, so a directory needs no ``__init__.py``): dotted name -> directory."""
    find = setuptools_config()["packages"]["find"]
    assert find.get("where", ["."]) == ["."], "the checks below assume packages at the repo root"
    include, exclude = find.get("include", ["*"]), find.get("exclude", [])
    namespaces = find.get("namespaces", True)
    found: dict[str, Path] = {}
    for top in sorted(ROOT.iterdir()):
        if not top.is_dir() or skip_dir(top.name) or not top.name.isidentifier():
            continue
        todo = [top]
        while todo:
            d = todo.pop()
            name = ".".join(d.relative_to(ROOT).parts)
            if not namespaces and not (d / "__init__.py").exists():
                continue
            if any(fnmatch.fnmatchcase(name, p) for p in include) and not any(fnmatch.fnmatchcase(name, p) for p in exclude):
                found[name] = d
            todo.extend(c for c in d.iterdir() if c.is_dir() and not skip_dir(c.name) and c.name.isidentifier())
    return found


def wheel_files() -> set[str]:
    """Repo-relative paths of the files the wheel carries: each found package's modules, and the
    package data its ``[tool.setuptools.package-data]`` globs match."""
    packages = shipped_packages()
    out = {p.relative_to(ROOT).as_posix() for d in packages.values() for p in d.glob("*.py")}
    for pkg, globs in setuptools_config().get("package-data", {}).items():
        dirs = packages.values() if pkg == "*" else [packages[pkg]]
        for d in dirs:
            for g in globs:
                out |= {p.relative_to(ROOT).as_posix() for p in d.glob(g) if p.is_file() and "__pycache__" not in p.parts}
    return out


def package_tree_files() -> set[str]:
    """Every file under the shipped top-level packages' directories (caches left out)."""
    tops = {name.split(".")[0] for name in shipped_packages()}
    out: set[str] = set()
    for top in tops:
        for p in (ROOT / top).rglob("*"):
            rel = p.relative_to(ROOT)
            if p.is_file() and not any(skip_dir(part) for part in rel.parts[:-1]) and p.suffix != ".pyc":
                out.add(rel.as_posix())
    return out


def test_every_top_level_package_is_shipped_or_deliberately_not():
    shipped = {name.split(".")[0] for name in shipped_packages()}
    assert {"openmusic", "firehose", "indexer", "appview", "payments", "feedgen"} <= shipped
    python_dirs = {d.name for d in ROOT.iterdir() if d.is_dir() and not skip_dir(d.name)
                   and ((d / "__init__.py").exists() or any(d.glob("*.py")))}
    stray = python_dirs - shipped - set(NOT_SHIPPED)
    assert not stray, (f"top-level Python packages {sorted(stray)} are neither in pyproject.toml's "
                       "[tool.setuptools.packages.find] include (so not in the image) nor in NOT_SHIPPED")
    assert not shipped & set(NOT_SHIPPED)


def test_shipped_code_imports_only_shipped_packages():
    shipped = {name.split(".")[0] for name in shipped_packages()}
    local = {p.name if p.is_dir() else p.stem for p in ROOT.iterdir() if not skip_dir(p.name)
             and (p.is_dir() or p.suffix == ".py")}
    bad = []
    for rel in sorted(f for f in wheel_files() if f.endswith(".py")):
        tree = ast.parse((ROOT / rel).read_text(), rel)
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            bad += [f"{rel}:{node.lineno} imports {n}" for n in names
                    if n.split(".")[0] in local and n.split(".")[0] not in shipped]
    assert not bad, "shipped code imports modules the distribution does not have:\n" + "\n".join(bad)


def test_every_file_of_a_shipped_package_reaches_the_wheel():
    missing = sorted(package_tree_files() - wheel_files())
    assert not missing, ("not in the wheel, so not in the image (add them to [tool.setuptools.package-data] "
                         f"in pyproject.toml): {missing}")
    assert "devkit/data/stripe_connect_fixtures.json" in wheel_files()
    assert any(f.startswith("core/migrations/") for f in wheel_files())


def test_code_reads_outside_its_packages_only_known_directories():
    seen: dict[str, str] = {}
    pattern = re.compile(r"__file__\)(?:\.resolve\(\))?\.parent\.parent\s*/\s*[\"']([^\"']+)[\"']")
    shipped = wheel_files()
    for rel in sorted(f for f in shipped if f.endswith(".py")):
        for name in pattern.findall((ROOT / rel).read_text()):
            target = ((ROOT / rel).parent.parent / name).resolve().relative_to(ROOT).as_posix()
            if target in shipped:  # package data of a shipped package (core/postgresql_baseline.sql)
                continue
            seen[name.split("/")[0]] = rel
    unknown = {n: r for n, r in seen.items() if n not in RUNTIME_DIRS and n not in CHECKOUT_ONLY_DIRS}
    assert not unknown, f"code reads directories outside its packages that the image lacks: {unknown}"
    assert "lexicons" in seen, "core.lexicons no longer reads ../lexicons: update RUNTIME_DIRS"


# --- .dockerignore ------------------------------------------------------------------------------------

def _pattern_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regex on slash-separated paths."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out += "(?:.*/)?"
            else:
                out += ".*"
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = pattern.index("]", i)
            out += "[" + pattern[i + 1:j].replace("!", "^", 1) + "]"
            i = j
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


def dockerignore() -> list[tuple[bool, re.Pattern]]:
    """The patterns of .dockerignore in order, as ``(is_exception, regex)``."""
    out = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pat = posixpath.normpath(line[1:].strip() if negate else line).lstrip("/")
        out.append((negate, _pattern_regex(pat)))
    return out


def ignored(path: str, patterns: list[tuple[bool, re.Pattern]] | None = None) -> bool:
    """Whether Docker leaves ``path`` (repo-relative) out of the build context: the last pattern that
    matches the path or one of its parent directories decides (moby's patternmatcher)."""
    patterns = dockerignore() if patterns is None else patterns
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for negate, rx in patterns:
        if any(rx.match(p) for p in prefixes):
            result = not negate
    return result


def test_dockerignore_matcher():
    pats = [(False, _pattern_regex("**/__pycache__")), (False, _pattern_regex("data")),
            (False, _pattern_regex("*.md")), (True, _pattern_regex("README.md"))]
    assert ignored("__pycache__/x.pyc", pats) and ignored("a/b/__pycache__/x.pyc", pats)
    assert ignored("data/x/y", pats) and not ignored("devkit/data/x.json", pats)
    assert ignored("CHANGES.md", pats) and not ignored("README.md", pats) and not ignored("docs/a.md", pats)


def build_context_needs() -> list[str]:
    return sorted(wheel_files() | set(BUILD_INPUTS) | runtime_files())


def runtime_files() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for d in RUNTIME_DIRS for p in (ROOT / d).rglob("*") if p.is_file()}


def test_dockerignore_keeps_the_package_and_drops_local_state():
    pats = dockerignore()
    for f in BUILD_INPUTS:
        assert (ROOT / f).is_file(), f
    dropped = [f for f in build_context_needs() if ignored(f, pats)]
    assert not dropped, f".dockerignore leaves out files the image needs: {dropped}"
    kept = [f for f in LOCAL_STATE if not ignored(f, pats)]
    assert not kept, f".dockerignore lets local state into the build context: {kept}"


# --- Dockerfile -------------------------------------------------------------------------------------

@dataclass
class Instr:
    op: str
    args: str
    flags: dict[str, str] = field(default_factory=dict)
    words: list[str] = field(default_factory=list)


@dataclass
class Stage:
    name: str
    image: str
    instrs: list[Instr] = field(default_factory=list)


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages of a Dockerfile: instructions with continuation lines joined and comments dropped;
    COPY/ADD/RUN's leading ``--flag=value`` options in ``flags``; COPY/ADD sources and destination
    (JSON or shell form) in ``words``."""
    logical, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and buf):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        if buf or line:
            logical.append(buf + line)
        buf = ""
    if buf:
        logical.append(buf)
    stages: list[Stage] = []
    for line in logical:
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "FROM":
            w = rest.split()
            stages.append(Stage(name=w[2] if len(w) > 2 and w[1].lower() == "as" else str(len(stages)), image=w[0]))
            continue
        assert stages, f"{op} before FROM"
        instr = Instr(op, rest)
        while op in ("COPY", "ADD", "RUN") and instr.args.startswith("--"):
            flag, _, instr.args = instr.args.partition(" ")
            key, _, value = flag[2:].partition("=")
            instr.flags[key] = (instr.flags[key] + "," + value) if key in instr.flags else value
            instr.args = instr.args.strip()
        if op in ("COPY", "ADD"):
            instr.words = json.loads(instr.args) if instr.args.startswith("[") else shlex.split(instr.args)
        stages[-1].instrs.append(instr)
    return stages


def env_of(instrs: list[Instr]) -> dict[str, str]:
    env: dict[str, str] = {}
    for i in instrs:
        if i.op == "ENV":
            words = shlex.split(i.args)
            if "=" in words[0]:
                env.update(w.split("=", 1) for w in words)
            else:
                env[words[0]] = i.args.split(None, 1)[1]
    return env


def copied_to(path: str, stage: Stage, until: int) -> set[str]:
    """Where COPYs of the build context (no ``--from``) among ``stage.instrs[:until]`` put the
    repo-relative file ``path``, as absolute paths in the image."""
    workdir, out = "/", set()
    for instr in stage.instrs[:until]:
        if instr.op == "WORKDIR":
            workdir = posixpath.join(workdir, instr.args)
        if instr.op not in ("COPY", "ADD") or "from" in instr.flags:
            continue
        *sources, dest = instr.words
        dest_dir = posixpath.join(workdir, dest)
        for src in sources:
            src = posixpath.normpath(src).lstrip("/")
            if src == ".":
                out.add(posixpath.normpath(posixpath.join(dest_dir, path)))
            elif path == src or fnmatch.fnmatchcase(path, src):  # a file (or a glob matching it)
                into_dir = dest.endswith("/") or len(sources) > 1 or any(c in src for c in "*?[")
                out.add(posixpath.join(dest_dir, posixpath.basename(path)) if into_dir else posixpath.normpath(dest_dir))
            elif path.startswith(src + "/"):  # a directory: its contents go into dest
                out.add(posixpath.normpath(posixpath.join(dest_dir, path[len(src) + 1:])))
    return out


def workdir_at(stage: Stage, until: int) -> str:
    workdir = "/"
    for instr in stage.instrs[:until]:
        if instr.op == "WORKDIR":
            workdir = posixpath.join(workdir, instr.args)
    return workdir


PIP_BUILD = re.compile(r"\bpip\s+(?:wheel|install)\b(?P<opts>[^&;|]*?)\s\.(?:\s|$)")


def test_dockerfile_build_stage_copies_every_file_pip_builds_from():
    stages = parse_dockerfile((ROOT / "Dockerfile").read_text())
    builds = [(s, n) for s in stages for n, i in enumerate(s.instrs) if i.op == "RUN" and PIP_BUILD.search(i.args)]
    assert builds, "no `pip wheel .` / `pip install .` of the whole project in the Dockerfile"
    for stage, n in builds:
        assert " -e " not in PIP_BUILD.search(stage.instrs[n].args).group("opts") + " ", \
            "an editable install runs from the sources: build the package instead"
        workdir = workdir_at(stage, n)
        wrong = [f for f in sorted(wheel_files() | set(BUILD_INPUTS))
                 if posixpath.join(workdir, f) not in copied_to(f, stage, n)]
        assert not wrong, f"stage {stage.name!r} runs pip in {workdir} before copying there: {wrong}"


def test_dockerfile_runtime_stage():
    stages = parse_dockerfile((ROOT / "Dockerfile").read_text())
    final, names = stages[-1], {s.name for s in stages[:-1]}
    installs = [i for i in final.instrs if i.op == "RUN" and re.search(r"\bpip\s+install\b.*\bopenmusic\b", i.args)]
    assert installs, "the runtime stage does not pip install openmusic"
    from_build = any(re.search(r"from=([\w.-]+)", i.flags.get("mount", "")) and
                     re.search(r"from=([\w.-]+)", i.flags["mount"]).group(1) in names for i in installs) or \
        any(i.op == "COPY" and i.flags.get("from") in names for i in final.instrs)
    assert from_build, "the runtime stage does not take the wheels from the build stage"
    env = env_of(final.instrs)
    for d, var in RUNTIME_DIRS.items():
        assert var in env, f"the runtime stage does not set {var}"
        missing = [f for f in sorted(runtime_files()) if f.startswith(d + "/")
                   and posixpath.join(env[var], f[len(d) + 1:]) not in copied_to(f, final, len(final.instrs))]
        assert not missing, f"{var}={env[var]} but these are not copied there: {missing}"
    cmd = [i for i in final.instrs if i.op in ("CMD", "ENTRYPOINT")]
    assert cmd and json.loads(cmd[-1].args)[:2] == ["openmusic", "run"]
    assert env.get("OPENMUSIC_HOST") == "0.0.0.0", "in a container the AppView must listen beyond loopback"


# --- docker-compose.yml -----------------------------------------------------------------------------

def _scalar(text: str):
    text = text.strip()
    if not text:
        return None
    if text[0] in "[{" or text[0] == '"':
        return json.loads(text)
    if text[0] == "'":
        return text[1:-1].replace("''", "'")
    return text


def _strip_comment(line: str) -> str:
    quote = None
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def parse_yaml(text: str):
    """The YAML subset docker-compose.yml is written in: block mappings and sequences, ``|`` block
    scalars, JSON-style flow collections, plain and quoted scalars (all scalars stay strings), and
    anchors (``key: &name``), aliases (``key: *name``) and merge keys (``<<: *name``: the anchored
    mapping's keys that the mapping does not set itself). Raises ``ValueError`` on anything else."""
    lines = text.splitlines()
    anchors: dict[str, object] = {}

    def alias(name: str, line: int):
        if name not in anchors:
            raise ValueError(f"line {line}: no anchor {name!r}")
        return copy.deepcopy(anchors[name])

    def block(i: int, indent: int):
        out = None
        while i < len(lines):
            raw = _strip_comment(lines[i])
            if not raw.strip():
                i += 1
                continue
            ind = len(raw) - len(raw.lstrip(" "))
            if ind < indent:
                break
            if ind > indent:
                raise ValueError(f"line {i + 1}: unexpected indentation")
            item = raw.strip()
            if item.startswith("- ") or item == "-":
                out = [] if out is None else out
                if not isinstance(out, list):
                    raise ValueError(f"line {i + 1}: a list item in a mapping")
                out.append(_scalar(item[1:]))
                i += 1
                continue
            key, sep, value = item.partition(":")
            if not sep or (value and not value.startswith(" ")):
                raise ValueError(f"line {i + 1}: not a 'key: value' line")
            out = {} if out is None else out
            if not isinstance(out, dict):
                raise ValueError(f"line {i + 1}: a mapping key in a list")
            value, anchor = value.strip(), None
            if value.startswith("&"):
                anchor, _, value = value[1:].partition(" ")
                value = value.strip()
            if key.strip() == "<<":
                merged = alias(value[1:], i + 1) if value.startswith("*") else None
                if not isinstance(merged, dict):
                    raise ValueError(f"line {i + 1}: '<<' takes an alias of a mapping")
                for k, v in merged.items():
                    out.setdefault(k, v)
                i += 1
                continue
            if value.startswith("*"):
                out[key.strip()] = alias(value[1:], i + 1)
                i += 1
            elif value in ("|", "|-"):
                j, body = i + 1, []
                while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip(" ")) > indent):
                    body.append(lines[j])
                    j += 1
                strip = min(len(b) - len(b.lstrip(" ")) for b in body if b.strip())
                out[key.strip()] = "\n".join(b[strip:] for b in body).rstrip("\n") + ("" if value == "|-" else "\n")
                i = j
            elif value:
                out[key.strip()] = _scalar(value)
                i += 1
            else:
                j = i + 1
                while j < len(lines) and not _strip_comment(lines[j]).strip():
                    j += 1
                nxt = _strip_comment(lines[j]) if j < len(lines) else ""
                nind = len(nxt) - len(nxt.lstrip(" "))
                if nxt.strip() and (nind > indent or (nind == indent and nxt.strip().startswith("-"))):
                    out[key.strip()], i = block(j, nind)
                else:
                    out[key.strip()], i = None, j
            if anchor:
                anchors[anchor] = copy.deepcopy(out[key.strip()])
        return out, i

    doc, end = block(0, 0)
    if end != len(lines):
        raise ValueError(f"line {end + 1}: unexpected indentation")
    return doc


def test_yaml_subset_parser():
    doc = parse_yaml('a:\n  b: "x"  # c\n  l: ["1", "2"]\n  m:\n    - p\n    - q\n  s: |\n    one\n      two\nz:\n')
    assert doc == {"a": {"b": "x", "l": ["1", "2"], "m": ["p", "q"], "s": "one\n  two\n"}, "z": None}
    doc = parse_yaml("x: &base\n  k: v\n  e:\n    A: a\nm: &one '1'\ny:\n  <<: *base\n  k: w\n  n: *one\n")
    assert doc["y"] == {"k": "w", "e": {"A": "a"}, "n": "1"} and doc["x"] == {"k": "v", "e": {"A": "a"}}
    doc["y"]["e"]["A"] = "changed"
    assert doc["x"]["e"]["A"] == "a", "an alias is a copy"


def compose() -> dict:
    return parse_yaml((ROOT / "docker-compose.yml").read_text())


def test_compose_services_build_from_the_checked_context():
    doc = compose()
    services = doc["services"]
    assert {"appview", "devnet", "appview-dev"} <= set(services)
    pats = dockerignore()
    for name, svc in services.items():
        build = svc.get("build")
        if build is None:
            continue
        build = {"context": build} if isinstance(build, str) else build
        assert posixpath.normpath(build["context"]) == ".", f"{name}: builds outside the repo root's .dockerignore"
        if "dockerfile_inline" not in build:
            assert build.get("dockerfile", "Dockerfile") == "Dockerfile", name
            continue
        for stage in parse_dockerfile(build["dockerfile_inline"]):
            for instr in stage.instrs:
                if instr.op in ("COPY", "ADD") and "from" not in instr.flags:
                    for src in instr.words[:-1]:
                        assert (ROOT / src).exists(), f"{name}: copies {src}, which does not exist"
                        assert not ignored(src, pats), f"{name}: copies {src}, which .dockerignore leaves out"


def test_compose_devnet_runs_network_mjs_as_install_sh_installs_it():
    svc = compose()["services"]["devnet"]
    stages = parse_dockerfile(svc["build"]["dockerfile_inline"])
    final = stages[-1]
    copied = {src for i in final.instrs if i.op == "COPY" for src in i.words[:-1]}
    # install.sh runs `npm install` on package.json (+ lock) and builds better-sqlite3 from source
    # against Node 22's headers (npm_config_nodedir); network.mjs is what runs.
    assert {"devnet/package.json", "devnet/package-lock.json", "devnet/network.mjs"} <= copied
    install_sh = (ROOT / "devnet" / "install.sh").read_text()
    assert "npm_config_nodedir" in install_sh and "rebuild better-sqlite3" in install_sh
    assert "npm_config_nodedir" in env_of(final.instrs)
    runs = " ".join(i.args for i in final.instrs if i.op == "RUN")
    assert re.search(r"npm (ci|install)\b", runs) and "rebuild better-sqlite3" in runs
    assert final.image.startswith("node:22"), "install.sh pins Node 22"
    cmd = svc.get("command") or json.loads([i for i in final.instrs if i.op == "CMD"][-1].args)
    assert cmd[-1] == "network.mjs" and cmd[0] == "node"
    network = (ROOT / "devnet" / "network.mjs").read_text()
    env = svc["environment"]
    for var in ("PDS_PORT", "PLC_PORT", "DEVNET_WATCH_STDIN"):
        assert var in network, f"network.mjs no longer reads {var}"
    assert env["DEVNET_WATCH_STDIN"] == "0", "a service has no stdin: network.mjs would stop at once"
    dev = compose()["services"]["appview-dev"]["environment"]
    pds, plc = env["PDS_PORT"], env["PLC_PORT"]
    assert dev["OPENMUSIC_FIREHOSE_URL"] == f"ws://localhost:{pds}"
    assert dev["OPENMUSIC_PLC_URL"] == f"http://localhost:{plc}"
    assert dev["OPENMUSIC_HANDLE_RESOLVER_URL"] == f"http://localhost:{pds}"
    assert f":{pds}/" in " ".join(svc["healthcheck"]["test"])


def test_compose_settings_and_volumes_exist():
    doc = compose()
    known = {f"OPENMUSIC_{f.name.upper()}" for f in (*fields(Settings), *fields(WebSettings))}
    declared = set(doc.get("volumes") or {})
    profiles: dict[str, set[str]] = {}
    for name, svc in doc["services"].items():
        unknown = sorted(k for k in (svc.get("environment") or {}) if k.startswith("OPENMUSIC_") and k not in known)
        assert not unknown, f"{name}: no such setting {unknown}"
        for vol in svc.get("volumes") or []:
            source = vol.split(":")[0]
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source} is not declared under the top-level volumes:"
        assert svc.get("profiles"), f"{name} has no profile: it would start with every profile"
        for p in svc["profiles"]:
            profiles.setdefault(p, set()).add(name)
    assert profiles == {"public": {"appview"}, "dev": {"devnet", "appview-dev"},
                        "cluster": {"postgres", "migrate", "indexer-1", "indexer-2", "api-1", "api-2", "proxy"}}


def _role(svc: dict) -> str | None:
    """The ``--role`` of an ``openmusic run`` service (``all`` when none is given), else None."""
    cmd = svc.get("command") or []
    if cmd[:2] != ["openmusic", "run"]:
        return None
    return cmd[cmd.index("--role") + 1] if "--role" in cmd else "all"


def test_compose_cluster_profile():
    """``--profile cluster``: PostgreSQL (a named volume, pg_isready), ``openmusic migrate`` once
    after it is healthy, two indexers and two API replicas after the migration succeeded, each with
    ``/health`` as health check on the port it serves, all with the same settings (the database on
    the postgres service with its user and password, one public URL, the shared data volume), and
    nginx publishing the only port, started once both replicas are healthy, with deploy/nginx.conf
    listing exactly those replicas."""
    from core.config import ROLES
    from openmusic.cluster import UPSTREAM

    doc = compose()
    services = {n: s for n, s in doc["services"].items() if "cluster" in s["profiles"]}
    declared = set(doc.get("volumes") or {})

    pg = services["postgres"]
    assert pg["image"].startswith("postgres:") and pg["image"].split(":")[1][:2].isdigit(), "pin a major version"
    data = [v for v in pg["volumes"] if v.endswith(":/var/lib/postgresql/data")]
    assert data and data[0].split(":")[0] in declared, "PostgreSQL's data must be in a named volume"
    pg_env = pg["environment"]
    assert "--locale=C" in pg_env["POSTGRES_INITDB_ARGS"].split(), "text must order bytewise (core.db.check_postgres)"
    assert pg["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    check = pg["healthcheck"]["test"]
    assert check[check.index("-U") + 1] == pg_env["POSTGRES_USER"] and check[check.index("-d") + 1] == pg_env["POSTGRES_DB"]

    migrate = services["migrate"]
    assert migrate["command"] == ["openmusic", "migrate"]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert migrate["restart"] == "no", "a one-shot step must not be restarted"

    runs = {n: s for n, s in services.items() if _role(s) is not None}
    roles = {n: _role(s) for n, s in runs.items()}
    assert set(roles.values()) <= set(ROLES)
    assert sorted(n for n, r in roles.items() if r == "indexer") == ["indexer-1", "indexer-2"]
    apis = sorted(n for n, r in roles.items() if r == "api")
    assert apis == ["api-1", "api-2"]
    openmusic = {"migrate": migrate, **runs}
    envs = {n: s["environment"] for n, s in openmusic.items()}
    first = envs["migrate"]
    assert all(e == first for e in envs.values()), "every process of the cluster needs the same settings"
    assert "OPENMUSIC_ROLE" not in first and "OPENMUSIC_PORT" not in first
    url = first["OPENMUSIC_DATABASE_URL"]
    m = re.fullmatch(r"postgresql://([^:@]+):([^@]+)@([\w-]+):5432/([\w-]+)", url)
    assert m, url
    assert m.group(1) == pg_env["POSTGRES_USER"] and m.group(2) == pg_env["POSTGRES_PASSWORD"]
    assert m.group(3) == "postgres" and m.group(4) == pg_env["POSTGRES_DB"]
    assert first["OPENMUSIC_PUBLIC_URL"] and first["OPENMUSIC_SESSION_KEY"], "one public URL and one session key"
    for name, svc in openmusic.items():
        assert svc["build"] == "." and svc["profiles"] == ["cluster"], name
        assert any(v.split(":")[0] in declared and v.split(":")[1] == "/data" for v in svc["volumes"]), \
            f"{name}: the key files must be shared (a named volume on /data)"
        assert "ports" not in svc, f"{name}: only the proxy publishes a port"
    port = str(Settings().port)
    for name, svc in runs.items():
        assert svc["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
        assert svc["restart"] == "unless-stopped", name
        probe = " ".join(svc["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/health" in probe, f"{name}: /health on the port it serves ({port})"
    assert runs["indexer-2"]["depends_on"]["indexer-1"]["condition"] == "service_started"
    assert migrate["healthcheck"] == {"disable": "true"}

    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx:")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in proxy["volumes"]}
    conf_file = mounts["/etc/nginx/nginx.conf"]
    assert (ROOT / conf_file).resolve() == (ROOT / "deploy" / "nginx.conf").resolve()
    assert proxy["depends_on"] == {a: {"condition": "service_healthy"} for a in apis}
    conf = (ROOT / conf_file).read_text()
    upstream = re.search(r"upstream\s+" + UPSTREAM + r"\s*\{(.*?)\}", conf, re.S).group(1)
    assert sorted(re.findall(r"^\s*server\s+([\w.-]+:\d+)", upstream, re.M)) == [f"{a}:{port}" for a in apis]
    assert re.search(r"proxy_pass\s+http://" + UPSTREAM + ";", conf)
    listen = re.search(r"^\s*listen\s+(\d+);", conf, re.M).group(1)
    assert [p.split(":")[-1] for p in proxy["ports"]] == [listen]
    assert f"127.0.0.1:{listen}/health" in " ".join(proxy["healthcheck"]["test"])

