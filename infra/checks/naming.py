"""Offline naming check: the names the templates actually produce, against Azure's rules.

A small evaluator computes every resource name from the parsed Bicep for given parameter
values (a prefix, a function name...): the functions the name expressions use (string
interpolation, take, toLower, replace, uniqueString, substring, resourceGroup(),
environment()), variables, module parameters and literal loops. ``uniqueString`` is a
stand-in with the documented shape of ARM's (13 lowercase letters and digits); the real
hash differs, but only length and alphabet matter for the rules.

Each rule is the row for the resource type in Microsoft's "Naming rules and restrictions for
Azure resources" (learn.microsoft.com/azure/azure-resource-manager/management/
resource-name-rules), except where noted.

Run ``python infra/checks/naming.py [prefix ...]`` to print the names and any violations.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bicep import INFRA, parse, unwrap
from pycep import BicepParser

RESOURCE_GROUP_ID = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-crisk"
STORAGE_SUFFIX = "core.windows.net"


@dataclass(frozen=True)
class Rule:
    min_len: int
    max_len: int
    pattern: str  # full-match regex for the allowed characters and ends
    text: str  # the documented rule, for messages

    def violations(self, name: str) -> list[str]:
        problems = []
        if not self.min_len <= len(name) <= self.max_len:
            problems.append(f"length {len(name)} outside {self.min_len}-{self.max_len}")
        if not re.fullmatch(self.pattern, name):
            problems.append(f"breaks the rule: {self.text}")
        return problems


_ALNUM_HYPHEN_UNDERSCORE_PERIOD = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
_NO_INSIGHTS = r"[^%&\\?/\x00-\x1f]*[^%&\\?/\x00-\x1f .]"

RULES: dict[str, Rule] = {
    "Microsoft.Storage/storageAccounts": Rule(3, 24, r"[a-z0-9]+", "lowercase letters and numbers"),
    "Microsoft.Storage/storageAccounts/blobServices": Rule(7, 7, r"default", "must be default"),
    "Microsoft.Storage/storageAccounts/blobServices/containers": Rule(
        3,
        63,
        r"[a-z0-9](?!.*--)[a-z0-9-]*",
        "lowercase letters, numbers, hyphens; start "
        "with a letter or number; no consecutive hyphens",
    ),
    "Microsoft.Storage/storageAccounts/managementPolicies": Rule(
        7, 7, r"default", "must be default"
    ),
    "Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies": Rule(
        7, 7, r"default", "must be default"
    ),
    "Microsoft.Web/serverfarms": Rule(1, 60, r"[A-Za-z0-9-]+", "alphanumerics and hyphens"),
    "Microsoft.Web/sites": Rule(
        2,
        60,
        r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?",
        "alphanumerics and hyphens; can't start or end with a hyphen",
    ),
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies": Rule(
        3, 3, r"ftp|scm", "ftp or scm (the two policies the API defines)"
    ),
    "Microsoft.ManagedIdentity/userAssignedIdentities": Rule(
        3,
        128,
        r"[A-Za-z0-9][A-Za-z0-9_-]*",
        "alphanumerics, hyphens, underscores; start with a letter or number",
    ),
    "Microsoft.OperationalInsights/workspaces": Rule(
        4,
        63,
        r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?",
        "alphanumerics and hyphens; start and end with alphanumeric",
    ),
    "Microsoft.Insights/components": Rule(
        1, 260, _NO_INSIGHTS, "no %&\\?/; no trailing space/period"
    ),
    "Microsoft.Insights/actionGroups": Rule(
        1,
        260,
        r"[^:<>+/&%\\?|\x00-\x1f]*[^:<>+/&%\\?|\x00-\x1f .]",
        "no :<>+/&%\\?|; no trailing space/period",
    ),
    "Microsoft.Insights/scheduledQueryRules": Rule(
        1,
        260,
        r"[^*<>%{}&:\\?/#|\x00-\x1f]*[^*<>%{}&:\\?/#|\x00-\x1f .]",
        "no *<>%{}&:\\?/#|; no trailing space/period",
    ),
    "Microsoft.Insights/metricAlerts": Rule(
        1,
        260,
        r"[^*#&+:<>?@%{}\\/|\x00-\x1f]*[^*#&+:<>?@%{}\\/|\x00-\x1f .]",
        "no *#&+:<>?@%{}\\/|; no trailing space/period",
    ),
    # systemTopics has no row of its own; the row for Event Grid topics is used.
    "Microsoft.EventGrid/systemTopics": Rule(3, 50, r"[A-Za-z0-9-]+", "alphanumerics and hyphens"),
    # Also stated by the Event Grid subscription schema page: 3-64 of A-Z a-z 0-9 and "-".
    "Microsoft.EventGrid/systemTopics/eventSubscriptions": Rule(
        3, 64, r"[A-Za-z0-9-]+", "alphanumerics and hyphens"
    ),
    # Not in the naming table; from the Microsoft.Consumption/budgets template reference.
    "Microsoft.Consumption/budgets": Rule(
        1, 63, r"[A-Za-z0-9_-]+", "alphanumerics, hyphens and underscores"
    ),
    "Microsoft.Authorization/roleAssignments": Rule(
        36, 36, r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "a GUID"
    ),
    "Microsoft.Network/virtualNetworks": Rule(
        2, 64, _ALNUM_HYPHEN_UNDERSCORE_PERIOD, "alnum _ . -"
    ),
    "Microsoft.Network/networkSecurityGroups": Rule(
        1, 80, _ALNUM_HYPHEN_UNDERSCORE_PERIOD, "alnum _ . -"
    ),
    "Microsoft.Network/privateEndpoints": Rule(
        2, 64, _ALNUM_HYPHEN_UNDERSCORE_PERIOD, "alnum _ . -"
    ),
    "Microsoft.Network/privateEndpoints/privateDnsZoneGroups": Rule(
        1, 80, _ALNUM_HYPHEN_UNDERSCORE_PERIOD, "alnum _ . -"
    ),
    "Microsoft.Network/privateDnsZones": Rule(
        1, 63, r"(?:[A-Za-z0-9_-]+\.){1,33}[A-Za-z0-9_-]+", "2-34 labels of alnum _ -"
    ),
    "Microsoft.Network/privateDnsZones/virtualNetworkLinks": Rule(
        1, 80, _ALNUM_HYPHEN_UNDERSCORE_PERIOD, "alnum _ . -"
    ),
    "Microsoft.Logic/workflows": Rule(
        1, 43, r"[A-Za-z0-9_.()-]+", "alphanumerics, hyphens, underscores, periods, parentheses"
    ),
}


class EvaluationError(ValueError):
    """An expression this evaluator does not implement."""


@dataclass(frozen=True)
class Unknown:
    """A value that could not be computed offline; using it in a name is an error."""

    source: str

    def __str__(self) -> str:
        raise EvaluationError(f"a name depends on a value unknown offline: {self.source}")


def unique_string(*parts: str) -> str:
    """Stand-in for ARM's uniqueString: 13 lowercase base32 characters of a hash."""
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return base64.b32encode(digest).decode().lower().replace("=", "")[:13]


class Scope:
    """Values of one template's parameters, variables and loop variables."""

    def __init__(self, tree: dict, values: dict[str, Any]) -> None:
        self.tree = tree
        self.values = dict(values)
        self.modules: dict[str, Scope] = {}
        self._variables = tree.get("variables", {})
        for name, param in tree.get("parameters", {}).items():
            if name not in self.values and param.get("default") is not None:
                self.values[name] = self._lenient(param["default"])

    def child(self, **bindings: Any) -> Scope:
        scope = Scope.__new__(Scope)
        scope.tree, scope._variables, scope.modules = self.tree, self._variables, self.modules
        scope.values = {**self.values, **bindings}
        return scope

    def lookup(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        if name in self._variables:
            value = self.eval(self._variables[name]["value"])
            self.values[name] = value
            return value
        resource = self.tree.get("resources", {}).get(name)
        if resource is not None:
            body, _, loop = unwrap(resource["config"])
            if loop:
                raise EvaluationError(f"{name} is a resource loop")
            resource_name = self._lenient(body["name"])
            return {"name": resource_name, "id": f"/providers/{resource['type']}/{name}"}
        if name in self.modules:
            return {"outputs": self.modules[name].outputs()}
        raise EvaluationError(f"unknown symbol {name!r}")

    def knows(self, name: str) -> bool:
        return (
            name in self.values
            or name in self._variables
            or name in self.tree.get("resources", {})
            or name in self.modules
        )

    def outputs(self) -> dict[str, Any]:
        return {
            name: self._lenient(output["value"])
            for name, output in self.tree.get("outputs", {}).items()
        }

    def eval(self, node: Any) -> Any:
        if node is None or isinstance(node, bool | int | float):
            return node
        if isinstance(node, list):
            return [self.eval(item) for item in node]
        if isinstance(node, str):
            return self.text(node)
        if isinstance(node, dict) and "function" in node and len(node) == 1:
            return self.function(node["function"])
        if isinstance(node, dict) and "operator" in node and len(node) == 1:
            return self.operator(node["operator"])
        if isinstance(node, dict):
            return {key: self._lenient(value) for key, value in node.items()}
        raise EvaluationError(f"cannot evaluate {node!r}")

    def _lenient(self, node: Any) -> Any:
        """Object members are evaluated only as far as possible: a name rarely needs all."""
        try:
            return self.eval(node)
        except (EvaluationError, KeyError, TypeError):
            return Unknown(repr(node))

    def text(self, value: str) -> Any:
        if "${" not in value:
            head = value.split(".")[0]
            if re.fullmatch(r"[A-Za-z_]\w*", head) and self.knows(head):
                return self.dotted(value)
            return value
        out, rest = [], value
        while "${" in rest:
            before, _, after = rest.partition("${")
            inner, _, rest = _split_interpolation(after)
            out.append(before)
            out.append(str(self.expression(inner)))
        out.append(rest)
        return "".join(out)

    def dotted(self, text: str) -> Any:
        head, *tail = text.split(".")
        value = self.lookup(head)
        for part in tail:
            value = value[part]
        return value

    def expression(self, text: str) -> Any:
        """An interpolated expression: a bare identifier here must be a known symbol."""
        tree = _parse_expression(text)
        if isinstance(tree, str) and re.fullmatch(r"[A-Za-z_][\w.]*", tree):
            return self.dotted(tree)
        return self.eval(tree)

    def operator(self, operator: dict) -> Any:
        kind, operands = operator["type"], operator["operands"]
        if kind == "property_accessor":
            head, *keys = _accessor_parts(operator)
            value = self.eval(head)
            for key in keys:
                if isinstance(value, Unknown) or not isinstance(key, str):
                    raise EvaluationError(f"cannot follow .{key} offline")
                value = value[key]
            return value
        if kind == "conditional":
            branch = "true_value" if self.eval(operands["condition"]) else "false_value"
            return self.eval(operands[branch])
        raise EvaluationError(f"operator {kind} not implemented")

    def function(self, function: dict) -> Any:
        kind, args = function["type"], function.get("parameters") or {}
        value: Any
        if kind == "take":
            value = self.eval(args["original_value"])[: self.eval(args["number_to_take"])]
        elif kind == "to_lower":
            value = str(self.eval(args["string_to_change"])).lower()
        elif kind == "replace":
            value = str(self.eval(args["original_string"])).replace(
                self.eval(args["old_string"]), self.eval(args["new_string"])
            )
        elif kind == "unique_string":
            parts = [self.eval(v) for k, v in args.items() if v is not None]
            value = unique_string(*map(str, parts))
        elif kind == "substring":
            text, start = str(self.eval(args["string_to_parse"])), self.eval(args["start_index"])
            length = self.eval(args["length"]) if args.get("length") is not None else None
            value = text[start:] if length is None else text[start : start + length]
        elif kind == "resource_group":
            value = {"id": RESOURCE_GROUP_ID, "name": "rg-crisk", "location": "uksouth"}
        elif kind == "environment":
            value = {"suffixes": {"storage": STORAGE_SUFFIX}}
        elif kind == "empty":
            value = not self.eval(args["item_to_test"])
        elif kind == "concat":
            parts = [self.eval(args[k]) for k in sorted(args, key=lambda k: int(k.split("_")[1]))]
            if all(isinstance(part, list) for part in parts):
                value = [item for part in parts for item in part]
            else:
                value = "".join(map(str, parts))
        elif kind == "guid":
            # ARM's guid() always returns a GUID; its arguments are often outputs of other
            # resources, unknown offline, so the unevaluated arguments seed a stand-in.
            value = str(uuid.uuid5(uuid.NAMESPACE_URL, repr(args)))
        elif kind == "split":
            value = str(self.eval(args["input_string"])).split(self.eval(args["delimiter"]))
        else:
            raise EvaluationError(f"function {kind} not implemented")
        prop = function.get("property_name")
        return value[prop] if prop else value


def _accessor_parts(operator: dict) -> list[Any]:
    """pycep nests ``a.b.c`` either way round; flatten it to ``[a, 'b', 'c']``."""
    parts: list[Any] = []
    for operand in (operator["operands"]["operand_1"], operator["operands"]["operand_2"]):
        if isinstance(operand, dict) and operand.get("operator", {}).get("type") == (
            "property_accessor"
        ):
            parts.extend(_accessor_parts(operand["operator"]))
        else:
            parts.append(operand)
    return parts


def _split_interpolation(text: str) -> tuple[str, str, str]:
    """``inner}rest`` -> (inner, '}', rest), honouring nested braces and quotes."""
    depth, quoted = 0, False
    for i, char in enumerate(text):
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "{":
            depth += 1
        elif not quoted and char == "}":
            if depth == 0:
                return text[:i], "}", text[i + 1 :]
            depth -= 1
    raise EvaluationError(f"unterminated interpolation in {text!r}")


_EXPRESSIONS: dict[str, Any] = {}


def _parse_expression(text: str) -> Any:
    if text not in _EXPRESSIONS:
        tree = BicepParser().parse(text=f"var expression = {text}\n")
        _EXPRESSIONS[text] = tree["variables"]["expression"]["value"]
    return _EXPRESSIONS[text]


@dataclass(frozen=True)
class Named:
    file: str
    symbol: str
    type: str
    name: str


def scope_for(path: Path, values: dict[str, Any]) -> Scope:
    """A template's scope, with the scopes of the modules it calls (their outputs are
    visible to it as ``<module>.outputs.<name>``)."""
    tree = parse(path)
    scope = Scope(tree, values)
    for symbol, module in tree.get("modules", {}).items():
        body, _, _ = unwrap(module["config"])
        params = {}
        for key, value in body.get("params", {}).items():
            computed = scope._lenient(value)
            if not isinstance(computed, Unknown):
                params[key] = computed
        scope.modules[symbol] = scope_for(path.parent / module["detail"]["path"], params)
    return scope


def names_in(path: Path, values: dict[str, Any], scope: Scope | None = None) -> list[Named]:
    """The names of every resource a template declares (not ``existing`` ones), and those of
    the modules it calls, for the given parameter values."""
    scope = scope or scope_for(path, values)
    tree = scope.tree
    found: list[Named] = []
    rel = path.relative_to(INFRA.parent).as_posix()
    for symbol, res in tree.get("resources", {}).items():
        if res.get("existing"):
            continue
        body, _, loop = unwrap(res["config"])
        for bound in _loop_scopes(scope, loop):
            name = bound.eval(body["name"])
            if not isinstance(name, str):
                raise EvaluationError(f"{rel}:{symbol}: name evaluates to {name!r}")
            found.append(Named(rel, symbol, res["type"], name))
    for symbol, module in tree.get("modules", {}).items():
        module_path = path.parent / module["detail"]["path"]
        found.extend(names_in(module_path, {}, scope.modules[symbol]))
    return found


def _loop_scopes(scope: Scope, loop: Any) -> list[Scope]:
    if not loop:
        return [scope]
    detail = loop["detail"]
    items = scope.eval(detail["array_name"])
    bound = []
    for i, item in enumerate(items):
        values = {detail["item_name"]: item}
        if detail.get("index_name"):
            values[detail["index_name"]] = i
        bound.append(scope.child(**values))
    return bound


def violations(named: list[Named]) -> list[str]:
    problems = []
    for item in named:
        rule = RULES.get(item.type)
        if rule is None:
            problems.append(f"{item.file}:{item.symbol}: no naming rule for {item.type}")
            continue
        for problem in rule.violations(item.name):
            problems.append(f"{item.file}:{item.symbol} {item.name!r}: {problem}")
    return problems


def main(argv: list[str]) -> int:
    problems = []
    for prefix in argv or ["crisk"]:
        named = names_in(INFRA / "main.bicep", {"prefix": prefix, "alertEmails": ["a@b.c"]})
        for item in named:
            print(f"{prefix:>10}  {item.type:<60} {item.name}")
        problems += violations(named)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
