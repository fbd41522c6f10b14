"""The command line's small edges: no abbreviated flags, a stray value names the flag it followed,
an unknown flag points to its subcommand's help with the nearest real flags, and the published
code's flags map to ours (README "Coming from the published code").

Every case runs ``cli.main(argv)`` and fails while parsing, before any work: exit code 2 and one
line on stderr. The commands that would do work if the refusal were missing carry a bad setting
too (``--episodes 0``), so they fail fast with another message instead of training.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import pytest

from plastic_jax.cli import PUBLISHED_FLAGS, build_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def _refused(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    return _one_line(capsys)


# --- 1. abbreviated flags are refused --------------------------------------------------------------


@pytest.mark.parametrize("argv,flag,nearest", [
    (["meta-train", "--rul", "bio", "--episodes", "0"], "--rul", "did you mean --rule?"),
    (["meta-train", "--rule", "bio", "--hid", "8", "--episodes", "0"], "--hid", "did you mean --hidden?"),
    (["meta-train", "--meta", "1e-3", "--episodes", "0"], "--meta",
     "did you mean --meta-batch, --meta-clip or --meta-grad?"),
    (["meta-train", "--rule=bio", "--epi=0"], "--epi", "did you mean --episodes?"),
    (["evaluate", "--tas", "3", "--terms", "0"], "--tas", "did you mean --tasks?"),
    (["plot", "--win", "5", "RUN_DIR"], "--win", "did you mean --window?"),
    (["benchmark", "--rep", "0"], "--rep", "did you mean --repeats?"),
])
def test_an_abbreviated_flag_is_refused_with_the_flags_it_abbreviates(argv, flag, nearest, capsys):
    line = _refused(argv, capsys)
    command = argv[0]
    assert line.startswith(f"plastic-jax {command}: error: unrecognized arguments: {flag}")
    assert f"flags are not abbreviated: {nearest}" in line
    assert line.endswith(f"(see plastic-jax {command} --help)")


def test_no_parser_abbreviates_flags():
    """argparse's subcommand parsers do not inherit ``allow_abbrev``: every one must refuse."""
    parser = build_parser()
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(subparsers) == 1
    commands = subparsers[0].choices
    assert set(commands) == {"meta-train", "evaluate", "plot", "benchmark"}
    assert parser.allow_abbrev is False
    for name, p in commands.items():
        assert p.allow_abbrev is False, name
        assert parser.commands[name] is p


def test_full_flags_and_values_still_parse():
    parse = build_parser().parse_args
    args = parse(["meta-train", "--rule", "bio", "--hidden", "170,130", "--theta0", "-1", "--l1=0,1", "--resume"])
    assert (args.rule, args.hidden, args.theta0, args.l1, args.resume) == ("bio", (170, 130), -1.0, (0.0, 1.0), "")
    args = parse(["evaluate", "runs/x", "--theta", "0.1,0.2", "--tasks", "3"])
    assert (args.run_dir, args.theta, args.tasks) == ("runs/x", (0.1, 0.2), 3)


# --- 2. a stray value says which flag it followed ------------------------------------------------


@pytest.mark.parametrize("argv,hint", [
    (["meta-train", "--hidden", "170", "130"], "--hidden takes one comma-separated list: --hidden 170,130"),
    (["meta-train", "--hidden", "170", "130", "100", "--episodes", "0"],
     "--hidden takes one comma-separated list: --hidden 170,130,100"),
    (["meta-train", "--hidden=170", "130"], "--hidden takes one comma-separated list: --hidden 170,130"),
    (["meta-train", "--l1", "0", "1"], "--l1 takes one comma-separated list: --l1 0,1"),
    (["meta-train", "--episodes", "3", "7"], "7 follows --episodes 3, but --episodes takes one value"),
    (["meta-train", "--K", "5", "--M", "5", "5"], "5 follows --M 5, but --M takes one value"),
    (["meta-train", "--seed", "-1", "2"], "2 follows --seed -1, but --seed takes one value"),
    (["meta-train", "--overwrite", "5"], "5 follows --overwrite, which takes no value"),
    (["meta-train", "--resume", "a", "b"], "b follows --resume a, but --resume takes at most one value"),
    (["meta-train", "stray"], "stray is not the value of any flag"),
    (["evaluate", "run", "--tasks", "3", "4"], "4 follows --tasks 3, but --tasks takes one value"),
    (["evaluate", "--terms", "0", "--theta", "0.05", "0.01", "0.002"],
     "--theta takes one comma-separated list: --theta 0.05,0.01,0.002"),
    (["benchmark", "--rule", "bio", "f0"], "--rule takes one comma-separated list: --rule bio,f0"),
    # 0.3 went to RUN_DIR, the run directory is left over: the list is what to fix
    (["evaluate", "--baseline-grid", "0.1", "0.3", ROOT], "--baseline-grid takes one comma-separated list: "
                                                          "--baseline-grid 0.1,0.3"),
])
def test_a_stray_value_names_the_flag_it_followed(argv, hint, capsys):
    line = _refused(argv, capsys)
    assert f"; {hint} (see plastic-jax {argv[0]} --help)" in line


def test_a_list_item_read_as_run_dir_is_explained(capsys):
    line = _refused(["evaluate", "--terms", "0", "--theta", "0.1", "0.2"], capsys)
    assert line == ("plastic-jax evaluate: error: 0.2 was read as RUN_DIR, but --theta takes one comma-separated "
                    "list: --theta 0.1,0.2 (see plastic-jax evaluate --help)")


def test_an_existing_run_dir_after_a_list_flag_is_a_run_dir(tmp_path, capsys):
    # the positional names an existing directory: it is the RUN_DIR, not a list item
    assert main(["evaluate", "--theta", "0.1", str(tmp_path)]) == 2
    line = _one_line(capsys)
    assert "is not a run directory" in line and "comma-separated" not in line


# --- 3. an unknown flag points to its subcommand's help, with the closest flags ------------------


@pytest.mark.parametrize("argv,hint", [
    (["meta-train", "--lamb", "1"], "--lamb is the published code's flag; here give --l1"),
    (["meta-train", "--hiden", "8"], "no flag --hiden: did you mean --hidden?"),
    (["meta-train", "--meta_lr", "1e-3"], "flags are spelled with dashes: --meta-lr"),
    (["meta-train", "--zzzz"], "no flag --zzzz"),
    (["evaluate", "--feedbak", "fa"], "no flag --feedbak: did you mean --feedback?"),
    (["plot", "--titel", "x", "RUN_DIR"], "no flag --titel: did you mean --title?"),
])
def test_an_unknown_flag_points_to_the_subcommand_help(argv, hint, capsys):
    line = _refused(argv, capsys)
    command = argv[0]
    assert line.startswith(f"plastic-jax {command}: error: unrecognized arguments: {argv[1]}")
    assert line.endswith(f"; {hint} (see plastic-jax {command} --help)")
    assert "(see plastic-jax --help)" not in line


@pytest.mark.parametrize("argv,line", [
    (["--hel"], "plastic-jax: error: unrecognized arguments: --hel; flags are not abbreviated: did you mean "
                "--help? (see plastic-jax --help)"),
    (["--rule", "bio", "meta-train"], "plastic-jax: error: --rule is a flag of meta-train, evaluate or benchmark: "
                                      "put it after the subcommand, e.g. plastic-jax meta-train --rule "
                                      "(see plastic-jax --help)"),
])
def test_a_flag_before_the_subcommand_is_explained(argv, line, capsys):
    assert _refused(argv, capsys) == line


@pytest.mark.parametrize("flag", sorted(PUBLISHED_FLAGS))
def test_every_published_flag_names_ours(flag, capsys):
    line = _refused(["meta-train", flag, "1"], capsys)
    assert f"{flag} is the published code's flag; here give {PUBLISHED_FLAGS[flag]}" in line


def test_the_console_script_refuses_an_abbreviation_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "plastic_jax.cli", "meta-train", "--rul", "bio", "--episodes", "0"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "--rul" in proc.stderr and "--rule" in proc.stderr


# --- 5. README "Coming from the published code" ----------------------------------------------------


def _readme_table() -> list[list[str]]:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("## Coming from the published code", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows[1:]]


def _our_flags() -> set[str]:
    parser = build_parser()
    return {o for p in parser.commands.values() for a in p._actions for o in a.option_strings}


def test_the_readme_table_lists_every_published_flag_and_only_real_flags_of_ours():
    rows = _readme_table()
    assert rows and all(len(r) == 3 for r in rows)
    published = {f for r in rows for f in re.findall(r"`(--\w+)", r[0])}
    assert set(PUBLISHED_FLAGS) <= published
    ours = {f for r in rows for f in re.findall(r"`(?:plastic-jax \w+ )?(--[a-z0-9-]+)", r[2])}
    ours -= set(PUBLISHED_FLAGS)  # an example of theirs beside ours ("`--vec 2 9` is `--terms 0,2,9`")
    assert ours and ours <= _our_flags(), ours - _our_flags()
    # a published flag spelled as ours is ours (the parser accepts it); the others are in the mapping
    for flag in published - set(PUBLISHED_FLAGS):
        assert flag in _our_flags(), flag
