#!/usr/bin/env bash
# Static checks on every layer: ruff (lint + format), mypy (hsi and hsi_pipeline.*), import contracts.
set -euo pipefail
cd "$(dirname "$0")/.."
# mypy sees flows/, tasks/, cli/ and deployments/ under their installed names (hsi_pipeline.*)
mkdir -p .typecheck/hsi_pipeline
for d in flows tasks cli deployments; do ln -sfn "../../$d" ".typecheck/hsi_pipeline/$d"; done
.venv/bin/ruff check hsi tasks flows cli deployments tests benchmarks
.venv/bin/ruff format --check hsi tasks flows cli deployments tests benchmarks
.venv/bin/mypy
# layer contracts ([tool.importlinter] in pyproject.toml), over the same view
PYTHONPATH=.typecheck .venv/bin/lint-imports --no-cache
