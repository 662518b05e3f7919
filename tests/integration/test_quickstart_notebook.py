"""examples/quickstart.ipynb runs top to bottom (static catalog, then the stack's STAC API + S3) and
writes non-blank PNG figures (issue 12, must-show 3). Executed with nbclient in a real kernel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.image
import nbformat
import numpy as np
import yaml
from nbclient import NotebookClient

from tests.integration.test_open_item_stack import _scene_id

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "quickstart.ipynb"


def _not_blank(png: Path) -> bool:
    img = matplotlib.image.imread(png)[..., :3]
    return img.shape[0] > 100 and img.shape[1] > 100 and float(img.std()) > 0.05 and len(np.unique(img)) > 50


def test_quickstart_notebook_runs_and_writes_figures(
    pipeline_config: Any, stac_catalog: Any, s3_store: Any, run_id: str, tmp_path: Path, monkeypatch
) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        "commit the notebook without outputs"
    )
    api_cfg = tmp_path / "api.yaml"
    api_cfg.write_text(yaml.safe_dump(pipeline_config.model_dump(mode="json", exclude_none=True)))
    scene = _scene_id(run_id)
    figures = tmp_path / "figures"
    monkeypatch.setenv("HSI_QUICKSTART_DIR", str(tmp_path / "q"))
    monkeypatch.setenv("HSI_QUICKSTART_FIGURES", str(figures))
    monkeypatch.setenv("HSI_QUICKSTART_API_CONFIG", str(api_cfg))
    monkeypatch.setenv("HSI_QUICKSTART_SCENE_ID", scene)
    try:
        NotebookClient(
            nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
    finally:
        item_id = f"aviris-ng-{scene}"
        for cid, iid in (
            ("aviris-ng-raw", item_id),
            ("aviris-ng-l2", item_id),
            ("hsi-index-ndvi", f"{item_id}-index-ndvi"),
        ):
            stac_catalog.delete_item(cid, iid)
    for name in ("spectrum.png", "ndvi.png", "spectrum_api.png", "ndvi_api.png"):
        assert (figures / name).is_file(), name
        assert _not_blank(figures / name), f"{name} is blank"
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "STAC API search: ['aviris-ng-" in text and "s3://" in text
