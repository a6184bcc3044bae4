#!/usr/bin/env python3
"""List the import cycles among the modules of a package (default ``src/faasd``), stdlib only.

Every import statement counts, wherever it is (module level, inside a function, under ``TYPE_CHECKING``):
a function-local import "to avoid a cycle" still is one. ``from pkg import name`` is an edge to
``pkg.name`` when that is a module, else to ``pkg``. A cycle is a strongly connected component of more
than one module; each is printed with its edges and the kind of each edge.

    python scripts/import_cycles.py [SRC_DIR] [--only faasd.runtime]

``--only PREFIX``: report only the cycles that involve a module under PREFIX. Exit status 1 if a cycle
was reported.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

Graph = dict[str, dict[str, str]]
"""importer -> {imported: kind}; kind is ``module``, ``local`` (in a function) or ``type-checking``."""


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _kinds(tree: ast.Module) -> dict[int, str]:
    """The kind of every import node of ``tree``, by ``id(node)``."""
    kinds: dict[int, str] = {}

    def visit(node: ast.AST, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for c in child.body:
                    kinds[id(c)] = "type-checking"
                    visit(c, "type-checking")
                for c in child.orelse:
                    kinds[id(c)] = kind
                    visit(c, kind)
                continue
            in_function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            k = "local" if kind == "module" and in_function else kind
            kinds[id(child)] = k
            visit(child, k)

    visit(tree, "module")
    return kinds


def import_graph(root: Path) -> Graph:
    """The import graph of the package whose directory is ``root``."""
    paths = {_module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    graph: Graph = {m: {} for m in paths}
    rank = {"module": 0, "local": 1, "type-checking": 2}
    for mod, path in paths.items():
        tree = ast.parse(path.read_text(), str(path))
        kinds = _kinds(tree)
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in paths:  # `import a.b.c` of a name in a.b: edge to a.b
                    target = target.rpartition(".")[0]
                if not target or target == mod:
                    continue
                kind = kinds.get(id(node), "module")
                prev = graph[mod].get(target)
                if prev is None or rank[kind] < rank[prev]:
                    graph[mod][target] = kind
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph[w])))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_src = Path(__file__).resolve().parent.parent / "src" / "faasd"
    parser.add_argument("src", nargs="?", default=str(default_src))
    parser.add_argument("--only", default="", help="report only cycles involving modules under this prefix")
    args = parser.parse_args(argv)
    graph = import_graph(Path(args.src))
    prefix = args.only
    reported = [
        c for c in cycles(graph)
        if not prefix or any(m == prefix or m.startswith(prefix + ".") for m in c)
    ]
    for comp in reported:
        print(f"cycle of {len(comp)} modules:")
        members = set(comp)
        for m in comp:
            for target, kind in sorted(graph[m].items()):
                if target in members:
                    print(f"    {m} -> {target}  [{kind}]")
    if not reported:
        print("no import cycles" + (f" involving {prefix}" if prefix else ""))
    return 1 if reported else 0


if __name__ == "__main__":
    sys.exit(main())
