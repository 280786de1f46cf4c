"""Naming rules on the names the templates actually produce (issue 13, items 1 and 10).

``infra/checks/naming.py`` evaluates every resource name from the parsed Bicep for a given
prefix and checks it against the rule Microsoft documents for its resource type. The Event
Grid subscription name is produced by infra/blob-subscription.bicep from the function name
the deployment hook reads out of function_app.py, so that is what is checked here too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
sys.path.insert(0, str(INFRA / "checks"))

import naming  # noqa: E402

EMAILS = {"alertEmails": ["ops@lender.example"]}
# Typical, shortest, longest, upper case and separators: all within @minLength/@maxLength.
PREFIXES = ["crisk", "abc", "prod123456", "Crisk", "cr-isk", "CR_Risk.01"]


def lib(*commands: str) -> str:
    script = INFRA / "scripts" / "lib.sh"
    done = subprocess.run(
        ["bash", "-c", f'source "{script}" && ' + " && ".join(commands)],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_name_main_produces_follows_its_rule(prefix: str) -> None:
    named = naming.names_in(INFRA / "main.bicep", {"prefix": prefix, **EMAILS})
    assert naming.violations(named) == []
    types = {n.type for n in named}
    for required in ("Microsoft.Storage/storageAccounts", "Microsoft.Web/sites",
                     "Microsoft.Web/serverfarms", "Microsoft.OperationalInsights/workspaces",
                     "Microsoft.EventGrid/systemTopics", "Microsoft.Logic/workflows",
                     "Microsoft.Network/privateEndpoints"):  # fmt: skip
        assert required in types
    assert len(named) >= 40


def test_storage_name_is_valid_for_upper_case_and_hyphens() -> None:
    """Item 10: 'Crisk' or 'cr-isk' used to give an invalid storage account name."""
    for prefix in ("Crisk", "cr-isk"):
        named = naming.names_in(INFRA / "main.bicep", {"prefix": prefix, **EMAILS})
        storage = [n.name for n in named if n.type == "Microsoft.Storage/storageAccounts"]
        assert len(storage) == 1 and storage[0].startswith("criskst")


@settings(max_examples=25, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.",
               min_size=3, max_size=10).filter(lambda p: any(c.isalnum() for c in p)))  # fmt: skip
def test_any_prefix_the_template_accepts_gives_valid_names(prefix: str) -> None:
    named = naming.names_in(INFRA / "main.bicep", {"prefix": prefix, **EMAILS})
    assert naming.violations(named) == []


def test_the_event_subscription_name_is_valid_for_the_real_function_name() -> None:
    """Item 1: '<function>-<container>' gave 'process_batch_blob-raw'; underscores are not
    allowed in Event Grid subscription names (3-64 of A-Z a-z 0-9 and '-')."""
    function, container = lib("blob_function_name", "blob_container_name").split()
    assert "_" in function  # the Python name really has underscores
    named = naming.names_in(
        INFRA / "blob-subscription.bicep",
        {"functionName": function, "watchedContainer": container},
    )
    subscription = [n for n in named if n.type.endswith("/eventSubscriptions")]
    assert [n.name for n in subscription] == [f"{function.replace('_', '-')}-{container}"]
    assert naming.violations(subscription) == []


def test_the_deletion_subscription_name_is_valid_for_the_real_function_name() -> None:
    function, container = lib("deleted_function_name", "blob_container_name").split()
    named = naming.names_in(
        INFRA / "blob-deleted-subscription.bicep",
        {"functionName": function, "watchedContainer": container},
    )
    subscription = [n for n in named if n.type.endswith("/eventSubscriptions")]
    assert [n.name for n in subscription] == [f"{function.replace('_', '-')}-{container}"]
    assert naming.violations(subscription) == []
    # Both subscriptions live on one system topic: their names must differ.
    blob = lib("blob_function_name")
    assert subscription[0].name != f"{blob.replace('_', '-')}-{container}"


def test_the_rules_reject_what_azure_rejects() -> None:
    """The rules themselves are checked against names the documentation rules out."""
    bad = {
        "Microsoft.Storage/storageAccounts": ["Criskst123", "cr-iskst1", "ab", "a" * 25],
        "Microsoft.EventGrid/systemTopics/eventSubscriptions": ["process_batch_blob-raw", "ab"],
        "Microsoft.Web/sites": ["-crisk", "crisk-", "a"],
        "Microsoft.OperationalInsights/workspaces": ["abc", "crisk-"],
        "Microsoft.Logic/workflows": ["x" * 44],
    }
    for rtype, names in bad.items():
        for name in names:
            assert naming.RULES[rtype].violations(name), (rtype, name)
    assert not naming.RULES["Microsoft.Storage/storageAccounts"].violations("criskst4vhain")


def test_the_prefix_rule_of_the_hook() -> None:
    assert lib("valid_prefix crisk && echo ok") == "ok"
    for bad in ("Crisk", "cr-isk", "1abc", "ab", "abcdefghijk"):
        done = subprocess.run(
            ["bash", "-c", f'source "{INFRA / "scripts" / "lib.sh"}" && valid_prefix "{bad}"'],
            capture_output=True, timeout=30,
        )  # fmt: skip
        assert done.returncode != 0, bad
