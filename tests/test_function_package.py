"""The deployment package indexes in Azure's conditions (a first `azd up`, issue 18 review).

The package is built as the publish builds it (the checkout minus ``.funcignore``) in a
temporary directory, and ``function_app`` is imported there by a fresh interpreter whose
environment is exactly the app settings ``infra/modules/functionapp.bicep`` declares
(expressions replaced by values of the right shape; no connection string, no ``MODEL_DIR``,
no ``artifacts/``, no network). The worker would then index these functions; an import that
reached for storage, the model or the pipeline at start-up would fail or show here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_infra import app_settings
from test_infra_deploy import funcignore, ignored

import function_app

ROOT = Path(__file__).resolve().parents[1]
# Values for the settings the template computes; literals in the template are used as they are.
COMPUTED = {
    "identityClientId": "00000000-0000-0000-0000-000000000001",
    "blobEndpoint": "https://criskstabc123.blob.core.windows.net/",
    "queueEndpoint": "https://criskstabc123.queue.core.windows.net/",
    "tableEndpoint": "https://criskstabc123.table.core.windows.net/",
    "modelName": "current",
    "decisionLogContainer": "decisions",
    "appInsightsConnectionString": "InstrumentationKey=00000000-0000-0000-0000-000000000002",
}

INDEX = """
import json, sys
import function_app
functions = {f.get_function_name(): json.loads(f.get_function_json())["bindings"]
             for f in function_app.app.get_functions()}
heavy = sorted(m for m in ("pandas", "pyarrow", "sklearn", "matplotlib") if m in sys.modules)
print(json.dumps({"functions": functions, "heavy": heavy}))
"""


def azure_environment() -> dict[str, str]:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    for name, value in app_settings().items():
        if isinstance(value, str) and value in COMPUTED:
            env[name] = COMPUTED[value]
        elif isinstance(value, str) and "${" in value:
            env[name] = value.replace("${identityClientId}", COMPUTED["identityClientId"])
        elif isinstance(value, str):
            env[name] = value
        else:
            raise AssertionError(f"app setting {name} has a value this test cannot stand in for")
    return env


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("package")
    patterns = funcignore()
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT).as_posix()
        if path.is_file() and not ignored(relative, patterns):
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return out


def index_in(package: Path, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", INDEX], cwd=package, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_package_holds_the_app_and_not_the_rest(package: Path) -> None:
    top = {p.name for p in package.iterdir()}
    assert {"function_app.py", "host.json", "requirements.txt"} <= top
    assert {"blobflow", "features", "featurespec", "scoring"} <= top
    assert not top & {"tests", "infra", "artifacts", "data", "node_modules", "benchmarks"}


def test_the_package_indexes_with_the_settings_infra_gives_the_app(package: Path) -> None:
    env = azure_environment()
    assert env["BLOB_TRIGGER_SOURCE"] == "EventGrid" and "AzureWebJobsStorage" not in env
    assert env["DECISION_LOG_CONTAINER"] == "decisions" and "MODEL_DIR" not in env
    indexed = index_in(package, env)
    functions = indexed["functions"]
    assert set(functions) == {
        function_app.HTTP_FUNCTION,
        function_app.BLOB_FUNCTION,
        function_app.DELETED_FUNCTION,
        function_app.RECONCILE_FUNCTION,
    }
    (blob,) = functions[function_app.BLOB_FUNCTION]
    assert blob["type"] == "blobTrigger" and blob["source"] == "EventGrid"
    assert blob["connection"] == "AzureWebJobsStorage"  # the identity-based settings' stem
    assert [b["type"] for b in functions[function_app.DELETED_FUNCTION]] == ["eventGridTrigger"]
    (timer,) = functions[function_app.RECONCILE_FUNCTION]
    assert timer["schedule"] == function_app.RECONCILE_SCHEDULE
    # Indexing loads neither the pipeline nor the model's libraries.
    assert indexed["heavy"] == []


def test_a_wrong_trigger_source_fails_indexing_loudly(package: Path) -> None:
    env = {**azure_environment(), "BLOB_TRIGGER_SOURCE": "EventGrd"}
    done = subprocess.run(
        [sys.executable, "-c", INDEX], cwd=package, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "BLOB_TRIGGER_SOURCE='EventGrd'" in done.stderr
