"""Shared CLI behaviour: where --demo writes, and exit codes from run()."""

from __future__ import annotations

import argparse

import pytest

import export_labels
import stats
from inspectkit.cli import run
from inspectkit.errors import UserError


def test_demo_writes_under_results_demo_unless_out_is_given():
    parser = stats.get_args_parser()
    assert parser.parse_args([]).out == "results"
    assert parser.parse_args(["--demo"]).out == "results/demo"
    assert parser.parse_args(["--demo", "--out", "x"]).out == "x"
    assert parser.parse_args(["--out", "x", "--demo"]).out == "x"


def test_demo_also_redirects_export_results():
    parser = export_labels.get_args_parser()
    assert parser.parse_args([]).results == "results"
    assert parser.parse_args(["--demo"]).results == "results/demo"
    assert parser.parse_args(["--demo", "--results", "r"]).results == "r"


class _Overflow(UserError):
    exit_code = 1


@pytest.mark.parametrize(("error", "code"), [(UserError("bad flag"), 2), (_Overflow("too long"), 1)])
def test_run_turns_user_errors_into_one_line_and_their_exit_code(error, code, capsys):
    def main(args):
        raise error

    with pytest.raises(SystemExit) as exc:
        run(main, argparse.ArgumentParser(prog="tool.py"), [])
    assert exc.value.code == code
    assert capsys.readouterr().err == f"tool.py: error: {error}\n"
