"""Offline schema checks of every resource body in infra/ (issue 13), and proof that they bite.

``infra/checks/armschema.py`` validates each body against the Azure REST definition of its
declared apiVersion, as generated into the pinned azure-mgmt-* SDK models (property names
and nesting, JSON types, enum values where literal, required and read-only properties,
polymorphic discriminators). These tests run it on the real templates, which must be clean,
and on deliberately broken copies, which must not be.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

INFRA = Path(__file__).resolve().parents[1] / "infra"
sys.path.insert(0, str(INFRA / "checks"))

import armschema  # noqa: E402
import bicep  # noqa: E402


def test_every_resource_body_matches_its_rest_definition() -> None:
    findings = armschema.check_all()
    assert findings == [], "\n".join(map(str, findings))


def test_every_resource_type_in_the_templates_has_a_definition() -> None:
    """A new resource type cannot slip past the check unregistered."""
    declared = {
        r.type for path in bicep.bicep_files() for r in bicep.resources(path) if not r.existing
    }
    assert declared <= set(armschema.DEFINITIONS)
    assert len(declared) >= 20


def test_each_declared_api_version_is_the_one_the_models_describe() -> None:
    for path in bicep.bicep_files():
        for resource in bicep.resources(path):
            if resource.existing:
                continue
            module = armschema.models_for(resource.type, resource.api_version)
            assert module.__name__.startswith(armschema.DEFINITIONS[resource.type].package)


def test_an_api_version_the_sdk_does_not_describe_is_reported() -> None:
    with pytest.raises(armschema.SchemaUnavailableError, match="describes 2022-06-15"):
        armschema.models_for("Microsoft.EventGrid/systemTopics", "2025-02-15")
    with pytest.raises(armschema.SchemaUnavailableError):
        armschema.models_for("Microsoft.Web/sites", "2031-01-01")


BREAKAGES = [
    # (file, original text, broken text, expected fragment of a finding)
    ("modules/functionapp.bicep", "maximumInstanceCount: maximumInstanceCount",
     "maximumInstanceCont: maximumInstanceCount", "unknown property 'maximumInstanceCont'"),
    ("modules/storage.bicep", "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_9'",
     "'TLS1_9' is not one of TLS1_0, TLS1_1, TLS1_2, TLS1_3"),
    ("modules/storage.bicep", "allowBlobPublicAccess: false", "allowBlobPublicAccess: 'no'",
     "expected bool, found 'no'"),
    ("modules/functionapp.bicep", "    httpsOnly: true\n", "    properties: {\n      httpsOnly: "
     "true\n    }\n", "unknown property 'properties' for Site"),
    ("modules/costguard.bicep", "timeAggregation: 'Total'", "timeAggregation: 'Sum'",
     "'Sum' is not one of"),
    ("modules/costguard.bicep", "'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'",
     "'Microsoft.Azure.Monitor.SingleResource'", "is not a known odata.type"),
    ("blob-subscription.bicep", "endpointType: 'WebHook'", "endpointType: 'Webhook2'",
     "'Webhook2' is not a known endpointType"),
    ("modules/roles.bicep", "    principalId: functionPrincipalId\n", "",
     "principalId: required by RoleAssignmentCreateParameters"),
    ("main.bicep", "resource eventGridIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities"
     "@2024-11-30' = {\n  name: names.eventGridIdentity\n  location: location\n",
     "resource eventGridIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30'"
     " = {\n  name: names.eventGridIdentity\n", "location: required by Identity"),
    ("modules/network.bicep", "privateEndpointNetworkPolicies: 'Disabled'",
     "privateEndpointNetworkPolicies: 'Off'", "'Off' is not one of"),
    ("modules/eventgrid.bicep", "Microsoft.EventGrid/systemTopics@2022-06-15",
     "Microsoft.EventGrid/systemTopics@2025-02-15", "describes 2022-06-15"),
    ("modules/storage.bicep", "    immutabilityPeriodSinceCreationInDays: decisionRetentionDays",
     "    immutabilityPeriodInDays: decisionRetentionDays",
     "unknown property 'immutabilityPeriodInDays' for ImmutabilityPolicy"),
    ("modules/storage.bicep", "allowProtectedAppendWrites: true",
     "allowProtectedAppendWrites: 'yes'", "expected bool, found 'yes'"),
    ("blob-deleted-subscription.bicep", "includedEventTypes:", "includeEventTypes:",
     "unknown property 'includeEventTypes'"),
    ("blob-deleted-subscription.bicep", "maxDeliveryAttempts: 30", "maxDeliveryAttempts: '30'",
     "expected int, found '30'"),
    ("modules/monitoring.bicep", "timeAggregation: 'Count'", "timeAggregation: 'Counted'",
     "'Counted' is not one of"),
    ("modules/monitoring.bicep", "    autoMitigate: true\n    actions: {\n      actionGroups: [\n"
     "        actionGroup.id\n      ]\n    }\n  }\n}\n\noutput",
     "    autoMitigate: 'yes'\n    actions: {\n      actionGroups: [\n"
     "        actionGroup.id\n      ]\n    }\n  }\n}\n\noutput", "expected bool, found 'yes'"),
    ("modules/storage.bicep", "      ipRules: [for ip in operatorIpRanges: {\n        value: ip\n",
     "      ipRules: [for ip in operatorIpRanges: {\n        ipAddress: ip\n",
     "unknown property 'ipAddress' for IPRule"),
]  # fmt: skip


@pytest.mark.parametrize(("file", "old", "new", "expected"), BREAKAGES)
def test_a_broken_copy_fails_the_check(
    tmp_path: Path, file: str, old: str, new: str, expected: str
) -> None:
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy, ignore=shutil.ignore_patterns("__pycache__", "checks"))
    target = copy / file
    text = target.read_text()
    assert old in text, f"the breakage no longer applies to {file}"
    target.write_text(text.replace(old, new, 1))
    findings = [str(f) for f in armschema.check_file(target, copy)]
    assert any(expected in f for f in findings), "\n".join(findings)
