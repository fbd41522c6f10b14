"""notebooks/explore.ipynb runs top to bottom on the tiny configuration (PLASTIC_JAX_TINY=1), executed
as README says, from the repository root: ``PLASTIC_JAX_TINY=1 jupyter execute notebooks/explore.ipynb``
(``jupyter execute`` comes with nbclient, in the test extra; the kernel runs in notebooks/). It trains
a tiny run, starts from its learned Θ, draws the references, the terms' shares of ΔW, the receptive
fields, the alignment over a few tasks, the sliders (headless) and the held-out evaluation."""

import os
import subprocess
import sys

import nbformat
import pytest

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), ".."))
NOTEBOOK = os.path.join("notebooks", "explore.ipynb")


def jupyter_execute(*args, launched_from=ROOT, **env):
    """``jupyter execute [args] notebooks/explore.ipynb`` from the repository root, with ``env`` added
    (PLASTIC_JAX_RUN removed unless given): the command README gives. ``launched_from``: the $PWD the
    kernel sees, the directory a shell started it from."""
    jupyter = os.path.join(os.path.dirname(sys.executable), "jupyter")
    if not os.path.exists(jupyter):
        pytest.fail(f"{jupyter} not found: pip install -e '.[test]' installs jupyter execute (nbclient)")
    environ = {k: v for k, v in os.environ.items() if k != "PLASTIC_JAX_RUN"}
    environ.update(env, PWD=str(launched_from))
    return subprocess.run([jupyter, "execute", *args, NOTEBOOK], cwd=ROOT, env=environ, capture_output=True,
                          text=True, timeout=1200)


@pytest.mark.slow  # end to end, >50 s on one core; run with -m slow
def test_explore_notebook_executes(tmp_path):
    out = tmp_path / "explored"  # --output: the executed copy (absolute, so not beside the notebook)
    proc = jupyter_execute(f"--output={out}", PLASTIC_JAX_TINY="1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    nb = nbformat.read(f"{out}.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "tiny" in text and "final query accuracy" in text
    assert "learned Θ" in text and "f0+bp" in text and "f0+fa" in text  # the run's Θ beside the references
    assert "the terms' shares add up to ΔW" in text  # the knock-out decomposition is exact
    assert "layer 1: contribution to ΔW" in text and "F0" in text and "F2" in text  # per term, per layer
    assert "alignment angle (°) after 0 examples" in text  # the angle along the episode, over tasks
    assert "Θ of the sliders" in text  # the slider cell's update ran
    assert "meta-test on" in text and "sliders - f0+fa" in text  # the held-out evaluation
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    figures = sum("image/png" in o.get("data", {}) for o in outputs)
    # curves, the episode, the terms' shares, the receptive fields, the alignment, the sliders' first draw
    assert figures >= 6, f"the notebook drew {figures} figures"


@pytest.mark.parametrize("run, launched_from, message", [
    # nowhere: one line naming the three paths tried (notebooks/, the launch directory = the root)
    ("runs/no-such-run", ROOT, "no such run directory (tried {root}/notebooks/runs/no-such-run, "
                               "{root}/runs/no-such-run)"),
    # found from the repository root (not from notebooks/ nor the launch directory), but not a run
    ("tests", "{tmp}", "{root}/tests has no config.json or summary.json (not a finished run)"),
])
def test_run_directory_is_resolved_or_one_line(tmp_path, run, launched_from, message):
    """A relative PLASTIC_JAX_RUN is tried from the kernel's directory (notebooks/), the directory
    Jupyter was launched from, then the repository root; a missing or unfinished run stops the first
    cell with one line."""
    proc = jupyter_execute(launched_from=launched_from.format(tmp=tmp_path), PLASTIC_JAX_RUN=run)
    assert proc.returncode != 0
    lines = [s for s in proc.stderr.splitlines() if s.startswith("RunNotFound:")]
    assert lines == [f"RunNotFound: PLASTIC_JAX_RUN={run}: " + message.format(root=ROOT)], proc.stderr[-3000:]
