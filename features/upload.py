"""``python -m features.upload`` moved to ``python -m blobflow.upload`` (the Azure glue).

Kept for one release so existing scripts keep working: it replaces this process with
``python -m blobflow.upload`` and the same arguments. ``features`` does not import the glue
(dependencies point one way), hence a new interpreter rather than an import.
"""

from __future__ import annotations

import os
import sys

TARGET = "blobflow.upload"


def main() -> None:
    print(
        f"note: python -m features.upload is now python -m {TARGET}; "
        "the old name goes in the next release",
        file=sys.stderr,
        flush=True,
    )
    os.execv(sys.executable, [sys.executable, "-m", TARGET, *sys.argv[1:]])


if __name__ == "__main__":
    main()
