"""Every shell command in README.md is run here or by CI, so the docs cannot rot silently.

Each command in a ```bash block must match one rule below. "run" rules execute the
command (benchmarks at a reduced size, by substituting their size arguments); "ci" is the
test command, which .ci/run must contain verbatim; "azure" commands need the Functions
Core Tools or an Azure subscription, which CI does not have, so the test checks what they
refer to exists.

Commands run in a temporary copy of the checkout (``checkout``), and the API the quickstart
starts listens on a free port instead of 8000, so the suite leaves the checkout as it
found it and can run beside anything else.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest

from benchmarks.load_test import free_port

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_commands() -> list[str]:
    """Commands in ```bash blocks: continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


COMMANDS = readme_commands()

RULES: dict[str, str] = {
    r"^python -m pip install -r requirements\.txt && python -m features": "quickstart",
    r"^python -m pip install -r requirements-dev\.txt": "ci",
    r"^curl -s -X POST http://127\.0\.0\.1:8000/predict": "quickstart",
    r"^npx azurite ": "azurite",
    r"^cp local\.settings\.example\.json local\.settings\.json$": "settings",
    r"^export AzureWebJobsStorage=UseDevelopmentStorage=true$": "settings",
    r"^python -m blobflow\.upload ": "upload",
    r"^func start$": "azure",
    r"^curl .*localhost:7071/api/predict": "azure",
    r"^az ": "azure",
    r"^azd ": "azure",
    r"^func azure functionapp publish": "azure",
    r"^python -m features --transactions": "pipeline",
    r"^python -m features\.incremental (add|build) ": "incremental",
    r"^python -m features\.synthetic .*&& python -m features .*&& python -m features\.eda": "eda",
    r"^python -m benchmarks\.": "benchmark",
}


def kind(command: str) -> str | None:
    return next((k for pattern, k in RULES.items() if re.search(pattern, command)), None)


def matching(kind_name: str) -> list[str]:
    return [c for c in COMMANDS if kind(c) == kind_name]


def test_every_readme_command_is_covered() -> None:
    assert COMMANDS, "README has no bash commands?"
    unknown = [c for c in COMMANDS if kind(c) is None]
    assert unknown == [], "add a rule (and a test) for these README commands"


def test_readme_stays_short_and_its_links_resolve() -> None:
    """The front door stays short (details live beside the code) and every relative link
    in it points at a file that exists."""
    assert len(README.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#\s]+)[^)]*\)", README)
    local = [link for link in links if "://" not in link]
    assert local, "README links to no file?"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert missing == []


def test_ci_runs_the_readme_test_command() -> None:
    (test_command,) = matching("ci")
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_azure_commands_refer_to_files_that_exist() -> None:
    for command in matching("azure"):
        for path in re.findall(r"(infra/[\w./-]+|artifacts/[\w./-]+)", command):
            assert (ROOT / path).exists(), (command, path)
    assert json.loads((ROOT / "host.json").read_text())["version"] == "2.0"
    assert "azurite" in json.loads((ROOT / "package.json").read_text())["devDependencies"]


def test_local_settings_example_matches_the_docs() -> None:
    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    exports = [c.removeprefix("export ") for c in matching("settings") if c.startswith("export")]
    exported = dict(e.split("=", 1) for e in exports)
    assert exported
    for name, value in exported.items():
        assert values[name] == value


# Not copied: version control, installed packages, caches, generated benchmark data.
NOT_COPIED = {".git", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}


def _not_copied(directory: str, names: Iterable[str]) -> set[str]:
    skip = {n for n in names if n in NOT_COPIED}
    if Path(directory) == ROOT / "benchmarks":
        skip.add("data")
    return skip


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout the README's commands run in (they write artifacts/)."""
    copy = tmp_path_factory.mktemp("checkout") / "repo"
    shutil.copytree(ROOT, copy, ignore=_not_copied, symlinks=True)
    return copy


def run(command: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run(
        command, shell=True, cwd=cwd, env={**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def test_pipeline_command_writes_the_training_set(checkout: Path) -> None:
    for command in matching("pipeline"):
        run(command, checkout)
        assert (checkout / "artifacts" / "training_set.csv").read_text().startswith("customer_id,")


def test_incremental_commands_build_what_one_run_writes(checkout: Path, tmp_path: Path) -> None:
    """The README's add + build on the bundled data give the features one run gives."""
    commands = matching("incremental")
    assert [c.split()[3] for c in commands] == ["add", "build"]
    for command in commands:
        run(command, checkout)
    one_run = tmp_path / "one_run"
    run(
        "python -m features --transactions data/transactions.csv --labels data/labels.csv "
        f"--out {one_run}",
        checkout,
    )
    built = re.search(r"--out (\S+)", commands[1])
    assert built is not None
    for name in ("features.csv", "training_set.csv"):
        assert (checkout / built.group(1) / name).read_bytes() == (one_run / name).read_bytes()


def test_upload_commands_against_azurite(
    azurite: str, checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = matching("upload")
    assert any("--model" in c for c in commands) and any("--process" in c for c in commands)
    env = {"AzureWebJobsStorage": azurite}
    for command in commands:
        run(command, checkout, env=env)
    from blobflow.store import connect

    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    service = connect()
    names = {b.name for b in service.get_container_client("curated").list_blobs("demo/")}
    assert {"demo/training_set.csv", "demo/features.csv", "demo/_SUCCESS"} <= names
    # The whole bundle: the manifest and every file it checksums, each byte for byte.
    manifest = json.loads((ROOT / "artifacts" / "model.json").read_text())
    files = {"model.json", "model.joblib"}
    files |= {f"{s}.json" for s in ("linear", "reference") if manifest.get(s)}
    models = service.get_container_client("models")
    assert {b.name for b in models.list_blobs("current/")} == {f"current/{f}" for f in files}
    for file in files:
        uploaded = models.download_blob(f"current/{file}").readall()
        assert uploaded == (ROOT / "artifacts" / file).read_bytes(), file


def test_the_old_upload_command_still_works_for_one_release(
    azurite: str, checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m features.upload` runs `python -m blobflow.upload` (features/README.md)."""
    done = subprocess.run(
        ["python", "-m", "features.upload", "--batch", "old-name", "data/transactions.csv"],
        cwd=checkout, env={**os.environ, "AzureWebJobsStorage": azurite},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "python -m blobflow.upload" in done.stderr
    assert "-> raw/old-name/transactions.csv" in done.stdout
    from blobflow.store import connect

    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    raw = connect().get_container_client("raw")
    assert [b.name for b in raw.list_blobs("old-name/")] == ["old-name/transactions.csv"]


def test_eda_figure_command(tmp_path: Path, checkout: Path) -> None:
    (command,) = matching("eda")
    small = command.replace("--rows 500000 --customers 10000", "--rows 4000 --customers 200")
    small = small.replace("/tmp/syn", str(tmp_path / "syn"))
    small = small.replace("--out benchmarks/results/eda", f"--out {tmp_path / 'eda'}")
    assert small != command
    run(small, checkout)
    assert len(list((tmp_path / "eda").glob("*.png"))) == 3


# Benchmarks at a reduced size: the flags that set their size, replaced.
BENCHMARK_SMALL = {
    "benchmarks.bench_pipeline": [(r"--sizes [\d ]+", "--sizes 20000 ")],
    "benchmarks.bench_api": [(r"--requests \d+", "--requests 200")],
    "benchmarks.load_test": [
        (r"--duration \d+", "--duration 3"),
        (r"--burst-requests \d+", "--burst-requests 200"),
    ],
    "benchmarks.bench_spark": [
        (r"--rows \d+", "--rows 20000"),
        (r"--customers \d+", "--customers 500"),
    ],
}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("module", sorted(BENCHMARK_SMALL))
def test_benchmark_commands_run_at_small_size(module: str, checkout: Path) -> None:
    commands = [c for c in matching("benchmark") if f"-m {module}" in c]
    assert commands, f"README does not show how to run {module}"
    for command in commands:
        small = command
        for pattern, replacement in BENCHMARK_SMALL[module]:
            small = re.sub(pattern, replacement, small)
        assert small != command, f"no size flag to reduce in: {command}"
        assert run(small, checkout, timeout=800).strip()


def test_quickstart_serves_the_brief_example(checkout: Path) -> None:
    (start,) = [c for c in matching("quickstart") if not c.startswith("curl")]
    (call,) = [c for c in matching("quickstart") if c.startswith("curl")]
    port = free_port()  # not 8000: another server may hold it
    assert start.endswith("python -m scoring") and "127.0.0.1:8000/" in call
    start += f" --port {port}"
    call = call.replace("127.0.0.1:8000/", f"127.0.0.1:{port}/")
    server = subprocess.Popen(
        start, shell=True, cwd=checkout, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, server.stdout.read()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API did not come up"
            time.sleep(0.5)
        answer = json.loads(
            subprocess.run(
                shlex.split(call), capture_output=True, text=True, check=True, timeout=30
            ).stdout
        )
        assert answer["customer_id"] == "CUST001"
        assert 0.0 <= answer["probability"] <= 1.0 and answer["prediction"] in (0, 1)
        assert (checkout / "artifacts" / "eda").is_dir()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
