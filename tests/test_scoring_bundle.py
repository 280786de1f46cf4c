"""Model bundles: sha256 before unpickling, manifest/estimator agreement, the lazy holder,
503 and recovery through the API, and the numpy fast path against predict_proba."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from scoring import api
from scoring.bundle import BundleError, LocalDirSource, load_bundle
from scoring.holder import ModelHolder, ModelUnavailableError
from scoring.manifest import ManifestError, parse_manifest
from scoring.schema import BRIEF_EXAMPLE
from scoring.scorer import LinearScorer, ProbaScorer, build_scorer
from scoring.settings import PROJECT_ROOT, local_source

HANDOVER_SHA = "1d8d7c9bfcd68a0f53fe84286255d5e0720fe9ab3d1d3c97477975bef1a962c7"
ARTIFACTS = PROJECT_ROOT / "artifacts"


def copy_bundle(dst: Path, src: Path = ARTIFACTS) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("model.joblib", "model.json"):
        shutil.copyfile(src / name, dst / name)
    return dst


def edit_manifest(bundle: Path, **changes: object) -> None:
    data = json.loads((bundle / "model.json").read_text())
    data.update(changes)
    (bundle / "model.json").write_text(json.dumps(data))


def test_shipped_handover_model_is_byte_identical(handover_dir: Path) -> None:
    ours = (ARTIFACTS / "model.joblib").read_bytes()
    assert hashlib.sha256(ours).hexdigest() == HANDOVER_SHA
    assert ours == (handover_dir / "artifacts" / "model.joblib").read_bytes()


def test_handover_bundle_loads_with_its_warnings() -> None:
    model = load_bundle(LocalDirSource(ARTIFACTS))
    assert model.manifest.sha256 == HANDOVER_SHA
    assert model.manifest.placeholder is True
    assert len(model.manifest.inputs) == model.estimator.n_features_in_ == 9
    assert any("InconsistentVersionWarning" in w for w in model.warnings)
    assert isinstance(model.scorer, LinearScorer)


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


@pytest.fixture
def swapped_holder() -> Iterator[None]:
    yield
    api.holder.retry_after = 5.0
    api.holder.reset(local_source)


def test_api_503_when_model_broken_then_recovers_without_restart(
    tmp_path: Path, swapped_holder: None
) -> None:
    bundle = copy_bundle(tmp_path / "b")
    edit_manifest(bundle, sha256="0" * 64)
    api.holder.reset(lambda: LocalDirSource(bundle))
    api.holder.retry_after = 0.0
    client = TestClient(api.app)
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
