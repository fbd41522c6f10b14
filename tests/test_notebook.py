"""notebooks/explore.ipynb runs top to bottom on the tiny configuration (PLASTIC_JAX_TINY=1): it trains a
tiny run, starts from its learned Θ, draws the references, the sliders (headless) and the held-out evaluation."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "notebooks", "explore.ipynb")


def test_explore_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("PLASTIC_JAX_TINY", "1")  # the kernel inherits this process's environment
    monkeypatch.delenv("PLASTIC_JAX_RUN", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "tiny" in text and "final query accuracy" in text
    assert "learned Θ" in text and "f0+bp" in text and "f0+fa" in text  # the run's Θ beside the references
    assert "Θ of the sliders" in text  # the slider cell's update ran
    assert "meta-test on" in text and "sliders - f0+fa" in text  # the held-out evaluation
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    if not any("image/png" in o.get("data", {}) for o in outputs):
        pytest.fail("the notebook drew no figure")
