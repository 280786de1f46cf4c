"""Model bundles: sha256 before unpickling (and before using linear.json), manifest/estimator
agreement, serving linear bundles without scikit-learn or the pickle, the lazy holder, 503
and recovery through the API, and the numpy fast path against predict_proba."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import joblib
import numpy as np
import pytest
from conftest import bundle_app
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.bundle import BundleError, LocalDirSource, load_bundle
from scoring.holder import ModelHolder, ModelUnavailableError
from scoring.linear import (
    LinearParams,
    LinearParamsError,
    Step,
    from_estimator,
    parse_linear,
    verify_against,
)
from scoring.manifest import BUNDLE_FILES, ManifestError, parse_manifest
from scoring.packaging import add_linear, verification_matrix
from scoring.schema import BRIEF_EXAMPLE
from scoring.scorer import LinearScorer, ProbaScorer, build_scorer
from scoring.settings import PROJECT_ROOT

HANDOVER_SHA = "1d8d7c9bfcd68a0f53fe84286255d5e0720fe9ab3d1d3c97477975bef1a962c7"
ARTIFACTS = PROJECT_ROOT / "artifacts"


def copy_bundle(dst: Path, src: Path = ARTIFACTS) -> Path:
    """Every bundle file ``src`` has (model, manifest, linear.json, reference.json)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in BUNDLE_FILES:
        if (src / name).exists():
            shutil.copyfile(src / name, dst / name)
    return dst


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def resign(bundle: Path, name: str, data: bytes) -> None:
    """Replace a file and update the manifest's sha256 for it, as a careless editor would."""
    (bundle / name).write_bytes(data)
    manifest = json.loads((bundle / "model.json").read_text())
    if name == "model.joblib":
        manifest["sha256"] = sha(data)
    else:
        manifest[name.removesuffix(".json")]["sha256"] = sha(data)
    (bundle / "model.json").write_text(json.dumps(manifest))


def edit_manifest(bundle: Path, **changes: object) -> None:
    data = json.loads((bundle / "model.json").read_text())
    data.update(changes)
    (bundle / "model.json").write_text(json.dumps(data))


def test_shipped_handover_model_is_byte_identical(handover_dir: Path) -> None:
    ours = (ARTIFACTS / "model.joblib").read_bytes()
    assert hashlib.sha256(ours).hexdigest() == HANDOVER_SHA
    assert ours == (handover_dir / "artifacts" / "model.joblib").read_bytes()


def test_handover_bundle_is_served_from_its_linear_parameters_with_the_version_gap_shown() -> None:
    model = load_bundle(LocalDirSource(ARTIFACTS))
    assert model.manifest.sha256 == HANDOVER_SHA
    assert model.manifest.placeholder is True
    assert isinstance(model.scorer, LinearScorer) and model.scorer.kind == "linear-json"
    assert model.runtime_sklearn is None  # scikit-learn was not needed
    assert model.warnings == (
        "model pickled with scikit-learn 1.1.3; served from linear.json, checked against its "
        "predict_proba under scikit-learn 1.7.2",
    )
    # The pickle is still there, verified, and unpickled only when asked for.
    assert len(model.manifest.inputs) == model.estimator.n_features_in_ == 9


def test_handover_pickle_path_still_surfaces_its_unpickling_warnings(tmp_path: Path) -> None:
    bundle = copy_bundle(tmp_path / "b")
    (bundle / "linear.json").unlink()
    model = load_bundle(LocalDirSource(bundle))
    assert model.scorer.kind == "linear-numpy" and model.runtime_sklearn is not None
    assert any("InconsistentVersionWarning" in w for w in model.warnings)
    assert any("linear.json not found" in w and "through the pickle" in w for w in model.warnings)


def test_tampered_model_is_refused(tmp_path: Path) -> None:
    bundle = copy_bundle(tmp_path / "b")
    with open(bundle / "model.joblib", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match=r"sha256 .* does not match .* refusing to unpickle"):
        load_bundle(LocalDirSource(bundle))


class _Boom:
    """Unpickling this runs os.system: proof of whether unpickling happened."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_sha_mismatch_refuses_before_unpickling(tmp_path: Path) -> None:
    bundle = copy_bundle(tmp_path / "b")
    marker = tmp_path / "pwned"
    (bundle / "model.joblib").write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(BundleError, match="refusing to unpickle"):
        load_bundle(LocalDirSource(bundle))
    assert not marker.exists()
    # Control: the same payload *does* run when unpickled, so the check above means something.
    joblib.load(bundle / "model.joblib")
    assert marker.exists()


def test_manifest_and_estimator_feature_count_disagree_is_refused(tmp_path: Path) -> None:
    bundle = copy_bundle(tmp_path / "b")
    data = json.loads((bundle / "model.json").read_text())
    edit_manifest(bundle, inputs=data["inputs"][:8])  # sha still right, 8 inputs vs 9
    with pytest.raises(BundleError, match="manifest lists 8 inputs but the estimator expects 9"):
        load_bundle(LocalDirSource(bundle))


def test_missing_files_are_clear_errors_without_paths(tmp_path: Path) -> None:
    bundle = copy_bundle(tmp_path / "b")
    (bundle / "model.joblib").unlink()
    with pytest.raises(BundleError) as err:
        load_bundle(LocalDirSource(bundle))
    assert "model.joblib not found" in str(err.value)
    assert str(tmp_path) not in str(err.value)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m["inputs"][0].update(optional=True, default=0.0), "not 0/1 flags"),
        (lambda m: m["inputs"][4].update(default=1.0), "must default to 0"),
        (lambda m: m["inputs"][0].update(accepts=["txn_count"]), "unknown request fields"),
        (lambda m: m["inputs"][1].update(accepts=["num_transactions"]), "more than one input"),
        (lambda m: m.update(sha256="abc"), "sha256"),
        (lambda m: m.update(threshold=1.5), "threshold"),
        (lambda m: m.update(extra_key=1), "extra_key"),
    ],
)
def test_manifest_rules(mutate, message: str) -> None:
    data = json.loads((ARTIFACTS / "model.json").read_text())
    mutate(data)
    with pytest.raises(ManifestError, match=message):
        parse_manifest(json.dumps(data).encode())


def test_fast_path_equals_predict_proba_for_the_handover_model() -> None:
    model = load_bundle(LocalDirSource(ARTIFACTS))
    rng = np.random.default_rng(7)
    x = np.column_stack(
        [
            rng.integers(0, 200, 500),
            -rng.gamma(2, 300, 500),
            rng.gamma(2, 300, 500),
            rng.normal(0, 100, 500),
            *(rng.integers(0, 2, 500) for _ in range(5)),
        ]
    ).astype(float)
    x[:, 1:4] /= 50  # keep probabilities away from 0/1 so the comparison is informative
    expected = model.estimator.predict_proba(x)[:, 1]
    assert np.ptp(expected) > 0.1
    np.testing.assert_allclose(model.scorer.probabilities(x), expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(model.scorer.contributions(x), x * model.estimator.coef_[0])


def test_unrecognised_estimators_fall_back_to_predict_proba() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] + rng.normal(size=200) > 0).astype(int)
    est = HistGradientBoostingClassifier(max_iter=20).fit(x, y)
    scorer = build_scorer(est)
    assert isinstance(scorer, ProbaScorer) and scorer.contributions(x) is None
    np.testing.assert_array_equal(scorer.probabilities(x), est.predict_proba(x)[:, 1])


TRAINED = ARTIFACTS / "trained"


@pytest.mark.parametrize("bundle", [ARTIFACTS, TRAINED], ids=["handover", "trained"])
def test_shipped_linear_parameters_equal_predict_proba(bundle: Path) -> None:
    """Both shipped bundles: linear.json reproduces the pickle on a wide grid of inputs."""
    model = load_bundle(LocalDirSource(bundle))
    assert model.scorer.kind == "linear-json"
    manifest = model.manifest
    assert manifest.linear is not None
    assert manifest.linear.sha256 == sha((bundle / "linear.json").read_bytes())
    x = verification_matrix(manifest.inputs, rows=3000)
    params = model.scorer.params
    expected = model.estimator.predict_proba(_named(params, x))[:, 1]
    assert expected.min() < 0.01 and expected.max() > 0.99  # the grid reaches both tails
    np.testing.assert_allclose(model.scorer.probabilities(x), expected, rtol=1e-12, atol=1e-15)
    logits = model.estimator.decision_function(_named(params, x))
    np.testing.assert_allclose(
        model.scorer.contributions(x).sum(axis=1) + params.intercept, logits, rtol=1e-9, atol=1e-9
    )


def _named(params: LinearParams, x: np.ndarray) -> object:
    import pandas as pd

    return x if params.feature_names is None else pd.DataFrame(x, columns=params.feature_names)


def test_shipped_handover_linear_json_is_reproducible(tmp_path: Path) -> None:
    """python -m scoring.packaging regenerates the shipped file byte for byte, and leaves
    the handover pickle byte-identical."""
    bundle = copy_bundle(tmp_path / "b")
    (bundle / "linear.json").unlink()
    done = subprocess.run(
        [sys.executable, "-m", "scoring.packaging", "--bundle", str(bundle)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "matches predict_proba on 5000 rows" in done.stdout
    assert (bundle / "linear.json").read_bytes() == (ARTIFACTS / "linear.json").read_bytes()
    assert sha((bundle / "model.joblib").read_bytes()) == HANDOVER_SHA
    assert json.loads((bundle / "model.json").read_text()) == json.loads(
        (ARTIFACTS / "model.json").read_text()
    )


SERVING_PROBE = """
import json, sys
HEAVY = ("sklearn", "joblib", "scipy", "pandas", "pyarrow")
from fastapi.testclient import TestClient
from scoring import api
client = TestClient(api.app)
body = json.loads(sys.argv[1])
r = client.post("/predict", json=body)
assert r.status_code == 200, r.text
print(json.dumps({"probability": r.json()["probability"],
                  "runtime": client.get("/model").json()["runtime"],
                  "loaded": sorted(m for m in HEAVY if m in sys.modules)}))
"""


def test_serving_a_linear_bundle_imports_neither_sklearn_nor_joblib_nor_unpickles(
    tmp_path: Path,
) -> None:
    """A fresh interpreter serves /predict from linear.json. The bundle's pickle is a trap
    (unpickling it creates a file, and its sha256 is in the manifest, so it would be
    trusted): it is never unpickled, and scikit-learn, joblib and scipy are never imported;
    nor are pandas and pyarrow (the feature definitions the API reads import them lazily)."""
    bundle = copy_bundle(tmp_path / "b")
    marker = tmp_path / "unpickled"
    resign(bundle, "model.joblib", pickle.dumps(_Boom(marker)))
    done = subprocess.run(
        [sys.executable, "-c", SERVING_PROBE, json.dumps(BRIEF_EXAMPLE)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "MODEL_DIR": str(bundle)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    assert out["runtime"]["scorer"] == "linear-json" and out["runtime"]["sklearn_version"] is None
    assert not marker.exists()
    handover = load_bundle(LocalDirSource(ARTIFACTS))
    row = [BRIEF_EXAMPLE.get(i.accepts[0], i.default) for i in handover.manifest.inputs]
    expected = handover.estimator.predict_proba(np.array([row], dtype=float))[0, 1]
    assert out["probability"] == pytest.approx(expected, rel=1e-12)


def test_tampered_linear_parameters_are_refused(tmp_path: Path) -> None:
    bundle = copy_bundle(tmp_path / "b")
    data = json.loads((bundle / "linear.json").read_text())
    data["coef"][1] *= -1  # flips the sign of total_debit's weight
    (bundle / "linear.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"linear.json sha256 .* refusing to use it"):
        load_bundle(LocalDirSource(bundle))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d.update(coef=d["coef"][:8]),
            "manifest lists 9 inputs but the estimator expects 8",
        ),
        (lambda d: d.update(coef=[*d["coef"][:8], float("nan")]), "linear.json is invalid"),
        (lambda d: d.update(steps=[{"op": "function", "function": "eval"}]), "unknown transform"),
        (lambda d: d.update(feature_names=[f"f{i}" for i in range(9)]), "feature names differ"),
        (lambda d: d.pop("intercept"), "linear.json is invalid"),
    ],
)
def test_malformed_linear_parameters_are_refused_even_when_resigned(
    tmp_path: Path, edit, message: str
) -> None:
    bundle = copy_bundle(tmp_path / "b")
    data = json.loads((bundle / "linear.json").read_text())
    edit(data)
    resign(bundle, "linear.json", json.dumps(data).encode())
    with pytest.raises(BundleError, match=message):
        load_bundle(LocalDirSource(bundle))


def test_write_time_verification_refuses_parameters_that_are_not_the_model() -> None:
    model = load_bundle(LocalDirSource(TRAINED))
    params = from_estimator(model.estimator)
    assert params is not None
    x = verification_matrix(model.manifest.inputs, rows=500)
    record = verify_against(params, model.estimator, x)
    assert record["rows"] == 500 and record["max_abs_diff_log_odds"] <= 1e-9
    coef = params.coef.copy()
    coef[0] *= 1 + 1e-6  # a tiny change is still caught
    wrong = LinearParams(params.steps, coef, params.intercept, params.feature_names)
    with pytest.raises(LinearParamsError, match="disagree with the estimator"):
        verify_against(wrong, model.estimator, x)


def test_add_linear_refuses_a_model_it_cannot_express(tmp_path: Path) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    bundle = copy_bundle(tmp_path / "b")
    (bundle / "linear.json").unlink()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 9))
    est = HistGradientBoostingClassifier(max_iter=5).fit(x, (x[:, 0] > 0).astype(int))
    resign(bundle, "model.joblib", _joblib_bytes(est))
    with pytest.raises(BundleError, match="not a supported linear model"):
        add_linear(bundle)
    assert not (bundle / "linear.json").exists()


def _joblib_bytes(obj: object) -> bytes:
    import io

    buf = io.BytesIO()
    joblib.dump(obj, buf)
    return buf.getvalue()


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    coef=st.lists(finite, min_size=1, max_size=6),
    intercept=finite,
    signed_log=st.booleans(),
    scale=st.floats(min_value=1e-3, max_value=1e3),
)
def test_linear_json_round_trips_exactly(
    coef: list[float], intercept: float, signed_log: bool, scale: float
) -> None:
    n = len(coef)
    steps = [Step(op="function", function="signed_log1p")] if signed_log else []
    steps.append(Step(op="standardise", mean=np.linspace(-1, 1, n), scale=np.full(n, scale)))
    params = LinearParams(tuple(steps), np.array(coef), intercept)
    back = parse_linear(params.to_json_bytes())
    assert back.to_json_bytes() == params.to_json_bytes()
    x = np.random.default_rng(1).normal(0, 100, (20, n))
    np.testing.assert_array_equal(back.logits(x), params.logits(x))


class FlakySource:
    """A source whose files can be broken and fixed at will, counting reads."""

    def __init__(self, bundle: Path):
        self.inner = LocalDirSource(bundle)
        self.reads = 0

    def describe(self) -> str:
        return "test source"

    def read_manifest(self) -> bytes:
        self.reads += 1
        return self.inner.read_manifest()

    def read_model(self) -> bytes:
        return self.inner.read_model()


def test_holder_caches_failure_then_retries(tmp_path: Path) -> None:
    bundle = copy_bundle(tmp_path / "b")
    good = (bundle / "model.joblib").read_bytes()
    (bundle / "model.joblib").write_bytes(good + b"x")
    source = FlakySource(bundle)
    now = [100.0]
    holder = ModelHolder(lambda: source, retry_after=5.0, clock=lambda: now[0])
    with pytest.raises(ModelUnavailableError, match="sha256"):
        holder.get()
    with pytest.raises(ModelUnavailableError):
        holder.get()  # within retry_after: cached, storage not read again
    assert source.reads == 1 and holder.attempt_count == 1
    (bundle / "model.joblib").write_bytes(good)
    now[0] += 5.1
    assert holder.get().manifest.sha256 == HANDOVER_SHA
    assert holder.load_count == 1 and holder.last_error is None
    holder.get()
    assert source.reads == 2  # loaded once; later calls do not touch storage


def test_holder_loads_once_under_concurrency(tmp_path: Path) -> None:
    source = FlakySource(copy_bundle(tmp_path / "b"))
    holder = ModelHolder(lambda: source)
    barrier = threading.Barrier(16)
    got = []

    def call() -> None:
        barrier.wait()
        got.append(holder.get())

    threads = [threading.Thread(target=call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(got) == 16 and all(m is got[0] for m in got)
    assert holder.load_count == 1 and source.reads == 1
    holder.reset()
    assert holder.peek() is None
    holder.get()
    assert holder.load_count == 2


def test_api_503_when_model_broken_then_recovers_without_restart(
    tmp_path: Path,
) -> None:
    bundle = copy_bundle(tmp_path / "b")
    edit_manifest(bundle, sha256="0" * 64)
    client = TestClient(bundle_app(bundle, retry_after=0.0))
    ready = client.get("/ready")
    assert ready.status_code == 503 and "sha256" in ready.json()["detail"]
    r = client.post("/predict", json=BRIEF_EXAMPLE)
    assert r.status_code == 503 and "model unavailable" in r.json()["detail"]
    assert client.get("/health").status_code == 200  # alive though not ready
    edit_manifest(bundle, sha256=HANDOVER_SHA)  # "upload" a good manifest
    assert client.get("/ready").status_code == 200
    assert client.post("/predict", json=BRIEF_EXAMPLE).status_code == 200


def test_assemble_aliases_defaults_and_errors() -> None:
    from scoring.inputs import InputError, InputPlan, assemble

    plan = InputPlan(
        names=("income", "kw_pay"),
        accepts=(("total_credit",), ("has_salary", "has_bonus")),
        defaults=(None, 0.0),
        used=frozenset({"total_credit", "has_salary", "has_bonus"}),
    )
    out = assemble(
        plan, [{"total_credit": 5.0, "has_bonus": 1, "fee_count": 2}, {"total_credit": 1.0}]
    )
    np.testing.assert_array_equal(out.matrix, [[5.0, 1.0], [1.0, 0.0]])
    assert out.defaulted == [[], ["has_salary"]] and out.ignored == [["fee_count"], []]
    with pytest.raises(InputError) as err:
        assemble(
            plan,
            [{"total_credit": 1.0}, {"has_salary": 1, "has_bonus": 0}],
            loc_prefix=("body", "items"),
            indexed=True,
        )
    assert [(e["loc"], e["type"]) for e in err.value.errors] == [
        (["body", "items", 1, "total_credit"], "missing"),
        (["body", "items", 1, "has_bonus"], "conflict"),
    ]
    assert err.value.errors[0]["msg"].startswith("items.1.total_credit: ")
