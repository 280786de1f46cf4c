#!/usr/bin/env bash
# Static security scan of the Bicep in infra/ with checkov.
# checkov pins versions that clash with requirements*.txt, so it lives in its own venv
# (CHECKOV_VENV, default /tmp/checkov-venv), created with pip on first use.
# Exits non-zero when any check fails; skips must be written in the template with a reason.
set -euo pipefail

VENV="${CHECKOV_VENV:-/tmp/checkov-venv}"
CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ ! -x "${VENV}/bin/checkov" ]]; then
    python -m venv "${VENV}"
    "${VENV}/bin/python" -m pip install --quiet --upgrade pip
    "${VENV}/bin/python" -m pip install --quiet "checkov==${CHECKOV_VERSION}"
fi

cd "${ROOT}"
"${VENV}/bin/checkov" --version
exec "${VENV}/bin/checkov" -d infra --framework bicep --quiet --compact --skip-download
