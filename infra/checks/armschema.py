"""Offline schema check: every resource body in infra/ against the Azure REST definition of
its declared apiVersion.

The Azure SDK for Python management packages are generated from the same REST API
specifications ARM validates deployments against. Their msrest models carry, per class, an
``_attribute_map`` (JSON property names and nesting, with ``properties.x`` flattening, and
types), a ``_validation`` table (required and read-only properties), a ``_subtype_map`` for
polymorphic objects (``endpointType``, ``odata.type``...), and constructor annotations that
name the enum of each enum-typed property. A body is checked for: unknown or misspelt
property names at any depth, wrong nesting, literal values of the wrong JSON type, literal
enum values the API does not define, missing required properties and read-only properties
that a template sets.

Which package describes which apiVersion is checked too: a multi-API package is read from
its ``vYYYY_MM_DD`` folder, a single-API package must generate its create request with the
very apiVersion the template declares. The pinned versions are in requirements-dev.txt.

Run ``python infra/checks/armschema.py`` for a report; tests/test_infra_schema.py runs it.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bicep import (
    BICEP_KEYWORDS,
    INFRA,
    Declared,
    Resource,
    bicep_files,
    declared,
    is_expression,
    is_loop,
    is_operator,
)
from bicep import parse as parse_bicep
from bicep import resources as bicep_resources


@dataclass(frozen=True)
class Definition:
    """Where the REST definition of one resource type lives in the SDK."""

    package: str  # e.g. azure.mgmt.storage
    operations: str  # operation group, e.g. storage_accounts
    model: str  # body model of the PUT request


DEFINITIONS: dict[str, Definition] = {
    "Microsoft.ManagedIdentity/userAssignedIdentities": Definition(
        "azure.mgmt.msi", "user_assigned_identities", "Identity"
    ),
    "Microsoft.Storage/storageAccounts": Definition(
        "azure.mgmt.storage", "storage_accounts", "StorageAccountCreateParameters"
    ),
    "Microsoft.Storage/storageAccounts/blobServices": Definition(
        "azure.mgmt.storage", "blob_services", "BlobServiceProperties"
    ),
    "Microsoft.Storage/storageAccounts/blobServices/containers": Definition(
        "azure.mgmt.storage", "blob_containers", "BlobContainer"
    ),
    "Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies": Definition(
        "azure.mgmt.storage", "blob_containers", "ImmutabilityPolicy"
    ),
    "Microsoft.Storage/storageAccounts/managementPolicies": Definition(
        "azure.mgmt.storage", "management_policies", "ManagementPolicy"
    ),
    "Microsoft.Web/serverfarms": Definition(
        "azure.mgmt.web", "app_service_plans", "AppServicePlan"
    ),
    "Microsoft.Web/sites": Definition("azure.mgmt.web", "web_apps", "Site"),
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies": Definition(
        "azure.mgmt.web", "web_apps", "CsmPublishingCredentialsPoliciesEntity"
    ),
    "Microsoft.EventGrid/systemTopics": Definition(
        "azure.mgmt.eventgrid", "system_topics", "SystemTopic"
    ),
    "Microsoft.EventGrid/systemTopics/eventSubscriptions": Definition(
        "azure.mgmt.eventgrid", "system_topic_event_subscriptions", "EventSubscription"
    ),
    "Microsoft.Consumption/budgets": Definition("azure.mgmt.consumption", "budgets", "Budget"),
    "Microsoft.Insights/components": Definition(
        "azure.mgmt.applicationinsights", "components", "ApplicationInsightsComponent"
    ),
    "Microsoft.Insights/actionGroups": Definition(
        "azure.mgmt.monitor", "action_groups", "ActionGroupResource"
    ),
    "Microsoft.Insights/scheduledQueryRules": Definition(
        "azure.mgmt.monitor", "scheduled_query_rules", "ScheduledQueryRuleResource"
    ),
    "Microsoft.Insights/metricAlerts": Definition(
        "azure.mgmt.monitor", "metric_alerts", "MetricAlertResource"
    ),
    "Microsoft.OperationalInsights/workspaces": Definition(
        "azure.mgmt.loganalytics", "workspaces", "Workspace"
    ),
    "Microsoft.Authorization/roleAssignments": Definition(
        "azure.mgmt.authorization", "role_assignments", "RoleAssignmentCreateParameters"
    ),
    "Microsoft.Network/networkSecurityGroups": Definition(
        "azure.mgmt.network", "network_security_groups", "NetworkSecurityGroup"
    ),
    "Microsoft.Network/virtualNetworks": Definition(
        "azure.mgmt.network", "virtual_networks", "VirtualNetwork"
    ),
    "Microsoft.Network/privateEndpoints": Definition(
        "azure.mgmt.network", "private_endpoints", "PrivateEndpoint"
    ),
    "Microsoft.Network/privateEndpoints/privateDnsZoneGroups": Definition(
        "azure.mgmt.network", "private_dns_zone_groups", "PrivateDnsZoneGroup"
    ),
    "Microsoft.Network/privateDnsZones": Definition(
        "azure.mgmt.privatedns", "private_zones", "PrivateZone"
    ),
    "Microsoft.Network/privateDnsZones/virtualNetworkLinks": Definition(
        "azure.mgmt.privatedns", "virtual_network_links", "VirtualNetworkLink"
    ),
    "Microsoft.Logic/workflows": Definition("azure.mgmt.logic", "workflows", "Workflow"),
}

# msrest primitive type names; anything else in an attribute map is a model or a container.
_PRIMITIVES = {
    "str": str,
    "int": int,
    "long": int,
    "float": (int, float),
    "bool": bool,
    "object": object,
    "iso-8601": str,
    "rfc-1123": str,
    "duration": str,
    "date": str,
    "time": str,
    "unix-time": int,
    "bytearray": str,
    "base64": str,
    "decimal": (int, float),
}
_API_VERSION = re.compile(r'"api-version",\s*"(\d{4}-\d{2}-\d{2}(?:-preview)?)"')
_API_VERSION_DEFAULT = re.compile(r'api_version[^\n]*?"(\d{4}-\d{2}-\d{2}(?:-preview)?)"')


@dataclass(frozen=True)
class Finding:
    where: str  # file:symbol/json.path
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class SchemaUnavailableError(LookupError):
    """No SDK models describe this resource type at this apiVersion."""


def models_for(rtype: str, api_version: str) -> ModuleType:
    """The models module generated for ``rtype`` at exactly ``api_version``."""
    definition = DEFINITIONS.get(rtype)
    if definition is None:
        raise SchemaUnavailableError(f"no SDK definition registered for {rtype}")
    folder = "v" + api_version.replace("-", "_")
    try:
        return importlib.import_module(f"{definition.package}.{folder}.models")
    except ModuleNotFoundError:
        pass
    versions = sdk_api_versions(definition)
    if api_version not in versions:
        raise SchemaUnavailableError(
            f"{rtype}@{api_version}: the pinned {definition.package} describes "
            f"{', '.join(sorted(versions)) or 'no version'} for {definition.operations}"
        )
    return importlib.import_module(f"{definition.package}.models")


def sdk_api_versions(definition: Definition) -> set[str]:
    """API versions a single-API package sends when it creates this resource type."""
    for name in (f"_{definition.operations}_operations", "_operations"):
        try:
            module = importlib.import_module(f"{definition.package}.operations.{name}")
        except ModuleNotFoundError:
            continue
        builders = [
            obj
            for attr, obj in vars(module).items()
            if re.fullmatch(
                rf"build_(?:{definition.operations}_)?create(?:_or_update)?_request(?:_initial)?",
                attr,
            )
        ]
        found: set[str] = set()
        for builder in builders:
            source = inspect.getsource(builder)
            found.update(_API_VERSION.findall(source) + _API_VERSION_DEFAULT.findall(source))
        if found:
            return found
    return set()


# ---------------------------------------------------------------- model introspection


def _split_key(key: str) -> list[str]:
    """``properties.odata\\.type`` -> ``['properties', 'odata.type']``."""
    parts = re.split(r"(?<!\\)\.", key)
    return [part.replace("\\.", ".") for part in parts]


@dataclass
class Leaf:
    attr: str
    type: str
    required: bool
    readonly: bool
    enums: tuple[type[enum.Enum], ...]


def _enums(cls: type, attr: str, module: ModuleType) -> tuple[type[enum.Enum], ...]:
    try:
        annotation = inspect.signature(cls.__init__).parameters[attr].annotation
    except (KeyError, ValueError):
        return ()
    names = re.findall(r"_models\.(\w+)", str(annotation))
    found = []
    for name in names:
        candidate = getattr(module, name, None)
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            found.append(candidate)
    return tuple(found)


def schema_tree(cls: type, module: ModuleType) -> tuple[dict[str, Any], bool]:
    """JSON-shaped tree of a model: nested dicts for flattened groups, ``Leaf`` at the ends.
    The flag says whether the model declares additional properties."""
    tree: dict[str, Any] = {}
    open_model = False
    validation = getattr(cls, "_validation", {})
    for attr, spec in cls._attribute_map.items():
        if spec["key"] == "":
            open_model = True
            continue
        parts = _split_key(spec["key"])
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        rules = validation.get(attr, {})
        node[parts[-1]] = Leaf(
            attr=attr,
            type=spec["type"],
            required=bool(rules.get("required")),
            readonly=bool(rules.get("readonly")),
            enums=_enums(cls, attr, module),
        )
    return tree, open_model


def _subtype(cls: type, body: dict, module: ModuleType, declared_: Declared) -> type | None:
    """The concrete class a polymorphic body selects, or None when it cannot be told."""
    subtypes = cls.__dict__.get("_subtype_map") or {}
    for attr, mapping in subtypes.items():
        key = _split_key(cls._attribute_map[attr]["key"])[-1]
        value = _lookup(body, key)
        if not isinstance(value, str) or declared_.is_reference(value):
            return None
        for discriminator, name in mapping.items():
            if discriminator.lower() == value.lower():
                sub = getattr(module, name)
                return _subtype(sub, body, module, declared_) or sub
        raise _BadDiscriminatorError(key, value, sorted(mapping))
    return None


class _BadDiscriminatorError(ValueError):
    def __init__(self, key: str, value: str, allowed: list[str]) -> None:
        super().__init__(key, value, allowed)
        self.key, self.value, self.allowed = key, value, allowed


def _lookup(body: dict, key: str) -> Any:
    for k, v in body.items():
        if _clean_key(k) == key:
            return v
    return None


def _clean_key(key: str) -> str:
    """pycep keeps the quotes of quoted keys: ``'odata.type'``."""
    if len(key) >= 2 and key[0] == key[-1] == "'":
        return key[1:-1]
    return key


# ---------------------------------------------------------------- validation


class Validator:
    def __init__(self, module: ModuleType, declared_: Declared, where: str) -> None:
        self.module = module
        self.declared = declared_
        self.where = where
        self.findings: list[Finding] = []

    def error(self, path: str, message: str) -> None:
        self.findings.append(Finding(f"{self.where}{path}", message))

    def model(self, cls: type, body: Any, path: str) -> None:
        if self._opaque(body):
            return
        if not isinstance(body, dict):
            self.error(path, f"expected an object ({cls.__name__}), found {body!r}")
            return
        try:
            cls = _subtype(cls, body, self.module, self.declared) or cls
        except _BadDiscriminatorError as bad:
            self.error(
                f"{path}.{bad.key}",
                f"{bad.value!r} is not a known {bad.key} (one of: {', '.join(bad.allowed)})",
            )
            return
        tree, open_model = schema_tree(cls, self.module)
        self.group(cls, tree, body, path, open_model)

    def group(self, cls: type, tree: dict, body: dict, path: str, open_model: bool) -> None:
        seen = set()
        for raw_key, value in body.items():
            key = _clean_key(raw_key)
            here = f"{path}.{key}" if path else key
            node = tree.get(key)
            if node is None:
                suffix = " (the model takes additional properties, but none are used here)"
                self.error(
                    here,
                    f"unknown property {key!r} for {cls.__name__}"
                    + (suffix if open_model else "")
                    + f"; known: {', '.join(sorted(tree))}",
                )
                continue
            seen.add(key)
            if isinstance(node, Leaf):
                if node.readonly:
                    self.error(here, f"{key!r} is read-only in {cls.__name__}")
                    continue
                self.value(node, node.type, value, here)
            elif self._opaque(value):
                continue
            elif not isinstance(value, dict):
                self.error(here, f"expected an object, found {value!r}")
            else:
                self.group(cls, node, value, here, False)
        for key, node in tree.items():
            if key in seen:
                continue
            if self._requires(node):
                self.error(f"{path}.{key}" if path else key, f"required by {cls.__name__}")

    def _requires(self, node: Any) -> bool:
        if isinstance(node, Leaf):
            return node.required and not node.readonly
        return any(self._requires(child) for child in node.values())

    def _opaque(self, value: Any) -> bool:
        """Expressions and references cannot be evaluated offline; loops are checked apart."""
        if is_loop(value):
            return False
        return is_expression(value) or self.declared.is_reference(value)

    def value(self, leaf: Leaf, type_: str, value: Any, path: str) -> None:
        if value is None:
            return
        if is_operator(value):
            operator = value["operator"]
            if operator.get("type") == "conditional":
                operands = operator["operands"]
                self.value(leaf, type_, operands["true_value"], path)
                self.value(leaf, type_, operands["false_value"], path)
            return
        if is_loop(value):
            if type_.startswith("["):
                self.value(leaf, type_[1:-1], value["config"], f"{path}[]")
            else:
                self.error(path, f"a loop produces a list, but the property is {type_}")
            return
        if self._opaque(value):
            return
        if type_.startswith("[") and type_.endswith("]"):
            if not isinstance(value, list):
                self.error(path, f"expected a list of {type_[1:-1]}, found {value!r}")
                return
            for i, item in enumerate(value):
                self.value(leaf, type_[1:-1], item, f"{path}[{i}]")
            return
        if type_.startswith("{") and type_.endswith("}"):
            if not isinstance(value, dict):
                self.error(path, f"expected an object of {type_[1:-1]}, found {value!r}")
                return
            for key, item in value.items():
                self.value(leaf, type_[1:-1], item, f"{path}.{_clean_key(key)}")
            return
        if type_ in _PRIMITIVES:
            self.primitive(leaf, type_, value, path)
            return
        cls = getattr(self.module, type_, None)
        if cls is None:
            self.error(path, f"SDK model {type_} not found")
            return
        self.model(cls, value, path)

    def primitive(self, leaf: Leaf, type_: str, value: Any, path: str) -> None:
        expected = _PRIMITIVES[type_]
        if expected is object:
            return
        ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        if not ok:
            self.error(path, f"expected {type_}, found {value!r}")
            return
        if leaf.enums and isinstance(value, str):
            allowed = {member.value.lower(): member.value for e in leaf.enums for member in e}
            if value.lower() not in allowed:
                names = ", ".join(sorted(allowed.values()))
                self.error(path, f"{value!r} is not one of {names}")


def check_resource(resource: Resource, declared_: Declared, root: Path = INFRA) -> list[Finding]:
    rel = resource.file.relative_to(root.parent).as_posix()
    where = f"{rel}:{resource.symbol}/"
    try:
        module = models_for(resource.type, resource.api_version)
    except SchemaUnavailableError as exc:
        return [Finding(where, str(exc))]
    definition = DEFINITIONS[resource.type]
    cls = getattr(module, definition.model)
    validator = Validator(module, declared_, where)
    body = {k: v for k, v in resource.body.items() if k not in BICEP_KEYWORDS}
    validator.model(cls, body, "")
    return validator.findings


def check_file(path: Path, root: Path = INFRA) -> list[Finding]:
    declared_ = declared(parse_bicep(path))
    findings: list[Finding] = []
    for resource in bicep_resources(path):
        if resource.existing:
            continue  # a reference to a resource deployed elsewhere: only its name is given
        findings.extend(check_resource(resource, declared_, root))
    return findings


def check_all(root: Path = INFRA) -> list[Finding]:
    findings: list[Finding] = []
    for path in bicep_files(root):
        findings.extend(check_file(path, root))
    return findings


def main() -> int:
    findings = check_all()
    for finding in findings:
        print(finding)
    print(f"{len(findings)} finding(s) in {len(bicep_files())} Bicep file(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
