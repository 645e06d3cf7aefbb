"""The package layering of docs/architecture.md, enforced: lower layers never import higher
ones (imports inside functions count), no import cycles between files, and every
study-folder file name is spelled in ``causalvis.store.layout`` alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from causalvis.store import layout

SRC = Path(__file__).resolve().parents[2] / "src" / "causalvis"

# Rank of each top-level package: a module may import its own package and lower ranks.
RANKS = {
    "<root>": 0, "errors": 0, "malloc": 0,
    "store": 1, "presets": 1,
    "config": 2,
    "models": 3, "images": 3,
    "featurevis": 4, "stimuli": 4,
    "compute": 5,
    "pipeline": 6,
    "responses": 7,
    "analysis": 8, "observers": 8, "server": 8, "recruit": 8,
    "cli": 9,
    "__main__": 10,
}
# Edges between packages of the same rank that the layering allows.
SAME_RANK_ALLOWED = {("observers", "analysis")}

# Literal file names that are not study-folder files (or are another owner's).
NOT_STUDY_FILES = {
    ("server/app.py", "index.html"),  # the built web front end (web/dist), not the report
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports() -> dict[str, set[str]]:
    """module -> causalvis modules it imports anywhere (top level or inside functions)."""
    mods = _modules()

    def resolve(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    edges: dict[str, set[str]] = {}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [module] + [f"{module}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                if target.startswith("causalvis"):
                    found = resolve(target)
                    if found and found != mod:
                        edges.setdefault(mod, set()).add(found)
    return edges


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def test_every_package_has_a_rank():
    packages = {_package(m) for m in _modules()}
    assert packages <= set(RANKS), f"add to RANKS and docs/architecture.md: {packages - set(RANKS)}"


def test_lower_layers_never_import_higher_ones():
    wrong = []
    for mod, targets in sorted(_imports().items()):
        src = _package(mod)
        for target in sorted(targets):
            dst = _package(target)
            if src == dst or (src, dst) in SAME_RANK_ALLOWED:
                continue
            if RANKS[dst] >= RANKS[src]:
                wrong.append(f"{mod} -> {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycles_between_files():
    assert _cycles(_imports()) == []


def test_no_import_cycles_between_packages():
    graph: dict[str, set[str]] = {}
    for mod, targets in _imports().items():
        for target in targets:
            if _package(mod) != _package(target):
                graph.setdefault(_package(mod), set()).add(_package(target))
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


STUDY_FILE_NAMES = sorted(
    value for name, value in vars(layout).items() if name.endswith("_FILE") and isinstance(value, str)
)


@pytest.mark.parametrize("file_name", STUDY_FILE_NAMES)
def test_study_file_name_is_spelled_only_in_store_layout(file_name):
    spelled = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel == "store/layout.py" or (rel, file_name) in NOT_STUDY_FILES:
            continue
        text = path.read_text()
        if f'"{file_name}"' in text or f"'{file_name}'" in text:
            spelled.append(rel)
    assert not spelled, f"{file_name!r} spelled outside store/layout.py in: {spelled}"
