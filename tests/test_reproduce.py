"""scripts/reproduce.py: the --quick pipeline runs and the RESULTS.md section is replaced in place."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import reproduce  # noqa: E402


def test_write_section_keeps_what_it_did_not_write(tmp_path):
    p = str(tmp_path / "RESULTS.md")
    with open(p, "w") as f:
        f.write("# Results\n\nintro\n\n## Meta-test on held-out digits classes\n\nkept table\n")
    reproduce.write_section(p, "## Mine\n\nfirst")
    reproduce.write_section(p, "## Mine\n\nsecond")  # replaced, not appended twice
    text = open(p).read()
    assert text.count(reproduce.BEGIN) == 1 and text.count(reproduce.END) == 1
    assert "first" not in text and "second" in text
    assert text.startswith("# Results\n\nintro\n") and "## Meta-test on held-out digits classes\n\nkept table" in text
    with open(p, "a") as f:
        f.write("\n## Added after\n\nalso kept\n")
    reproduce.write_section(p, "third")
    text = open(p).read()
    assert "also kept" in text and "kept table" in text and "third" in text and "second" not in text


def _quick(tmp_path, *extra):
    res, figs = tmp_path / "RESULTS.md", tmp_path / "figures"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "reproduce.py"), "--quick", "--results", str(res),
         "--figures", str(figs), "--runs", str(tmp_path / "runs"), *extra],
        capture_output=True, text=True, cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return res.read_text(), figs


def test_quick_reproduce_of_fig3_writes_figures_and_table(tmp_path):
    text, figs = _quick(tmp_path, "--only", "fig3")
    for panel in ("accuracy", "loss", "theta", "alignment"):
        assert (figs / "fig3" / f"{panel}.png").stat().st_size > 1000
        assert (figs / "fig3" / f"{panel}.pdf").exists()
    assert "| f0-bp | f0 | bp |" in text and "| f0-fa | f0 | fa |" in text
    assert "| pool-fa | pool | fa | not run |" in text
    # bp: every layer's alignment angle is 0 (printed as 0.0 [0.0, 0.0])
    bp_row = next(line for line in text.splitlines() if line.startswith("| f0-bp | 0.0"))
    assert bp_row.count("0.0 [0.0, 0.0]") == 3


@pytest.mark.slow
def test_quick_reproduce_runs_every_experiment(tmp_path):
    text, figs = _quick(tmp_path)
    for fig in reproduce.FIGS:
        assert (figs / fig).is_dir()
    assert "not run" not in text
    assert "| ehebb,f0,f0 |" in text and "pool keeps F0, F2, F9" in text
