"""Helpers shared by the script tests (imported by them; not a test module)."""

from __future__ import annotations

from inspectkit.cli import run


def run_script(script, argv: list[str], capsys) -> tuple[int, str, str]:
    """Run a root script's ``main`` in-process exactly as its ``__main__`` does; return (exit code, stdout, stderr)."""
    try:
        run(script.main, script.get_args_parser(), argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def interrupt_on_call(n: int, real):
    """``real`` wrapped so that its ``n``-th call raises KeyboardInterrupt, as Ctrl-C would at that moment."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return wrapper


def count_decodes(monkeypatch):
    """Count the full decodes of each file, wherever the toolkit asks for one (the check and the decode cache):
    ``open_image`` wrapped, not replaced. Returns the ``Counter`` keyed by path, filled as decodes happen."""
    from collections import Counter
    from pathlib import Path

    import inspectkit.cache
    import inspectkit.filecheck
    import inspectkit.imageio

    counts: Counter = Counter()
    real = inspectkit.imageio.open_image

    def counting(path):
        counts[Path(path)] += 1
        return real(path)

    for module in (inspectkit.filecheck, inspectkit.cache, inspectkit.imageio):
        monkeypatch.setattr(module, "open_image", counting)
    return counts
