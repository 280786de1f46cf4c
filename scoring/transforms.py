"""Column transforms used inside trained pipelines.

They live in their own importable module because a pickled ``FunctionTransformer`` refers
to its function by module path; moving this function breaks every bundle that uses it.
"""

from __future__ import annotations

import numpy as np


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """sign(x) * log(1 + |x|): tames heavy-tailed money amounts, keeps sign and zero."""
    arr = np.asarray(x, dtype=float)
    return np.sign(arr) * np.log1p(np.abs(arr))
