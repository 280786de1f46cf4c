"""Dependencies point one way: function_app.py -> blobflow (Azure glue) -> features and
scoring, which never import each other or the glue; both read featurespec.

Every project module's imports are read with ``ast``, function-local and ``TYPE_CHECKING``
ones included (an import hidden in a function is still a dependency, and a cycle through
one fails only when that function runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("featurespec", "features", "scoring", "blobflow", "benchmarks")
# What each top-level part may import (besides itself and third-party code).
ALLOWED: dict[str, set[str]] = {
    "featurespec": set(),
    "features": {"featurespec"},
    "scoring": {"featurespec"},
    "blobflow": {"featurespec", "features", "scoring"},
    "function_app": {"blobflow", "scoring", "featurespec"},
    "benchmarks": {"featurespec", "features", "scoring"},
}


def project_modules() -> dict[str, Path]:
    modules = {"function_app": ROOT / "function_app.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(source: str, module: str, known: set[str]) -> set[str]:
    """Project modules ``source`` imports anywhere in its body (module names in ``known``)."""
    found: set[str] = set()
    package = module if module in PACKAGES else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:  # "a.b.attr" -> "a.b" -> "a"
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {
        name: imports_of(path.read_text(encoding="utf-8"), name, known)
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
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
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_reader_sees_function_local_and_type_checking_imports() -> None:
    known = {"features", "features.spark", "blobflow", "blobflow.store", "scoring.api"}
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from blobflow.store import BlobStore\n"
        "def main():\n    from features import spark\n    import scoring.api as api\n"
    )
    assert imports_of(source, "x", known | {"scoring"}) == {
        "blobflow.store",
        "features.spark",
        "scoring.api",
        "features",
    }
    graph = import_graph()
    assert "features.spark" in graph["features.cli"]  # imported inside main()
    assert "blobflow.commit" in graph["function_app"]  # imported inside the blob trigger


def test_dependencies_point_one_way() -> None:
    wrong = sorted(
        (module, target)
        for module, targets in import_graph().items()
        for target in targets
        if (top := target.split(".")[0]) != module.split(".")[0]
        and top not in ALLOWED[module.split(".")[0]]
    )
    assert wrong == []


def test_features_and_scoring_never_import_each_other_or_the_glue() -> None:
    graph = import_graph()
    for module, targets in graph.items():
        top = module.split(".")[0]
        if top in ("features", "scoring"):
            other = {"features": "scoring", "scoring": "features"}[top]
            assert not {t for t in targets if t.split(".")[0] in (other, "blobflow")}, module


def test_the_report_and_the_pandas_engine_do_not_import_each_other() -> None:
    graph = import_graph()
    assert "features.pipeline" not in graph["features.report"]
    assert "features.report" not in graph["features.pipeline"]
    assert "features.pipeline" not in graph["features.spark"]  # engines share the contract


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []
    # The detector does find one.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
