"""The quick-start notebook executes from top to bottom (offline: the simulator fallback)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def _outputs(nb, kind: str):
    return [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o["output_type"] == kind
    ]


def test_quickstart_notebook_executes(monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    # A kernel spec pinned to this interpreter, so the notebook runs in the project's environment.
    spec_dir = tmp_path / "jupyter" / "kernels" / "mmgap-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "mmgap test",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never download in tests; exercises the fallback
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="mmgap-test", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    text = "\n".join(o.get("text", "") for o in _outputs(nb, "stream"))
    assert "simulator fallback" in text
    assert "raw cosine ranking" in text and "calibrated ranking" in text
    assert "text query -> image: mean" in text
    assert any("image/png" in o.get("data", {}) for o in _outputs(nb, "display_data"))
    assert "TextNode" in text or "ImageNode" in text
    assert "relevance_score" not in text  # printed values, not dict dumps
