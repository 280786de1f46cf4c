"""The one-command deployment (azure.yaml and its hooks), the package contents (.funcignore),
the cost guard, private networking and host.json sizing (issue 13, items 4, 5, 6, 9, 11)."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
sys.path.insert(0, str(INFRA / "checks"))

import bicep  # noqa: E402

# Measured: one 2M-row, 147 MB batch read range by range from Azurite peaks at 991 MiB RSS
# for the whole process (blobflow/README.md, "Memory"); importing function_app alone is ~150 MiB.
BATCH_PEAK_MIB = 991
# Flex Consumption adds 272 MB per instance for system and host processes on top of the
# configured size ("Instance sizes", flex-consumption-plan), so the configured memory is
# the worker's; keep 15% of it free for variation between batches.
HEADROOM = 0.85


def tree(name: str) -> dict:
    return bicep.parse(INFRA / name)


def only(name: str, rtype: str) -> bicep.Resource:
    found = [r for r in bicep.resources(INFRA / name) if r.type == rtype]
    assert len(found) == 1, (name, rtype, found)
    return found[0]


# ---------------------------------------------------------------- azure.yaml and hooks


def azure_yaml() -> dict:
    return yaml.safe_load((ROOT / "azure.yaml").read_text())


def test_azure_yaml_provisions_infra_and_publishes_the_function_app() -> None:
    config = azure_yaml()
    assert config["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    assert (INFRA / "main.bicep").is_file() and (INFRA / "main.bicepparam").is_file()
    service = config["services"]["api"]
    assert service == {"project": ".", "language": "python", "host": "function"}
    # azd finds the app to publish by the azd-service-name tag.
    site = only("modules/functionapp.bicep", "Microsoft.Web/sites")
    assert site.body["tags"]["function"]["type"] == "union"
    assert (
        bicep.parse(INFRA / "modules/functionapp.bicep")["parameters"]["azdServiceName"]["default"]
        == "api"
    )


def test_hooks_run_scripts_that_exist_and_parse() -> None:
    hooks = azure_yaml()["hooks"]
    assert set(hooks) == {"preprovision", "postdeploy"}
    for name, hook in hooks.items():
        command = hook["posix"]["run"]
        script = ROOT / command.split()[-1]
        assert script.is_file(), name
        assert hook["posix"]["continueOnError"] is False
        subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)


def test_postdeploy_reads_outputs_main_really_has() -> None:
    """Every AZURE_*/EVENT_GRID_* value the hook needs is an output of main.bicep (azd turns
    outputs into environment values), and the function name is read from function_app.py."""
    outputs = set(tree("main.bicep")["outputs"])
    text = (INFRA / "scripts" / "postdeploy.sh").read_text()
    needed = {
        "AZURE_FUNCTION_APP_NAME", "AZURE_FUNCTION_APP_URL", "AZURE_STORAGE_ACCOUNT_NAME",
        "EVENT_GRID_SYSTEM_TOPIC_NAME", "EVENT_GRID_IDENTITY_ID", "DEAD_LETTER_CONTAINER",
    }  # fmt: skip
    for name in needed:
        assert name in text and name in outputs, name
    assert "blob_function_name" in text and "process_batch_blob" not in text
    assert "deleted_function_name" in text and "batch_input_deleted" not in text
    for template in ("blob-subscription.bicep", "blob-deleted-subscription.bicep"):
        assert template in text and (INFRA / template).is_file()


def run_lib(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f'source "{INFRA / "scripts" / "lib.sh"}" && {command}'],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_budget_start_date_helpers() -> None:
    today = run_lib("first_of_this_month_utc").stdout.strip()
    assert run_lib(f"valid_budget_start {today}").returncode == 0
    for bad in ("2026-11-30", "2026-13-01", "26-11-01", ""):
        assert run_lib(f"valid_budget_start '{bad}'").returncode != 0, bad


def test_operator_ip_ranges_helper() -> None:
    assert run_lib("valid_ip_ranges '203.0.113.7,198.51.100.0/24'").returncode == 0
    for bad in ("203.0.113.7/32", "203.0.113.0/31", "example.com", "203.0.113"):
        assert run_lib(f"valid_ip_ranges '{bad}'").returncode != 0, bad


def test_a_renamed_function_is_followed_by_the_hook(tmp_path: Path) -> None:
    """The name is read, not copied: a different function_app.py gives a different name."""
    (tmp_path / "function_app.py").write_text(
        'BLOB_FUNCTION = "ingest_batches"\nBLOB_TRIGGER_PATH = "landing/{name}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", f'CRISK_ROOT="{tmp_path}" && source "{INFRA / "scripts" / "lib.sh"}"'
         " && blob_function_name && blob_container_name"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert done.stdout.split() == ["ingest_batches", "landing"]


# ---------------------------------------------------------------- .funcignore


def ignored(path: str, patterns: list[str]) -> bool:
    """gitignore-style matching for the patterns .funcignore uses."""
    parts = path.split("/")
    for pattern in patterns:
        if pattern.endswith("/"):
            if pattern.rstrip("/") in parts[:-1] or (
                "/" in pattern.rstrip("/") and path.startswith(pattern)
            ):
                return True
        elif "/" in pattern:
            if fnmatch.fnmatch(path, pattern):
                return True
        elif any(fnmatch.fnmatch(part, pattern) for part in parts):
            return True
    return False


def funcignore() -> list[str]:
    lines = (ROOT / ".funcignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_funcignore_leaves_out_everything_the_app_does_not_run() -> None:
    """Item 9: without .funcignore the package carried node_modules/, tests/, benchmarks/ and
    generated data."""
    patterns = funcignore()
    for path in ("node_modules/azurite/package.json", "tests/test_infra.py",
                 "benchmarks/bench_api.py", "data/transactions.csv", "artifacts/model.joblib",
                 "infra/main.bicep", ".ci/run", "local.settings.json", ".venv/bin/python",
                 "features/__pycache__/x.pyc", ".git/HEAD"):  # fmt: skip
        assert ignored(path, patterns), path


def test_funcignore_keeps_every_module_the_app_imports() -> None:
    code = (
        "import json, sys, function_app\n"
        f"root = {str(ROOT)!r}\n"
        "files = sorted({m.__file__[len(root) + 1:] for m in list(sys.modules.values())\n"
        "    if getattr(m, '__file__', None) and m.__file__.startswith(root + '/')})\n"
        "print(json.dumps(files))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
        check=True,
    )  # fmt: skip
    files = json.loads(done.stdout.strip().splitlines()[-1])
    assert "function_app.py" in files and any(f.startswith("scoring/") for f in files)
    patterns = funcignore()
    for path in [*files, "host.json", "requirements.txt", "features/lexicon.json"]:
        assert not ignored(path, patterns), path


# ---------------------------------------------------------------- host.json and memory


def test_one_batch_per_instance_fits_the_smallest_instance() -> None:
    """Item 6: maxDegreeOfParallelism 4 on 2,048 MB meant up to 4 x 991 MiB of batches on one
    instance. Concurrency x peak must fit the smallest memory size the template allows."""
    host = json.loads((ROOT / "host.json").read_text())
    per_instance = host["extensions"]["blobs"]["maxDegreeOfParallelism"]
    allowed = bicep.parse(INFRA / "modules/functionapp.bicep")["parameters"]["instanceMemoryMB"]
    sizes = next(d["argument"] for d in allowed["decorators"] if d.get("type") == "allowed")
    assert 512 not in sizes
    assert per_instance * BATCH_PEAK_MIB <= min(sizes) * HEADROOM
    assert per_instance >= 1


def effective_level(levels: dict[str, str], category: str) -> str:
    """The host's rule: the longest configured category the log's category starts with."""
    parts = category.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in levels:
            return levels[".".join(parts[:n])]
    return levels["default"]


def test_no_drift_line_is_sampled_away_and_http_requests_add_no_traces() -> None:
    """The drift alert counts log lines (traces): adaptive sampling must not drop them, so
    traces are excluded from it. That is affordable because the HTTP function's per-request
    "Executing"/"Executed" traces (category Function.<name>) are turned off (its requests
    are in the requests table anyway); user logs of every function stay at Information."""
    import function_app

    logging_ = json.loads((ROOT / "host.json").read_text())["logging"]
    sampling = logging_["applicationInsights"]["samplingSettings"]
    assert {"Request", "Exception", "Trace"} <= set(sampling["excludedTypes"].split(";"))
    levels = logging_["logLevel"]
    http = function_app.HTTP_FUNCTION
    assert effective_level(levels, f"Function.{http}") == "Warning"
    for name in (http, function_app.BLOB_FUNCTION, function_app.DELETED_FUNCTION,
                 function_app.RECONCILE_FUNCTION):  # fmt: skip
        assert effective_level(levels, f"Function.{name}.User") == "Information", name
    for name in (function_app.BLOB_FUNCTION, function_app.DELETED_FUNCTION):
        assert effective_level(levels, f"Function.{name}") == "Information", name
    assert effective_level(levels, "Host.Results") == "Information"  # the requests table
    # Only configured function names: a renamed function must not leave a stale category.
    from conftest import function_handlers

    indexed = set(function_handlers())
    named = {k.split(".")[1] for k in levels if k.startswith("Function.") and k != "Function"}
    assert named <= indexed


# ---------------------------------------------------------------- cost guard


def test_cost_guard_stops_the_app_on_each_billing_meter() -> None:
    """Item 4: a budget only notifies. The guard's metric alerts and the budget's 100% actual
    notification call an action group whose Logic App stops the app."""
    guard = tree("modules/costguard.bicep")
    guards = guard["variables"]["guards"]["value"]
    assert {g["metric"] for g in guards} == {
        "OnDemandFunctionExecutionUnits",
        "OnDemandFunctionExecutionCount",
        "AlwaysReadyFunctionExecutionCount",
    }
    alerts = only("modules/costguard.bicep", "Microsoft.Insights/metricAlerts")
    assert alerts.loop["detail"]["array_name"] == "guards"
    props = alerts.body["properties"]
    assert props["windowSize"] == "PT1H" and props["evaluationFrequency"] == "PT5M"
    assert props["autoMitigate"] is False
    criterion = props["criteria"]["allOf"][0]
    assert criterion["timeAggregation"] == "Total" and criterion["operator"] == "GreaterThan"
    group = only("modules/costguard.bicep", "Microsoft.Insights/actionGroups").body
    receiver = group["properties"]["logicAppReceivers"][0]
    assert receiver["resourceId"]["operator"]["operands"]["operand_1"] == "stopper"
    workflow = only("modules/costguard.bicep", "Microsoft.Logic/workflows").body
    action = workflow["properties"]["definition"]["actions"]["stop_function_app"]
    assert action["inputs"]["method"] == "POST"
    assert "/stop?api-version=" in action["inputs"]["uri"]
    assert action["inputs"]["authentication"]["type"] == "ManagedServiceIdentity"
    assignment = only("modules/costguard.bicep", "Microsoft.Authorization/roleAssignments")
    assert assignment.body["scope"] == "functionApp"  # this one app, nothing wider


def test_guard_thresholds_match_the_cost_table() -> None:
    values = {
        name: p["default"]
        for name, p in tree("main.bicep")["parameters"].items()
        if name.startswith("costGuard")
    }
    assert values == {
        "costGuardOnDemandGbSecondsPerHour": 10000,
        "costGuardOnDemandExecutionsPerHour": 50000,
        "costGuardAlwaysReadyExecutionsPerHour": 150000,
    }
    readme = (INFRA / "README.md").read_text()
    for figure in ("10,000 GB-s", "50,000", "150,000"):
        assert figure in readme, figure


# ---------------------------------------------------------------- private networking


def test_private_networking_is_on_by_default_and_wired() -> None:
    """Item 11: VNet integration for the app, private endpoints (and privatelink DNS zones)
    for blob, queue and table; storage denies the internet except the operators' IPs."""
    main = tree("main.bicep")
    assert main["parameters"]["vnetEnabled"]["default"] is True
    network_module = main["modules"]["network"]
    assert bicep.unwrap(network_module["config"])[1] == "vnetEnabled"
    network = tree("modules/network.bicep")
    assert network["variables"]["storageServices"]["value"] == ["blob", "queue", "table"]
    vnet = only("modules/network.bicep", "Microsoft.Network/virtualNetworks").body
    app_subnet = vnet["properties"]["subnets"][0]["properties"]
    assert app_subnet["delegations"][0]["properties"]["serviceName"] == (
        "Microsoft.App/environments"
    )
    account = only("modules/storage.bicep", "Microsoft.Storage/storageAccounts").body
    acls = account["properties"]["networkAcls"]
    assert acls["defaultAction"]["operator"]["operands"]["true_value"] == "Deny"
    assert acls["bypass"] == "AzureServices"  # Event Grid dead-lettering with its identity
    assert acls["ipRules"]["loop_type"]["detail"]["array_name"] == "operatorIpRanges"
    site = only("modules/functionapp.bicep", "Microsoft.Web/sites").body
    assert "virtualNetworkSubnetId" in site["properties"]


STUB_AZ = """#!/usr/bin/env bash
# Records each call; answers the questions the hook asks. A system key is missing for the
# first $KEY_DELAY lookups of it (the host makes it after the publish), and $NO_KEY names one
# that never appears.
printf '%s\\n' "$*" >> "$CALLS"
case "$*" in
  "functionapp keys list"*)
    name=$(printf '%s' "$*" | sed -n 's/.*--query systemKeys\\.\\([a-z_]*\\).*/\\1/p')
    seen=$(cat "$COUNTER.$name" 2>/dev/null || echo 0)
    echo $((seen + 1)) > "$COUNTER.$name"
    [ "$name" = "$NO_KEY" ] && exit 0
    [ "$seen" -ge "${KEY_DELAY:-0}" ] && echo "$name-value"
    ;;
  "storage blob upload "*)
    [ -z "$REFUSE_UPLOADS" ] && exit 0
    refused=$(cat "$COUNTER" 2>/dev/null || echo 0)
    echo $((refused + 1)) > "$COUNTER"
    [ "$refused" -ge "$REFUSE_UPLOADS" ] || exit 1
    ;;
esac
exit 0
"""


def run_postdeploy(
    tmp_path: Path, refuse_uploads: int = 0, key_delay: int = 0, no_key: str = ""
) -> tuple[int, list[str]]:
    """The real hook with `az` and `curl` replaced by recorders on PATH (no cloud, no network)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, body in (("az", STUB_AZ), ("curl", "#!/usr/bin/env bash\nexit 0\n")):
        (bin_dir / tool).write_text(body)
        (bin_dir / tool).chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "CALLS": str(calls),
        "COUNTER": str(tmp_path / "refused"),
        "REFUSE_UPLOADS": str(refuse_uploads) if refuse_uploads else "",
        "KEY_DELAY": str(key_delay),
        "NO_KEY": no_key,
        "CRISK_RETRY_SECONDS": "0",
        "AZURE_RESOURCE_GROUP": "rg-test",
        "AZURE_FUNCTION_APP_NAME": "crisk-func-abc123",
        "AZURE_FUNCTION_APP_URL": "https://crisk-func-abc123.azurewebsites.net",
        "AZURE_STORAGE_ACCOUNT_NAME": "criskstabc123",
        "EVENT_GRID_SYSTEM_TOPIC_NAME": "crisk-evgt-abc123",
        "EVENT_GRID_IDENTITY_ID": "/subscriptions/x/identity",
        "DEAD_LETTER_CONTAINER": "eventgrid-deadletter",
        "MODEL_NAME": "current",
    }
    done = subprocess.run(
        ["bash", str(INFRA / "scripts" / "postdeploy.sh")],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done.returncode, calls.read_text().splitlines() if calls.exists() else []


def test_postdeploy_uploads_the_whole_bundle_manifest_last_then_subscribes(
    tmp_path: Path,
) -> None:
    code, calls = run_postdeploy(tmp_path)
    assert code == 0, calls
    uploads = [c for c in calls if c.startswith("storage blob upload ")]
    names = [re.search(r"--name current/(\S+)", c).group(1) for c in uploads]
    bundle = {p.name for p in (ROOT / "artifacts" / "trained").iterdir() if p.is_file()}
    # Every file the bundle holds (linear.json and reference.json included, or blob-served
    # models fall back to unpickling), each once, and the manifest last.
    assert sorted(names) == sorted(bundle) and names[-1] == "model.json"
    assert {"linear.json", "reference.json", "model.joblib"} <= set(names)
    assert all("--auth-mode login" in c for c in uploads)
    subscribe = [c for c in calls if c.startswith("deployment group create")]
    assert len(subscribe) == 2
    created, deleted = subscribe
    # Uploads feed the blob trigger through the blob extension, with its key...
    assert "infra/blob-subscription.bicep" in created
    assert "blobsExtensionKey=blobs_extension-value" in created
    assert "functionName=process_batch_blob" in created and "watchedContainer=raw" in created
    # ...deletions the Event Grid trigger, with the Event Grid extension's key.
    assert "infra/blob-deleted-subscription.bicep" in deleted
    assert "eventGridExtensionKey=eventgrid_extension-value" in deleted
    assert "functionName=batch_input_deleted" in deleted and "watchedContainer=raw" in deleted
    assert "blobs_extension" not in deleted and "eventgrid_extension" not in created
    assert calls.index(created) > calls.index(uploads[-1])


def test_postdeploy_retries_a_refused_upload_from_the_start(tmp_path: Path) -> None:
    code, calls = run_postdeploy(tmp_path, refuse_uploads=1)
    assert code == 0
    uploads = [c for c in calls if c.startswith("storage blob upload ")]
    # The first attempt fails at its first file; the retry uploads the whole bundle.
    assert len(uploads) == 1 + len(list((ROOT / "artifacts" / "trained").glob("*")))
    assert uploads[-1].split("--name ")[1].startswith("current/model.json")


def test_postdeploy_waits_for_each_system_key(tmp_path: Path) -> None:
    """The host creates its system keys only after the publish: each is polled for."""
    code, calls = run_postdeploy(tmp_path, key_delay=3)
    assert code == 0, calls
    lookups = [c for c in calls if c.startswith("functionapp keys list")]
    for name in ("blobs_extension", "eventgrid_extension"):
        assert sum(f"systemKeys.{name}" in c for c in lookups) == 4, name
    assert len([c for c in calls if c.startswith("deployment group create")]) == 2


def test_postdeploy_fails_when_the_event_grid_key_never_appears(tmp_path: Path) -> None:
    code, calls = run_postdeploy(tmp_path, no_key="eventgrid_extension")
    assert code != 0
    deployments = [c for c in calls if c.startswith("deployment group create")]
    assert len(deployments) == 1 and "blob-subscription.bicep" in deployments[0]
    assert sum("systemKeys.eventgrid_extension" in c for c in calls) == 30


def test_the_deletion_function_name_is_read_from_function_app(tmp_path: Path) -> None:
    (tmp_path / "function_app.py").write_text(
        'BLOB_FUNCTION = "ingest"\nBLOB_TRIGGER_PATH = "landing/{name}"\n'
        'DELETED_FUNCTION = "ingest_deleted"\n'
    )
    done = subprocess.run(
        ["bash", "-c", f'CRISK_ROOT="{tmp_path}" && source "{INFRA / "scripts" / "lib.sh"}"'
         " && deleted_function_name"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert done.stdout.split() == ["ingest_deleted"]
    import function_app

    assert run_lib("deleted_function_name").stdout.strip() == function_app.DELETED_FUNCTION
