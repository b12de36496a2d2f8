"""run_all.py: the flags it passes each script parse with that script's own parser, and the pipeline runs in order."""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import types

import pytest
from report_results import make_results

import run_all
from inspectkit.results import read_json


def _args(*argv):
    return run_all.get_args_parser().parse_args(list(argv))


REAL_ARGS = ("--category", "bottle", "--data-root", "/data/mvtec", "--arch", "mobilenet_v2", "--weights",
             "/w/mobilenet_v2.pth", "--out", "/tmp/out")


@pytest.mark.parametrize("step", list(run_all.STEPS))
@pytest.mark.parametrize("argv", [("--demo",), REAL_ARGS], ids=["demo", "real"])
def test_each_script_accepts_its_flags(step, argv):
    """The argv run_all builds parses with the real script's parser, and the shared flags arrive."""
    args = _args(*argv)
    _, step_args = run_all.parse_step(step, run_all.step_argv(step, args))
    for name in ("out", "demo", "category", "data_root", "arch", "weights", "device"):
        if hasattr(step_args, name) and step not in ("report", "export"):
            assert getattr(step_args, name) == getattr(args, name) or (args.demo and name in ("arch", "weights"))
    if step == "export":  # its --out is the exported dataset, kept under run_all's --out; its JSON goes to --results
        assert step_args.results == args.out and step_args.out.startswith(args.out)
    if args.demo and step in ("train", "anomaly"):
        assert step_args.weights == "none" and step_args.arch == run_all.DEMO_ARCH
    if step == "report":
        assert step_args.results == args.out and step_args.pdf


def _fake_script(name, calls, results_dir):
    """A stand-in for a root script: records its argv, the command its results would record, and sys.argv[0];
    the 'stats' one writes a full results set."""

    class Parser:
        def parse_args(self, argv):
            return argparse.Namespace(argv=argv)

    def main(ns):
        calls.append((name, ns.argv, ns.command, sys.argv[0]))
        if name == "stats":
            make_results(results_dir, seed=11, demo=True, category="demo")

    return types.SimpleNamespace(get_args_parser=Parser, main=main)


def test_pipeline_runs_every_step_in_order(tmp_path, monkeypatch, capsys):
    calls = []
    out = tmp_path / "out"
    real_import = importlib.import_module
    fakes = {m: _fake_script(m, calls, out) for m in run_all.STEPS.values() if m != "build_report"}
    monkeypatch.setattr(run_all.importlib, "import_module", lambda m: fakes.get(m) or real_import(m))
    summary = run_all.main(_args("--demo", "--out", str(out)))
    assert [c[0] for c in calls] == [m for m in run_all.STEPS.values() if m != "build_report"]
    assert all(command == [f"{name}.py", *argv] for name, argv, command, _ in calls)  # each step's own command
    assert {argv0 for *_, argv0 in calls} == {sys.argv[0]}  # handed over as an argument: sys.argv is left alone
    assert calls[1][1][:2] == ["--attempt", "all"]
    assert summary["report"]["pages"] <= 3
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.pdf'}" in printed
    assert "best: attempt" in printed and "image AUROC" in printed
    assert (out / "report.pdf").is_file()
    # the real report step records its own command, as a user would type it, not run_all.py's
    report_args = run_all.step_argv("report", _args("--demo", "--out", str(out)))
    recorded = read_json(out / "report_provenance.json")["report"]["command"]
    assert recorded == shlex.join(["build_report.py", *report_args])


def test_step_failure_names_the_step(tmp_path, monkeypatch):
    from inspectkit.errors import UserError

    def failing_main(ns):
        raise UserError("no data here")

    parser = types.SimpleNamespace(parse_args=lambda a: argparse.Namespace())
    fake = types.SimpleNamespace(get_args_parser=lambda: parser, main=failing_main)
    monkeypatch.setattr(run_all.importlib, "import_module", lambda m: fake)
    with pytest.raises(UserError, match="step stats failed: no data here"):
        run_all.main(_args("--demo", "--out", str(tmp_path)))


@pytest.mark.parametrize("extra, says", [(["--data-root", "DIR"], "--demo generates its own data; drop --data-root"),
                                         (["--category", "bottle"], "drop --category bottle"),
                                         (["--data-root", "DIR", "--category", "bottle"], "drop --category bottle")])
def test_demo_with_data_flags_is_refused_before_any_step(extra, says, tmp_path, monkeypatch, capsys):
    steps = []
    monkeypatch.setattr(run_all.importlib, "import_module", lambda m: steps.append(m))
    argv = ["--demo", "--out", str(tmp_path / "out"), *[a.replace("DIR", str(tmp_path)) for a in extra]]
    with pytest.raises(SystemExit) as exc:
        run_all.run(run_all.main, run_all.get_args_parser(), argv)
    assert exc.value.code == 2 and steps == [] and not (tmp_path / "out").exists()
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and says in err


@pytest.mark.parametrize("argv, says", [
    (("--only", "stats", "--name", "Ada"), "--name does nothing with --only stats"),
    (("--only", "report", "export", "--weights", "w.pth", "--device", "cpu"),
     "--weights and --device do nothing with --only report export"),
])
def test_flags_no_chosen_step_reads_are_refused(argv, says, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_all_cli([*argv, "--demo", "--out", str(tmp_path / "out")])
    assert exc.value.code == 2 and says in capsys.readouterr().err and not (tmp_path / "out").exists()


def run_all_cli(argv):
    from inspectkit.cli import run

    run(run_all.main, run_all.get_args_parser(), argv)
