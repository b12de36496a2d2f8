"""Shared CLI behaviour: where --demo writes, and exit codes from run()."""

from __future__ import annotations

import argparse
import os
import sys

import pytest

import export_labels
import stats
from inspectkit import cli
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


SCRIPTS = ("stats", "train", "evaluate", "export_labels", "build_report", "run_all")


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_shows_the_docstring_examples_and_argparse_defaults(name):
    import importlib

    script = importlib.import_module(name)
    parser = script.get_args_parser()
    text = parser.format_help()
    assert parser.epilog and parser.epilog.startswith("Examples:")
    assert parser.epilog.strip() in text and f"python {name}.py" in parser.epilog
    assert "../shared" not in text and "(default:" in text
    for action in parser._actions:  # defaults are shown by the formatter, never typed into a help string
        assert "default:" not in (action.help or ""), action.option_strings


def test_help_formatter_leaves_out_empty_defaults_and_shows_lists_as_typed():
    parser = argparse.ArgumentParser(formatter_class=cli.HelpFormatter)
    parser.add_argument("--size", type=int, default=224, help="pixels")
    parser.add_argument("--layers", default=None, help="stages; if not given, the arch's own")
    parser.add_argument("--fast", action="store_true", help="go fast")
    parser.add_argument("--format", nargs="+", default=["yolo", "coco"], help="formats")
    text = " ".join(parser.format_help().split())
    assert "pixels (default: 224)" in text and "formats (default: yolo coco)" in text
    assert "the arch's own --fast go fast --format" in text and "None" not in text and "False" not in text


def test_export_flags_are_export_options_fields_with_its_defaults():
    from dataclasses import fields

    from inspectkit.export import ExportOptions

    args = export_labels.get_args_parser().parse_args([])
    for field in fields(ExportOptions):
        if field.name != "formats":  # --format takes 'all' as well as the format names
            assert getattr(args, field.name) == getattr(ExportOptions, field.name), field.name
    assert export_labels.get_args_parser().parse_args(["--sam-points", "5"]).sam_positive == 5  # the old name


@pytest.mark.parametrize(("argv", "weights", "said"), [
    (["--demo"], cli.DEMO_WEIGHTS, True),
    (["--demo", "--weights", "imagenet"], "imagenet", False),
    (["--weights", "w.pth", "--demo"], "w.pth", False),
    ([], cli.DEFAULT_WEIGHTS, False),
])
def test_demo_without_weights_uses_random_init_and_says_so(argv, weights, said, capsys):
    parser = argparse.ArgumentParser()
    cli.add_data_args(parser)
    cli.add_model_args(parser, arch_default="resnet18")
    args = parser.parse_args(argv)
    assert cli.resolve_weights(args) == weights == args.weights and type(args.weights) is str
    out = capsys.readouterr().out
    assert (f"using --weights {cli.DEMO_WEIGHTS}" in out and len(out.splitlines()) == 1) if said else out == ""


def test_run_all_demo_weights_are_the_scripts_demo_weights():
    import run_all
    from inspectkit.steps import _model_flags

    assert _model_flags(run_all.get_args_parser().parse_args(["--demo"]))[-2:] == ["--weights", cli.DEMO_WEIGHTS]


@pytest.mark.parametrize("script", ["stats", "train", "evaluate", "export_labels", "build_report", "run_all"])
@pytest.mark.parametrize("category", ["../outside", "a/b", "/abs/path", "..", "a\\b"])
def test_every_script_refuses_a_path_like_category_in_one_line(script, category, tmp_path, monkeypatch, capsys):
    import importlib

    module = importlib.import_module(script)
    monkeypatch.chdir(tmp_path)
    called = []
    monkeypatch.setattr(module, "main", lambda args: called.append(args))
    with pytest.raises(SystemExit) as exc:
        run(module.main, module.get_args_parser(), ["--category", category])
    assert exc.value.code == 2 and not called
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"--category {category!r} is not a category folder name" in err
    assert not list(tmp_path.iterdir())


def test_non_negative_int_and_seed_types():
    assert cli.non_negative_int("0") == 0 and cli.seed("4294967295") == 2**32 - 1
    for bad in ("-1", "1.5", "x", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.non_negative_int(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="below 2"):
        cli.seed(str(2**32))


# -- flags that do nothing, errors on their own line, names that would break a line ----------------------------------

def _toy_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toy.py")
    parser.add_argument("--load")
    parser.add_argument("--false-alarm", type=float, default=0.01)
    parser.add_argument("--coreset-ratio", type=float, default=0.02)
    parser.add_argument("--sam-positive", "--sam-points", type=int, default=3)
    cli.add_out_arg(parser)
    cli.add_data_args(parser)
    return parser


def test_flags_that_do_nothing_in_the_chosen_mode_are_named_and_refused():
    parser = _toy_parser()
    used = {"load", "out", "demo"}
    cli.refuse_unused_flags(parser, parser.parse_args(["--load", "d.pt", "--demo"]), used, "when scoring")
    cli.refuse_unused_flags(parser, parser.parse_args(["--load", "d.pt", "--false-alarm", "0.01"]), used,
                            "when scoring")  # the default value typed out changes nothing
    with pytest.raises(UserError, match=r"^--false-alarm and --coreset-ratio do nothing when scoring; drop them$"):
        cli.refuse_unused_flags(parser, parser.parse_args(["--false-alarm", "0.3", "--coreset-ratio", "0.5"]),
                                used, "when scoring")
    with pytest.raises(UserError, match=r"^--sam-positive does nothing when scoring; drop it$"):
        cli.refuse_unused_flags(parser, parser.parse_args(["--sam-points", "5"]), used, "when scoring")
    with pytest.raises(UserError, match="--out"):
        cli.refuse_unused_flags(parser, parser.parse_args(["--out", "x"]), {"load"}, "when exporting")
    cli.refuse_unused_flags(parser, parser.parse_args(["--demo"]), {"demo"}, "when exporting")  # its --out default


def test_an_error_starts_on_its_own_line_after_an_open_progress_bar(capsys):
    from tqdm import tqdm

    def main(args):
        bar = tqdm(total=3, desc="checkpoints", file=sys.stderr)  # left open, as a crashing loop leaves it
        bar.update(1)
        raise UserError("no checkpoint x.pt")

    with pytest.raises(SystemExit) as exc:
        run(main, argparse.ArgumentParser(prog="evaluate.py"), [])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    lines = err.split("\n")  # as a log viewer or grep sees it: a carriage return does not start a line
    assert [line for line in lines if "error:" in line] == ["evaluate.py: error: no checkpoint x.pt"]
    assert not list(tqdm._instances)  # the bar was closed, not left to redraw over the message


def test_an_error_naming_odd_files_stays_one_line_and_prints(capsys):
    name = os.fsdecode(b"caf\xe9\n.png")

    def main(args):
        print(f"scoring {name}")  # a strict UTF-8 stream (capsys') would raise on it
        raise UserError(f"cannot read {name}")

    with pytest.raises(SystemExit):
        run(main, argparse.ArgumentParser(prog="x.py"), [])
    out, err = capsys.readouterr()
    assert out == "scoring caf\\xe9\n.png\n"
    assert err == "x.py: error: cannot read caf\\xe9\\x0a.png\n"


def test_a_warning_after_a_progress_bar_is_a_line_of_its_own_and_bars_keep_their_lines(capsys):
    from tqdm import tqdm

    def main(args):
        for _ in tqdm(range(3), desc="checking", file=sys.stderr, leave=False):
            pass
        print("warning: skipped a.png", file=sys.stderr)
        for _ in tqdm(range(2), desc="scoring", file=sys.stderr):  # leave=True: it ends its own line
            pass
        print("problem: b.png", file=sys.stderr)

    run(main, argparse.ArgumentParser(prog="x.py"), [])
    lines = capsys.readouterr().err.split("\n")
    assert "warning: skipped a.png" in lines and "problem: b.png" in lines
    assert "" not in lines[:-1]  # no blank line added after a bar that ended its line itself
