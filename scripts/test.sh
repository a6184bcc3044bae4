#!/usr/bin/env bash
# One command to set up and run the whole test suite (unit, integration, chaos, security) with coverage.
# Stress and soak tests run only with FAASD_STRESS=1. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== ruff"; .venv/bin/ruff check src tests bench
echo "== mypy"; .venv/bin/mypy
echo "== pytest"
set +e
.venv/bin/pytest -p no:cacheprovider --cov=faasd --cov-report=term --cov-report=xml \
  -m "not stress" "$@"
rc=$?
set -e
# pytest exit 5 means no test was collected: that is a failure of the suite, not a pass.
exit $rc
