"""The package's shape: no module imports a module that imports it back.

At module level there is no cycle at all (one would break at import time, depending on which module is
imported first). Counting the imports deferred into functions too, the cycles that exist today are
listed in KNOWN_CYCLES: any other one fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "assistants"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# Known cycles through imports deferred into functions. None is left: the last one (domains -> provenance ->
# prompts -> domains) went when the words-and-sentences rules moved to the leaf module ``text``. A new cycle
# fails test_no_new_import_cycle_counting_deferred_imports.
KNOWN_CYCLES: list[set[str]] = []


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its __init__)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _deferred(body: list[ast.stmt]):
    """Every import statement, also those inside functions and methods."""
    for node in body:
        yield from (n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))


def _top_level(body: list[ast.stmt]):
    """Import statements run when the module is imported: the body, and if/try blocks in it (not functions,
    not ``if TYPE_CHECKING:``)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                yield from _top_level(node.body)
            yield from _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                yield from _top_level(block)


def _with_parents(name: str, known: dict[str, Path]) -> set[str]:
    """Importing ``a.b.c`` runs ``a``, ``a.b`` and ``a.b.c``: all of those in the package."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(known)


def imports(name: str, path: Path, known: dict[str, Path], deferred: bool = False) -> set[str]:
    """Modules of the package that importing ``name`` runs directly (``deferred``: or that its functions import)."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]  # the package relative imports start from
    out: set[str] = set()
    for node in (_deferred if deferred else _top_level)(ast.parse(path.read_text(encoding="utf-8")).body):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module or ""
            # ``from x import y`` imports x, and x.y too when y is a module
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        for target in targets:
            out |= _with_parents(target, known)
    out.discard(name)
    return out


def graph(deferred: bool = False, root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    known = modules(root)
    return {name: imports(name, path, known, deferred) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan), each a set of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def path_through(component: set[str], edges: dict[str, set[str]]) -> list[str]:
    """One concrete cycle inside ``component``, for the failure message: a -> b -> ... -> a."""
    start = min(component)
    seen, trail = {start: None}, [start]
    while trail:  # breadth first: the shortest way back to start
        nxt = []
        for v in trail:
            for w in sorted(edges[v] & component):
                if w == start:
                    cycle = [v]
                    while seen[cycle[-1]] is not None:
                        cycle.append(seen[cycle[-1]])
                    return [*reversed(cycle), start]
                if w not in seen:
                    seen[w] = v
                    nxt.append(w)
        trail = nxt
    return sorted(component)


def test_the_graph_sees_module_level_imports_only(tmp_path):
    sources = {
        "__init__.py": "",
        "a.py": "from .b import x\nfrom . import c as renamed\nimport os\n",
        "b.py": "def f():\n    from .a import y\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import z\n",
        "sub/__init__.py": "from ..b import x\n",
        "sub/d.py": "from .. import a\nimport pkg.sub\n",
    }
    for name, text in sources.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    edges = graph(root=tmp_path / "pkg")
    assert edges["pkg.a"] == {"pkg", "pkg.b", "pkg.c"}
    assert edges["pkg.b"] == set() and edges["pkg.c"] == set()  # in a function; only for type checkers
    assert edges["pkg.sub"] == {"pkg", "pkg.b"}
    assert edges["pkg.sub.d"] == {"pkg", "pkg.a", "pkg.sub"}
    assert graph(deferred=True, root=tmp_path / "pkg")["pkg.b"] == {"pkg", "pkg.a"}


def test_cycles_are_found():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [{"a", "b", "c"}]
    assert path_through({"a", "b", "c"}, edges) == ["a", "b", "c", "a"]


def _message(found: list[set[str]], edges: dict[str, set[str]]) -> str:
    return "import cycles: " + "; ".join(" -> ".join(path_through(c, edges)) for c in found)


def test_no_module_level_import_cycle():
    edges = graph()
    found = cycles(edges)
    assert not found, _message(found, edges)


def test_no_new_import_cycle_counting_deferred_imports():
    edges = graph(deferred=True)
    new = [c for c in cycles(edges) if c not in KNOWN_CYCLES]
    assert not new, _message(new, edges)


def test_known_cycles_are_still_there():
    """A known cycle that is gone must leave KNOWN_CYCLES, so that it cannot come back unnoticed."""
    found = cycles(graph(deferred=True))
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not gone, f"no longer a cycle, remove from KNOWN_CYCLES: {gone}"
