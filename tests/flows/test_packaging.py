"""A user's own ``tasks.py`` and ``flows/`` in the current directory never shadow the pipeline's modules:
flows, tasks, cli and deployments install under ``hsi_pipeline.*``. The flow is imported and run in
a subprocess whose current directory (first on ``sys.path``) holds the user's modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hsi.sources.synthetic import synthesize

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tasks, flows.activate                      # the user's own modules, from the current directory
    assert tasks.WHO == "user" and flows.activate.WHO == "user"
    from hsi_pipeline.flows.activate import activate_scene
    from hsi_pipeline.tasks import activation        # ours, beside the user's `tasks`
    assert activation.__name__ == "hsi_pipeline.tasks.activation"
    r = activate_scene(uri=sys.argv[1], config=sys.argv[2])
    print("RESULT " + json.dumps({k: r[k] for k in ("status", "collection", "item_id", "cube")}))
    """
)


@pytest.mark.usefixtures("prefect_harness")
def test_user_tasks_py_and_flows_dir_do_not_shadow_ours(tmp_path: Path, config_file: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    (tmp_path / "tasks.py").write_text('WHO = "user"\n')
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "__init__.py").write_text("")
    (tmp_path / "flows" / "activate.py").write_text('WHO = "user"\n')
    (tmp_path / "notebook.py").write_text(SCRIPT)
    hdr = synthesize(tmp_path / "raw", width=16, height=16, seed=3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HSI_", "PREFECT_"))}
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    p = subprocess.run([sys.executable, "notebook.py", str(hdr), str(config_file)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT "))
    r = json.loads(line[len("RESULT ") :])
    assert r["status"] == "activated" and r["collection"] == "aviris-ng-l2"
    assert Path(r["cube"]).is_file() and Path(r["cube"]).is_relative_to(tmp_path / "assets")
