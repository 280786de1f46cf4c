"""Reasons for a decision: worded families of contributions measured from each input's baseline.

For a linear model, input j adds ``c_j = w_j * (T(x_j) - T(b_j))`` log-odds to the score
compared with a customer sitting at every baseline ``b`` (the training medians), where
``T`` is the bundle's transform (signed log, then standardising). The contributions sum to
the score's log-odds minus the baseline customer's.

A family's contribution is the sum over its inputs. A family is given as a reason only when
that sum is positive *and* at least one of its inputs lies on the risky side of its baseline
(``risk_direction * (x - b) > 0``) with a positive contribution; only those inputs are listed
under it. So a customer is never told that low spending or a salary in every month counted
against them, whatever the coefficients are. Families are ranked by contribution; at most
``top`` are given.

Pure numpy; built once per loaded bundle (``Explainer.for_model``), then vectorised over a
request's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scoring.linear import LinearParams
from scoring.manifest import Manifest

NO_BASELINES = (
    "this bundle declares no baseline and risk direction for its inputs, so there is no "
    "reference point a contribution could honestly be measured from"
)
NOT_LINEAR = (
    "this model's score cannot be split exactly into per-input contributions (it is not a "
    "linear model served from linear.json)"
)


@dataclass(frozen=True)
class Explainer:
    params: LinearParams
    baseline: np.ndarray  # raw input values, one per input
    direction: np.ndarray  # +1 / -1 per input
    fields: tuple[str, ...]  # request field shown for each input
    families: tuple[str, ...]  # family of each input
    family_names: tuple[str, ...]  # distinct families, in first-use order
    family_text: dict[str, str]
    top: int
    family_inputs: tuple[tuple[int, ...], ...]  # inputs of each family

    @classmethod
    def build(
        cls,
        params: LinearParams,
        *,
        baseline: Sequence[float],
        direction: Sequence[int],
        families: Sequence[str],
        fields: Sequence[str],
        family_text: dict[str, str],
        top: int,
    ) -> Explainer:
        names = tuple(dict.fromkeys(families))
        return cls(
            params=params,
            baseline=np.array(baseline, dtype=float),
            direction=np.array(direction, dtype=float),
            fields=tuple(fields),
            families=tuple(families),
            family_names=names,
            family_text=dict(family_text),
            top=top,
            family_inputs=tuple(
                tuple(j for j, f in enumerate(families) if f == name) for name in names
            ),
        )

    @classmethod
    def for_model(
        cls, params: LinearParams, manifest: Manifest, fields: Sequence[str]
    ) -> Explainer | None:
        """An explainer if the bundle carries what reasons need, else None."""
        section = manifest.reasons
        if section is None:
            return None
        inputs = manifest.inputs
        return cls.build(
            params,
            baseline=[float(i.baseline or 0.0) for i in inputs],
            direction=[int(i.risk_direction or 0) for i in inputs],
            families=[str(i.reason_family) for i in inputs],
            fields=fields,
            family_text=section.families,
            top=section.top,
        )

    @property
    def baseline_log_odds(self) -> float:
        """Log-odds of a customer at every baseline."""
        return float(self.params.logits(self.baseline[None, :])[0])

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """(n, k) log-odds per input, measured from the baselines."""
        return self.params.contributions(x) - self.params.contributions(self.baseline[None, :])

    def risky_side(self, x: np.ndarray) -> np.ndarray:
        """(n, k) True where the value lies on the risky side of its baseline."""
        return self.direction * (x - self.baseline) > 0

    def explain(self, x: np.ndarray) -> list[list[dict[str, Any]]]:
        """Each row's reasons, most important first (an empty list: nothing counted against)."""
        contrib = self.contributions(x)
        listed = self.risky_side(x) & (contrib > 0)
        member = np.array([[f == name for name in self.family_names] for f in self.families])
        family_total = contrib @ member  # (n, families)
        eligible = (family_total > 0) & ((listed.astype(float) @ member) > 0)
        ranked = np.argsort(-np.where(eligible, family_total, -np.inf), axis=1, kind="stable")
        out: list[list[dict[str, Any]]] = []
        values, contribs, flags = x.tolist(), contrib.tolist(), listed.tolist()
        totals, ok = family_total.tolist(), eligible.tolist()
        baselines = self.baseline.tolist()
        for row, order in enumerate(ranked[:, : self.top].tolist()):
            reasons = []
            for f in order:
                if not ok[row][f]:
                    break
                name = self.family_names[f]
                members = sorted(
                    (j for j in self.family_inputs[f] if flags[row][j]),
                    key=lambda j, r=row: -contribs[r][j],
                )
                reasons.append(
                    {
                        "family": name,
                        "text": self.family_text[name],
                        "contribution": totals[row][f],
                        "features": [
                            {
                                "feature": self.fields[j],
                                "value": values[row][j],
                                "baseline": baselines[j],
                                "contribution": contribs[row][j],
                            }
                            for j in members
                        ],
                    }
                )
            out.append(reasons)
        return out
