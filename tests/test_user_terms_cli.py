"""A user's plasticity terms from the command line and config files (``--terms-from``,
``plastic_jax/user_terms.py``): the pool is F0-F9 then the module's terms (ids 10, 11, …, or their
names), the run records the file's sha256, ``--resume`` and ``evaluate`` rebuild the same pool and
refuse a changed file, and every bad terms file is one line and exit code 2.

The terms are ``tests/user_terms.py``'s (pre_decay = 10, post_err = 11, dot_terms = 12), copied into
a temporary directory so that the tests may edit the copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from plastic_jax.cli import build_parser, config_from_args, main

HERE = os.path.dirname(os.path.abspath(__file__))
USER_TERMS = os.path.join(HERE, "user_terms.py")
#: a tiny run (forward mode: its program is cached across runs; see tests/test_checkpoint.py)
TINY = ["--hidden", "8", "--M", "2", "--K", "3", "--Q", "1", "--meta-grad", "forward", "--episodes", "3",
        "--analysis-every", "0", "--no-progress"]


def _records(run: str) -> list[dict]:
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _config(run: str) -> dict:
    with open(os.path.join(run, "config.json")) as f:
        return json.load(f)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.fixture(scope="module")
def terms_file(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("terms") / "my_terms.py")
    shutil.copy(USER_TERMS, path)
    return path


@pytest.fixture(scope="module")
def run(terms_file, tmp_path_factory) -> str:
    """3 episodes of F0 and pre_decay (id 10), from the command line."""
    out = str(tmp_path_factory.mktemp("runs") / "cli")
    assert main(["meta-train", "--terms-from", terms_file, "--terms", "0,10", *TINY, "--out", out]) == 0
    return out


def test_a_user_term_trains_from_the_cli_labelled_by_its_id_and_recorded_by_name(run, terms_file):
    recs = _records(run)
    assert [r["episode"] for r in recs] == [0, 1, 2]
    for r in recs:
        assert set(r["theta"]) == {"F0", "F10"}
    # θ_10 moved: the user's term is in the meta-gradient, not a dead entry of Θ
    assert recs[-1]["theta"]["F10"] != 0.0
    cfg = _config(run)
    assert cfg["terms_from"] == terms_file and cfg["terms"] == "0,10"
    with open(terms_file, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert cfg["extra"]["user_terms"] == {"terms_from": terms_file, "path": os.path.abspath(terms_file),
                                          "sha256": digest,
                                          "names": {"F10": "pre_decay", "F11": "post_err", "F12": "dot_terms"}}
    with open(os.path.join(run, "summary.json")) as f:
        assert set(json.load(f)["theta"][0]) == {"F0", "F10"}


def test_a_config_file_trains_the_same_run_and_takes_term_names(run, terms_file, tmp_path):
    """``terms_from`` in a JSON config, the user term named rather than numbered: the same episodes
    as the command line's, to the bit."""
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"terms_from": terms_file, "terms": "0,pre_decay", "hidden": [8], "M": 2, "K": 3,
                                "Q": 1, "estimator": "forward", "episodes": 3, "analysis_every": 0}))
    out = str(tmp_path / "from_file")
    assert main(["meta-train", "--config", str(path), "--no-progress", "--out", out]) == 0
    mine, theirs = _records(out), _records(run)[:3]
    assert [r["theta"] for r in mine] == [r["theta"] for r in theirs]
    assert [r["meta_loss"] for r in mine] == [r["meta_loss"] for r in theirs]
    assert _config(out)["extra"]["user_terms"]["sha256"] == _config(run)["extra"]["user_terms"]["sha256"]


def test_resume_rebuilds_the_pool_and_continues(run, tmp_path):
    out = str(tmp_path / "resumed")
    shutil.copytree(run, out)
    assert main(["meta-train", "--resume", out, "--episodes", "5", "--no-progress"]) == 0
    recs = _records(out)
    assert [r["episode"] for r in recs] == [0, 1, 2, 3, 4]
    assert all(set(r["theta"]) == {"F0", "F10"} for r in recs)
    assert _config(out)["extra"]["user_terms"] == _config(run)["extra"]["user_terms"]


def test_a_changed_terms_file_is_refused_on_resume_and_by_evaluate(run, terms_file, capsys):
    with open(terms_file) as f:
        original = f.read()
    try:
        with open(terms_file, "a") as f:
            f.write("\n# edited after the run\n")
        for argv in (["meta-train", "--resume", run, "--episodes", "5", "--no-progress"],
                     ["evaluate", run, "--tasks", "2"]):
            assert main(argv) == 2
            line = _one_line(capsys)
            assert f"--terms-from {terms_file!r}" in line
            assert "changed since the run recorded it" in line and "restore that file" in line
    finally:
        with open(terms_file, "w") as f:
            f.write(original)
    assert len(_records(run)) == 3  # nothing ran


def test_another_terms_file_on_resume_is_a_changed_setting(run, capsys):
    assert main(["meta-train", "--resume", run, "--terms-from", USER_TERMS, "--no-progress"]) == 2
    line = _one_line(capsys)
    assert "--resume: terms_from is" in line and "(--terms-from)" in line


def test_evaluate_rebuilds_the_runs_pool(run, terms_file):
    from plastic_jax.evaluate import run_config
    from plastic_jax.experiment import rule_of
    from plastic_jax.user_terms import load

    rule = rule_of(run_config(run))
    assert rule.pool == load(terms_file).pool and rule.terms == (0, 10)
    assert [t.name for t in rule.term_pool[10:]] == ["pre_decay", "post_err", "dot_terms"]
    assert rule.theta_labels() == ("F0", "F10")


def _cfg(argv: list[str]):
    return config_from_args(build_parser().parse_args(argv))


def test_a_module_name_and_term_names_in_terms_and_layer_rules():
    """``user_terms`` is importable here (conftest puts tests/ on the path): a module name works as a
    file does, and names pick ids in either rule setting."""
    import user_terms

    from plastic_jax.config import layer_term_sets, validate
    from plastic_jax.experiment import rule_of

    cfg = _cfg(["meta-train", "--terms-from", "user_terms", "--terms", "0,Pre_Decay,F12", "--hidden", "8"])
    validate(cfg)
    assert layer_term_sets(cfg) == ((0, 10, 12),) * 2
    assert rule_of(cfg).pool == user_terms.USER_POOL
    cfg = _cfg(["meta-train", "--terms-from", "user_terms", "--layer-rules", "f0,0+post_err", "--hidden", "8"])
    assert layer_term_sets(cfg) == ((0,), (0, 11))
    cfg = _cfg(["meta-train", "--terms-from", "user_terms", "--rule", "bio", "--hidden", "8"])
    assert layer_term_sets(cfg) == ((0, 2, 9),) * 2


def test_pool_wins_over_declaration_order(tmp_path):
    from plastic_jax.user_terms import load

    path = tmp_path / "ordered.py"
    path.write_text(f"import sys\nsys.path.insert(0, {HERE!r})\n"
                    "from user_terms import pre_decay, dot_terms\n"
                    "from plastic_jax.plasticity import PAPER_POOL\n"
                    "POOL = PAPER_POOL + (dot_terms, pre_decay)\n")
    assert [t.name for t in load(str(path)).terms] == ["dot_terms", "pre_decay"]
    path.write_text(path.read_text().replace("POOL = PAPER_POOL + ", "TERMS = "))
    assert [t.name for t in load(str(path)).terms] == ["dot_terms", "pre_decay"]
    path.write_text(f"import sys\nsys.path.insert(0, {HERE!r})\nfrom user_terms import pre_decay, dot_terms\n")
    assert [t.name for t in load(str(path)).terms] == ["pre_decay", "dot_terms"]  # the module's binding order


TERM = ("import jax.numpy as jnp\nfrom plastic_jax.plasticity import Hadamard, term\n\n"
        "@term({name!r}, reads=('post', 'pre'))\ndef decay(v):\n    return [Hadamard(-jnp.ones_like(v.post), v.pre)]\n")

BAD_FILES = [
    ("missing", None, "no such file"),
    ("syntax", "import jax\n\ndef broken(:\n    pass\n", "syntax error at line 3"),
    ("raises", "x = 1\nraise RuntimeError('boom')\n", "failed to load at line 2: RuntimeError: boom"),
    ("bad_reads", "from plastic_jax.plasticity import term\n\n@term('t', reads=('bogus',))\ndef t(v):\n"
                  "    return []\n", "failed to load at line 3: TermError: term 't' reads unknown vectors"),
    ("no_terms", "import jax.numpy as jnp\n\ndef not_a_term(v):\n    return []\n", "declares no plasticity terms"),
    ("clash", TERM.format(name="F3"), "term name 'F3' clashes with the paper's F3; rename it"),
    ("id_like", TERM.format(name="f12"), "term name 'f12' looks like a term id"),
    ("rule_name", TERM.format(name="bio"), "term name 'bio' is also a named rule"),
    ("twice", TERM.format(name="d") + "\n@term('D', reads=())\ndef other(v):\n    return []\n",
     "two terms are named 'D'"),
    ("not_a_term", "def f(v):\n    return []\n\nPOOL = [f]\n",
     "POOL item 0 is function 'f', not a plasticity.Term"),
    ("both", TERM.format(name="d") + "POOL = [decay]\nTERMS = [decay]\n", "defines both POOL and TERMS"),
]


@pytest.mark.parametrize("name,text,words", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_terms_file_is_one_line_and_exit_2(name, text, words, tmp_path, capsys):
    path = tmp_path / f"{name}.py"
    if text is not None:
        path.write_text(text)
    # --M 11 too (digits has 10 classes): were the terms file accepted, the run would stop on that instead,
    # after loading the data and before training
    assert main(["meta-train", "--terms-from", str(path), "--terms", "0,10", "--M", "11",
                 "--out", str(tmp_path / "run")]) == 2
    line = _one_line(capsys)
    assert line.startswith(f"plastic-jax meta-train: error: --terms-from {str(path)!r}: "), line
    assert words in line, line
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("terms,words", [
    ("0,nope", "unknown term 'nope' in '0,nope': use a named rule"),
    ("0,13", "term id(s) [13] outside the pool of 13 terms (F0-F9 and --terms-from's 3: ids 0-12)"),
])
def test_an_unknown_user_term_is_one_line_and_exit_2(terms, words, terms_file, tmp_path, capsys):
    assert main(["meta-train", "--terms-from", terms_file, "--terms", terms, "--M", "11",
                 "--out", str(tmp_path / "run")]) == 2
    assert words in _one_line(capsys)


def test_a_module_name_that_does_not_import_is_one_line(tmp_path, capsys):
    assert main(["meta-train", "--terms-from", "no_such_pkg_xyz.terms", "--M", "11",
                 "--out", str(tmp_path / "run")]) == 2
    line = _one_line(capsys)
    assert "--terms-from 'no_such_pkg_xyz.terms': no such file, and no importable module" in line


def test_a_config_files_bad_terms_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text(f'terms-from = "{tmp_path / "gone.py"}"\nterms = "0,10"\nM = 11\n')
    assert main(["meta-train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    line = _one_line(capsys)
    assert f"--terms-from {str(tmp_path / 'gone.py')!r}: no such file" in line
    path.write_text('terms-from = ""\n')
    assert main(["meta-train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "--terms-from is empty" in _one_line(capsys)


def test_without_terms_from_an_id_past_nine_is_still_refused(tmp_path, capsys):
    assert main(["meta-train", "--terms", "0,10", "--M", "11", "--out", str(tmp_path / "run")]) == 2
    assert "10" in _one_line(capsys)
