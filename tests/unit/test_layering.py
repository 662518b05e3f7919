"""The domain library never imports Prefect (notebooks and other orchestrators use it directly)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import hsi


def test_hsi_imports_nothing_from_prefect() -> None:
    modules = sorted(m.name for m in pkgutil.walk_packages(hsi.__path__, "hsi."))
    assert "hsi.activation" in modules and "hsi.products.engine" in modules
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = sorted(k for k in sys.modules if k == 'prefect' or k.startswith('prefect.') or k.startswith('prefect_'))\n"
        "assert not bad, bad[:5]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_every_module_of_the_orchestration_layers_imports() -> None:
    """A renamed helper must not break a module that only the integration suite would load."""
    code = (
        "import importlib, pkgutil\n"
        "for pkg in ('hsi_pipeline.tasks', 'hsi_pipeline.flows', 'hsi_pipeline.cli', 'hsi_pipeline.deployments'):\n"
        "    m = importlib.import_module(pkg)\n"
        "    for info in pkgutil.walk_packages(m.__path__, pkg + '.'):\n"
        "        importlib.import_module(info.name)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
