"""Static checks on the Bicep in infra/ (there is no Bicep CLI or Azure access in CI).

Every .bicep file is parsed with pycep-parser and the assertions read the parsed trees, so a
renamed property or a dropped setting fails here. Two things pycep cannot see are checked on
the text instead, and say so: checkov skip comments (comments are not in the tree) and
main.bicepparam (pycep has no grammar for `using` files or readEnvironmentVariable()).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from infra.checks.bicep import Tree, bicep_files, parse, unwrap, walk

INFRA = Path(__file__).resolve().parents[1] / "infra"
MODULES = INFRA / "modules"

# Built-in Azure role definition ids.
BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"


# ---------------------------------------------------------------- parsing helpers


def template(name: str) -> Tree:
    return parse(INFRA / name)


def resources(tree: Tree, rtype: str) -> dict[str, Tree]:
    """Resources of one type, by symbolic name, with their unwrapped bodies."""
    return {
        symbol: {**res, "body": unwrap(res["config"])[0], "condition": unwrap(res["config"])[1]}
        for symbol, res in tree.get("resources", {}).items()
        if res["type"] == rtype
    }


def only(tree: Tree, rtype: str) -> Tree:
    found = resources(tree, rtype)
    assert len(found) == 1, f"expected one {rtype}, found {sorted(found)}"
    return next(iter(found.values()))


def dotted(expr: Any) -> str | None:
    """Render a property-accessor chain (a.b.c) as text; None for anything else."""
    if isinstance(expr, str):
        return expr
    if isinstance(expr, dict) and expr.get("operator", {}).get("type") == "property_accessor":
        operands = expr["operator"]["operands"]
        left, right = dotted(operands["operand_1"]), dotted(operands["operand_2"])
        if left is not None and right is not None:
            return f"{left}.{right}"
    return None


def decorators(param: Tree) -> dict[str, Any]:
    """Decorators by type; pycep gives @description no type and @secure() no argument."""
    return {d.get("type", "description"): d.get("argument") for d in param.get("decorators", [])}


def has_default(param: Tree) -> bool:
    """pycep writes ``default: None`` for a parameter declared without one."""
    return param.get("default") is not None


def param_default(tree: Tree, name: str) -> Any:
    params = tree["parameters"]
    assert name in params, f"parameter {name} is not declared"
    assert "default" in params[name], f"parameter {name} has no default"
    return params[name]["default"]


def functions_called(node: Any) -> set[str]:
    return {
        v["function"]["type"]
        for v in walk(node)
        if isinstance(v, dict) and isinstance(v.get("function"), dict)
    }


def app_settings() -> dict[str, Any]:
    site = only(template("modules/functionapp.bicep"), "Microsoft.Web/sites")["body"]
    settings = site["properties"]["siteConfig"]["appSettings"]
    names = [s["name"] for s in settings]
    assert len(names) == len(set(names)), "duplicate app settings"
    return {s["name"]: s["value"] for s in settings}


# ---------------------------------------------------------------- parsing and wiring


def test_every_bicep_file_parses_with_pycep() -> None:
    files = bicep_files()
    names = {p.relative_to(INFRA).as_posix() for p in files}
    assert {"main.bicep", "modules/storage.bicep", "modules/functionapp.bicep"} <= names
    for path in files:
        tree = parse(path)
        assert tree.get("resources") or tree.get("modules"), f"{path} declares nothing"


def test_main_uses_every_module_and_only_existing_ones() -> None:
    main = template("main.bicep")
    used = {m["detail"]["path"] for m in main["modules"].values()}
    on_disk = {p.relative_to(INFRA).as_posix() for p in MODULES.glob("*.bicep")}
    assert used == on_disk


def test_module_calls_pass_known_params_and_every_required_one() -> None:
    main = template("main.bicep")
    for symbol, module in main["modules"].items():
        declared = parse(INFRA / module["detail"]["path"])["parameters"]
        passed = set(unwrap(module["config"])[0]["params"])
        unknown = passed - set(declared)
        assert not unknown, f"module {symbol} passes undeclared params {unknown}"
        required = {name for name, p in declared.items() if not has_default(p)}
        assert required <= passed, f"module {symbol} misses {required - passed}"


def test_every_name_derives_from_the_prefix() -> None:
    main = template("main.bicep")
    names = main["variables"]["names"]["value"]
    for key, value in names.items():
        if not isinstance(value, str):  # take('${prefix}st${suffix}', 24)
            value = value["function"]["parameters"]["original_value"]
        assert value.startswith("${cleanPrefix}"), f"name {key} does not start with the prefix"
    # cleanPrefix is the prefix, lower-cased, without the characters storage names forbid.
    clean = main["variables"]["cleanPrefix"]["value"]
    assert clean["function"]["type"] == "to_lower"
    # The storage name is prefix + 'st' + 6-char suffix and must stay within 24 characters.
    assert decorators(main["parameters"]["prefix"])["max_length"] + 2 + 6 <= 24


def test_outputs_expose_app_url_and_storage_account() -> None:
    outputs = template("main.bicep")["outputs"]
    assert outputs["AZURE_FUNCTION_APP_URL"]["value"].startswith("https://")
    assert "functionApp.outputs.defaultHostName" in outputs["AZURE_FUNCTION_APP_URL"]["value"]
    assert dotted(outputs["AZURE_STORAGE_ACCOUNT_NAME"]["value"]) == "storage.outputs.name"


# ---------------------------------------------------------------- storage


def test_storage_account_is_locked_down() -> None:
    account = only(template("modules/storage.bicep"), "Microsoft.Storage/storageAccounts")
    props = account["body"]["properties"]
    assert props["allowBlobPublicAccess"] is False
    assert props["allowSharedKeyAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["defaultToOAuthAuthentication"] is True
    assert props["encryption"]["requireInfrastructureEncryption"] is True


def test_containers_include_the_contract_ones_and_are_private() -> None:
    storage = template("modules/storage.bicep")
    assert storage["variables"]["dataContainers"]["value"] == [
        "raw",
        "curated",
        "quarantine",
        "models",
    ]
    concat = storage["variables"]["allContainers"]["value"]["function"]["parameters"]
    assert concat["arg_1"] == "dataContainers"
    assert "deploymentContainerName" in concat["arg_2"]
    containers = resources(storage, "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert set(containers) == {"containers", "decisionContainer"}
    loop = containers["containers"]
    assert loop["config"]["loop_type"]["detail"]["array_name"] == "allContainers"
    assert all(c["body"]["properties"]["publicAccess"] == "None" for c in containers.values())


def test_the_decision_audit_container_keeps_every_record_immutable_but_appendable() -> None:
    """Issue 19 #5: an append-only container with a time-based retention policy; the API
    writes append blobs (blobflow/audit.py), so protected append writes are allowed."""
    storage = template("modules/storage.bicep")
    container = resources(storage, "Microsoft.Storage/storageAccounts/blobServices/containers")[
        "decisionContainer"
    ]
    assert container["body"]["name"] == "decisionContainerName"
    assert param_default(storage, "decisionContainerName") == "decisions"
    policy = only(
        storage, "Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies"
    )
    assert policy["body"]["parent"] == "decisionContainer" and policy["body"]["name"] == "default"
    props = policy["body"]["properties"]
    assert props["allowProtectedAppendWrites"] is True
    assert "allowProtectedAppendWritesAll" not in props  # block blobs stay fully immutable
    days = param_default(storage, props["immutabilityPeriodSinceCreationInDays"])
    assert days >= 5 * 365  # records outlive the complaint window
    # Lifecycle rules never expire anything in the audit container.
    rules = only(storage, "Microsoft.Storage/storageAccounts/managementPolicies")["body"]
    for rule in rules["properties"]["policy"]["rules"]:
        assert not any("decision" in p for p in rule["definition"]["filters"]["prefixMatch"])
    main = template("main.bicep")
    assert main["variables"]["decisionContainerName"]["value"] == "decisions"
    assert main["outputs"]["DECISION_LOG_CONTAINER"]["value"] == "decisionContainerName"


def test_a_locked_retention_policy_is_left_alone_by_later_deployments() -> None:
    """Create-or-update applies only to an unlocked immutability policy; a locked one only
    accepts an extension. Once an operator locks the policy (infra/README.md), the next
    `azd up` would send the unchanged policy again and be refused, so the deployment stops
    declaring it when DECISION_RETENTION_LOCKED is true (default false: declared)."""
    storage = template("modules/storage.bicep")
    policy = only(
        storage, "Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies"
    )
    assert policy["condition"] == {
        "operator": {"type": "not", "operands": {"bool_value": "decisionRetentionLocked"}}
    }
    assert param_default(storage, "decisionRetentionLocked") is False
    main = template("main.bicep")
    assert param_default(main, "decisionRetentionLocked") is False
    assert (
        unwrap(main["modules"]["storage"]["config"])[0]["params"]["decisionRetentionLocked"]
        == "decisionRetentionLocked"
    )
    assert bicepparam_values()["decisionRetentionLocked"] == {
        "operator": {
            "type": "equals",
            "operands": {"operand_1": "env:DECISION_RETENTION_LOCKED", "operand_2": "true"},
        }
    }
    assert "DECISION_RETENTION_LOCKED" in (INFRA / "README.md").read_text()


def test_only_the_function_writes_and_only_an_auditor_reads_the_decisions() -> None:
    tree = template("modules/roles.bicep")
    container_type = "Microsoft.Storage/storageAccounts/blobServices/containers"
    by_principal: dict[str, set[str]] = {}
    for symbol, assignment in role_assignments().items():
        scope = tree["resources"][assignment["body"]["scope"]]
        if scope["type"] != container_type or scope["config"]["name"] != "decisionContainerName":
            continue
        principal = assignment["body"]["properties"]["principalId"]
        by_principal.setdefault(principal, set()).update(role_ids(assignment, tree))
        if principal == "auditorPrincipalId":
            assert assignment["condition"] is not None, symbol  # only when an id is given
    assert by_principal == {
        "functionPrincipalId": {BLOB_DATA_CONTRIBUTOR},
        "auditorPrincipalId": {BLOB_DATA_READER},
    }


def test_versioning_and_soft_delete_with_long_retention_for_models_and_curated() -> None:
    storage = template("modules/storage.bicep")
    blob = only(storage, "Microsoft.Storage/storageAccounts/blobServices")["body"]["properties"]
    assert blob["isVersioningEnabled"] is True
    assert blob["deleteRetentionPolicy"]["enabled"] is True
    assert blob["containerDeleteRetentionPolicy"]["enabled"] is True
    assert param_default(storage, blob["deleteRetentionPolicy"]["days"]) >= 7

    policy = only(storage, "Microsoft.Storage/storageAccounts/managementPolicies")["body"]
    rules = {r["name"]: r["definition"] for r in policy["properties"]["policy"]["rules"]}
    protected = rules["keep-protected-versions"]
    assert set(protected["filters"]["prefixMatch"]) == {"models/", "curated/"}
    keep_days = protected["actions"]["version"]["delete"]["daysAfterCreationGreaterThan"]
    assert param_default(storage, keep_days) >= 30
    # Versions elsewhere are expired fast, and never under models/ or curated/.
    other = rules["expire-other-versions"]["filters"]["prefixMatch"]
    assert not any(p.startswith(("models", "curated")) for p in other)


def test_old_raw_data_moves_to_cool_storage() -> None:
    storage = template("modules/storage.bicep")
    policy = only(storage, "Microsoft.Storage/storageAccounts/managementPolicies")["body"]
    rules = {r["name"]: r["definition"] for r in policy["properties"]["policy"]["rules"]}
    raw = rules["raw-to-cool"]
    assert raw["filters"]["prefixMatch"] == ["raw/"]
    days = raw["actions"]["baseBlob"]["tierToCool"]["daysAfterModificationGreaterThan"]
    assert 1 <= param_default(storage, days) <= 90


# ---------------------------------------------------------------- function app


def test_plan_is_flex_consumption_on_linux() -> None:
    plan = only(template("modules/functionapp.bicep"), "Microsoft.Web/serverfarms")["body"]
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True


def test_site_runs_python_311_over_https_with_a_warm_http_instance() -> None:
    tree = template("modules/functionapp.bicep")
    site = only(tree, "Microsoft.Web/sites")["body"]
    props = site["properties"]
    assert "linux" in site["kind"]
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert props["siteConfig"]["ftpsState"] == "Disabled"
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    scale = config["scaleAndConcurrency"]
    always_ready = {a["name"]: a["instanceCount"] for a in scale["alwaysReady"]}
    assert param_default(tree, always_ready["http"]) >= 1
    assert param_default(template("main.bicep"), "httpAlwaysReadyInstances") >= 1


def test_maximum_instance_count_is_valid_everywhere_and_documented_as_per_group() -> None:
    """Issue 13 item 3: 3 was below the minimum (40) Flex Consumption accepted outside a few
    preview regions. Microsoft's current page says 1, a docs PR said 40 in practice, and the
    REST spec (azure-rest-api-specs PR 45083) defines the value as on-demand instances *per
    function group*: 40 is valid under every reading, and the spend ceiling is enforced by
    the cost guard instead (infra/README.md)."""
    for name in ("modules/functionapp.bicep", "main.bicep"):
        tree = template(name)
        assert param_default(tree, "maximumInstanceCount") == 40
        assert (
            "per function group"
            in decorators(tree["parameters"]["maximumInstanceCount"])["description"]
        )
    assert bicepparam_values()["maximumInstanceCount"] >= 40


def test_site_runs_as_the_user_assigned_identity_only() -> None:
    tree = template("modules/functionapp.bicep")
    site = only(tree, "Microsoft.Web/sites")["body"]
    assert site["identity"]["type"] == "UserAssigned"
    assert list(site["identity"]["userAssignedIdentities"]) == ["'${identityId}'"]
    auth = site["properties"]["functionAppConfig"]["deployment"]["storage"]["authentication"]
    assert auth == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }
    main = template("main.bicep")
    params = unwrap(main["modules"]["functionApp"]["config"])[0]["params"]
    assert dotted(params["identityId"]) == "functionIdentity.id"
    assert dotted(params["identityClientId"]) == "functionIdentity.properties.clientId"
    identity = main["resources"]["functionIdentity"]
    assert identity["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities"


def test_basic_auth_publishing_is_off() -> None:
    tree = template("modules/functionapp.bicep")
    policies = resources(tree, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {p["body"]["name"]: p["body"]["properties"]["allow"] for p in policies.values()} == {
        "ftp": False,
        "scm": False,
    }


def test_app_settings_use_identity_based_connections() -> None:
    settings = app_settings()
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    for service in ("blob", "queue", "table"):
        assert settings[f"AzureWebJobsStorage__{service}ServiceUri"] == f"{service}Endpoint"
    assert settings["MODEL_CONTAINER"] == "models"
    assert settings["MODEL_NAME"] == "modelName"
    # The audit trail is on in Azure: the container the storage module creates.
    assert settings["DECISION_LOG_CONTAINER"] == "decisionLogContainer"
    (call,) = [
        unwrap(m["config"])[0]
        for m in template("main.bicep")["modules"].values()
        if m["detail"]["path"] == "modules/functionapp.bicep"
    ]
    assert dotted(call["params"]["decisionLogContainer"]) == "storage.outputs.decisionContainerName"
    assert param_default(template("modules/functionapp.bicep"), "modelName") == "current"
    assert settings["BLOB_TRIGGER_SOURCE"] == "EventGrid"
    assert "Authorization=AAD" in settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
    assert "${identityClientId}" in settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]


def test_app_settings_hold_no_connection_strings_keys_or_flex_deprecated_settings() -> None:
    settings = app_settings()
    forbidden = {
        "AzureWebJobsStorage",  # a connection string; the identity-based form is split up
        "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
        "WEBSITE_CONTENTSHARE",
        "WEBSITE_RUN_FROM_PACKAGE",
        "FUNCTIONS_WORKER_RUNTIME",
        "FUNCTIONS_EXTENSION_VERSION",
    }
    assert not forbidden & set(settings)
    for name, value in settings.items():
        assert not functions_called(value) & {"list_keys", "list_account_sas"}, name
        text = str(value)
        assert "AccountKey=" not in text and "SharedAccessSignature=" not in text, name


def test_no_template_reads_keys_and_only_the_cost_guard_reads_a_callback_url() -> None:
    """No template reads storage or function keys (the blobs_extension key reaches
    blob-subscription.bicep as a secure parameter); the one list* call is the Logic App
    trigger URL the cost guard's action group must be given, never an output."""
    seen = []
    for path in bicep_files():
        tree = parse(path)
        assert not functions_called(tree) & {"list_keys", "list_account_sas", "list_service_sas"}
        for value in walk(tree):
            if isinstance(value, str):
                assert "listKeys(" not in value, path.name
            function = value.get("function") if isinstance(value, dict) else None
            if isinstance(function, dict) and function["type"] == "list_func":
                seen.append((path.name, function["parameters"]["func_name"]))
        for name, output in tree.get("outputs", {}).items():
            assert "list" not in str(output["value"]).lower(), f"{path.name} output {name}"
    assert seen == [("costguard.bicep", "listCallbackUrl")]


# ---------------------------------------------------------------- roles


def role_assignments() -> dict[str, Tree]:
    return resources(template("modules/roles.bicep"), "Microsoft.Authorization/roleAssignments")


def role_ids(assignment: Tree, tree: Tree) -> set[str]:
    """Resolve roleDefinitionId (via roleIds.* or a loop over a list of them) to GUIDs."""
    role_vars = tree["variables"]["roleIds"]["value"]
    arg = assignment["body"]["properties"]["roleDefinitionId"]["function"]["parameters"]
    ref = dotted(arg["resource_name_1"])
    if ref.startswith("roleIds."):
        return {role_vars[ref.removeprefix("roleIds.")]}
    loop = assignment["config"]["loop_type"]["detail"]
    assert ref == loop["item_name"]
    listed = tree["variables"][loop["array_name"]]["value"]
    return {role_vars[dotted(item).removeprefix("roleIds.")] for item in listed}


def test_function_identity_gets_storage_data_roles_on_the_account_only() -> None:
    tree = template("modules/roles.bicep")
    storage_roles = role_assignments()["functionStorageAssignments"]
    assert role_ids(storage_roles, tree) == {
        BLOB_DATA_OWNER,
        QUEUE_DATA_CONTRIBUTOR,
        TABLE_DATA_CONTRIBUTOR,
    }
    assert storage_roles["body"]["scope"] == "storageAccount"
    account = tree["resources"]["storageAccount"]
    assert account["type"] == "Microsoft.Storage/storageAccounts" and account["existing"]
    assert storage_roles["body"]["properties"]["principalId"] == "functionPrincipalId"


def test_telemetry_publisher_role_is_scoped_to_app_insights() -> None:
    tree = template("modules/roles.bicep")
    publisher = role_assignments()["functionMetricsPublisher"]
    assert role_ids(publisher, tree) == {METRICS_PUBLISHER}
    assert tree["resources"][publisher["body"]["scope"]]["type"] == "Microsoft.Insights/components"


def test_event_grid_and_operator_roles_are_container_scoped() -> None:
    tree = template("modules/roles.bicep")
    container_type = "Microsoft.Storage/storageAccounts/blobServices/containers"
    for symbol in ("eventGridDeadLetterWriter", "operatorModelsWriter", "operatorRawWriter"):
        assignment = role_assignments()[symbol]
        assert role_ids(assignment, tree) == {BLOB_DATA_CONTRIBUTOR}
        assert tree["resources"][assignment["body"]["scope"]]["type"] == container_type
    for symbol in ("operatorModelsWriter", "operatorRawWriter"):
        assert role_assignments()[symbol]["condition"] is not None  # only when an id is given


def operator_access() -> dict[str, set[str]]:
    """Container name -> roles the optional operator principal gets on it."""
    tree = template("modules/roles.bicep")
    access: dict[str, set[str]] = {}
    for assignment in role_assignments().values():
        if assignment["body"]["properties"]["principalId"] != "operatorPrincipalId":
            continue
        container = tree["resources"][assignment["body"]["scope"]]["config"]["name"]
        access.setdefault(container, set()).update(role_ids(assignment, tree))
    return access


def test_operator_roles_cover_what_the_documented_upload_path_touches() -> None:
    """Issue 13 item 8: `python -m blobflow.upload` writes raw/ (batches) and models/
    (bundles), and `--wait` reads curated/; the operator had roles on raw and models only."""
    access = operator_access()
    assert BLOB_DATA_CONTRIBUTOR in access["raw"]
    assert BLOB_DATA_CONTRIBUTOR in access["models"]
    assert access["curated"] == {BLOB_DATA_READER}
    assert access["quarantine"] == {BLOB_DATA_READER}
    # Nothing wider: no account-level role and no write outside raw/ and models/.
    assert set(access) == {"raw", "models", "curated", "quarantine"}


def test_every_role_assignment_is_resource_scoped_and_never_owner_or_contributor() -> None:
    for path in bicep_files():
        tree = parse(path)
        assignments = resources(tree, "Microsoft.Authorization/roleAssignments")
        for symbol, assignment in assignments.items():
            scope = assignment["body"].get("scope")
            assert scope in tree["resources"], f"{path.name}:{symbol} is not resource-scoped"
        text = path.read_text()
        assert OWNER not in text and CONTRIBUTOR not in text, path.name


# ---------------------------------------------------------------- event grid


def test_blob_trigger_is_fed_by_an_event_grid_subscription_on_raw() -> None:
    tree = template("modules/eventgrid.bicep")
    topic = only(tree, "Microsoft.EventGrid/systemTopics")["body"]
    assert topic["properties"]["topicType"] == "Microsoft.Storage.StorageAccounts"
    assert topic["properties"]["source"] == "storageAccountId"

    sub_tree = template("blob-subscription.bicep")
    sub = only(sub_tree, "Microsoft.EventGrid/systemTopics/eventSubscriptions")
    body = sub["body"]["properties"]
    assert body["destination"]["endpointType"] == "WebHook"
    url = body["destination"]["properties"]["endpointUrl"]
    assert url.startswith(
        "https://${functionApp.properties.defaultHostName}/runtime/webhooks/blobs?"
    )
    assert "functionName=Host.Functions.${functionName}" in url
    assert url.endswith("&code=${blobsExtensionKey}")
    assert body["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    prefix = "/blobServices/default/containers/${watchedContainer}/"
    assert body["filter"]["subjectBeginsWith"].startswith(prefix)
    dead_letter = body["deadLetterWithResourceIdentity"]["deadLetterDestination"]
    assert dead_letter["properties"]["blobContainerName"] == "deadLetterContainerName"


SUBSCRIPTION_TEMPLATES = {
    # template: the parameter that carries the system key its webhook needs
    "blob-subscription.bicep": "blobsExtensionKey",
    "blob-deleted-subscription.bicep": "eventGridExtensionKey",
}


def test_the_subscriptions_are_separate_steps_after_publishing() -> None:
    """Issue 13 item 5: the old second pass redeployed the whole stack (and the site) just to
    add the subscription. Now main.bicep has no subscription and no key; each small template
    takes its key as a secure parameter (kept out of deployment history) and no defaults for
    the function or container, which the hook reads from function_app.py."""
    main_types = {r["type"] for r in template("main.bicep")["resources"].values()}
    for path in bicep_files():
        if path.name not in SUBSCRIPTION_TEMPLATES:
            types = {r["type"] for r in parse(path).get("resources", {}).values()}
            assert "Microsoft.EventGrid/systemTopics/eventSubscriptions" not in types, path
    assert "Microsoft.EventGrid/systemTopics/eventSubscriptions" not in main_types
    for name, key in SUBSCRIPTION_TEMPLATES.items():
        params = template(name)["parameters"]
        assert "secure" in decorators(params[key]), name
        for param in ("functionName", "watchedContainer", key):
            assert not has_default(params[param]), (name, param)
        assert key not in str(template(name).get("outputs")), name
        assert not [p for p in params if p.endswith("Key") and p != key], name
    assert "createBlobEventSubscription" not in template("main.bicep")["parameters"]


def test_deletions_under_raw_go_to_the_event_grid_trigger_with_its_own_key() -> None:
    """Issue 16 item 4: BlobDeleted events reach the Event Grid-triggered function. Its
    webhook is the Event Grid extension's (/runtime/webhooks/eventgrid, the plain function
    name, the eventgrid_extension key), not the blob extension's (/runtime/webhooks/blobs,
    Host.Functions.<name>, blobs_extension)."""
    sub = only(template("blob-deleted-subscription.bicep"), SUBSCRIPTION)["body"]["properties"]
    assert sub["destination"]["endpointType"] == "WebHook"
    url = sub["destination"]["properties"]["endpointUrl"]
    assert url == (
        "https://${functionApp.properties.defaultHostName}/runtime/webhooks/eventgrid?"
        "functionName=${functionName}&code=${eventGridExtensionKey}"
    )
    assert sub["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobDeleted"]
    assert sub["filter"]["subjectBeginsWith"] == (
        "/blobServices/default/containers/${watchedContainer}/blobs/"
    )
    assert sub["eventDeliverySchema"] == "EventGridSchema"  # what EventGridEvent decodes
    dead_letter = sub["deadLetterWithResourceIdentity"]["deadLetterDestination"]
    assert dead_letter["properties"]["blobContainerName"] == "deadLetterContainerName"
    # The two subscriptions differ only where the two extensions differ.
    created = only(template("blob-subscription.bicep"), SUBSCRIPTION)["body"]["properties"]
    assert created["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert created["retryPolicy"] == sub["retryPolicy"]
    assert created["deadLetterWithResourceIdentity"] == sub["deadLetterWithResourceIdentity"]


SUBSCRIPTION = "Microsoft.EventGrid/systemTopics/eventSubscriptions"


# ---------------------------------------------------------------- monitoring and cost


def test_app_insights_sits_on_log_analytics_with_sampling_retention_and_a_cap() -> None:
    tree = template("modules/monitoring.bicep")
    workspace = only(tree, "Microsoft.OperationalInsights/workspaces")["body"]["properties"]
    assert param_default(tree, workspace["retentionInDays"]) <= 31
    assert param_default(tree, workspace["workspaceCapping"]["dailyQuotaGb"]) >= 1
    insights = only(tree, "Microsoft.Insights/components")["body"]["properties"]
    assert dotted(insights["WorkspaceResourceId"]) == "workspace.id"
    assert insights["DisableLocalAuth"] is True
    assert param_default(tree, insights["SamplingPercentage"]) < 100
    assert param_default(template("main.bicep"), "samplingPercentage") < 100


def test_alerts_on_5xx_rate_and_p95_latency_notify_the_action_group() -> None:
    tree = template("modules/monitoring.bicep")
    rules = {
        symbol: rule
        for symbol, rule in resources(tree, "Microsoft.Insights/scheduledQueryRules").items()
        if symbol != "driftAlert"
    }
    assert len(rules) == 2
    by_query: dict[str, Tree] = {}
    for rule in rules.values():
        props = rule["body"]["properties"]
        condition = props["criteria"]["allOf"][0]
        query = tree["variables"][condition["query"]]["value"]
        by_query["5xx" if "resultCode) >= 500" in query else "p95"] = condition
        assert "percentile(duration, 95)" in query or "resultCode) >= 500" in query
        assert [dotted(a) for a in props["actions"]["actionGroups"]] == ["actionGroup.id"]
        assert [dotted(s) for s in props["scopes"]] == ["appInsights.id"]
    assert param_default(tree, by_query["5xx"]["threshold"]) == 5
    assert param_default(tree, by_query["p95"]["threshold"]) == 100
    assert all(c["operator"] == "GreaterThan" for c in by_query.values())


def test_the_drift_alert_fires_on_any_psi_at_or_above_its_threshold() -> None:
    """Issue 18: the blob batch logs each PSI as ``drift_psi {json}`` (blobflow.metrics);
    the alert counts lines whose psi is at or above the threshold they carry, over the logs
    of the existing Application Insights component, and notifies the existing action group."""
    import json

    from blobflow.metrics import DRIFT_METRIC, metric_line

    tree = template("modules/monitoring.bicep")
    rule = resources(tree, "Microsoft.Insights/scheduledQueryRules")["driftAlert"]["body"]
    props = rule["properties"]
    assert rule["kind"] == "LogAlert"
    assert [dotted(s) for s in props["scopes"]] == ["appInsights.id"]
    assert [dotted(a) for a in props["actions"]["actionGroups"]] == ["actionGroup.id"]
    assert props["autoMitigate"] is True and props["enabled"] is True
    (condition,) = props["criteria"]["allOf"]
    assert (condition["timeAggregation"], condition["operator"], condition["threshold"]) == (
        "Count",
        "GreaterThan",
        0,
    )
    frequency = param_default(tree, props["evaluationFrequency"])
    minutes = {"PT15M": 15, "PT30M": 30, "PT1H": 60}
    assert minutes[frequency] <= minutes[props["windowSize"]]  # windows overlap, none skipped

    query = tree["variables"][condition["query"]]["value"]
    lines = [line.strip() for line in query.strip().splitlines()]
    assert lines[0] == "traces"
    # The query's prefix is exactly what the batch writes, and what follows it is the JSON.
    prefix = re.search(r'message startswith "([^"]+)"', query).group(1)
    cut = re.search(r'substring\(message, strlen\("([^"]+)"\)\)', query).group(1)
    record = {"metric": DRIFT_METRIC, "feature": "total_credit", "psi": 0.3, "drifted": True,
              "threshold": 0.25, "rows": 900, "model_version": "2.0.0", "batch": "b1"}  # fmt: skip
    line = metric_line(DRIFT_METRIC, record)
    assert line.startswith(prefix) and line.startswith(cut) and prefix.startswith(cut)
    assert json.loads(line[len(cut) :]) == record
    for field in re.findall(r"record\.(\w+)", query):
        assert field in record, field  # every field the query reads is one the batch writes
    assert "| where psi >= threshold" in lines  # at or above, as drift.json's "drifted"


def test_budget_on_the_resource_group_warns_at_80_and_stops_at_100_percent() -> None:
    main = template("main.bicep")
    assert main["globals"]["scope"]["value"] == "resourceGroup"
    budget = only(main, "Microsoft.Consumption/budgets")["body"]["properties"]
    assert budget["category"] == "Cost"
    assert budget["timeGrain"] == "Monthly"
    assert param_default(main, budget["amount"]) == 500
    notes = {n["thresholdType"] + str(n["threshold"]): n for n in budget["notifications"].values()}
    assert {"Actual80", "Actual100", "Forecasted100"} <= set(notes)
    assert all(n["enabled"] for n in notes.values())
    for notification in notes.values():
        assert notification["contactEmails"] == "alertEmails"
    assert [dotted(g) for g in notes["Actual100"]["contactGroups"]] == [
        "costGuard.outputs.actionGroupId"
    ]
    assert decorators(main["parameters"]["alertEmails"])["min_length"] >= 1


def test_budget_start_date_is_set_once_not_recomputed() -> None:
    """Issue 13 item 2: utcNow('yyyy-MM-01') moved the start date every month, and Cost
    Management refuses to change a budget's start date ("Start date of budgets cannot be
    updated"), so every redeploy in a later month failed. It is now a required parameter,
    read from BUDGET_START_DATE, which the azd hook sets once and keeps."""
    main = template("main.bicep")
    param = main["parameters"]["budgetStartDate"]
    assert not has_default(param)
    assert "utc_now" not in functions_called(main)
    assert "utcNow" not in (INFRA / "main.bicep").read_text()
    budget = only(main, "Microsoft.Consumption/budgets")["body"]["properties"]
    assert budget["timePeriod"] == {"startDate": "budgetStartDate"}
    assert bicepparam_values()["budgetStartDate"] == "env:BUDGET_START_DATE"


# ---------------------------------------------------------------- text-level checks


def test_every_checkov_skip_carries_a_written_reason() -> None:
    """Comments are not in pycep's tree, so this reads the text."""
    skips = []
    for path in bicep_files():
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                match = re.search(r"checkov:skip=(CKV2?_AZURE_\d+):\s*(.+)", line)
                assert match, f"{path.name}: malformed skip: {line.strip()}"
                assert len(match.group(2)) >= 40, f"{path.name}: reason too thin: {line.strip()}"
                skips.append(match.group(1))
    assert len(skips) == len(set(skips)), "a check is skipped twice"


def bicepparam_values() -> dict[str, Any]:
    """Values set in main.bicepparam.

    pycep has no grammar for `using` files or readEnvironmentVariable(), so each
    `param x = <expr>` line becomes `var x = <expr>` with readEnvironmentVariable(...)
    replaced by the string 'env:NAME', and that text is parsed with pycep.
    """
    text = (INFRA / "main.bicepparam").read_text()
    assert re.search(r"^using '\./main\.bicep'$", text, flags=re.M)
    lines = []
    for line in text.splitlines():
        match = re.match(r"^param (\w+) = (.+)$", line)
        if match:
            expr = re.sub(
                r"readEnvironmentVariable\('(\w+)'(?:, '[^']*')?\)", r"'env:\1'", match.group(2)
            )
            lines.append(f"var {match.group(1)} = {expr}")
    tree = BicepParser().parse(text="\n".join(lines) + "\n")
    return {name: var["value"] for name, var in tree["variables"].items()}


def test_bicepparam_sets_only_declared_params_within_their_constraints() -> None:
    main = template("main.bicep")["parameters"]
    values = bicepparam_values()
    assert set(values) <= set(main), f"unknown params {set(values) - set(main)}"
    required = {name for name, p in main.items() if not has_default(p)}
    assert required <= set(values)
    assert values["alertEmails"] == ["env:ALERT_EMAIL"]  # no address is committed
    assert values["location"] == "uksouth"
    assert values["monthlyBudget"] == 500
    for name, value in values.items():
        rules = decorators(main[name])
        if isinstance(value, bool) or not isinstance(value, int | str):
            continue
        if "allowed" in rules:
            assert value in rules["allowed"], name
        if "min_value" in rules:
            assert value >= rules["min_value"], name
        if "max_value" in rules:
            assert value <= rules["max_value"], name
        if "max_length" in rules and isinstance(value, str) and not value.startswith("env:"):
            assert len(value) <= rules["max_length"], name


@pytest.mark.parametrize(
    "name",
    [
        "prefix",
        "alertEmails",
        "monthlyBudget",
        "maximumInstanceCount",
        "budgetStartDate",
        "vnetEnabled",
    ],
)
def test_key_parameters_are_documented(name: str) -> None:
    assert decorators(template("main.bicep")["parameters"][name]).get("description")
