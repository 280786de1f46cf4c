"""What the handover model does under each sign convention of ``total_debit``.

The handover pickle records no feature names and no training data. Its ``total_debit``
coefficient is negative, which fits both "fed as a negative sum" (more spending raises the
score) and "fed as a positive sum" (more spending lowers it): the sign convention cannot be
identified from the coefficients. This measures both on a labelled features file, so the
manifest's notes and the README can say what each does:

    python -m scoring.handover --training-set D/training_set.csv

prints, per convention, the share of customers with p >= 0.5 and the AUC.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featurespec import TARGET
from scoring.bundle import LoadedModel, LocalDirSource, load_bundle
from scoring.settings import PROJECT_ROOT

HANDOVER_DIR = PROJECT_ROOT / "artifacts"
SIGN_FIELD = "total_debit"


def sign_conventions(model: LoadedModel, features: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Share of customers with p >= 0.5, mean p and AUC when ``total_debit`` is fed as the
    features file has it (negative, our contract) and with its sign flipped (positive)."""
    from sklearn.metrics import roc_auc_score

    plan = model.plan
    columns = [accepts[0] for accepts in plan.accepts]
    matrix = features[columns].to_numpy(dtype=float)
    j = columns.index(SIGN_FIELD)
    y = features[TARGET].to_numpy(dtype=int)
    out = {}
    for name, sign in (("negative", 1.0), ("positive", -1.0)):
        x = matrix.copy()
        x[:, j] *= sign
        p = model.scorer.probabilities(x)
        out[name] = {
            "share_p_at_least_0_5": round(float(np.mean(p >= 0.5)), 4),
            "mean_p": round(float(np.mean(p)), 4),
            "auc": round(float(roc_auc_score(y, p)), 4),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--training-set", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, default=HANDOVER_DIR)
    args = parser.parse_args(argv)
    model = load_bundle(LocalDirSource(args.bundle))
    frame = pd.read_csv(args.training_set)
    result = sign_conventions(model, frame)
    json.dump({"customers": len(frame), **result}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
