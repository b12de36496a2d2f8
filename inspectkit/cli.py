"""What every script shares at its boundary: common flags, resolving the data (or the demo), and exit codes.

Scripts call ``run(main, get_args_parser())``: a ``UserError`` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from .data import DATA_ROOT_ENV, DEFAULT_CATEGORY, DEFAULT_DATA_ROOT, Category, load_category
from .errors import UserError

DEFAULT_OUT = "results"
DEMO_OUT = "results/demo"


class _DefaultOut(str):
    """The default of ``--out``: a plain string whose type tells that the user gave no ``--out``."""


_OUT_NOT_GIVEN = _DefaultOut(DEFAULT_OUT)
RESULTS_DEFAULT = _OUT_NOT_GIVEN  # for other flags naming the results folder: also redirected by --demo


class _DemoAction(argparse.Action):
    """``--demo``: set the flag and, unless ``--out`` was given, write under results/demo/ so that demo runs
    never overwrite the real results in results/."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, True)
        for name, value in vars(namespace).items():  # --out, and export_labels.py's --results
            if isinstance(value, _DefaultOut):
                setattr(namespace, name, DEMO_OUT)


WEIGHTS_HELP = ("imagenet (torchvision's weights API; needs internet or its cache), none (random init), "
                "or PATH to a state_dict file for --arch, e.g. ../shared/weights/mobilenet_v2-qnnpack_dequant-"
                "e48290fe.pth")


def add_data_args(parser: argparse.ArgumentParser, category_default: str | None = DEFAULT_CATEGORY) -> None:
    """``--category``, ``--data-root`` and ``--demo``."""
    group = parser.add_argument_group("data")
    group.add_argument("--category", default=None,
                       help=f"category folder name, e.g. bottle (default: {category_default}, or the folder "
                            "--data-root points at)")
    group.add_argument("--data-root", default=None,
                       help=f"folder holding category folders, or one category folder (default: ${DATA_ROOT_ENV}, "
                            f"else ./{DEFAULT_DATA_ROOT})")
    group.add_argument("--demo", action=_DemoAction,
                       help="use a small synthetic category generated into the cache (no download needed); "
                            f"results go to {DEMO_OUT}/ unless --out is given")


def add_model_args(parser: argparse.ArgumentParser, arch_default: str) -> None:
    """``--arch``, ``--weights`` and ``--device``."""
    group = parser.add_argument_group("model")
    group.add_argument("--arch", default=arch_default, help=f"TorchVision model name (default: {arch_default})")
    group.add_argument("--weights", default="imagenet", help=f"{WEIGHTS_HELP} (default: imagenet)")
    group.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                       help="where to compute (default: auto = cuda, then mps, then cpu)")


def add_out_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=_OUT_NOT_GIVEN,
                        help=f"folder for JSON results and figures (default: {DEFAULT_OUT}, or {DEMO_OUT} with --demo)")


def resolve_category(args: argparse.Namespace, *, validate: bool = True, progress: bool = True) -> Category:
    """Load the category the flags name; with ``--demo``, generate and use the synthetic one."""
    if getattr(args, "demo", False):
        from .synthetic import DEMO_CATEGORY, demo_root

        if args.category not in (None, DEMO_CATEGORY):
            raise UserError(f"--demo uses the synthetic category '{DEMO_CATEGORY}'; drop --category {args.category}")
        if args.data_root:
            raise UserError("--demo generates its own data; drop --data-root")
        root = demo_root()
        args.category = DEMO_CATEGORY
        return load_category(root, DEMO_CATEGORY, validate=validate, progress=progress, demo=True)
    return load_category(args.data_root, args.category, validate=validate, progress=progress)


def data_root_of(category: Category) -> Path:
    """The folder that holds the category folder (what ``--data-root`` resolved to)."""
    return category.root.parent


def run(main: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser,
        argv: list[str] | None = None) -> None:
    """Parse ``argv`` and call ``main``; a UserError exits with its code (2 for bad input) and one line,
    Ctrl-C exits 130."""
    args = parser.parse_args(argv)
    try:
        main(args)
    except UserError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        sys.exit(130)
