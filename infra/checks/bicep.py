"""Reading the Bicep in infra/ without the Bicep CLI (which cannot be installed here).

pycep-parser turns each file into a tree of plain values. Two of its habits matter to every
check built on it, and are handled once, here:

- string literals and identifiers both come out as bare strings (``'models'`` and
  ``models`` look alike), so a string is treated as a *reference* when it names a symbol
  declared in the file (parameter, variable, resource, module, loop variable);
- loops and conditions wrap a resource body (``{"loop_type": ..., "config": {...}}``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycep import BicepParser

INFRA = Path(__file__).resolve().parents[1]

Tree = dict[str, Any]

# Keys of a resource declaration that are Bicep's own, not part of the ARM resource body.
BICEP_KEYWORDS = frozenset({"name", "parent", "scope", "dependsOn"})


@functools.cache
def _parse_cached(path: Path, mtime_ns: int) -> Tree:
    return BicepParser().parse(file_path=path)


def parse(path: Path) -> Tree:
    """Parse once per file version: pycep builds a LALR parser, which is slow to repeat."""
    return _parse_cached(path, path.stat().st_mtime_ns)


def bicep_files(root: Path = INFRA) -> list[Path]:
    return sorted(root.rglob("*.bicep"))


def unwrap(config: Tree) -> tuple[Tree, Any, Any]:
    """Split a resource/module config into (body, condition, loop); pycep nests both."""
    loop = config.get("loop_type")
    condition = config.get("condition")
    if "config" in config and ("loop_type" in config or "condition" in config):
        inner, inner_condition, _ = unwrap(config["config"])
        return inner, condition if condition is not None else inner_condition, loop
    return config, None, None


def walk(node: Any) -> Iterator[Any]:
    """Every value in a parsed tree, depth first (dict keys are not yielded)."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def _node(value: Any, key: str) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get(key), dict)
        and isinstance(value[key].get("type"), str)
    )


def is_operator(value: Any) -> bool:
    """pycep's operator node (``{"operator": {"type": ..., "operands": ...}}``); an object
    literal that merely has an ``operator`` property is not one."""
    return _node(value, "operator") and len(value) == 1


def is_loop(value: Any) -> bool:
    return _node(value, "loop_type") and "config" in value


def is_expression(value: Any) -> bool:
    """A function call, operator, property access or loop: not a literal."""
    return (_node(value, "function") and len(value) == 1) or is_operator(value) or is_loop(value)


@dataclass
class Declared:
    """The symbols a template declares: a bare string naming one is a reference."""

    symbols: set[str] = field(default_factory=set)
    params: dict[str, Tree] = field(default_factory=dict)

    def is_reference(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        if "${" in value:
            return True
        return value.split(".", 1)[0].split("[", 1)[0] in self.symbols


def declared(tree: Tree) -> Declared:
    out = Declared(params=dict(tree.get("parameters", {})))
    for section in ("parameters", "variables", "resources", "modules", "outputs"):
        out.symbols.update(tree.get(section, {}))
    for value in walk(tree):
        if isinstance(value, dict):
            detail = value.get("detail")
            if isinstance(value.get("type"), str) and isinstance(detail, dict):
                for key in ("item_name", "index_name"):
                    if isinstance(detail.get(key), str):
                        out.symbols.add(detail[key])
    out.symbols.update({"resourceGroup", "subscription", "environment", "tenant", "deployment"})
    return out


@dataclass(frozen=True)
class Resource:
    """One ``resource`` declaration of a template, body unwrapped."""

    file: Path
    symbol: str
    type: str
    api_version: str
    existing: bool
    body: Tree
    condition: Any
    loop: Any


def resources(path: Path) -> list[Resource]:
    tree = parse(path)
    found = []
    for symbol, res in tree.get("resources", {}).items():
        body, condition, loop = unwrap(res["config"])
        found.append(
            Resource(
                file=path,
                symbol=symbol,
                type=res["type"],
                api_version=res["api_version"],
                existing=bool(res.get("existing")),
                body=body,
                condition=condition,
                loop=loop,
            )
        )
    return found
