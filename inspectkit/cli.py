"""What every script shares at its boundary: common flags, resolving the data (or the demo), and exit codes.

Scripts build their parser with ``script_parser(__doc__)`` (the docstring's examples become the --help epilog) and
call ``run(main, get_args_parser())``: a ``UserError`` becomes one line on stderr and exit code 2, on a line of its
own even while a progress bar is drawn. A flag that does nothing in the chosen mode is refused by
``refuse_unused_flags`` rather than ignored.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from .data import (
    DATA_ROOT_ENV,
    DEFAULT_CATEGORY,
    DEFAULT_DATA_ROOT,
    Category,
    Prewarm,
    check_category_name,
    load_category,
)
from .errors import UserError
from .names import VISIBLE_ERRORS, one_line

DEFAULT_OUT = "results"
DEMO_OUT = "results/demo"
DEFAULT_WEIGHTS = "imagenet"
DEMO_WEIGHTS = "none"  # what --demo uses without --weights (and what run_all.py --demo passes): no download
DEVICES = ("auto", "cpu", "cuda", "mps")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the docstring's line breaks and shows each flag's default, except an empty one (None or "") and a
    switch's, where the help text says what leaving the flag out means."""

    def _get_help_string(self, action: argparse.Action) -> str:
        default = action.default
        if default in (None, "") or action.nargs == 0 or default is argparse.SUPPRESS or not action.option_strings:
            return action.help or ""
        if isinstance(default, (list, tuple)):  # nargs="+": show the values as they are typed, not as a list
            shown = " ".join(str(v) for v in default).replace("%", "%%")
            return f"{action.help} (default: {shown})"
        return super()._get_help_string(action)


def script_parser(doc: str) -> argparse.ArgumentParser:
    """The parser of a root script: the docstring's first paragraph is the description, the rest (the example
    commands) the epilog, and argparse shows every default.

    Its namespace also holds ``command``, no flag of its own: the command line the run's results record as their
    provenance (``results.provenance(command=args.command)``). None, the default, is this process's ``sys.argv``;
    run_all.py sets each step's own, as a user would type it."""
    description, _, epilog = doc.strip().partition("\n\n")
    parser = argparse.ArgumentParser(description=description, epilog=epilog or None, formatter_class=HelpFormatter)
    parser.set_defaults(command=None)
    return parser


class _DefaultOut(str):
    """The default of ``--out``: a plain string whose type tells that the user gave no ``--out``."""


_OUT_NOT_GIVEN = _DefaultOut(DEFAULT_OUT)
RESULTS_DEFAULT = _OUT_NOT_GIVEN  # for other flags naming the results folder: also redirected by --demo


class _DefaultWeights(str):
    """The default of ``--weights``: a plain string whose type tells that the user gave no ``--weights``."""


WEIGHTS_DEFAULT = _DefaultWeights(DEFAULT_WEIGHTS)


class _DemoAction(argparse.Action):
    """``--demo``: set the flag and, unless ``--out`` was given, write under results/demo/ so that demo runs
    never overwrite the real results in results/."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, True)
        for name, value in vars(namespace).items():  # --out, and export_labels.py's --results
            if isinstance(value, _DefaultOut):
                setattr(namespace, name, _DefaultOut(DEMO_OUT))  # still a default: the user gave no --out


WEIGHTS_HELP = ("imagenet (torchvision's weights API; needs internet or its cache), none (random init), "
                "or PATH to a state_dict file for --arch, e.g. mobilenet_v2.pth (see the README for getting one "
                f"onto a machine without internet); {DEMO_WEIGHTS} with --demo")


def non_negative_int(text: str) -> int:
    """argparse ``type`` for seeds and counts that may be 0: a whole number >= 0, else argparse's one-line error
    naming the flag (exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def seed(text: str) -> int:
    """argparse ``type`` of every ``--seed``: 0 .. 2**32 - 1 (what numpy and scikit-learn accept)."""
    value = non_negative_int(text)
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"must be below 2**32, got {value}")
    return value


def add_data_args(parser: argparse.ArgumentParser, category_default: str | None = DEFAULT_CATEGORY) -> None:
    """``--category``, ``--data-root`` and ``--demo``."""
    group = parser.add_argument_group("data")
    group.add_argument("--category", default=None,
                       help=f"category folder name, e.g. bottle; if not given: {category_default}, or the folder "
                            "--data-root points at")
    group.add_argument("--data-root", default=None,
                       help=f"folder holding category folders, or one category folder; if not given: "
                            f"${DATA_ROOT_ENV}, else ./{DEFAULT_DATA_ROOT}")
    group.add_argument("--demo", action=_DemoAction,
                       help="use a small synthetic category generated into the cache (no download needed); "
                            f"results go to {DEMO_OUT}/ unless --out is given")


def add_device_arg(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--device``."""
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="where to compute; auto picks cuda, then mps, then cpu")


def add_model_args(parser: argparse.ArgumentParser, arch_default: str) -> None:
    """``--arch``, ``--weights`` (resolve it with ``resolve_weights``) and ``--device``."""
    group = parser.add_argument_group("model")
    group.add_argument("--arch", default=arch_default, help="TorchVision model name")
    group.add_argument("--weights", default=WEIGHTS_DEFAULT, help=WEIGHTS_HELP)
    add_device_arg(group)


def resolve_weights(args: argparse.Namespace) -> str:
    """``args.weights`` as given; with ``--demo`` and no ``--weights``, DEMO_WEIGHTS (random init, so the demo
    needs no internet), said in one line. Sets ``args.weights`` to the plain string and returns it."""
    if isinstance(args.weights, _DefaultWeights) and getattr(args, "demo", False):
        print(f"--demo without --weights: using --weights {DEMO_WEIGHTS} (random init, nothing to download); "
              f"pass --weights {DEFAULT_WEIGHTS} or a file for pretrained weights")
        args.weights = DEMO_WEIGHTS
    args.weights = str(args.weights)
    return args.weights


def add_out_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=_OUT_NOT_GIVEN,
                        help=f"folder for JSON results and figures; {DEMO_OUT} with --demo")


def check_demo_flags(args: argparse.Namespace) -> None:
    """With ``--demo``, refuse ``--data-root`` and a ``--category`` other than the synthetic one: both would be
    ignored otherwise. Every script (and run_all.py, before its first step) calls this."""
    if not getattr(args, "demo", False):
        return
    from .synthetic import DEMO_CATEGORY

    if args.category not in (None, DEMO_CATEGORY):
        raise UserError(f"--demo uses the synthetic category '{DEMO_CATEGORY}'; drop --category {args.category}")
    if args.data_root:
        raise UserError("--demo generates its own data; drop --data-root")


def resolve_category(args: argparse.Namespace, *, validate: bool = True, progress: bool = True,
                     prewarm: Prewarm | None = None) -> Category:
    """Load the category the flags name; with ``--demo``, generate and use the synthetic one. ``prewarm``: the
    model input size to store each checked image at (see ``data.validate_category``)."""
    if getattr(args, "demo", False):
        from .synthetic import DEMO_CATEGORY, demo_root

        check_demo_flags(args)
        root = demo_root()
        args.category = DEMO_CATEGORY
        return load_category(root, DEMO_CATEGORY, validate=validate, progress=progress, demo=True,
                             prewarm=prewarm)
    return load_category(args.data_root, args.category, validate=validate, progress=progress, prewarm=prewarm)


def data_root_of(category: Category) -> Path:
    """The folder that holds the category folder (what ``--data-root`` resolved to)."""
    return category.root.parent


def flag_given(parser: argparse.ArgumentParser, args: argparse.Namespace, dest: str) -> bool:
    """Whether the user changed ``dest`` from its default (a default redirected by --demo still counts as one)."""
    value = getattr(args, dest, None)
    if isinstance(value, _DefaultOut | _DefaultWeights):
        return False
    return value != parser.get_default(dest)


def _flag_name(action: argparse.Action) -> str:
    """The flag as the help shows it first among its long spellings (``--sam-positive``, not its alias)."""
    return next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])


def refuse_unused_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, used: Iterable[str],
                        mode: str) -> None:
    """Refuse, in one line naming it, a flag the user gave that does nothing in the chosen ``mode`` (e.g. "with
    --load and --images"): every optional argument whose ``dest`` is not in ``used`` and whose value differs from
    its argparse default. Without this, a typo'd plan (``--false-alarm 0.3`` when scoring with a saved detector)
    runs to the end and silently uses something else."""
    used = set(used) | {"help"}
    unused = [_flag_name(action) for action in parser._actions
              if action.option_strings and action.dest not in used and action.default is not argparse.SUPPRESS
              and flag_given(parser, args, action.dest)]
    if unused:
        flags = " and ".join([", ".join(unused[:-1]), unused[-1]] if len(unused) > 1 else unused)
        raise UserError(f"{flags} {'does' if len(unused) == 1 else 'do'} nothing {mode}; drop "
                        f"{'it' if len(unused) == 1 else 'them'}")


def close_progress_bars() -> None:
    """Close every open tqdm bar, so that what is printed next starts on a line of its own (a bar's line is
    finished or cleared, never left for an error message to be glued to)."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        with contextlib.suppress(Exception):  # a bar whose stream is gone: nothing left to tidy
            bar.close()


def _tolerant_streams() -> None:
    """stdout and stderr show a name that is not UTF-8 as the files do (``caf\\xe9.png``, ``names.VISIBLE_ERRORS``)
    rather than fail on it: printing such a name in a UTF-8 locale raises otherwise, after all the work is done."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and getattr(stream, "errors", "strict") == "strict":
            with contextlib.suppress(ValueError, OSError):  # a stream that cannot change it now keeps its own
                stream.reconfigure(errors=VISIBLE_ERRORS)


class _LineTracker:
    """A text stream (stderr) that keeps every message on a line of its own: a progress bar leaves its line open
    (it redraws it after a carriage return), so text that is not a bar's (a warning, an error) and would continue
    that line starts a new one instead; in a log, the bar and the message are two lines, not one."""

    BAR_START = ("\r", "\n", "\x1b")  # how tqdm's writes begin: a redraw, a move to another line, a cursor move

    def __init__(self, stream) -> None:
        self.stream = stream
        self.at_line_start = True
        self.bar_line_open = False

    def write(self, text: str) -> int:
        if not text:
            return self.stream.write(text)
        if self.bar_line_open and not text.startswith(self.BAR_START):
            self.stream.write("\n")
        self.bar_line_open = (text.startswith("\r") and not text.endswith("\n")) or (
            self.bar_line_open and text.startswith("\x1b") and not text.endswith("\n"))
        self.at_line_start = text.endswith("\n")
        return self.stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def _report(stream: _LineTracker, message: str) -> None:
    """``message`` on a line of its own: open progress bars closed first, and a line a bar left open ended."""
    close_progress_bars()
    if not stream.at_line_start:
        stream.write("\n")
    print(message, file=stream)


def run(main: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser,
        argv: list[str] | None = None) -> None:
    """Parse ``argv``, check ``--category`` is a plain folder name, and call ``main``; a UserError exits with its
    code (2 for bad input) and one line (on a line of its own, whatever was drawn before and whatever the names
    in it hold), Ctrl-C exits 130."""
    _tolerant_streams()
    args = parser.parse_args(argv)
    stderr = sys.stderr = _LineTracker(sys.stderr)  # progress bars and messages alike write through it
    try:
        if getattr(args, "category", None) is not None:  # every script's --category, before any work
            check_category_name(args.category)
        main(args)
    except UserError as exc:
        _report(stderr, f"{parser.prog}: error: {one_line(str(exc))}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _report(stderr, f"{parser.prog}: interrupted")
        sys.exit(130)
    except BaseException:
        close_progress_bars()  # a traceback, too, starts on a line of its own
        if not stderr.at_line_start:
            stderr.write("\n")
        raise
    finally:
        if sys.stderr is stderr:
            sys.stderr = stderr.stream
