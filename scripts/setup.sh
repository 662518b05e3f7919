#!/usr/bin/env bash
# Create .venv with the locked dependencies and the project installed (editable).
# Works on a fresh Debian 12 with Python 3.11; as root it installs python3-venv if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for c in python3.11 python3; do command -v "$c" >/dev/null 2>&1 && { PY="$c"; break; }; done
fi
[ -n "$PY" ] || { echo "setup: Python 3.11 is required (apt-get install python3)" >&2; exit 1; }
"$PY" -c 'import sys; assert sys.version_info[:2] in ((3, 11), (3, 12)), sys.version' \
  || { echo "setup: Python 3.11 or 3.12 is required, found $("$PY" --version)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "setup: installing python3-venv (apt)" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$PY" -m venv .venv
    else
      echo "setup: '$PY -m venv' failed: install the venv module (sudo apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check uv
# the lock holds every runtime and test dependency; then the project itself, editable, without deps
.venv/bin/uv pip install -q --python .venv/bin/python -r requirements.lock
.venv/bin/uv pip install -q --python .venv/bin/python --no-deps -e .
# Where PYTHONDONTWRITEBYTECODE is set, every process would compile every module it imports (about
# half of an `hsi` command's CPU time): write the bytecode once here (up-to-date files are skipped).
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
.venv/bin/python -m compileall -q -j0 "$site" hsi flows tasks cli deployments >/dev/null 2>&1 || true
echo "setup: .venv ready ($(.venv/bin/python --version), $(.venv/bin/python -c 'import rasterio; print("GDAL", rasterio.__gdal_version__)'))"
