#!/usr/bin/env bash
# Set up, bring up the local stack (PostgreSQL+PostGIS, stac-fastapi-pgstac, SeaweedFS S3, Prefect
# server + worker; installed on first use), run the whole test suite, and stop what we started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

started=0
if ! .venv/bin/hsi stack status >/dev/null 2>&1; then
  # the worker polls every 1 s, not 0.25 s: ~15 % of a core idle over the whole run otherwise
  # (docs/SCALING.md); the tests wait on conditions, never on the start latency
  HSI_WORKER_POLL_SECONDS="${HSI_WORKER_POLL_SECONDS:-1}" .venv/bin/hsi stack up
  started=1
fi
cleanup() { if [ "$started" = 1 ]; then .venv/bin/hsi stack down || true; fi; }
trap cleanup EXIT

bash scripts/lint.sh
.venv/bin/python -m pytest "$@"
